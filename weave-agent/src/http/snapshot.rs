//! Where the HTTP endpoint gets its snapshots: from the agent task, through
//! a queue of their own, at most one request in flight and at most one per
//! [`FRESH_FOR`] whatever the number of HTTP clients, and never waiting
//! longer than [`TIMEOUT`]. So the endpoint cannot flood the agent, and a
//! busy agent makes the endpoint answer 503, not hang. (A `weave run`
//! waiting for the allocation ring does not make it busy: the agent answers
//! snapshots while it waits, which then count the pending allocation.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::status::{Status, StatusAsk};

/// A snapshot younger than this is served again rather than asked for.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a request waits for the agent (queue and answer).
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub status: Arc<Status>,
}

#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the agent did not answer within {TIMEOUT:?} (busy with another request?)")]
    Busy,
    #[error("the agent is shutting down")]
    Closed,
}

pub struct Snapshots {
    asks: mpsc::Sender<StatusAsk>,
    /// The last snapshot, held while one is asked for: other HTTP requests
    /// wait for that one instead of asking again.
    last: Mutex<Option<(Instant, Snapshot)>>,
}

impl Snapshots {
    pub fn new(asks: mpsc::Sender<StatusAsk>) -> Self {
        Self {
            asks,
            last: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<Snapshot, Unavailable> {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = tokio::time::timeout_at(deadline, self.last.lock())
            .await
            .map_err(|_| Unavailable::Busy)?;
        if let Some((at, snap)) = &*last
            && at.elapsed() < FRESH_FOR
        {
            return Ok(snap.clone());
        }
        let (tx, rx) = oneshot::channel();
        let ask = async {
            self.asks.send(tx).await.map_err(|_| Unavailable::Closed)?;
            rx.await.map_err(|_| Unavailable::Closed)
        };
        let status = match tokio::time::timeout_at(deadline, ask).await {
            Err(_) => return Err(Unavailable::Busy),
            Ok(result) => result?,
        };
        let snap = Snapshot {
            status: Arc::from(status),
        };
        *last = Some((Instant::now(), snap.clone()));
        drop(last);
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn one_request_to_the_agent_per_period_and_busy_after_the_timeout() {
        let (tx, mut rx) = mpsc::channel::<StatusAsk>(4);
        let snapshots = Arc::new(Snapshots::new(tx));
        let agent = tokio::spawn(async move {
            let mut served = 0;
            while let Some(reply) = rx.recv().await {
                served += 1;
                if served == 3 {
                    // A busy agent: never answers this one.
                    std::mem::forget(reply);
                    continue;
                }
                let mut st = crate::status::tests::sample();
                st.containers = served;
                let _ = reply.send(Box::new(st));
            }
            served
        });
        let many = futures::future::join_all((0..50).map(|_| snapshots.get())).await;
        assert!(many.iter().all(Result::is_ok));
        assert_eq!(many[0].as_ref().unwrap().status.containers, 1);
        tokio::time::advance(FRESH_FOR).await;
        let second = snapshots.get().await.unwrap();
        assert_eq!(second.status.containers, 2, "a new snapshot once stale");
        tokio::time::advance(FRESH_FOR).await;
        assert!(matches!(snapshots.get().await, Err(Unavailable::Busy)));
        drop(snapshots);
        assert_eq!(agent.await.unwrap(), 3, "50 concurrent requests made one");
    }
}
