//! The read-only HTTP endpoint (`--status-addr`, Weave's port 6782):
//! `weave status` as text or JSON, the JSON report, Prometheus metrics and
//! a live topology page. It never takes a command (GET and HEAD only) and
//! cannot hold up the agent: snapshots come through [`snapshot`] (shared,
//! rate-limited, with a timeout), connections are bounded in number and in
//! time, and a refused connection costs an accept and a close.

pub mod metrics;
pub mod route;
pub mod snapshot;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use self::route::{Format, Refusal, Route, Section};
use self::snapshot::{Snapshot, Snapshots};
use crate::status::Status;

/// Connections served at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer, however slowly its client reads (keep-alive
/// clients such as Prometheus simply reconnect).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The topology page: HTML, CSS and JavaScript in one file, no fetches but
/// `/report`.
const PAGE: &str = include_str!("page.html");

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, snapshots: Arc<Snapshots>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait a little rather
                // than spin.
                tracing::warn!(error = %e, "status endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "status endpoint: too many connections; closed one");
            drop(stream);
            continue;
        };
        let snapshots = Arc::clone(&snapshots);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let snapshots = Arc::clone(&snapshots);
                async move { Ok::<_, Infallible>(answer(&req, &snapshots).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "status endpoint: connection"),
                Err(_) => tracing::debug!(%peer, "status endpoint: connection outlived its time"),
            }
            drop(slot);
        });
    }
}

async fn answer(req: &Request<Incoming>, snapshots: &Snapshots) -> Response<Full<Bytes>> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let route = match route::route(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
        accept,
    ) {
        Ok(route) => route,
        Err(refusal) => return refused(&refusal),
    };
    if route == Route::Page {
        return page();
    }
    let snap = match snapshots.get().await {
        Ok(snap) => snap,
        Err(e) => {
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            );
        }
    };
    match render(route, &snap, accept) {
        Ok((content_type, body)) => respond(StatusCode::OK, content_type, body),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("encoding the answer: {e}\n"),
        ),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// The body of a route that needs a snapshot.
pub fn render(
    route: Route,
    snap: &Snapshot,
    accept: Option<&str>,
) -> serde_json::Result<(&'static str, String)> {
    let st: &Status = &snap.status;
    Ok(match route {
        Route::Page => ("text/html; charset=utf-8", PAGE.to_string()),
        Route::Metrics => {
            let text = metrics::render(st);
            if metrics::accepts_openmetrics(accept) {
                (metrics::OPENMETRICS, text)
            } else {
                (metrics::PROMETHEUS_TEXT, metrics::to_prometheus_text(&text))
            }
        }
        Route::Report => (JSON, json(st)?),
        Route::Status(section, Format::Json) => (
            JSON,
            match section {
                None => json(st)?,
                Some(Section::Peers) => json(&st.mesh.peers)?,
                Some(Section::Connections) => json(&st.connections_section())?,
                Some(Section::Targets) => json(&st.mesh.targets)?,
                Some(Section::Ipam) => json(&st.ipam)?,
                Some(Section::Dataplane) => json(&st.dataplane_section())?,
                Some(Section::Dns) => json(&st.dns)?,
            },
        ),
        Route::Status(section, Format::Text) => (
            TEXT,
            match section {
                None => st.render(),
                Some(Section::Peers) => st.mesh.render_peers(),
                Some(Section::Connections) => st.mesh.render_connections(),
                Some(Section::Targets) => st.mesh.render_targets(),
                Some(Section::Ipam) => st.ipam.render(),
                Some(Section::Dataplane) => st.render_dataplane(),
                Some(Section::Dns) => st.render_dns(),
            },
        ),
    })
}

fn json(value: &impl serde::Serialize) -> serde_json::Result<String> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

fn page() -> Response<Full<Bytes>> {
    let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string());
    // The page may run its own inline script and style and fetch from this
    // endpoint, nothing else: no CDN, no third party, even if edited.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    resp
}

fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    match refusal {
        Refusal::Method => {
            let mut resp = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "read-only endpoint: GET and HEAD only\n".into(),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            resp
        }
        Refusal::NotFound => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /, /status, /status/{peers,connections,targets,ipam,dataplane,dns}, /report, /metrics\n".into(),
        ),
        Refusal::BadQuery(why) => respond(StatusCode::BAD_REQUEST, TEXT, format!("{why}\n")),
    }
}

fn respond(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer is a snapshot of now.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
