//! Where the HTTP endpoint gets its snapshots: from the agent task, through
//! the same queue as the control socket's `Status` request, at most one
//! request in flight and at most one per [`FRESH_FOR`] whatever the number
//! of HTTP clients, and never waiting longer than [`TIMEOUT`]. So the
//! endpoint cannot flood the agent, and a busy agent (a `weave run` waiting
//! for the allocation ring) makes the endpoint answer 503, not hang.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::api::server::Envelope;
use crate::api::{Reply, Request};
use crate::mesh::ConnectionState;
use crate::status::Status;

/// A snapshot younger than this is served again rather than asked for.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a request waits for the agent (queue and answer).
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub status: Arc<Status>,
    /// Established connections seen to end since the endpoint started.
    pub terminations: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the agent did not answer within {TIMEOUT:?} (busy with another request?)")]
    Busy,
    #[error("the agent is shutting down")]
    Closed,
    #[error("the agent refused: {0}")]
    Refused(String),
}

pub struct Snapshots {
    requests: mpsc::Sender<Envelope>,
    /// Held while a snapshot is asked for: other HTTP requests wait for
    /// that one instead of asking again.
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    taken: Option<(Instant, Snapshot)>,
    /// The peers we had established connections to in the last snapshot.
    established: BTreeSet<String>,
    terminations: u64,
}

impl Snapshots {
    pub fn new(requests: mpsc::Sender<Envelope>) -> Self {
        Self {
            requests,
            last: Mutex::new(Last::default()),
        }
    }

    pub async fn get(&self) -> Result<Snapshot, Unavailable> {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = tokio::time::timeout_at(deadline, self.last.lock())
            .await
            .map_err(|_| Unavailable::Busy)?;
        if let Some((at, snap)) = &last.taken
            && at.elapsed() < FRESH_FOR
        {
            return Ok(snap.clone());
        }
        let (tx, rx) = oneshot::channel();
        let ask = async {
            self.requests
                .send((Request::Status, tx))
                .await
                .map_err(|_| Unavailable::Closed)?;
            rx.await.map_err(|_| Unavailable::Closed)
        };
        let status = match tokio::time::timeout_at(deadline, ask).await {
            Err(_) => return Err(Unavailable::Busy),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Ok(Reply::Status(status)))) => status,
            Ok(Ok(Ok(_))) => return Err(Unavailable::Refused("unexpected reply".into())),
            Ok(Ok(Err(e))) => return Err(Unavailable::Refused(e)),
        };
        let now = established(&status);
        last.terminations += ended(&last.established, &now);
        last.established = now;
        let snap = Snapshot {
            status: Arc::from(status),
            terminations: last.terminations,
        };
        last.taken = Some((Instant::now(), snap.clone()));
        drop(last);
        Ok(snap)
    }
}

/// The peers `status` has an established connection to.
fn established(status: &Status) -> BTreeSet<String> {
    status
        .mesh
        .connections
        .iter()
        .filter(|c| c.state == ConnectionState::Established)
        .map(|c| c.peer.map_or_else(|| c.address.clone(), |p| p.to_string()))
        .collect()
}

/// Connections in `before` and not in `after`: those that ended. One that
/// ends and comes back between two snapshots is not seen (the mesh keeps
/// no count of its own).
fn ended(before: &BTreeSet<String>, after: &BTreeSet<String>) -> u64 {
    before.difference(after).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_goes_away_is_a_termination() {
        let set = |v: &[&str]| v.iter().map(ToString::to_string).collect::<BTreeSet<_>>();
        assert_eq!(ended(&set(&["a", "b"]), &set(&["a", "b", "c"])), 0);
        assert_eq!(ended(&set(&["a", "b"]), &set(&["c"])), 2);
        assert_eq!(ended(&set(&[]), &set(&["c"])), 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn one_request_to_the_agent_per_period_and_busy_after_the_timeout() {
        let (tx, mut rx) = mpsc::channel::<Envelope>(4);
        let snapshots = Arc::new(Snapshots::new(tx));
        let agent = tokio::spawn(async move {
            let mut served = 0;
            while let Some((_, reply)) = rx.recv().await {
                served += 1;
                if served == 3 {
                    // A busy agent: never answers this one.
                    std::mem::forget(reply);
                    continue;
                }
                let mut st = crate::status::tests::sample();
                if served == 2 {
                    st.mesh.connections.clear();
                }
                let _ = reply.send(Ok(Reply::Status(Box::new(st))));
            }
            served
        });
        let many = futures::future::join_all((0..50).map(|_| snapshots.get())).await;
        assert!(many.iter().all(Result::is_ok));
        assert_eq!(many[0].as_ref().unwrap().terminations, 0);
        tokio::time::advance(FRESH_FOR).await;
        let second = snapshots.get().await.unwrap();
        assert!(
            second.terminations > 0,
            "the established connections went away"
        );
        tokio::time::advance(FRESH_FOR).await;
        assert!(matches!(snapshots.get().await, Err(Unavailable::Busy)));
        drop(snapshots);
        assert_eq!(agent.await.unwrap(), 3, "50 concurrent requests made one");
    }
}
