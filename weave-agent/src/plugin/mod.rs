//! The Docker network and IPAM plugin (libnetwork's remote driver API, a
//! legacy plugin Docker finds by its socket in `/run/docker/plugins`):
//! `docker network create -d weave --ipam-driver weave` and `docker run
//! --net`. The agent serves it on its own Unix socket; calls that need the
//! ring, the bridge or the records go to the agent task through the same
//! queue as the CLI's requests, so containers Docker attaches get the same
//! ports, addresses and isolation as `weave attach`.
//!
//! Swarm uses only managed (v2) plugins, which Docker runs in containers of
//! their own: `weave plugin-proxy` is that plugin's process. It serves the
//! same protocol with a global scope, and sends the calls that need the
//! agent over the agent's control socket (mounted into the plugin).

pub mod call;
pub mod protocol;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, oneshot};

use self::protocol::{Action, Refusal, Scope};
use crate::api::server::Queues;
use crate::api::{MAX_REQUEST_BYTES, Reply};

/// Connections served at once; Docker makes one per call.
const MAX_CONNECTIONS: usize = 32;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the plugin socket, for root only (dockerd runs as root), as the
/// control socket is bound.
pub use crate::api::server::bind;

/// Where the calls that need the agent go.
#[derive(Clone)]
pub enum Backend {
    /// The agent's own request queue: the legacy plugin, local scope.
    Agent(Queues),
    /// The agent's control socket, from `weave plugin-proxy` inside the
    /// managed plugin: global scope.
    Socket(Arc<std::path::PathBuf>),
}

impl Backend {
    const fn scope(&self) -> Scope {
        match self {
            Self::Agent(_) => Scope::Local,
            Self::Socket(_) => Scope::Global,
        }
    }
}

pub async fn serve(listener: UnixListener, backend: Backend) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "plugin socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("plugin socket: too many connections; closed one");
            continue;
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(answer(req, &backend).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "plugin socket: connection");
            }
            drop(slot);
        });
    }
}

async fn answer(req: Request<Incoming>, backend: &Backend) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let result = if req.method() == Method::POST {
        match Limited::new(req.into_body(), MAX_REQUEST_BYTES as usize)
            .collect()
            .await
        {
            Ok(body) => call(&path, &body.to_bytes(), backend).await,
            Err(e) => Err(Refusal {
                status: 400,
                message: format!("{path}: unreadable request: {e}"),
            }),
        }
    } else {
        Err(Refusal {
            status: 405,
            message: format!("{path}: plugin calls are POSTs"),
        })
    };
    match result {
        Ok(value) => {
            tracing::debug!(call = %path, "docker plugin");
            json_response(StatusCode::OK, &value)
        }
        Err(refusal) => {
            tracing::info!(call = %path, error = %refusal.message, "docker plugin: refused");
            let status =
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(status, &refusal.body())
        }
    }
}

async fn call(path: &str, body: &[u8], backend: &Backend) -> Result<Value, Refusal> {
    let call = match protocol::decode(path, body, backend.scope())? {
        Action::Answer(value) => return Ok(value),
        Action::Agent(call) => call,
    };
    let failed = |message: String| Refusal {
        status: 500,
        message,
    };
    let queues = match backend {
        Backend::Agent(queues) => queues,
        Backend::Socket(socket) => {
            let socket = Arc::clone(socket);
            let request = crate::api::Request::DockerPlugin(call.clone());
            let reply =
                tokio::task::spawn_blocking(move || crate::api::client::call(&socket, &request))
                    .await
                    .map_err(|e| failed(format!("asking the agent: {e}")))?;
            return match reply {
                Ok(Reply::DockerPlugin(answer)) => Ok(protocol::reply(&call, answer)),
                Ok(other) => Err(failed(format!(
                    "unexpected answer from the agent: {other:?}"
                ))),
                Err(e) => Err(failed(e.to_string())),
            };
        }
    };
    let (tx, rx) = oneshot::channel();
    queues
        .requests
        .send((crate::api::Request::DockerPlugin(call.clone()), tx))
        .await
        .map_err(|_| failed("the weave agent is shutting down".into()))?;
    match rx.await {
        Ok(Ok(Reply::DockerPlugin(answer))) => Ok(protocol::reply(&call, answer)),
        Ok(Ok(other)) => Err(failed(format!(
            "unexpected answer from the agent: {other:?}"
        ))),
        Ok(Err(message)) => Err(failed(message)),
        Err(_) => Err(failed("the weave agent is shutting down".into())),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("JSON values always serialise");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protocol::CONTENT_TYPE),
    );
    response
}
