//! `multipass`: the command-line client of the multipass service.
//!
//! [`main`] only parses the command line, runs the command on a single-threaded runtime and turns
//! the outcome into the exit status; the commands live in [`commands`], one module each.

mod admin;
mod commands;
mod connect;
pub mod doc;
mod error;
mod output;
mod passphrase;
mod render;
mod trace;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Cli;
use crate::error::Exit;

/// The whole program: parse, run, report; the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(name) = not_provided(&e) {
                // What clap would suggest for it (`launch`: "a similar subcommand exists: 'auth'")
                // misleads whoever comes from Multipass.
                eprintln!(
                    "{name} failed: {}\nIts commands are listed by 'multipass --help'.",
                    rpc::messages::not_available(&name)
                );
                return Exit::Usage.into();
            }
            // Help and version go to stdout and are success; every usage error exits 1 (clap's
            // own default is 2, which here means "the command failed").
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    let command = cli.command.name();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{command} failed: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let outcome = runtime.block_on(commands::run(cli));
    error::report(command, outcome)
}

/// Multipass's commands (and their aliases) that this client does not have: all of them are about
/// instances, which this service does not manage.
const MULTIPASS_ONLY: &[&str] = &[
    "alias",
    "aliases",
    "clone",
    "connect",
    "copy-files",
    "delete",
    "exec",
    "find",
    "info",
    "launch",
    "mount",
    "networks",
    "prefer",
    "purge",
    "recover",
    "restart",
    "restore",
    "sh",
    "shell",
    "snapshot",
    "start",
    "stop",
    "suspend",
    "transfer",
    "umount",
    "unalias",
    "unmount",
    "wait-ready",
];

/// The Multipass command that `e` says is no subcommand of ours, if it is one.
fn not_provided(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidSubcommand {
        return None;
    }
    match e.get(ContextKind::InvalidSubcommand) {
        Some(ContextValue::String(name)) if MULTIPASS_ONLY.contains(&name.as_str()) => {
            Some(name.clone())
        }
        _ => None,
    }
}

/// The command-line definition, for man pages and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
