//! The `mesh_heartbeat` fuzz target: datagrams on the data port that start
//! like a data-path heartbeat or path MTU probe (or not), parsed and
//! checked.

use weave_agent::overlay::heartbeat::{self, HeartbeatKey};
use weave_agent::peer_name::PeerName;

/// Never panics, and accepts nothing but what the encoder made with the
/// key (see `heartbeat::fuzz_check`).
pub fn mesh_heartbeat(data: &[u8]) {
    heartbeat::fuzz_check(data);
}

pub(crate) fn heartbeat_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let key = HeartbeatKey([7; 32]);
    let name: PeerName = "a6:66:4f:a5:8b:01".parse().expect("a valid peer name");
    let valid = heartbeat::encode(&key, name, 1).to_vec();
    let mut forged = valid.clone();
    forged[20] ^= 0xff;
    let mut probe = vec![0u8; 600];
    heartbeat::encode_probe(&key, name, 3, &mut probe);
    let ack = heartbeat::encode_ack(&key, name, 3, 600).to_vec();
    vec![
        ("probe", probe),
        ("probe-ack", ack),
        ("valid", valid.clone()),
        ("forged-tag", forged),
        ("truncated", valid[..heartbeat::LEN - 1].to_vec()),
        ("magic-only", heartbeat::MAGIC.to_vec()),
        ("key-hex", key.to_hex().into_bytes()),
    ]
}
