//! `multipass authenticate [PASSPHRASE]`: have this client's certificate trusted by the daemon.

use rpc::proto::AuthenticateRequest;
use zeroize::Zeroizing;

use super::Context;
use crate::error::Error;
use crate::passphrase;

/// Arguments of `multipass authenticate`.
#[derive(clap::Args)]
#[command(
    long_about = "Authenticate this client with the multipass service, using the passphrase an \
                  administrator set with `multipass set local.passphrase`. Once authenticated, \
                  the client's certificate is trusted and other commands are allowed.\n\n\
                  The passphrase is prompted for when it is not given (without echo on a \
                  terminal; otherwise one line is read from stdin). Prefer the prompt: other \
                  users can see command-line arguments."
)]
pub struct Args {
    /// The passphrase (prompted for when omitted)
    #[arg(value_name = "PASSPHRASE", conflicts_with = "admin")]
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
        return run_admin().await;
    }
    let mut passphrase = match args.passphrase {
        Some(given) => Zeroizing::new(given),
        None => passphrase::read_hidden("Please enter passphrase: ").map_err(|e| {
            Error::Local(anyhow::Error::new(e).context("cannot read the passphrase"))
        })?,
    };
    if passphrase.is_empty() {
        return Err(Error::Usage("No passphrase given".into()));
    }

    let mut client = ctx.connect().await?;
    // Move the passphrase into the request rather than copying it: the request is the one copy
    // left, and tonic drops it once it is encoded.
    let request = AuthenticateRequest {
        passphrase: std::mem::take(&mut *passphrase),
        verbosity_level: ctx.verbosity_level(),
    };
    let replies = ctx
        .replies(client.authenticate(tokio_stream::once(request)).await)
        .await?;
    // The daemon says which name this client is now trusted under.
    ctx.show_log_lines(&replies)
}

/// `authenticate --admin`: have the helper trust this client's own certificate.
async fn run_admin() -> Result<(), Error> {
    let identity = crate::connect::identity()?;
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
        &fingerprint[..fingerprint.len().min(16)]
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
    fn at_most_one_passphrase() {
        assert!(parse(&["authenticate", "a", "b"]).is_err());
    }
}
