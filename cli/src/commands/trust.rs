//! `multipass trust ...`: who is trusted, removing a client, one-time enrollment tokens.
//!
//! These talk to the daemon's own `multipass.trust.Trust` service, behind the same gate as every
//! other command: only a trusted client may manage trust.

mod list;
mod records;
mod remove;
mod token;

use clap::Subcommand;

use super::Context;
use crate::error::Error;

/// Manage trusted clients and one-time enrollment tokens
///
/// Manage who the multipass service trusts: list the trusted clients, stop trusting one, and
/// create one-time enrollment tokens that let a new user in with `multipass authenticate` (no
/// shared passphrase needed). These commands need a trusted client. Any trusted client may list
/// the trusted clients and remove its own entry; removing others and managing tokens also needs
/// an administrator (root or a member of the admin group).
#[derive(Debug, clap::Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct Args {
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    List(list::Args),
    Remove(remove::Args),
    Token(token::Args),
}

impl Args {
    /// The command's name in messages (`trust remove failed: ...`).
    pub fn name(&self) -> &'static str {
        match &self.command {
            TrustCommand::List(_) => "trust list",
            TrustCommand::Remove(_) => "trust remove",
            TrustCommand::Token(args) => args.name(),
        }
    }
}

/// Run `multipass trust ...`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    match args.command {
        TrustCommand::List(args) => list::run(ctx, args).await,
        TrustCommand::Remove(args) => remove::run(ctx, args).await,
        TrustCommand::Token(args) => token::run(ctx, args).await,
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::parse;

    #[test]
    fn names_name_the_subcommand() {
        for (args, name) in [
            (&["trust", "list"][..], "trust list"),
            (&["trust", "remove", "abcd"], "trust remove"),
            (&["trust", "token", "create"], "trust token create"),
            (&["trust", "token", "list"], "trust token list"),
            (&["trust", "token", "revoke", "x"], "trust token revoke"),
        ] {
            assert_eq!(parse(args).unwrap().command.name(), name, "{args:?}");
        }
    }

    #[test]
    fn subcommands_are_required() {
        assert!(parse(&["trust"]).is_err());
        assert!(parse(&["trust", "token"]).is_err());
        assert!(parse(&["trust", "remove"]).is_err());
        // Without a name it asks for the token or its name, so that a token is never in argv.
        assert!(parse(&["trust", "token", "revoke"]).is_ok());
    }
}
