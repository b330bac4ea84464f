//! Sealing data frames between peers in password mode: an AEAD (AES-256-GCM
//! or ChaCha20-Poly1305, agreed per connection: `cipher`) over the inner
//! Ethernet frame, in place in the packet buffer, with a
//! 64-bit counter as the nonce and a sliding replay window on receipt.
//! Dataplane-agnostic: the plain path and the `AF_XDP` path call the same two
//! functions on their own buffers; nothing here allocates or does I/O.
//!
//! A sealed packet (the UDP payload) is the VXLAN packet with a counter
//! after its header and a tag after its frame:
//!
//! ```text
//! | VXLAN header (8) | counter (8, LE) | inner frame, encrypted (n) | tag (16) |
//!   ^ authenticated, in clear (AAD)     ^ encrypted and authenticated
//! ```
//!
//! The VXLAN header stays in clear so that the receiver knows the frame's
//! origin and destination before anything else, and it is authenticated, so
//! a relay cannot be made to misroute a frame. The nonce is the counter
//! (`0u32 || counter LE`, as in WireGuard): never reused under one key
//! because a key belongs to one connection and one direction, and the
//! sender's counter only goes up. Keys are per connection and direction
//! (see `mesh::noise`): a relay opens with the key of the peer it got the
//! packet from and seals again with the key of the next hop.
//!
//! Usage, for any data plane:
//! - send: write the VXLAN header at `0..8` and the frame at
//!   from [`FRAME_OFFSET`] on, leave [`TAG_LEN`] bytes of room after it, call
//!   [`SendKey::seal`]; it returns the length of the UDP payload.
//! - receive: [`RecvKey::open_as_vxlan`] on the whole UDP payload; on
//!   success the buffer holds, at the returned range, a plain VXLAN packet
//!   (header moved next to the decrypted frame) for the usual parser.
//!   A failure (forged, corrupt, replayed, too old) is to be dropped and
//!   counted; the window only moves for packets that authenticate.
//!
//! Keys reach a data plane in the `ForwardingTable` (one [`PeerKeys`] per
//! neighbour, behind an `Arc`), so a table update switches keys at once.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

use crate::overlay::counters::DropReason;
use crate::overlay::wire::cipher::DataCipher;
use crate::overlay::wire::vxlan;

/// The counter carried after the VXLAN header.
pub const COUNTER_LEN: usize = 8;
/// The authentication tag after the frame (both ciphers' tags are 16 bytes).
pub const TAG_LEN: usize = 16;
/// Bytes sealing adds to a packet (and takes off the overlay MTU).
pub const OVERHEAD: usize = COUNTER_LEN + TAG_LEN;
/// Where the inner frame starts in a sealed packet.
pub const FRAME_OFFSET: usize = vxlan::HEADER_LEN + COUNTER_LEN;
/// Bits in the replay window: how far behind the newest packet a late one
/// may arrive (at least `WINDOW - 64`, as the window moves by words).
pub const WINDOW: u64 = 2048;
/// Counters at or over this are refused (send and receive): far beyond
/// what a connection lives to send, and it keeps the arithmetic away from
/// overflow. (`WireGuard`'s `REJECT_AFTER_MESSAGES`.)
pub const REJECT_AFTER: u64 = u64::MAX - (1 << 13);

const WORDS: usize = (WINDOW / 64) as usize;

/// A 256-bit key as it comes out of the key derivation.
pub type KeyBytes = Zeroizing<[u8; 32]>;

/// Why a frame was not sealed. Cheap and `Copy`: built on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a buffer of {len} bytes has no room for a {frame}-byte sealed frame")]
    NoRoom { len: usize, frame: usize },
    #[error("the key has sealed its last frame")]
    Exhausted,
}

/// Why a packet was not opened: each is a drop to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{len} bytes is shorter than a sealed packet")]
    Truncated { len: usize },
    #[error("the packet does not authenticate")]
    Forged,
    #[error("counter {0} was seen already or is behind the replay window")]
    Replayed(u64),
}

/// Seals frames for one neighbour: its key and the next counter.
pub struct SendKey {
    cipher: LessSafeKey,
    counter: AtomicU64,
}

impl SendKey {
    pub fn new(key: &KeyBytes, algorithm: DataCipher) -> Self {
        Self {
            cipher: cipher(key, algorithm),
            counter: AtomicU64::new(0),
        }
    }

    /// Seals the frame of `frame_len` bytes at [`FRAME_OFFSET`] in
    /// `packet`, whose first 8 bytes are its VXLAN header; returns the
    /// length of the sealed packet (`FRAME_OFFSET + frame_len + TAG_LEN`).
    pub fn seal(&self, packet: &mut [u8], frame_len: usize) -> Result<usize, SealError> {
        let total = FRAME_OFFSET + frame_len + TAG_LEN;
        if packet.len() < total {
            return Err(SealError::NoRoom {
                len: packet.len(),
                frame: frame_len,
            });
        }
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        if counter >= REJECT_AFTER {
            // Stays exhausted: the counter never wraps back into use.
            self.counter.store(REJECT_AFTER, Ordering::Relaxed);
            return Err(SealError::Exhausted);
        }
        let (aad, rest) = packet[..total].split_at_mut(vxlan::HEADER_LEN);
        let (counter_bytes, rest) = rest.split_at_mut(COUNTER_LEN);
        let (frame, tag_bytes) = rest.split_at_mut(frame_len);
        counter_bytes.copy_from_slice(&counter.to_le_bytes());
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), frame)
            .map_err(|_| SealError::NoRoom {
                len: total,
                frame: frame_len,
            })?;
        tag_bytes.copy_from_slice(tag.as_ref());
        Ok(total)
    }
}

/// Opens frames from one neighbour: its key and the replay window.
pub struct RecvKey {
    cipher: LessSafeKey,
    /// Held while a packet is checked, opened and marked: one short lock
    /// per packet, uncontended unless several queues take packets from
    /// the same neighbour.
    window: Mutex<ReplayWindow>,
}

impl RecvKey {
    pub fn new(key: &KeyBytes, algorithm: DataCipher) -> Self {
        Self {
            cipher: cipher(key, algorithm),
            window: Mutex::new(ReplayWindow::default()),
        }
    }

    /// Authenticates and decrypts `packet` (a whole sealed UDP payload) in
    /// place; returns where the plain inner frame now is.
    #[expect(
        clippy::significant_drop_tightening,
        reason = "check and mark must see one window"
    )]
    pub fn open(&self, packet: &mut [u8]) -> Result<Range<usize>, OpenError> {
        let len = packet.len();
        if len < FRAME_OFFSET + vxlan::ETHERNET_HEADER_LEN + TAG_LEN {
            return Err(OpenError::Truncated { len });
        }
        let (aad, rest) = packet.split_at_mut(vxlan::HEADER_LEN);
        let (counter_bytes, rest) = rest.split_at_mut(COUNTER_LEN);
        let (frame, tag_bytes) = rest.split_at_mut(rest.len() - TAG_LEN);
        let counter = u64::from_le_bytes(counter_bytes.try_into().unwrap_or_default());
        // Held until the counter is marked: a replay racing this packet
        // through the decryption must not pass the check too.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if !window.check(counter) {
            return Err(OpenError::Replayed(counter));
        }
        let tag = Tag::try_from(&*tag_bytes).map_err(|_| OpenError::Forged)?;
        self.cipher
            .open_in_place_separate_tag(nonce(counter), Aad::from(aad), tag, frame, 0..)
            .map_err(|_| OpenError::Forged)?;
        window.mark(counter);
        Ok(FRAME_OFFSET..len - TAG_LEN)
    }

    /// [`RecvKey::open`], then moves the VXLAN header next to the frame
    /// (over the counter), so that the returned range of `packet` is a
    /// plain VXLAN packet.
    pub fn open_as_vxlan(&self, packet: &mut [u8]) -> Result<Range<usize>, OpenError> {
        let frame = self.open(packet)?;
        packet.copy_within(..vxlan::HEADER_LEN, COUNTER_LEN);
        Ok(COUNTER_LEN..frame.end)
    }
}

/// Opens a sealed packet from a neighbour in place with the keys of the
/// connection to it, as a plain VXLAN packet (see
/// [`RecvKey::open_as_vxlan`]); what fails is a drop, with its reason.
pub fn open_from(keys: Option<&PeerKeys>, packet: &mut [u8]) -> Result<Range<usize>, DropReason> {
    let keys = keys.ok_or(DropReason::Unauthenticated)?;
    keys.recv.open_as_vxlan(packet).map_err(|e| match e {
        OpenError::Replayed(_) => DropReason::Replayed,
        OpenError::Truncated { .. } => DropReason::Malformed,
        OpenError::Forged => DropReason::Unauthenticated,
    })
}

/// One connection's data keys, both directions, as the data plane holds them.
pub struct PeerKeys {
    pub send: SendKey,
    pub recv: RecvKey,
    cipher: DataCipher,
}

impl PeerKeys {
    pub fn new(send: &KeyBytes, recv: &KeyBytes, cipher: DataCipher) -> Self {
        Self {
            send: SendKey::new(send, cipher),
            recv: RecvKey::new(recv, cipher),
            cipher,
        }
    }

    /// The cipher both directions seal and open with.
    pub const fn cipher(&self) -> DataCipher {
        self.cipher
    }
}

impl fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys; the counter tells how much was sealed.
        f.debug_struct("PeerKeys")
            .field("cipher", &self.cipher)
            .field("sent", &self.send.counter.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    // Unique: one key per connection and direction, a counter that only
    // goes up (see the module docs).
    Nonce::assume_unique_for_key(n)
}

/// `algorithm` under `key` (ring's: its vector code seals several times
/// faster than a portable implementation).
fn cipher(key: &KeyBytes, algorithm: DataCipher) -> LessSafeKey {
    // A 32-byte key is all either algorithm asks for: this cannot fail.
    let unbound = UnboundKey::new(algorithm.algorithm(), &key[..])
        .unwrap_or_else(|_| unreachable!("{algorithm} takes 32-byte keys"));
    LessSafeKey::new(unbound)
}

/// Which counters were seen among the last [`WINDOW`]: a ring of bit words
/// (RFC 6479), moved forward by whole words as newer counters arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// One more than the highest counter marked; 0 before the first.
    top: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            top: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `counter` may be accepted: not seen, not too old. Changes nothing.
    pub const fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER {
            return false;
        }
        if counter >= self.top {
            return true;
        }
        if self.top - 1 - counter >= WINDOW - 64 {
            return false;
        }
        self.bits[word(counter)] & bit(counter) == 0
    }

    /// Records `counter` as seen (after it authenticated); `check` first.
    pub fn mark(&mut self, counter: u64) {
        if counter >= self.top {
            let new_block = counter / 64;
            // Words between the old top's and the new one's start empty.
            let first = if self.top == 0 {
                new_block
            } else {
                (self.top - 1) / 64 + 1
            };
            for block in first..=new_block.min(first + WORDS as u64 - 1) {
                self.bits[(block % WORDS as u64) as usize] = 0;
            }
            if new_block >= first + WORDS as u64 {
                self.bits = [0; WORDS];
            }
            self.top = counter + 1;
        }
        self.bits[word(counter)] |= bit(counter);
    }
}

const fn word(counter: u64) -> usize {
    ((counter / 64) % WORDS as u64) as usize
}

const fn bit(counter: u64) -> u64 {
    1 << (counter % 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> KeyBytes {
        Zeroizing::new([b; 32])
    }

    const BOTH: [DataCipher; 2] = [DataCipher::ChaCha20Poly1305, DataCipher::Aes256Gcm];

    fn pair() -> (SendKey, RecvKey) {
        pair_of(DataCipher::ChaCha20Poly1305)
    }

    fn pair_of(c: DataCipher) -> (SendKey, RecvKey) {
        (SendKey::new(&key(7), c), RecvKey::new(&key(7), c))
    }

    fn frame() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[20..40].copy_from_slice(b"MARKER-in-the-frame!");
        f
    }

    /// A sealed packet of `frame()` with VNI `0x101_102`, in a buffer just big enough.
    fn sealed(tx: &SendKey) -> Vec<u8> {
        let f = frame();
        let mut buf = vec![0u8; FRAME_OFFSET + f.len() + TAG_LEN];
        buf[..8].copy_from_slice(&vxlan::header(0x101_102));
        buf[FRAME_OFFSET..FRAME_OFFSET + f.len()].copy_from_slice(&f);
        let n = tx.seal(&mut buf, f.len()).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_frame() {
        for c in BOTH {
            round_trip(c);
        }
    }

    fn round_trip(c: DataCipher) {
        let (tx, rx) = pair_of(c);
        let mut p = sealed(&tx);
        assert!(!p.windows(6).any(|w| w == b"MARKER"), "frame left in clear");
        assert_eq!(&p[8..16], &0u64.to_le_bytes());
        let range = rx.open(&mut p.clone()).unwrap();
        assert_eq!(range, FRAME_OFFSET..p.len() - TAG_LEN);
        // As VXLAN: the parser sees the header and the plain frame.
        let r = rx.open_as_vxlan(&mut p);
        assert_eq!(r, Err(OpenError::Replayed(0)), "same counter twice");
        let mut p = sealed(&tx);
        let r = rx.open_as_vxlan(&mut p).unwrap();
        let v = vxlan::parse(&p[r]).unwrap();
        assert_eq!(v.vni, 0x101_102);
        assert_eq!(v.frame, &*frame());
    }

    #[test]
    fn every_flipped_bit_and_every_wrong_key_is_caught() {
        for c in BOTH {
            tampering_caught(c);
        }
    }

    #[test]
    fn a_packet_sealed_with_one_cipher_does_not_open_with_the_other() {
        let (aes, chacha) = (DataCipher::Aes256Gcm, DataCipher::ChaCha20Poly1305);
        let (tx, _) = pair_of(aes);
        let rx = RecvKey::new(&key(7), chacha);
        assert_eq!(rx.open(&mut sealed(&tx)), Err(OpenError::Forged));
        let (tx, _) = pair_of(chacha);
        let rx = RecvKey::new(&key(7), aes);
        assert_eq!(rx.open(&mut sealed(&tx)), Err(OpenError::Forged));
        for c in BOTH {
            assert_eq!(PeerKeys::new(&key(7), &key(8), c).cipher(), c);
        }
    }

    fn tampering_caught(c: DataCipher) {
        let (tx, rx) = pair_of(c);
        let good = sealed(&tx);
        for i in 0..good.len() {
            for b in [0x01, 0x80] {
                let mut p = good.clone();
                p[i] ^= b;
                let e = rx.open(&mut p).unwrap_err();
                assert!(
                    matches!(e, OpenError::Forged | OpenError::Replayed(_)),
                    "byte {i}: {e:?}"
                );
            }
        }
        // Nothing forged moved the window: the genuine packet still opens.
        assert!(rx.open(&mut good.clone()).is_ok());
        let other = RecvKey::new(&key(8), c);
        assert_eq!(other.open(&mut sealed(&tx)), Err(OpenError::Forged));
        for len in 0..FRAME_OFFSET + 14 + TAG_LEN {
            assert!(matches!(
                rx.open(&mut good[..len].to_vec()),
                Err(OpenError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn seal_needs_room_and_counts_up() {
        let (tx, _) = pair();
        let mut small = [0u8; FRAME_OFFSET + 14 + TAG_LEN - 1];
        assert!(matches!(
            tx.seal(&mut small, 14),
            Err(SealError::NoRoom { .. })
        ));
        let a = sealed(&tx);
        let b = sealed(&tx);
        assert_eq!(&a[8..16], &0u64.to_le_bytes());
        assert_eq!(&b[8..16], &1u64.to_le_bytes());
        assert_ne!(a[FRAME_OFFSET..], b[FRAME_OFFSET..], "same nonce twice");
        tx.counter.store(REJECT_AFTER, Ordering::Relaxed);
        let mut buf = vec![0u8; 100];
        assert_eq!(tx.seal(&mut buf, 20), Err(SealError::Exhausted));
        assert_eq!(tx.seal(&mut buf, 20), Err(SealError::Exhausted));
    }

    fn accept(w: &mut ReplayWindow, n: u64) -> bool {
        let ok = w.check(n);
        if ok {
            w.mark(n);
        }
        ok
    }

    #[test]
    fn replay_window_takes_each_counter_once_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(accept(&mut w, 0));
        assert!(!accept(&mut w, 0));
        assert!(accept(&mut w, 5));
        assert!(accept(&mut w, 3), "late but new");
        assert!(!accept(&mut w, 3));
        assert!(accept(&mut w, 3000));
        assert!(!accept(&mut w, 5), "behind the window");
        assert!(accept(&mut w, 3000 - (WINDOW - 65)), "at the window's edge");
        assert!(!accept(&mut w, 3000 - (WINDOW - 64)));
        assert!(!accept(&mut w, 3000));
        // A jump over many windows forgets everything older.
        assert!(accept(&mut w, 1_000_000));
        assert!(accept(&mut w, 1_000_000 - 100));
        assert!(!accept(&mut w, 3000));
        assert!(!w.check(REJECT_AFTER) && !w.check(u64::MAX));
    }

    #[test]
    fn replay_window_matches_a_set_on_random_traffic() {
        // Against a reference: a counter is taken iff never taken and
        // within WINDOW - 64 of the highest taken.
        let mut state: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut top: Option<u64> = None;
        let mut base = 0u64;
        for _ in 0..200_000 {
            base += next() % 3;
            let n = (base + next() % 300).saturating_sub(next() % 2500);
            let expected = !seen.contains(&n) && top.is_none_or(|t| n > t || t - n < WINDOW - 64);
            assert_eq!(accept(&mut w, n), expected, "counter {n}, top {top:?}");
            if expected {
                seen.insert(n);
                top = Some(top.map_or(n, |t| t.max(n)));
            }
        }
    }
}
