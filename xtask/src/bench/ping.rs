//! Reading `ping` output (iputils): one round-trip time per reply.

use anyhow::{Context as _, Result, ensure};

use super::stats;

/// What one `ping -c N` run saw.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PingResult {
    /// Round-trip time of every reply, in milliseconds, in order.
    pub rtts_ms: Vec<f64>,
    pub transmitted: u32,
}

impl PingResult {
    pub(super) fn median_ms(&self) -> Option<f64> {
        stats::median(&self.rtts_ms)
    }

    /// Requests without a reply, in percent.
    pub(super) fn lost_percent(&self) -> f64 {
        if self.transmitted == 0 {
            return 0.0;
        }
        let lost = self.transmitted.saturating_sub(self.rtts_ms.len() as u32);
        100.0 * f64::from(lost) / f64::from(self.transmitted)
    }
}

/// Parses iputils ping output: `... time=0.045 ms` per reply and the
/// `N packets transmitted, M received` summary. At least one reply is required.
pub(super) fn parse(output: &str) -> Result<PingResult> {
    let rtts_ms = output
        .lines()
        .filter_map(|l| l.split_once(" time=").map(|(_, t)| t))
        .map(|t| {
            let number = t.trim_end_matches(" ms").trim();
            number
                .parse::<f64>()
                .with_context(|| format!("round-trip time {t:?} in ping output"))
        })
        .collect::<Result<Vec<f64>>>()?;
    let transmitted = output
        .lines()
        .find_map(|l| l.split_once(" packets transmitted"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .context("no `packets transmitted` summary in ping output")?;
    ensure!(
        !rtts_ms.is_empty(),
        "no ping reply (of {transmitted} sent):\n{output}"
    );
    Ok(PingResult {
        rtts_ms,
        transmitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "PING 10.2.1.2 (10.2.1.2) 56(84) bytes of data.
64 bytes from 10.2.1.2: icmp_seq=1 ttl=64 time=0.081 ms
64 bytes from 10.2.1.2: icmp_seq=2 ttl=64 time=0.032 ms
64 bytes from 10.2.1.2: icmp_seq=4 ttl=64 time=0.045 ms
64 bytes from 10.2.1.2: icmp_seq=5 ttl=64 time=1.20 ms

--- 10.2.1.2 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 41ms
rtt min/avg/max/mdev = 0.032/0.339/1.200/0.497 ms
";

    #[test]
    fn reads_every_reply_and_the_loss() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.rtts_ms, [0.081, 0.032, 0.045, 1.2]);
        assert_eq!(r.transmitted, 5);
        assert!((r.median_ms().unwrap() - 0.063).abs() < 1e-9);
        assert!((r.lost_percent() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn no_reply_is_an_error() {
        let out = "PING 10.2.1.2 (10.2.1.2) 56(84) bytes of data.\n\n--- 10.2.1.2 ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss, time 2030ms\n";
        assert!(parse(out).is_err());
        assert!(parse("").is_err());
    }
}
