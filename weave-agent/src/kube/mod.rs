//! Peers from the Kubernetes API, as weave-kube's `kube-peers` found them:
//! the `InternalIP` of every node in the cluster but this one. The agent
//! runs in a `DaemonSet` pod, so it reads the in-cluster configuration its
//! service account gives it ([`InCluster`]), lists the nodes once
//! ([`nodes`]) and connects to them; peers it learns later come by gossip
//! (nodes added after launch connect to it themselves, since they list it).

mod client;
mod in_cluster;
mod nodes;

pub use client::{Error, peers};
pub use in_cluster::{ConfigError, InCluster, SERVICE_ACCOUNT_DIR};
pub use nodes::{NodeListError, internal_ips};
