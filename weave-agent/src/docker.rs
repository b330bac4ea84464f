//! The Docker Engine API, through bollard: create, start, inspect, remove.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

use crate::docker_args::ContainerSpec;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach Docker at {host}: {source}")]
    Unreachable {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("Docker refused to {op}: {message}")]
    Refused { op: &'static str, message: String },
    #[error("Docker failed to {op}: {source}")]
    Api {
        op: &'static str,
        source: bollard::errors::Error,
    },
}

/// What the agent needs to know of a container.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// PID of its init process; 0 when not running.
    pub pid: u32,
    /// Its host name, with the domain name when Docker keeps one apart.
    pub hostname: String,
}

pub struct Docker {
    client: bollard::Docker,
}

fn api(op: &'static str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    move |source| match source {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            DockerError::Refused { op, message }
        }
        source => DockerError::Api { op, source },
    }
}

impl Docker {
    /// Connects and agrees on an API version (dockerd 20.10 speaks at most 1.41).
    pub async fn connect(host: &str) -> Result<Self, DockerError> {
        let unreachable = |source| DockerError::Unreachable {
            host: host.to_string(),
            source,
        };
        let client = bollard::Docker::connect_with_host(host).map_err(unreachable)?;
        let client = client.negotiate_version().await.map_err(unreachable)?;
        Ok(Self { client })
    }

    /// Looks up a container by id, id prefix or name.
    pub async fn inspect(&self, container: &str) -> Result<ContainerInfo, DockerError> {
        let info = self
            .client
            .inspect_container(container, None)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => DockerError::NoSuchContainer(container.to_string()),
                e => api("inspect a container")(e),
            })?;
        let pid = info
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        Ok(ContainerInfo {
            id: info.id.unwrap_or_default(),
            name: info
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            pid,
            hostname: info
                .config
                .map(|c| {
                    let host = c.hostname.unwrap_or_default();
                    match c.domainname.filter(|d| !d.is_empty()) {
                        Some(domain) => format!("{host}.{domain}"),
                        None => host,
                    }
                })
                .unwrap_or_default(),
        })
    }

    /// Creates and starts a container with no Docker networking; returns its id.
    /// A container that was created but failed to start is removed again.
    pub async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect();
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: some_vec(&spec.cmd),
            env: some_vec(&spec.env),
            labels: (!labels.is_empty()).then_some(labels),
            hostname: spec.hostname.clone(),
            working_dir: spec.workdir.clone(),
            user: spec.user.clone(),
            entrypoint: spec.entrypoint.clone().map(|e| vec![e]),
            tty: Some(spec.tty),
            open_stdin: Some(spec.open_stdin),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                binds: some_vec(&spec.binds),
                auto_remove: Some(spec.auto_remove),
                privileged: Some(spec.privileged),
                cap_add: some_vec(&spec.cap_add),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: spec.name.clone(),
            ..Default::default()
        };
        let created = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(api("create the container"))?;
        if let Err(e) = self.client.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(api("start the container")(e));
        }
        Ok(created.id)
    }

    /// Removes a container, running or not; failures are logged, not returned,
    /// because this only ever undoes a half-done `weave run`.
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = self.client.remove_container(id, Some(options)).await {
            tracing::warn!(container = id, error = %e, "could not remove container");
        }
    }
}

/// A managed plugin, as `docker plugin ls` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// With its tag: `weave-rs/net-plugin:0.1.0`.
    pub name: String,
    pub enabled: bool,
}

/// A network and the drivers it uses (network driver, IPAM driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkDrivers {
    pub name: String,
    pub drivers: Vec<String>,
}

impl Docker {
    /// The managed plugins installed.
    pub async fn plugins(&self) -> Result<Vec<PluginInfo>, DockerError> {
        let list = self
            .client
            .list_plugins(None)
            .await
            .map_err(api("list plugins"))?;
        Ok(list
            .into_iter()
            .map(|p| PluginInfo {
                name: p.name,
                enabled: p.enabled,
            })
            .collect())
    }

    /// Every network this daemon knows, with its drivers.
    pub async fn networks(&self) -> Result<Vec<NetworkDrivers>, DockerError> {
        let list = self
            .client
            .list_networks(None)
            .await
            .map_err(api("list networks"))?;
        Ok(list
            .into_iter()
            .map(|n| NetworkDrivers {
                name: n.name.unwrap_or_default(),
                drivers: n
                    .driver
                    .into_iter()
                    .chain(n.ipam.and_then(|i| i.driver))
                    .collect(),
            })
            .collect())
    }

    /// Disables (if enabled) and removes a managed plugin. Not forced:
    /// Docker refuses a plugin that is still in use.
    pub async fn remove_plugin(&self, plugin: &PluginInfo) -> Result<(), DockerError> {
        if plugin.enabled {
            self.client
                .disable_plugin(&plugin.name, None)
                .await
                .map_err(api("disable the plugin"))?;
        }
        match self.client.remove_plugin(&plugin.name, None).await {
            // dockerd 20.10 answers a removal with an empty body where the
            // API documents the plugin's JSON: removed all the same.
            Ok(_)
            | Err(
                bollard::errors::Error::JsonSerdeError { .. }
                | bollard::errors::Error::JsonDataError { .. },
            ) => Ok(()),
            Err(e) => Err(api("remove the plugin")(e)),
        }
    }
}

/// How long the watcher waits before reconnecting to a Docker that went away.
const EVENTS_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// What the agent hears from Docker's event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerEvent {
    /// A container died or was removed.
    Died(String),
    /// A container was connected to a network: its name, the IDs of all
    /// its network endpoints (the Docker plugin's endpoints are known to
    /// the agent by these IDs only; this is how they get names in weaveDNS)
    /// and the PID of its first process (0 when not running): its
    /// namespace, where a new endpoint announces its address.
    Connected {
        name: String,
        endpoints: Vec<String>,
        pid: u32,
    },
}

/// The endpoint IDs of a container's networks, its name and PID.
async fn endpoints_of(docker: &Docker, id: &str) -> Option<DockerEvent> {
    let info = docker.client.inspect_container(id, None).await.ok()?;
    let name = info.name?.trim_start_matches('/').to_string();
    let pid = info
        .state
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    let endpoints = info
        .network_settings?
        .networks?
        .into_values()
        .filter_map(|n| n.endpoint_id)
        .filter(|e| !e.is_empty())
        .collect();
    Some(DockerEvent::Connected {
        name,
        endpoints,
        pid,
    })
}

/// Watches Docker for containers that die and for network connections,
/// and sends them on the returned channel (bounded: when full, deaths are
/// dropped, and the agent's periodic check of its ports catches those
/// containers later; a connection dropped leaves an endpoint without a
/// DNS name). Reconnects when Docker goes away; ends when the receiver is
/// dropped.
pub fn watch(host: String, depth: usize) -> tokio::sync::mpsc::Receiver<DockerEvent> {
    use futures::StreamExt as _;

    let (tx, rx) = tokio::sync::mpsc::channel(depth);
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            match Docker::connect(&host).await {
                Ok(docker) => {
                    let docker = std::sync::Arc::new(docker);
                    let filters = HashMap::from([
                        (
                            "type".to_string(),
                            vec!["container".to_string(), "network".to_string()],
                        ),
                        (
                            "event".to_string(),
                            vec![
                                "die".to_string(),
                                "destroy".to_string(),
                                "connect".to_string(),
                            ],
                        ),
                    ]);
                    let options = bollard::query_parameters::EventsOptions {
                        filters: Some(filters),
                        ..Default::default()
                    };
                    let mut events = docker.client.events(Some(options));
                    while let Some(event) = events.next().await {
                        let Ok(event) = event else { break };
                        let Some(actor) = event.actor else { continue };
                        let is_network =
                            event.typ == Some(bollard::models::EventMessageTypeEnum::NETWORK);
                        if is_network {
                            // The container of a network event is an attribute.
                            let Some(id) = actor.attributes.and_then(|mut a| a.remove("container"))
                            else {
                                continue;
                            };
                            // Inspecting waits for the container's start to finish
                            // (its endpoint IDs are known then): not in this loop.
                            let (docker, tx) = (std::sync::Arc::clone(&docker), tx.clone());
                            tokio::spawn(async move {
                                if let Some(connected) = endpoints_of(&docker, &id).await {
                                    let _ = tx.try_send(connected);
                                }
                            });
                        } else if let Some(id) = actor.id {
                            // Full: dropped; the periodic check catches it.
                            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                                tx.try_send(DockerEvent::Died(id))
                            {
                                return;
                            }
                        }
                    }
                }
                Err(e) if !logged => {
                    tracing::warn!(error = %e, "watching Docker's events");
                    logged = true;
                }
                Err(_) => {}
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(EVENTS_RETRY).await;
        }
    });
    rx
}
