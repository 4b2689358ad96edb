//! What can go wrong in a command, how it is reported, and the exit status it gives.
//!
//! Every command returns `Result<(), Error>`; `main` hands the outcome to [`report`], which prints
//! the message once (prefixed with the canonical command name, as Multipass does:
//! `list failed: ...`) and turns it into the process's exit status.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use rpc::Address;

/// The exit statuses of `multipass`, documented in the top-level `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command succeeded.
    Success = 0,
    /// The command line (arguments, prompted input or client environment) was not usable.
    Usage = 1,
    /// The daemon answered with an error, or the client failed locally.
    Failed = 2,
    /// The daemon could not be reached.
    Unreachable = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Error {
    /// Unusable input, printed as it is, without the command prefix (`No passphrase given`).
    Usage(String),
    /// Unusable client environment (`MULTIPASS_SERVER_ADDRESS`, no `HOME`): exit 1.
    Config(anyhow::Error),
    /// The daemon could not be reached: exit 3.
    Unreachable(Unreachable),
    /// The daemon answered with an error status (exit 2), or the transport failed under the call
    /// (exit 3).
    Status(tonic::Status),
    /// Something failed on the client's side: exit 2.
    Local(anyhow::Error),
    /// Writing to stdout failed. A broken pipe (`multipass list | head -0`) is success.
    Stdout(io::Error),
}

impl From<Unreachable> for Error {
    fn from(u: Unreachable) -> Error {
        Error::Unreachable(u)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        Error::Status(status)
    }
}

/// Whether a status was made on this side of the connection from a transport failure, rather
/// than sent by the daemon. Statuses decoded from the wire never carry a source; tonic attaches
/// the underlying error to the ones it makes from connection failures: UNAVAILABLE when it
/// could not connect, UNKNOWN ("transport error") when the connection broke under the call (the
/// daemon restarting), with the transport's or the system's error under it.
fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let Some(first) = status.source() else {
        return false;
    };
    match status.code() {
        tonic::Code::Unavailable => return true,
        // Other codes with a source come from the daemon's HTTP/2 frames (a reset stream, a
        // GOAWAY with a reason): answers, not a lost connection.
        tonic::Code::Unknown => {}
        _ => return false,
    }
    let mut source = Some(first);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The text of a status: its message, or the code's description when the message is empty.
fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    }
}

impl Error {
    /// The exit status this error gives.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) | Error::Config(_) => Exit::Usage,
            Error::Unreachable(_) => Exit::Unreachable,
            Error::Status(status) if is_transport_failure(status) => Exit::Unreachable,
            Error::Status(_) | Error::Local(_) => Exit::Failed,
            Error::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Success,
            Error::Stdout(_) => Exit::Failed,
        }
    }

    /// What to print on stderr for this error in `command`; `None` when nothing should be.
    pub fn message(&self, command: &str) -> Option<String> {
        Some(match self {
            Error::Usage(text) => text.clone(),
            Error::Config(e) | Error::Local(e) => format!("{command} failed: {e:#}"),
            Error::Unreachable(u) => format!("{command} failed: {u}"),
            Error::Status(status) if is_transport_failure(status) => {
                let mut text = format!(
                    "{command} failed: lost the connection to the daemon: {}",
                    status_text(status)
                );
                let mut source = std::error::Error::source(status);
                while let Some(e) = source {
                    let part = e.to_string();
                    if !text.contains(&part) {
                        text.push_str(": ");
                        text.push_str(&part);
                    }
                    source = e.source();
                }
                text.push_str(if status.code() == tonic::Code::Unavailable {
                    "\nThe daemon may have been restarting (a package upgrade, `systemctl \
                     restart`): run the command again."
                } else {
                    "\nThe connection broke during the command (the daemon restarting, for a \
                     package upgrade or `systemctl restart`?): it may or may not have taken \
                     effect."
                });
                text
            }
            Error::Status(status) => format!("{command} failed: {}", status_text(status)),
            Error::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => return None,
            Error::Stdout(e) => format!("{command} failed: cannot write to stdout: {e}"),
        })
    }
}

/// Print the outcome of `command` (if it failed) and turn it into the exit status.
pub fn report(command: &str, outcome: Result<(), Error>) -> ExitCode {
    match outcome {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            if let Some(message) = e.message(command) {
                eprintln!("{}", crate::output::for_terminal(&message));
            }
            e.exit().into()
        }
    }
}

/// The group of a socket that refused us, and this user's part in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    /// Its name (its number if it has none).
    pub name: String,
    /// Whether the group database lists this user in it although this process is not in it: the
    /// user was added after logging in, and gets the group at the next login.
    pub joined_since_login: bool,
}

/// Why the daemon could not be reached. The `Display` text is the whole message after
/// `<command> failed: `, hint lines included.
#[derive(Debug)]
pub enum Unreachable {
    /// The socket could not be opened.
    Dial {
        /// Where we tried.
        address: Address,
        /// What the operating system said.
        source: io::Error,
        /// The socket's group, looked up when permission was denied.
        socket_group: Option<SocketGroup>,
        /// Whether systemd has the daemon's socket unit here, looked up when the default socket
        /// is missing: without it the daemon's package is not installed (the client's alone is).
        service_installed: bool,
    },
    /// The root CA file, needed to verify the daemon, is missing, unreadable or invalid.
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why, with its whole chain.
        reason: String,
        /// Whether this user may not read it.
        denied: bool,
    },
    /// The daemon's certificate does not verify against the root CA file: the file is not the
    /// root CA of the daemon at that address.
    ServerNotVerified {
        /// Where we tried.
        address: Address,
        /// The root CA file used.
        root_cert: PathBuf,
        /// Whether `MULTIPASS_ROOT_CERT` chose it.
        from_env: bool,
        /// What TLS said.
        reason: String,
    },
    /// The daemon's certificate is not valid at this machine's time (expired, or not yet valid).
    ServerCertTime {
        /// Where we tried.
        address: Address,
        /// What TLS said.
        reason: String,
    },
    /// The TLS handshake failed.
    Tls {
        /// Where we tried.
        address: Address,
        /// Why.
        source: io::Error,
    },
    /// The daemon did not answer a call within [`crate::connect::ANSWER_TIMEOUT`].
    NoAnswer,
    /// HTTP/2 could not be set up over TLS, or another connection failure.
    Other {
        /// Where we tried.
        address: Address,
        /// Why, with its whole chain.
        reason: anyhow::Error,
    },
}

/// Where a message says we tried to connect: the socket path, or `HOST:PORT`.
fn target(address: &Address) -> String {
    match address {
        Address::Unix(path) => path.display().to_string(),
        Address::Tcp(hostport) => hostport.clone(),
    }
}

/// The operating system's text for an error, without Rust's ` (os error N)` suffix.
fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// A dial error that means nobody listens at the address.
fn not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Dial {
                address,
                source,
                socket_group,
                service_installed,
            } => {
                let at = target(address);
                if not_running(source) {
                    writeln!(
                        f,
                        "cannot connect to the multipass socket at {at}: the daemon is not running ({})",
                        os_text(source)
                    )?;
                    match address {
                        Address::Unix(path)
                            if path.as_os_str() == trust::paths::DEFAULT_SOCKET
                                && !service_installed =>
                        {
                            f.write_str(
                                "The daemon is not installed on this machine (systemd has no \
                                 multipass.socket unit): install the package 'multipass', or set \
                                 MULTIPASS_SERVER_ADDRESS to reach a daemon elsewhere.",
                            )
                        }
                        Address::Unix(path)
                            if path.as_os_str() == trust::paths::DEFAULT_SOCKET =>
                        {
                            f.write_str(
                                "Start it with 'sudo systemctl start multipass.socket', or set MULTIPASS_SERVER_ADDRESS.",
                            )
                        }
                        Address::Unix(_) => f.write_str(
                            "Check that multipassd listens there, or set MULTIPASS_SERVER_ADDRESS.",
                        ),
                        Address::Tcp(_) => write!(
                            f,
                            "Check that multipassd listens on {at}, or set MULTIPASS_SERVER_ADDRESS."
                        ),
                    }
                } else if source.kind() == io::ErrorKind::PermissionDenied {
                    writeln!(
                        f,
                        "cannot connect to the multipass socket at {at}: permission denied"
                    )?;
                    // The client cannot tell whether a client is trusted yet: the socket's
                    // mode is what says so, and it is what just refused us.
                    // The socket's group is the admin group once the daemon (or the helper) has
                    // set the socket up; a daemon run by hand without root cannot, so the group
                    // is named as the socket's, not as the administrators'.
                    let group = socket_group.as_ref().map(|g| g.name.as_str());
                    let admins = match group {
                        Some("root" | "0") => "root".to_string(),
                        Some(group) => {
                            format!("root and the members of the socket's group, '{group}',")
                        }
                        None => "root and the members of the socket's group".to_string(),
                    };
                    let you = match socket_group {
                        Some(SocketGroup {
                            name,
                            joined_since_login: true,
                        }) => format!(
                            "This user was added to '{name}' after this login began, so it is not \
                             in it yet: log in again (or run `newgrp {name}`).\n"
                        ),
                        _ => "Anyone else: ask an administrator to run a multipass command \
                              first (e.g. `multipass list`, as themselves); then get in with \
                              `multipass authenticate` and the passphrase or a one-time token \
                              they give you.\n"
                            .to_string(),
                    };
                    // By its full path: the package installs it in /usr/libexec, which is not
                    // on sudo's secure_path. Its defaults are the packaged daemon's.
                    let helper = "sudo /usr/libexec/multipassd-helper";
                    let fix = match address {
                        Address::Unix(path) if path.as_os_str() != trust::paths::DEFAULT_SOCKET => {
                            format!(
                                "`{helper} --socket {} --data-dir DIR --admin-group GROUP \
                                 apply-socket-policy`, with the daemon's own state directory \
                                 and admin group",
                                path.display()
                            )
                        }
                        _ => format!("`{helper} apply-socket-policy`"),
                    };
                    write!(
                        f,
                        "The socket does not let this user connect. While no client is trusted, \
                         only {admins} can; once one is, everybody can.\n\
                         {you}\
                         If a client is trusted already, an administrator can fix the socket's \
                         access: {fix}."
                    )
                } else {
                    write!(
                        f,
                        "cannot connect to the multipass socket at {at}: {source}"
                    )
                }
            }
            Unreachable::RootCert {
                path,
                reason,
                denied: true,
            } => write!(
                f,
                "cannot read the daemon's root certificate {}: {reason}\n\
                 Every user must be able to read it: the daemon gives it mode 0644 when it \
                 starts and within a second of a change while it runs. If it stays unreadable, \
                 restart the daemon ('sudo systemctl restart multipass').",
                path.display()
            ),
            Unreachable::RootCert { path, reason, .. } => write!(
                f,
                "cannot read the daemon's root certificate {}: {reason}\n\
                 Set MULTIPASS_ROOT_CERT if the daemon keeps it elsewhere.",
                path.display()
            ),
            Unreachable::ServerNotVerified {
                address,
                root_cert,
                from_env,
                reason,
            } => {
                writeln!(f, "TLS handshake with {address} failed: {reason}")?;
                let file = root_cert.display();
                if *from_env {
                    write!(
                        f,
                        "The daemon's certificate is not signed by the root certificate {file} \
                         that MULTIPASS_ROOT_CERT names. Check that MULTIPASS_ROOT_CERT names the \
                         multipass_root_cert.pem in the data directory of the daemon at \
                         {address}, or unset it to use {}.",
                        trust::paths::DataDir::default().root_cert().display()
                    )
                } else {
                    write!(
                        f,
                        "The daemon's certificate is not signed by the root certificate {file}. \
                         If the daemon at {address} keeps its data elsewhere, set \
                         MULTIPASS_ROOT_CERT to the multipass_root_cert.pem in its data \
                         directory. If it keeps it there, its certificates changed on disk \
                         while it ran: it presents what the files hold within a second, so try \
                         again; if that fails too, restart it ('sudo systemctl restart \
                         multipass')."
                    )
                }
            }
            Unreachable::ServerCertTime { address, reason } => write!(
                f,
                "TLS handshake with {address} failed: {reason}\n\
                 The daemon's certificate is not valid at this machine's time: check the clock \
                 ('timedatectl'). The daemon replaces a certificate that is not valid at its own \
                 time before presenting it; if both clocks are right, restart it ('sudo \
                 systemctl restart multipass')."
            ),
            Unreachable::Tls { address, source } => {
                write!(f, "TLS handshake with {address} failed: {source}")?;
                let mut next = std::error::Error::source(source);
                while let Some(e) = next {
                    write!(f, ": {e}")?;
                    next = e.source();
                }
                Ok(())
            }
            Unreachable::Other { address, reason } => {
                write!(f, "cannot talk to the daemon at {address}: {reason:#}")
            }
            Unreachable::NoAnswer => write!(
                f,
                "the daemon did not answer within {} s: it is stopped, stuck or overloaded",
                crate::connect::ANSWER_TIMEOUT.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str) -> Address {
        Address::Unix(PathBuf::from(path))
    }

    fn dial(address: Address, errno: nix::errno::Errno, group: Option<&str>) -> String {
        let e = Error::Unreachable(Unreachable::Dial {
            address,
            source: io::Error::from_raw_os_error(errno as i32),
            socket_group: group.map(|name| SocketGroup {
                name: name.to_string(),
                joined_since_login: false,
            }),
            service_installed: true,
        });
        assert_eq!(e.exit(), Exit::Unreachable);
        e.message("list").unwrap()
    }

    #[test]
    fn socket_missing() {
        assert_eq!(
            dial(unix("/run/multipass_socket"), nix::errno::Errno::ENOENT, None),
            "list failed: cannot connect to the multipass socket at /run/multipass_socket: \
             the daemon is not running (No such file or directory)\n\
             Start it with 'sudo systemctl start multipass.socket', or set MULTIPASS_SERVER_ADDRESS."
        );
        // A socket of one's own: systemd's unit is not what is missing.
        assert!(
            dial(unix("/tmp/mine.sock"), nix::errno::Errno::ENOENT, None)
                .ends_with("Check that multipassd listens there, or set MULTIPASS_SERVER_ADDRESS.")
        );
        // The client's package alone: there is nothing to start.
        let e = Error::Unreachable(Unreachable::Dial {
            address: unix("/run/multipass_socket"),
            source: io::Error::from_raw_os_error(nix::errno::Errno::ENOENT as i32),
            socket_group: None,
            service_installed: false,
        });
        assert!(
            e.message("list").unwrap().ends_with(
                "\nThe daemon is not installed on this machine (systemd has no multipass.socket \
                 unit): install the package 'multipass', or set MULTIPASS_SERVER_ADDRESS to \
                 reach a daemon elsewhere."
            ),
            "{}",
            e.message("list").unwrap()
        );
    }

    #[test]
    fn socket_refused() {
        assert_eq!(
            dial(unix("/tmp/s"), nix::errno::Errno::ECONNREFUSED, None),
            "list failed: cannot connect to the multipass socket at /tmp/s: \
             the daemon is not running (Connection refused)\n\
             Check that multipassd listens there, or set MULTIPASS_SERVER_ADDRESS."
        );
    }

    #[test]
    fn tcp_refused_names_the_address() {
        assert_eq!(
            dial(
                Address::Tcp("localhost:50051".into()),
                nix::errno::Errno::ECONNREFUSED,
                None
            ),
            "list failed: cannot connect to the multipass socket at localhost:50051: \
             the daemon is not running (Connection refused)\n\
             Check that multipassd listens on localhost:50051, or set MULTIPASS_SERVER_ADDRESS."
        );
    }

    #[test]
    fn permission_denied_names_the_administrators_and_the_fix() {
        assert_eq!(
            dial(
                unix("/run/multipass_socket"),
                nix::errno::Errno::EACCES,
                Some("sudo")
            ),
            "list failed: cannot connect to the multipass socket at /run/multipass_socket: permission denied\n\
             The socket does not let this user connect. While no client is trusted, only \
             root and the members of the socket's group, 'sudo', can; once one is, everybody \
             can.\n\
             Anyone else: ask an administrator to run a multipass command first (e.g. \
             `multipass list`, as themselves); then get in with `multipass authenticate` and the \
             passphrase or a one-time token they give you.\n\
             If a client is trusted already, an administrator can fix the socket's access: \
             `sudo /usr/libexec/multipassd-helper apply-socket-policy`."
        );
        // Whether a client is trusted already, the client cannot know: it claims neither.
        let text = dial(unix("/s"), nix::errno::Errno::EACCES, Some("sudo"));
        assert!(!text.contains("Until"), "{text}");
        assert!(dial(unix("/s"), nix::errno::Errno::EACCES, None)
            .contains("only root and the members of the socket's group can;"));
        // A socket of one's own: the helper is told which, and the daemon's other settings.
        assert!(text.contains(
            "`sudo /usr/libexec/multipassd-helper --socket /s --data-dir DIR --admin-group GROUP \
             apply-socket-policy`"
        ));
    }

    #[test]
    fn permission_denied_on_a_root_group_socket_names_root_alone() {
        for group in ["root", "0"] {
            let text = dial(unix("/s"), nix::errno::Errno::EACCES, Some(group));
            assert!(
                text.contains("While no client is trusted, only root can;"),
                "{group}: {text}"
            );
            let who = text.split("If a client").next().unwrap_or_default();
            assert!(!who.contains("group"), "{group}: {text}");
        }
    }

    #[test]
    fn other_dial_errors_show_the_os_error() {
        assert_eq!(
            dial(unix("/s"), nix::errno::Errno::ENOTSOCK, None),
            "list failed: cannot connect to the multipass socket at /s: \
             Socket operation on non-socket (os error 88)"
        );
    }

    #[test]
    fn root_cert_problems() {
        let e = Error::Unreachable(Unreachable::RootCert {
            path: PathBuf::from("/var/lib/multipassd/multipass_root_cert.pem"),
            reason: io::Error::from(io::ErrorKind::NotFound).to_string(),
            denied: false,
        });
        assert_eq!(e.exit(), Exit::Unreachable);
        let text = e.message("get").unwrap();
        assert!(text.starts_with(
            "get failed: cannot read the daemon's root certificate \
             /var/lib/multipassd/multipass_root_cert.pem: entity not found\n"
        ));
        assert!(text.contains("MULTIPASS_ROOT_CERT"), "{text}");
    }

    #[test]
    fn tls_failure_shows_the_chain() {
        #[derive(Debug)]
        struct Inner;
        impl fmt::Display for Inner {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("invalid peer certificate: UnknownIssuer")
            }
        }
        impl std::error::Error for Inner {}
        let e = Error::Unreachable(Unreachable::Tls {
            address: unix("/run/multipass_socket"),
            source: io::Error::new(io::ErrorKind::InvalidData, Inner),
        });
        assert_eq!(e.exit(), Exit::Unreachable);
        assert_eq!(
            e.message("version").unwrap(),
            "version failed: TLS handshake with unix:/run/multipass_socket failed: \
             invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn a_root_certificate_that_is_not_the_daemons_names_the_variable() {
        let e = Error::Unreachable(Unreachable::ServerNotVerified {
            address: unix("/tmp/s"),
            root_cert: PathBuf::from("/tmp/other-ca.pem"),
            from_env: true,
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert_eq!(e.exit(), Exit::Unreachable);
        let text = e.message("list").unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "list failed: TLS handshake with unix:/tmp/s failed: invalid peer certificate: \
                 UnknownIssuer"
            )
        );
        let hint = lines.next().unwrap();
        assert!(
            hint.contains("/tmp/other-ca.pem that MULTIPASS_ROOT_CERT names")
                && hint.contains("unset it to use /var/lib/multipassd/multipass_root_cert.pem"),
            "{hint}"
        );

        let e = Error::Unreachable(Unreachable::ServerNotVerified {
            address: unix("/run/multipass_socket"),
            root_cert: PathBuf::from("/var/lib/multipassd/multipass_root_cert.pem"),
            from_env: false,
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert!(e
            .message("list")
            .unwrap()
            .contains("set MULTIPASS_ROOT_CERT to the multipass_root_cert.pem"));
    }

    #[test]
    fn daemon_statuses_exit_2_with_the_message() {
        let e = Error::Status(tonic::Status::unauthenticated(
            "The client is not authenticated with the Multipass service.\n\
             Please use 'multipass authenticate' before proceeding.",
        ));
        assert_eq!(e.exit(), Exit::Failed);
        assert_eq!(
            e.message("list").unwrap(),
            "list failed: The client is not authenticated with the Multipass service.\n\
             Please use 'multipass authenticate' before proceeding."
        );
        // UNAVAILABLE sent by the daemon is an answer, not a transport failure.
        let e = Error::Status(tonic::Status::unavailable("shutting down"));
        assert_eq!(e.exit(), Exit::Failed);
        // An empty message falls back to the code's description.
        let e = Error::Status(tonic::Status::new(tonic::Code::Internal, ""));
        assert_eq!(e.message("get").unwrap(), "get failed: Internal error");
    }

    #[test]
    fn transport_failures_exit_3() {
        // A connection broken under the call: tonic makes it UNKNOWN, the error under it.
        let status = tonic::Status::from_error(Box::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(status.code(), tonic::Code::Unknown);
        let e = Error::Status(status);
        assert_eq!(e.exit(), Exit::Unreachable);
        assert!(
            e.message("list").unwrap().starts_with(
                "list failed: lost the connection to the daemon: connection reset by peer\n\
                 The connection broke during the command"
            ),
            "{}",
            e.message("list").unwrap()
        );
        // UNKNOWN sent by the daemon is an answer.
        let e = Error::Status(tonic::Status::unknown("transport error"));
        assert_eq!(e.exit(), Exit::Failed);
        // So is a stream the daemon's HTTP/2 reset (INTERNAL, with the error under it).
        let mut status = tonic::Status::internal("h2 protocol error");
        status.set_source(std::sync::Arc::new(io::Error::other("stream reset")));
        assert_eq!(Error::Status(status).exit(), Exit::Failed);
        // Could not connect: UNAVAILABLE, made the way tonic's channel does.
        let mut status = tonic::Status::unavailable("error trying to connect");
        status.set_source(std::sync::Arc::new(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        let e = Error::Status(status);
        assert_eq!(e.exit(), Exit::Unreachable);
        assert_eq!(
            e.message("list").unwrap(),
            "list failed: lost the connection to the daemon: error trying to connect: connection \
             refused\nThe daemon may have been restarting (a package upgrade, `systemctl \
             restart`): run the command again."
        );
    }

    #[test]
    fn usage_errors_exit_1_without_prefix() {
        let e = Error::Usage("No passphrase given".into());
        assert_eq!(e.exit(), Exit::Usage);
        assert_eq!(e.message("authenticate").unwrap(), "No passphrase given");
        let e = Error::Config(anyhow::anyhow!("bad address"));
        assert_eq!(e.exit(), Exit::Usage);
        assert_eq!(e.message("list").unwrap(), "list failed: bad address");
    }

    #[test]
    fn local_failures_exit_2() {
        let e = Error::Local(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(e.exit(), Exit::Failed);
        assert_eq!(e.message("set").unwrap(), "set failed: outer: inner");
    }

    #[test]
    fn broken_pipe_is_success() {
        let e = Error::Stdout(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(e.exit(), Exit::Success);
        assert_eq!(e.message("list"), None);
        let e = Error::Stdout(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(e.exit(), Exit::Failed);
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        assert_eq!(Exit::Success as u8, 0);
        assert_eq!(Exit::Usage as u8, 1);
        assert_eq!(Exit::Failed as u8, 2);
        assert_eq!(Exit::Unreachable as u8, 3);
    }
}
