//! The parts of `multipass`'s documentation that are not about one option: exit statuses,
//! environment, files, and the settings keys. `--help` shows them after the options, and
//! `multipass-docgen` renders the same entries as the man page's EXIT STATUS, ENVIRONMENT and
//! FILES sections, so the two cannot drift apart.

/// One entry of a section: a term (a number, a variable, a path, a key) and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// What is described.
    pub term: &'static str,
    /// The description: one paragraph.
    pub text: &'static str,
}

const fn entry(term: &'static str, text: &'static str) -> Entry {
    Entry { term, text }
}

/// What each exit status means.
pub const EXIT_STATUS: &[Entry] = &[
    entry("0", "The command succeeded."),
    entry(
        "1",
        "Command-line error: bad arguments, no passphrase given, passphrases that do not match, \
         a passphrase too long or not UTF-8 text, or an unusable client environment \
         (MULTIPASS_SERVER_ADDRESS, or a HOME or XDG_DATA_HOME under which the client \
         certificate directory cannot be made, or is another user's).",
    ),
    entry(
        "2",
        "The command failed: the daemon answered with an error (for example \"not \
         authenticated\"), or the client failed locally (for example, its certificate and key \
         cannot be used).",
    ),
    entry(
        "3",
        "The daemon could not be reached: socket missing or refused, permission denied, root \
         certificate missing or not the daemon's, TLS handshake failed, no answer within 30 s \
         to connect or 60 s to a request, connection lost.",
    ),
];

/// The environment variables the client reads.
pub const ENVIRONMENT: &[Entry] = &[
    entry(
        "MULTIPASS_SERVER_ADDRESS",
        "The daemon's address: unix:PATH or HOST:PORT (default unix:/run/multipass_socket, also \
         when set but empty).",
    ),
    entry(
        "MULTIPASS_ROOT_CERT",
        "The daemon's root CA certificate, which the client verifies the daemon against \
         (default /var/lib/multipassd/multipass_root_cert.pem). It must be the one in the data \
         directory of the daemon at MULTIPASS_SERVER_ADDRESS.",
    ),
    entry(
        "XDG_DATA_HOME",
        "Where the client keeps its certificate, in multipass-client-certificate/ (default \
         $HOME/.local/share; a relative path is ignored).",
    ),
    entry(
        "HOME",
        "The home directory, under which the client's certificate is kept when XDG_DATA_HOME \
         is not set. A relative, empty or unset HOME gives way to the home directory in the \
         password database. root ignores a HOME or XDG_DATA_HOME that lies in another user's \
         files (as after `su` without `-`, or `sudo -E`) and uses its own home from the \
         password database, as sudo does: what it created there would lock that user out of \
         their own client.",
    ),
];

/// The files the client reads or writes.
pub const FILES: &[Entry] = &[
    entry(
        "~/.local/share/multipass-client-certificate/multipass_cert.pem",
        "This client's certificate, created on first use. It is the client's identity: the \
         service trusts this certificate, not the user. Each user has their own, and so does \
         root: `sudo multipass ...` is a different client from `multipass ...`.",
    ),
    entry(
        "~/.local/share/multipass-client-certificate/multipass_cert_key.pem",
        "Its private key (mode 0600, in a 0700 directory).",
    ),
    entry(
        "/var/lib/multipassd/multipass_root_cert.pem",
        "The daemon's root CA certificate (see MULTIPASS_ROOT_CERT).",
    ),
    entry(
        "/run/multipass_socket",
        "The daemon's socket (see MULTIPASS_SERVER_ADDRESS). Until a first client is trusted, \
         only root and members of the admin group (the first that exists of multipass, sudo, \
         admin, wheel) can connect to it.",
    ),
];

/// The settings keys `get` and `set` know, with what each holds.
pub const SETTINGS_KEYS: &[Entry] = &[entry(
    trust::settings::PASSPHRASE_KEY,
    "The passphrase other clients give to `multipass authenticate`. `get` answers only whether \
     one is set (true or false); the passphrase and its hash never leave the daemon.",
)];

/// The widest these sections are wrapped to: the width clap wraps help to (the terminal's, else
/// `COLUMNS`, else 100), and no more than 80. clap wraps text it is given again, at its width and
/// without the hanging indent, so a line longer than its width would be broken in two.
/// Asked once per process, as every subcommand's help is built at each run.
fn help_width() -> usize {
    static WIDTH: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WIDTH.get_or_init(|| {
        terminal_size::terminal_size()
            .map(|(width, _)| usize::from(width.0))
            .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
            .unwrap_or(100)
            .min(80)
    })
}

/// `entries` under `heading`, for `--help`: each term, and its text indented below it (beside
/// it when the term is short, as exit statuses are), wrapped to the help's width.
pub fn help_section(heading: &str, entries: &[Entry]) -> String {
    section_at(heading, entries, help_width())
}

/// [`help_section`] at `width`. A word longer than a line (a path, a variable's name) is left
/// whole, as clap leaves it.
fn section_at(heading: &str, entries: &[Entry], width: usize) -> String {
    const INDENT: &str = "      ";
    let mut out = format!("{heading}:");
    for e in entries {
        // Beside only when a blank is left between the term and its text.
        let first = if e.term.len() < INDENT.len() - 2 {
            format!("  {:<4}", e.term)
        } else {
            out.push_str(&format!("\n  {}", e.term));
            INDENT.to_string()
        };
        let options = textwrap::Options::new(width)
            .break_words(false)
            .initial_indent(&first)
            .subsequent_indent(INDENT);
        out.push('\n');
        out.push_str(&textwrap::fill(e.text, &options));
    }
    out
}

/// What `multipass --help` shows after the options.
pub fn after_long_help() -> String {
    [
        help_section("Exit status", EXIT_STATUS),
        help_section("Environment", ENVIRONMENT),
        help_section("Files", FILES),
    ]
    .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_list_every_entry() {
        let help = after_long_help();
        for e in EXIT_STATUS.iter().chain(ENVIRONMENT).chain(FILES) {
            assert!(
                help.contains(&format!("  {}\n", e.term))
                    || help.contains(&format!("  {:<4}{}", e.term, &e.text[..8])),
                "{help}"
            );
            assert!(
                !help.contains(&format!("{}{}", e.term, &e.text[..8])),
                "{help}"
            );
        }
    }

    #[test]
    fn narrow_sections_fill_their_lines_and_keep_long_words_whole() {
        let text = section_at("Files", FILES, 30);
        for line in text.lines() {
            assert!(
                line.len() <= 30 || !line.trim().contains(' '),
                "{line:?} is longer than 30 columns\n{text}"
            );
        }
        assert!(
            text.contains("\n  ~/.local/share/multipass-client-certificate/multipass_cert.pem\n")
        );
    }
}
