//! `multipass set <key>[=<value>]`: change a setting.

use rpc::proto::SetRequest;
use zeroize::Zeroizing;

use super::Context;
use crate::error::Error;
use crate::{output, passphrase};

/// The setting whose value is a secret, prompted for twice and without echo.
const PASSPHRASE_KEY: &str = "local.passphrase";

/// Arguments of `multipass set`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Set a setting. Without `=<value>` the value is prompted for; for \
                  `local.passphrase` it is asked twice, without echo on a terminal (otherwise two \
                  lines are read from stdin). An empty passphrase clears it."
)]
pub struct Args {
    /// The key and, after the first `=`, the value (prompted for when absent)
    #[arg(value_name = "<key>[=<value>]", value_parser = parse_setting)]
    setting: Setting,

    /// Set `local.passphrase` through multipassd-helper, as an administrator, without a trusted
    /// client (polkit asks for the administrator's password on a terminal)
    #[arg(long)]
    admin: bool,
}

/// A key, and its value if the command line gave one.
#[derive(Clone)]
pub struct Setting {
    key: String,
    value: Option<Zeroizing<String>>,
}

/// Values may be secrets: `Debug` shows only whether there is one.
impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Split `key=value` on the first `=`; the value may contain more.
fn parse_setting(text: &str) -> Result<Setting, String> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(Zeroizing::new(value.to_string()))),
        None => (text, None),
    };
    if key.is_empty() {
        return Err("the key must not be empty".into());
    }
    Ok(Setting {
        key: key.to_string(),
        value,
    })
}

fn read_error(e: std::io::Error) -> Error {
    Error::Local(anyhow::Error::new(e).context("cannot read the value"))
}

/// Ask for the value of `key` (before connecting: a daemon that is down costs no typing twice).
fn prompt_value(key: &str) -> Result<Zeroizing<String>, Error> {
    if key == PASSPHRASE_KEY {
        let first = passphrase::read_hidden("Please enter passphrase: ").map_err(read_error)?;
        let second = passphrase::read_hidden("Please re-enter passphrase: ").map_err(read_error)?;
        if *first != *second {
            return Err(Error::Usage("Passphrases do not match".into()));
        }
        Ok(first)
    } else {
        passphrase::read_visible("Please enter value: ").map_err(read_error)
    }
}

/// Run `multipass set`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let Setting { key, value } = args.setting;
    let mut value = match value {
        Some(value) => value,
        None => prompt_value(&key)?,
    };

    if args.admin {
        if key != PASSPHRASE_KEY {
            return Err(Error::Usage(format!(
                "--admin can only set {PASSPHRASE_KEY}, not '{key}'"
            )));
        }
        return crate::admin::set_passphrase(value).await;
    }

    let is_passphrase = key == PASSPHRASE_KEY;
    let mut client = ctx.connect().await?;
    let request = SetRequest {
        key,
        val: std::mem::take(&mut *value),
        verbosity_level: ctx.verbosity_level(),
        authorized: false,
    };
    let replies = match ctx
        .replies(client.set(tokio_stream::once(request)).await)
        .await
    {
        Err(Error::Status(status))
            if status.code() == tonic::Code::Unauthenticated && is_passphrase =>
        {
            // The stuck state of Multipass's documentation: offer the way out.
            return Err(Error::Status(tonic::Status::unauthenticated(format!(
                "{}\nAn administrator can set the passphrase without a trusted client: \
                 `multipass set local.passphrase --admin`.",
                status.message()
            ))));
        }
        other => other?,
    };
    for reply in replies {
        if !reply.reply_message.is_empty() {
            output::print_line(&reply.reply_message)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::Command;

    fn setting(args: &[&str]) -> Setting {
        match parse(args).unwrap().command {
            Command::Set(args) => args.setting,
            other => panic!("not set: {other:?}"),
        }
    }

    #[test]
    fn splits_on_the_first_equals_sign() {
        let s = setting(&["set", "local.driver=qemu"]);
        assert_eq!(s.key, "local.driver");
        assert_eq!(s.value.as_deref().map(String::as_str), Some("qemu"));

        let s = setting(&["set", "local.passphrase=a=b==c"]);
        assert_eq!(s.key, "local.passphrase");
        assert_eq!(s.value.as_deref().map(String::as_str), Some("a=b==c"));
    }

    #[test]
    fn empty_value_is_a_value() {
        let s = setting(&["set", "local.passphrase="]);
        assert_eq!(s.value.as_deref().map(String::as_str), Some(""));
    }

    #[test]
    fn key_alone_means_prompt() {
        let s = setting(&["set", "local.passphrase"]);
        assert_eq!(s.key, "local.passphrase");
        assert!(s.value.is_none());
    }

    #[test]
    fn debug_hides_the_value() {
        let text = format!("{:?}", setting(&["set", "local.passphrase=hunter2"]));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("local.passphrase"), "{text}");
    }

    #[test]
    fn key_is_required() {
        assert!(parse(&["set"]).is_err());
        assert!(parse(&["set", "=value"]).is_err());
        assert!(parse(&["set", "a=1", "b=2"]).is_err());
    }
}
