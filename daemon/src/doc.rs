//! The parts of `multipassd(8)` that are not about one option: the files the daemon keeps, the
//! signals it handles and its exit statuses. `multipass-docgen` renders them as man page sections.

/// The daemon's files, relative to the default `--data-dir` and socket.
pub const FILES: &[(&str, &str)] = &[
    (
        "/run/multipass_socket",
        "The socket clients connect to (--address). Under systemd, multipass.socket owns it and \
         starts the daemon on the first connection; its ExecStartPost= hook (multipassd-helper \
         apply-socket-policy) gives it root:<admin group> mode 0660 while no client is trusted, \
         root:root 0666 once one is.",
    ),
    (
        "/var/lib/multipassd/",
        "The state directory (--data-dir), mode 0711, owned by the multipassd user.",
    ),
    (
        "/var/lib/multipassd/authenticated-certs/multipass_client_certs.pem",
        "The trust store: the PEM certificates of the trusted clients, each optionally preceded \
         by name:, uid:, user:, how: and when: lines. Appending a certificate by hand trusts it at \
         once, without a restart, and the daemon's own appends and rewrites keep it; only a hand \
         append that lands in the very instant of a removal's rename is lost with the old file.",
    ),
    (
        "/var/lib/multipassd/multipassd.conf",
        "Settings, INI: [General] local.passphrase holds the passphrase's Argon2id hash (a legacy \
         Multipass scrypt hash is still accepted and replaced on the next successful \
         authentication).",
    ),
    (
        "/var/lib/multipassd/multipass_root_cert.pem",
        "The root CA certificate clients verify the daemon against (mode 0644).",
    ),
    (
        "/var/lib/multipassd/certificates/",
        "The root CA's key and the server certificate and key (localhost.pem, localhost_key.pem); \
         the server certificate is renewed before it expires.",
    ),
    (
        "/var/lib/multipassd/enrollment-tokens",
        "The one-time enrollment tokens: the SHA-256 of each, never the token (mode 0600).",
    ),
    (
        "/var/lib/multipassd/last-seen",
        "When each trusted client was last seen (mode 0600).",
    ),
];

/// The signals the daemon handles.
pub const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGTERM, SIGINT",
        "Stop accepting connections (those still queued on the socket wait for the next \
         start), serve the ones accepted to their end, tell those still open after 2 seconds to \
         go away and finish their requests in flight (for at most 10 more seconds), and exit \
         with status 0.",
    ),
    (
        "SIGHUP",
        "Not handled, so it ends the daemon like any unhandled signal. There is nothing to \
         reload: the trust store and the settings are re-read whenever they change.",
    ),
];

/// What each exit status means.
pub const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Stopped by SIGTERM or SIGINT."),
    (
        "1",
        "Could not start or serve: a socket that cannot be bound or taken from systemd, an \
         unusable state directory, capabilities that cannot be dropped. The reason is on \
         standard error and in the journal.",
    ),
    ("2", "Invalid command-line arguments."),
    (
        "75",
        "Exited after --idle-timeout seconds without a connection. Not a failure: under socket \
         activation systemd starts the daemon again on the next connection (the unit lists 75 in \
         SuccessExitStatus=).",
    ),
];
