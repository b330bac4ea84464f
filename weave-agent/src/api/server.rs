//! The agent's side of the control socket. Each connection carries one
//! request; requests go to the agent task in order, through a bounded queue,
//! except `Status`, which goes through the agent's queue of snapshots: it is
//! answered while a `run` waits for the allocation ring, as the status
//! endpoint's are.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::{MAX_REQUEST_BYTES, Reply, Request, Response};
use crate::peer_name::PeerName;
use crate::status::StatusAsk;

/// A request and where its answer goes.
pub type Envelope = (Request, oneshot::Sender<Response>);

/// Requests waiting for the agent task; more connections wait in the kernel.
pub const QUEUE_DEPTH: usize = 64;

/// How long the accept loop pauses after a failed accept (out of file
/// descriptors, say), rather than spinning on the error.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the agent task takes what arrives on the socket.
#[derive(Clone)]
pub struct Queues {
    pub requests: mpsc::Sender<Envelope>,
    pub status: mpsc::Sender<StatusAsk>,
    /// The peer's name, the answer to [`Request::Ping`].
    pub peer_name: PeerName,
}

/// Binds the socket, readable and writable by root only.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by an agent that died; the lock held by the caller
    // guarantees no live agent owns it.
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, queues: Queues) {
    // Whoever runs the agent (root) may talk to it, nobody else: checked on
    // every connection, so the socket's mode (set just after it was bound)
    // is not the only guard.
    let owner = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match stream.peer_cred().map(|c| c.uid()) {
                Ok(uid) if uid == 0 || uid == owner => {
                    tokio::spawn(handle(stream, queues.clone()));
                }
                Ok(uid) => {
                    tracing::warn!(
                        uid,
                        "control socket: refused a connection from a non-root user"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot tell who connected; refused");
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, queues: Queues) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let response = match BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await
    {
        Err(e) => Err(format!("unreadable request: {e}")),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Err(format!("malformed request: {e}")),
            Ok(Request::Status) => ask_status(&queues.status).await,
            Ok(Request::Ping) => Ok(Reply::Message(queues.peer_name.to_string())),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if queues.requests.send((request, tx)).await.is_err() {
                    Err(SHUTTING_DOWN.to_string())
                } else {
                    rx.await.unwrap_or_else(|_| Err(SHUTTING_DOWN.to_string()))
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&response).expect("responses always serialise");
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        tracing::debug!(error = %e, "client went away before its reply");
    }
}

const SHUTTING_DOWN: &str = "the agent is shutting down";

async fn ask_status(status: &mpsc::Sender<StatusAsk>) -> Response {
    let (tx, rx) = oneshot::channel();
    status
        .send(tx)
        .await
        .map_err(|_| SHUTTING_DOWN.to_string())?;
    let snapshot = rx.await.map_err(|_| SHUTTING_DOWN.to_string())?;
    Ok(Reply::Status(snapshot))
}
