//! Which AEAD seals the data frames of one connection in password mode.
//!
//! Two, both with 256-bit keys, 96-bit nonces and 16-byte tags, so the
//! sealed packet's layout (`seal`) does not depend on the choice:
//! - AES-256-GCM, where both ends have AES and carry-less multiply
//!   instructions: on this project's test machine (AMD EPYC, VAES) ring's
//!   AES-GCM seals a 1400-byte frame 2.7 times as fast as its
//!   ChaCha20-Poly1305 (4.7 against 1.8 GB/s), and password mode spends
//!   most of its extra CPU in the AEAD. Weave's own fast data path
//!   encrypted with AES-GCM (`IPsec` ESP) too.
//! - ChaCha20-Poly1305 otherwise: constant time and fast without AES
//!   instructions, where AES would be slow (and table-based code would
//!   leak timing); and with every peer that predates the choice.
//!
//! Each side says in its hello whether it offers AES-256-GCM; a connection
//! uses it only when both do. The hellos are part of the Noise prologue,
//! so a man in the middle cannot strip the offer without failing the
//! handshake: the choice is downgrade-proof.
//!
//! How much one key may seal: keys are per connection and direction and
//! change only when a connection is established again (a restarted agent,
//! a lost connection). ChaCha20-Poly1305 has no practical volume bound
//! before the counter's own limit. AES-GCM, a 128-bit block cipher, does:
//! an eavesdropper's advantage in telling its output from random grows
//! with the square of the blocks sealed under one key, and reaches 2^-32
//! (NIST's guidance for GCM) after about 2^48.5 blocks, 6.4 PB, or 59 days
//! of one connection sending 10 Gbit/s without a break. Rotating keys
//! within a connection (a ratchet every 2^32 frames, derived on both sides
//! from the counter) would remove that bound; it is not built.

use std::fmt;

use ring::aead::{AES_256_GCM, Algorithm, CHACHA20_POLY1305};
use serde::{Deserialize, Serialize};

/// The AEAD of one connection's data frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataCipher {
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl DataCipher {
    /// What both sides use, from whether each offers AES-256-GCM.
    pub const fn agreed(ours_offer_aes: bool, theirs_offer_aes: bool) -> Self {
        if ours_offer_aes && theirs_offer_aes {
            Self::Aes256Gcm
        } else {
            Self::ChaCha20Poly1305
        }
    }

    /// Its name in `weave status` (and in the hello's JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }

    pub(crate) fn algorithm(self) -> &'static Algorithm {
        match self {
            Self::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Self::Aes256Gcm => &AES_256_GCM,
        }
    }
}

impl fmt::Display for DataCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU runs AES-GCM in hardware: AES rounds and the
/// carry-less multiply GHASH needs. Without both, ring's AES-GCM falls back
/// to slow constant-time code and ChaCha20-Poly1305 is the faster choice.
pub fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_only_when_both_offer_it() {
        assert_eq!(DataCipher::agreed(true, true), DataCipher::Aes256Gcm);
        for (ours, theirs) in [(true, false), (false, true), (false, false)] {
            assert_eq!(
                DataCipher::agreed(ours, theirs),
                DataCipher::ChaCha20Poly1305
            );
        }
    }

    #[test]
    fn names_are_what_status_and_json_show() {
        for c in [DataCipher::ChaCha20Poly1305, DataCipher::Aes256Gcm] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<DataCipher>(&json).unwrap(), c);
        }
    }
}
