//! `multipass authenticate [PASSPHRASE]`: have this client's certificate trusted by the daemon.

use clap::ValueHint;
use rpc::messages::{PASSPHRASE_INCORRECT, PASSPHRASE_NOT_SET};
use rpc::proto::{AuthenticateRequest, PingRequest};
use trust::passphrase::MAX_PASSPHRASE_LEN;
use trust::tokens::{token_in, TOKEN_BYTES, TOKEN_PREFIX};
use zeroize::Zeroizing;

use super::Context;
use crate::error::Error;
use crate::passphrase;

/// Authenticate this client with the multipass service
///
/// Have this client's certificate trusted by the multipass service, with the passphrase set from
/// a trusted client with `multipass set local.passphrase`, or with a one-time enrollment token
/// from `multipass trust token create`. Once it is trusted, the other commands work. Each user
/// (and root) has their own client: authenticate as the user who will run the commands.
///
/// The passphrase is asked for when it is not given, once the service has been reached: without
/// echo on a terminal, otherwise as one line of standard input (`echo "$PASSPHRASE" | multipass
/// authenticate`). Prefer either to the argument for a passphrase or a token: every user of the
/// machine can read command-line arguments while the command runs.
/// An empty answer is refused (`No passphrase given`), and so is one that is not UTF-8 text or
/// is longer than 1024 bytes. A token may come with blanks or a pair of quotes around it, as
/// copying often brings them.
///
/// The passphrase is checked even when this client is trusted already: a wrong one is refused,
/// the right one answers which name the client is trusted under. Wrong passphrases and tokens
/// make the service wait longer before each next attempt from the same user (over TCP, from the
/// same address); a user's right ones are checked at most two a second after the first ten (the
/// others wait their turn). On the local socket,
/// one user (root excepted) may have up to 100 clients trusted with the passphrase (each client
/// certificate is one); beyond that, an administrator removes unused ones or gives a token.
///
/// On a fresh service, which trusts no client yet, an administrator does not authenticate: any
/// other command (e.g. `multipass list`) trusts their client as the first one. An administrator
/// whose client is not trusted (because someone else was the first client) can trust it without a
/// passphrase: `multipass authenticate --admin` asks polkit, which asks for the administrator's
/// password (a client trusted already is told so, without asking).
#[derive(clap::Args)]
pub struct Args {
    /// The passphrase (prompted for when omitted)
    #[arg(value_name = "PASSPHRASE", conflicts_with = "admin", value_hint = ValueHint::Other)]
    passphrase: Option<String>,

    /// Trust this client through multipassd-helper instead, as an administrator (polkit asks
    /// for the administrator's password on a terminal)
    #[arg(long)]
    admin: bool,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("admin", &self.admin)
            .finish()
    }
}

/// Run `multipass authenticate`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    if args.admin {
        return run_admin(ctx).await;
    }
    let (mut client, mut passphrase) = match args.passphrase {
        Some(given) => {
            let given = checked(Zeroizing::new(given))?;
            (ctx.connect().await?, given)
        }
        None => {
            // Nobody should type the secret only to learn that the daemon cannot be reached.
            let client = ctx.connect().await?;
            let entered = passphrase::read_hidden(trust::passphrase::PROMPT, MAX_PASSPHRASE_LEN)
                .map_err(|e| e.into_error("passphrase", too_long))?;
            (client, checked(entered)?)
        }
    };

    // A token copied with the space or quotes around it would be sent as a passphrase, and
    // refused as one. Passphrases of a token's shape cannot be set, so this changes no real one.
    if let Some(token) = token_in(&passphrase) {
        let token = Zeroizing::new(token.to_string());
        passphrase = token;
    }
    let token_like = passphrase.trim().starts_with(TOKEN_PREFIX);

    // Move the passphrase into the request rather than copying it: the request is the one copy
    // left, and tonic drops it once it is encoded.
    let request = AuthenticateRequest {
        passphrase: std::mem::take(&mut *passphrase),
        verbosity_level: ctx.verbosity_level(),
    };
    let replies = ctx
        .replies(client.authenticate(tokio_stream::once(request)))
        .await
        .map_err(|e| explain_refusal(e, token_like))?;
    // The daemon says which name this client is now trusted under.
    ctx.show_log_lines(&replies)
}

/// `passphrase` if it can be sent.
fn checked(passphrase: Zeroizing<String>) -> Result<Zeroizing<String>, Error> {
    if passphrase.is_empty() {
        return Err(Error::Usage("No passphrase given".into()));
    }
    // The daemon would refuse it unread, or not even decode the request; a token is far shorter.
    if passphrase.len() > MAX_PASSPHRASE_LEN {
        return Err(too_long());
    }
    Ok(passphrase)
}

/// Add to a refused passphrase what a refused token most likely means, when what was entered
/// began as a token does: the service judged it as a passphrase because it is not a whole token.
fn explain_refusal(e: Error, token_like: bool) -> Error {
    let Error::Status(status) = e else { return e };
    let message = status.message();
    if !token_like
        || !(message.starts_with(PASSPHRASE_NOT_SET) || message.starts_with(PASSPHRASE_INCORRECT))
    {
        return Error::Status(status);
    }
    let text = format!(
        "{}\nWhat was entered starts like an enrollment token but is not one: a token is \
         `{TOKEN_PREFIX}` followed by {} lowercase hexadecimal digits. Check that it was copied \
         whole.",
        message.trim_end(),
        TOKEN_BYTES * 2
    );
    Error::Status(tonic::Status::new(status.code(), text))
}

/// A passphrase longer than the service accepts.
fn too_long() -> Error {
    Error::Usage(format!(
        "The passphrase is longer than {MAX_PASSPHRASE_LEN} bytes, the most the service accepts."
    ))
}

/// How long `authenticate --admin` asks the daemon whether its client is trusted already.
const ADMIN_PING_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `authenticate --admin`: have the helper trust this client's own certificate.
async fn run_admin(ctx: &Context) -> Result<(), Error> {
    // A client the daemon trusts already needs no administrator's password: the daemon is asked
    // first when it can be reached (`ping` answers trusted clients only, and trusts nobody), and
    // briefly: this is the way in when the daemon is in trouble.
    let asked = async {
        let mut client = ctx.connect().await?;
        crate::commands::answer(client.ping(PingRequest {})).await
    };
    if tokio::time::timeout(ADMIN_PING_WAIT, asked)
        .await
        .is_ok_and(|answer| answer.is_ok())
    {
        // Another daemon's (`MULTIPASS_SERVER_ADDRESS`) is named: the helper would have written
        // the packaged daemon's store, whatever that other daemon trusts.
        let by = match crate::connect::server_address() {
            Ok(address) if address != rpc::Address::default() => {
                format!(" by the daemon at {address}")
            }
            _ => String::new(),
        };
        crate::output::print_line(&format!(
            "This client is trusted already{by}; nothing was changed."
        ))?;
        return Ok(());
    }
    let identity = crate::connect::identity(ctx.trace())?;
    // A login name that is not a valid client name is not sent: the helper then records a
    // default it can accept.
    let name = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|name| trust::names::validate(name).is_ok())
        .unwrap_or_default();
    let fingerprint = crate::admin::trust_certificate(&identity.cert_pem, &name).await?;
    crate::output::print_line(&format!(
        "This client is now trusted (certificate {}).",
        trust::pki::short_hex(&fingerprint)
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::Command;

    #[test]
    fn passphrase_is_optional() {
        let Command::Authenticate(args) = parse(&["auth"]).unwrap().command else {
            panic!("not authenticate");
        };
        assert_eq!(args.passphrase, None);
        let Command::Authenticate(args) = parse(&["authenticate", "s3cret"]).unwrap().command
        else {
            panic!("not authenticate");
        };
        assert_eq!(args.passphrase.as_deref(), Some("s3cret"));
    }

    #[test]
    fn debug_hides_the_passphrase() {
        let text = format!("{:?}", parse(&["auth", "hunter2"]).unwrap());
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_refused_half_token_says_what_a_token_is() {
        for refusal in [
            tonic::Status::failed_precondition(
                "Passphrase is not set. Please `multipass set local.passphrase` with a trusted \
                 client.",
            ),
            tonic::Status::invalid_argument("Passphrase is not correct. Please try again."),
        ] {
            let first = refusal.message().to_string();
            let text = explain_refusal(Error::Status(refusal.clone()), true)
                .message("authenticate")
                .unwrap();
            let mut lines = text.lines();
            assert_eq!(
                lines.next(),
                Some(format!("authenticate failed: {first}").as_str())
            );
            let hint = lines.next().unwrap_or_default();
            assert!(
                hint.contains("`mpt_` followed by 40 lowercase hexadecimal digits")
                    && hint.contains("copied whole"),
                "{text}"
            );
            let text = explain_refusal(Error::Status(refusal), false)
                .message("authenticate")
                .unwrap();
            assert_eq!(text, format!("authenticate failed: {first}"));
        }
        let other = tonic::Status::resource_exhausted("Too many attempts");
        let text = explain_refusal(Error::Status(other), true)
            .message("authenticate")
            .unwrap();
        assert!(!text.contains("mpt_"), "{text}");
    }

    #[test]
    fn at_most_one_passphrase() {
        assert!(parse(&["authenticate", "a", "b"]).is_err());
    }
}
