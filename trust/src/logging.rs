//! Where the daemon's and the helper's log lines go: structured journald entries when systemd
//! captures stderr (the fields of audit events, `EVENT=`, `UID=`, `FINGERPRINT=`, become journal
//! fields that administrators query), plain text on stderr otherwise.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where a command run by hand (the helper's direct commands, through sudo or pkexec) logs: to
/// the journal when there is one, as a service does, so that its audit events are recorded
/// and queried like the daemon's, with warnings and errors also on stderr; without a journal,
/// as [`init`]. Its own messages to the person running it are not log lines.
pub fn init_command(env: &str, level: &str, identifier: &str) {
    if stderr_is_journal() || !std::path::Path::new(JOURNAL_SOCKET).exists() {
        return init(env, level, identifier);
    }
    let Ok(journald) = tracing_journald::layer() else {
        return init(env, level, identifier);
    };
    use tracing_subscriber::Layer;
    tracing_subscriber::registry()
        .with(filter(env, level))
        .with(
            journald
                .with_syslog_identifier(identifier.into())
                .with_field_prefix(None),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .init();
}

/// journald's socket for native entries (systemd-journald.socket).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// `level`, or what the environment variable `env` says (`RUST_LOG` syntax).
fn filter(env: &str, level: &str) -> EnvFilter {
    // rustls warns once per handshake about what a peer sent (an illegal SNI name, say): a line
    // per connection that anybody can make, uncollapsed. The daemon reports failed handshakes
    // itself, collapsed per peer; rustls's own lines only when they are errors.
    EnvFilter::try_from_env(env).unwrap_or_else(|_| EnvFilter::new(format!("{level},rustls=error")))
}

/// Set up the global subscriber at `level`, which the environment variable `env` overrides
/// (`RUST_LOG` syntax); journal entries carry `identifier` as their syslog identifier.
pub fn init(env: &str, level: &str, identifier: &str) {
    let registry = tracing_subscriber::registry().with(filter(env, level));
    if stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            registry
                // No field prefix: EVENT=trusted, HOW=..., as administrators query them.
                .with(
                    journald
                        .with_syslog_identifier(identifier.into())
                        .with_field_prefix(None),
                )
                .init();
            return;
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

/// systemd sets `JOURNAL_STREAM=dev:ino` of the stream it connected to stderr; only if stderr is
/// still that stream do we talk to journald directly (sd_journal_stream_fd(3)).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
