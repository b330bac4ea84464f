//! What is measured on every path: iperf3 TCP with 1 and 4 streams, iperf3
//! UDP with 1400-byte datagrams, a small-packet forwarding rate (64-byte UDP
//! from several iperf3 clients at once), and ping round trips.

use super::buffers::UDP_SOCKET_BUFFER;

/// One kind of measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Workload {
    Tcp1,
    Tcp4,
    Udp1400,
    /// 64-byte UDP datagrams from [`SMALL_SENDERS`] clients in parallel:
    /// the packet rate a path forwards, where per-packet costs dominate.
    Udp64Rate,
    Ping,
}

/// Size of the UDP datagrams' payload: with the IP and UDP headers a 1428-byte
/// packet, which fits the overlay's 1450-byte MTU unfragmented.
pub(super) const UDP_PAYLOAD: u32 = 1400;
/// Size of the small datagrams' payload (a 92-byte IP packet).
pub(super) const SMALL_PAYLOAD: u32 = 64;
/// iperf3 clients sending small datagrams at once, each to its own server
/// (iperf3 3.12 runs every stream of one client on one thread, so `-P`
/// would not give parallel senders).
pub(super) const SMALL_SENDERS: u16 = 4;
/// Pings per run and the interval between them (100 x 10 ms).
pub(super) const PING_COUNT: u32 = 100;
pub(super) const PING_INTERVAL: &str = "0.01";

impl Workload {
    pub(super) const ALL: [Self; 5] = [
        Self::Tcp1,
        Self::Tcp4,
        Self::Udp1400,
        Self::Udp64Rate,
        Self::Ping,
    ];
    /// The throughput workloads (plotted in Gbit/s).
    pub(super) const THROUGHPUT: [Self; 3] = [Self::Tcp1, Self::Tcp4, Self::Udp1400];
    /// The packet-rate workloads (plotted in Mpps).
    pub(super) const PACKET_RATE: [Self; 1] = [Self::Udp64Rate];

    /// Key in the JSON file.
    pub(super) const fn key(self) -> &'static str {
        match self {
            Self::Tcp1 => "tcp_1_stream",
            Self::Tcp4 => "tcp_4_streams",
            Self::Udp1400 => "udp_1400",
            Self::Udp64Rate => "udp_64_packet_rate",
            Self::Ping => "ping_rtt",
        }
    }

    /// Name in tables, plots and progress lines.
    pub(super) const fn label(self) -> &'static str {
        match self {
            Self::Tcp1 => "TCP 1 stream",
            Self::Tcp4 => "TCP 4 streams",
            Self::Udp1400 => "UDP 1400 B",
            Self::Udp64Rate => "UDP 64 B × 4 senders",
            Self::Ping => "ping RTT",
        }
    }

    /// Unit of the measured value: Gbit/s received, millions of packets
    /// received per second, or a median RTT in ms.
    pub(super) const fn unit(self) -> &'static str {
        match self {
            Self::Ping => "ms",
            Self::Udp64Rate => "Mpps",
            _ => "Gbit/s",
        }
    }

    /// iperf3 clients run at once (each to its own server port).
    pub(super) const fn senders(self) -> u16 {
        match self {
            Self::Udp64Rate => SMALL_SENDERS,
            _ => 1,
        }
    }

    /// iperf3 client arguments after `-c ADDR -t SECONDS -J`; `None` for ping.
    /// UDP is offered without a rate limit (`-b 0`): the result is what
    /// arrives; with socket buffers of [`UDP_SOCKET_BUFFER`] (see `buffers`).
    /// For the packet rate, these are each client's arguments.
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
            Self::Udp64Rate => Some(vec![
                "-u".into(),
                "-b".into(),
                "0".into(),
                "-l".into(),
                SMALL_PAYLOAD.to_string(),
                "-w".into(),
                UDP_SOCKET_BUFFER.to_string(),
            ]),
            Self::Ping => None,
        }
    }
}
