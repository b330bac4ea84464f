//! The `tcp_coalesce` fuzz target: inner frames from peers, merged before they enter the bridge.

use weave_agent::overlay::coalesce::{self, Run, Segment};
use weave_agent::overlay::vxlan::ETHERNET_HEADER_LEN;

use super::Bytes;
use super::vxlan_parse::ethernet;

/// The frames of one input: each a big-endian u16 length (up to 4 KiB) and
/// that many bytes; at most 200 frames.
fn coalesce_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut input = Bytes::new(data);
    let mut frames = Vec::new();
    while !input.is_empty() && frames.len() < 200 {
        let len = usize::from(u16::from_be_bytes([input.byte(), input.byte()])) % 4096;
        frames.push(input.take(len));
    }
    frames
}

/// Runs cover the frames in order; a run of several holds only segments,
/// at most 64, whose super-frame header is well formed and whose IPv4
/// packet stays within 64 KiB.
pub fn tcp_coalesce(data: &[u8]) {
    let frames = coalesce_frames(data);
    let mut runs: Vec<Run> = Vec::new();
    coalesce::plan(frames.len(), |i| frames[i], &mut runs);
    let mut next = 0;
    for run in &runs {
        assert_eq!(run.first, next, "runs in order, without gaps: {runs:?}");
        assert!((1..=coalesce::MAX_SEGMENTS).contains(&run.count));
        next += run.count;
        if run.count == 1 {
            continue;
        }
        let segments: Vec<Segment> = frames[run.first..next]
            .iter()
            .map(|f| Segment::parse(f).expect("a merged frame is a segment"))
            .collect();
        let bytes: usize = segments.iter().map(|s| s.payload().len()).sum();
        assert_eq!(run.bytes, bytes, "a run's payload is its segments'");
        let mut out = [0u8; coalesce::VNET_HDR_LEN + coalesce::MAX_HEADER];
        let len = coalesce::super_header(frames[run.first], run, &mut out)
            .expect("a run's first frame makes a header");
        let header = &out[coalesce::VNET_HDR_LEN..len];
        let ip_len = usize::from(u16::from_be_bytes([header[16], header[17]]));
        assert_eq!(ip_len, header.len() - ETHERNET_HEADER_LEN + bytes);
        assert!(ip_len <= 65_535);
        assert_eq!(
            &header[..16],
            &frames[run.first][..16],
            "Ethernet and IP start kept"
        );
    }
    assert_eq!(next, frames.len(), "every frame in a run");
}

pub(crate) fn coalesce_seeds() -> Vec<(&'static str, Vec<u8>)> {
    /// An ACK segment of `payload` bytes at `seq`, IP id `id`, PSH if `push`.
    fn segment(seq: u32, id: u16, payload: usize, push: bool) -> Vec<u8> {
        let mut f = ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 54 + payload);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[18..20].copy_from_slice(&id.to_be_bytes());
        f[20] = 0x40;
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 1, 1]);
        f[30..34].copy_from_slice(&[10, 0, 1, 2]);
        f[34..38].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = if push { 0x18 } else { 0x10 };
        f[48..50].copy_from_slice(&512u16.to_be_bytes());
        f
    }
    let encode = |frames: &[Vec<u8>]| {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    };
    let burst: Vec<Vec<u8>> = (0..5u16)
        .map(|n| segment(1000 + u32::from(n) * 100, n, 100, n == 4))
        .collect();
    let mut mixed = burst.clone();
    mixed.insert(2, ethernet([0xff; 6], [2, 0, 0, 0, 0, 3], 42));
    vec![
        ("burst-ending-in-push", encode(&burst)),
        ("burst-cut-by-arp", encode(&mixed)),
    ]
}
