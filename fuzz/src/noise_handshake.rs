//! The `noise_handshake` fuzz target: password mode's control connection.

use weave_agent::mesh::noise::{self, Handshake, Psk};

use super::Bytes;

/// Input: a first byte choosing the role, then a message. 0: the
/// initiator's first handshake message, read by a responder; 1: the
/// responder's reply, read by an initiator that sent a genuine first; 2:
/// transport records after a genuine handshake. Forged messages fail and
/// deliver nothing; the genuine peer's records still open to what was sent.
pub fn noise_handshake(data: &[u8]) {
    let psk = Psk::from_bytes([7; 32]);
    let prologue = noise::prologue(b"initiator hello", b"responder hello");
    let mut bytes = Bytes::new(data);
    let mode = bytes.byte() % 3;
    let input = bytes.rest();
    let handshake =
        |initiator| Handshake::new(&psk, &prologue, initiator).expect("valid parameters");
    match mode {
        0 => {
            let mut responder = handshake(false);
            if responder.read(input).is_ok() {
                assert_eq!(input.len(), noise::MAX_HANDSHAKE_MESSAGE);
            }
        }
        1 => {
            let mut initiator = handshake(true);
            initiator.write().expect("first message");
            if initiator.read(input).is_ok() {
                assert_eq!(input.len(), noise::MAX_HANDSHAKE_MESSAGE);
            }
        }
        _ => {
            let mut initiator = handshake(true);
            let mut responder = handshake(false);
            responder
                .read(&initiator.write().expect("first message"))
                .expect("genuine first message");
            initiator
                .read(&responder.write().expect("reply"))
                .expect("genuine reply");
            let (ci, _) = initiator.finish().expect("finished");
            let (cr, _) = responder.finish().expect("finished");
            let (mut si, mut oi) = ci.split();
            let (_, mut or) = cr.split();
            let mut out = Vec::new();
            let _ = oi.open(input, &mut out);
            assert!(
                out.is_empty(),
                "forged records delivered {} bytes",
                out.len()
            );
            let mut wire = Vec::new();
            si.seal(input, &mut wire).expect("seal");
            let mut got = Vec::new();
            or.open(&wire, &mut got).expect("genuine records open");
            assert_eq!(got, input);
        }
    }
}

pub(crate) fn noise_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with_mode = |mode: u8, p: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(p);
        v
    };
    vec![
        ("first-zeros", with_mode(0, &[0; 48])),
        ("first-short", with_mode(0, &[9; 31])),
        ("reply-ones", with_mode(1, &[1; 48])),
        ("reply-long", with_mode(1, &[1; 200])),
        (
            "record",
            with_mode(
                2,
                &[
                    0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                ],
            ),
        ),
        ("record-short", with_mode(2, &[0, 3, 1, 2, 3])),
        ("record-partial", with_mode(2, &[0xff, 0xff, 0])),
    ]
}
