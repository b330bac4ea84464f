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

#[cfg(test)]
mod tests {
    //! The client against a real TLS server: `openssl s_server -WWW` (on
    //! every Debian machine) serving a node list from a directory, with a
    //! certificate for 127.0.0.1 signed by a CA made for the test. No
    //! Kubernetes, but real TLS verification and a real HTTP exchange.

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;

    /// Kills and reaps the server, removes its files.
    struct Server {
        child: Child,
        dir: PathBuf,
        port: u16,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("running openssl (Debian's openssl package)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn server(node_list: &str) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "weave-kube-api-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("api/v1")).unwrap();
        std::fs::write(dir.join("api/v1/nodes"), node_list).unwrap();
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-subj",
                    "/CN=test-ca",
                    "-days",
                    "1",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "srv.key",
                    "-out",
                    "srv.csr",
                    "-subj",
                    "/CN=apiserver",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.crt",
                "-days",
                "1",
                "-extfile",
                "san.ext",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .current_dir(&dir)
            .args([
                "s_server", "-quiet", "-WWW", "-cert", "srv.crt", "-key", "srv.key",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting openssl s_server");
        let server = Server { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn config(server: &Server, ca_pem: Vec<u8>) -> InCluster {
        InCluster {
            server: format!("https://127.0.0.1:{}", server.port),
            token: "t0ken".into(),
            ca_pem,
        }
    }

    const LIST: &str = r#"{"kind":"NodeList","apiVersion":"v1","items":[
        {"metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.1"}]}},
        {"metadata":{"name":"n2"},"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.2"}]}}]}"#;

    #[test]
    fn lists_nodes_over_tls_verified_against_the_service_account_ca() {
        let s = server(LIST);
        let ca = std::fs::read(s.dir.join("ca.crt")).unwrap();
        let peers = peers(&config(&s, ca), Some("n2")).unwrap();
        assert_eq!(peers, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn a_node_that_joins_later_is_found_by_the_next_read() {
        let s = server(LIST);
        let config = config(&s, std::fs::read(s.dir.join("ca.crt")).unwrap());
        let mut known = super::super::Known::new(&peers(&config, Some("n2")).unwrap());
        let none = super::super::refresh_once(&config, Some("n2"), &mut known).unwrap();
        assert!(none.is_empty(), "{none:?}");
        let grown = LIST.replace(
            "]}}]}",
            r#"]}},
            {"metadata":{"name":"n3"},"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.3"}]}}]}"#,
        );
        std::fs::write(s.dir.join("api/v1/nodes"), grown).unwrap();
        let new = super::super::refresh_once(&config, Some("n2"), &mut known).unwrap();
        assert_eq!(new, ["192.0.2.3".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn refuses_a_server_the_ca_did_not_sign_and_a_ca_file_without_certificates() {
        let s = server(LIST);
        // The server's own leaf is no CA: the chain does not verify.
        let wrong = std::fs::read(s.dir.join("srv.crt")).unwrap();
        let e = peers(&config(&s, wrong), None).unwrap_err();
        assert!(
            matches!(e, Error::Http { .. }) && e.to_string().contains("certificate"),
            "{e}"
        );
        let e = peers(&config(&s, b"not pem".to_vec()), None).unwrap_err();
        assert!(matches!(e, Error::NoCa), "{e}");
    }
}
