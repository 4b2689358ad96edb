//! `authenticate` with a one-time enrollment token instead of the passphrase, and the parts of
//! `authenticate` that tokens brought: the rate-limit audit and telling the user which name they
//! were trusted under.
//!
//! A token is redeemed through the ordinary `authenticate` RPC (it travels in
//! `AuthenticateRequest.passphrase`), so stock Multipass clients can redeem one. Wrong, used,
//! expired and revoked tokens count against the same per-peer limiter as wrong passphrases.

use rpc::server::Peer;
use time::OffsetDateTime;
use trust::tokens::TokenError;
use trust::{Enrolment, VerifiedClient};
use zeroize::Zeroizing;

use super::Service;
use crate::audit::Reason;
use crate::error::Error;
use crate::limits::PeerKey;

impl Service {
    /// Refuse `key` while it must wait after failures, saying so in the audit log.
    pub(super) fn check_limiter(&self, peer: &Peer, key: PeerKey) -> Result<(), Error> {
        self.limiter
            .check(key)
            .inspect_err(|_| self.gate.refused(peer, Reason::RateLimited, None))
    }

    /// Redeem `token` and trust `client` under the token's name if its creator chose one, else
    /// under the redeeming user's login name, as a passphrase would. The token is consumed before
    /// the client is trusted: a failure in between costs the token, never enrolls a second client.
    pub(super) async fn redeem_token(
        &self,
        peer: &Peer,
        client: &VerifiedClient,
        key: PeerKey,
        token: Zeroizing<String>,
    ) -> Result<(), Error> {
        let tokens = self.tokens.clone();
        let now = OffsetDateTime::now_utc();
        let outcome = tokio::task::spawn_blocking(move || tokens.redeem(&token, now)).await?;
        let uid = peer.credentials.map(|c| c.uid);
        let record = match outcome {
            Ok(record) => record,
            Err(TokenError::Storage(e)) => return Err(Error::Storage(e)),
            Err(refusal) => {
                let failures = self.limiter.record_failure(key);
                self.gate
                    .refused(peer, refusal_reason(&refusal), Some(failures));
                return Err(refusal.into());
            }
        };
        self.limiter.record_success(key);
        tracing::info!(
            target: "audit",
            event = "token-redeemed",
            token_name = %record.name,
            uid,
            user = uid.and_then(trust::access::user_name),
            fingerprint = %client.fingerprint(),
            "enrollment token '{}' was redeemed by client {} ({})",
            record.name,
            client.fingerprint(),
            crate::audit::who(peer)
        );
        let name = record.client_name().map(str::to_string);
        self.gate
            .trust_as(peer, client, Enrolment::Token, name)
            .await
    }

    /// The `log_line` of a successful `authenticate`: which name the client is trusted under.
    /// Stock clients show it too, which is why it is a sentence.
    pub(super) fn trusted_as(&self, peer: &Peer) -> Result<String, Error> {
        let Some(client) = &peer.client else {
            return Ok(String::new());
        };
        let bundle = self.gate.store().current()?;
        let name = bundle
            .get(&client.fingerprint())
            .and_then(|e| e.metadata.name.clone());
        Ok(match name {
            Some(name) => format!("This client is trusted as '{name}'.\n"),
            None => "This client is trusted.\n".to_string(),
        })
    }
}

fn refusal_reason(refusal: &TokenError) -> Reason {
    match refusal {
        TokenError::Used => Reason::TokenUsed,
        TokenError::Expired => Reason::TokenExpired,
        TokenError::Revoked => Reason::TokenRevoked,
        _ => Reason::TokenUnknown,
    }
}
