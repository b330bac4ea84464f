//! Data-path liveness of one connection: the TCP control connection can be
//! up while UDP between the two peers is blocked, so each side sends a
//! heartbeat (`overlay::heartbeat`) over the data port every second and
//! counts the connection as usable for forwarding only while the other's
//! arrive. A pure state machine: the router feeds it what arrived and asks
//! what to send and whether the path is up.
//!
//! It also learns where the peer's data comes from: behind a NAT, the
//! source of its authenticated heartbeats, not the address of its control
//! connection, is where to send it frames.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hkdf::Hkdf;
use sha2::Sha256;

use crate::overlay::heartbeat::{self, HeartbeatKey, Rejected};
use crate::peer_name::PeerName;

/// One connection's heartbeats, both ways.
#[derive(Debug)]
pub struct DataPath {
    /// Ours: what our heartbeats are tagged with.
    send_key: HeartbeatKey,
    /// The peer's.
    recv_key: HeartbeatKey,
    /// The last sequence number sent.
    sent: u64,
    /// The last sequence number accepted (replays are not newer).
    accepted: u64,
    /// When the connection was established: the grace before a first
    /// heartbeat counts from there.
    since: Instant,
    last_heard: Option<Instant>,
    /// The source address of the peer's last accepted heartbeat.
    learnt: Option<SocketAddr>,
}

/// The data path as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub up: bool,
    /// Since the last heartbeat from the peer (since the connection was
    /// established, if none came yet).
    pub silent_for: Duration,
    pub learnt: Option<SocketAddr>,
}

impl DataPath {
    pub const fn new(send_key: HeartbeatKey, recv_key: HeartbeatKey, now: Instant) -> Self {
        Self {
            send_key,
            recv_key,
            sent: 0,
            accepted: 0,
            since: now,
            last_heard: None,
            learnt: None,
        }
    }

    /// Password mode: both keys from the connection's data keys (each
    /// direction's own), so that no key travels in clear.
    pub fn derived(send_data_key: &[u8], recv_data_key: &[u8], now: Instant) -> Self {
        Self::new(derive(send_data_key), derive(recv_data_key), now)
    }

    /// Our next heartbeat to the peer.
    pub fn next_heartbeat(&mut self, me: PeerName) -> [u8; heartbeat::LEN] {
        self.sent += 1;
        heartbeat::encode(&self.send_key, me, self.sent)
    }

    /// A heartbeat that claims to come from this connection's peer, from
    /// `from`. Accepted: whether the peer's data address changed (the
    /// first one counts: until then the address was a guess).
    pub fn heard(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<bool, Rejected> {
        self.accepted = heartbeat::verify(&self.recv_key, datagram, self.accepted)?;
        self.last_heard = Some(now);
        let moved = self.learnt != Some(from);
        self.learnt = Some(from);
        Ok(moved)
    }

    /// Up while the peer's heartbeats arrive: the last less than
    /// `dead_after` ago (or the connection younger than that).
    pub fn up(&self, now: Instant, dead_after: Duration) -> bool {
        self.silent_for(now) < dead_after
    }

    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard.unwrap_or(self.since))
    }

    /// Where the peer's data comes from, once a heartbeat told us.
    pub const fn learnt(&self) -> Option<SocketAddr> {
        self.learnt
    }

    /// A path MTU probe that claims to come from this connection's peer,
    /// `len` bytes long, of which `head` is the start: its (id, size).
    pub fn probe_arrived(&self, head: &[u8], len: usize) -> Result<(u64, u16), Rejected> {
        heartbeat::verify_probe(&self.recv_key, head, len)
    }

    /// Our acknowledgement of the peer's probe `id` of `size` bytes.
    pub fn ack(&self, me: PeerName, id: u64, size: u16) -> [u8; heartbeat::PROBE_HEADER] {
        heartbeat::encode_ack(&self.send_key, me, id, size)
    }

    /// An acknowledgement of one of our probes: its (id, size).
    pub fn ack_arrived(&self, datagram: &[u8]) -> Result<(u64, u16), Rejected> {
        heartbeat::verify_ack(&self.recv_key, datagram)
    }

    /// Our probe `id`, as long as `out`.
    pub fn probe(&self, me: PeerName, id: u64, out: &mut [u8]) {
        heartbeat::encode_probe(&self.send_key, me, id, out);
    }

    pub fn seen(&self, now: Instant, dead_after: Duration) -> Seen {
        Seen {
            up: self.up(now, dead_after),
            silent_for: self.silent_for(now),
            learnt: self.learnt,
        }
    }
}

/// A heartbeat key from one direction's data key.
fn derive(data_key: &[u8]) -> HeartbeatKey {
    let hk = Hkdf::<Sha256>::new(None, data_key);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit: cannot fail.
    let _ = hk.expand(b"weave-rs data-path heartbeats", &mut key);
    HeartbeatKey(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Mac;

    const DEAD: Duration = Duration::from_secs(6);

    fn pair(now: Instant) -> (DataPath, DataPath) {
        let (a, b) = (HeartbeatKey([1; 32]), HeartbeatKey([2; 32]));
        (
            DataPath::new(a.clone(), b.clone(), now),
            DataPath::new(b, a, now),
        )
    }

    fn name(i: u8) -> PeerName {
        PeerName(Mac([0xa6, 0x66, 0x4f, 0xa5, 0x8b, i]))
    }

    #[test]
    fn up_during_the_grace_then_only_while_heartbeats_arrive() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let from: SocketAddr = "10.0.0.1:6784".parse().unwrap();
        assert!(b.up(t0 + Duration::from_secs(5), DEAD));
        assert!(!b.up(t0 + DEAD, DEAD));
        let hb = a.next_heartbeat(name(1));
        assert_eq!(b.heard(&hb, from, t0 + DEAD), Ok(true));
        assert!(b.up(t0 + DEAD, DEAD));
        assert_eq!(
            b.seen(t0 + Duration::from_secs(8), DEAD),
            Seen {
                up: true,
                silent_for: Duration::from_secs(2),
                learnt: Some(from)
            }
        );
        assert!(!b.up(t0 + DEAD * 2, DEAD));
    }

    #[test]
    fn replays_and_other_keys_are_refused() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let from: SocketAddr = "10.0.0.1:6784".parse().unwrap();
        let first = a.next_heartbeat(name(1));
        let second = a.next_heartbeat(name(1));
        assert_eq!(b.heard(&second, from, t0), Ok(true));
        assert_eq!(b.heard(&first, from, t0), Err(Rejected::Replayed));
        assert_eq!(b.heard(&second, from, t0), Err(Rejected::Replayed));
        // Its own heartbeats reflected back carry the other key.
        let mine = b.next_heartbeat(name(2));
        assert_eq!(b.heard(&mine, from, t0), Err(Rejected::BadTag));
        assert_eq!(a.heard(&mine, from, t0), Ok(true));
    }

    #[test]
    fn the_data_address_is_learnt_from_heartbeats() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let direct: SocketAddr = "10.0.0.1:6784".parse().unwrap();
        let nat: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        assert_eq!(b.learnt(), None);
        assert_eq!(b.heard(&a.next_heartbeat(name(1)), direct, t0), Ok(true));
        assert_eq!(b.heard(&a.next_heartbeat(name(1)), direct, t0), Ok(false));
        assert_eq!(b.heard(&a.next_heartbeat(name(1)), nat, t0), Ok(true));
        assert_eq!(b.learnt(), Some(nat));
    }

    #[test]
    fn probes_are_acknowledged_across_the_connection() {
        let t0 = Instant::now();
        let (a, b) = pair(t0);
        let mut probe = vec![0u8; 900];
        a.probe(name(1), 3, &mut probe);
        assert_eq!(b.probe_arrived(&probe[..40], 900), Ok((3, 900)));
        assert_eq!(
            a.probe_arrived(&probe, 900),
            Err(Rejected::BadTag),
            "our own, reflected"
        );
        let ack = b.ack(name(2), 3, 900);
        assert_eq!(a.ack_arrived(&ack), Ok((3, 900)));
        assert_eq!(b.ack_arrived(&ack), Err(Rejected::BadTag));
    }

    #[test]
    fn derived_keys_match_across_the_connection() {
        let t0 = Instant::now();
        let (i2r, r2i) = ([3u8; 32], [4u8; 32]);
        let mut initiator = DataPath::derived(&i2r, &r2i, t0);
        let mut responder = DataPath::derived(&r2i, &i2r, t0);
        let from: SocketAddr = "10.0.0.1:6784".parse().unwrap();
        let hb = initiator.next_heartbeat(name(1));
        assert_eq!(responder.heard(&hb, from, t0), Ok(true));
        let hb = responder.next_heartbeat(name(2));
        assert_eq!(initiator.heard(&hb, from, t0), Ok(true));
        // Not the data key itself.
        let mut raw = DataPath::new(HeartbeatKey(r2i), HeartbeatKey(i2r), t0);
        assert_eq!(
            raw.heard(&initiator.next_heartbeat(name(1)), from, t0),
            Err(Rejected::BadTag)
        );
    }
}
