//! The command line of `multipassd-helper`.

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Privileged helper of the multipass service: passphrase, trusted certificates, socket access
///
/// multipassd-helper performs the few privileged operations of the multipass service, so that
/// the daemon (multipassd) needs no privileges: set the passphrase, trust a client's certificate,
/// and give the daemon's socket its owner and mode. It runs as root.
///
/// Normally D-Bus starts it (`serve`) when a client calls io.multipass.Helper1 on the system
/// bus, as `multipass authenticate --admin` and `multipass set local.passphrase --admin` do; each
/// call is authorized by polkit for the caller, who is asked for an administrator's password
/// (except the daemon's own user setting its socket's access, which polkit's rules allow).
/// An administrator can also run the operations directly, with sudo or pkexec, the passphrase or
/// the certificate on standard input or the terminal, never on the command line. With polkit
/// before 124 (Debian 12 ships 122), pkexec's own password prompt fails with "No session for
/// cookie": start a terminal agent for the shell first (`pkttyagent --process $$ &`), or use sudo.
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
    /// Serve io.multipass.Helper1 on the system bus (D-Bus activated)
    ///
    /// Serve io.multipass.Helper1 on the system bus: SetPassphrase, TrustCertificate and
    /// SetSocketAccess, each after polkit authorized the caller. Started by D-Bus activation
    /// through multipassd-helper.service; exits when idle, and once a package upgrade has
    /// replaced its program (D-Bus then starts the new one for the next call).
    Serve {
        /// Exit after this many seconds without a call (0: never).
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        idle_timeout: u64,
        /// For tests: calls answered at once beside root's and the state directory owner's.
        #[arg(long, hide = true, default_value_t = crate::bus::Limits::default().calls)]
        max_calls: usize,
        /// For tests: seconds polkit may take over a check that may prompt.
        #[arg(long, hide = true, value_name = "SECONDS",
              default_value_t = crate::bus::Limits::default().interaction.as_secs())]
        polkit_timeout: u64,
    },
    /// Give the socket the owner, group and mode that match the trust store
    ///
    /// Give the daemon's socket the owner, group and mode that match the trust store:
    /// root:<admin group> 0660 while it is empty, root:root 0666 otherwise. Run by root, as
    /// multipass.socket's ExecStartPost=, so the socket is right before the daemon ever starts.
    ApplySocketPolicy,
    /// Set the passphrase, read from the terminal (twice) or one line of standard input
    ///
    /// Set the passphrase other clients authenticate with, read from the terminal (twice, without
    /// echo) or as one line of standard input. Runs as root, e.g. `sudo
    /// /usr/libexec/multipassd-helper set-passphrase`, or the same through pkexec (polkit action
    /// io.multipass.set-passphrase).
    /// An empty passphrase is refused; use --clear to clear it.
    SetPassphrase {
        /// Clear the passphrase instead (nobody can authenticate with one until it is set again).
        #[arg(long)]
        clear: bool,
    },
    /// Trust the certificate read from standard input
    ///
    /// Trust the client certificate (PEM) read from standard input, e.g. `sudo
    /// /usr/libexec/multipassd-helper trust-certificate < multipass_cert.pem`, or the same through
    /// pkexec (the client's certificate is in ~/.local/share/multipass-client-certificate/;
    /// polkit action io.multipass.trust-client). Prints its fingerprint.
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
