use std::process::ExitCode;

use clap::Parser;
use multipassd::args::Args;
use multipassd::server::{self, Outcome, IDLE_EXIT_STATUS};
use multipassd::{logging, privileges};

// Links in what keeps the executable from loading libm (see the crate).
use multipass_linkage as _;

fn main() -> ExitCode {
    multipassd::memory::keep_large_allocations_off_the_heap();
    let args = Args::parse();
    if let Err(e) = server::block_shutdown_signals() {
        eprintln!("multipassd: {e:#}");
        return ExitCode::FAILURE;
    }
    logging::init(logging::level(args.verbosity.as_deref(), args.verbose));

    // Privileged work first (the socket's owner), then give up privileges, and only then start
    // the threads of the async runtime: capabilities are per thread.
    let mut listening = match server::listen(&args) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if let Some(user) = &args.user {
        // After the switch the daemon could no longer rename the socket in a root-owned
        // directory: publish it now.
        if let Err(e) = multipassd::prepare_state_dir_for(user, &args.data_dir)
            .and_then(|()| listening.publish_now())
        {
            return fail(e);
        }
    }
    if let Err(e) = privileges::drop_all(args.user.as_deref()) {
        return fail(e);
    }

    let runtime = match multipassd::runtime::build() {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let outcome = runtime.block_on(server::serve(args, listening));
    // Blocking work still running (a name lookup, a write past its request) is not waited for
    // without end: a stop must end within the unit's TimeoutStopSec=.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::Idle) => ExitCode::from(IDLE_EXIT_STATUS),
        Err(e) => fail(e),
    }
}

/// Says why the daemon stops, once: the log goes to stderr, or to the journal that stderr is
/// connected to, so a second line on stderr would repeat it.
fn fail(e: anyhow::Error) -> ExitCode {
    tracing::error!("{e:#}");
    ExitCode::FAILURE
}
