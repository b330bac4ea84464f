//! Waiting for a condition with a deadline, and the interruption flag that
//! stops every wait (Ctrl-C in `cargo xtask demo`).
//!
//! Nothing in the harness sleeps to let something happen: it polls the
//! condition that says it has happened, and gives up at a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The pause between two probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Marks the run as interrupted; polling helpers then stop with an error so that
/// guards unwind and clean up. Async-signal-safe: call it from a signal handler.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error once [`interrupt`] was called.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Calls `probe` every 100 ms until it returns `Some`, or fails after `timeout`.
/// The pause is a polling interval, not a synchronisation: the condition decides.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    wait_for(what, timeout, || {
        probe().ok_or_else(|| anyhow::anyhow!("not yet"))
    })
}

/// Like [`wait_until`], with a probe that says why it is not there yet: on
/// timeout the error shows the last reason (e.g. the last `weave status`).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last probe: {last:#}");
        }
        sleep(POLL_INTERVAL);
    }
}
