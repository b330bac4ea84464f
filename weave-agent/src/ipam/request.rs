//! The address arguments of `weave run`, `weave attach` and `weave detach`,
//! as Weave spells them: `CIDR` or `ip:CIDR` (exactly this address),
//! `net:CIDR` (any free address in that subnet) and `net:default`, in any
//! mix, kept in the order given. As in Weave, a `net:` subnet must be a
//! subnet (no host bits set) of at least four addresses (/30), so that it
//! has an address left once its network and broadcast addresses are out.

use std::fmt;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// What the user asked for, before allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddrRequest {
    /// `10.0.1.1/24`: exactly this address.
    Explicit(Ipv4Net),
    /// `net:10.0.1.0/24`: any free address in this subnet.
    Subnet(Ipv4Net),
    /// `net:default`, or no address at all: any free address in the default subnet.
    Default,
}

impl fmt::Display for AddrRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit(net) => write!(f, "{net}"),
            Self::Subnet(net) => write!(f, "net:{net}"),
            Self::Default => write!(f, "net:default"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrRequestError {
    #[error("invalid address '{arg}': expected ADDRESS/PREFIX (IPv4), net:CIDR or net:default")]
    Malformed { arg: String },
    #[error("invalid address '{arg}': missing /PREFIX (for example {arg}/24)")]
    MissingPrefix { arg: String },
    #[error(
        "invalid subnet '{arg}': bits after the network prefix are not all zero (did you mean net:{network}?)"
    )]
    HostBitsSet { arg: String, network: Ipv4Net },
    #[error(
        "invalid subnet '{arg}': smaller than {MIN_SUBNET_SIZE} addresses, so no address is left \
         once its network and broadcast addresses are out"
    )]
    SubnetTooSmall { arg: String },
}

/// The fewest addresses a `net:` subnet may have (Weave's `MinSubnetSize`).
const MIN_SUBNET_SIZE: u32 = 4;

/// True for an argument meant as an address (so that a typo in one is reported,
/// not mistaken for an image name): `net:...`, `ip:...`, or a leading digit
/// with a dot.
pub fn looks_like_address(arg: &str) -> bool {
    arg.starts_with("net:")
        || arg.starts_with("ip:")
        || (arg.starts_with(|c: char| c.is_ascii_digit()) && arg.contains('.'))
}

fn parse_one(arg: &str) -> Result<AddrRequest, AddrRequestError> {
    let malformed = || AddrRequestError::Malformed {
        arg: arg.to_string(),
    };
    if arg == "net:default" {
        return Ok(AddrRequest::Default);
    }
    if let Some(cidr) = arg.strip_prefix("net:") {
        let net: Ipv4Net = cidr.parse().map_err(|_| malformed())?;
        if net != net.trunc() {
            return Err(AddrRequestError::HostBitsSet {
                arg: arg.to_string(),
                network: net.trunc(),
            });
        }
        if (1u64 << (32 - net.prefix_len())) < u64::from(MIN_SUBNET_SIZE) {
            return Err(AddrRequestError::SubnetTooSmall {
                arg: arg.to_string(),
            });
        }
        return Ok(AddrRequest::Subnet(net));
    }
    // `ip:` only says "an address", which a bare CIDR says too.
    let cidr = arg.strip_prefix("ip:").unwrap_or(arg);
    if !cidr.contains('/') {
        return Err(if cidr.parse::<std::net::Ipv4Addr>().is_ok() {
            AddrRequestError::MissingPrefix {
                arg: arg.to_string(),
            }
        } else {
            malformed()
        });
    }
    cidr.parse()
        .map(AddrRequest::Explicit)
        .map_err(|_| malformed())
}

/// Splits the leading address arguments off `args`: returns the requests,
/// in the order given, and the rest. None at all is returned as none (what
/// that means is the command's to say: see [`parse_addr_requests`]).
pub fn split_addr_args(args: &[String]) -> Result<(Vec<AddrRequest>, &[String]), AddrRequestError> {
    let count = args.iter().take_while(|a| looks_like_address(a)).count();
    let requests = args[..count]
        .iter()
        .map(|a| parse_one(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((requests, &args[count..]))
}

/// [`split_addr_args`] for commands that allocate (`run`, `attach`): no
/// address at all means one address from the default subnet.
pub fn parse_addr_requests(
    args: &[String],
) -> Result<(Vec<AddrRequest>, &[String]), AddrRequestError> {
    let (mut requests, rest) = split_addr_args(args)?;
    if requests.is_empty() {
        requests.push(AddrRequest::Default);
    }
    Ok((requests, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn leading_addresses_are_split_off() {
        let a = args(&["10.0.1.1/24", "net:10.2.0.0/16", "-itd", "busybox"]);
        let (req, rest) = parse_addr_requests(&a).unwrap();
        assert_eq!(
            req,
            vec![
                AddrRequest::Explicit("10.0.1.1/24".parse().unwrap()),
                AddrRequest::Subnet("10.2.0.0/16".parse().unwrap()),
            ]
        );
        assert_eq!(rest, &a[2..]);
    }

    #[test]
    fn no_address_means_default_subnet() {
        let a = args(&["-d", "busybox"]);
        let (req, rest) = parse_addr_requests(&a).unwrap();
        assert_eq!(req, vec![AddrRequest::Default]);
        assert_eq!(rest.len(), 2);
        let a = args(&["net:default", "c1"]);
        assert_eq!(
            parse_addr_requests(&a).unwrap().0,
            vec![AddrRequest::Default]
        );
    }

    #[test]
    fn subnets_with_host_bits_or_too_small_are_refused_as_in_weave() {
        let err = parse_addr_requests(&args(&["net:10.2.3.4/16", "c"])).unwrap_err();
        assert_eq!(
            err,
            AddrRequestError::HostBitsSet {
                arg: "net:10.2.3.4/16".into(),
                network: "10.2.0.0/16".parse().unwrap()
            }
        );
        assert!(err.to_string().contains("net:10.2.0.0/16"), "{err}");
        for small in ["net:10.2.3.4/31", "net:10.2.3.4/32"] {
            let err = parse_addr_requests(&args(&[small, "c"])).unwrap_err();
            assert!(
                matches!(err, AddrRequestError::SubnetTooSmall { .. }),
                "{small}: {err:?}"
            );
        }
        // A /30 keeps two hosts: allowed, as in Weave.
        assert_eq!(
            parse_addr_requests(&args(&["net:10.2.3.4/30", "c"]))
                .unwrap()
                .0,
            vec![AddrRequest::Subnet("10.2.3.4/30".parse().unwrap())]
        );
    }

    #[test]
    fn every_form_mixes_in_any_order() {
        let a = args(&[
            "net:default",
            "ip:10.32.0.7/12",
            "net:10.2.0.0/16",
            "10.0.1.1/24",
            "c1",
        ]);
        let (req, rest) = split_addr_args(&a).unwrap();
        assert_eq!(
            req,
            vec![
                AddrRequest::Default,
                AddrRequest::Explicit("10.32.0.7/12".parse().unwrap()),
                AddrRequest::Subnet("10.2.0.0/16".parse().unwrap()),
                AddrRequest::Explicit("10.0.1.1/24".parse().unwrap()),
            ]
        );
        assert_eq!(rest, ["c1"]);
        // Only detach tells "none" from "net:default".
        assert!(split_addr_args(&args(&["c1"])).unwrap().0.is_empty());
        let err = split_addr_args(&args(&["ip:10.0.1.1", "c1"])).unwrap_err();
        assert!(
            matches!(err, AddrRequestError::MissingPrefix { .. }),
            "{err}"
        );
        for bad in ["ip:net:default", "ip:", "ip:bogus/24"] {
            let err = split_addr_args(&args(&[bad, "c1"])).unwrap_err();
            assert!(
                matches!(err, AddrRequestError::Malformed { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_addresses_are_reported_not_taken_for_images() {
        for bad in [
            "10.0.1.300/24",
            "10.0.1.1/33",
            "net:10.0.0.0/40",
            "net:bogus",
            "1.2.3/24",
        ] {
            let err = parse_addr_requests(&args(&[bad, "busybox"])).unwrap_err();
            assert!(
                matches!(err, AddrRequestError::Malformed { .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(bad));
        }
        let err = parse_addr_requests(&args(&["10.0.1.1", "busybox"])).unwrap_err();
        assert!(matches!(err, AddrRequestError::MissingPrefix { .. }));
    }
}
