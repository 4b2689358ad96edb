//! Logs: structured journald entries when systemd captures our stderr, plain stderr otherwise.

/// Set up the global subscriber at `level` (`MULTIPASSD_LOG` overrides it, as `RUST_LOG`
/// syntax).
pub fn init(level: &str) {
    trust::logging::init("MULTIPASSD_LOG", level, "multipassd");
}

/// The level for Multipass-style `--verbosity` or a count of `-v`.
pub fn level(verbosity: Option<&str>, count: u8) -> &'static str {
    match verbosity {
        Some("error") => "error",
        Some("warning") => "warn",
        Some("info") => "info",
        Some("debug") => "debug",
        Some("trace") => "trace",
        _ => match count {
            0 => "info",
            1 => "debug",
            _ => "trace",
        },
    }
}
