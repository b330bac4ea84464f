//! The address arguments of `weave run` and `weave attach`, as Weave spells them.

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
}

/// True for an argument meant as an address (so that a typo in one is reported,
/// not mistaken for an image name): `net:...`, or a leading digit with a dot.
pub fn looks_like_address(arg: &str) -> bool {
    arg.starts_with("net:") || (arg.starts_with(|c: char| c.is_ascii_digit()) && arg.contains('.'))
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
        return Ok(AddrRequest::Subnet(net.trunc()));
    }
    if !arg.contains('/') {
        return Err(if arg.parse::<std::net::Ipv4Addr>().is_ok() {
            AddrRequestError::MissingPrefix {
                arg: arg.to_string(),
            }
        } else {
            malformed()
        });
    }
    arg.parse()
        .map(AddrRequest::Explicit)
        .map_err(|_| malformed())
}

/// Splits the leading address arguments off `args`: returns the requests and
/// the rest. No address at all means one address from the default subnet.
pub fn parse_addr_requests(
    args: &[String],
) -> Result<(Vec<AddrRequest>, &[String]), AddrRequestError> {
    let count = args.iter().take_while(|a| looks_like_address(a)).count();
    let mut requests = args[..count]
        .iter()
        .map(|a| parse_one(a))
        .collect::<Result<Vec<_>, _>>()?;
    if requests.is_empty() {
        requests.push(AddrRequest::Default);
    }
    Ok((requests, &args[count..]))
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
    fn subnet_requests_are_normalised() {
        let a = args(&["net:10.2.3.4/16", "c"]);
        assert_eq!(
            parse_addr_requests(&a).unwrap().0,
            vec![AddrRequest::Subnet("10.2.0.0/16".parse().unwrap())]
        );
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
