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
}

impl IperfResult {
    pub(super) fn received_gbit(&self) -> f64 {
        self.received_bytes as f64 * 8.0 / 1e9
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
    Ok(IperfResult {
        received_bps: number(received, "bits_per_second")?,
        received_bytes: number(received, "bytes")? as u64,
        sent_bps: number(sent, "bits_per_second")?,
        lost_percent: if udp {
            Some(number(received, "lost_percent")?)
        } else {
            None
        },
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
