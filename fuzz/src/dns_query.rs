//! weaveDNS's query path (`weave_agent::dns::answer`): whatever arrives on
//! port 53, from a container or the host.

use weave_agent::dns::answer::{Kind, Outcome, UDP_MAX, Zone, answer};
use weave_agent::dns::records::{Entry, EntryKey};

fn zone() -> Zone {
    let origin = "02:00:00:00:00:01".parse().expect("a peer name");
    let entries: Vec<Entry> = [("web", 1), ("web", 2), ("db", 3)]
        .into_iter()
        .map(|(name, last)| Entry {
            key: EntryKey {
                name: format!("{name}.weave.local."),
                addr: std::net::Ipv4Addr::new(10, 32, 0, last),
                container: format!("c{last}"),
                origin,
            },
            version: 1,
            tombstone: false,
        })
        .collect();
    Zone::new("weave.local.", 1, entries.iter())
}

/// Input: the first byte picks the transport (odd: UDP) and the
/// rotation; the rest is the query. Nothing panics; an answer is a
/// response with the query's id, within UDP's limit over UDP; a query
/// is forwarded only when it is one.
pub fn dns_query(data: &[u8]) {
    let Some((&first, query)) = data.split_first() else {
        return;
    };
    let udp = first & 1 == 1;
    let (outcome, kind) = answer(query, &zone(), usize::from(first), udp);
    match outcome {
        Outcome::Reply(bytes) => {
            assert!(bytes.len() >= 12, "a reply has a header: {bytes:?}");
            assert_eq!(bytes[..2], query[..2], "the reply keeps the query's id");
            assert!(bytes[2] & 0x80 != 0, "the reply is a response");
            if udp {
                assert!(bytes.len() <= UDP_MAX, "{} bytes over UDP", bytes.len());
            }
        }
        Outcome::Forward => assert_eq!(kind, Kind::Forward),
        Outcome::Ignore => {}
    }
}

pub(crate) fn dns_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // A query for web.weave.local A, recursion desired, id 0x1234; then one
    // for PTR of 10.32.0.3, one outside the domain, and a truncated one.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.push(0);
        q.extend(qtype.to_be_bytes());
        q.extend(1u16.to_be_bytes());
        q
    }
    let with_transport = |t: u8, q: Vec<u8>| {
        let mut v = vec![t];
        v.extend(q);
        v
    };
    let a = query(0x1234, "web.weave.local", 1);
    let truncated = a[..20].to_vec();
    vec![
        ("a-udp", with_transport(1, a.clone())),
        ("a-tcp", with_transport(0, a)),
        (
            "ptr",
            with_transport(1, query(7, "3.0.32.10.in-addr.arpa", 12)),
        ),
        ("outside", with_transport(1, query(8, "example.com", 1))),
        (
            "nxdomain",
            with_transport(1, query(9, "nope.weave.local", 1)),
        ),
        ("truncated", with_transport(1, truncated)),
    ]
}
