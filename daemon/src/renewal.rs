//! Renewing the server certificate while the daemon runs.
//!
//! At start `ServerPki::load_or_create` already replaces a certificate that is close to expiry;
//! a daemon that runs for months needs the same thing without a restart. This task sleeps until
//! the certificate enters its renewal margin, runs `load_or_create` again (which keeps the root CA
//! and writes a new server certificate) and swaps the result into the TLS configuration's
//! [`ServerCertResolver`]. Clients verify the server against the unchanged root CA, so they
//! notice nothing, and connections already open keep going.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};
use tls::{ServerCertResolver, ServerPki, ServerPkiOptions};
use trust::{DataDir, Fingerprint};

/// Longest single sleep: the wall clock is looked at again at least this often, so a clock change
/// or a suspended machine delays a renewal by at most this much.
const MAX_NAP: StdDuration = StdDuration::from_secs(3600);
/// Pause before trying again after a failed renewal.
const RETRY_AFTER_FAILURE: StdDuration = StdDuration::from_secs(60);
/// Pause when `load_or_create` kept the certificate although it looked due (certificate times
/// have one-second precision, so the two views can differ by a fraction of a second).
const RETRY_SOON: StdDuration = StdDuration::from_millis(250);

/// Keep `resolver` presenting a certificate that is not within `opts.renew_before` of expiry;
/// the current one expires at `not_after`. Runs until the runtime shuts down.
pub fn spawn(
    dir: DataDir,
    opts: ServerPkiOptions,
    resolver: Arc<ServerCertResolver>,
    not_after: OffsetDateTime,
) {
    tokio::spawn(run(dir, opts, resolver, not_after));
}

async fn run(
    dir: DataDir,
    opts: ServerPkiOptions,
    resolver: Arc<ServerCertResolver>,
    mut not_after: OffsetDateTime,
) {
    loop {
        let due = not_after - opts.renew_before;
        let wait = due - OffsetDateTime::now_utc();
        if wait > Duration::ZERO {
            tokio::time::sleep(to_std(wait).min(MAX_NAP)).await;
            continue;
        }
        let dir = dir.clone();
        let renewed = tokio::task::spawn_blocking(move || ServerPki::load_or_create(&dir, opts))
            .await
            .map_err(|e| anyhow::anyhow!("the renewal task failed: {e}"))
            .and_then(|r| r.map_err(anyhow::Error::new));
        let pki = match renewed {
            Ok(pki) => pki,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?RETRY_AFTER_FAILURE,
                    "cannot renew the server certificate; the current one stays in use"
                );
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
        };
        let old = resolver.fingerprint();
        let new = Fingerprint::of(&pki.chain[0]);
        if new == old {
            tokio::time::sleep(RETRY_SOON).await;
            continue;
        }
        if let Err(e) = resolver.replace(&pki) {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::new(e)),
                "the renewed server certificate cannot be used; the current one stays in use"
            );
            tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            continue;
        }
        not_after = pki.not_after;
        trust::audit::AuditEvent::ServerCertificateRenewed {
            old,
            new,
            not_after: &not_after.to_string(),
        }
        .emit();
    }
}

fn to_std(d: Duration) -> StdDuration {
    StdDuration::try_from(d).unwrap_or(StdDuration::ZERO)
}
