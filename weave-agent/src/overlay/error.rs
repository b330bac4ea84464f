use std::net::SocketAddr;

/// Why a data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("no network interface named {iface}")]
    NoSuchInterface { iface: String },
    #[error("cannot {op} a packet socket on {iface}")]
    PacketSocket {
        op: &'static str,
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {op} the UDP socket on {addr}")]
    Udp {
        op: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("MTU {mtu} is outside {min}..={max}")]
    Mtu { mtu: u32, min: u32, max: u32 },
    #[error("cannot start the {what}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {op} the AF_XDP socket on {iface}")]
    Xsk {
        op: &'static str,
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("MTU {mtu} is too large for AF_XDP frames (at most {max})")]
    XskMtu { mtu: u32, max: u32 },
    #[error("cannot register the AF_XDP socket with the datapath program")]
    XskMap {
        #[source]
        source: aya::maps::MapError,
    },
}
