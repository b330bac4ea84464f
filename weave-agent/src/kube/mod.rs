//! Peers from the Kubernetes API, as weave-kube's `kube-peers` found them:
//! the `InternalIP` of every node in the cluster but this one. The agent
//! runs in a `DaemonSet` pod, so it reads the in-cluster configuration its
//! service account gives it ([`InCluster`]), lists the nodes ([`nodes`])
//! and connects to them, and lists them again every [`REFRESH_EVERY`]
//! ([`refresh`]) to dial the nodes that joined since.

mod client;
mod in_cluster;
mod nodes;
mod refresh;

pub use client::{Error, peers};
pub use in_cluster::{ConfigError, InCluster, SERVICE_ACCOUNT_DIR};
pub use nodes::{NodeListError, internal_ips};
pub use refresh::{Known, REFRESH_EVERY, refresh_once};
