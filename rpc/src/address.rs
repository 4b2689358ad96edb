//! Daemon addresses as users write them: `unix:PATH` or `HOST:PORT`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP `HOST:PORT`.
    Tcp(String),
}

impl Default for Address {
    fn default() -> Self {
        Address::Unix(PathBuf::from(trust::paths::DEFAULT_SOCKET))
    }
}

/// Why an address could not be parsed, with what to write instead when a likely form was
/// meant.
#[derive(Debug, thiserror::Error)]
#[error("invalid address '{address}': expected unix:PATH or HOST:PORT{hint}")]
pub struct InvalidAddress {
    address: String,
    hint: String,
}

impl InvalidAddress {
    fn new(address: &str) -> InvalidAddress {
        // A scheme as gRPC or a URL writes it, before a TCP address.
        let hint = ["tcp://", "tcp:", "dns:///", "dns:", "ipv4:", "ipv6:"]
            .iter()
            .find_map(|scheme| address.strip_prefix(scheme))
            .filter(|rest| !rest.is_empty())
            .map(|rest| format!(" (a TCP address has no scheme: {rest})"))
            .or_else(|| {
                let (host, port) = address.rsplit_once(':')?;
                let bare_ipv6 = host.parse::<std::net::Ipv6Addr>().is_ok();
                (bare_ipv6 && port.parse::<u16>().is_ok())
                    .then(|| format!(" (an IPv6 address goes in brackets: [{host}]:{port})"))
            })
            .unwrap_or_default();
        InvalidAddress {
            address: address.to_string(),
            hint,
        }
    }
}

impl FromStr for Address {
    type Err = InvalidAddress;

    fn from_str(s: &str) -> Result<Address, InvalidAddress> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(InvalidAddress::new(s));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            // A host has no `/` and no `:` outside the brackets of an IPv6 address:
            // `tcp:HOST:PORT`, `tcp://HOST:PORT` or a path is a mistake, better said now than
            // as a failed name lookup.
            Some((host, port))
                if !host.is_empty()
                    && !host.contains(['/', ' '])
                    && (!host.contains(':') || host.starts_with('[') && host.ends_with(']'))
                    && port.parse::<u16>().is_ok() =>
            {
                Ok(Address::Tcp(s.to_string()))
            }
            _ => Err(InvalidAddress::new(s)),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(hostport) => f.write_str(hostport),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_or_a_path_is_no_address() {
        for wrong in [
            "tcp://127.0.0.1:50051",
            "tcp:127.0.0.1:50051",
            "dns:localhost:50051",
            "::1:50051",
            "/run/x:1",
            "a b:1",
            "unix:",
            "localhost",
        ] {
            assert!(wrong.parse::<Address>().is_err(), "{wrong}");
        }
        assert!("[::1]:50051".parse::<Address>().is_ok());
    }

    #[test]
    fn a_scheme_before_a_tcp_address_is_named() {
        for (wrong, meant) in [
            ("tcp://127.0.0.1:50051", "127.0.0.1:50051"),
            ("tcp:localhost:50051", "localhost:50051"),
            ("ipv6:[::1]:50051", "[::1]:50051"),
        ] {
            let error = wrong.parse::<Address>().unwrap_err().to_string();
            assert_eq!(
                error,
                format!(
                    "invalid address '{wrong}': expected unix:PATH or HOST:PORT \
                     (a TCP address has no scheme: {meant})"
                )
            );
        }
        let bare = "fe80::1:50051".parse::<Address>().unwrap_err().to_string();
        assert_eq!(
            bare,
            "invalid address 'fe80::1:50051': expected unix:PATH or HOST:PORT (an IPv6 address \
             goes in brackets: [fe80::1]:50051)"
        );
        let plain = "localhost".parse::<Address>().unwrap_err().to_string();
        assert_eq!(
            plain,
            "invalid address 'localhost': expected unix:PATH or HOST:PORT"
        );
    }

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            "unix:/run/x".parse::<Address>().unwrap(),
            Address::Unix("/run/x".into())
        );
        assert_eq!(
            "localhost:50051".parse::<Address>().unwrap(),
            Address::Tcp("localhost:50051".into())
        );
        assert_eq!(
            "[::1]:50051".parse::<Address>().unwrap(),
            Address::Tcp("[::1]:50051".into())
        );
        for bad in ["unix:", "/run/x", "host", "host:port", ":1"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
