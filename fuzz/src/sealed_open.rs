//! The `sealed_open` fuzz target: password mode's data frames, as a receiver opens them.

use weave_agent::overlay::DataCipher;
use weave_agent::overlay::seal::{self, OpenError, RecvKey, ReplayWindow, SendKey};
use weave_agent::overlay::vxlan::{self, ETHERNET_HEADER_LEN, HEADER_LEN};

use super::Bytes;
use super::vxlan_parse::{ethernet, vxlan_packet};

/// The key every `sealed_open` input is opened with (its seeds are sealed with it).
pub(crate) fn fuzz_data_key() -> seal::KeyBytes {
    seal::KeyBytes::new([0x42; 32])
}

/// The cipher of an even mode byte: bit 1 set, AES-256-GCM.
const fn cipher_of(mode: u8) -> DataCipher {
    if mode & 2 == 0 {
        DataCipher::ChaCha20Poly1305
    } else {
        DataCipher::Aes256Gcm
    }
}

/// Input: a first byte choosing what the rest is. Even: one sealed packet
/// (under ChaCha20-Poly1305, or AES-256-GCM when bit 1 is set too),
/// opened twice with a fresh key state: nothing opens unless it was sealed
/// under the key, and what opens once is a replay the second time; a
/// failure changes neither the window nor the packet. Odd: a sequence of
/// counters (a 16-bit step back or forward each) through a replay window,
/// against a model: each counter taken once, none too old.
pub fn sealed_open(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let mode = bytes.byte();
    if mode.is_multiple_of(2) {
        let input = bytes.rest();
        let rx = RecvKey::new(&fuzz_data_key(), cipher_of(mode));
        let mut packet = input.to_vec();
        match rx.open_as_vxlan(&mut packet) {
            Ok(range) => {
                assert_eq!(range.start, seal::COUNTER_LEN);
                assert_eq!(range.end, input.len() - seal::TAG_LEN);
                assert_eq!(
                    &packet[range.start..range.start + HEADER_LEN],
                    &input[..HEADER_LEN]
                );
                assert!(range.len() >= HEADER_LEN + ETHERNET_HEADER_LEN);
                let again = rx.open(&mut input.to_vec());
                assert!(matches!(again, Err(OpenError::Replayed(_))), "{again:?}");
            }
            Err(OpenError::Truncated { len }) => {
                assert_eq!(len, input.len());
                assert!(len < seal::FRAME_OFFSET + ETHERNET_HEADER_LEN + seal::TAG_LEN);
            }
            Err(OpenError::Forged) => {
                // The clear parts stay; the frame is as it came or wiped
                // (ring zeroes what it decrypted when the tag fails, so
                // unauthenticated plaintext is never left behind).
                let frame = seal::FRAME_OFFSET..input.len() - seal::TAG_LEN;
                assert_eq!(
                    packet[..frame.start],
                    input[..frame.start],
                    "header changed"
                );
                assert_eq!(packet[frame.end..], input[frame.end..], "tag changed");
                assert!(
                    packet[frame.clone()] == input[frame.clone()]
                        || packet[frame].iter().all(|&b| b == 0),
                    "a packet that did not authenticate was changed"
                );
            }
            Err(e) => {
                assert_eq!(packet, input, "a packet that failed ({e}) was changed");
            }
        }
    } else {
        let mut window = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut base: u64 = u64::from(bytes.byte()) << 56;
        while !bytes.is_empty() {
            let step = u64::from(u16::from_le_bytes([bytes.byte(), bytes.byte()]));
            let back = bytes.byte() & 1 == 1;
            let n = if back {
                base.saturating_sub(step)
            } else {
                base.saturating_add(step)
            };
            base = base.max(n);
            let expected = n < seal::REJECT_AFTER
                && !seen.contains(&n)
                && top.is_none_or(|t| n > t || t - n < seal::WINDOW - 64);
            let accepted = window.check(n);
            assert_eq!(accepted, expected, "counter {n}, top {top:?}");
            if accepted {
                window.mark(n);
                if seen.len() < 100_000 {
                    seen.insert(n);
                }
                top = Some(top.map_or(n, |t| t.max(n)));
            }
        }
    }
}

pub(crate) fn sealed_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tx = SendKey::new(&fuzz_data_key(), cipher_of(0));
    let aes = SendKey::new(&fuzz_data_key(), cipher_of(2));
    let sealed = |tx: &SendKey, frame: &[u8]| {
        let mut p = vec![0u8; seal::FRAME_OFFSET + frame.len() + seal::TAG_LEN];
        p[..HEADER_LEN].copy_from_slice(&vxlan::header(0x101_fff));
        p[seal::FRAME_OFFSET..seal::FRAME_OFFSET + frame.len()].copy_from_slice(frame);
        tx.seal(&mut p, frame.len()).expect("room");
        p
    };
    let frame = ethernet([0xff; 6], [2, 0, 0, 0, 0, 1], 60);
    let first = sealed(&tx, &frame);
    let second = sealed(&tx, &frame);
    let mut flipped = first.clone();
    flipped[20] ^= 1;
    let with_mode = |mode: u8, p: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(p);
        v
    };
    vec![
        ("sealed", with_mode(0, &first)),
        ("sealed-second", with_mode(0, &second)),
        ("sealed-aes", with_mode(2, &sealed(&aes, &frame))),
        // Sealed under one cipher, opened under the other: forged.
        ("sealed-other-cipher", with_mode(2, &first)),
        ("flipped", with_mode(0, &flipped)),
        ("truncated", with_mode(0, &first[..30])),
        (
            "plain-vxlan",
            with_mode(0, &vxlan_packet(0x101_fff, &frame)),
        ),
        (
            "window-steps",
            vec![
                1, 0, 10, 0, 0, 5, 0, 1, 0xff, 0x07, 0, 1, 0, 0, 0, 0xff, 0xff, 1,
            ],
        ),
    ]
}
