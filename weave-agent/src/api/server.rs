//! The agent's side of the control socket. Each connection carries one
//! request; requests go to the agent task in order, through a bounded queue.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::{MAX_MESSAGE_BYTES, Request, Response};

/// A request and where its answer goes.
pub type Envelope = (Request, oneshot::Sender<Response>);

/// Requests waiting for the agent task; more connections wait in the kernel.
pub const QUEUE_DEPTH: usize = 64;

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

pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Envelope>) {
    // Whoever runs the agent (root) may talk to it, nobody else: checked on
    // every connection, so the socket's mode (set just after it was bound)
    // is not the only guard.
    let owner = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match stream.peer_cred().map(|c| c.uid()) {
                Ok(uid) if uid == 0 || uid == owner => {
                    tokio::spawn(handle(stream, requests.clone()));
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
            }
        }
    }
}

async fn handle(stream: UnixStream, requests: mpsc::Sender<Envelope>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let response = match BufReader::new(read.take(MAX_MESSAGE_BYTES))
        .read_line(&mut line)
        .await
    {
        Err(e) => Err(format!("unreadable request: {e}")),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Err(format!("malformed request: {e}")),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    Err("the agent is shutting down".to_string())
                } else {
                    rx.await
                        .unwrap_or_else(|_| Err("the agent is shutting down".to_string()))
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
