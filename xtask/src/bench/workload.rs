//! What is measured on every path: iperf3 TCP with 1 and 4 streams, iperf3
//! UDP with 1400-byte datagrams, and ping round trips.

use super::buffers::UDP_SOCKET_BUFFER;

/// One kind of measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Workload {
    Tcp1,
    Tcp4,
    Udp1400,
    Ping,
}

/// Size of the UDP datagrams' payload: with the IP and UDP headers a 1428-byte
/// packet, which fits the overlay's 1450-byte MTU unfragmented.
pub(super) const UDP_PAYLOAD: u32 = 1400;
/// Pings per run and the interval between them (100 x 10 ms).
pub(super) const PING_COUNT: u32 = 100;
pub(super) const PING_INTERVAL: &str = "0.01";

impl Workload {
    pub(super) const ALL: [Self; 4] = [Self::Tcp1, Self::Tcp4, Self::Udp1400, Self::Ping];
    /// The throughput workloads (plotted).
    pub(super) const THROUGHPUT: [Self; 3] = [Self::Tcp1, Self::Tcp4, Self::Udp1400];

    /// Key in the JSON file.
    pub(super) const fn key(self) -> &'static str {
        match self {
            Self::Tcp1 => "tcp_1_stream",
            Self::Tcp4 => "tcp_4_streams",
            Self::Udp1400 => "udp_1400",
            Self::Ping => "ping_rtt",
        }
    }

    /// Name in tables, plots and progress lines.
    pub(super) const fn label(self) -> &'static str {
        match self {
            Self::Tcp1 => "TCP 1 stream",
            Self::Tcp4 => "TCP 4 streams",
            Self::Udp1400 => "UDP 1400 B",
            Self::Ping => "ping RTT",
        }
    }

    /// Unit of the measured value: Gbit/s received, or a median RTT in ms.
    pub(super) const fn unit(self) -> &'static str {
        match self {
            Self::Ping => "ms",
            _ => "Gbit/s",
        }
    }

    /// iperf3 client arguments after `-c ADDR -t SECONDS -J`; `None` for ping.
    /// UDP is offered without a rate limit (`-b 0`): the result is what
    /// arrives; with socket buffers of [`UDP_SOCKET_BUFFER`] (see `buffers`).
    pub(super) fn iperf_args(self) -> Option<Vec<String>> {
        match self {
            Self::Tcp1 => Some(vec![]),
            Self::Tcp4 => Some(vec!["-P".into(), "4".into()]),
            Self::Udp1400 => Some(vec![
                "-u".into(),
                "-b".into(),
                "0".into(),
                "-l".into(),
                UDP_PAYLOAD.to_string(),
                "-w".into(),
                UDP_SOCKET_BUFFER.to_string(),
            ]),
            Self::Ping => None,
        }
    }
}
