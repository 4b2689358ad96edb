//! The `multipassd-helper` executable. Its one `unsafe` block (`close_range`, which neither nix
//! nor std offers) is allowed where it is; the library it runs has none.
#![deny(unsafe_code)]

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use multipassd_helper::cli::{Cli, Command};
use multipassd_helper::{bus, ops, writer};
use zeroize::Zeroizing;

// Links in what keeps the executable from loading libm (see the crate).
use multipass_linkage as _;

/// Whether a tracer is attached (`TracerPid` in `/proc/self/status`).
fn traced() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("TracerPid:"))
                .is_some_and(|pid| pid.trim() != "0")
        })
        .unwrap_or(false)
}

fn main() -> ExitCode {
    // Before anything else: no core dump (nor a same-user ptrace or /proc/PID/mem read) may
    // expose a passphrase or the trust store. Every mode, the writer child included, runs this
    // after its last credential change (the writer is started with its user already set), and a
    // credential change would reset it.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("multipassd-helper: cannot mark the process non-dumpable: {e}");
        return ExitCode::FAILURE;
    }
    // A process of the same user could have attached between `exec` and the line above, and
    // stays attached: refuse to go on traced. (The writer child runs as the state directory's
    // owner, whose other processes are the daemon's.)
    if traced() {
        eprintln!("multipassd-helper: refusing to run under a tracer");
        return ExitCode::FAILURE;
    }
    // Descriptors inherited without close-on-exec (from whatever started us as root) are not
    // passed on to the writer child, which runs as another user.
    // SAFETY: close_range only changes flags of this process's descriptors.
    #[allow(unsafe_code)]
    unsafe {
        libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
    }
    let cli = Cli::parse();
    // Under systemd (D-Bus activation, the socket's hook) audit events become journal fields
    // as the daemon's do; a direct command (through sudo or pkexec) records them in the journal
    // too where there is one, and otherwise writes them on stderr.
    if matches!(cli.command, Command::Serve { .. }) {
        trust::logging::init("MULTIPASSD_HELPER_LOG", "info", "multipassd-helper");
    } else {
        trust::logging::init_command("MULTIPASSD_HELPER_LOG", "info", "multipassd-helper");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multipassd-helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Who asked for a direct command: the uid pkexec or sudo names (sudo's is the user an
/// administrator most likely trusts a certificate for: their own), else root itself. Only root
/// runs these commands, and whoever runs them as root could set either variable anyway.
fn caller_uid() -> u32 {
    ["PKEXEC_UID", "SUDO_UID"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .unwrap_or(0)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Through pkexec the command line is the caller's: paths must then be the built-in ones.
    if std::env::var_os("PKEXEC_UID").is_some() && !cli.config.is_default() {
        bail!("paths cannot be chosen through pkexec");
    }
    match cli.command {
        Command::Serve {
            idle_timeout,
            max_calls,
            polkit_timeout,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let idle = (idle_timeout > 0).then(|| Duration::from_secs(idle_timeout));
            let limits = bus::Limits {
                calls: max_calls.max(1),
                interaction: Duration::from_secs(polkit_timeout.max(1)),
            };
            runtime.block_on(bus::serve(cli.config, limits, idle))
        }
        Command::ApplySocketPolicy => {
            require_root()?;
            // A mistyped directory would read as an empty store and restrict the socket. The
            // packaged one missing is a service that starts afresh (`rm -rf` of its state, which
            // the daemon's `StateDirectory=` makes again): nobody is trusted, and failing here
            // would fail the socket unit and keep everyone out, the daemon that would mend it
            // included.
            let dir = &cli.config.data_dir;
            let fresh = dir.as_os_str() == trust::paths::DEFAULT_DATA_DIR && !dir.exists();
            if !dir.is_dir() && !fresh {
                bail!(
                    "{} is not a directory: give the daemon's state directory (--data-dir)",
                    cli.config.data_dir.display()
                );
            }
            let access = ops::apply_socket_policy(&cli.config)?;
            eprintln!("{}: {access:?}", cli.config.socket.display());
            Ok(())
        }
        Command::SetPassphrase { clear } => {
            require_root()?;
            let passphrase = if clear {
                Zeroizing::new(String::new())
            } else {
                let passphrase = read_passphrase()?;
                if passphrase.is_empty() {
                    bail!("No passphrase given (use --clear to clear the passphrase)");
                }
                passphrase
            };
            ops::validate_passphrase(&passphrase).map_err(refused)?;
            if !ops::set_passphrase(&cli.config, passphrase)? {
                eprintln!("{}", trust::passphrase::NOTHING_TO_CLEAR);
                return Ok(());
            }
            trust::audit::AuditEvent::PassphraseChanged {
                cleared: clear,
                by: trust::audit::Who::Uid(caller_uid()),
                via: trust::audit::Via::HelperDirect,
            }
            .emit();
            eprintln!(
                "The passphrase was {}.",
                if clear { "cleared" } else { "set" }
            );
            Ok(())
        }
        Command::TrustCertificate { name } => {
            require_root()?;
            let mut pem = String::new();
            std::io::stdin()
                .take(trust::pki::MAX_CERTIFICATE_PEM as u64 + 1)
                .read_to_string(&mut pem)
                .context("cannot read the certificate from standard input")?;
            let der = ops::validate_certificate(&pem).map_err(refused)?;
            let uid = caller_uid();
            let name =
                ops::client_name(name.as_deref().unwrap_or_default(), uid).map_err(refused)?;
            let trusted = ops::trust_certificate(&cli.config, &der, &ops::Requester { uid, name })?;
            if trusted.added {
                multipassd_helper::trusted(
                    uid,
                    &trusted.fingerprint,
                    trust::audit::Via::HelperDirect,
                );
            } else {
                eprintln!("This certificate was trusted already; nothing was changed.");
            }
            println!("{}", trusted.fingerprint);
            Ok(())
        }
        Command::WriteAsOwner => {
            let reply = ops::write_as_owner(&cli.config.data_dir);
            writer::send(&reply, std::io::stdout().lock())?;
            if let writer::Reply::Failed { error } = reply {
                bail!("{error}");
            }
            Ok(())
        }
    }
}

/// A refusal as a person reads it: its text, without the D-Bus error name it carries for callers
/// on the bus.
fn refused(e: helper_api::HelperError) -> anyhow::Error {
    use zbus::DBusError;
    match e.description() {
        Some(text) => anyhow::anyhow!("{text}"),
        None => anyhow::Error::new(e),
    }
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("this command must run as root (e.g. through pkexec)");
    }
    Ok(())
}

fn read_passphrase() -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        use trust::passphrase::{PROMPT, PROMPT_AGAIN};
        let first = Zeroizing::new(rpassword::prompt_password(PROMPT)?);
        let second = Zeroizing::new(rpassword::prompt_password(PROMPT_AGAIN)?);
        if *first != *second {
            bail!("Passphrases do not match");
        }
        return Ok(first);
    }
    let mut line = Zeroizing::new(String::new());
    let limit = trust::passphrase::MAX_PASSPHRASE_LEN as u64 + 2;
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::io::stdin().take(limit)),
        &mut line,
    )?;
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}
