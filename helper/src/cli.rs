//! The command line of `multipassd-helper`.

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Privileged helper of the multipass service: sets the passphrase, trusts client certificates
/// and sets the daemon socket's access, each authorized by polkit (or run directly by root).
#[derive(Debug, Parser)]
#[command(name = "multipassd-helper", version)]
pub struct Cli {
    #[command(flatten)]
    /// Paths (from the unit file or root's command line).
    pub config: Config,
    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve io.multipass.Helper1 on the system bus (D-Bus activated).
    Serve {
        /// Exit after this many seconds without a call (0: never).
        #[arg(long, default_value_t = 30)]
        idle_timeout: u64,
    },
    /// Give the socket the owner, group and mode that match the trust store (root; the socket
    /// unit's ExecStartPost=).
    ApplySocketPolicy,
    /// Set the passphrase, read from the terminal (twice) or one line of standard input (root,
    /// e.g. through pkexec).
    SetPassphrase {
        /// Clear the passphrase instead (nobody can authenticate with one until it is set again).
        #[arg(long)]
        clear: bool,
    },
    /// Trust the certificate read from standard input (root, e.g. through pkexec).
    TrustCertificate {
        /// Name to record [default: the invoking user's login name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Internal: apply one write as the state directory's owner (see ops.rs).
    #[command(hide = true)]
    WriteAsOwner,
}

/// The command-line definition, for man pages and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
