//! `multipass trust token create|list|revoke`: one-time enrollment tokens.

use ::trust::pki::short_hex;
use ::trust::tokens::token_in;
use clap::Subcommand;
use clap::ValueHint;
use rpc::trust_proto::{
    CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, TokenInfo, TokenStatus,
};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::records::{Column, Records};
use crate::commands::Context;
use crate::error::Error;
use crate::output;
use crate::passphrase;
use crate::render::Format;

/// Create, list and revoke one-time enrollment tokens
///
/// One-time enrollment tokens let a new user in without a shared passphrase: an administrator
/// creates a token and gives it to the user, who redeems it once with `multipass authenticate`.
/// A token works once, until it expires (15 minutes unless --expires says otherwise) or is
/// revoked. The service keeps only its hash. Managing tokens needs a trusted client run by an
/// administrator (root or a member of the admin group).
#[derive(Debug, clap::Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    Create(CreateArgs),
    List(ListArgs),
    Revoke(RevokeArgs),
}

/// Create a one-time enrollment token and print it (it is shown only this once)
///
/// Create a one-time enrollment token and print it on standard output, alone on its line (the
/// explanation goes to standard error). It is shown only this once: the service keeps only its
/// hash. The new user redeems it with `multipass authenticate`, typing it at the prompt (or
/// piping it in), and their client is then trusted under the token's --name, or, without one,
/// under their login name (made unique, as alice-2, if a client has it already). The token works
/// once, until it expires or is revoked.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The token's name, and the name the enrolled client is trusted under; refused when a
    /// trusted client has that name already [default: a generated token name; the client gets
    /// the redeeming user's login name]
    #[arg(long, value_hint = ValueHint::Other)]
    name: Option<String>,
    /// How long the token works, e.g. 90s, 15m, 2h, 1d, "1h 30m" (at most 30 days) [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, value_hint = ValueHint::Other)]
    expires: Option<u64>,
}

/// List enrollment tokens and whether they can still be used
///
/// List the enrollment tokens the service remembers: name, status (active, expired, used,
/// revoked), when each was created and expires, who created it, and for a used one who redeemed
/// it and the start of its client's fingerprint (`multipass trust remove` takes it). Used,
/// revoked and expired tokens are forgotten 7 days later. Tokens themselves are never shown
/// again.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Revoke an enrollment token so that nobody can use it
///
/// Revoke the enrollment token NAME (as `multipass trust token list` shows it), or the token
/// itself: it can no longer be redeemed. Without NAME, the token or its name is asked for
/// (without echo on a terminal, otherwise one line of standard input): give a token that way,
/// never as the argument, where every user of the machine can read it while the command runs,
/// and redeem it before the revocation lands. Revoking a token that is revoked or expired already
/// succeeds and changes nothing. A token that was already used cannot be revoked; remove the
/// client it enrolled with `multipass trust remove` instead.
#[derive(clap::Args)]
pub struct RevokeArgs {
    /// The token's name (asked for when omitted, and then the token itself may be given)
    #[arg(value_name = "NAME", value_hint = ValueHint::Other)]
    name: Option<String>,
}

impl std::fmt::Debug for RevokeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // It may be the token.
        f.debug_struct("RevokeArgs")
            .field("name", &self.name.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The longest answer to the revoke prompt read: a name is at most 64 bytes, a token 44.
const MAX_REVOKE_ENTRY: usize = 1024;

/// What `trust token revoke` sends: the token (out of blanks and quotes) or the name, and
/// whether a token came on the command line.
fn revoke_target(given: Option<String>) -> Result<(Zeroizing<String>, bool), Error> {
    let (entered, argv) = match given {
        Some(given) => (Zeroizing::new(given), true),
        None => {
            let entered = passphrase::read_hidden("Token or token name: ", MAX_REVOKE_ENTRY)
                .map_err(|e| {
                    e.into_error("token", || {
                        Error::Usage(format!(
                            "That is longer than {MAX_REVOKE_ENTRY} bytes: not a token or a \
                             token's name."
                        ))
                    })
                })?;
            (entered, false)
        }
    };
    match token_in(&entered) {
        Some(token) => Ok((Zeroizing::new(token.to_string()), argv)),
        None if entered.trim().is_empty() => Err(Error::Usage("No token given".into())),
        // A name, as typed: without the blanks around it.
        None => Ok((Zeroizing::new(entered.trim().to_string()), false)),
    }
}

impl Args {
    /// The command's name in messages.
    pub fn name(&self) -> &'static str {
        match self.command {
            TokenCommand::Create(_) => "trust token create",
            TokenCommand::List(_) => "trust token list",
            TokenCommand::Revoke(_) => "trust token revoke",
        }
    }
}

/// Run `multipass trust token ...`.
pub async fn run(ctx: &Context, mut args: Args) -> Result<(), Error> {
    // The daemon's own rule, checked before anything is sent.
    if let TokenCommand::Create(CreateArgs {
        name: Some(name), ..
    }) = &args.command
    {
        trust::tokens::validate_name(name).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let revoking = match &mut args.command {
        TokenCommand::Revoke(revoke) => Some(revoke_target(revoke.name.take())?),
        _ => None,
    };
    let mut client = ctx.connect_trust().await?;
    match args.command {
        TokenCommand::Create(args) => {
            let named = args.name.is_some();
            let reply = crate::commands::answer(client.create_token(CreateTokenRequest {
                name: args.name.unwrap_or_default(),
                expires_in_seconds: args.expires.unwrap_or(0),
            }))
            .await?;
            let info = reply.info.unwrap_or_default();
            let client_name = if named {
                format!("'{}'", info.name)
            } else {
                "their login name".to_string()
            };
            // The token alone on stdout, for scripts; the explanation on stderr.
            let created = format!(
                "Enrollment token '{}' created. It works once, until {}. The new user runs \
                 `multipass authenticate` and enters it at the passphrase prompt; their client is then trusted under \
                 {client_name}.",
                info.name, info.expires
            );
            eprintln!("{}", output::for_terminal(&created));
            output::print_line(&reply.token)
        }
        TokenCommand::List(args) => {
            let reply = crate::commands::answer(client.list_tokens(ListTokensRequest {})).await?;
            output::print(&render(&reply.tokens, args.format))
        }
        TokenCommand::Revoke(_) => {
            let (target, from_argv) = revoking.unwrap_or_default();
            let reply = crate::commands::answer(client.revoke_token(RevokeTokenRequest {
                name: target.to_string(),
            }))
            .await;
            if from_argv {
                eprintln!(
                    "The token was on the command line, where every user of this machine can \
                     read it while the command runs. Revoke a token by its name, or run \
                     `multipass trust token revoke` and enter the token at its prompt."
                );
            }
            let reply = reply?;
            let before = reply.before();
            let name = reply.info.map(|i| i.name).unwrap_or_default();
            output::print_line(&match before {
                TokenStatus::Revoked => {
                    format!("Enrollment token '{name}' was already revoked: it cannot be used.")
                }
                TokenStatus::Expired => {
                    format!("Enrollment token '{name}' had expired already: it cannot be used.")
                }
                _ => format!("Revoked enrollment token '{name}': it can no longer be used."),
            })
        }
    }
}

/// Parse a duration such as `90s`, `15m`, `2h`, `1d` or `1h 30m` into whole seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    use humantime::DurationError;
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        // humantime's own words suggest units such as `ms`, which a token's lifetime in whole
        // seconds refuses anyway.
        let why = match e {
            DurationError::Empty => "nothing given".to_string(),
            DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!("{value} has no unit")
            }
            DurationError::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
            DurationError::NumberOverflow => "too long".to_string(),
            DurationError::InvalidCharacter(_) | DurationError::NumberExpected(_) => {
                "not a duration".to_string()
            }
        };
        format!("{why}: expected a duration such as 90s, 15m, 2h, 1d or 1h30m")
    })?;
    if duration.subsec_nanos() != 0 {
        return Err("the duration must be a whole number of seconds".into());
    }
    let most = trust::tokens::MAX_LIFETIME;
    match duration.as_secs() {
        0 => Err("the duration must be longer than zero".into()),
        // Refused here as the service would refuse it, before anything is asked of it.
        seconds if i64::try_from(seconds).map_or(true, |s| s > most.whole_seconds()) => {
            Err(format!("a token works at most {} days", most.whole_days()))
        }
        seconds => Ok(seconds),
    }
}

const COLUMNS: [Column; 9] = [
    Column::new("Name", "name"),
    Column::new("Status", "status"),
    Column::new("Created", "created"),
    Column::new("Expires", "expires"),
    Column::new("Created by", "created_by_user"),
    Column {
        header: "Creator UID",
        key: "created_by_uid",
        table_chars: None,
        in_table: false,
    },
    Column::new("Used by", "used_by_user"),
    Column {
        header: "User UID",
        key: "used_by_uid",
        table_chars: None,
        in_table: false,
    },
    Column {
        header: "Client",
        key: "used_by_client",
        table_chars: None,
        in_table: false,
    },
];

fn status_word(status: i32) -> &'static str {
    TokenStatus::try_from(status)
        .ok()
        .and_then(TokenStatus::known)
        .map_or("unknown", trust::tokens::TokenStatus::as_str)
}

/// The whole output for `tokens` in `format`.
pub fn render(tokens: &[TokenInfo], format: Format) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            let creator = match (&t.created_by_user, t.created_by_uid) {
                (user, _) if !user.is_empty() => json!(user),
                (_, Some(uid)) if format == Format::Table => json!(format!("uid {uid}")),
                _ => Value::Null,
            };
            // In the table, the user and the start of the client's fingerprint, which
            // `multipass trust remove` takes.
            let client = (!t.used_by_client.is_empty()).then_some(t.used_by_client.as_str());
            let user = match (&t.used_by_user, t.used_by_uid) {
                (user, _) if !user.is_empty() => Some(user.clone()),
                (_, Some(uid)) if format == Format::Table => Some(format!("uid {uid}")),
                _ => None,
            };
            let used_by = match (user, client) {
                (Some(user), Some(client)) if format == Format::Table => {
                    json!(format!("{user} ({})", short_hex(client)))
                }
                (Some(user), _) => json!(user),
                (None, Some(client)) if format == Format::Table => {
                    json!(short_hex(client))
                }
                _ => Value::Null,
            };
            vec![
                json!(t.name),
                json!(status_word(t.status)),
                json!(t.created),
                json!(t.expires),
                creator,
                t.created_by_uid.map_or(Value::Null, |u| json!(u)),
                used_by,
                t.used_by_uid.map_or(Value::Null, |u| json!(u)),
                client.map_or(Value::Null, |c| json!(c)),
            ]
        })
        .collect();
    Records {
        columns: &COLUMNS,
        rows,
        root: "tokens",
        empty: "No enrollment tokens.",
    }
    .render(format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::Command;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("2days"), Ok(172_800));
        assert_eq!(parse_duration("1.5h"), Ok(5400));
        for bad in ["", "15", "m", "1x", "-1m", "0s", "1h30", "500ms", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(
            parse_duration("31d"),
            Err("a token works at most 30 days".to_string())
        );
        // The reason in our words, then what is expected.
        for (bad, why) in [
            ("", "nothing given"),
            ("15", "15 has no unit"),
            ("1h30", "30 has no unit"),
            ("1x", "unknown unit \"x\""),
            ("-1m", "not a duration"),
            ("99999999999999999999d", "too long"),
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(format!(
                    "{why}: expected a duration such as 90s, 15m, 2h, 1d or 1h30m"
                )),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_options() {
        let Command::Trust(args) = parse(&[
            "trust",
            "token",
            "create",
            "--name",
            "bob",
            "--expires",
            "1h",
        ])
        .unwrap()
        .command
        else {
            panic!("not trust");
        };
        let text = format!("{args:?}");
        assert!(text.contains("\"bob\"") && text.contains("3600"), "{text}");
        assert!(parse(&["trust", "token", "create", "--expires", "soon"]).is_err());
    }

    #[test]
    fn table_of_tokens() {
        let bob = TokenInfo {
            name: "bob".into(),
            status: TokenStatus::Active as i32,
            created: "2026-01-01T00:00:00Z".into(),
            expires: "2026-01-01T00:15:00Z".into(),
            created_by_uid: Some(0),
            created_by_user: "root".into(),
            ..TokenInfo::default()
        };
        let carol = TokenInfo {
            name: "carol".into(),
            status: TokenStatus::Used as i32,
            used_by_uid: Some(1001),
            used_by_user: "carol".into(),
            used_by_client: "0123456789abcdef".repeat(4),
            ..bob.clone()
        };
        assert_eq!(
            render(&[bob, carol.clone()], Format::Table),
            "Name   Status  Created               Expires               Created by  Used by\n\
             bob    active  2026-01-01T00:00:00Z  2026-01-01T00:15:00Z  root        -\n\
             carol  used    2026-01-01T00:00:00Z  2026-01-01T00:15:00Z  root        carol (0123456789abcdef)\n"
        );
        let json: Value = serde_json::from_str(&render(&[carol], Format::Json)).unwrap();
        assert_eq!(
            json["tokens"][0]["used_by_client"],
            "0123456789abcdef".repeat(4)
        );
        assert_eq!(json["tokens"][0]["used_by_uid"], 1001);
        assert_eq!(render(&[], Format::Table), "No enrollment tokens.\n");
    }
}
