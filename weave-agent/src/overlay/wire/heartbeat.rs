//! Data-path heartbeats: small UDP datagrams each pair of connected peers
//! sends every second on the data port, next to the VXLAN packets, so each
//! side knows whether the other's data actually reaches it (the TCP control
//! connection says nothing about UDP).
//!
//! Layout (34 bytes), recognisable from VXLAN by its first byte (VXLAN's
//! flags byte is 0x08):
//!
//! ```text
//! 0      4        10               18                      34
//! | WHB1 | sender | sequence (BE)  | HMAC-SHA256(key, ..)[..16] |
//! ```
//!
//! The key is the sender's, given to the receiver over the control
//! connection (or derived from the connection's Noise keys in password
//! mode): a valid tag proves the datagram comes from the peer at the other
//! end of that connection, and a sequence above the last one accepted that
//! it is not a replay.
//!
//! The same keys authenticate path MTU probes (`mesh::path_mtu`): a probe
//! is padded to the size it tests and names its own length; the peer
//! answers each authentic one with an acknowledgement of that size and id
//! (36 bytes each, before the padding):
//!
//! ```text
//! 0      4        10          18     20                       36
//! | WHP1 | sender | id (BE)   | size | HMAC-SHA256(key, ..)[..16] | zeros to size
//! | WHA1 | sender | id (BE)   | size | HMAC-SHA256(key, ..)[..16] |
//! ```
//!
//! A replayed probe only makes the peer acknowledge an id the prober no
//! longer waits for. Pure: bytes in, bytes out.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::mac::Mac;
use crate::peer_name::PeerName;

/// "WHB" and version 1.
pub const MAGIC: [u8; 4] = [0x57, 0x48, 0x42, 0x01];
/// The whole datagram.
pub const LEN: usize = 34;
const NAME_AT: usize = 4;
const SEQ_AT: usize = 10;
const TAG_AT: usize = 18;
const TAG_LEN: usize = LEN - TAG_AT;

/// A path MTU probe: "WHP" and version 1.
pub const PROBE_MAGIC: [u8; 4] = [0x57, 0x48, 0x50, 0x01];
/// Its acknowledgement: "WHA" and version 1.
pub const ACK_MAGIC: [u8; 4] = [0x57, 0x48, 0x41, 0x01];
/// A probe's header (the smallest probe) and a whole acknowledgement.
pub const PROBE_HEADER: usize = 36;
const SIZE_AT: usize = 18;
const PROBE_TAG_AT: usize = 20;

/// Whether a datagram on the data port is a heartbeat rather than VXLAN
/// (of any length: a wrong one is then rejected, never parsed as VXLAN).
pub fn is_heartbeat(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC)
}

/// Whether a datagram on the data port is one of the data path's own
/// (heartbeat, probe, acknowledgement) rather than VXLAN, whose first byte
/// is its flags (0x08), never "W".
pub fn is_data_path_control(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC[..2])
}

/// The key one side authenticates its heartbeats with.
#[derive(Clone, PartialEq, Eq)]
pub struct HeartbeatKey(pub [u8; 32]);

impl std::fmt::Debug for HeartbeatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeartbeatKey(..)")
    }
}

impl HeartbeatKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn mac(&self, covered: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: cannot fail.
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(covered);
        mac
    }

    fn tag(&self, covered: &[u8]) -> [u8; TAG_LEN] {
        let full = self.mac(covered).finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// As hex, for the hello.
    pub fn to_hex(&self) -> String {
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// From the hello's hex; `None` unless exactly 32 bytes of hex.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            key[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(key))
    }
}

/// Heartbeat number `seq` from `sender`.
pub fn encode(key: &HeartbeatKey, sender: PeerName, seq: u64) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..NAME_AT].copy_from_slice(&MAGIC);
    out[NAME_AT..SEQ_AT].copy_from_slice(&sender.0.0);
    out[SEQ_AT..TAG_AT].copy_from_slice(&seq.to_be_bytes());
    let tag = key.tag(&out[..TAG_AT]);
    out[TAG_AT..].copy_from_slice(&tag);
    out
}

/// Writes into `out` (whose length is the size tested, at least
/// [`PROBE_HEADER`] and at most 65535) probe `id` from `sender`.
pub fn encode_probe(key: &HeartbeatKey, sender: PeerName, id: u64, out: &mut [u8]) {
    debug_assert!((PROBE_HEADER..=usize::from(u16::MAX)).contains(&out.len()));
    let size = u16::try_from(out.len()).unwrap_or(u16::MAX);
    write_probe_header(key, PROBE_MAGIC, sender, id, size, out);
    out[PROBE_HEADER..].fill(0);
}

/// The acknowledgement of probe `id` of `size` bytes, from `sender`.
pub fn encode_ack(key: &HeartbeatKey, sender: PeerName, id: u64, size: u16) -> [u8; PROBE_HEADER] {
    let mut out = [0u8; PROBE_HEADER];
    write_probe_header(key, ACK_MAGIC, sender, id, size, &mut out);
    out
}

fn write_probe_header(
    key: &HeartbeatKey,
    magic: [u8; 4],
    sender: PeerName,
    id: u64,
    size: u16,
    out: &mut [u8],
) {
    out[..NAME_AT].copy_from_slice(&magic);
    out[NAME_AT..SEQ_AT].copy_from_slice(&sender.0.0);
    out[SEQ_AT..SIZE_AT].copy_from_slice(&id.to_be_bytes());
    out[SIZE_AT..PROBE_TAG_AT].copy_from_slice(&size.to_be_bytes());
    let tag = key.tag(&out[..PROBE_TAG_AT]);
    out[PROBE_TAG_AT..PROBE_HEADER].copy_from_slice(&tag);
}

/// Checks a probe's or acknowledgement's `head` (its first
/// [`PROBE_HEADER`] bytes) with the claimed sender's key: its (id, size).
fn verify_probe_header(
    key: &HeartbeatKey,
    magic: [u8; 4],
    head: &[u8],
) -> Result<(u64, u16), Rejected> {
    let head = head.get(..PROBE_HEADER).ok_or(Rejected::Malformed)?;
    if !head.starts_with(&magic) {
        return Err(Rejected::Malformed);
    }
    key.mac(&head[..PROBE_TAG_AT])
        .verify_truncated_left(&head[PROBE_TAG_AT..])
        .map_err(|_| Rejected::BadTag)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[SEQ_AT..SIZE_AT]);
    let size = u16::from_be_bytes([head[SIZE_AT], head[SIZE_AT + 1]]);
    Ok((u64::from_be_bytes(id), size))
}

/// A probe that arrived `len` bytes long, of which `head` is the start:
/// its (id, size) if authentic and as long as it says.
pub fn verify_probe(key: &HeartbeatKey, head: &[u8], len: usize) -> Result<(u64, u16), Rejected> {
    let (id, size) = verify_probe_header(key, PROBE_MAGIC, head)?;
    if usize::from(size) != len {
        return Err(Rejected::Malformed);
    }
    Ok((id, size))
}

/// An acknowledgement: the (id, size) of the probe it acknowledges.
pub fn verify_ack(key: &HeartbeatKey, datagram: &[u8]) -> Result<(u64, u16), Rejected> {
    if datagram.len() != PROBE_HEADER {
        return Err(Rejected::Malformed);
    }
    verify_probe_header(key, ACK_MAGIC, datagram)
}

/// The sender a probe or acknowledgement claims, unauthenticated.
pub fn claimed_prober(head: &[u8]) -> Option<PeerName> {
    if head.len() < PROBE_HEADER
        || !(head.starts_with(&PROBE_MAGIC) || head.starts_with(&ACK_MAGIC))
    {
        return None;
    }
    let mut name = [0u8; 6];
    name.copy_from_slice(&head[NAME_AT..SEQ_AT]);
    Some(PeerName(Mac(name)))
}

/// The sender a heartbeat claims, unauthenticated: which key to check it
/// with. `None` if it is not a heartbeat of the right length.
pub fn claimed_sender(datagram: &[u8]) -> Option<PeerName> {
    if datagram.len() != LEN || !is_heartbeat(datagram) {
        return None;
    }
    let mut name = [0u8; 6];
    name.copy_from_slice(&datagram[NAME_AT..SEQ_AT]);
    Some(PeerName(Mac(name)))
}

/// Why a heartbeat was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a heartbeat, or not 34 bytes.
    Malformed,
    /// The tag does not match the sender's key.
    BadTag,
    /// Authentic, but not newer than the last one accepted.
    Replayed,
}

/// Checks `datagram` with the claimed sender's `key`; returns its sequence
/// number if it is authentic and newer than `last` (the last accepted).
pub fn verify(key: &HeartbeatKey, datagram: &[u8], last: u64) -> Result<u64, Rejected> {
    if claimed_sender(datagram).is_none() {
        return Err(Rejected::Malformed);
    }
    // In constant time: the tag is the leftmost 16 bytes of the HMAC.
    key.mac(&datagram[..TAG_AT])
        .verify_truncated_left(&datagram[TAG_AT..])
        .map_err(|_| Rejected::BadTag)?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&datagram[SEQ_AT..TAG_AT]);
    let seq = u64::from_be_bytes(seq);
    if seq <= last {
        return Err(Rejected::Replayed);
    }
    Ok(seq)
}

/// Fuzzing: parsing and checking arbitrary bytes never panics, and nothing
/// but what `encode` made with the key is accepted.
pub fn fuzz_check(data: &[u8]) {
    let key = HeartbeatKey([7; 32]);
    let _ = claimed_sender(data);
    let _ = is_heartbeat(data);
    if let Ok(seq) = verify(&key, data, 0) {
        let sender = claimed_sender(data).expect("accepted heartbeats name a sender");
        assert_eq!(&encode(&key, sender, seq)[..], data, "accepted a forgery");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = HeartbeatKey::from_hex(text);
    }
    let _ = claimed_prober(data);
    if let Ok((id, size)) = verify_probe(&key, data, data.len()) {
        let sender = claimed_prober(data).expect("accepted probes name a sender");
        let mut probe = vec![0u8; usize::from(size)];
        encode_probe(&key, sender, id, &mut probe);
        assert_eq!(
            &probe[..PROBE_HEADER],
            &data[..PROBE_HEADER],
            "accepted a forged probe"
        );
    }
    if let Ok((id, size)) = verify_ack(&key, data) {
        let sender = claimed_prober(data).expect("accepted acknowledgements name a sender");
        assert_eq!(
            &encode_ack(&key, sender, id, size)[..],
            data,
            "accepted a forged ack"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u8) -> PeerName {
        PeerName(Mac([0xa6, 0x66, 0x4f, 0xa5, 0x8b, i]))
    }

    #[test]
    fn a_heartbeat_verifies_with_its_key_only() {
        let key = HeartbeatKey([1; 32]);
        let hb = encode(&key, name(2), 5);
        assert_eq!(hb.len(), LEN);
        assert!(is_heartbeat(&hb));
        assert_eq!(claimed_sender(&hb), Some(name(2)));
        assert_eq!(verify(&key, &hb, 4), Ok(5));
        assert_eq!(
            verify(&HeartbeatKey([2; 32]), &hb, 0),
            Err(Rejected::BadTag)
        );
    }

    #[test]
    fn replays_and_tampering_are_rejected() {
        let key = HeartbeatKey::random();
        let hb = encode(&key, name(3), 9);
        assert_eq!(verify(&key, &hb, 9), Err(Rejected::Replayed));
        assert_eq!(verify(&key, &hb, 10), Err(Rejected::Replayed));
        for i in NAME_AT..LEN {
            let mut bad = hb;
            bad[i] ^= 1;
            assert_eq!(verify(&key, &bad, 0), Err(Rejected::BadTag), "byte {i}");
        }
        assert_eq!(verify(&key, &hb[..LEN - 1], 0), Err(Rejected::Malformed));
        let mut vxlan = hb;
        vxlan[0] = 0x08;
        assert_eq!(verify(&key, &vxlan, 0), Err(Rejected::Malformed));
        assert!(!is_heartbeat(&vxlan));
    }

    #[test]
    fn keys_round_trip_as_hex() {
        let key = HeartbeatKey::random();
        assert_eq!(HeartbeatKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(HeartbeatKey::from_hex("00"), None);
        assert_eq!(HeartbeatKey::from_hex(&"zz".repeat(32)), None);
        assert_eq!(HeartbeatKey::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn probes_and_acks_verify_with_their_key_and_length_only() {
        let key = HeartbeatKey([1; 32]);
        let mut probe = vec![0xffu8; 700];
        encode_probe(&key, name(2), 9, &mut probe);
        assert!(is_data_path_control(&probe) && !is_heartbeat(&probe));
        assert!(probe[PROBE_HEADER..].iter().all(|&b| b == 0));
        assert_eq!(claimed_prober(&probe), Some(name(2)));
        assert_eq!(
            verify_probe(&key, &probe[..PROBE_HEADER], 700),
            Ok((9, 700))
        );
        assert_eq!(
            verify_probe(&key, &probe[..PROBE_HEADER], 699),
            Err(Rejected::Malformed),
            "cut short on the way"
        );
        assert_eq!(
            verify_probe(&HeartbeatKey([2; 32]), &probe, 700),
            Err(Rejected::BadTag)
        );
        let ack = encode_ack(&key, name(3), 9, 700);
        assert_eq!(verify_ack(&key, &ack), Ok((9, 700)));
        assert_eq!(
            verify_probe(&key, &ack, PROBE_HEADER),
            Err(Rejected::Malformed),
            "an ack is not a probe"
        );
        assert_eq!(
            verify_ack(&key, &probe[..PROBE_HEADER]),
            Err(Rejected::Malformed)
        );
        for i in NAME_AT..PROBE_HEADER {
            let mut bad = ack;
            bad[i] ^= 1;
            assert_eq!(verify_ack(&key, &bad), Err(Rejected::BadTag), "byte {i}");
        }
        let mut vxlan = ack;
        vxlan[0] = 0x08;
        assert!(!is_data_path_control(&vxlan));
    }

    #[test]
    fn fuzz_check_takes_anything() {
        let key = HeartbeatKey([7; 32]);
        let mut probe = vec![0u8; 100];
        encode_probe(&key, name(1), 4, &mut probe);
        fuzz_check(&probe);
        fuzz_check(&encode_ack(&key, name(1), 4, 100));
        fuzz_check(&[]);
        fuzz_check(&MAGIC);
        fuzz_check(&encode(&HeartbeatKey([7; 32]), name(1), 1));
        fuzz_check(&[0xff; 34]);
    }
}
