//! The UDP workload's socket buffers. iperf3 is run with `-w` (`SO_RCVBUF` /
//! `SO_SNDBUF` at both ends): with the 208 KiB default the receiving iperf3
//! overflowed whenever the scheduler let a burst pile up, on every overlay
//! path, so the figure measured the scheduler rather than the path. The
//! kernel caps those options at `net.core.rmem_max` / `wmem_max` (global, not
//! per network namespace); where they are lower than the buffer asked for,
//! they are raised for the run and put back afterwards.

use std::fs;

use anyhow::{Context as _, Result};

/// Socket buffer, in bytes, asked for by iperf3 in the UDP workload (`-w`).
pub(super) const UDP_SOCKET_BUFFER: u64 = 2 << 20;
const LIMITS: [&str; 2] = ["/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"];

/// Raised limits, restored on drop.
pub(super) struct BufferLimits {
    restore: Vec<(&'static str, String)>,
}

impl BufferLimits {
    /// Makes sure both limits allow [`UDP_SOCKET_BUFFER`].
    pub(super) fn raise() -> Result<Self> {
        let mut restore = Vec::new();
        for path in LIMITS {
            let old = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            let value: u64 = old
                .trim()
                .parse()
                .with_context(|| format!("parsing {path}"))?;
            if value < UDP_SOCKET_BUFFER {
                fs::write(path, UDP_SOCKET_BUFFER.to_string())
                    .with_context(|| format!("raising {path} for the run"))?;
                println!(
                    "    {path}: {value} -> {UDP_SOCKET_BUFFER} for the run (put back at the end)"
                );
                restore.push((path, old));
            }
        }
        Ok(Self { restore })
    }
}

impl Drop for BufferLimits {
    fn drop(&mut self) {
        for (path, old) in &self.restore {
            if let Err(e) = fs::write(path, old.trim()) {
                eprintln!("bench: cannot put {path} back to {}: {e}", old.trim());
            }
        }
    }
}
