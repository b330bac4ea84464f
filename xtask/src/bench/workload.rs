//! What is measured on every path: iperf3 TCP with 1 and 4 streams, iperf3
//! UDP with 1400-byte datagrams, and ping round trips.

use super::buffers::UDP_SOCKET_BUFFER;

/// One kind of measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    Tcp1,
    Tcp4,
    Udp1400,
    Ping,
}

/// Size of the UDP datagrams' payload: with the IP and UDP headers a 1428-byte
/// packet, which fits the overlay's 1450-byte MTU unfragmented.
pub const UDP_PAYLOAD: u32 = 1400;
/// Pings per run and the interval between them (100 x 10 ms).
pub const PING_COUNT: u32 = 100;
pub const PING_INTERVAL: &str = "0.01";

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Tcp1,
        Workload::Tcp4,
        Workload::Udp1400,
        Workload::Ping,
    ];
    /// The throughput workloads (plotted).
    pub const THROUGHPUT: [Workload; 3] = [Workload::Tcp1, Workload::Tcp4, Workload::Udp1400];

    /// Key in the JSON file.
    pub fn key(self) -> &'static str {
        match self {
            Workload::Tcp1 => "tcp_1_stream",
            Workload::Tcp4 => "tcp_4_streams",
            Workload::Udp1400 => "udp_1400",
            Workload::Ping => "ping_rtt",
        }
    }

    /// Name in tables, plots and progress lines.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Tcp1 => "TCP 1 stream",
            Workload::Tcp4 => "TCP 4 streams",
            Workload::Udp1400 => "UDP 1400 B",
            Workload::Ping => "ping RTT",
        }
    }

    /// Unit of the measured value: Gbit/s received, or a median RTT in ms.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Ping => "ms",
            _ => "Gbit/s",
        }
    }

    /// iperf3 client arguments after `-c ADDR -t SECONDS -J`; `None` for ping.
    /// UDP is offered without a rate limit (`-b 0`): the result is what
    /// arrives; with socket buffers of [`UDP_SOCKET_BUFFER`] (see `buffers`).
    pub fn iperf_args(self) -> Option<Vec<String>> {
        match self {
            Workload::Tcp1 => Some(vec![]),
            Workload::Tcp4 => Some(vec!["-P".into(), "4".into()]),
            Workload::Udp1400 => Some(vec![
                "-u".into(),
                "-b".into(),
                "0".into(),
                "-l".into(),
                UDP_PAYLOAD.to_string(),
                "-w".into(),
                UDP_SOCKET_BUFFER.to_string(),
            ]),
            Workload::Ping => None,
        }
    }
}
