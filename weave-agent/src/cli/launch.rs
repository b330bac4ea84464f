//! `weave launch`: start the agent on this host.

use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::api::{Reply, Request, client};
use crate::config::{LaunchOptions, Password, Paths};

/// How long the agent may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that carries the parsed launch options (JSON,
/// without the password) from `weave launch` to the agent it starts: the
/// agent runs with exactly what was parsed, whatever the command line looked
/// like, and nothing secret is on its command line.
const OPTIONS_ENV: &str = "WEAVE_LAUNCH_OPTIONS_JSON";

/// Start the weave agent on this host: the `weave` bridge and its eBPF
/// programs, the connections to peers (TCP 6783) and the data plane between
/// hosts (UDP 6784), the control socket the other commands talk to, and the
/// read-only HTTP endpoint (`--status-addr`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run in the foreground instead of as a background daemon.
    #[arg(long)]
    foreground: bool,
    /// Run as a Kubernetes node's agent (weave-kube's mode): connect to
    /// every other node of the cluster (their `InternalIP`s, listed from the
    /// API server with the pod's service account; needs list on nodes,
    /// deploy/ grants it), list them again every minute to dial nodes that
    /// joined since, and expose the node on net:default as weave-kube did
    /// (`weave expose`), so that the kubelet reaches its pods and pods have
    /// the node as their gateway.
    #[arg(long)]
    peers_from_kubernetes: bool,
    /// This node's name, left out of the peers found by
    /// `--peers-from-kubernetes` (the `DaemonSet` sets it from `spec.nodeName`).
    #[arg(long, env = "WEAVE_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    #[command(flatten)]
    options: LaunchOptions,
}

pub(super) fn run(paths: &Paths, mut args: Args) -> anyhow::Result<()> {
    // Resolved once, by whichever process parses the flag: a daemonizing
    // launch passes the peers on in the options, so the agent never asks again.
    let kube = std::mem::take(&mut args.peers_from_kubernetes);
    let kube_config = if kube {
        let config = crate::kube::InCluster::from_env()?;
        let found = crate::kube::peers(&config, args.node_name.as_deref())?;
        eprintln!(
            "weave: {} peer(s) from the Kubernetes node list: {}",
            found.len(),
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        for peer in found.iter().map(ToString::to_string) {
            if !args.options.peers.contains(&peer) {
                args.options.peers.push(peer);
            }
        }
        Some((config, crate::kube::Known::new(&found)))
    } else {
        None
    };
    args.options.validate().map_err(anyhow::Error::msg)?;
    let password = args.options.password().map_err(anyhow::Error::msg)?;
    if client::is_running(&paths.socket) {
        bail!(
            "the agent is already running on {} (weave stop first to relaunch)",
            paths.socket.display()
        );
    }
    if args.foreground {
        init_logging();
        let options = match std::env::var(OPTIONS_ENV) {
            Ok(json) => from_parent(&json, args.options)?,
            Err(_) => args.options,
        };
        if let Some((config, known)) = kube_config {
            kube_node(paths.socket.clone(), config, args.node_name.clone(), known);
        }
        return crate::agent::run_foreground(paths.clone(), options);
    }
    let kube = kube.then_some(KubeMode {
        node_name: args.node_name.as_deref(),
    });
    daemonize(paths, &args.options, password.as_ref(), kube)
}

/// Kubernetes mode, beside the agent: once it answers, the node is exposed
/// on net:default (retried until the ring can serve it), and the node list
/// is read again every [`crate::kube::REFRESH_EVERY`], new nodes connected.
fn kube_node(
    socket: std::path::PathBuf,
    config: crate::kube::InCluster,
    node_name: Option<String>,
    mut known: crate::kube::Known,
) {
    let work = move || {
        let mut exposed = false;
        loop {
            if !exposed && client::is_running(&socket) {
                let expose = Request::Expose {
                    addrs: vec![crate::ipam::AddrRequest::Default],
                };
                match client::call(&socket, &expose) {
                    Ok(Reply::Message(addr)) => {
                        tracing::info!(%addr, "node exposed on net:default");
                        exposed = true;
                    }
                    Ok(_) => exposed = true,
                    Err(e) => tracing::warn!(error = %e, "exposing the node (will retry)"),
                }
            }
            std::thread::sleep(if exposed {
                crate::kube::REFRESH_EVERY
            } else {
                Duration::from_secs(2)
            });
            if !exposed {
                continue;
            }
            match crate::kube::refresh_once(&config, node_name.as_deref(), &mut known) {
                Ok(new) if new.is_empty() => {}
                Ok(new) => {
                    let peers: Vec<String> = new.iter().map(ToString::to_string).collect();
                    tracing::info!(peers = ?peers, "new nodes in the Kubernetes node list");
                    if let Err(e) = client::call(
                        &socket,
                        &Request::Connect {
                            peers,
                            replace: false,
                        },
                    ) {
                        tracing::warn!(error = %e, "connecting to new nodes");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the Kubernetes node list"),
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("kube-peers".into())
        .spawn(work)
    {
        tracing::warn!(error = %e, "no Kubernetes node list refresh");
    }
}

/// The options `weave launch` parsed and passed on in [`OPTIONS_ENV`]; the
/// password is never in them (it comes in `WEAVE_PASSWORD`, which `ours`,
/// the agent's own parse, read).
fn from_parent(json: &str, ours: LaunchOptions) -> anyhow::Result<LaunchOptions> {
    let mut options: LaunchOptions =
        serde_json::from_str(json).with_context(|| format!("{OPTIONS_ENV} is not valid"))?;
    options.password = ours.password;
    Ok(options)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEAVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `--peers-from-kubernetes`, passed on to the agent a launch starts.
#[derive(Clone, Copy)]
struct KubeMode<'a> {
    node_name: Option<&'a str>,
}

/// Re-executes this binary as `launch --foreground` in a new session, its
/// output going to the agent log, then waits until it answers.
fn daemonize(
    paths: &Paths,
    options: &LaunchOptions,
    password: Option<&Password>,
    kube: Option<KubeMode<'_>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating {}", paths.state_dir.display()))?;
    let log_path = paths.log_file();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    // The options as parsed, and the paths, travel in the environment (the
    // password, serialised by no one, separately).
    let exe = std::env::current_exe().context("finding the weave binary")?;
    let mut command = Command::new(exe);
    command
        .args(["launch", "--foreground"])
        // The agent's side of Kubernetes mode (the refresh, the exposure)
        // runs beside it: it lists the nodes again itself.
        .args(kube.map(|_| "--peers-from-kubernetes"))
        .env(OPTIONS_ENV, serde_json::to_string(options)?)
        .env("WEAVE_SOCKET", &paths.socket)
        .env("WEAVE_STATE_DIR", &paths.state_dir)
        .env("DOCKER_HOST", &paths.docker_host)
        .env_remove("WEAVE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(password) = password {
        command.env("WEAVE_PASSWORD", password.as_str());
    }
    if let Some(node) = kube.and_then(|k| k.node_name) {
        command.env("WEAVE_NODE_NAME", node);
    }
    // SAFETY: setsid is async-signal-safe; it detaches the agent from the
    // caller's terminal and process group.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().context("starting the agent")?;

    // Ready when the socket answers, which it does once the agent is set
    // up: not a status, which would wait for the mesh (in a big mesh busy
    // with every peer connecting to the new one at once).
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Reply::Message(name)) = client::call(&paths.socket, &Request::Ping) {
            println!("{name}");
            return Ok(());
        }
        if let Some(exit) = child.try_wait()? {
            bail!("the agent exited ({exit}): {}", last_error(&log_path));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the agent did not answer within {READY_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last line of the agent log, which says why it stopped.
fn last_error(log_path: &std::path::Path) -> String {
    std::fs::File::open(log_path)
        .ok()
        .and_then(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .last()
        })
        .unwrap_or_else(|| format!("see {}", log_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_runs_with_the_parsed_options_and_no_password_in_them() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: LaunchOptions,
        }
        let parsed = Cli::try_parse_from([
            "launch",
            "--password",
            "s3cret",
            "10.0.0.2",
            "--mtu",
            "1400",
            "--nickname",
            "launch",
            "launch",
        ])
        .unwrap()
        .options;
        let json = serde_json::to_string(&parsed).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        let agent = Cli::try_parse_from(["launch"]).unwrap().options;
        let options = from_parent(&json, agent).unwrap();
        assert_eq!(options.peers, ["10.0.0.2", "launch"]);
        assert_eq!(options.mtu, Some(1400));
        assert_eq!(options.nickname.as_deref(), Some("launch"));
        assert!(
            options.password.is_none(),
            "the password comes from WEAVE_PASSWORD only"
        );
        assert!(from_parent("{", Cli::try_parse_from(["launch"]).unwrap().options).is_err());
    }
}
