//! `multipass version`: the client's version and, if the daemon answers, the daemon's.

use rpc::proto::VersionRequest;

use super::Context;
use crate::error::Error;
use crate::output;

/// Show the versions of the client and of the daemon
///
/// Show the version of this client and, when the daemon can be reached and trusts this client,
/// of the daemon. An unreachable daemon is not an error here (use -v to see why).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// The client's line.
fn client_line() -> String {
    format!("multipass  {}", env!("CARGO_PKG_VERSION"))
}

/// Ask the daemon for its version.
async fn daemon_version(ctx: &Context) -> Result<Option<String>, Error> {
    let mut client = ctx.connect().await?;
    let request = VersionRequest {
        verbosity_level: ctx.verbosity_level(),
    };
    let replies = ctx
        .replies(client.version(tokio_stream::once(request)))
        .await?;
    Ok(replies
        .into_iter()
        .map(|r| r.version)
        .rfind(|v| !v.is_empty()))
}

/// Run `multipass version`.
pub async fn run(ctx: &Context, _args: Args) -> Result<(), Error> {
    output::print_line(&client_line())?;
    match daemon_version(ctx).await {
        Ok(Some(version)) => output::print_line(&format!("multipassd {version}")),
        Ok(None) => Ok(()),
        Err(e @ Error::Stdout(_)) => Err(e),
        Err(e) => {
            // Not "version failed": the command succeeds without the daemon's line (exit 0),
            // and this only says why that line is missing.
            if ctx.verbose() {
                if let Some(message) = e.message("version") {
                    let reason = message.strip_prefix("version failed: ").unwrap_or(&message);
                    eprintln!(
                        "cannot get the daemon's version: {}",
                        output::for_terminal(reason)
                    );
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_line_format() {
        assert_eq!(
            client_line(),
            format!("multipass  {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
