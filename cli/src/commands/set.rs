//! `multipass set <key>[=<value>]`: change a setting.

use rpc::proto::rpc_client::RpcClient;
use rpc::proto::{KeysRequest, SetRequest};
use trust::passphrase::{InvalidPassphrase, MAX_PASSPHRASE_LEN};
use trust::settings::PASSPHRASE_KEY;
use zeroize::Zeroizing;

use super::Context;
use crate::doc::{help_section, SETTINGS_KEYS};
use crate::error::Error;
use crate::{output, passphrase};

/// What `set --help` says: its one line, then the rest.
fn long_about() -> String {
    format!(
        "Set a setting\n\n\
         Set a setting of the multipass service, from a client the service trusts. Give the key \
         alone to be asked for the value, or KEY=VALUE. A passphrase given as KEY=VALUE is seen \
         by every user of the host in the process list, and kept in the shell's history: let the \
         command ask for it.\n\n\
         For local.passphrase the client first checks that the service trusts it, and only then \
         asks for the passphrase, twice: without echo on a terminal, otherwise as two lines of \
         standard input. It is UTF-8 text of at most 1024 bytes. The service keeps only a salted \
         Argon2id hash of it. A user other than root may change it at most twice a second after \
         the first five changes (the others wait their turn).\n\n\
         An empty answer changes nothing. To clear the passphrase (nobody can then authenticate \
         with one until it is set again; trusted clients stay trusted), give the empty value \
         explicitly: `multipass set local.passphrase=`.\n\n\
         root has its own client: `sudo multipass set local.passphrase` works only if root's \
         client is trusted, whoever runs sudo. Run it without sudo from your trusted client, or, \
         as an administrator without a trusted client, add --admin (polkit asks for the \
         administrator's password).\n\n\
         {}",
        help_section("Settings keys", SETTINGS_KEYS)
    )
}

/// Set a setting
#[derive(Debug, clap::Args)]
#[command(long_about = long_about())]
pub struct Args {
    /// The key (see "Settings keys") and, after the first `=`, the value (asked for when absent)
    #[arg(value_name = "KEY[=VALUE]", value_parser = SettingParser, hide_possible_values = true)]
    setting: Setting,

    /// Set local.passphrase through multipassd-helper, as an administrator, without a trusted
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

/// Parses `<key>[=<value>]` and offers the known keys to shell completion. Any key is accepted:
/// the daemon is the one that knows which exist.
#[derive(Clone)]
struct SettingParser;

impl clap::builder::TypedValueParser for SettingParser {
    type Value = Setting;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Setting, clap::Error> {
        clap::builder::TypedValueParser::parse_ref(&parse_setting, cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        super::get::settings_keys()
    }
}

/// The longest value read at the prompt for a key other than the passphrase: a line, not a file,
/// and well within the 64 KiB request the daemon decodes.
const MAX_VALUE_LEN: usize = 16 * 1024;

/// A passphrase longer than the service accepts, said as the service says it.
fn passphrase_too_long() -> Error {
    Error::Usage(format!(
        "Invalid setting '{PASSPHRASE_KEY}': {}",
        InvalidPassphrase::TooLong
    ))
}

/// Read the passphrase at one of its prompts.
fn read_passphrase(prompt: &str) -> Result<Zeroizing<String>, Error> {
    passphrase::read_hidden(prompt, MAX_PASSPHRASE_LEN)
        .map_err(|e| e.into_error("passphrase", passphrase_too_long))
}

/// Ask for the passphrase, twice. An empty first answer ends it: clearing takes an explicit
/// empty value, given the same way (`admin`: through the helper) as this command was.
fn prompt_passphrase(admin: bool) -> Result<Zeroizing<String>, Error> {
    let first = read_passphrase(trust::passphrase::PROMPT)?;
    if first.is_empty() {
        let admin = if admin { " --admin" } else { "" };
        return Err(Error::Usage(format!(
            "No passphrase given; nothing was changed. To clear the passphrase, run \
             `multipass set local.passphrase={admin}`."
        )));
    }
    let second = read_passphrase(trust::passphrase::PROMPT_AGAIN)?;
    if second.is_empty() {
        // Piped in, most often a single line, which ran out at the second question.
        let how = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            ""
        } else {
            " The passphrase is asked for twice: on standard input, give it on two lines."
        };
        return Err(Error::Usage(format!(
            "Passphrases do not match\nThe second answer was empty; nothing was changed.{how}"
        )));
    }
    if *first != *second {
        return Err(Error::Usage("Passphrases do not match".into()));
    }
    Ok(first)
}

/// Ask for the value of `key`.
fn prompt_value(key: &str) -> Result<Zeroizing<String>, Error> {
    if key == PASSPHRASE_KEY {
        prompt_passphrase(false)
    } else {
        passphrase::read_visible("Please enter value: ", MAX_VALUE_LEN).map_err(|e| {
            e.into_error("value", || {
                Error::Usage(format!(
                    "The value is longer than {MAX_VALUE_LEN} bytes, the most read at the prompt."
                ))
            })
        })
    }
}

/// What a cleared passphrase means, said after clearing it.
const CLEARED: &str = "The passphrase was cleared: nobody can authenticate with a passphrase \
                       until it is set again. Trusted clients stay trusted.";

/// What clearing through the helper means: said as it is now, since the helper does not tell
/// whether a passphrase was set before (it writes nothing when none was).
const CLEAR_NOW: &str = "No passphrase is set now: nobody can authenticate with a passphrase \
                         until it is set again. Trusted clients stay trusted.";

/// Run `multipass set`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let Setting { key, value } = args.setting;
    let is_passphrase = key == PASSPHRASE_KEY;
    // Refused here rather than by the service: one far over the limit does not even fit in the
    // request the service decodes, which then says only that no request came.
    if is_passphrase && value.as_ref().is_some_and(|v| v.len() > MAX_PASSPHRASE_LEN) {
        return Err(passphrase_too_long());
    }

    if args.admin {
        if !is_passphrase {
            return Err(Error::Usage(format!(
                "--admin can only set {PASSPHRASE_KEY}, not '{key}'"
            )));
        }
        let value = match value {
            Some(value) => value,
            None => prompt_passphrase(true)?,
        };
        let cleared = value.is_empty();
        crate::admin::set_passphrase(value).await?;
        return if cleared {
            output::print_line(CLEAR_NOW)
        } else {
            Ok(())
        };
    }

    let mut client = ctx.connect().await?;
    let mut value = match value {
        Some(value) => value,
        None => {
            // Nobody should type a passphrase twice only to learn that this client may not set
            // it (the classic case: `sudo`, whose root is a client of its own), nor type a value
            // for a key the service does not have.
            let keys = settings_keys(ctx, &mut client)
                .await
                .map_err(|e| super::explain_untrusted(e, is_passphrase))?;
            if !keys.contains(&key) {
                return Err(super::unknown_key(&key));
            }
            prompt_value(&key)?
        }
    };
    let cleared = is_passphrase && value.is_empty();
    let request = SetRequest {
        key,
        val: std::mem::take(&mut *value),
        verbosity_level: ctx.verbosity_level(),
        authorized: false,
    };
    let replies = ctx
        .replies(client.set(tokio_stream::once(request)))
        .await
        .map_err(|e| super::explain_untrusted(e, is_passphrase))?;
    let mut said = false;
    for reply in replies {
        if !reply.reply_message.is_empty() {
            output::print_line(&reply.reply_message)?;
            said = true;
        }
    }
    // The service says when clearing changed nothing; otherwise what clearing means.
    if cleared && !said {
        output::print_line(CLEARED)?;
    }
    Ok(())
}

/// The settings keys the service has. Asking is gated: it fails as `set` would if this client is
/// not trusted (and, on a fresh service, makes an administrator the first client as `set` would).
async fn settings_keys(
    ctx: &Context,
    client: &mut RpcClient<tonic::transport::Channel>,
) -> Result<Vec<String>, Error> {
    let request = KeysRequest {
        verbosity_level: ctx.verbosity_level(),
    };
    let replies = ctx
        .replies(client.keys(tokio_stream::once(request)))
        .await?;
    Ok(replies.into_iter().flat_map(|r| r.settings_keys).collect())
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
