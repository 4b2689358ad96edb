//! Command-line arguments of `multipassd`.

use std::path::PathBuf;

use clap::Parser;
use rpc::Address;

/// The multipass daemon: serves the Multipass protocol over TLS and decides which clients to trust.
#[derive(Debug, Parser)]
#[command(name = "multipassd", version, about, long_about = None)]
pub struct Args {
    /// Where to listen: `unix:PATH` or `HOST:PORT` (TCP has no first-client trust).
    #[arg(long, default_value_t = Address::default())]
    pub address: Address,

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

    /// Validity of newly made server certificates, in seconds (tests use short ones).
    #[arg(long, hide = true, default_value_t = 365 * 24 * 3600)]
    pub server_cert_validity: u64,

    /// Seconds a client may take to finish its TLS handshake.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,
}
