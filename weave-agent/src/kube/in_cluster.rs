//! The in-cluster configuration: where the API server is and how to trust
//! and authenticate to it, from what the kubelet gives every pod.

use std::path::{Path, PathBuf};

/// Where the kubelet mounts a pod's service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why the in-cluster configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{0} is not set: --peers-from-kubernetes works only inside a Kubernetes pod \
         (the DaemonSet in deploy/)"
    )]
    MissingEnv(&'static str),
    #[error(
        "reading the service account's {what} {}: {source} (is automountServiceAccountToken \
         off, or is the pod without a service account?)",
        path.display()
    )]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the service account token {} is empty", .0.display())]
    EmptyToken(PathBuf),
}

/// What a pod needs to call the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    /// `https://HOST:PORT`, an IPv6 host in brackets.
    pub server: String,
    /// The bearer token, trimmed.
    pub token: String,
    /// The cluster CA bundle, PEM.
    pub ca_pem: Vec<u8>,
}

impl InCluster {
    /// Reads `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account in
    /// [`SERVICE_ACCOUNT_DIR`].
    ///
    /// # Errors
    /// A variable unset or a file unreadable, named in the error.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_parts(
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
            Path::new(SERVICE_ACCOUNT_DIR),
        )
    }

    /// [`Self::from_env`] with its inputs given (for tests and other mounts).
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn from_parts(
        host: Option<&str>,
        port: Option<&str>,
        account_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or(ConfigError::MissingEnv("KUBERNETES_SERVICE_HOST"))?;
        let port = port
            .filter(|p| !p.is_empty())
            .ok_or(ConfigError::MissingEnv("KUBERNETES_SERVICE_PORT"))?;
        let read = |what: &'static str, name: &str| {
            let path = account_dir.join(name);
            std::fs::read(&path).map_err(|source| ConfigError::Read { what, path, source })
        };
        let token_path = account_dir.join("token");
        let token = String::from_utf8_lossy(&read("token", "token")?)
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(ConfigError::EmptyToken(token_path));
        }
        let ca_pem = read("CA bundle", "ca.crt")?;
        // An IPv6 service address needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Ok(Self {
            server: format!("https://{host}:{port}"),
            token,
            ca_pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(token: Option<&str>, ca: bool) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "weave-kube-sa-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(t) = token {
            std::fs::write(dir.join("token"), t).unwrap();
        }
        if ca {
            std::fs::write(dir.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        }
        dir
    }

    #[test]
    fn reads_the_service_account_and_builds_the_server_url() {
        let dir = account(Some("abc.def\n"), true);
        let c = InCluster::from_parts(Some("10.96.0.1"), Some("443"), &dir).unwrap();
        assert_eq!(c.server, "https://10.96.0.1:443");
        assert_eq!(c.token, "abc.def");
        let c = InCluster::from_parts(Some("fd00::1"), Some("6443"), &dir).unwrap();
        assert_eq!(c.server, "https://[fd00::1]:6443");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn says_what_is_missing() {
        let dir = account(Some("t"), true);
        let e = InCluster::from_parts(None, Some("443"), &dir).unwrap_err();
        assert!(
            e.to_string().contains("KUBERNETES_SERVICE_HOST is not set"),
            "{e}"
        );
        let e = InCluster::from_parts(Some("h"), Some(""), &dir).unwrap_err();
        assert!(e.to_string().contains("KUBERNETES_SERVICE_PORT"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();

        let dir = account(None, true);
        let e = InCluster::from_parts(Some("h"), Some("443"), &dir).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Read { what: "token", .. })
                && e.to_string().contains("token"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();

        let dir = account(Some(" \n"), true);
        let e = InCluster::from_parts(Some("h"), Some("443"), &dir).unwrap_err();
        assert!(matches!(e, ConfigError::EmptyToken(_)), "{e}");
        std::fs::remove_dir_all(dir).unwrap();

        let dir = account(Some("t"), false);
        let e = InCluster::from_parts(Some("h"), Some("443"), &dir).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
