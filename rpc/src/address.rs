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

/// Why an address could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid address '{0}': expected unix:PATH or HOST:PORT")]
pub struct InvalidAddress(String);

impl FromStr for Address {
    type Err = InvalidAddress;

    fn from_str(s: &str) -> Result<Address, InvalidAddress> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(InvalidAddress(s.to_string()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            // A host has no `/`: `tcp://HOST:PORT` or a path is a mistake, better said now
            // than as a failed name lookup.
            Some((host, port))
                if !host.is_empty()
                    && !host.contains(['/', ' '])
                    && port.parse::<u16>().is_ok() =>
            {
                Ok(Address::Tcp(s.to_string()))
            }
            _ => Err(InvalidAddress(s.to_string())),
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
