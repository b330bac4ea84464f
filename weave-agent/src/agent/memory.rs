//! How the agent uses glibc's allocator: one arena, and freed memory given
//! back to the kernel now and then.
//!
//! Bursts of control traffic (joining a mesh of a hundred, a tenth of it
//! restarting at once) decode many large messages together; their memory is
//! freed soon after, but malloc keeps it resident. Measured with
//! `cargo xtask scale` at a hundred peers, agents that joined late held
//! 45-50 MiB at rest against 28-29 MiB for the others, the difference being
//! free heap; trimmed every ten seconds, 21-22.5 MiB all.

use std::time::Duration;

/// How often freed heap goes back to the kernel. A trim walks malloc's free
/// lists once (about a millisecond); every ten seconds its cost is lost in
/// the noise.
pub(super) const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Asks glibc's malloc for one arena instead of up to eight per core. Each
/// thread that allocates would otherwise get an arena of its own, whose
/// freed memory stays resident: at rest in a 40-peer mesh the agent kept
/// 31 MiB with them and 27 MiB with one (`cargo xtask scale`). The agent's
/// threads do not allocate per packet, so they do not contend for it.
pub(super) fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator; it is called
        // before the agent starts any thread, and a refusal (0) leaves
        // malloc as it was, which is fine.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// Gives the kernel back the pages of the heap that hold no live
/// allocation, every [`TRIM_EVERY`], for as long as the agent runs.
pub(super) async fn give_back_freed_memory() {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + TRIM_EVERY, TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(target_env = "gnu")]
        {
            // SAFETY: malloc_trim only releases free memory of the
            // allocator, under its own lock; it is safe to call from any
            // thread at any time.
            let _ = unsafe { libc::malloc_trim(0) };
        }
    }
}
