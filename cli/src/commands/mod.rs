//! The command line: the top-level parser, one module per subcommand, and what they share.
//!
//! Each subcommand module exposes an `Args` struct (its clap definition) and `run()`.

use clap::{ArgAction, Parser, Subcommand};
use rpc::proto::rpc_client::RpcClient;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::connect::ANSWER_TIMEOUT;
use crate::error::{Error, Unreachable};
use crate::output;
use crate::trace::Trace;

pub mod authenticate;
pub mod get;
pub mod list;
pub mod set;
pub mod trust;
pub mod version;

/// The multipass command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "multipass",
    version,
    about = "Talk to the multipass service",
    long_about = "Talk to the multipass service (multipassd): authenticate this client with the \
                  passphrase or a one-time enrollment token, read and change settings, list \
                  instances, and manage who is trusted.\n\n\
                  Every command but `version` and `authenticate` needs a client the service \
                  trusts. On a fresh service the first administrator (root, or a member of the \
                  admin group) to run any command but `authenticate` (`version` included) is \
                  trusted automatically; anyone else runs `multipass authenticate`. Each user \
                  has their own client certificate, and root has its own: `sudo multipass ...` \
                  is a different client from `multipass ...`.",
    after_long_help = crate::doc::after_long_help(),
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Show on standard error which daemon, client certificate and root CA the command uses, and
    /// the daemon's log lines; -vv adds what TLS negotiated and when each step ended
    // Listed after each command's own options, which it would otherwise split.
    #[arg(short, long, action = ArgAction::Count, global = true, display_order = 900)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each one's short and long description is the doc comment of its `Args`
/// struct: a doc comment here would replace that long description with its one line.
#[derive(Debug, Subcommand)]
pub enum Command {
    // Two lines of usage, as the passphrase and --admin exclude each other: clap's own line for a
    // refused combination would show the two together.
    #[command(
        visible_alias = "auth",
        override_usage = "multipass authenticate [OPTIONS] [PASSPHRASE]\n       multipass authenticate [OPTIONS] --admin"
    )]
    Authenticate(authenticate::Args),
    Set(set::Args),
    Get(get::Args),
    #[command(visible_alias = "ls")]
    List(list::Args),
    Version(version::Args),
    Trust(trust::Args),
}

impl Command {
    /// The canonical name, used in messages even when an alias was typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Authenticate(_) => "authenticate",
            Command::Set(_) => "set",
            Command::Get(_) => "get",
            Command::List(_) => "list",
            Command::Version(_) => "version",
            Command::Trust(args) => args.name(),
        }
    }
}

/// What every command needs besides its own arguments.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    verbosity: u8,
    trace: Trace,
}

impl Context {
    /// The context of `cli`.
    pub fn new(cli: &Cli) -> Context {
        Context {
            verbosity: cli.verbose,
            trace: Trace::new(cli.verbose),
        }
    }

    /// The `verbosity_level` to send in requests.
    pub fn verbosity_level(&self) -> i32 {
        i32::from(self.verbosity)
    }

    /// Whether `-v` was given.
    pub fn verbose(&self) -> bool {
        self.verbosity > 0
    }

    /// The trace of the client's own steps that `-v` shows.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Connect to the daemon.
    pub async fn connect(&self) -> Result<RpcClient<Channel>, Error> {
        crate::connect::connect(&self.trace).await
    }

    /// Connect to the daemon's trust-management service.
    pub async fn connect_trust(
        &self,
    ) -> Result<rpc::trust_proto::trust_client::TrustClient<Channel>, Error> {
        // The daemon's messages are small: `trust list` comes in pages of about 32 KiB, and a
        // list of tokens is at most a few hundred bytes a token. A message decodes to more than
        // its size (an empty entry of 2 bytes to about 136), so tonic's default of 4 MiB would
        // let one message of a hostile daemon take 270 MB.
        Ok(rpc::trust_proto::trust_client::TrustClient::new(
            crate::connect::channel(&self.trace).await?,
        )
        .max_decoding_message_size(1 << 20))
    }

    /// Show the log lines of `replies` that the daemon addresses to the user, on stdout, unless
    /// `-v` already showed them on stderr.
    pub fn show_log_lines<R: Reply>(&self, replies: &[R]) -> Result<(), Error> {
        if self.verbose() {
            return Ok(());
        }
        for line in replies
            .iter()
            .map(Reply::log_line)
            .filter(|l| !l.is_empty())
        {
            output::print_line(line.trim_end_matches('\n'))?;
        }
        Ok(())
    }

    /// Make a streaming call and read every reply until the daemon ends the stream, showing log
    /// lines on stderr as they arrive when verbose.
    ///
    /// The daemon sends one reply and ends the stream; what reads them is bounded all the same
    /// (in time by [`ANSWER_TIMEOUT`], in number and in bytes), so that a daemon that never ends
    /// it, or sends without end, cannot hold the command or fill its memory.
    pub async fn replies<R: Reply + prost::Message>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<Streaming<R>>, tonic::Status>>,
    ) -> Result<Vec<R>, Error> {
        const MAX_REPLIES: usize = 1024;
        const MAX_BYTES: usize = 1 << 20;
        in_time(async {
            let mut stream = read_header(call.await?).into_inner();
            let mut replies = Vec::new();
            let mut bytes = 0;
            while let Some(reply) = stream.message().await? {
                bytes += reply.encoded_len();
                if replies.len() == MAX_REPLIES || bytes > MAX_BYTES {
                    return Err(Error::Local(anyhow::anyhow!(
                        "the daemon sent more than {MAX_REPLIES} replies or {} MiB to one \
                         request; it is not a daemon this client can talk to",
                        MAX_BYTES >> 20
                    )));
                }
                if self.verbose() {
                    output::log_line(reply.log_line());
                }
                replies.push(reply);
            }
            Ok(replies)
        })
        .await
    }
}

/// Make a call whose answer comes in pages (`trust list`) and read them all, within
/// [`ANSWER_TIMEOUT`] and up to `max_bytes` in all, counting each page's framing so that a daemon
/// sending empty pages without end is stopped too.
pub async fn pages<T: prost::Message + Default>(
    call: impl std::future::Future<Output = Result<tonic::Response<Streaming<T>>, tonic::Status>>,
    max_bytes: usize,
) -> Result<Vec<T>, Error> {
    in_time(async {
        let mut stream = read_header(call.await?).into_inner();
        let (mut pages, mut bytes) = (Vec::new(), 0);
        while let Some(page) = stream.message().await? {
            bytes += 5 + page.encoded_len();
            if bytes > max_bytes {
                return Err(Error::Local(anyhow::anyhow!(
                    "the daemon sent more than {} MiB to one request; it is not a daemon this \
                     client can talk to",
                    max_bytes >> 20
                )));
            }
            pages.push(page);
        }
        Ok(pages)
    })
    .await
}

/// Make a unary call and read its whole answer (its message to the end).
pub async fn answer<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Error> {
    in_time(async { Ok(read_header(call.await?).into_inner()) }).await
}

/// What the daemon's reply says besides its messages: whether this request made this client the
/// service's first ([`rpc::FIRST_CLIENT_HEADER`]), which is said on stderr.
fn read_header<T>(response: tonic::Response<T>) -> tonic::Response<T> {
    if response.metadata().get(rpc::FIRST_CLIENT_HEADER).is_some() {
        output::log_line(FIRST_CLIENT_NOTE);
    }
    response
}

/// What the user is told then (on stderr: the command's own output is unchanged).
const FIRST_CLIENT_NOTE: &str = "This client is now trusted: it is the first the multipass \
     service trusts, as an administrator's. Other clients get in with a passphrase (`multipass \
     set local.passphrase`, then `multipass authenticate` on theirs) or a one-time token \
     (`multipass trust token create`).";

/// `work` (a call and the reading of its answer), or [`Unreachable::NoAnswer`] after
/// [`ANSWER_TIMEOUT`]: every call of the client goes through here.
async fn in_time<T>(work: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(ANSWER_TIMEOUT, work)
        .await
        .unwrap_or(Err(Error::Unreachable(Unreachable::NoAnswer)))
}

/// A key the service does not have, said in the words (and with the exit status) of the
/// service's own refusal, which the client gives instead of sending what would be refused. What
/// follows a `=` (`get local.passphrase=VALUE`, a `set` typed as `get`) is not shown back: it
/// may be a passphrase.
pub fn unknown_key(key: &str) -> Error {
    let shown = ::trust::settings::shown_key(key);
    if key.contains('=') {
        Error::Local(anyhow::anyhow!(
            "Unrecognized settings key: '{shown}'\n`get` takes a key alone; to change a \
             setting: `multipass set KEY`"
        ))
    } else {
        Error::Local(anyhow::anyhow!("Unrecognized settings key: '{shown}'"))
    }
}

/// A reply message, which may carry a log line from the daemon.
pub trait Reply {
    /// The log line (empty when there is none).
    fn log_line(&self) -> &str;
}

macro_rules! replies_with_log_line {
    ($($t:ident),* $(,)?) => {
        $(impl Reply for rpc::proto::$t {
            fn log_line(&self) -> &str {
                &self.log_line
            }
        })*
    };
}

replies_with_log_line!(
    AuthenticateReply,
    GetReply,
    SetReply,
    KeysReply,
    VersionReply,
    ListReply
);

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let ctx = Context::new(&cli);
    // `set` explains its refusals itself, knowing which key it was asked for.
    let explained = matches!(cli.command, Command::Set(_));
    let outcome = match cli.command {
        Command::Authenticate(args) => authenticate::run(&ctx, args).await,
        Command::Set(args) => set::run(&ctx, args).await,
        Command::Get(args) => get::run(&ctx, args).await,
        Command::List(args) => list::run(&ctx, args).await,
        Command::Version(args) => version::run(&ctx, args).await,
        Command::Trust(args) => trust::run(&ctx, args).await,
    };
    if explained {
        outcome
    } else {
        outcome.map_err(|e| explain_untrusted(e, false))
    }
}

/// Add to a "not authenticated" refusal what this user can do about it: above all, that root
/// (`sudo multipass ...`) is a client of its own, which nothing in Multipass's text suggests.
/// `is_passphrase`: the command was `set local.passphrase`, which has a way of its own.
pub(crate) fn explain_untrusted(e: Error, is_passphrase: bool) -> Error {
    let Error::Status(status) = e else { return e };
    if status.code() != tonic::Code::Unauthenticated {
        return Error::Status(status);
    }
    let mut text = status.message().trim_end().to_string();
    if nix::unistd::geteuid().is_root() {
        let sudo_user = std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty() && u != "root");
        text.push('\n');
        text.push_str(&match sudo_user {
            Some(user) => format!(
                "This command ran as root (through sudo), and root is a client of its own, \
                 separate from {user}'s: the service does not trust root's client. Run it \
                 without sudo, as {user}, from a trusted client"
            ),
            None => "This command ran as root, and root is a client of its own, separate from \
                     every user's: the service does not trust root's client. Run it as a user \
                     whose client is trusted"
                .to_string(),
        });
        text.push_str(if is_passphrase {
            ", or keep sudo and add --admin: `sudo multipass set local.passphrase --admin`."
        } else {
            ", or trust root's client: `sudo multipass authenticate --admin`."
        });
    } else if is_passphrase {
        text.push_str(
            "\nAn administrator can set the passphrase without a trusted client: \
             `multipass set local.passphrase --admin`.",
        );
    }
    Error::Status(tonic::Status::unauthenticated(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    pub(crate) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("multipass").chain(args.iter().copied()))
    }

    /// Every subcommand's `--help` (and man page) opens with the line `-h` shows.
    #[test]
    fn long_help_starts_with_the_one_line() {
        use clap::CommandFactory;
        fn check(cmd: &mut clap::Command, path: &str) {
            let about = cmd.get_about().map(|a| a.to_string());
            if let Some(about) = about.filter(|_| path != "multipass") {
                let long = cmd.render_long_help().to_string();
                assert_eq!(long.lines().next(), Some(about.as_str()), "{path} --help");
            }
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect();
            for name in names {
                let sub = cmd.find_subcommand_mut(&name).expect("listed");
                check(sub, &format!("{path} {name}"));
            }
        }
        let mut cli = Cli::command();
        cli.build();
        check(&mut cli, "multipass");
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn aliases_give_canonical_names() {
        assert_eq!(parse(&["auth"]).unwrap().command.name(), "authenticate");
        assert_eq!(
            parse(&["authenticate"]).unwrap().command.name(),
            "authenticate"
        );
        assert_eq!(parse(&["ls"]).unwrap().command.name(), "list");
        assert_eq!(parse(&["list"]).unwrap().command.name(), "list");
    }

    #[test]
    fn verbose_counts_anywhere() {
        assert_eq!(parse(&["-vv", "list"]).unwrap().verbose, 2);
        assert_eq!(parse(&["list", "-v", "--verbose"]).unwrap().verbose, 2);
        assert_eq!(parse(&["version"]).unwrap().verbose, 0);
        let cli = parse(&["-vvv", "get", "--keys"]).unwrap();
        assert_eq!(Context::new(&cli).verbosity_level(), 3);
    }

    #[test]
    fn unknown_subcommand_is_an_error() {
        let e = parse(&["bogus"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSubcommand);
        assert!(e.use_stderr());
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["--version"],
            &["list", "--help"],
        ] {
            let e = parse(args).unwrap_err();
            assert!(!e.use_stderr(), "{args:?}");
        }
    }

    #[test]
    fn long_help_documents_exit_status() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit status:"), "{help}");
        assert!(
            help.contains("  3   The daemon could not be reached"),
            "{help}"
        );
    }
}
