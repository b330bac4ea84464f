//! Which addresses to dial, and when.
//!
//! Two kinds of destinations: the targets the user gave (`host` or
//! `host:port`, port 6783 by default), and, with discovery on, the addresses
//! other peers report for peers we are not connected to. Each is dialled at
//! once, then after a failure again with exponential backoff and jitter
//! (`Backoff`), and not while a connection satisfies it. A destination
//! whose peer comes back as a new incarnation (a restart: a new uid in the
//! topology) is dialled again at once: the backoff it earned while the peer
//! was down would only delay the reconnection, and a hundred peers
//! restarted together spent seconds in it.
//!
//! [`ConnectionMaker`] is a pure state machine (time passed in, jitter from
//! a seeded generator); [`dial`] is the thin I/O the router runs for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::mesh::protocol::DEFAULT_PORT;

/// Most targets the user may give.
pub const MAX_TARGETS: usize = 256;
/// Most discovered addresses kept.
pub const MAX_DISCOVERED: usize = 1024;
/// A connection that lasted this long resets the backoff when it ends.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Most addresses a target's name may resolve to that are tried.
const MAX_RESOLVED: usize = 16;

/// A destination given by the user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    host: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer address {target:?}: {reason}")]
pub struct BadTarget {
    pub target: String,
    pub reason: String,
}

impl Target {
    /// `host`, `host:port`, `ip`, `ip:port`, `[ipv6]:port` or a bare IPv6 address.
    pub fn parse(text: &str) -> Result<Self, BadTarget> {
        let bad = |reason: &str| BadTarget {
            target: text.chars().take(300).collect(),
            reason: reason.into(),
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("the port must be a number from 1 to 65535")),
            Ok(p) => Ok(p),
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            let p = match after {
                "" => DEFAULT_PORT,
                _ => port(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                )?,
            };
            h.parse::<Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in brackets"))?;
            (h, p)
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (s, DEFAULT_PORT)
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h, port(p)?)
        } else {
            (s, DEFAULT_PORT)
        };
        if host.parse::<IpAddr>().is_err() {
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(bad("not a host name or IP address"));
            }
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP address (no resolution needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a dial is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DialKey {
    Target(Target),
    Discovered(SocketAddr),
}

impl fmt::Display for DialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Target(t) => t.fmt(f),
            Self::Discovered(a) => a.fmt(f),
        }
    }
}

/// Delay before retry number `n` (1-based): `initial * 2^(n-1)`, at most
/// `max`, scaled by a random factor in [0.5, 1) so that peers restarted
/// together do not dial in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    pub fn delay(&self, failures: u32, unit_random: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1 << exp).min(self.max);
        base.mul_f64(0.5f64.mul_add(unit_random.clamp(0.0, 1.0), 0.5))
    }
}

/// An established connection, as the connection maker needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The peer's listen address (IP on the connection, port from its hello).
    pub listen_addr: SocketAddr,
    /// The dial it came from, if we dialled it.
    pub via: Option<DialKey>,
}

/// The state of a destination that is not connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptState {
    /// Dialling (or about to), no failure yet.
    Connecting,
    /// Dialling again after a failure.
    Retrying,
    /// Waiting before the next attempt, or for ever.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub key: DialKey,
    pub state: AttemptState,
    pub last_error: Option<String>,
    /// Until the next attempt; `None` when failed for good.
    pub retry_in: Option<Duration>,
}

#[derive(Clone, Debug)]
struct Entry {
    /// As the user wrote it (targets), for `weave status targets`.
    shown: String,
    /// Addresses the destination is known to have: a connection from any of
    /// them satisfies it.
    addrs: BTreeSet<SocketAddr>,
    in_flight: bool,
    connected_since: Option<Instant>,
    /// `None`: never again (e.g. it is ourselves).
    retry_at: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
    /// The uid of the peer last seen at one of `addrs` (from the topology).
    incarnation: Option<u64>,
}

impl Entry {
    const fn new(shown: String, addrs: BTreeSet<SocketAddr>, now: Instant) -> Self {
        Self {
            shown,
            addrs,
            in_flight: false,
            connected_since: None,
            retry_at: Some(now),
            failures: 0,
            last_error: None,
            incarnation: None,
        }
    }

    /// Takes in the incarnation of the peer at its addresses; a new one
    /// (the peer restarted, and gossips, so it listens) ends a backoff.
    fn seen(&mut self, seen: &Seen, now: Instant) {
        let now_there = self
            .addrs
            .iter()
            .filter_map(|a| seen.get(a).copied().flatten())
            .max();
        if now_there.is_none() || now_there == self.incarnation {
            return;
        }
        self.incarnation = now_there;
        if self.waiting() && self.failures > 0 && self.retry_at.is_some() {
            self.failures = 0;
            self.retry_at = Some(now);
        }
    }

    const fn waiting(&self) -> bool {
        !self.in_flight && self.connected_since.is_none()
    }
}

/// Addresses other peers report for the peers we are not connected to,
/// each with the uid of the peer there when its topology entry is known.
pub type Seen = BTreeMap<SocketAddr, Option<u64>>;

/// The dialling schedule.
#[derive(Clone, Debug)]
pub struct ConnectionMaker {
    targets: BTreeMap<Target, Entry>,
    discovered: BTreeMap<SocketAddr, Entry>,
    discovery: bool,
    backoff: Backoff,
    rng: u64,
}

impl ConnectionMaker {
    /// `seed` drives the jitter; any value will do.
    pub const fn new(discovery: bool, backoff: Backoff, seed: u64) -> Self {
        Self {
            targets: BTreeMap::new(),
            discovered: BTreeMap::new(),
            discovery,
            backoff,
            rng: seed,
        }
    }

    pub const fn discovery(&self) -> bool {
        self.discovery
    }

    /// Adds a target, dialled at once. Adding one again retries it now if it
    /// is waiting. False when the list is full.
    pub fn add_target(&mut self, target: Target, shown: String, now: Instant) -> bool {
        if let Some(e) = self.targets.get_mut(&target) {
            if e.waiting() {
                e.retry_at = Some(now);
            }
            return true;
        }
        if self.targets.len() >= MAX_TARGETS {
            return false;
        }
        let addrs = target.literal().into_iter().collect();
        self.targets.insert(target, Entry::new(shown, addrs, now));
        true
    }

    /// Stops dialling a target; a connection it made stays. False if unknown.
    pub fn remove_target(&mut self, target: &Target) -> bool {
        self.targets.remove(target).is_some()
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.values().map(|e| e.shown.clone()).collect()
    }

    /// Takes in the addresses of the peers we are not connected to: with
    /// discovery on they replace the discovered destinations; for every
    /// destination, a peer there that restarted ends its backoff.
    pub fn set_discovered(&mut self, seen: &Seen, now: Instant) {
        if self.discovery {
            let direct: BTreeSet<SocketAddr> = self
                .targets
                .values()
                .flat_map(|e| e.addrs.iter().copied())
                .collect();
            let wanted: BTreeSet<SocketAddr> = seen
                .keys()
                .copied()
                .filter(|a| !direct.contains(a))
                .take(MAX_DISCOVERED)
                .collect();
            self.discovered.retain(|a, _| wanted.contains(a));
            for a in wanted {
                self.discovered
                    .entry(a)
                    .or_insert_with(|| Entry::new(a.to_string(), BTreeSet::from([a]), now));
            }
        }
        for e in self
            .targets
            .values_mut()
            .chain(self.discovered.values_mut())
        {
            e.seen(seen, now);
        }
    }

    /// Records what a target's name resolved to.
    pub fn resolved(&mut self, key: &DialKey, addrs: &[SocketAddr]) {
        if let Some(e) = self.entry(key) {
            e.addrs.extend(addrs.iter().take(MAX_RESOLVED));
        }
    }

    /// Takes in the established connections: a destination is satisfied by a
    /// connection dialled for it or coming from one of its addresses; one
    /// that lost its connection is dialled again (at once after a stable
    /// connection, with backoff after a short one).
    pub fn sync(&mut self, links: &[Link], now: Instant) {
        let keys: Vec<DialKey> = self.keys().collect();
        for key in keys {
            let r = self.random();
            let backoff = self.backoff;
            let Some(e) = self.entry(&key) else { continue };
            let satisfied = links
                .iter()
                .any(|l| l.via.as_ref() == Some(&key) || e.addrs.contains(&l.listen_addr));
            match (satisfied, e.connected_since) {
                (true, None) => {
                    e.connected_since = Some(now);
                    e.last_error = None;
                }
                (false, Some(since)) => {
                    e.connected_since = None;
                    if now.saturating_duration_since(since) >= STABLE_AFTER {
                        e.failures = 0;
                        e.retry_at = Some(now);
                    } else {
                        e.failures = e.failures.saturating_add(1);
                        e.retry_at = Some(now + backoff.delay(e.failures, r));
                    }
                }
                _ => {}
            }
        }
    }

    /// The destinations to dial now; they count as in flight until
    /// [`ConnectionMaker::dial_succeeded`] or [`ConnectionMaker::dial_failed`].
    pub fn due(&mut self, now: Instant) -> Vec<DialKey> {
        let keys: Vec<DialKey> = self.keys().collect();
        let mut out = Vec::new();
        for key in keys {
            let Some(e) = self.entry(&key) else { continue };
            if e.waiting() && e.retry_at.is_some_and(|t| t <= now) {
                e.in_flight = true;
                out.push(key);
            }
        }
        out
    }

    /// The dial made an established connection.
    pub fn dial_succeeded(&mut self, key: &DialKey) {
        if let Some(e) = self.entry(key) {
            e.in_flight = false;
            e.last_error = None;
        }
    }

    /// The dial, or its connection before it was established, failed.
    /// `retry: false` gives up on it for good (it was ourselves).
    pub fn dial_failed(&mut self, key: &DialKey, error: String, retry: bool, now: Instant) {
        let r = self.random();
        let backoff = self.backoff;
        let Some(e) = self.entry(key) else { return };
        e.in_flight = false;
        if e.connected_since.is_some() {
            return;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_error = Some(error);
        e.retry_at = retry.then(|| now + backoff.delay(e.failures, r));
    }

    /// When the next destination becomes due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.entries()
            .filter(|e| e.waiting())
            .filter_map(|e| e.retry_at)
            .min()
    }

    /// Destinations not connected, for status.
    pub fn attempts(&self, now: Instant) -> Vec<Attempt> {
        self.keys()
            .zip(self.entries())
            .filter(|(_, e)| e.connected_since.is_none())
            .map(|(key, e)| {
                let due = e.retry_at.is_some_and(|t| t <= now);
                let state = match (&e.last_error, e.in_flight || due) {
                    (None, _) => AttemptState::Connecting,
                    (Some(_), true) => AttemptState::Retrying,
                    (Some(_), false) => AttemptState::Failed,
                };
                Attempt {
                    key,
                    state,
                    last_error: e.last_error.clone(),
                    retry_in: e.retry_at.map(|t| t.saturating_duration_since(now)),
                }
            })
            .collect()
    }

    fn keys(&self) -> impl Iterator<Item = DialKey> + '_ {
        self.targets
            .keys()
            .cloned()
            .map(DialKey::Target)
            .chain(self.discovered.keys().copied().map(DialKey::Discovered))
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.targets.values().chain(self.discovered.values())
    }

    fn entry(&mut self, key: &DialKey) -> Option<&mut Entry> {
        match key {
            DialKey::Target(t) => self.targets.get_mut(t),
            DialKey::Discovered(a) => self.discovered.get_mut(a),
        }
    }

    /// splitmix64, as a fraction in [0, 1).
    fn random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Resolves and dials a destination: the addresses it resolved to (to be
/// given to [`ConnectionMaker::resolved`]) and the stream, or why not.
pub async fn dial(
    key: &DialKey,
    timeout: Duration,
) -> (Vec<SocketAddr>, Result<TcpStream, String>) {
    let addrs = match key {
        DialKey::Discovered(a) => vec![*a],
        DialKey::Target(t) => match t.literal() {
            Some(a) => vec![a],
            None => {
                match tokio::time::timeout(timeout, tokio::net::lookup_host((t.host(), t.port())))
                    .await
                {
                    Err(_) => {
                        return (
                            Vec::new(),
                            Err(format!("resolving {}: timed out", t.host())),
                        );
                    }
                    Ok(Err(e)) => return (Vec::new(), Err(format!("resolving {}: {e}", t.host()))),
                    Ok(Ok(found)) => {
                        let mut v: Vec<SocketAddr> = Vec::new();
                        for a in found {
                            if !v.contains(&a) && v.len() < MAX_RESOLVED {
                                v.push(a);
                            }
                        }
                        v
                    }
                }
            }
        },
    };
    if addrs.is_empty() {
        return (addrs, Err("the name resolves to no address".into()));
    }
    let mut last = String::new();
    for a in &addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return (addrs, Ok(s)),
            Ok(Err(e)) => last = format!("dial tcp {a}: {e}"),
            Err(_) => last = format!("dial tcp {a}: timed out"),
        }
    }
    (addrs, Err(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn key(s: &str) -> DialKey {
        DialKey::Target(t(s))
    }

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Addresses seen with no topology entry for their peers.
    fn seen<const N: usize>(addrs: [SocketAddr; N]) -> Seen {
        addrs.into_iter().map(|a| (a, None)).collect()
    }

    #[test]
    fn targets_parse_with_the_default_port() {
        assert_eq!(t("10.0.0.1").to_string(), "10.0.0.1:6783");
        assert_eq!(
            t(" 10.0.0.1:7000 ").literal(),
            Some("10.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(t("Host-2.example").to_string(), "host-2.example:6783");
        assert_eq!(t("host2:1").port(), 1);
        assert_eq!(t("::1").to_string(), "[::1]:6783");
        assert_eq!(
            t("[fe80::1]:99").literal(),
            Some("[fe80::1]:99".parse().unwrap())
        );
        assert_eq!(t("host").literal(), None);
        for bad in [
            "",
            "  ",
            "host:",
            "host:0",
            "host:70000",
            "a b",
            "[::1",
            "[::1]x",
            "[host]:1",
            "-x:y",
            "a..b",
            "h/x",
            "x\u{1b}",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let e = Target::parse("host:port").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid peer address \"host:port\": the port must be a number from 1 to 65535"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.0), S / 2);
        assert_eq!(b.delay(1, 1.0), S);
        assert_eq!(b.delay(2, 1.0), 2 * S);
        assert_eq!(b.delay(4, 1.0), 8 * S);
        assert_eq!(b.delay(5, 1.0), 10 * S);
        assert_eq!(b.delay(500, 0.0), 5 * S);
    }

    #[test]
    fn a_target_is_dialled_at_once_then_with_growing_backoff() {
        let t0 = Instant::now();
        let mut cm = ConnectionMaker::new(true, Backoff::default(), 1);
        assert!(cm.add_target(t("10.0.0.2"), "10.0.0.2".into(), t0));
        assert_eq!(cm.next_wakeup(), Some(t0));
        assert_eq!(cm.due(t0), vec![key("10.0.0.2")]);
        // In flight: not due again, nothing to wake for.
        assert!(cm.due(t0 + 100 * S).is_empty());
        assert_eq!(cm.next_wakeup(), None);
        assert_eq!(cm.attempts(t0)[0].state, AttemptState::Connecting);

        let mut now = t0;
        let mut last_delay = Duration::ZERO;
        for failure in 1..=8u32 {
            cm.dial_failed(&key("10.0.0.2"), "refused".into(), true, now);
            let at = cm.next_wakeup().unwrap();
            let delay = at - now;
            let cap = Backoff::default().delay(failure, 1.0);
            assert!(
                delay >= cap / 2 && delay <= cap,
                "failure {failure}: {delay:?}"
            );
            assert!(delay <= 10 * S);
            if failure <= 3 {
                assert!(delay > last_delay / 2);
            }
            last_delay = delay;
            let a = &cm.attempts(now)[0];
            assert_eq!(a.state, AttemptState::Failed);
            assert_eq!(a.last_error.as_deref(), Some("refused"));
            assert_eq!(a.retry_in, Some(delay));
            assert!(cm.due(at.checked_sub(MS).unwrap()).is_empty());
            assert_eq!(cm.due(at), vec![key("10.0.0.2")]);
            assert_eq!(cm.attempts(at)[0].state, AttemptState::Retrying);
            now = at;
        }
    }

    #[test]
    fn connections_satisfy_targets_and_their_loss_redials() {
        let t0 = Instant::now();
        let mut cm = ConnectionMaker::new(true, Backoff::default(), 2);
        cm.add_target(t("10.0.0.2"), "10.0.0.2".into(), t0);
        cm.add_target(t("host3"), "host3".into(), t0);
        assert_eq!(cm.due(t0).len(), 2);
        cm.resolved(&key("host3"), &["10.0.0.3:6783".parse().unwrap()]);
        cm.dial_succeeded(&key("10.0.0.2"));
        // host3 lost the tie-break but 10.0.0.3 connected to us: satisfied.
        cm.dial_failed(&key("host3"), "duplicate connection".into(), true, t0);
        let links = vec![
            Link {
                listen_addr: "10.0.0.2:6783".parse().unwrap(),
                via: Some(key("10.0.0.2")),
            },
            Link {
                listen_addr: "10.0.0.3:6783".parse().unwrap(),
                via: None,
            },
        ];
        cm.sync(&links, t0);
        assert!(cm.attempts(t0).is_empty());
        assert_eq!(cm.next_wakeup(), None);

        // A short connection ends: backoff. A stable one ends: at once.
        cm.sync(&links[1..], t0 + S);
        let wake = cm.next_wakeup().unwrap();
        assert!(wake > t0 + S && wake <= t0 + 2 * S);
        assert!(cm.due(wake.checked_sub(MS).unwrap()).is_empty());
        assert_eq!(cm.due(wake), vec![key("10.0.0.2")]);
        cm.sync(&[], t0 + 60 * S);
        assert_eq!(cm.due(t0 + 60 * S), vec![key("host3")]);
    }

    #[test]
    fn ourselves_is_never_retried_and_connect_again_retries_now() {
        let t0 = Instant::now();
        let mut cm = ConnectionMaker::new(true, Backoff::default(), 3);
        cm.add_target(t("10.0.0.1"), "10.0.0.1".into(), t0);
        cm.due(t0);
        cm.dial_failed(
            &key("10.0.0.1"),
            "connection to ourselves".into(),
            false,
            t0,
        );
        assert_eq!(cm.next_wakeup(), None);
        let a = &cm.attempts(t0)[0];
        assert_eq!((a.state, a.retry_in), (AttemptState::Failed, None));
        cm.add_target(t("10.0.0.1:6783"), "10.0.0.1:6783".into(), t0 + S);
        assert_eq!(cm.targets(), vec!["10.0.0.1"]);
        assert_eq!(cm.due(t0 + S), vec![key("10.0.0.1")]);
        assert!(cm.remove_target(&t("10.0.0.1")));
        assert!(!cm.remove_target(&t("10.0.0.1")));
        // A late result for a forgotten target is ignored.
        cm.dial_failed(&key("10.0.0.1"), "x".into(), true, t0);
        assert!(cm.attempts(t0).is_empty());
    }

    #[test]
    fn discovered_addresses_come_and_go_and_can_be_turned_off() {
        let t0 = Instant::now();
        let a: SocketAddr = "10.0.0.5:6783".parse().unwrap();
        let b: SocketAddr = "10.0.0.6:6783".parse().unwrap();
        let direct: SocketAddr = "10.0.0.2:6783".parse().unwrap();
        let mut cm = ConnectionMaker::new(true, Backoff::default(), 4);
        cm.add_target(t("10.0.0.2"), "10.0.0.2".into(), t0);
        cm.due(t0);
        cm.set_discovered(&seen([a, b, direct]), t0);
        assert_eq!(
            cm.due(t0),
            vec![DialKey::Discovered(a), DialKey::Discovered(b)]
        );
        cm.set_discovered(&seen([b]), t0);
        assert_eq!(cm.attempts(t0).len(), 2);
        cm.dial_failed(&DialKey::Discovered(a), "late".into(), true, t0);
        assert_eq!(cm.attempts(t0).len(), 2);

        let mut off = ConnectionMaker::new(false, Backoff::default(), 5);
        off.set_discovered(&seen([a]), t0);
        assert!(off.due(t0).is_empty());
        assert!(!off.discovery());

        let many: Seen = (0..MAX_DISCOVERED as u32 + 50)
            .map(|i| {
                let a = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 6783));
                (a, None)
            })
            .collect();
        cm.set_discovered(&many, t0);
        assert_eq!(cm.attempts(t0).len(), 1 + MAX_DISCOVERED);
    }

    #[test]
    fn a_peer_back_as_a_new_incarnation_is_dialled_at_once() {
        let t0 = Instant::now();
        let b: SocketAddr = "10.0.0.6:6783".parse().unwrap();
        let target: SocketAddr = "10.0.0.2:6783".parse().unwrap();
        let mut cm = ConnectionMaker::new(true, Backoff::default(), 7);
        cm.add_target(t("10.0.0.2"), "10.0.0.2".into(), t0);
        let old = Seen::from([(b, Some(1)), (target, Some(10))]);
        cm.set_discovered(&old, t0);
        assert_eq!(cm.due(t0).len(), 2);
        // Both down: refused, then refused again, backing off.
        let mut now = t0;
        for _ in 0..3 {
            for k in [DialKey::Discovered(b), key("10.0.0.2")] {
                cm.dial_failed(&k, "refused".into(), true, now);
            }
            // Past the longest backoff: both due again.
            now += 10 * S;
            assert_eq!(cm.due(now).len(), 2);
        }
        for k in [DialKey::Discovered(b), key("10.0.0.2")] {
            cm.dial_failed(&k, "refused".into(), true, now);
        }
        let backoff = cm.next_wakeup().unwrap() - now;
        assert!(backoff >= 2 * S, "{backoff:?}");
        // The same incarnations gossiped again: still waiting.
        cm.set_discovered(&old, now);
        assert!(cm.due(now).is_empty());
        // The discovered peer restarted: dialled now, its backoff reset; the
        // target's peer did not.
        cm.set_discovered(&Seen::from([(b, Some(2)), (target, Some(10))]), now);
        assert_eq!(cm.due(now), vec![DialKey::Discovered(b)]);
        cm.dial_failed(&DialKey::Discovered(b), "refused".into(), true, now);
        let retry = cm
            .attempts(now)
            .iter()
            .find(|a| a.key == DialKey::Discovered(b))
            .and_then(|a| a.retry_in);
        assert!(retry.is_some_and(|r| r <= S), "{retry:?}");
        // Now the target's: dialled at once as well.
        cm.set_discovered(&Seen::from([(b, Some(2)), (target, Some(11))]), now);
        assert_eq!(cm.due(now), vec![key("10.0.0.2")]);
        // Given up for good (ourselves): a new uid does not revive it.
        cm.dial_failed(&key("10.0.0.2"), "ourselves".into(), false, now);
        cm.set_discovered(&Seen::from([(target, Some(12))]), now);
        assert!(cm.due(now + 60 * S).iter().all(|k| *k != key("10.0.0.2")));
    }

    #[test]
    fn the_target_list_is_bounded() {
        let t0 = Instant::now();
        let mut cm = ConnectionMaker::new(true, Backoff::default(), 6);
        for i in 0..MAX_TARGETS {
            assert!(cm.add_target(t(&format!("h{i}")), format!("h{i}"), t0));
        }
        assert!(!cm.add_target(t("one-more"), "one-more".into(), t0));
        assert!(cm.add_target(t("h1"), "h1".into(), t0));
    }
}
