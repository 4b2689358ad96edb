//! `multipass get <key>` and `multipass get --keys`.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::ArgGroup;
use rpc::proto::{GetRequest, KeysRequest};

use super::Context;
use crate::doc::{help_section, SETTINGS_KEYS};
use crate::error::Error;
use crate::output;

/// What `get --help` says: its one line, then the rest.
fn long_about() -> String {
    format!(
        "Get a setting's value, or list the settings keys\n\n\
         Print the value of a setting of the multipass service, or with --keys the settings keys \
         it has. Needs a client the service trusts.\n\n{}",
        help_section("Settings keys", SETTINGS_KEYS)
    )
}

/// The settings keys, as shell completion offers them after `get` and `set`.
pub(super) fn settings_keys() -> Option<Box<dyn Iterator<Item = PossibleValue>>> {
    Some(Box::new(
        SETTINGS_KEYS.iter().map(|k| PossibleValue::new(k.term)),
    ))
}

/// Any key is accepted (the daemon knows which exist); the known ones go to shell completion.
#[derive(Clone)]
struct KeyParser;

impl TypedValueParser for KeyParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        settings_keys()
    }
}

/// Get a setting's value, or list the settings keys
#[derive(Debug, clap::Args)]
#[command(
    long_about = long_about(),
    group(ArgGroup::new("what").required(true).args(["key", "keys"]))
)]
pub struct Args {
    /// The setting to read (see "Settings keys")
    #[arg(value_name = "KEY", value_parser = KeyParser, hide_possible_values = true)]
    key: Option<String>,

    /// List the settings keys instead
    #[arg(long)]
    keys: bool,
}

/// Run `multipass get`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    if let Some(key) = args
        .key
        .as_deref()
        .filter(|k| !args.keys && k.contains('='))
    {
        // A `set` typed as `get`: its value is not sent anywhere, nor shown back.
        return Err(super::unknown_key(key));
    }
    let mut client = ctx.connect().await?;
    match args.key {
        Some(key) if !args.keys => {
            let request = GetRequest {
                key,
                verbosity_level: ctx.verbosity_level(),
            };
            let replies = ctx.replies(client.get(tokio_stream::once(request))).await?;
            let value = replies.last().map(|r| r.value.as_str()).unwrap_or_default();
            output::print_line(value)
        }
        _ => {
            let request = KeysRequest {
                verbosity_level: ctx.verbosity_level(),
            };
            let replies = ctx
                .replies(client.keys(tokio_stream::once(request)))
                .await?;
            for key in replies.iter().flat_map(|r| &r.settings_keys) {
                output::print_line(key)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::Command;

    fn args(line: &[&str]) -> Result<Args, clap::Error> {
        parse(line).map(|cli| match cli.command {
            Command::Get(args) => args,
            other => panic!("not get: {other:?}"),
        })
    }

    #[test]
    fn key_or_keys() {
        let a = args(&["get", "local.passphrase"]).unwrap();
        assert_eq!(a.key.as_deref(), Some("local.passphrase"));
        assert!(!a.keys);
        let a = args(&["get", "--keys"]).unwrap();
        assert_eq!(a.key, None);
        assert!(a.keys);
    }

    #[test]
    fn neither_is_an_error() {
        let e = args(&["get"]).unwrap_err();
        assert!(e.use_stderr());
    }

    #[test]
    fn both_is_an_error() {
        let e = args(&["get", "--keys", "local.passphrase"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
