//! The `peer_target_parse` fuzz target: peer addresses from users (and their files).

use weave_agent::mesh::Target;

/// Input: text (invalid UTF-8 replaced). A target accepted has a port, a
/// lowercase host that is an IP address or a valid host name, and prints as
/// text that parses back to it; a rejection quotes a bounded prefix.
pub fn peer_target_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Target::parse(&text) {
        Ok(target) => {
            assert_ne!(target.port(), 0);
            let host = target.host();
            assert!(!host.is_empty());
            assert_eq!(host, host.to_ascii_lowercase());
            assert!(
                !host.chars().any(|c| c.is_control() || c.is_whitespace()),
                "{host:?}"
            );
            if target.literal().is_none() {
                assert!(host.len() <= 253, "host name of {} bytes", host.len());
            }
            let shown = target.to_string();
            assert_eq!(
                Target::parse(&shown).as_ref(),
                Ok(&target),
                "printed as {shown:?}"
            );
        }
        Err(bad) => assert!(bad.target.chars().count() <= 300),
    }
}

pub(crate) fn target_seeds() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("ipv4", "10.0.0.1"),
        ("ipv4-port", " 10.0.0.1:7000 "),
        ("host", "Host-2.example"),
        ("ipv6", "::1"),
        ("ipv6-brackets-port", "[fe80::1]:99"),
        ("bad-port", "host:70000"),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.as_bytes().to_vec()))
    .collect()
}
