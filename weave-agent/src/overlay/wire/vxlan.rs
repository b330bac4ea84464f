//! The VXLAN header (RFC 7348, section 5), parsed in place and written into
//! a caller's buffer. Pure: no I/O, no allocation, never panics on input, so
//! a fuzz target can call [`parse`] directly.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

/// Length of the VXLAN header that precedes the inner Ethernet frame.
pub const HEADER_LEN: usize = 8;
/// Offset of the flags byte.
const FLAGS_OFFSET: usize = 0;
/// Offset of the 24-bit VNI (big endian); the byte after it is reserved.
const VNI_OFFSET: usize = 4;
const VNI_LEN: usize = 3;
/// The I flag: the VNI is valid. Must be set; the other flag bits and the
/// reserved fields are sent as zero and ignored on receipt (RFC 7348).
pub const FLAG_VNI_VALID: u8 = 0x08;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// Destination and source MAC plus `EtherType`: the shortest inner frame.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// How much smaller the overlay MTU must be than the underlay's (IPv4):
/// the underlay carries outer IPv4 (20) + UDP (8) + VXLAN (8) + the inner
/// Ethernet header (14) that the inner MTU does not count. 1500 -> 1450.
pub const MTU_OVERHEAD_IPV4: u32 = 20 + 8 + HEADER_LEN as u32 + ETHERNET_HEADER_LEN as u32;

/// A VXLAN packet borrowed from the buffer it arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vxlan<'a> {
    pub vni: u32,
    /// The inner Ethernet frame (at least [`ETHERNET_HEADER_LEN`] bytes).
    pub frame: &'a [u8],
}

/// Why a UDP payload is not a VXLAN packet we accept. Cheap and `Copy`: it
/// is built on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    #[error("{len} bytes is shorter than a VXLAN header")]
    Truncated { len: usize },
    #[error("the I flag is not set (flags {flags:#04x})")]
    NoVni { flags: u8 },
    #[error("inner frame of {len} bytes is shorter than an Ethernet header")]
    FrameTooShort { len: usize },
}

/// Parses a UDP payload into its VNI and inner frame, without copying.
pub const fn parse(payload: &[u8]) -> Result<Vxlan<'_>, VxlanError> {
    let Some((header, frame)) = payload.split_first_chunk::<HEADER_LEN>() else {
        return Err(VxlanError::Truncated { len: payload.len() });
    };
    let flags = header[FLAGS_OFFSET];
    if flags & FLAG_VNI_VALID == 0 {
        return Err(VxlanError::NoVni { flags });
    }
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(VxlanError::FrameTooShort { len: frame.len() });
    }
    let [a, b, c] = [
        header[VNI_OFFSET],
        header[VNI_OFFSET + 1],
        header[VNI_OFFSET + VNI_LEN - 1],
    ];
    Ok(Vxlan {
        vni: u32::from_be_bytes([0, a, b, c]),
        frame,
    })
}

/// The header for `vni` (its top 8 bits must be zero; they are dropped):
/// the I flag set, every reserved bit zero.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    debug_assert!(vni <= VNI_MAX, "VNI {vni:#x} does not fit in 24 bits");
    let [_, a, b, c] = vni.to_be_bytes();
    let mut header = [0u8; HEADER_LEN];
    header[FLAGS_OFFSET] = FLAG_VNI_VALID;
    header[VNI_OFFSET..VNI_OFFSET + VNI_LEN].copy_from_slice(&[a, b, c]);
    header
}

/// Writes the header for `vni` at the start of `buf`, returning the rest of
/// `buf` (where the inner frame goes), or `None` if `buf` is too short.
pub fn write_header(buf: &mut [u8], vni: u32) -> Option<&mut [u8]> {
    let (head, rest) = buf.split_first_chunk_mut::<HEADER_LEN>()?;
    *head = header(vni);
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06,
    ];

    fn packet(vni: u32, frame: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN + frame.len()];
        write_header(&mut buf, vni)
            .expect("room for the header")
            .copy_from_slice(frame);
        buf
    }

    #[test]
    fn round_trips() {
        for vni in [0, 1, 0x123_fff, VNI_MAX] {
            let buf = packet(vni, &FRAME);
            assert_eq!(
                parse(&buf),
                Ok(Vxlan {
                    vni,
                    frame: &FRAME[..]
                })
            );
        }
    }

    #[test]
    fn header_is_the_rfc_layout() {
        assert_eq!(header(0x12_3456), [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        let mut buf = packet(0xabc_def, &FRAME);
        buf[0] = 0xff; // every flag bit, I included
        buf[1..4].copy_from_slice(&[0xff; 3]);
        buf[7] = 0xff;
        assert_eq!(parse(&buf).map(|v| v.vni), Ok(0xabc_def));
    }

    #[test]
    fn rejects_what_is_not_vxlan() {
        assert_eq!(parse(&[]), Err(VxlanError::Truncated { len: 0 }));
        assert_eq!(parse(&[0x08; 7]), Err(VxlanError::Truncated { len: 7 }));
        let mut no_i = packet(5, &FRAME);
        no_i[0] = 0xf7;
        assert_eq!(parse(&no_i), Err(VxlanError::NoVni { flags: 0xf7 }));
        let short = packet(5, &FRAME[..13]);
        assert_eq!(parse(&short), Err(VxlanError::FrameTooShort { len: 13 }));
        assert_eq!(
            parse(&packet(5, &[])),
            Err(VxlanError::FrameTooShort { len: 0 })
        );
    }

    #[test]
    fn write_header_needs_room() {
        assert!(write_header(&mut [0u8; 7], 1).is_none());
        assert_eq!(write_header(&mut [0u8; 8], 1).map(|r| r.len()), Some(0));
    }

    /// Every truncation of valid packets and a few hundred thousand random
    /// inputs: parse never panics, and whatever it accepts is consistent.
    #[test]
    fn never_panics_on_arbitrary_input() {
        // xorshift64*: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let check = |input: &[u8]| {
            if let Ok(v) = parse(input) {
                assert!(input.len() >= HEADER_LEN + ETHERNET_HEADER_LEN);
                assert_eq!(v.frame, &input[HEADER_LEN..]);
                assert!(v.vni <= VNI_MAX);
                assert_ne!(input[0] & FLAG_VNI_VALID, 0);
            }
        };
        let valid = packet(0x101_102, &[0xab; 64]);
        for len in 0..=valid.len() {
            check(&valid[..len]);
        }
        let mut buf = [0u8; 128];
        for _ in 0..200_000 {
            let len = (next() % buf.len() as u64) as usize;
            for byte in &mut buf[..len] {
                *byte = next() as u8;
            }
            // Half the time make the flags valid, to get past the first check.
            if len > 0 && next() & 1 == 0 {
                buf[0] |= FLAG_VNI_VALID;
            }
            check(&buf[..len]);
        }
    }
}
