//! The query path, pure: bytes of a query and the zone in, the bytes of the
//! answer (or "forward it upstream") out. No sockets, so the fuzz target and
//! the unit tests call exactly what the server calls.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr as _;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::records::Entry;

/// The size of a UDP answer when the client gives none (RFC 1035).
pub const UDP_PLAIN: usize = 512;
/// The largest UDP answer we send whatever EDNS says (the 2020 DNS flag day
/// value: no fragmentation on any usual path).
pub const UDP_MAX: usize = 1232;
/// Largest message over TCP (its length prefix).
pub const TCP_MAX: usize = 65_535;

/// The names this peer answers for, built from the live entries.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Lower case, fully qualified: `weave.local.`.
    domain: Name,
    ttl: u32,
    by_name: HashMap<String, Vec<Ipv4Addr>>,
    by_addr: HashMap<Ipv4Addr, Vec<String>>,
}

impl Zone {
    /// `domain` is checked by the launch options (a valid FQDN).
    pub fn new<E: Borrow<Entry>>(
        domain: &str,
        ttl: u32,
        live: impl IntoIterator<Item = E>,
    ) -> Self {
        let domain = Name::from_ascii(domain).map_or_else(|_| Name::root(), |n| n.to_lowercase());
        let mut by_name: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        let mut by_addr: HashMap<Ipv4Addr, Vec<String>> = HashMap::new();
        for e in live {
            let e = e.borrow();
            let addrs = by_name.entry(e.key.name.clone()).or_default();
            if !addrs.contains(&e.key.addr) {
                addrs.push(e.key.addr);
            }
            let names = by_addr.entry(e.key.addr).or_default();
            if !names.contains(&e.key.name) {
                names.push(e.key.name.clone());
            }
        }
        Self {
            domain,
            ttl,
            by_name,
            by_addr,
        }
    }

    /// The addresses of a fully qualified lower-case name.
    pub fn addresses(&self, name: &str) -> &[Ipv4Addr] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn names(&self) -> usize {
        self.by_name.len()
    }
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: ask the upstream servers with the query as it came.
    Forward,
    /// Not a query at all (a response, or too short to answer): say nothing.
    Ignore,
}

/// How an answer was decided, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Answered,
    NxDomain,
    Malformed,
    Refused,
    Forward,
    Ignored,
}

/// Answers `query` from `zone`; `rotation` picks the first address of a
/// name with several (round robin),
/// and `udp` says whether the answer must fit a UDP datagram (larger ones
/// come back empty with TC set, and the client asks again over TCP).
pub fn answer(query: &[u8], zone: &Zone, rotation: usize, udp: bool) -> (Outcome, Kind) {
    let Ok(msg) = Message::from_vec(query) else {
        return malformed(query);
    };
    if msg.message_type() != MessageType::Query {
        return (Outcome::Ignore, Kind::Ignored);
    }
    if msg.op_code() != OpCode::Query {
        return (
            reply(&msg, ResponseCode::NotImp, Vec::new(), UDP_PLAIN),
            Kind::Refused,
        );
    }
    let [q] = msg.queries() else {
        return (
            reply(&msg, ResponseCode::FormErr, Vec::new(), UDP_PLAIN),
            Kind::Malformed,
        );
    };
    let limit = if udp {
        msg.extensions()
            .as_ref()
            .map_or(UDP_PLAIN, |e| usize::from(e.max_payload()))
            .clamp(UDP_PLAIN, UDP_MAX)
    } else {
        TCP_MAX
    };
    let name = q.name().to_lowercase();
    if zone.domain.zone_of(&name) && !zone.domain.is_root() {
        let text = name.to_ascii();
        let addrs = zone.addresses(&text);
        if addrs.is_empty() && name != zone.domain {
            return (
                reply(&msg, ResponseCode::NXDomain, Vec::new(), limit),
                Kind::NxDomain,
            );
        }
        let answers = if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            let n = addrs.len();
            (0..n)
                .map(|i| {
                    let addr = addrs[(i + rotation) % n.max(1)];
                    Record::from_rdata(q.name().clone(), zone.ttl, RData::A(A(addr)))
                })
                .collect()
        } else {
            // The name exists, with no records of this type (NODATA).
            Vec::new()
        };
        return (
            reply(&msg, ResponseCode::NoError, answers, limit),
            Kind::Answered,
        );
    }
    if q.query_type() == RecordType::PTR
        && let Some(addr) = arpa_addr(&name)
        && let Some(names) = zone.by_addr.get(&addr)
    {
        let answers = names
            .iter()
            .filter_map(|n| Name::from_ascii(n).ok())
            .map(|n| Record::from_rdata(q.name().clone(), zone.ttl, RData::PTR(PTR(n))))
            .collect();
        return (
            reply(&msg, ResponseCode::NoError, answers, limit),
            Kind::Answered,
        );
    }
    (Outcome::Forward, Kind::Forward)
}

/// The IPv4 address of a `d.c.b.a.in-addr.arpa.` name.
fn arpa_addr(name: &Name) -> Option<Ipv4Addr> {
    let text = name.to_ascii();
    let rev = text.strip_suffix(".in-addr.arpa.")?;
    let mut octets: Vec<&str> = rev.split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Ipv4Addr::from_str(&octets.join(".")).ok()
}

/// FORMERR for what does not parse, if it is long enough to carry an id
/// and does not say it is a response; nothing otherwise.
fn malformed(query: &[u8]) -> (Outcome, Kind) {
    const HEADER: usize = 12;
    if query.len() < HEADER || query[2] & 0x80 != 0 {
        return (Outcome::Ignore, Kind::Malformed);
    }
    let mut m = Message::new();
    m.set_id(u16::from_be_bytes([query[0], query[1]]))
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_response_code(ResponseCode::FormErr);
    (
        m.to_vec().map_or(Outcome::Ignore, Outcome::Reply),
        Kind::Malformed,
    )
}

/// The answer to `query` with `code` and `answers`, truncated to `limit`
/// bytes (TC set) if it does not fit.
fn reply(query: &Message, code: ResponseCode, answers: Vec<Record>, limit: usize) -> Outcome {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(query.checking_disabled())
        .set_response_code(code);
    m.add_queries(query.queries().iter().cloned());
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_MAX as u16);
        m.set_edns(edns);
    }
    m.add_answers(answers);
    match m.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Outcome::Reply(bytes),
        Ok(_) => {
            // Too big for this transport: no answers, and TC tells the
            // client to ask again over TCP.
            m.take_answers();
            m.set_truncated(true);
            m.to_vec().map_or(Outcome::Ignore, Outcome::Reply)
        }
        Err(_) => servfail_of(query),
    }
}

/// SERVFAIL for `query` (upstream dead or timed out).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    match servfail_of(&msg) {
        Outcome::Reply(b) => Some(b),
        _ => None,
    }
}

fn servfail_of(query: &Message) -> Outcome {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::ServFail);
    m.add_queries(query.queries().iter().cloned());
    m.to_vec().map_or(Outcome::Ignore, Outcome::Reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::EntryKey;
    use crate::peer_name::PeerName;
    use hickory_proto::op::Query;

    fn entry(name: &str, last: u8) -> Entry {
        Entry {
            key: EntryKey {
                name: name.into(),
                addr: Ipv4Addr::new(10, 0, 0, last),
                container: format!("c{last}"),
                origin: "00:00:00:00:00:01".parse::<PeerName>().unwrap(),
            },
            version: 1,
            tombstone: false,
        }
    }

    fn zone() -> Zone {
        let entries = [
            entry("web.weave.local.", 1),
            entry("web.weave.local.", 2),
            entry("db.weave.local.", 3),
        ];
        Zone::new("weave.local.", 30, entries.iter())
    }

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m.to_vec().unwrap()
    }

    fn parse(out: (Outcome, Kind)) -> Message {
        match out.0 {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn addrs(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_name_with_two_containers_answers_both_rotated() {
        let z = zone();
        let q = query("WEB.weave.local.", RecordType::A);
        let first = parse(answer(&q, &z, 0, true));
        let second = parse(answer(&q, &z, 1, true));
        assert_eq!(first.id(), 7);
        assert_eq!(first.response_code(), ResponseCode::NoError);
        assert_eq!(addrs(&first).len(), 2);
        assert_ne!(addrs(&first)[0], addrs(&second)[0]);
    }

    #[test]
    fn unknown_names_in_the_domain_are_nxdomain_and_others_forwarded() {
        let z = zone();
        let m = parse(answer(
            &query("nope.weave.local.", RecordType::A),
            &z,
            0,
            true,
        ));
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        let (out, kind) = answer(&query("example.com.", RecordType::A), &z, 0, true);
        assert_eq!((out, kind), (Outcome::Forward, Kind::Forward));
        // NODATA for another type of a known name.
        let m = parse(answer(
            &query("db.weave.local.", RecordType::AAAA),
            &z,
            0,
            true,
        ));
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
    }

    #[test]
    fn ptr_answers_known_addresses_and_forwards_the_rest() {
        let z = zone();
        let m = parse(answer(
            &query("3.0.0.10.in-addr.arpa.", RecordType::PTR),
            &z,
            0,
            true,
        ));
        assert_eq!(m.answers().len(), 1);
        assert!(
            matches!(m.answers()[0].data(), RData::PTR(p) if p.0.to_ascii() == "db.weave.local.")
        );
        let (out, _) = answer(
            &query("9.0.0.10.in-addr.arpa.", RecordType::PTR),
            &z,
            0,
            true,
        );
        assert_eq!(out, Outcome::Forward);
    }

    #[test]
    fn garbage_gets_formerr_or_silence() {
        let z = zone();
        assert_eq!(answer(&[], &z, 0, true).0, Outcome::Ignore);
        let mut q = query("web.weave.local.", RecordType::A);
        q.truncate(14);
        let m = parse(answer(&q, &z, 0, true));
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert_eq!(m.id(), 7);
    }

    #[test]
    fn a_big_answer_is_truncated_over_udp() {
        let entries: Vec<Entry> = (1..=100).map(|i| entry("many.weave.local.", i)).collect();
        let z = Zone::new("weave.local.", 30, entries.iter());
        let q = query("many.weave.local.", RecordType::A);
        let out = answer(&q, &z, 0, true);
        let Outcome::Reply(bytes) = &out.0 else {
            panic!()
        };
        assert!(bytes.len() <= UDP_PLAIN);
        let over_tcp = parse(answer(&q, &z, 0, false));
        assert_eq!(addrs(&over_tcp).len(), 100);
    }
}
