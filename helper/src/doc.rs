//! The parts of `multipassd-helper(8)` that are not about one option: the files the helper
//! reads and writes, its signals and its exit statuses. `multipass-docgen` renders them as man
//! page sections.

/// The files the helper reads and writes, at their default paths (`--data-dir`, `--socket`).
pub const FILES: &[(&str, &str)] = &[
    (
        "/usr/share/polkit-1/actions/io.multipass.policy",
        "The polkit actions: io.multipass.set-passphrase and io.multipass.trust-client \
         (auth_admin), io.multipass.manage-socket (no, except for the multipassd user through \
         /usr/share/polkit-1/rules.d/io.multipass.rules).",
    ),
    (
        "/usr/share/dbus-1/system.d/io.multipass.Helper1.conf",
        "The bus policy: only root may own io.multipass.Helper1; anyone may call it, polkit \
         decides.",
    ),
    (
        "/run/multipass_socket",
        "The daemon's socket, whose owner and mode the helper sets (--socket; never a path from \
         a caller).",
    ),
    (
        "/var/lib/multipassd/multipassd.conf",
        "Written by set-passphrase / SetPassphrase (the Argon2id hash, never the passphrase).",
    ),
    (
        "/var/lib/multipassd/authenticated-certs/multipass_client_certs.pem",
        "Read to decide the socket's access; written by trust-certificate / TrustCertificate. \
         The writes are made by a child process running as the state directory's owner, under \
         the lock the daemon uses.",
    ),
];

/// The signals the helper handles.
pub const SIGNALS: &[(&str, &str)] = &[(
    "SIGTERM, SIGINT",
    "serve: gives the bus name back, finishes the calls in flight (waiting at most 10 s for \
     them) and exits 0; systemd sends SIGTERM when the helper gives its name back, after an idle \
     exit or once its program was replaced. The other commands: not handled, the helper ends at \
     once. A write its writer process has begun is finished by that process, under the state \
     directory's lock: the settings file is replaced by a complete new one, and a certificate is appended to the trust store in one write, which a \
     kill of the writer itself can leave cut short (never acknowledged; readers skip it).",
)];

/// What each exit status means.
pub const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Done; for serve, it was idle for --idle-timeout seconds, its program was replaced (a \
         package upgrade), or it was told to stop; D-Bus starts it again on the next call.",
    ),
    (
        "1",
        "The operation failed or was refused (not root, invalid input, polkit did not authorize it, a write \
         failed); the reason is on standard error.",
    ),
    ("2", "Invalid command-line arguments."),
];
