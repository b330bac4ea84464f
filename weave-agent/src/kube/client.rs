//! The one call to the API server: list the nodes, over TLS verified
//! against the service account's CA, with its bearer token.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{PemItem, RootCerts, TlsConfig};

use super::in_cluster::{ConfigError, InCluster};
use super::nodes::{NodeListError, internal_ips};

/// How long the API server may take to answer: launch must not hang.
const TIMEOUT: Duration = Duration::from_secs(20);
/// A node list is a few KiB per node; this allows thousands of nodes.
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Why the peers could not be had from the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the service account's ca.crt holds no PEM certificate")]
    NoCa,
    #[error("listing nodes at {url}: {source}")]
    Http { url: String, source: ureq::Error },
    #[error(transparent)]
    NodeList(#[from] NodeListError),
}

/// The peers of this node: every other node's `InternalIP`, from the API
/// server the in-cluster configuration names. `this_node` is this node's
/// name (the `DaemonSet` passes `spec.nodeName` as `WEAVE_NODE_NAME`).
///
/// # Errors
/// Configuration, TLS, HTTP (including 401/403: RBAC) or parse errors.
pub fn peers(config: &InCluster, this_node: Option<&str>) -> Result<Vec<IpAddr>, Error> {
    let roots: Vec<_> = ureq::tls::parse_pem(&config.ca_pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if roots.is_empty() {
        return Err(Error::NoCa);
    }
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(TIMEOUT))
        .build()
        .new_agent();
    let url = format!("{}/api/v1/nodes", config.server);
    let http = |source| Error::Http {
        url: url.clone(),
        source,
    };
    let body = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {}", config.token))
        .header("Accept", "application/json")
        .call()
        .map_err(http)?
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(http)?;
    Ok(internal_ips(&body, this_node)?)
}
