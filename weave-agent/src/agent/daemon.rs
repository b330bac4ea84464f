//! Running the agent in the foreground: one agent per control socket (a lock
//! file proves it), the control socket, signals, orderly shutdown.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{Agent, Next, memory};
use crate::api::{client, server};
use crate::config::{LaunchOptions, Paths};
use crate::http::{self, snapshot::Snapshots};

/// How long a launch waits for the lock of an agent that is still exiting:
/// a killed agent can be gone from `ps` before the kernel has closed all
/// its files (seen with its `AF_XDP` and packet sockets), and the lock goes
/// only with the last of them.
const EXITING_AGENT_GRACE: Duration = Duration::from_secs(10);
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Holds the agent's lock file for as long as the agent lives. A held lock
/// whose agent answers on the control socket is refused at once; one whose
/// holder does not answer (an agent exiting) is waited for, for a while.
fn take_lock(paths: &Paths) -> anyhow::Result<Flock<File>> {
    let path = paths.lock_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let deadline = Instant::now() + EXITING_AGENT_GRACE;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((held, nix::errno::Errno::EWOULDBLOCK)) => {
                if client::is_running(&paths.socket) || Instant::now() >= deadline {
                    bail!(
                        "the agent is already running (lock {} is held)",
                        path.display()
                    )
                }
                file = held;
                std::thread::sleep(LOCK_POLL);
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

pub fn run_foreground(paths: Paths, options: LaunchOptions) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the agent needs root (bridges, eBPF programs, network namespaces)");
    }
    options.validate().map_err(anyhow::Error::msg)?;
    memory::one_malloc_arena();
    let lock = take_lock(&paths)?;
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating {}", paths.state_dir.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(paths.clone(), options))?;

    // The socket goes before the lock, so that a CLI that finds the lock free
    // also finds no stale socket.
    let _ = std::fs::remove_file(&paths.socket);
    drop(lock);
    Ok(())
}

async fn serve(paths: Paths, options: LaunchOptions) -> anyhow::Result<()> {
    // Bound before the agent starts, so that a taken port fails the launch
    // before anything is built.
    let status_listener = match options.status_addr.0 {
        Some(addr) => Some(http::bind(addr).await.with_context(|| {
            format!("opening the status endpoint on {addr} (--status-addr; `off` turns it off)")
        })?),
        None => None,
    };
    let plugin_socket = options.plugin_socket.0.clone();
    let mut agent = Agent::start(paths.clone(), options).await?;
    let plugin_listener = match &plugin_socket {
        Some(path) => {
            let l = crate::plugin::bind(path).with_context(|| {
                format!(
                    "opening the Docker plugin socket {} (--plugin-socket; `off` turns it off)",
                    path.display()
                )
            })?;
            tracing::info!(socket = %path.display(), "Docker network and IPAM plugin listening");
            Some(l)
        }
        None => None,
    };
    let listener = server::bind(&paths.socket)
        .with_context(|| format!("opening the control socket {}", paths.socket.display()))?;
    let (tx, mut requests) = mpsc::channel(server::QUEUE_DEPTH);
    // The HTTP endpoint asks the agent task for snapshots: it stays the
    // only owner of its state.
    let http_task = status_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "status endpoint listening");
        }
        tokio::spawn(http::serve(
            l,
            Arc::new(Snapshots::new(agent.status_asker())),
        ))
    });
    let queues = server::Queues {
        requests: tx,
        status: agent.status_asker(),
        peer_name: agent.peer_name(),
    };
    // The Docker plugin's calls join the same queue as the CLI's.
    let plugin_task = plugin_listener.map(|l| {
        tokio::spawn(crate::plugin::serve(
            l,
            crate::plugin::Backend::Agent(queues.clone()),
        ))
    });
    let server_task = tokio::spawn(server::serve(listener, queues));
    let trim_task = tokio::spawn(memory::give_back_freed_memory());
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tracing::info!(socket = %paths.socket.display(), "listening");

    let mut docker_events = crate::docker::watch(paths.docker_host.clone(), server::QUEUE_DEPTH);
    let mut dns_inbox = agent.take_dns_inbox();
    let mut tick = tokio::time::interval(super::ipam::RING_GOSSIP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            Some(work) = agent.next_work() => agent.work(work).await,
            Some(gossip) = super::dns::next(&mut dns_inbox) => agent.on_dns(gossip).await,
            Some(event) = docker_events.recv() => agent.docker_event(event).await,
            _ = tick.tick() => agent.tick().await,
            Some((request, reply)) = requests.recv() => {
                let (response, next) = agent.handle(request).await;
                if matches!(next, Next::Stop) {
                    agent.shutdown().await;
                    let _ = reply.send(response);
                    break;
                }
                let _ = reply.send(response);
            }
            _ = sigterm.recv() => { agent.shutdown().await; break; }
            _ = sigint.recv() => { agent.shutdown().await; break; }
        }
        // Whatever changed the containers (a request, a death, a prune):
        // their names follow.
        agent.dns_sync().await;
    }
    server_task.abort();
    trim_task.abort();
    if let Some(task) = plugin_task {
        task.abort();
    }
    // Docker must not find a socket nobody answers.
    if let Some(path) = &plugin_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Some(task) = http_task {
        task.abort();
    }
    Ok(())
}
