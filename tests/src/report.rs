//! Reading what `weave ps` prints, and what `weave status` prints in
//! Weave's shapes (the `key: value` summary with its counts, `weave status
//! connections`). Lenient about spacing, strict about meaning: a line that
//! does not parse is an error, so a changed format fails loudly instead of
//! counting 0.
//!
//! The status parsers serve the demo (`cargo xtask demo`), which shows what
//! a user reads, and the harness when built without the `agent-status`
//! feature (xtask); the tests read `weave status --json` (`snapshot`).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow, bail, ensure};

/// The value of the first `key: value` line whose key is `key` (trimmed).
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The value of `key`, or an error quoting the whole text.
pub fn require_field<'a>(text: &'a str, key: &str) -> Result<&'a str> {
    field(text, key).ok_or_else(|| anyhow!("no `{key}:` line in:\n{text}"))
}

/// A count with its breakdown: `3 (2 established, 1 failed)`, `2`, or
/// `3 (with 6 established connections)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    /// `established` → 2, `failed` → 1; states not shown are absent (0).
    pub by_state: BTreeMap<String, usize>,
}

impl Counts {
    pub fn parse(value: &str) -> Result<Self> {
        let value = value.trim();
        let (total, rest) = match value.split_once('(') {
            Some((total, rest)) => (
                total.trim(),
                Some(
                    rest.strip_suffix(')')
                        .ok_or_else(|| anyhow!("unclosed parenthesis in {value:?}"))?,
                ),
            ),
            None => (value, None),
        };
        let total = total
            .parse()
            .with_context(|| format!("count in {value:?}"))?;
        let mut by_state = BTreeMap::new();
        if let Some(rest) = rest {
            let rest = rest.trim().strip_prefix("with ").unwrap_or(rest);
            let rest = rest.trim().strip_suffix(" connections").unwrap_or(rest);
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(n), Some(state), None) = (words.next(), words.next(), words.next())
                else {
                    bail!("`<n> <state>` expected in {value:?}, got {part:?}");
                };
                let n: usize = n
                    .parse()
                    .with_context(|| format!("{part:?} in {value:?}"))?;
                by_state.insert(state.to_string(), n);
            }
        }
        Ok(Self { total, by_state })
    }

    /// How many are in `state` (0 when not shown).
    pub fn get(&self, state: &str) -> usize {
        self.by_state.get(state).copied().unwrap_or(0)
    }
}

/// `Peers:` and `Connections:` of a `weave status` summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Known peers, this one included.
    pub peers: usize,
    /// Established connections reported by all peers (each direction counts,
    /// as in Weave: a full mesh of 3 has 6).
    pub peer_connections: usize,
    /// This peer's connections and destinations, by state.
    pub connections: Counts,
    pub targets: usize,
}

impl Summary {
    pub fn parse(status: &str) -> Result<Self> {
        let peers = Counts::parse(require_field(status, "Peers")?)?;
        let connections = Counts::parse(require_field(status, "Connections")?)?;
        let targets = require_field(status, "Targets")?
            .parse()
            .with_context(|| format!("Targets in:\n{status}"))?;
        Ok(Self {
            peers: peers.total,
            peer_connections: peers.get("established"),
            connections,
            targets,
        })
    }
}

/// One line of `weave status connections`, e.g.
/// `-> 192.168.250.2:6783  established plain 12:34:56:78:9a:bc(h2) mtu=1450`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub outbound: bool,
    pub address: String,
    pub state: String,
    /// The peer's name and nickname, when the line names it.
    pub peer: Option<String>,
    pub nickname: Option<String>,
    pub mtu: Option<u32>,
    pub line: String,
}

impl Connection {
    pub fn is_established(&self) -> bool {
        self.state == "established"
    }
}

/// Parses `weave status connections`.
pub fn parse_connections(text: &str) -> Result<Vec<Connection>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let outbound = match words.first() {
                Some(&"->") => true,
                Some(&"<-") => false,
                _ => bail!("a connection line starts with -> or <-: {line:?}"),
            };
            ensure!(
                words.len() >= 3,
                "`<dir> <address> <state> ...` expected: {line:?}"
            );
            let (peer, nickname) = words[3..]
                .iter()
                .find_map(|w| name_and_nickname(w))
                .map_or((None, None), |(p, n)| (Some(p), Some(n)));
            let mtu = words
                .iter()
                .find_map(|w| w.strip_prefix("mtu="))
                .map(|m| m.parse().with_context(|| format!("mtu in {line:?}")))
                .transpose()?;
            Ok(Connection {
                outbound,
                address: words[1].to_string(),
                state: words[2].trim_end_matches(',').to_string(),
                peer,
                nickname,
                mtu,
                line: line.to_string(),
            })
        })
        .collect()
}

/// `12:34:56:78:9a:bc(h2)` → (`12:34:56:78:9a:bc`, `h2`).
fn name_and_nickname(word: &str) -> Option<(String, String)> {
    let (name, rest) = word.split_once('(')?;
    let nickname = rest.strip_suffix(')')?;
    (name.len() == 17 && name.split(':').count() == 6)
        .then(|| (name.to_string(), nickname.to_string()))
}

/// One line of `weave ps`: `<short id> <mac> <cidr>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsEntry {
    pub id: String,
    pub mac: String,
    pub cidrs: Vec<String>,
}

/// Parses `weave ps`.
pub fn parse_ps(text: &str) -> Result<Vec<PsEntry>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            ensure!(
                words.len() >= 3,
                "`weave ps` line is `<id> <mac> <cidr>...`: {line:?}"
            );
            Ok(PsEntry {
                id: words[0].into(),
                mac: words[1].into(),
                cidrs: words[2..].iter().map(ToString::to_string).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weave_counts() {
        let c = Counts::parse("3 (2 established, 1 failed)").unwrap();
        assert_eq!((c.total, c.get("established"), c.get("failed")), (3, 2, 1));
        let c = Counts::parse("0").unwrap();
        assert_eq!((c.total, c.get("established")), (0, 0));
        let c = Counts::parse("3 (with 6 established connections)").unwrap();
        assert_eq!((c.total, c.get("established")), (3, 6));
        let c = Counts::parse("2 (with 1 established, 1 pending connections)").unwrap();
        assert_eq!((c.get("established"), c.get("pending")), (1, 1));
        assert!(Counts::parse("x (1 established)").is_err());
        assert!(Counts::parse("2 (established)").is_err());
    }

    #[test]
    fn parses_a_summary() {
        let status = "        Version: 0.1.0\n\n        Service: router\n       Protocol: weave-rs 1..1\n\
                      Name: 12:34:56:78:9a:bc(h1)\n        Targets: 1\n    Connections: 2 (1 established, 1 failed)\n\
                      Peers: 3 (with 4 established connections)\n        Service: ipam\n          Range: 10.32.0.0/12\n";
        let s = Summary::parse(status).unwrap();
        assert_eq!(
            (s.peers, s.peer_connections, s.targets, s.connections.total),
            (3, 4, 1, 2)
        );
        assert_eq!(s.connections.get("failed"), 1);
        assert_eq!(field(status, "Range"), Some("10.32.0.0/12"));
        assert!(Summary::parse("Peers: 1\n").is_err());
    }

    #[test]
    fn parses_connections() {
        let text = "-> 192.168.250.2:6783     established plain  12:34:56:78:9a:bc(h2) mtu=1450\n\
                    <- 192.168.250.3:41234    established plain  02:00:00:00:00:03(h3) mtu=1450\n\
                    -> 192.168.250.9:6783     failed      connect: no route to host, retry: in 4.2s\n\
                    -> 192.168.250.4:6783     established xdp (fastdp off: peer has no fastdp) 02:00:00:00:00:04(h4) mtu=1450\n";
        let c = parse_connections(text).unwrap();
        assert_eq!(c.len(), 4);
        assert!(c[0].outbound && c[0].is_established());
        assert_eq!(c[0].nickname.as_deref(), Some("h2"));
        assert_eq!(c[0].mtu, Some(1450));
        assert!(!c[1].outbound);
        assert_eq!(c[1].peer.as_deref(), Some("02:00:00:00:00:03"));
        assert_eq!(
            (c[2].state.as_str(), c[2].nickname.as_ref()),
            ("failed", None)
        );
        // The data plane label and why fastdp is off do not hide the peer.
        assert!(c[3].is_established());
        assert_eq!(
            (c[3].peer.as_deref(), c[3].nickname.as_deref(), c[3].mtu),
            (Some("02:00:00:00:00:04"), Some("h4"), Some(1450))
        );
        assert!(parse_connections("garbage\n").is_err());
    }
}
