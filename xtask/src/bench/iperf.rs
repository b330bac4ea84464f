//! Reading iperf3's JSON report (`iperf3 -c ... -J`).

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// What one iperf3 client run measured, as seen by the receiver.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IperfResult {
    /// Bits per second that arrived (the receiver's sum over all streams).
    pub received_bps: f64,
    /// Bytes that arrived.
    pub received_bytes: u64,
    /// Bits per second the sender sent.
    pub sent_bps: f64,
    /// UDP only: datagrams lost, in percent of those sent.
    pub lost_percent: Option<f64>,
    /// UDP only: datagrams that arrived (sent less lost).
    pub received_packets: Option<u64>,
    /// UDP only: datagrams that arrived per second of the receiver's run.
    pub received_pps: Option<f64>,
}

impl IperfResult {
    pub(super) fn received_gbit(&self) -> f64 {
        self.received_bytes as f64 * 8.0 / 1e9
    }

    /// What several clients that ran at once measured together: rates and
    /// counts added up, the loss over all datagrams sent.
    pub(super) fn together(results: &[Self]) -> Option<Self> {
        let first = results.first()?;
        let sum = |f: fn(&Self) -> f64| results.iter().map(f).sum::<f64>();
        let received_packets = results.iter().map(|r| r.received_packets).sum();
        let lost_percent = first.lost_percent.and_then(|_| {
            // Each client's datagrams sent, from its count and loss.
            let (mut sent, mut lost) = (0.0, 0.0);
            for r in results {
                let got = r.received_packets? as f64;
                let lost_share = r.lost_percent? / 100.0;
                let offered = if lost_share < 1.0 {
                    got / (1.0 - lost_share)
                } else {
                    got
                };
                sent += offered;
                lost += offered - got;
            }
            Some(if sent > 0.0 { 100.0 * lost / sent } else { 0.0 })
        });
        Some(Self {
            received_bps: sum(|r| r.received_bps),
            received_bytes: results.iter().map(|r| r.received_bytes).sum(),
            sent_bps: sum(|r| r.sent_bps),
            lost_percent,
            received_packets,
            received_pps: results.iter().map(|r| r.received_pps).sum(),
        })
    }
}

/// Parses the client's JSON report; iperf3's own error (`"error": ...`) becomes ours.
pub(super) fn parse(json: &str) -> Result<IperfResult> {
    let report: Value = serde_json::from_str(json).context("iperf3 did not print JSON")?;
    if let Some(error) = report.get("error").and_then(Value::as_str) {
        bail!("iperf3: {error}");
    }
    let end = report.get("end").context("no `end` in iperf3's report")?;
    let received = end
        .get("sum_received")
        .context("no `end.sum_received` in iperf3's report")?;
    let sent = end
        .get("sum_sent")
        .context("no `end.sum_sent` in iperf3's report")?;
    let number = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("no number `{key}` in iperf3's report"))
    };
    let udp = report
        .pointer("/start/test_start/protocol")
        .and_then(Value::as_str)
        == Some("UDP");
    let (lost_percent, received_packets, received_pps) = if udp {
        // `packets` counts up to the highest sequence number seen: the
        // datagrams sent; those that arrived are that less the lost ones.
        let packets = number(received, "packets")? - number(received, "lost_packets")?;
        let seconds = number(received, "seconds")?;
        (
            Some(number(received, "lost_percent")?),
            Some(packets.max(0.0) as u64),
            Some(if seconds > 0.0 {
                packets / seconds
            } else {
                0.0
            }),
        )
    } else {
        (None, None, None)
    };
    Ok(IperfResult {
        received_bps: number(received, "bits_per_second")?,
        received_bytes: number(received, "bytes")? as u64,
        sent_bps: number(sent, "bits_per_second")?,
        lost_percent,
        received_packets,
        received_pps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real reports of iperf3 3.12 over loopback, intervals removed.
    const TCP: &str = include_str!("testdata/iperf3-tcp1.json");
    const UDP: &str = include_str!("testdata/iperf3-udp.json");

    #[test]
    fn reads_what_a_tcp_receiver_got() {
        let r = parse(TCP).unwrap();
        assert_eq!(r.received_bytes, 1_424_752_640);
        assert!((r.received_bps - 11_393_087_912.933_7).abs() < 1e-3);
        assert!((r.sent_bps - 11_394_101_549.067122).abs() < 1e-3);
        assert_eq!(r.lost_percent, None);
        assert!((r.received_gbit() - 11.398_021_12).abs() < 1e-6);
    }

    #[test]
    fn reads_udp_loss_and_the_rate_that_arrived() {
        let r = parse(UDP).unwrap();
        assert_eq!(r.received_bytes, 129_155_600);
        assert!((r.received_bps - 1_033_109_462.660_391_3).abs() < 1e-3);
        assert!((r.sent_bps - 1_405_107_036.574_829_6).abs() < 1e-3);
        assert!((r.lost_percent.unwrap() - 26.467_399_968).abs() < 1e-6);
        // 125460 sent, 33206 lost: 92254 of 1400 bytes arrived in 1.000131 s.
        assert_eq!(r.received_packets, Some(92_254));
        assert_eq!(r.received_bytes, 92_254 * 1400);
        assert!((r.received_pps.unwrap() - 92_254.0 / 1.000_131).abs() < 1e-6);
        assert_eq!(parse(TCP).unwrap().received_packets, None);
    }

    #[test]
    fn clients_that_ran_together_add_up() {
        let one = parse(UDP).unwrap();
        let mut other = one.clone();
        other.received_packets = Some(100_000);
        other.lost_percent = Some(0.0);
        other.received_pps = Some(100_000.0);
        let both = IperfResult::together(&[one.clone(), other]).unwrap();
        assert_eq!(both.received_packets, Some(192_254));
        assert_eq!(both.received_bytes, 2 * one.received_bytes);
        assert!(
            (both.received_pps.unwrap() - (one.received_pps.unwrap() + 100_000.0)).abs() < 1e-6
        );
        // 33206 lost of 125460 + 100000 sent.
        let loss = both.lost_percent.unwrap();
        assert!((loss - 100.0 * 33_206.0 / 225_460.0).abs() < 1e-3, "{loss}");
        assert_eq!(IperfResult::together(&[]), None);
        let tcp = parse(TCP).unwrap();
        let tcps = IperfResult::together(&[tcp.clone(), tcp]).unwrap();
        assert_eq!(tcps.lost_percent, None);
        assert_eq!(tcps.received_packets, None);
    }

    #[test]
    fn iperf3_errors_and_garbage_are_errors() {
        let e = parse(r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}"#)
            .unwrap_err();
        assert_eq!(
            format!("{e}"),
            "iperf3: unable to connect to server: Connection refused"
        );
        assert!(parse("iperf3: error").is_err());
        assert!(parse(r#"{"end": {"sum_sent": {"bits_per_second": 1}}}"#).is_err());
    }
}
