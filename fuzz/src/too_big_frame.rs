//! The `too_big_frame` fuzz target: frames from containers too big for the
//! path to a peer, fragmented or answered with ICMP (`wire::too_big`).

use weave_agent::overlay::too_big;

/// Input: a 16-bit limit, then the frame. Never panics; fragments fit the
/// limit and carry the whole packet (see `too_big::fuzz_check`).
pub fn too_big_frame(data: &[u8]) {
    too_big::fuzz_check(data);
}

/// An Ethernet frame with an IPv4 packet of `data_len` bytes of data,
/// protocol `protocol`, flags and offset `flags_offset`.
fn frame(data_len: usize, flags_offset: u16, protocol: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = u16::try_from(20 + data_len).expect("a small packet");
    f.extend([0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, protocol, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[20..22].copy_from_slice(&flags_offset.to_be_bytes());
    f.extend([10, 0, 1, 1, 10, 0, 1, 2]);
    f.extend((0..data_len).map(|i| i as u8));
    f
}

fn with_limit(limit: u16, frame: Vec<u8>) -> Vec<u8> {
    let mut input = limit.to_be_bytes().to_vec();
    input.extend(frame);
    input
}

pub(crate) fn too_big_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("udp-without-df", with_limit(700, frame(1400, 0, 17))),
        ("tcp-with-df", with_limit(700, frame(1400, 0x4000, 6))),
        (
            "fragment-cut-again",
            with_limit(600, frame(1200, 0x2000 | 0x5a, 17)),
        ),
        ("icmp-error", with_limit(700, frame(1400, 0x4000, 1))),
        ("tiny-limit", with_limit(30, frame(100, 0, 17))),
    ]
}
