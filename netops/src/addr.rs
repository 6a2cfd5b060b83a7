//! `IpPrefix`: an address plus prefix length, validated on construction.
//!
//! Service IPs are configured as text (`"10.0.1.1/32"`, `"fd00::1/128"`);
//! parsing here means every later step can rely on the length being possible
//! for the family. A bare address means a host prefix (/32 or /128), which is
//! what a service IP normally is.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::NetError;

/// An IP address with a prefix length that is valid for its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    /// The address itself (not masked: `10.0.1.1/24` keeps its host bits).
    addr: IpAddr,
    /// Prefix length, at most 32 (IPv4) or 128 (IPv6).
    len: u8,
}

impl IpPrefix {
    /// A prefix, or `InvalidPrefix` if `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, NetError> {
        let max = max_len(addr);
        if len > max {
            return Err(NetError::InvalidPrefix {
                input: format!("{addr}/{len}"),
                reason: format!("prefix length {len} is longer than {max}"),
            });
        }
        Ok(Self { addr, len })
    }

    /// The host prefix of `addr`: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(addr),
        }
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for IPv6 prefixes.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

/// The longest prefix the family allows.
fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| NetError::InvalidPrefix {
            input: s.to_string(),
            reason,
        };
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| invalid(format!("{addr_text:?} is not an IP address")))?;
        match len_text {
            None => Ok(Self::host(addr)),
            Some(l) => {
                let len: u8 = l
                    .parse()
                    .map_err(|_| invalid(format!("{l:?} is not a prefix length")))?;
                Self::new(addr, len)
                    .map_err(|_| invalid(format!("prefix length {len} is longer than {}", max_len(addr))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_length() {
        let p: IpPrefix = "10.0.1.1/32".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.1.1/32");
        let p: IpPrefix = "10.0.1.1".parse().unwrap();
        assert_eq!(p.prefix_len(), 32);
        let p: IpPrefix = "fd00::1".parse().unwrap();
        assert_eq!(p.prefix_len(), 128);
        let p: IpPrefix = "fd00::1/64".parse().unwrap();
        assert_eq!(p.to_string(), "fd00::1/64");
    }

    #[test]
    fn rejects_impossible_lengths_naming_the_input() {
        for bad in ["10.0.0.1/33", "fd00::1/129", "10.0.0.1/x", "nope/32", "10.0.0.1/"] {
            let err = bad.parse::<IpPrefix>().unwrap_err();
            assert!(matches!(err, NetError::InvalidPrefix { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(IpPrefix::new("10.0.0.1".parse().unwrap(), 33).is_err());
    }
}
