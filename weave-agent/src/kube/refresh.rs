//! The node list, read again now and then: a node that joins the cluster
//! after this agent started is dialled by it too (weave-kube's `kube-peers`
//! ran at every start of the router only; a node that joined later was
//! found only if it dialled us, which fails while its agent is down).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use super::client::{Error, peers};
use super::in_cluster::InCluster;

/// How often the node list is read again: nodes join rarely, and each read
/// is one request to the API server per node of the cluster.
pub const REFRESH_EVERY: Duration = Duration::from_mins(1);

/// The peers listed so far.
#[derive(Debug, Default)]
pub struct Known(BTreeSet<IpAddr>);

impl Known {
    pub fn new(listed: &[IpAddr]) -> Self {
        Self(listed.iter().copied().collect())
    }

    /// The peers of `listed` not seen before, now remembered. A node that
    /// left stays remembered: the mesh gives up on it by itself, and it is
    /// not dialled twice if it comes back.
    pub fn learn(&mut self, listed: &[IpAddr]) -> Vec<IpAddr> {
        listed
            .iter()
            .copied()
            .filter(|p| self.0.insert(*p))
            .collect()
    }
}

/// Reads the node list once; the peers not known before.
///
/// # Errors
/// As [`peers`]: the caller logs it and tries again at the next period.
pub fn refresh_once(
    config: &InCluster,
    this_node: Option<&str>,
    known: &mut Known,
) -> Result<Vec<IpAddr>, Error> {
    Ok(known.learn(&peers(config, this_node)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn only_new_nodes_are_dialled() {
        let mut known = Known::new(&ips(&["192.0.2.1", "192.0.2.2"]));
        assert!(known.learn(&ips(&["192.0.2.2", "192.0.2.1"])).is_empty());
        assert_eq!(
            known.learn(&ips(&["192.0.2.1", "192.0.2.3"])),
            ips(&["192.0.2.3"])
        );
        // Gone and back: not new.
        assert!(known.learn(&ips(&["192.0.2.3"])).is_empty());
        assert!(known.learn(&ips(&["192.0.2.1"])).is_empty());
    }
}
