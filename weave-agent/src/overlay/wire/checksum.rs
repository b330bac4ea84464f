//! The Internet checksum (RFC 1071), for the headers the data plane writes
//! itself: super-frames (`coalesce`) and frames too big for a path
//! (`too_big`).

/// Ones' complement sum of big-endian 16-bit words (an odd last byte
/// padded), folded to at most 16 bits (so a few sums added stay far from
/// overflowing a `u32`).
///
/// Hot: the agent checksums every TCP segment it cuts (`segment`). The
/// bytes are added as native 32-bit words into a 64-bit accumulator, which
/// the compiler turns into vector adds, and the folded result is
/// byte-swapped on a little-endian machine: RFC 1071's byte order
/// independence (the sum of the byte-swapped words is the byte-swapped
/// sum), and a 32-bit word adds as its two 16-bit halves modulo 2^16 - 1.
pub(crate) fn sum(bytes: &[u8]) -> u32 {
    let (words, rest) = bytes.as_chunks::<4>();
    let mut acc: u64 = 0;
    for w in words {
        acc += u64::from(u32::from_ne_bytes(*w));
    }
    let native = fold_u64(acc);
    let big_endian = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    // The last 0-3 bytes start at an even offset: big-endian words.
    let mut tail = rest.chunks(2).map(|w| match *w {
        [a, b] => u32::from(u16::from_be_bytes([a, b])),
        [a] => u32::from(a) << 8,
        _ => 0,
    });
    let tail = tail.by_ref().sum::<u32>();
    u32::from(fold(u32::from(big_endian) + tail))
}

/// A 64-bit ones' complement accumulator folded to 16 bits.
const fn fold_u64(acc: u64) -> u16 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    fold(acc as u32)
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

    #[test]
    fn the_word_sum_folds_like_the_16_bit_one() {
        // The plain definition, 16 bits at a time.
        let reference = |bytes: &[u8]| {
            let mut total: u64 = bytes
                .chunks(2)
                .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
                .sum();
            while total >> 16 != 0 {
                total = (total & 0xffff) + (total >> 16);
            }
            total as u16
        };
        let mut seed = 0x1234_5678u32;
        let bytes: Vec<u8> = (0..70_000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        for len in (0..64).chain([1399, 1400, 1448, 9000, 65_535, 70_000]) {
            for start in [0, 1, 3] {
                let b = &bytes[start..start + len.min(bytes.len() - start)];
                assert_eq!(fold(sum(b)), reference(b), "{len} bytes from {start}");
            }
        }
        assert_eq!(fold(sum(&[0xff; 4096])), 0xffff);
    }
}
