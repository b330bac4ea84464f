//! The wire between peers: a TCP stream (port 6783 by default) that starts
//! with a handshake, then carries length-prefixed messages.
//!
//! Every frame is a big-endian `u32` length followed by that many bytes of
//! JSON (one [`Message`]). The first frame each side sends is a
//! [`Message::Hello`]; both sides then run [`negotiate`] on the pair and
//! either go on with the highest common version or send
//! [`Message::Refuse`] with the reason and close.
//!
//! From version 3, topology gossip (most of the control traffic: every
//! entry lists every connection of its peer, so the whole topology grows
//! with the square of the mesh) travels compact: a frame whose first
//! byte is [`COMPACT_GOSSIP`] (a JSON frame starts with `{`) holds a
//! [`TopologyUpdate`] in postcard's encoding, names and addresses as bytes,
//! about a sixth of its JSON and decoded without intermediate buffering.
//!
//! Everything here is pure: [`FrameDecoder`] takes bytes and gives frames,
//! [`decode`] takes a frame and gives a message, so a fuzz target is a few
//! lines and nothing in here can panic on what a peer sends.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dns::DnsGossip;
use crate::ipam::IpamPacket;
use crate::mesh::topology::{PeerInfo, TopologyDigest, TopologyUpdate};
use crate::peer_name::PeerName;

/// The name every peer announces in its hello.
pub const PROTOCOL: &str = "weave-rs";
/// The protocol versions this build speaks.
pub const PROTOCOL_MIN_VERSION: u32 = 1;
/// Version 2 added [`Message::Dns`], version 3 compact gossip, version 4
/// [`Message::Digest`]; each is sent only on connections that negotiated
/// it, so older peers still connect.
pub const PROTOCOL_MAX_VERSION: u32 = 4;
/// The first version that carries [`Message::Dns`].
pub const DNS_VERSION: u32 = 2;
/// The first version whose topology gossip may be compact (see the module
/// documentation); sent only on connections that negotiated it.
pub const COMPACT_GOSSIP_VERSION: u32 = 3;
/// The first version whose peers open with a [`Message::Digest`] instead
/// of their whole topology; older peers still get the whole topology.
pub const DIGEST_VERSION: u32 = 4;
/// First byte of a compact gossip frame.
pub const COMPACT_GOSSIP: u8 = 0x01;
/// TCP port of the control plane unless the user names another.
pub const DEFAULT_PORT: u16 = 6783;
/// Hard limit on a frame after the handshake; a larger one drops the connection.
pub const MAX_FRAME: usize = 1 << 20;
/// Hard limit on a frame during the handshake (a hello is ~300 bytes), so
/// that a client speaking another protocol is dropped at once.
pub const MAX_HELLO_FRAME: usize = 4096;
/// Longest nickname accepted, in bytes.
pub const MAX_NICKNAME: usize = 255;
/// Longest refusal reason kept from a peer, in bytes.
pub const MAX_REASON: usize = 512;

const LEN_BYTES: usize = 4;

/// What each side says first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL`]; anything else is refused.
    pub protocol: String,
    pub min_version: u32,
    pub max_version: u32,
    pub name: PeerName,
    pub nickname: String,
    /// Random per run of the peer: tells a restarted peer from the old one.
    pub uid: u64,
    /// Random per connection: breaks ties between two connections of the
    /// same pair of peers identically on both sides.
    pub nonce: u64,
    /// The TCP port the peer accepts connections on.
    pub listen_port: u16,
    /// The UDP port of the peer's data plane.
    pub data_port: u16,
    /// Password mode: a Noise handshake follows the hellos, and everything
    /// after it is encrypted. Both sides must agree.
    #[serde(default)]
    pub encrypted: bool,
    /// Password mode: the peer offers to seal data frames with AES-256-GCM
    /// (its CPU has AES instructions); a connection uses it when both hellos
    /// offer it, else ChaCha20-Poly1305 (see `overlay::wire::cipher`). The
    /// hellos are in the Noise prologue, so the offer cannot be stripped
    /// unnoticed. Peers that predate it send nothing: false.
    #[serde(default)]
    pub aes_gcm: bool,
    /// The peer runs the in-kernel data path (fastdp) and can take frames on
    /// it; never with a password. A connection uses it when both hellos say
    /// so (see `mesh::fastdp`). Peers that predate it send nothing: false.
    #[serde(default)]
    pub fastdp: bool,
    /// The peer sends data-path heartbeats over the data port and counts
    /// the connection as usable for forwarding only while ours arrive (see
    /// `mesh::liveness`). Peers that predate them send nothing: false, and
    /// their data path counts as up.
    #[serde(default)]
    pub heartbeats: bool,
    /// Without a password: the key (hex, 32 bytes) the peer's heartbeats
    /// on this connection are authenticated with. In password mode none is
    /// sent: both sides derive the keys from the connection's Noise keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_key: Option<String>,
    /// The peer answers path MTU probes on the data port (see
    /// `mesh::path_mtu`), so ours may go to it. Peers that predate them
    /// send nothing: false, and nothing probes the path to them.
    #[serde(default)]
    pub path_mtu: bool,
}

/// One frame's content. New messages are new variants: a peer that does not
/// know one drops the connection as garbled, so they come with a version bump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello(Hello),
    /// The sender ends the connection, and says why.
    Refuse {
        reason: String,
    },
    /// Liveness; sent every second by each side.
    Heartbeat,
    /// Entries of the sender's topology.
    Gossip(TopologyUpdate),
    /// One message of the Noise handshake (password mode), between the
    /// hellos and the first encrypted message.
    Noise {
        handshake: Vec<u8>,
    },
    /// IP allocation: a ring, or a request for space (see `ipam::message`).
    Ipam(IpamPacket),
    /// weaveDNS entries (see `dns::records`), flooded to every peer.
    Dns(DnsGossip),
    /// What the sender holds of the topology, sent once when a connection
    /// is established: the receiver answers with gossip of the entries the
    /// sender lacks or holds older (see `topology::TopologyDigest`).
    Digest(TopologyDigest),
}

/// Why bytes from a peer are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized { len: usize, max: usize },
    #[error("undecodable message: {0}")]
    Garbled(String),
}

/// Why a handshake fails. Both sides compute it from the same two hellos,
/// so both refuse, and each says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("wrong protocol: we speak {PROTOCOL}, they speak {theirs:?}")]
    WrongProtocol { theirs: String },
    #[error("protocol mismatch: we speak {}..{}, they speak {}..{}", ours.0, ours.1, theirs.0, theirs.1)]
    VersionMismatch {
        ours: (u32, u32),
        theirs: (u32, u32),
    },
    #[error("connection to ourselves")]
    SelfConnection,
    #[error("another peer uses our name {0}")]
    NameClash(PeerName),
    #[error("invalid hello: {0}")]
    BadHello(String),
    #[error("encryption mismatch: we have a password, the peer has none")]
    PeerHasNoPassword,
    #[error("encryption mismatch: the peer has a password, we have none")]
    WeHaveNoPassword,
}

/// What a [`FrameDecoder`] keeps of a buffer grown for a big frame.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Splits a byte stream into frames. Holds at most one partial frame plus
/// what was fed since the last [`FrameDecoder::next_frame`] returned `None`.
/// After an error it stays failed: the connection is to be dropped.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    failed: Option<WireError>,
}

impl FrameDecoder {
    pub const fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
            failed: None,
        }
    }

    /// Changes the size limit for the frames not yet returned.
    pub const fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
            // One big frame (a full topology) must not keep its buffer for
            // the connection's life: a hundred connections would hold a
            // hundred of them for frames of a few dozen bytes.
            if self.buf.capacity() > KEEP_CAPACITY && self.buf.len() + bytes.len() <= KEEP_CAPACITY
            {
                self.buf.shrink_to(KEEP_CAPACITY);
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's body, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<LEN_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max {
            let e = WireError::Oversized { len, max: self.max };
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.start = 0;
            return Err(e);
        }
        if pending.len() < LEN_BYTES + len {
            return Ok(None);
        }
        let body = self.start + LEN_BYTES;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }

    /// Bytes held (a partial frame, or frames not taken yet).
    pub const fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the bytes held (not yet returned as frames): when the stream
    /// switches to encryption, what arrived after the last clear frame is
    /// ciphertext, to be decrypted before it is decoded.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

/// A message as a frame (length prefix included), refused if over `max`.
pub fn encode(msg: &Message, max: usize) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; LEN_BYTES];
    serde_json::to_writer(&mut out, msg).map_err(|e| WireError::Garbled(e.to_string()))?;
    with_length(out, max)
}

/// `out`, a body after `LEN_BYTES` of room, with its length written there;
/// refused if the body is over `max`.
fn with_length(mut out: Vec<u8>, max: usize) -> Result<Vec<u8>, WireError> {
    let len = out.len() - LEN_BYTES;
    if len > max {
        return Err(WireError::Oversized { len, max });
    }
    let len = u32::try_from(len).map_err(|_| WireError::Oversized { len, max })?;
    out[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Entries as one compact gossip frame (length prefix included), refused
/// if over `max`. Each entry comes encoded by [`compact_entry`], so that
/// entries are encoded once however they are cut into frames.
pub fn encode_compact_gossip(entries: &[&[u8]], max: usize) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; LEN_BYTES];
    out.push(COMPACT_GOSSIP);
    // postcard writes a sequence as its length (LEB128) and its elements,
    // so a `TopologyUpdate` is the count followed by the entries.
    let mut count = entries.len();
    loop {
        let low = (count & 0x7f) as u8;
        count >>= 7;
        if count == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    for entry in entries {
        out.extend_from_slice(entry);
    }
    with_length(out, max)
}

/// One entry in the compact encoding, for [`encode_compact_gossip`].
pub fn compact_entry(entry: &PeerInfo) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(entry).map_err(|e| WireError::Garbled(e.to_string()))
}

/// A frame's body as a message.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    if let Some((&COMPACT_GOSSIP, body)) = frame.split_first() {
        let (update, rest) = postcard::take_from_bytes::<TopologyUpdate>(body)
            .map_err(|e| WireError::Garbled(format!("compact gossip: {e}")))?;
        if !rest.is_empty() {
            return Err(WireError::Garbled(format!(
                "compact gossip: {} bytes after the entries",
                rest.len()
            )));
        }
        return Ok(Message::Gossip(update));
    }
    serde_json::from_slice(frame).map_err(|e| WireError::Garbled(e.to_string()))
}

/// The version both sides speak (the highest common one), or why not.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<u32, Refusal> {
    if theirs.protocol != PROTOCOL {
        return Err(Refusal::WrongProtocol {
            theirs: sanitize(&theirs.protocol, 64),
        });
    }
    if theirs.min_version > theirs.max_version {
        return Err(Refusal::BadHello(format!(
            "version range {}..{} is empty",
            theirs.min_version, theirs.max_version
        )));
    }
    if let Err(e) = check_nickname(&theirs.nickname) {
        return Err(Refusal::BadHello(e));
    }
    if theirs.name == ours.name {
        return Err(if theirs.uid == ours.uid {
            Refusal::SelfConnection
        } else {
            Refusal::NameClash(ours.name)
        });
    }
    match (ours.encrypted, theirs.encrypted) {
        (true, false) => return Err(Refusal::PeerHasNoPassword),
        (false, true) => return Err(Refusal::WeHaveNoPassword),
        _ => {}
    }
    let low = ours.min_version.max(theirs.min_version);
    let high = ours.max_version.min(theirs.max_version);
    if low > high {
        return Err(Refusal::VersionMismatch {
            ours: (ours.min_version, ours.max_version),
            theirs: (theirs.min_version, theirs.max_version),
        });
    }
    Ok(high)
}

/// A nickname is printed by `weave status`: bounded, and no control
/// characters that could rewrite a terminal.
pub fn check_nickname(nickname: &str) -> Result<(), String> {
    if nickname.len() > MAX_NICKNAME {
        return Err(format!(
            "nickname of {} bytes exceeds {MAX_NICKNAME}",
            nickname.len()
        ));
    }
    if nickname.chars().any(char::is_control) {
        return Err("nickname contains control characters".into());
    }
    Ok(())
}

/// Text from a peer made fit for logs and status: control characters
/// replaced, at most `max` bytes.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello(h) => write!(f, "hello from {}({})", h.name, h.nickname),
            Self::Refuse { reason } => write!(f, "refuse: {reason}"),
            Self::Heartbeat => f.write_str("heartbeat"),
            Self::Gossip(u) => write!(f, "gossip of {} peers", u.peers.len()),
            Self::Noise { handshake } => {
                write!(f, "noise handshake of {} bytes", handshake.len())
            }
            Self::Ipam(p) => write!(f, "ipam message from {}", p.src),
            Self::Dns(g) => write!(f, "dns gossip of {} entries", g.entries.len()),
            Self::Digest(d) => write!(f, "topology digest of {} peers", d.peers.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;
    use crate::mesh::topology::ConnectionSummary;

    fn hello(name: &str, min: u32, max: u32) -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            min_version: min,
            max_version: max,
            name: name.parse().unwrap(),
            nickname: "host".into(),
            uid: 7,
            nonce: 9,
            listen_port: 6783,
            data_port: 6784,
            encrypted: false,
            aes_gcm: false,
            fastdp: false,
            heartbeats: false,
            heartbeat_key: None,
            path_mtu: false,
        }
    }

    fn messages() -> Vec<Message> {
        let mut info = PeerInfo::new("02:00:00:00:00:01".parse().unwrap(), "h1".into(), 1, 2);
        info.connections.push(ConnectionSummary {
            peer: "02:00:00:00:00:02".parse().unwrap(),
            address: "10.0.0.2:6783".parse().unwrap(),
            outbound: true,
            established: true,
        });
        vec![
            Message::Hello(hello("02:00:00:00:00:01", 1, 1)),
            Message::Refuse {
                reason: "no".into(),
            },
            Message::Heartbeat,
            Message::Gossip(TopologyUpdate { peers: vec![info] }),
            Message::Digest(TopologyDigest {
                peers: vec![crate::mesh::topology::DigestEntry {
                    name: "02:00:00:00:00:02".parse().unwrap(),
                    version: 1_764_806_400_000,
                    uid: u64::MAX,
                }],
            }),
        ]
    }

    fn frames_of(dec: &mut FrameDecoder) -> Result<Vec<Message>, WireError> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame()? {
            out.push(decode(f)?);
        }
        Ok(out)
    }

    #[test]
    fn a_big_frame_does_not_keep_its_buffer() {
        let big = with_length(vec![b'x'; LEN_BYTES + 200_000], MAX_FRAME).unwrap();
        let small = encode(&Message::Heartbeat, MAX_FRAME).unwrap();
        let mut dec = FrameDecoder::new(MAX_FRAME);
        dec.feed(&big);
        assert_eq!(dec.next_frame().unwrap().map(<[u8]>::len), Some(200_000));
        dec.feed(&small);
        assert_eq!(frames_of(&mut dec).unwrap(), [Message::Heartbeat]);
        assert!(
            dec.buf.capacity() <= KEEP_CAPACITY,
            "{}",
            dec.buf.capacity()
        );
    }

    #[test]
    fn messages_round_trip_whole_and_byte_by_byte() {
        let msgs = messages();
        let stream: Vec<u8> = msgs
            .iter()
            .flat_map(|m| encode(m, MAX_FRAME).unwrap())
            .collect();
        let mut dec = FrameDecoder::new(MAX_FRAME);
        dec.feed(&stream);
        assert_eq!(frames_of(&mut dec).unwrap(), msgs);
        assert_eq!(dec.buffered(), 0);

        let mut dec = FrameDecoder::new(MAX_FRAME);
        let mut got = Vec::new();
        for b in &stream {
            dec.feed(std::slice::from_ref(b));
            got.extend(frames_of(&mut dec).unwrap());
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn wire_format_is_length_prefixed_tagged_json() {
        let f = encode(&Message::Heartbeat, MAX_FRAME).unwrap();
        assert_eq!(&f[..4], &(f.len() as u32 - 4).to_be_bytes());
        assert_eq!(&f[4..], br#"{"type":"heartbeat"}"#);
    }

    /// `fastdp` came without a version bump: a hello from a peer that
    /// predates it decodes as "no fastdp", and the field survives the wire.
    #[test]
    fn hello_fastdp_and_aes_gcm_default_to_false_and_round_trip() {
        let old = br#"{"type":"hello","protocol":"weave-rs","min_version":1,"max_version":1,
            "name":"02:00:00:00:00:01","nickname":"h1","uid":1,"nonce":2,
            "listen_port":6783,"data_port":6784,"encrypted":false}"#;
        let Ok(Message::Hello(h)) = decode(old) else {
            panic!("an old hello decodes");
        };
        assert!(!h.fastdp);
        assert!(
            !h.aes_gcm,
            "a peer that predates the offer gets ChaCha20-Poly1305"
        );

        let mut h = hello("02:00:00:00:00:01", 1, 1);
        h.fastdp = true;
        h.aes_gcm = true;
        let f = encode(&Message::Hello(h.clone()), MAX_HELLO_FRAME).unwrap();
        assert!(f.windows(13).any(|w| w == br#""fastdp":true"#));
        assert!(f.windows(14).any(|w| w == br#""aes_gcm":true"#));
        assert_eq!(decode(&f[4..]), Ok(Message::Hello(h)));
    }

    /// A compact frame decodes to the gossip it was made from, is what
    /// postcard makes of the whole update, and is much smaller than JSON.
    #[test]
    fn compact_gossip_round_trips_and_is_small() {
        let Message::Gossip(update) = messages().remove(3) else {
            panic!("the fourth message is gossip");
        };
        let mut many = update.clone();
        for i in 0..200u8 {
            let mut e = update.peers[0].clone();
            e.name = format!("02:00:00:00:01:{i:02x}").parse().unwrap();
            many.peers.push(e);
        }
        for u in [TopologyUpdate::default(), update, many] {
            let entries: Vec<Vec<u8>> = u.peers.iter().map(|e| compact_entry(e).unwrap()).collect();
            let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
            let f = encode_compact_gossip(&refs, MAX_FRAME).unwrap();
            assert_eq!(&f[..4], &(f.len() as u32 - 4).to_be_bytes());
            assert_eq!(f[4], COMPACT_GOSSIP);
            assert_eq!(f[5..], postcard::to_allocvec(&u).unwrap());
            assert_eq!(decode(&f[4..]), Ok(Message::Gossip(u.clone())));
            let json = encode(&Message::Gossip(u.clone()), MAX_FRAME).unwrap();
            if u.peers.len() > 100 {
                assert!(f.len() * 4 < json.len(), "{} vs {}", f.len(), json.len());
            }
        }
    }

    #[test]
    fn compact_gossip_with_trailing_or_missing_bytes_is_garbled() {
        let Message::Gossip(update) = messages().remove(3) else {
            panic!("the fourth message is gossip");
        };
        let entry = compact_entry(&update.peers[0]).unwrap();
        let f = encode_compact_gossip(&[&entry], MAX_FRAME).unwrap();
        let mut long = f[4..].to_vec();
        long.push(0);
        assert!(matches!(decode(&long), Err(WireError::Garbled(_))));
        for cut in 1..f.len() - 4 {
            assert!(
                matches!(decode(&f[4..4 + cut]), Err(WireError::Garbled(_))),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            encode_compact_gossip(&[&entry], 8),
            Err(WireError::Oversized { .. })
        ));
    }

    #[test]
    fn truncated_input_waits_for_more() {
        let f = encode(&messages()[3], MAX_FRAME).unwrap();
        for cut in 0..f.len() {
            let mut dec = FrameDecoder::new(MAX_FRAME);
            dec.feed(&f[..cut]);
            assert_eq!(dec.next_frame(), Ok(None), "cut at {cut}");
            assert_eq!(dec.buffered(), cut);
        }
    }

    #[test]
    fn oversized_frames_fail_as_soon_as_the_header_arrives_and_stay_failed() {
        let mut dec = FrameDecoder::new(MAX_FRAME);
        dec.feed(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let err = WireError::Oversized {
            len: MAX_FRAME + 1,
            max: MAX_FRAME,
        };
        assert_eq!(dec.next_frame(), Err(err.clone()));
        dec.feed(&[0; 100]);
        assert_eq!(dec.next_frame(), Err(err));
        assert_eq!(dec.buffered(), 0);

        // "GET " from an HTTP client is a 1.2 GB length: refused at once.
        let mut dec = FrameDecoder::new(MAX_HELLO_FRAME);
        dec.feed(b"GET / HTTP/1.1\r\n");
        assert!(matches!(dec.next_frame(), Err(WireError::Oversized { .. })));

        let big = Message::Refuse {
            reason: "x".repeat(MAX_HELLO_FRAME),
        };
        assert!(matches!(
            encode(&big, MAX_HELLO_FRAME),
            Err(WireError::Oversized { .. })
        ));
    }

    #[test]
    fn bytes_after_the_last_frame_can_be_taken_back() {
        let mut stream = encode(&Message::Heartbeat, MAX_FRAME).unwrap();
        stream.extend_from_slice(b"ciphertext");
        let mut dec = FrameDecoder::new(MAX_FRAME);
        dec.feed(&stream);
        assert_eq!(
            decode(dec.next_frame().unwrap().unwrap()),
            Ok(Message::Heartbeat)
        );
        assert_eq!(dec.take_buffered(), b"ciphertext");
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn the_limit_can_rise_after_the_handshake() {
        let big = encode(
            &Message::Refuse {
                reason: "x".repeat(10_000),
            },
            MAX_FRAME,
        )
        .unwrap();
        let mut stream = encode(&messages()[0], MAX_HELLO_FRAME).unwrap();
        stream.extend_from_slice(&big);
        let mut dec = FrameDecoder::new(MAX_HELLO_FRAME);
        dec.feed(&stream);
        assert!(matches!(
            decode(dec.next_frame().unwrap().unwrap()),
            Ok(Message::Hello(_))
        ));
        dec.set_max(MAX_FRAME);
        assert!(matches!(
            decode(dec.next_frame().unwrap().unwrap()),
            Ok(Message::Refuse { .. })
        ));
    }

    #[test]
    fn random_and_mutated_input_never_panics_and_stays_bounded() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let valid: Vec<Vec<u8>> = messages()
            .iter()
            .map(|m| encode(m, MAX_FRAME).unwrap())
            .collect();
        for round in 0..20_000 {
            let mut dec = FrameDecoder::new(if round % 2 == 0 {
                MAX_HELLO_FRAME
            } else {
                1000
            });
            let mut input: Vec<u8> = if round % 3 == 0 {
                (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
            } else {
                // A valid stream with a few bytes flipped, cut or added.
                let mut v = valid[rng.random_range(0..valid.len())].clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..v.len());
                    v[i] = rng.random();
                }
                v.truncate(rng.random_range(0..=v.len()));
                v
            };
            input.extend((0..rng.random_range(0..8)).map(|_| rng.random::<u8>()));
            for chunk in input.chunks(rng.random_range(1..16)) {
                dec.feed(chunk);
                while let Ok(Some(f)) = dec.next_frame() {
                    let _ = decode(f);
                }
                assert!(
                    dec.buffered() <= 4 + 1000 + 16 || dec.buffered() <= 4 + MAX_HELLO_FRAME + 16
                );
            }
        }
    }

    #[test]
    fn hostile_json_is_an_error_not_a_crash() {
        for body in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"type\":\"nope\"}",
            b"{\"type\":\"hello\"}",
            b"{\"type\":\"hello\",\"protocol\":\"weave-rs\",\"min_version\":1,\"max_version\":1,\"name\":\"zz\",\"nickname\":\"\",\"uid\":1,\"nonce\":1,\"listen_port\":1,\"data_port\":1}",
            b"{\"type\":\"gossip\",\"peers\":[{\"name\":1}]}",
            b"\xff\xfe",
        ] {
            assert!(matches!(decode(body), Err(WireError::Garbled(_))), "{body:?}");
        }
        let deep = "[".repeat(100_000);
        assert!(decode(deep.as_bytes()).is_err());
        let deep = format!(
            "{{\"type\":\"refuse\",\"reason\":{}",
            "{\"a\":".repeat(50_000)
        );
        assert!(decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn negotiation_picks_the_highest_common_version_or_says_why_not() {
        let a = hello("02:00:00:00:00:01", 1, 3);
        assert_eq!(negotiate(&a, &hello("02:00:00:00:00:02", 2, 5)), Ok(3));
        assert_eq!(negotiate(&a, &hello("02:00:00:00:00:02", 1, 1)), Ok(1));

        let one = hello("02:00:00:00:00:01", 1, 1);
        let e = negotiate(&one, &hello("02:00:00:00:00:02", 2, 3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol mismatch: we speak 1..1, they speak 2..3"
        );
        // Symmetric: the other side refuses too.
        assert!(negotiate(&hello("02:00:00:00:00:02", 2, 3), &one).is_err());

        let mut other = hello("02:00:00:00:00:02", 1, 1);
        other.protocol = "weave".into();
        assert_eq!(
            negotiate(&one, &other).unwrap_err().to_string(),
            "wrong protocol: we speak weave-rs, they speak \"weave\""
        );

        assert_eq!(negotiate(&one, &one), Err(Refusal::SelfConnection));
        assert_eq!(
            negotiate(&one, &one).unwrap_err().to_string(),
            "connection to ourselves"
        );
        let mut twin = one.clone();
        twin.uid = 8;
        assert!(matches!(negotiate(&one, &twin), Err(Refusal::NameClash(_))));

        // Password or not: both sides refuse, each saying which side lacks one.
        let mut locked = hello("02:00:00:00:00:02", 1, 1);
        locked.encrypted = true;
        assert_eq!(negotiate(&one, &locked), Err(Refusal::WeHaveNoPassword));
        assert_eq!(negotiate(&locked, &one), Err(Refusal::PeerHasNoPassword));
        let mut both = one.clone();
        both.encrypted = true;
        assert_eq!(negotiate(&both, &locked), Ok(1));

        let mut bad = hello("02:00:00:00:00:02", 1, 1);
        bad.nickname = "evil\x1b[2J".into();
        assert!(matches!(negotiate(&one, &bad), Err(Refusal::BadHello(_))));
        bad.nickname = "n".repeat(MAX_NICKNAME + 1);
        assert!(matches!(negotiate(&one, &bad), Err(Refusal::BadHello(_))));
        assert!(matches!(
            negotiate(&one, &hello("02:00:00:00:00:02", 3, 2)),
            Err(Refusal::BadHello(_))
        ));
    }

    #[test]
    fn sanitize_bounds_and_cleans_text() {
        assert_eq!(sanitize("a\nb\x1b", 10), "a?b?");
        assert_eq!(sanitize("ééé", 4), "éé…");
        assert_eq!(sanitize("", 4), "");
    }
}
