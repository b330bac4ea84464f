//! One TCP connection to a peer, run as one task: the handshake (bounded in
//! time), then a reader and a writer side by side. The task owns the socket
//! and tells the router what happens through [`Event`]s; the router talks to
//! it through a bounded queue of [`Outgoing`] frames.
//!
//! The handshake: both sides send a hello; each checks the pair with
//! [`negotiate`] and either refuses (sends the reason, closes) or sends a
//! heartbeat. A connection is established when the peer's first message
//! after its hello is that heartbeat, which proves it accepted us too.
//!
//! In password mode (both hellos say `encrypted`; a mismatch is refused
//! like a version mismatch), a Noise handshake comes between the hellos and
//! the heartbeat (see [`crate::mesh::noise`]): a peer with another password
//! fails it and is refused with that reason; everything after it, the
//! confirming heartbeat included, travels encrypted.
//!
//! After that, each side sends a heartbeat every `heartbeat`; a peer silent
//! for `dead_after` is dead. Anything undecodable, oversized or out of order
//! closes the connection with a reason the router counts.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, timeout};

use crate::mesh::beat;
use crate::mesh::noise::{self, DataKeys, Handshake, Opener, Psk, Sealer};
use crate::mesh::protocol::{
    FrameDecoder, Hello, MAX_FRAME, MAX_HELLO_FRAME, MAX_REASON, Message, Refusal, WireError,
    decode, encode, negotiate, sanitize,
};

/// The router's id for a connection.
pub type ConnId = u64;

/// Bytes read from the socket at a time: held by every connection for its
/// life, and control messages at rest are a few dozen bytes.
const READ_CHUNK: usize = 16 * 1024;
/// How long a refusal may take to write before the socket is dropped anyway.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Timeouts of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionTiming {
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub handshake_timeout: Duration,
}

/// What a connection task reports to the router.
#[derive(Debug)]
pub enum Event {
    /// A dial finished: the addresses the target resolved to, and the error
    /// if no connection was made (then the task ends without `Closed`).
    Dialled {
        id: ConnId,
        resolved: Vec<SocketAddr>,
        error: Option<String>,
    },
    Established {
        id: ConnId,
        hello: Hello,
        /// The peer's TCP address, IPv4-mapped addresses made plain.
        remote: SocketAddr,
        /// Our end of the connection, IPv4-mapped addresses made plain: the
        /// address the peer knows us by (fastdp's outer source address).
        local: SocketAddr,
        version: u32,
        /// The data plane's keys for this connection (password mode).
        keys: Option<DataKeys>,
    },
    /// A message for the router (gossip; heartbeats stay here).
    Received { id: ConnId, message: Message },
    /// The connection is gone; the task ends.
    Closed { id: ConnId, reason: CloseReason },
}

/// What the router sends down a connection.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded frame, shared between the connections it goes to.
    Frame(Arc<[u8]>),
    /// Tell the peer why, then close.
    Close(String),
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    pub kind: CloseKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseKind {
    /// We refused the peer's hello.
    Refused,
    /// We dialled ourselves: never worth retrying.
    SelfConnection,
    /// The peer refused our handshake (its reason in the detail).
    RefusedByPeer,
    HandshakeTimeout,
    /// A frame over the size limit.
    Oversized,
    /// An undecodable or out-of-order message.
    Garbled,
    /// Nothing heard for `dead_after`.
    HeartbeatTimeout,
    /// A write did not finish within `dead_after`.
    WriteTimeout,
    /// The peer closed the connection (saying why, or not).
    Eof,
    Io,
    /// The router closed it.
    Local,
}

impl CloseReason {
    pub fn new(kind: CloseKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    fn io(op: &str, e: std::io::Error) -> Self {
        Self::new(CloseKind::Io, format!("{op}: {e}"))
    }

    fn wire(e: WireError) -> Self {
        match e {
            WireError::Oversized { .. } => Self::new(CloseKind::Oversized, e.to_string()),
            WireError::Garbled(_) => Self::new(CloseKind::Garbled, sanitize(&e.to_string(), 200)),
        }
    }

    fn refused_by_peer(reason: &str) -> Self {
        Self::new(
            CloseKind::RefusedByPeer,
            format!("refused by the peer: {}", sanitize(reason, MAX_REASON)),
        )
    }

    fn closed_by_peer(reason: &str) -> Self {
        Self::new(
            CloseKind::Eof,
            format!("closed by the peer: {}", sanitize(reason, MAX_REASON)),
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Everything a connection task needs besides its socket.
pub struct Setup {
    pub id: ConnId,
    /// Ours, with this connection's nonce.
    pub hello: Hello,
    pub timing: ConnectionTiming,
    pub events: mpsc::Sender<Event>,
    pub outgoing: mpsc::Receiver<Outgoing>,
    /// Password mode: the pre-shared key (and `hello.encrypted` is set).
    pub psk: Option<Psk>,
}

/// Runs a connection to its end and reports why it ended.
pub async fn run(stream: TcpStream, setup: Setup) {
    let id = setup.id;
    let events = setup.events.clone();
    let reason = session(stream, setup).await;
    let _ = events.send(Event::Closed { id, reason }).await;
}

async fn session(stream: TcpStream, setup: Setup) -> CloseReason {
    let Setup {
        id,
        hello,
        timing,
        events,
        mut outgoing,
        psk,
    } = setup;
    let _ = stream.set_nodelay(true);
    let remote = match stream.peer_addr() {
        Ok(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        Err(e) => return CloseReason::io("reading the peer address", e),
    };
    let local = match stream.local_addr() {
        Ok(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        Err(e) => return CloseReason::io("reading our address", e),
    };
    let (rd, wr) = stream.into_split();
    let mut reader = Reader {
        rd,
        decoder: FrameDecoder::new(MAX_HELLO_FRAME),
        buf: vec![0; READ_CHUNK].into_boxed_slice(),
        opener: None,
        plain: Vec::new(),
    };
    let mut wr = Writer {
        wr,
        sealer: None,
        sealed: Vec::new(),
    };

    let (theirs, version, keys) = match timeout(
        timing.handshake_timeout,
        handshake(&mut reader, &mut wr, &hello, psk.as_ref()),
    )
    .await
    {
        Err(_) => {
            return CloseReason::new(
                CloseKind::HandshakeTimeout,
                format!("no handshake within {:?}", timing.handshake_timeout),
            );
        }
        Ok(Err(reason)) => return reason,
        Ok(Ok(agreed)) => agreed,
    };
    let established = Event::Established {
        id,
        hello: theirs,
        remote,
        local,
        version,
        keys,
    };
    if events.send(established).await.is_err() {
        return CloseReason::new(CloseKind::Local, "the router is gone");
    }

    tokio::select! {
        reason = reader.serve(id, &events, timing.dead_after) => reason,
        reason = write_loop(&mut wr, &mut outgoing, timing) => reason,
    }
}

/// Hellos both ways, the check, the Noise handshake in password mode,
/// then the heartbeat that confirms it.
async fn handshake(
    reader: &mut Reader,
    wr: &mut Writer,
    ours: &Hello,
    psk: Option<&Psk>,
) -> Result<(Hello, u32, Option<DataKeys>), CloseReason> {
    let hello =
        encode(&Message::Hello(ours.clone()), MAX_HELLO_FRAME).map_err(CloseReason::wire)?;
    wr.send(&hello)
        .await
        .map_err(|e| CloseReason::io("sending our hello", e))?;
    let (theirs, their_body) = match reader.next_with_body().await? {
        (Message::Hello(h), body) => (h, body),
        (Message::Refuse { reason }, _) => return Err(CloseReason::refused_by_peer(&reason)),
        (other, _) => {
            return Err(CloseReason::new(
                CloseKind::Garbled,
                format!("expected a hello, got a {}", kind_of(&other)),
            ));
        }
    };
    let version = match negotiate(ours, &theirs) {
        Ok(v) => v,
        Err(refusal) => {
            let kind = match refusal {
                Refusal::SelfConnection => CloseKind::SelfConnection,
                _ => CloseKind::Refused,
            };
            return Err(wr.refuse(kind, refusal.to_string()).await);
        }
    };
    let keys = match (ours.encrypted, psk) {
        (true, Some(psk)) => {
            let keys =
                noise_handshake(reader, wr, ours, &theirs, &hello[4..], &their_body, psk).await?;
            Some(keys)
        }
        (true, None) => {
            return Err(CloseReason::new(
                CloseKind::Local,
                "password mode without a key",
            ));
        }
        (false, _) => None,
    };
    reader.decoder.set_max(MAX_FRAME);
    let heartbeat = encode(&Message::Heartbeat, MAX_FRAME).map_err(CloseReason::wire)?;
    wr.send(&heartbeat)
        .await
        .map_err(|e| CloseReason::io("confirming the handshake", e))?;
    match reader.next().await? {
        Message::Heartbeat => Ok((theirs, version, keys)),
        Message::Refuse { reason } => Err(CloseReason::refused_by_peer(&reason)),
        other => Err(CloseReason::new(
            CloseKind::Garbled,
            format!(
                "expected the handshake's heartbeat, got a {}",
                kind_of(&other)
            ),
        )),
    }
}

/// The two Noise messages; on success the reader and writer encrypt from
/// now on. A message that fails to authenticate is refused with the
/// reason, so both sides say why.
async fn noise_handshake(
    reader: &mut Reader,
    wr: &mut Writer,
    ours: &Hello,
    theirs: &Hello,
    our_body: &[u8],
    their_body: &[u8],
    psk: &Psk,
) -> Result<DataKeys, CloseReason> {
    let initiator = noise::we_initiate(&ours.name, &theirs.name);
    let prologue = if initiator {
        noise::prologue(our_body, their_body)
    } else {
        noise::prologue(their_body, our_body)
    };
    let internal = |e: noise::NoiseError| CloseReason::new(CloseKind::Local, e.to_string());
    let mut hs = Handshake::new(psk, &prologue, initiator).map_err(internal)?;
    if initiator {
        send_noise(wr, &mut hs).await?;
    }
    let message = match reader.next().await? {
        Message::Noise { handshake } => handshake,
        Message::Refuse { reason } => return Err(CloseReason::refused_by_peer(&reason)),
        other => {
            return Err(CloseReason::new(
                CloseKind::Garbled,
                format!("expected a noise handshake, got a {}", kind_of(&other)),
            ));
        }
    };
    if let Err(e) = hs.read(&message) {
        return Err(wr.refuse(CloseKind::Refused, e.to_string()).await);
    }
    if !initiator {
        send_noise(wr, &mut hs).await?;
    }
    let (channel, keys) = hs.finish().map_err(internal)?;
    let (sealer, opener) = channel.split();
    wr.sealer = Some(sealer);
    reader.encrypt_from_now(opener)?;
    Ok(keys)
}

async fn send_noise(wr: &mut Writer, hs: &mut Handshake) -> Result<(), CloseReason> {
    let handshake = hs
        .write()
        .map_err(|e| CloseReason::new(CloseKind::Local, e.to_string()))?;
    let frame =
        encode(&Message::Noise { handshake }, MAX_HELLO_FRAME).map_err(CloseReason::wire)?;
    wr.send(&frame)
        .await
        .map_err(|e| CloseReason::io("sending the noise handshake", e))
}

const fn kind_of(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "hello",
        Message::Refuse { .. } => "refuse",
        Message::Heartbeat => "heartbeat",
        Message::Gossip(_) => "gossip",
        Message::Noise { .. } => "noise handshake",
        Message::Ipam(_) => "ipam",
        Message::Dns(_) => "dns",
        Message::Digest(_) => "digest",
    }
}

struct Reader {
    rd: OwnedReadHalf,
    decoder: FrameDecoder,
    buf: Box<[u8]>,
    /// Password mode, after the handshake: decrypts what is read.
    opener: Option<Opener>,
    /// Decrypted bytes on their way to the decoder.
    plain: Vec<u8>,
}

impl Reader {
    /// The next message, reading as much as it takes.
    async fn next(&mut self) -> Result<Message, CloseReason> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(CloseReason::wire)? {
                return decode(frame).map_err(CloseReason::wire);
            }
            self.fill().await?;
        }
    }

    /// The next message and its frame as received (for the hellos, which
    /// the Noise handshake binds).
    async fn next_with_body(&mut self) -> Result<(Message, Vec<u8>), CloseReason> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(CloseReason::wire)? {
                let message = decode(frame).map_err(CloseReason::wire)?;
                return Ok((message, frame.to_vec()));
            }
            self.fill().await?;
        }
    }

    /// Decrypts everything from now on, including what was read already
    /// behind the last clear frame (the peer may have sent its first
    /// encrypted message right behind its last handshake message).
    fn encrypt_from_now(&mut self, mut opener: Opener) -> Result<(), CloseReason> {
        let rest = self.decoder.take_buffered();
        self.plain.clear();
        opener
            .open(&rest, &mut self.plain)
            .map_err(|e| CloseReason::new(CloseKind::Garbled, format!("encrypted stream: {e}")))?;
        self.decoder.feed(&self.plain);
        self.opener = Some(opener);
        Ok(())
    }

    /// One read from the socket into the decoder, decrypted in password mode.
    async fn fill(&mut self) -> Result<(), CloseReason> {
        let n = self
            .rd
            .read(&mut self.buf)
            .await
            .map_err(|e| CloseReason::io("reading", e))?;
        if n == 0 {
            return Err(CloseReason::new(CloseKind::Eof, "closed by the peer"));
        }
        match &mut self.opener {
            None => self.decoder.feed(&self.buf[..n]),
            Some(opener) => {
                self.plain.clear();
                opener.open(&self.buf[..n], &mut self.plain).map_err(|e| {
                    CloseReason::new(CloseKind::Garbled, format!("encrypted stream: {e}"))
                })?;
                self.decoder.feed(&self.plain);
            }
        }
        Ok(())
    }

    /// Passes messages on until the connection fails or goes quiet.
    async fn serve(
        &mut self,
        id: ConnId,
        events: &mpsc::Sender<Event>,
        dead_after: Duration,
    ) -> CloseReason {
        loop {
            let message = match timeout(dead_after, self.next()).await {
                Err(_) => {
                    return CloseReason::new(
                        CloseKind::HeartbeatTimeout,
                        format!("nothing heard for {dead_after:?}"),
                    );
                }
                Ok(Err(reason)) => return reason,
                Ok(Ok(m)) => m,
            };
            match message {
                Message::Heartbeat => {}
                Message::Refuse { reason } => return CloseReason::closed_by_peer(&reason),
                Message::Hello(_) | Message::Noise { .. } => {
                    return CloseReason::new(
                        CloseKind::Garbled,
                        "a handshake message after the handshake",
                    );
                }
                message @ (Message::Gossip(_)
                | Message::Ipam(_)
                | Message::Dns(_)
                | Message::Digest(_)) => {
                    if events.send(Event::Received { id, message }).await.is_err() {
                        return CloseReason::new(CloseKind::Local, "the router is gone");
                    }
                }
            }
        }
    }
}

/// The sending half: frames as they are, or encrypted in password mode.
struct Writer {
    wr: OwnedWriteHalf,
    /// Password mode, after the handshake.
    sealer: Option<Sealer>,
    /// Encrypted bytes on their way out, reused.
    sealed: Vec<u8>,
}

impl Writer {
    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match &mut self.sealer {
            None => self.wr.write_all(frame).await,
            Some(sealer) => {
                self.sealed.clear();
                sealer
                    .seal(frame, &mut self.sealed)
                    .map_err(std::io::Error::other)?;
                self.wr.write_all(&self.sealed).await
            }
        }
    }

    /// Tells the peer why (briefly), closes, and gives the reason.
    async fn refuse(&mut self, kind: CloseKind, reason: String) -> CloseReason {
        if let Ok(frame) = encode(
            &Message::Refuse {
                reason: reason.clone(),
            },
            MAX_FRAME,
        ) {
            let _ = timeout(REFUSE_WRITE_TIMEOUT, async {
                let _ = self.send(&frame).await;
                let _ = self.wr.shutdown().await;
            })
            .await;
        }
        CloseReason::new(kind, reason)
    }
}

/// Sends the router's frames, and a heartbeat every `heartbeat`.
async fn write_loop(
    wr: &mut Writer,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    timing: ConnectionTiming,
) -> CloseReason {
    let heartbeat: Arc<[u8]> = match encode(&Message::Heartbeat, MAX_FRAME) {
        Ok(f) => f.into(),
        Err(e) => return CloseReason::wire(e),
    };
    let mut tick = tokio::time::interval_at(beat::next(timing.heartbeat), timing.heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            cmd = outgoing.recv() => match cmd {
                Some(Outgoing::Frame(f)) => f,
                Some(Outgoing::Close(reason)) => {
                    return wr.refuse(CloseKind::Local, reason).await;
                }
                None => return CloseReason::new(CloseKind::Local, "closed"),
            },
            _ = tick.tick() => Arc::clone(&heartbeat),
        };
        match timeout(timing.dead_after, wr.send(&frame)).await {
            Err(_) => {
                return CloseReason::new(
                    CloseKind::WriteTimeout,
                    format!("a write took over {:?}", timing.dead_after),
                );
            }
            Ok(Err(e)) => return CloseReason::io("writing", e),
            Ok(Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::mesh::protocol::PROTOCOL;

    fn hello(last: u8) -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            min_version: 1,
            max_version: 1,
            name: format!("02:00:00:00:00:{last:02x}").parse().unwrap(),
            nickname: format!("p{last}"),
            uid: u64::from(last),
            nonce: 1,
            listen_port: 6783,
            data_port: 6784,
            encrypted: true,
            aes_gcm: false,
            fastdp: false,
            heartbeats: false,
            heartbeat_key: None,
            path_mtu: false,
        }
    }

    /// The next frame body from a raw stream.
    async fn frame(stream: &mut TcpStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await.unwrap();
        body
    }

    /// A responder that sends its last handshake message and its first
    /// encrypted one in a single write: the connection must decrypt what it
    /// read behind the handshake message, not decode it as clear frames.
    #[test]
    fn encrypted_bytes_right_behind_the_handshake_are_decrypted() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let psk = Psk::from_bytes([5; 32]);
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let (events_tx, mut events) = mpsc::channel(8);
                let (_out_tx, outgoing) = mpsc::channel(8);
                let setup = Setup {
                    id: 1,
                    // The smaller name: this side initiates the Noise handshake.
                    hello: hello(1),
                    timing: ConnectionTiming {
                        heartbeat: Duration::from_secs(1),
                        dead_after: Duration::from_secs(10),
                        handshake_timeout: Duration::from_secs(10),
                    },
                    events: events_tx,
                    outgoing,
                    psk: Some(psk.clone()),
                };
                tokio::spawn(async move {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    run(stream, setup).await;
                });

                let (mut peer, _) = listener.accept().await.unwrap();
                let ours = frame(&mut peer).await;
                let theirs = encode(&Message::Hello(hello(2)), MAX_HELLO_FRAME).unwrap();
                peer.write_all(&theirs).await.unwrap();
                let Ok(Message::Noise { handshake: first }) = decode(&frame(&mut peer).await)
                else {
                    panic!("expected the first noise message");
                };
                let prologue = noise::prologue(&ours, &theirs[4..]);
                let mut hs = Handshake::new(&psk, &prologue, false).unwrap();
                hs.read(&first).unwrap();
                let reply = encode(
                    &Message::Noise {
                        handshake: hs.write().unwrap(),
                    },
                    MAX_HELLO_FRAME,
                )
                .unwrap();
                let (channel, _) = hs.finish().unwrap();
                let (mut sealer, _) = channel.split();
                let mut both = reply;
                let heartbeat = encode(&Message::Heartbeat, MAX_FRAME).unwrap();
                sealer.seal(&heartbeat, &mut both).unwrap();
                peer.write_all(&both).await.unwrap();

                match timeout(Duration::from_secs(10), events.recv()).await {
                    Ok(Some(Event::Established { keys, .. })) => assert!(keys.is_some()),
                    other => panic!("expected the connection established, got {other:?}"),
                }
            });
    }
}
