//! A peer's identity: Weave's 48-bit name, written like a MAC address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::mac::{BadMac, Mac};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerName(pub Mac);

impl PeerName {
    pub fn random() -> Self {
        Self(Mac::random_local())
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PeerName {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(PeerName)
    }
}
