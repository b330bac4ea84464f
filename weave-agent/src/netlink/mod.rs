//! Links and addresses through rtnetlink: the bridge, the datapath veth pair,
//! container ports. The product never shells out to `ip`.

mod container;
mod ethtool;
mod garp;
mod links;

pub use container::{
    GuestConfig, GuestLink, NetnsRef, add_guest_addresses, add_guest_dns_route, add_guest_routes,
    announce_by_mac, announce_guest_addresses, configure_guest, del_guest_addresses, guest_link,
    guest_state,
};
pub use ethtool::{TxOffloads, disable_tx_offloads, keep_tcp_segmentation_only, tx_offloads};
pub use links::Netlink;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{op} {iface}: {source}")]
    Op {
        op: &'static str,
        iface: String,
        source: rtnetlink::Error,
    },
    #[error("no interface named {0}")]
    NoSuchLink(String),
    #[error("entering {netns}: {reason}")]
    Netns { netns: NetnsRef, reason: String },
}
