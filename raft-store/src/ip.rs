//! A service address with its prefix length, as written in topology files
//! (`10.0.1.1/32`, `fd00::1/128`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A store's master or replica IP. Kept as text on the wire and on disk
/// (`addr/len`) so that a log written today reads the same with any codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceIp {
    /// The address clients or `sync_client` connect to.
    pub addr: IpAddr,
    /// Prefix length to bind it with (normally /32 or /128).
    pub len: u8,
}

/// Why a text is not a usable service address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("{0:?} is not an IP address with a prefix (expected e.g. 10.0.1.1/32 or fd00::1/128)")]
    Syntax(String),
    #[error("prefix /{len} is too long for {addr} (at most /{max})")]
    PrefixTooLong { addr: IpAddr, len: u8, max: u8 },
    #[error("{0} cannot be a service address (unspecified, loopback, multicast or broadcast)")]
    NotUnicast(IpAddr),
}

impl ServiceIp {
    /// Builds a service address, refusing prefixes and address kinds that can
    /// never be bound and announced on a LAN.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, IpError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(IpError::PrefixTooLong { addr, len, max });
        }
        let unusable = addr.is_unspecified()
            || addr.is_loopback()
            || addr.is_multicast()
            || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
        if unusable {
            return Err(IpError::NotUnicast(addr));
        }
        Ok(ServiceIp { addr, len })
    }
}

impl FromStr for ServiceIp {
    type Err = IpError;

    /// Accepts `addr/len`; a bare address means a host prefix (/32 or /128).
    fn from_str(s: &str) -> Result<Self, IpError> {
        let syntax = || IpError::Syntax(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| syntax())?;
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let len: u16 = l.parse().map_err(|_| syntax())?;
                let len = u8::try_from(len).map_err(|_| IpError::PrefixTooLong {
                    addr,
                    len: u8::MAX,
                    max: if addr.is_ipv4() { 32 } else { 128 },
                })?;
                (addr, len)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| syntax())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        ServiceIp::new(addr, len)
    }
}

impl TryFrom<String> for ServiceIp {
    type Error = IpError;
    fn try_from(s: String) -> Result<Self, IpError> {
        s.parse()
    }
}

impl From<ServiceIp> for String {
    fn from(ip: ServiceIp) -> String {
        ip.to_string()
    }
}

impl fmt::Display for ServiceIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_families() {
        for s in ["10.0.1.1/32", "fd00::1/128", "192.168.7.9/24"] {
            let ip: ServiceIp = s.parse().unwrap();
            assert_eq!(ip.to_string(), s);
        }
        assert_eq!("10.0.1.1".parse::<ServiceIp>().unwrap().len, 32);
        assert_eq!("fd00::2".parse::<ServiceIp>().unwrap().len, 128);
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let cases = [
            ("10.0.1.1/33", "at most /32"),
            ("fd00::1/129", "at most /128"),
            ("10.0.1.1/999", "too long"),
            ("10.0.1/32", "not an IP address"),
            ("10.0.1.1/", "not an IP address"),
            ("10.0.1.1/+3", "not an IP address"),
            ("127.0.0.1/32", "cannot be a service address"),
            ("0.0.0.0/32", "cannot be a service address"),
            ("ff02::1/128", "cannot be a service address"),
        ];
        for (input, want) in cases {
            let err = input.parse::<ServiceIp>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
