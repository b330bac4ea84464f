//! Which CNI specification versions the plugin speaks, and which verbs each
//! allows.

use std::cmp::Ordering;

/// Every version VERSION reports. The result format is the same for all of
/// them except that 0.3.x tags each IP with `"version": "4"`.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version used for errors when the input names none we can trust.
pub const LATEST: &str = "1.1.0";

/// A supported version, parsed: (major, minor, patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u32, u32, u32);

impl Version {
    pub const V0_4_0: Self = Self(0, 4, 0);
    pub const V1_1_0: Self = Self(1, 1, 0);

    /// A version this plugin supports, or `None`.
    pub fn supported(text: &str) -> Option<Self> {
        if !SUPPORTED.contains(&text) {
            return None;
        }
        let mut parts = text.split('.').map(str::parse::<u32>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some(Self(a, b, c)),
            _ => None,
        }
    }

    /// Before 0.4.0, each IP in a result said which IP version it was.
    pub fn tags_ip_version(self) -> bool {
        self.cmp(&Self::V0_4_0) == Ordering::Less
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions_parse_and_order() {
        for v in SUPPORTED {
            assert!(Version::supported(v).is_some(), "{v}");
        }
        for v in ["0.1.0", "0.2.0", "1.2.0", "1.0", "", "x.y.z", "1.1.0 "] {
            assert!(Version::supported(v).is_none(), "{v:?}");
        }
        let v030 = Version::supported("0.3.0").unwrap();
        let v031 = Version::supported("0.3.1").unwrap();
        let v100 = Version::supported("1.0.0").unwrap();
        assert!(v030 < v031 && v031 < Version::V0_4_0 && Version::V0_4_0 < v100);
        assert!(v100 < Version::V1_1_0);
        assert!(v031.tags_ip_version());
        assert!(!Version::V0_4_0.tags_ip_version());
    }
}
