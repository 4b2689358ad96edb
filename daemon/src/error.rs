//! The daemon's errors, and the one place that decides what a client sees of them.

use std::time::Duration;

use tonic::Status;
use trust::tokens::TokenError;

pub use rpc::messages::{NOT_AUTHENTICATED, PASSPHRASE_INCORRECT, PASSPHRASE_NOT_SET};

/// Fewest hex digits accepted as a fingerprint prefix: shorter ones match by accident.
pub const MIN_PREFIX: usize = 4;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's certificate is not trusted (or it presented none).
    #[error("{NOT_AUTHENTICATED}")]
    NotAuthenticated,
    /// Nobody is trusted, and the caller is not an administrator, who alone may be the first
    /// client: the Multipass message, then why, and who is one.
    #[error("{NOT_AUTHENTICATED}\n{}", not_first_client(.group.as_deref()))]
    NotFirstClient {
        /// The admin group as it exists now, if any.
        group: Option<String>,
    },
    /// A gated request from a client that is not trusted: the Multipass message (two lines that
    /// stock clients and scripts know), then one line on how to get in. It says whether any
    /// client is trusted yet, never which nor how many.
    #[error("{NOT_AUTHENTICATED}\n{}", untrusted_hint(*.trusted, *.over_tcp))]
    Untrusted {
        /// Clients trusted now.
        trusted: usize,
        /// Whether the request came over TCP, where no client becomes the first.
        over_tcp: bool,
    },
    /// Authenticate without a client certificate: there is nothing to trust.
    #[error("No client certificate was presented, so there is nothing to authenticate. Please use a client that presents its certificate.")]
    NoClientCertificate,
    /// Authenticate while no passphrase is set: Multipass's line, then the ways in that need none;
    /// for the administrator whose next command of any other kind would make it the first
    /// client, that one.
    #[error("{PASSPHRASE_NOT_SET}\n{}", if *.first_client {
        "No client is trusted yet, and this user is an administrator: any other command (e.g. \
         'multipass list') trusts the client that runs it as the first one (under sudo, root's \
         client, not the user's); then set the passphrase for the others ('multipass set \
         local.passphrase')."
    } else {
        "An administrator can trust a client without a passphrase ('multipass authenticate \
         --admin'); anyone else can be given a one-time token by an administrator ('multipass \
         trust token create'), which 'multipass authenticate' takes."
    })]
    PassphraseNotSet {
        /// Whether the caller's next gated request would trust its client as the first one.
        first_client: bool,
    },
    /// Authenticate with the wrong passphrase.
    #[error("{PASSPHRASE_INCORRECT}")]
    PassphraseIncorrect,
    /// Too many failed attempts from this user.
    #[error("Too many failed authentication attempts. Please try again in {}.", seconds(.retry_after.as_secs().max(1)))]
    RateLimited {
        /// How long until the next attempt is accepted.
        retry_after: Duration,
    },
    /// The user has as many clients trusted by the passphrase as one user may.
    #[error("This user has {limit} clients trusted with the passphrase already, the most one user may have, so no more are trusted that way. An administrator can remove unused ones (`multipass trust list`, then `multipass trust remove NAME`) or give you a one-time token, which 'multipass authenticate' asks for.")]
    TooManyClients {
        /// The most one user may have.
        limit: usize,
    },
    /// A request of a kind paced per peer whose turn is too far off to wait for.
    #[error("Too many {what} from this user (or address). Please try again in {}.", seconds(.retry_after.as_secs().max(1)))]
    Paced {
        /// What was asked for too often, in the plural.
        what: &'static str,
        /// How long until its turn.
        retry_after: Duration,
    },
    /// More passphrase checks are queued than the daemon accepts at once.
    #[error("The service is busy checking other passphrases. Please try again.")]
    Busy,
    /// `get`/`set` of a key this service does not have. What follows a `=` in it (a value typed
    /// after `get`'s key by mistake, perhaps a passphrase) is not shown back.
    #[error("Unrecognized settings key: '{}'", trust::settings::shown_key(.0))]
    UnknownKey(String),
    /// A settings value that cannot be stored.
    #[error("Invalid setting '{key}': {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// What is wrong with the value (never the value itself).
        reason: String,
    },
    /// The client closed its request stream without sending a request.
    #[error("No request received.")]
    NoRequest,
    /// A token named after a client trusted already: its client could not be trusted under
    /// that name, and the name would then designate another client in `trust remove`.
    #[error("A trusted client is named '{0}' already, and a name designates one client. Please choose another name for the token, or remove that client first ('multipass trust remove {0}').")]
    ClientNameTaken(String),
    /// `trust remove` with an id that is neither a client's name nor a fingerprint prefix of one.
    #[error("No trusted client is named '{0}' or has a fingerprint starting with it.")]
    NoSuchClient(String),
    /// `trust remove` with an id too short to be meant as a fingerprint prefix.
    #[error("No trusted client is named '{0}'; a fingerprint prefix needs at least {min} hex digits.", min = MIN_PREFIX)]
    ClientIdTooShort(String),
    /// `trust remove` with an id that matches more than one client: nothing is removed.
    #[error("'{id}' matches {} trusted clients ({}); nothing was removed. Please give a longer fingerprint prefix.", .candidates.len(), .candidates.join(", "))]
    AmbiguousClient {
        /// What was asked for.
        id: String,
        /// `<fingerprint prefix> (<name>)` of each match.
        candidates: Vec<String>,
    },
    /// Trust management that needs an administrator (removing another client, enrollment
    /// tokens), asked by a trusted client that is not one now, or over TCP.
    #[error("{}", not_administrator(.action, .group.as_deref(), *.over_tcp))]
    NotAdministrator {
        /// What was asked, e.g. "create enrollment tokens".
        action: &'static str,
        /// The admin group as it exists now, if any.
        group: Option<String>,
        /// Whether the request came over TCP, where nobody is an administrator.
        over_tcp: bool,
    },
    /// An enrollment token was refused (its message says why), or a token request was invalid.
    #[error("{0}")]
    Token(TokenError),
    /// A Multipass method this service does not provide.
    #[error("{}", rpc::messages::not_available(.0))]
    Unimplemented(&'static str),
    /// Storage failed (disk full, read-only, permissions...).
    #[error("The service could not complete the request: {0}")]
    Storage(#[from] trust::Error),
    /// A blocking task died.
    #[error("The service could not complete the request: internal error")]
    Internal,
}

/// `n` seconds, in words: "1 second", "4 seconds".
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".to_string()
    } else {
        format!("{n} seconds")
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = match &err {
            // The whole chain, so a failing write says why ("No space left on device"); trust
            // errors carry paths, never secrets.
            Error::Storage(inner) => {
                let mut text = format!("The service could not complete the request: {inner}");
                let mut source = std::error::Error::source(inner);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            }
            other => other.to_string(),
        };
        match err {
            Error::NotAuthenticated | Error::Untrusted { .. } | Error::NotFirstClient { .. } => {
                Status::unauthenticated(message)
            }
            Error::NoClientCertificate => Status::unauthenticated(message),
            Error::PassphraseNotSet { .. } => Status::failed_precondition(message),
            Error::PassphraseIncorrect => Status::invalid_argument(message),
            Error::RateLimited { .. }
            | Error::Paced { .. }
            | Error::Busy
            | Error::TooManyClients { .. } => Status::resource_exhausted(message),
            Error::UnknownKey(_) | Error::InvalidValue { .. } | Error::NoRequest => {
                Status::invalid_argument(message)
            }
            Error::Unimplemented(_) => Status::unimplemented(message),
            Error::NotAdministrator { .. } => Status::permission_denied(message),
            Error::NoSuchClient(_) => Status::not_found(message),
            Error::ClientNameTaken(_) => Status::already_exists(message),
            Error::ClientIdTooShort(_) | Error::AmbiguousClient { .. } => {
                Status::invalid_argument(message)
            }
            Error::Token(refusal) => match refusal {
                TokenError::NameTaken(_) => Status::already_exists(message),
                TokenError::TooMany => Status::resource_exhausted(message),
                TokenError::NoSuchToken(_) | TokenError::NoSuchTokenValue => {
                    Status::not_found(message)
                }
                TokenError::AlreadyUsed { .. } => Status::failed_precondition(message),
                // A refused redemption answers like a wrong passphrase, which stock clients know.
                TokenError::InvalidName { .. }
                | TokenError::InvalidLifetime
                | TokenError::Refused(_) => Status::invalid_argument(message),
                _ => Status::internal(message),
            },
            Error::Storage(_) | Error::Internal => Status::internal(message),
        }
    }
}

/// Who may do `action`, and how: trust management is an administrator's right.
fn not_administrator(action: &str, group: Option<&str>, over_tcp: bool) -> String {
    let who = match group {
        Some(group) => format!("root or by a member of the '{group}' group"),
        None => "root (no admin group exists on this system)".to_string(),
    };
    if over_tcp {
        return format!(
            "Nobody can {action} over TCP: it needs an administrator's client on the local \
             socket, run by {who}."
        );
    }
    let how = match group {
        Some(group) => format!("with `sudo`, or as a member of '{group}'"),
        None => "with `sudo`".to_string(),
    };
    format!(
        "Only an administrator can {action}: a client run by {who}. Run the command {how}; if \
         that client is not trusted yet, `multipass authenticate --admin` trusts it."
    )
}

/// The line after the Multipass message for a client that would have been the first but for not
/// being an administrator's.
fn not_first_client(group: Option<&str>) -> String {
    let who = match group {
        Some(group) => format!("root or a member of the '{group}' group, which this user is not"),
        None => "root (no admin group exists on this system)".to_string(),
    };
    format!(
        "No client is trusted yet, and only an administrator's client becomes the first: one run \
         by {who}. An administrator becomes the first client by running any 'multipass' command \
         as themselves. Then, to have this client trusted, {HOW_TO_BE_TRUSTED}"
    )
}

/// How an untrusted client gets in. Said so that whoever reads it knows who runs what: `--admin`
/// trusts the client of whoever runs it, with an administrator's password, and a token is typed
/// at the prompt, not given on the command line where other users can see it.
const HOW_TO_BE_TRUSTED: &str = "run 'multipass authenticate', which asks for the passphrase or a \
     one-time token from an administrator, or 'multipass authenticate --admin' to be trusted with \
     an administrator's password.";

/// How a client over TCP gets in: `--admin` asks the helper of the client's own host, which
/// trusts it in the packaged daemon's store there, not in the store of a daemon elsewhere.
const HOW_TO_BE_TRUSTED_OVER_TCP: &str = "run 'multipass authenticate', which asks for the \
     passphrase or a one-time token from an administrator ('multipass authenticate --admin' \
     trusts a client only on the daemon's own host).";

/// The line after the Multipass message for an untrusted client.
fn untrusted_hint(trusted: usize, over_tcp: bool) -> String {
    let how = if over_tcp {
        HOW_TO_BE_TRUSTED_OVER_TCP
    } else {
        HOW_TO_BE_TRUSTED
    };
    match (trusted, over_tcp) {
        (0, false) => format!(
            "No client is trusted yet: an administrator becomes the first client by running any \
             'multipass' command. Then, to have this client trusted, {how}"
        ),
        (0, true) => format!(
            "No client is trusted yet, and over TCP no client becomes the first: an \
             administrator on the daemon's host becomes it through the daemon's Unix socket or \
             'multipass authenticate --admin'. Then, to have this client trusted, {how}"
        ),
        _ => format!("To have this client trusted, {how}"),
    }
}

impl From<TokenError> for Error {
    fn from(err: TokenError) -> Error {
        match err {
            // A failing file is the service's problem, reported like every other storage failure.
            TokenError::Storage(inner) => Error::Storage(inner),
            // Its client was removed while the request waited for the token file.
            TokenError::Withdrawn => Error::NotAuthenticated,
            refusal => Error::Token(refusal),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(_: tokio::task::JoinError) -> Error {
        Error::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_keeps_multipass_lines_and_adds_one() {
        for (trusted, over_tcp, count) in [
            (
                0,
                false,
                "No client is trusted yet: an administrator becomes the first client",
            ),
            (
                0,
                true,
                "No client is trusted yet, and over TCP no client becomes the first",
            ),
            (1, false, "To have this client trusted"),
            (7, true, "To have this client trusted"),
        ] {
            let status = Status::from(Error::Untrusted { trusted, over_tcp });
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            let lines: Vec<&str> = status.message().lines().collect();
            assert_eq!(lines.len(), 3, "{}", status.message());
            assert_eq!(lines[..2].join("\n"), NOT_AUTHENTICATED);
            assert!(lines[2].starts_with(count), "{}", lines[2]);
            assert!(lines[2].contains("multipass authenticate --admin"));
            assert_eq!(
                lines[2].contains("only on the daemon's own host"),
                over_tcp,
                "{}",
                lines[2]
            );
            // Nothing a refused peer need not know, and no secret on a command line.
            assert!(!lines[2].contains(&trusted.to_string()) || trusted == 0);
            assert!(!lines[2].contains("TOKEN"), "{}", lines[2]);
        }
    }

    #[test]
    fn an_unknown_key_is_shown_without_a_value_typed_after_it() {
        let shown = Error::UnknownKey("local.passphrase=Sup3rSecret".into()).to_string();
        assert_eq!(shown, "Unrecognized settings key: 'local.passphrase=...'");
        let shown = Error::UnknownKey("local.nothing".into()).to_string();
        assert_eq!(shown, "Unrecognized settings key: 'local.nothing'");
    }

    #[test]
    fn token_refusals_answer_like_a_wrong_passphrase() {
        use trust::tokens::TokenRefusal;
        for refusal in [
            TokenRefusal::Unknown,
            TokenRefusal::Used,
            TokenRefusal::Expired,
            TokenRefusal::Revoked,
        ] {
            let text = refusal.to_string();
            let status = Status::from(Error::from(TokenError::from(refusal)));
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(status.message(), text);
        }
        let status = Status::from(Error::from(TokenError::NoSuchToken("x".into())));
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    #[test]
    fn a_failing_token_file_is_a_storage_error() {
        let inner = trust::Error::Write {
            path: "/var/lib/multipassd/enrollment-tokens".into(),
            source: std::io::Error::other("No space left on device"),
        };
        let status = Status::from(Error::from(TokenError::Storage(inner)));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status.message().ends_with("No space left on device"),
            "{status:?}"
        );
    }

    #[test]
    fn a_non_administrator_is_told_who_may_and_how() {
        let status = Status::from(Error::NotAdministrator {
            action: "create enrollment tokens",
            group: Some("sudo".into()),
            over_tcp: false,
        });
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "Only an administrator can create enrollment tokens: a client run by root or by a \
             member of the 'sudo' group. Run the command with `sudo`, or as a member of 'sudo'; \
             if that client is not trusted yet, `multipass authenticate --admin` trusts it."
        );
        let status = Status::from(Error::NotAdministrator {
            action: "list enrollment tokens",
            group: None,
            over_tcp: false,
        });
        assert!(
            status.message().contains("run by root (no admin group"),
            "{status:?}"
        );
        let status = Status::from(Error::NotAdministrator {
            action: "remove another client's trust",
            group: Some("wheel".into()),
            over_tcp: true,
        });
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .starts_with("Nobody can remove another client's trust over TCP"),
            "{status:?}"
        );
    }

    #[test]
    fn the_wait_is_said_in_whole_seconds() {
        let said = |millis| {
            Status::from(Error::RateLimited {
                retry_after: Duration::from_millis(millis),
            })
            .message()
            .to_string()
        };
        assert_eq!(
            said(300),
            "Too many failed authentication attempts. Please try again in 1 second."
        );
        assert!(said(1_000).ends_with("in 1 second."));
        assert!(said(4_000).ends_with("in 4 seconds."));
    }

    #[test]
    fn ambiguous_removal_names_the_candidates() {
        let status = Status::from(Error::AmbiguousClient {
            id: "twin".into(),
            candidates: vec!["aaaa (twin)".into(), "bbbb (twin)".into()],
        });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "'twin' matches 2 trusted clients (aaaa (twin), bbbb (twin)); nothing was removed. \
             Please give a longer fingerprint prefix."
        );
    }
}
