//! Command-line arguments of `multipassd`.

use std::path::PathBuf;

use clap::Parser;
use rpc::Address;

/// The multipass daemon: serves the Multipass protocol over TLS and decides which clients to trust
///
/// multipassd serves Multipass's gRPC protocol over TLS on a Unix socket (or TCP), and decides
/// which clients to trust by their TLS client certificates. On a fresh service the first client
/// of an administrator (root, or a member of the admin group) is trusted automatically; other
/// clients get in with the passphrase (`multipass set local.passphrase`, `multipass
/// authenticate`) or a one-time enrollment token (`multipass trust token create`).
///
/// It is not meant to be started by hand: the package's multipass.socket listens on
/// /run/multipass_socket and starts it (as the unprivileged multipassd user, with no
/// capabilities) on the first connection; it exits again after --idle-timeout. Privileged steps
/// (the socket's owner and mode) are done by multipassd-helper. Started as root by hand, it drops
/// every capability before serving (and switches to --user if given).
///
/// Every trust decision and refusal is logged as a structured event (journald fields under
/// systemd); passphrases, tokens and their hashes never are.
#[derive(Debug, Parser)]
#[command(name = "multipassd", version)]
pub struct Args {
    /// Where to listen: `unix:PATH` or `HOST:PORT` (TCP has no first-client trust)
    /// [default: unix:/run/multipass_socket]. Not to be given when systemd passes the socket to
    /// serve (socket activation): the daemon then refuses to start.
    #[arg(long)]
    pub address: Option<Address>,

    /// State directory: certificates, trust store, settings.
    #[arg(long, default_value = trust::paths::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Group whose members may become the first client and reach the restricted socket
    /// [default: the first that exists of multipass, sudo, admin, wheel].
    #[arg(long)]
    pub admin_group: Option<String>,

    /// More log output (-v debug, -vv trace); the passphrase and its hash are never logged.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log level, as Multipass names them.
    #[arg(long, value_parser = ["error", "warning", "info", "debug", "trace"])]
    pub verbosity: Option<String>,

    /// Exit after this many seconds with no open connection (under socket activation systemd
    /// starts the daemon again on the next connection). Exit status 75. 0, like no value, means
    /// never.
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Name of the socket to take when systemd passes several (`LISTEN_FDNAMES`); a single
    /// socket is served whatever its name.
    #[arg(long, default_value = "multipass")]
    pub fd_name: String,

    /// Switch to this user (from root) before dropping every capability.
    #[arg(long)]
    pub user: Option<String>,

    /// Validity of newly made server certificates, in seconds (tests use short ones).
    #[arg(long, hide = true, default_value_t = tls::pki::SERVER_CERT_VALIDITY.whole_seconds().unsigned_abs())]
    pub server_cert_validity: u64,

    /// Renew the server certificate when it expires within this many seconds, at start and while
    /// running (tests use a few seconds).
    #[arg(long, hide = true, default_value_t = tls::pki::SERVER_CERT_RENEW_BEFORE.whole_seconds().unsigned_abs())]
    pub server_cert_renew_before: u64,

    /// Ceiling, in seconds, of the delay imposed after repeated failed authentications
    /// (tests use short ones).
    #[arg(long, hide = true, default_value_t = crate::limits::MAX_DELAY.as_secs(),
          value_name = "SECONDS")]
    pub auth_max_delay: u64,

    /// Seconds a connection may stay open with no request in flight (at most 120; tests use
    /// short ones). Keepalive pings do not count as requests.
    #[arg(long, hide = true, default_value_t = rpc::server::IDLE_TIMEOUT.as_secs(),
          value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=120))]
    pub connection_idle_timeout: u64,

    /// Seconds a client may take to finish its TLS handshake.
    #[arg(long, default_value_t = rpc::server::HANDSHAKE_TIMEOUT.as_secs())]
    pub handshake_timeout: u64,
}
