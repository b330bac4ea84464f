//! The Internet checksum (RFC 1071), for the headers the data plane writes
//! itself: super-frames (`coalesce`) and frames too big for a path
//! (`too_big`).

/// Ones' complement sum of big-endian 16-bit words (an odd last byte padded).
pub(crate) fn sum(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut total: u32 = chunks
        .by_ref()
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        total += u32::from(*last) << 8;
    }
    total
}

/// `sum` folded to 16 bits.
pub(crate) const fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum to write into a header whose checksum field is zero.
pub(crate) fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_its_checksum_sums_to_all_ones() {
        // RFC 1071's example words, and an odd length.
        let mut h = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0, 0, 10, 0, 1, 1, 10, 0,
            1, 2,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(fold(sum(&h)), 0xffff);
        assert_eq!(sum(&[0x01]), 0x0100);
    }
}
