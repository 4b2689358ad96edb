//! `multipass trust remove ID`: stop trusting a client.

use clap::ValueHint;
use rpc::trust_proto::RemoveClientRequest;

use crate::commands::Context;
use crate::error::Error;
use crate::output;

/// Stop trusting a client, by name or fingerprint prefix
///
/// Stop trusting a client. Its next request is refused; nothing else changes: in particular the
/// passphrase stays, and any trusted client may have set it, so when removing a client you
/// distrust, set a new one too (`multipass set local.passphrase`). ID is a client's
/// name or the start of its fingerprint (at least 4 hex digits), as `multipass trust list` shows
/// them. An ID that matches more than one client (a name that is also the start of another
/// client's fingerprint, say) removes nothing and names the candidates.
/// Removing the last trusted client restricts the socket to administrators again. A user who is
/// not an administrator, removing their own clients, gets five removals at once, then one every
/// 5 seconds.
///
/// Shell completion cannot offer the names: only the daemon knows them, and completion does not
/// ask it. Use `multipass trust list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The client's name, or a prefix of its fingerprint
    #[arg(
        value_name = "ID",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        value_hint = ValueHint::Other
    )]
    id: String,
}

/// Run `multipass trust remove`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let mut client = ctx.connect_trust().await?;
    let reply =
        crate::commands::answer(client.remove_client(RemoveClientRequest { id: args.id })).await?;
    let removed = reply.removed.unwrap_or_default();
    let short = ::trust::pki::short_hex(&removed.fingerprint);
    let mut text = if removed.name.is_empty() {
        format!("Removed the client {short}, which had no name.")
    } else {
        format!("Removed '{}' ({short}).", removed.name)
    };
    if removed.is_caller {
        text.push_str(" This was the client you used: it is no longer trusted.");
    }
    text.push_str(&remaining(reply.remaining, reply.socket_restricted));
    output::print_line(&text)
}

/// What is left after a removal: how many clients, and with none, who can reach the service.
fn remaining(count: u32, socket_restricted: bool) -> String {
    match (count, socket_restricted) {
        (0, true) => " No client is trusted now: only administrators can reach the service until \
                      one of them connects."
            .to_string(),
        (0, false) => " No client is trusted now. The daemon's socket is not restricted to \
                       administrators (over TCP there is none; otherwise the daemon's log says \
                       why), so whoever could reach the service still can; the first \
                       administrator to run a command on the socket becomes the first client."
            .to_string(),
        (1, _) => " 1 client is still trusted.".to_string(),
        (n, _) => format!(" {n} clients are still trusted."),
    }
}
