//! What the datapath XDP program and the agent's `AF_XDP` path agree on: the
//! map of MACs learnt behind peers, and the tag the program puts in front of
//! every frame it hands to the agent (XDP metadata, which copy-mode `AF_XDP`
//! delivers in the bytes just before the frame).

/// The destination of frames for every peer: flood (broadcast, multicast,
/// or a unicast MAC not learnt behind any peer). Same value as the overlay's
/// `ShortId::BROADCAST`.
pub const DEST_FLOOD: u16 = 0xfff;

/// Most MACs the agent mirrors into the `PEER_MACS` map (as many as its own
/// table of MACs behind peers holds).
pub const MAX_PEER_MACS: u32 = 8192;

/// Bytes of metadata in front of a frame handed to the agent.
pub const META_LEN: usize = 4;
/// The upper half of the metadata word: tells a real tag from whatever
/// bytes happen to lie in front of a frame that carries none.
const META_MAGIC: u32 = 0x5745_0000;

/// The metadata word for a frame whose destination is peer `dest` (a 12-bit
/// short id, or [`DEST_FLOOD`]), in native byte order.
#[inline(always)]
pub const fn meta(dest: u16) -> u32 {
    META_MAGIC | (dest & 0xfff) as u32
}

/// The destination in a metadata word, or `None` when it is not a tag.
#[inline(always)]
pub const fn meta_dest(word: u32) -> Option<u16> {
    if word & 0xffff_0000 == META_MAGIC && word & 0xf000 == 0 {
        Some((word & 0xfff) as u16)
    } else {
        None
    }
}

/// The `PEER_MACS` key of a MAC address: its six bytes, little endian, in a
/// u64 (no padding bytes, so no uninitialised key bytes in the kernel).
#[inline(always)]
pub const fn mac_key(mac: [u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_other_words_are_not_tags() {
        for dest in [0, 1, 0x123, DEST_FLOOD] {
            assert_eq!(meta_dest(meta(dest)), Some(dest));
        }
        assert_eq!(meta_dest(0), None);
        assert_eq!(meta_dest(0x0800_4500), None);
        assert_eq!(meta_dest(META_MAGIC | 0x1000), None);
        assert_ne!(mac_key([2, 0, 0, 0, 0, 1]), mac_key([1, 0, 0, 0, 0, 2]));
    }
}
