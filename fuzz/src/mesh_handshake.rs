//! The `mesh_handshake` fuzz target: the first frame of a connection.

use super::mesh_frames::{check_message, encode};
use weave_agent::mac::Mac;
use weave_agent::mesh::protocol::{self, Hello, Message, PROTOCOL, Refusal};
use weave_agent::peer_name::PeerName;

pub(crate) const fn name(i: u8) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 0, i]))
}

/// Peer `i`'s hello.
pub(crate) fn hello(i: u8, nickname: &str) -> Hello {
    Hello {
        protocol: PROTOCOL.into(),
        min_version: protocol::PROTOCOL_MIN_VERSION,
        max_version: protocol::PROTOCOL_MAX_VERSION,
        name: name(i),
        nickname: nickname.into(),
        uid: u64::from(i),
        nonce: 0x5eed,
        listen_port: protocol::DEFAULT_PORT,
        data_port: 6784,
        encrypted: false,
        aes_gcm: false,
        fastdp: false,
        heartbeats: false,
        heartbeat_key: None,
        path_mtu: false,
    }
}

/// Our hello (peer 1) in the handshake target.
fn our_hello() -> Hello {
    hello(1, "host1")
}

/// Input: a frame body. A hello accepted names our protocol, a valid
/// nickname, another peer, and the highest version both speak, and the peer
/// negotiating the other way agrees; a refusal is printable as it is.
pub fn mesh_handshake(data: &[u8]) {
    let Some(Message::Hello(theirs)) = check_message(data) else {
        return;
    };
    let ours = our_hello();
    match protocol::negotiate(&ours, &theirs) {
        Ok(version) => {
            assert_eq!(theirs.protocol, PROTOCOL);
            assert!(protocol::check_nickname(&theirs.nickname).is_ok());
            assert_ne!(theirs.name, ours.name);
            assert!(theirs.min_version <= version && version <= theirs.max_version);
            assert!(ours.min_version <= version && version <= ours.max_version);
            assert_eq!(version, ours.max_version.min(theirs.max_version));
            assert_eq!(
                protocol::negotiate(&theirs, &ours),
                Ok(version),
                "asymmetric"
            );
        }
        Err(refusal) => {
            let reason = refusal.to_string();
            assert!(reason.len() <= 1024, "a refusal of {} bytes", reason.len());
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
            match refusal {
                Refusal::VersionMismatch { .. } => assert!(
                    matches!(
                        protocol::negotiate(&theirs, &ours),
                        Err(Refusal::VersionMismatch { .. })
                    ),
                    "only one side refuses the versions"
                ),
                Refusal::SelfConnection | Refusal::NameClash(_) => {
                    assert_eq!(theirs.name, ours.name)
                }
                Refusal::WrongProtocol { .. } => assert_ne!(theirs.protocol, PROTOCOL),
                Refusal::BadHello(_) => {}
                // Password mode on one side only: the other refuses too.
                Refusal::PeerHasNoPassword => assert_eq!(
                    protocol::negotiate(&theirs, &ours),
                    Err(Refusal::WeHaveNoPassword)
                ),
                Refusal::WeHaveNoPassword => assert_eq!(
                    protocol::negotiate(&theirs, &ours),
                    Err(Refusal::PeerHasNoPassword)
                ),
            }
        }
    }
}

pub(crate) fn handshake_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body = |h: Hello| encode(&Message::Hello(h))[4..].to_vec();
    let mut wrong_protocol = hello(2, "host2");
    wrong_protocol.protocol = "weave".into();
    let mut newer = hello(2, "host2");
    newer.min_version = protocol::PROTOCOL_MAX_VERSION + 1;
    newer.max_version = protocol::PROTOCOL_MAX_VERSION + 5;
    let mut twin = our_hello();
    twin.uid = 99;
    let mut password = hello(2, "host2");
    password.encrypted = true;
    vec![
        ("peer", body(hello(2, "host2"))),
        ("ourselves", body(our_hello())),
        ("name-clash", body(twin)),
        ("wrong-protocol", body(wrong_protocol)),
        ("newer-versions", body(newer)),
        ("password-mode", body(password)),
        ("control-characters", body(hello(3, "evil\u{1b}[2J"))),
    ]
}
