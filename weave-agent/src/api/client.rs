//! The CLI's side of the control socket: blocking, one request per connection.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{MAX_REPLY_BYTES, Reply, Request, Response};

/// Long enough for Docker to create and start a container, behind the
/// requests queued before it (each waits its turn at the agent).
const REPLY_TIMEOUT: Duration = Duration::from_mins(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the agent is not running (nothing answers on {socket}); start it with 'weave launch'")]
    NotRunning { socket: String },
    #[error("talking to the agent on {socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("the agent sent a reply this CLI does not understand: {0}")]
    Garbled(String),
    /// The agent refused the request; its message is for the user.
    #[error("{0}")]
    Refused(String),
}

/// Is an agent answering on `socket`?
pub fn is_running(socket: &Path) -> bool {
    // A refusal or a reply this CLI cannot read (another version) still
    // comes from an agent.
    matches!(
        call(socket, &Request::Ping),
        Ok(_) | Err(ClientError::Refused(_) | ClientError::Garbled(_))
    )
}

pub fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    let socket_name = socket.display().to_string();
    let io = |source: std::io::Error| ClientError::Io {
        socket: socket_name.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::NotRunning {
            socket: socket_name.clone(),
        },
        _ => io(e),
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).expect("requests always serialise");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;

    let mut reply = String::new();
    BufReader::new(stream.take(MAX_REPLY_BYTES))
        .read_line(&mut reply)
        .map_err(io)?;
    if reply.is_empty() {
        return Err(ClientError::Garbled(
            "connection closed without a reply".into(),
        ));
    }
    if !reply.ends_with('\n') && reply.len() as u64 >= MAX_REPLY_BYTES {
        return Err(ClientError::Garbled(format!(
            "the reply is longer than {MAX_REPLY_BYTES} bytes"
        )));
    }
    let response: Response =
        serde_json::from_str(&reply).map_err(|e| ClientError::Garbled(e.to_string()))?;
    response.map_err(ClientError::Refused)
}
