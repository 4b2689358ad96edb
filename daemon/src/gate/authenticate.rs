//! `authenticate`: a passphrase, or a one-time enrollment token in its place.
//!
//! A token travels in `AuthenticateRequest.passphrase`, so stock Multipass clients can redeem
//! one; the two are told apart by shape, so that neither is ever checked as the other. Wrong
//! passphrases and refused tokens count against the same per-peer failure limiter.

use std::time::Instant;

use rpc::server::Peer;
use time::OffsetDateTime;
use trust::audit::AuditEvent;
use trust::passphrase::MAX_PASSPHRASE_LEN;
use trust::tokens::{looks_like_token, Redeemer, TokenError};
use trust::PassphraseHash;
use zeroize::Zeroizing;

use super::Gate;
use crate::admission::{
    self, Checked, Decision, Presented, Request, Secret, TokenRefusal, Verdict,
};
use crate::error::Error;

/// What a successful `authenticate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// The client is trusted, under this name if it has one (now, or it was already: the
    /// secret is checked all the same, as Multipass does).
    Trusted(Option<String>),
    /// A token from a client trusted already: left unused, for the person it was made for.
    TokenNotNeeded(Option<String>),
}

impl Gate {
    /// Check `secret` and trust the peer's client if it is right.
    pub async fn authenticate(
        &self,
        peer: &Peer,
        secret: Zeroizing<String>,
    ) -> Result<Authenticated, Error> {
        let kind = if looks_like_token(&secret) {
            Secret::Token
        } else {
            Secret::Passphrase
        };
        let request = Request::Authenticate(kind);
        // One check at a time per peer: many at once (on many streams or connections) cannot
        // all pass the limiter before the first failure is recorded; a flood queues behind
        // itself, not in front of others. It also makes the count of the user's passphrase
        // clients in the facts exact: the turn is held until the client is written, so the
        // user's other attempts cannot pass the same count meanwhile.
        let key = peer.key();
        let _turn = match key {
            Some(key) => Some(self.limiter.turn(key).await),
            None => None,
        };
        let wait = key.and_then(|key| self.limiter.wait(key));
        let facts = self.facts(peer, request, wait).await?;
        // `legacy`: a right passphrase's hash that is to be replaced by Argon2id.
        let (outcome, name, legacy) = match admission::decide(&facts, request) {
            Decision::Refuse(refusal) => {
                self.pace_refusal(peer).await;
                return Err(self.refuse(peer, refusal, request, None, None));
            }
            Decision::CheckPassphrase => {
                // Paced by the right passphrases checked before; this one takes its place in
                // the pace only if it is right too.
                self.right_passphrase_pace
                    .wait_ready(peer, super::MOST_PACED_WAIT)
                    .await
                    .map_err(|retry_after| Error::Paced {
                        what: "passphrase checks",
                        retry_after,
                    })?;
                let (checked, legacy) = self.check_passphrase(&secret).await?;
                if let (Checked::RightPassphrase, Some(key)) = (checked, peer.limited_key()) {
                    self.right_passphrase_pace.turn(key, Instant::now());
                }
                (checked, None, legacy)
            }
            // Redeeming would spend the token on a client that gains nothing from it.
            Decision::RedeemToken if facts.presented == Presented::Trusted => {
                return Ok(Authenticated::TokenNotNeeded(self.trusted_name(peer)?));
            }
            Decision::RedeemToken => {
                let (checked, name) = self.redeem(peer, secret.clone()).await?;
                (checked, name, None)
            }
            other => unreachable!("{other:?} is no answer to authenticate"),
        };
        let key = key.ok_or(Error::Internal)?;
        match admission::checked(outcome) {
            Verdict::Refuse(refusal) => {
                let failures = refusal
                    .is_failed_attempt()
                    .then(|| self.limiter.record_failure(key));
                self.pace_refusal(peer).await;
                let error = self.refuse(peer, refusal, request, None, failures);
                // `authenticate` makes no first client (Multipass's rule: only gated requests
                // do), but an administrator on a fresh service is told the command that does.
                if matches!(error, Error::PassphraseNotSet { .. }) {
                    // Only a hint: the refusal stands whatever asking for it meets.
                    let facts = self.facts(peer, Request::Use, None).await;
                    if facts.is_ok_and(|facts| {
                        admission::decide(&facts, Request::Use) == Decision::TryFirstClient
                    }) {
                        return Err(Error::PassphraseNotSet { first_client: true });
                    }
                }
                Err(error)
            }
            Verdict::Enrol(how) => {
                self.limiter.record_success(key);
                let client = peer.client.as_ref().ok_or(Error::NoClientCertificate)?;
                let name = self.enrol(peer, client, how, name).await?;
                // Seen now: `trust list` shows it when its client was last used, and one that
                // has just enrolled was, by this very request.
                self.note_seen(client);
                if let Some(old) = legacy {
                    self.upgrade_hash(&old, secret).await;
                }
                Ok(Authenticated::Trusted(name))
            }
        }
    }

    /// Check `passphrase` against the stored hash; a right one's hash comes back too if it is a
    /// legacy one, to be replaced.
    async fn check_passphrase(
        &self,
        passphrase: &Zeroizing<String>,
    ) -> Result<(Checked, Option<PassphraseHash>), Error> {
        if self.settings.load()?.passphrase()?.is_none() {
            return Ok((Checked::NoPassphrase, None));
        }
        if passphrase.len() > MAX_PASSPHRASE_LEN || passphrase.is_empty() {
            return Ok((Checked::WrongPassphrase, None));
        }
        let settings = self.settings.clone();
        let candidate = passphrase.clone();
        self.hashes
            .run(move || {
                // Read again once the hash's turn has come (the wait can be long): a check
                // queued before the passphrase was changed is made against the new one.
                let Some(hash) = settings.load()?.passphrase()? else {
                    return Ok((Checked::NoPassphrase, None));
                };
                Ok(if hash.verify(&candidate) {
                    let legacy = hash.needs_upgrade().then_some(hash);
                    (Checked::RightPassphrase, legacy)
                } else {
                    (Checked::WrongPassphrase, None)
                })
            })
            .await?
    }

    /// Redeem `token`: consumed before the client is trusted, so a failure in between costs the
    /// token and never enrols a second client. The name is the token's if its creator chose one.
    async fn redeem(
        &self,
        peer: &Peer,
        token: Zeroizing<String>,
    ) -> Result<(Checked, Option<String>), Error> {
        let tokens = self.tokens.clone();
        let now = OffsetDateTime::now_utc();
        let by = Redeemer {
            uid: peer.credentials.map(|c| c.uid),
            client: peer.client.as_ref().map(|c| c.fingerprint()),
        };
        let redeemed = tokio::task::spawn_blocking(move || tokens.redeem(&token, by, now));
        let record = match redeemed.await? {
            Ok(record) => record,
            Err(TokenError::Refused(why)) => return Ok((Checked::TokenRefused(why), None)),
            Err(TokenError::Storage(e)) => return Err(Error::Storage(e)),
            // Redeeming checks no name or lifetime: nothing else is refused.
            Err(_) => return Ok((Checked::TokenRefused(TokenRefusal::Unknown), None)),
        };
        if let Some(client) = &peer.client {
            AuditEvent::TokenRedeemed {
                name: &record.name,
                fingerprint: client.fingerprint(),
                who: crate::audit::who(peer),
            }
            .emit();
        }
        Ok((
            Checked::TokenRedeemed,
            record.client_name().map(str::to_string),
        ))
    }

    /// The name the peer's client is trusted under.
    fn trusted_name(&self, peer: &Peer) -> Result<Option<String>, Error> {
        let Some(client) = &peer.client else {
            return Ok(None);
        };
        Ok(self
            .store
            .current()?
            .get(&client.fingerprint())
            .and_then(|e| e.metadata.name.clone()))
    }

    /// Replace a legacy scrypt hash by Argon2id, unless the passphrase changed meanwhile.
    async fn upgrade_hash(&self, old: &PassphraseHash, passphrase: Zeroizing<String>) {
        let new = match self
            .hashes
            .run(move || PassphraseHash::new(&passphrase))
            .await
        {
            Ok(Ok(new)) => new,
            _ => return,
        };
        let settings = self.settings.clone();
        let old_value = old.to_setting();
        let result = tokio::task::spawn_blocking(move || {
            settings.update(|ini| {
                let current = ini.passphrase().ok().flatten().map(|h| h.to_setting());
                if current.as_deref() == Some(old_value.as_str()) {
                    ini.set_passphrase(Some(&new));
                    true
                } else {
                    false
                }
            })
        })
        .await;
        match result {
            Ok(Ok(true)) => AuditEvent::PassphraseUpgraded.emit(),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not upgrade the passphrase hash"),
            Err(_) => tracing::warn!("could not upgrade the passphrase hash"),
        }
    }
}
