//! The `mesh_frames` fuzz target: the TCP stream after (and including) the handshake.

use weave_agent::mesh::protocol::{
    self, FrameDecoder, MAX_FRAME, MAX_HELLO_FRAME, Message, WireError,
};

use weave_agent::mesh::topology::{DigestEntry, TopologyDigest, TopologyUpdate};

use super::Bytes;
use super::gossip_merge::small_update;
use super::mesh_handshake::hello;

/// The limit a stream's frames are held to, chosen by the input's first byte.
#[derive(Clone, Copy, Debug)]
enum Limits {
    /// As a connection does: the hello limit, raised after the first frame.
    Connection,
    /// The limit after the handshake from the start.
    Established,
    /// A small limit, so that oversized frames follow valid ones.
    Small,
}

impl Limits {
    const SMALL: usize = 64;

    const fn of(byte: u8) -> Self {
        match byte % 3 {
            0 => Self::Connection,
            1 => Self::Established,
            _ => Self::Small,
        }
    }

    const fn byte(self) -> u8 {
        self as u8
    }

    const fn first(self) -> usize {
        match self {
            Self::Connection => MAX_HELLO_FRAME,
            Self::Established => MAX_FRAME,
            Self::Small => Self::SMALL,
        }
    }

    const fn after_first(self) -> usize {
        match self {
            Self::Connection => MAX_FRAME,
            other => other.first(),
        }
    }
}

/// What a decoder made of a stream.
#[derive(Debug, Default, PartialEq)]
struct Decoded {
    frames: Vec<Vec<u8>>,
    error: Option<WireError>,
}

/// Feeds `stream` in chunks of the given sizes (the rest at once after the
/// last), taking every complete frame after each feed, and checks the
/// decoder's bounds as it goes.
fn decode_stream(
    stream: &[u8],
    limits: Limits,
    chunks: &mut dyn Iterator<Item = usize>,
) -> Decoded {
    let mut decoder = FrameDecoder::new(limits.first());
    let mut max = limits.first();
    let mut out = Decoded::default();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = chunks.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let held = decoder.buffered();
        decoder.feed(chunk);
        if out.error.is_some() {
            // Failed for good: holds nothing, takes nothing, says the same.
            assert_eq!(decoder.buffered(), 0, "a failed decoder kept bytes");
            assert_eq!(
                decoder.next_frame().map(|f| f.map(<[u8]>::len)),
                Err(out.error.clone().unwrap())
            );
            continue;
        }
        assert_eq!(decoder.buffered(), held + chunk.len());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= max,
                        "frame of {} bytes over the limit {max}",
                        frame.len()
                    );
                    out.frames.push(frame.to_vec());
                    if out.frames.len() == 1 {
                        max = limits.after_first();
                        decoder.set_max(max);
                    }
                }
                Ok(None) => {
                    // At most one partial frame: its header and < max bytes.
                    assert!(
                        decoder.buffered() < 4 + max,
                        "decoder holds {} bytes waiting for a frame (limit {max})",
                        decoder.buffered()
                    );
                    break;
                }
                Err(e) => {
                    assert!(
                        matches!(e, WireError::Oversized { max: m, .. } if m == max),
                        "{e:?}"
                    );
                    assert_eq!(decoder.buffered(), 0, "a failed decoder kept bytes");
                    out.error = Some(e);
                    break;
                }
            }
        }
    }
    out
}

/// Input: a byte choosing the limits, a byte seeding the chunk sizes, then
/// the stream. The stream fed in chunks gives the same frames (and error) as
/// fed at once; the decoder never holds more than one frame's worth; every
/// message decoded re-encodes to itself.
pub fn mesh_frames(data: &[u8]) {
    let mut input = Bytes::new(data);
    let limits = Limits::of(input.byte());
    let mut state = u32::from(input.byte()) | 0x100;
    let stream = input.rest();
    let mut sizes = std::iter::from_fn(|| {
        // xorshift32: sizes from 1 to 97, some tiny, some spanning frames.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(1 + (state % 97) as usize)
    });
    let chunked = decode_stream(stream, limits, &mut sizes);
    let whole = decode_stream(stream, limits, &mut std::iter::empty());
    assert_eq!(chunked, whole, "chunking changed what was decoded");
    for frame in &whole.frames {
        check_message(frame);
    }
}

/// A message a peer sent decodes, or not, without panicking; when it does,
/// it prints and re-encodes to the same message.
pub(crate) fn check_message(frame: &[u8]) -> Option<Message> {
    let message = protocol::decode(frame).ok()?;
    let _ = message.to_string();
    let encoded = protocol::encode(&message, usize::MAX)
        .unwrap_or_else(|e| panic!("cannot re-encode {message:?}: {e}"));
    assert_eq!(
        protocol::decode(&encoded[4..]).as_ref(),
        Ok(&message),
        "re-encoded as {:?}",
        String::from_utf8_lossy(&encoded[4..])
    );
    if let Message::Gossip(update) = &message {
        let entries: Vec<Vec<u8>> = update
            .peers
            .iter()
            .map(|e| protocol::compact_entry(e).expect("a decoded entry encodes"))
            .collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let compact = protocol::encode_compact_gossip(&refs, usize::MAX)
            .expect("a decoded update encodes compact");
        assert_eq!(
            protocol::decode(&compact[4..]).as_ref(),
            Ok(&message),
            "compact re-encoding"
        );
    }
    Some(message)
}

/// `update` as a compact gossip frame (protocol 3).
fn compact(update: &TopologyUpdate) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = update
        .peers
        .iter()
        .map(|e| protocol::compact_entry(e).expect("seed entries encode"))
        .collect();
    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    protocol::encode_compact_gossip(&refs, MAX_FRAME).expect("seed gossip fits a frame")
}

/// What a peer holding `update` says in its digest.
fn digest_of(update: &TopologyUpdate) -> TopologyDigest {
    TopologyDigest {
        peers: update
            .peers
            .iter()
            .map(|p| DigestEntry {
                name: p.name,
                version: p.version,
                uid: p.uid,
            })
            .collect(),
    }
}

pub(crate) fn encode(message: &Message) -> Vec<u8> {
    protocol::encode(message, MAX_FRAME).expect("seed messages fit a frame")
}

pub(crate) fn frames_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |limits: Limits, chunks: u8, messages: &[Message]| {
        let mut data = vec![limits.byte(), chunks];
        for m in messages {
            data.extend(encode(m));
        }
        data
    };
    let session = [
        Message::Hello(hello(2, "host2")),
        Message::Heartbeat,
        Message::Gossip(small_update()),
        Message::Refuse {
            reason: "shutting down".into(),
        },
    ];
    let mut truncated = with(Limits::Connection, 7, &session[..3]);
    truncated.truncate(truncated.len() - 5);
    let mut http = vec![Limits::Connection.byte(), 0];
    http.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    vec![
        ("connection", with(Limits::Connection, 0, &session)),
        (
            "connection-other-chunks",
            with(Limits::Connection, 1, &session),
        ),
        ("established", with(Limits::Established, 42, &session[1..])),
        (
            "small-limit-oversized",
            with(Limits::Small, 9, &session[1..]),
        ),
        ("truncated", truncated),
        ("http-client", http),
        (
            "digest",
            with(
                Limits::Established,
                3,
                &[
                    Message::Digest(digest_of(&small_update())),
                    session[1].clone(),
                ],
            ),
        ),
        ("compact-gossip", {
            let mut data = with(Limits::Established, 5, &session[1..2]);
            data.extend(compact(&small_update()));
            data.extend(encode(&session[3]));
            data
        }),
    ]
}
