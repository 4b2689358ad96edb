//! One-time enrollment tokens: a trusted client creates one, a new user redeems it once with
//! `multipass authenticate` (typed at its prompt), and it is gone. LXD's lesson: a reusable shared
//! secret invites brute force and cannot be taken back from one person; a token enrolls exactly one
//! client, expires soon, and can be revoked.
//!
//! A token is [`TOKEN_PREFIX`] followed by [`TOKEN_BYTES`] random bytes in hex. The fixed shape
//! lets the daemon tell a token from a passphrase by looking at it, so a wrong token costs no
//! Argon2 hash and a passphrase is never hashed twice.
//!
//! Only the SHA-256 of a token is stored: with 160 random bits there is nothing to brute-force, so
//! a slow password hash would add cost without adding safety. Hashes are compared in constant
//! time. The file (`DATA/enrollment-tokens`, 0600) is replaced atomically under its directory's
//! lock, like every other file of the service. Used and revoked tokens stay in it as tombstones
//! for [`TOMBSTONE_RETENTION`], so that a second redemption is told "already used" rather than
//! "not valid".
//!
//! The file holds one JSON object per record, after `#` comment lines. The first release wrote
//! tab-separated lines instead; those are still read, and the next write replaces them.

use std::fmt;
use std::path::{Path, PathBuf};

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::fsutil::{self, FileMode};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "mpt_";
/// Random bytes in a token (160 bits).
pub const TOKEN_BYTES: usize = 20;
/// Lifetime of a token when none is asked for.
pub const DEFAULT_LIFETIME: Duration = Duration::minutes(15);
/// Longest lifetime a token may be given: a token is for enrolling someone now, not a standing
/// credential.
pub const MAX_LIFETIME: Duration = Duration::days(30);
/// How long used, revoked and expired tokens are remembered.
pub const TOMBSTONE_RETENTION: Duration = Duration::days(7);
/// Records the file may hold, so a client cannot grow it without bound.
pub const MAX_RECORDS: usize = 1000;
/// Longest token name (that of every name).
pub const MAX_NAME_LEN: usize = crate::names::MAX_NAME_LEN;

const HEADER: &str =
    "# multipassd enrollment tokens: the SHA-256 of each token, never the token.\n\
     # One JSON object per token; lines starting with # are comments.\n";

/// Whether `candidate` has the shape of a token (prefix and exactly the right number of lower-case
/// hex digits). Anything else is treated as a passphrase.
pub fn looks_like_token(candidate: &str) -> bool {
    candidate.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == TOKEN_BYTES * 2
            && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The token in `entered` when it is one, or one with blanks, or one pair of matching quotes,
/// around it, as a copy from a terminal or a document brings along. Clients take such an entry for
/// the token, so a passphrase may not look like this either ([`crate::passphrase::validate_new`]).
pub fn token_in(entered: &str) -> Option<&str> {
    let trimmed = entered.trim();
    let unquoted = ['\'', '"', '`']
        .into_iter()
        .find_map(|q| trimmed.strip_prefix(q)?.strip_suffix(q))
        .map_or(trimmed, str::trim);
    looks_like_token(unquoted).then_some(unquoted)
}

/// A new token in plain text. Exists only between creation and the reply that carries it to the
/// administrator; `Debug` never shows it and the memory is wiped on drop.
pub struct Token(Zeroizing<String>);

impl Token {
    fn generate() -> Token {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        rand_core::OsRng.fill_bytes(bytes.as_mut());
        Token(Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            hex::encode(bytes.as_ref())
        )))
    }

    /// The token, to be shown once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// SHA-256 of a token: what the file holds.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TokenHash([u8; 32]);

/// Not secret like the token, but there is no reason for it to reach a log either.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// What happened to a token, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Stored {
    Active,
    Used,
    Revoked,
}

/// Where a token stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Can be redeemed.
    Active,
    /// Its lifetime is over.
    Expired,
    /// Redeemed; it enrolled a client.
    Used,
    /// Revoked by an administrator.
    Revoked,
}

impl TokenStatus {
    /// The word shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
            TokenStatus::Used => "used",
            TokenStatus::Revoked => "revoked",
        }
    }
}

/// What [`TokenStore::revoke`] did.
#[derive(Debug)]
pub struct Revocation {
    /// The token's record, as it is now.
    pub record: TokenRecord,
    /// Its status before: [`TokenStatus::Active`] if this revoked it, otherwise nothing changed.
    pub before: TokenStatus,
}

/// Who redeemed a token: the user and the client it enrolled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redeemer {
    /// The redeeming user's uid (none over TCP).
    pub uid: Option<u32>,
    /// The client it enrolled.
    pub client: Option<crate::Fingerprint>,
}

/// One token as the file records it (never the token itself).
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Identifies the token for listing and revoking.
    pub name: String,
    hash: TokenHash,
    /// When it was created.
    pub created: OffsetDateTime,
    /// When it stops working.
    pub expires: OffsetDateTime,
    /// Uid of the user whose client created it.
    pub created_by: Option<u32>,
    state: Stored,
    state_changed: Option<OffsetDateTime>,
    /// Whether its creator chose the name, which then names the client it enrolls too.
    named: bool,
    /// Who redeemed it, once used.
    pub used_by: Redeemer,
}

impl TokenRecord {
    /// Where it stands at `now`.
    pub fn status(&self, now: OffsetDateTime) -> TokenStatus {
        match self.state {
            Stored::Used => TokenStatus::Used,
            Stored::Revoked => TokenStatus::Revoked,
            Stored::Active if now >= self.expires => TokenStatus::Expired,
            Stored::Active => TokenStatus::Active,
        }
    }

    /// The name the client it enrolls is trusted under: the token's, if its creator chose one;
    /// otherwise `None`, and the client is named after the user who redeems it.
    pub fn client_name(&self) -> Option<&str> {
        self.named.then_some(self.name.as_str())
    }

    /// Whether it may be forgotten at `now`.
    fn stale(&self, now: OffsetDateTime) -> bool {
        let since = match self.state {
            Stored::Active => self.expires,
            Stored::Used | Stored::Revoked => self.state_changed.unwrap_or(self.expires),
        };
        now - since > TOMBSTONE_RETENTION
    }
}

/// A record as one line of the file holds it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    name: String,
    #[serde(with = "hex::serde")]
    sha256: [u8; 32],
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires: OffsetDateTime,
    creator_uid: Option<u32>,
    state: Stored,
    #[serde(with = "time::serde::rfc3339::option")]
    state_changed: Option<OffsetDateTime>,
    /// A hand-written record without it names the client after the token, as the first release
    /// did with every token.
    #[serde(default = "named_by_default")]
    named: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_by_uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_by_client: Option<String>,
}

fn named_by_default() -> bool {
    true
}

impl From<&TokenRecord> for Line {
    fn from(r: &TokenRecord) -> Line {
        Line {
            name: r.name.clone(),
            sha256: r.hash.0,
            created: r.created,
            expires: r.expires,
            creator_uid: r.created_by,
            state: r.state,
            state_changed: r.state_changed,
            named: r.named,
            used_by_uid: r.used_by.uid,
            used_by_client: r.used_by.client.map(|f| f.to_hex()),
        }
    }
}

impl TryFrom<Line> for TokenRecord {
    type Error = TokenError;

    fn try_from(line: Line) -> Result<TokenRecord, TokenError> {
        validate_name(&line.name)?;
        Ok(TokenRecord {
            name: line.name,
            hash: TokenHash(line.sha256),
            created: line.created,
            expires: line.expires,
            created_by: line.creator_uid,
            state: line.state,
            state_changed: line.state_changed,
            named: line.named,
            used_by: Redeemer {
                uid: line.used_by_uid,
                // Shown to administrators: only what a fingerprint can be.
                client: line
                    .used_by_client
                    .and_then(|c| crate::Fingerprint::from_hex(&c)),
            },
        })
    }
}

/// A line of the first release's tab-separated file: name, sha256, created, expires, creator uid
/// (`-` for none), state, state changed (`-` for never). Its tokens named the clients they
/// enrolled, as their creators were told.
#[derive(Deserialize)]
struct LegacyLine(String, String, String, String, String, String, String);

impl LegacyLine {
    fn parse(line: &str) -> Option<Line> {
        let LegacyLine(name, sha256, created, expires, creator, state, changed) =
            csv::ReaderBuilder::new()
                .delimiter(b'\t')
                .has_headers(false)
                .quoting(false)
                .from_reader(line.as_bytes())
                .deserialize()
                .next()?
                .ok()?;
        let time = |text: &str| OffsetDateTime::parse(text, &Rfc3339).ok();
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&sha256, &mut digest).ok()?;
        Some(Line {
            name,
            sha256: digest,
            created: time(&created)?,
            expires: time(&expires)?,
            creator_uid: creator.parse().ok(),
            state: serde_json::from_value(serde_json::Value::String(state)).ok()?,
            state_changed: time(&changed),
            named: true,
            used_by_uid: None,
            used_by_client: None,
        })
    }
}

/// A record from one line of the file, in either format; `None` if it is not one.
fn parse_line(line: &str) -> Option<TokenRecord> {
    let line = if line.starts_with('{') {
        serde_json::from_str::<Line>(line).ok()?
    } else {
        LegacyLine::parse(line)?
    };
    TokenRecord::try_from(line).ok()
}

/// Why a token was not redeemed: the daemon's admission decides on it and audits it, and the
/// person at the client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenRefusal {
    /// No token has this value.
    #[error("The enrollment token is not valid. Please check it, or ask an administrator for a new one.")]
    Unknown,
    /// Already redeemed.
    #[error(
        "This enrollment token has already been used. Please ask an administrator for a new one."
    )]
    Used,
    /// Past its expiry.
    #[error("This enrollment token has expired. Please ask an administrator for a new one.")]
    Expired,
    /// Revoked by an administrator.
    #[error("This enrollment token has been revoked. Please ask an administrator for a new one.")]
    Revoked,
}

/// Why a token operation was refused. Refusals read as sentences for the person at the client;
/// [`TokenError::Storage`] is a failure of the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The name is empty, too long or has characters other than letters, digits and `._@+-`.
    #[error("Invalid token name '{name}': {reason}.")]
    InvalidName {
        /// The name asked for (shown back; it is not a secret).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An active token already has this name.
    #[error("An active enrollment token named '{0}' already exists. Please choose another name, or revoke it first.")]
    NameTaken(String),
    /// The lifetime asked for is zero or longer than [`MAX_LIFETIME`].
    #[error("A token must expire after at least 1 second and at most {} days.", MAX_LIFETIME.whole_days())]
    InvalidLifetime,
    /// The file holds [`MAX_RECORDS`] tokens already.
    #[error("There are too many enrollment tokens. Please revoke unused ones first.")]
    TooMany,
    /// Revoking a name no token has.
    #[error("There is no enrollment token named '{0}'.")]
    NoSuchToken(String),
    /// Revoking by a token's value that no token has.
    #[error("No enrollment token matches the token given. Please check it, or give the token's name (`multipass trust token list`).")]
    NoSuchTokenValue,
    /// Revoking a token that already enrolled a client (its fingerprint, if recorded).
    #[error("The enrollment token '{name}' was already used; to undo that, remove the client it enrolled: {}.", match client {
        Some(client) => format!("`multipass trust remove {}`", crate::pki::short_hex(client)),
        None => "see `multipass trust list`, then `multipass trust remove`".to_string(),
    })]
    AlreadyUsed {
        /// The token's name.
        name: String,
        /// The client it enrolled.
        client: Option<String>,
    },
    /// Redeeming a token that cannot be redeemed.
    #[error(transparent)]
    Refused(#[from] TokenRefusal),
    /// Reading or writing the token file failed.
    #[error(transparent)]
    Storage(#[from] Error),
    /// The condition of [`TokenStore::create_if`] no longer held once the token file was locked
    /// (the daemon answers its own "not trusted" refusal instead of this text).
    #[error("The client that asked is no longer trusted.")]
    Withdrawn,
}

/// Check a token name: a valid name ([`crate::names::validate`]: it becomes the enrolled
/// client's name) of letters, digits and `._@+-` only, not starting with `-` (it would read as
/// an option on the command line).
pub fn validate_name(name: &str) -> Result<&str, TokenError> {
    let invalid = |reason: String| TokenError::InvalidName {
        name: crate::names::shown(name).to_string(),
        reason,
    };
    crate::names::validate(name).map_err(|e| invalid(e.to_string()))?;
    if name.starts_with('-') {
        return Err(invalid("it starts with '-'".into()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits and the characters . _ @ + - are allowed".into(),
        ));
    }
    // Shown in lists and logs, a name like a token would be mistaken for one.
    if looks_like_token(name) {
        return Err(invalid("it looks like an enrollment token".into()));
    }
    Ok(name)
}

/// The token file.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    mode: FileMode,
}

impl TokenStore {
    /// The file at `path`, written with `mode`. Nothing is read yet.
    pub fn new(path: impl Into<PathBuf>, mode: FileMode) -> TokenStore {
        TokenStore {
            path: path.into(),
            mode,
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every remembered token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.read()?)
    }

    /// Create a token named `name` (a random name when `None`) that works once, until
    /// `now + lifetime`.
    pub fn create(
        &self,
        name: Option<&str>,
        lifetime: Duration,
        created_by: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(Token, TokenRecord), TokenError> {
        self.create_if(|| Ok(true), name, lifetime, created_by, now)
    }

    /// As [`TokenStore::create`], once `allowed`, asked under the token file's lock, has said
    /// yes ([`TokenError::Withdrawn`] when it says no, and nothing is written). A condition that
    /// can change meanwhile (whether the administrator asking is still trusted) is then checked
    /// in the same order as the writes.
    pub fn create_if(
        &self,
        allowed: impl FnOnce() -> Result<bool, Error>,
        name: Option<&str>,
        lifetime: Duration,
        created_by: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(Token, TokenRecord), TokenError> {
        if lifetime <= Duration::ZERO || lifetime > MAX_LIFETIME {
            return Err(TokenError::InvalidLifetime);
        }
        let named = name.is_some();
        let name = match name {
            Some(name) => validate_name(name)?.to_string(),
            None => format!("token-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        self.modify(now, |records| {
            if !allowed()? {
                return Err(TokenError::Withdrawn);
            }
            if records
                .iter()
                .any(|r| r.name == name && r.status(now) == TokenStatus::Active)
            {
                return Err(TokenError::NameTaken(name.clone()));
            }
            // A tombstone of the same name gives way: names identify what is current.
            records.retain(|r| r.name != name);
            if records.len() >= MAX_RECORDS {
                return Err(TokenError::TooMany);
            }
            let token = Token::generate();
            let record = TokenRecord {
                name: name.clone(),
                hash: TokenHash::of(token.expose()),
                created: now,
                expires: now + lifetime,
                created_by,
                state: Stored::Active,
                state_changed: None,
                named,
                used_by: Redeemer::default(),
            };
            records.push(record.clone());
            Ok((token, record))
        })
    }

    /// Revoke the token named `name` so that it can no longer be redeemed. Revoking a token
    /// that cannot be redeemed anyway (revoked or expired) succeeds and changes nothing, so that
    /// a script may repeat it; the answer says what it was.
    pub fn revoke(&self, name: &str, now: OffsetDateTime) -> Result<Revocation, TokenError> {
        self.modify(now, |records| {
            // The token itself designates it too: an administrator who has only the token (the
            // generated name went to the terminal) can still revoke it. Names never look like
            // tokens, so the two cannot be mistaken for each other.
            let value = looks_like_token(name).then(|| TokenHash::of(name));
            let record = records
                .iter_mut()
                .find(|r| r.name == name || value.as_ref().is_some_and(|v| r.hash.matches(v)))
                .ok_or_else(|| match value {
                    // Not shown back: it is a secret, even if a wrong one.
                    Some(_) => TokenError::NoSuchTokenValue,
                    None => TokenError::NoSuchToken(crate::names::shown(name).to_string()),
                })?;
            let before = record.status(now);
            match before {
                TokenStatus::Used => {
                    return Err(TokenError::AlreadyUsed {
                        name: record.name.clone(),
                        client: record.used_by.client.map(|f| f.to_hex()),
                    })
                }
                TokenStatus::Active => {
                    record.state = Stored::Revoked;
                    record.state_changed = Some(now);
                }
                TokenStatus::Revoked | TokenStatus::Expired => {}
            }
            Ok(Revocation {
                record: record.clone(),
                before,
            })
        })
    }

    /// Redeem `token`: if it is active, mark it used (it is consumed before the caller trusts
    /// anybody, so a failure afterwards costs a token, never enrolls two clients) and return its
    /// record.
    pub fn redeem(
        &self,
        token: &str,
        by: Redeemer,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, TokenError> {
        let hash = TokenHash::of(token);
        self.modify(now, |records| {
            // Every record is compared, so the time taken does not depend on where a match is.
            let mut found = None;
            for (i, record) in records.iter().enumerate() {
                if record.hash.matches(&hash) {
                    found = Some(i);
                }
            }
            let record = &mut records[found.ok_or(TokenRefusal::Unknown)?];
            match record.status(now) {
                TokenStatus::Active => {
                    record.state = Stored::Used;
                    record.state_changed = Some(now);
                    record.used_by = by;
                    Ok(record.clone())
                }
                TokenStatus::Used => Err(TokenRefusal::Used.into()),
                TokenStatus::Expired => Err(TokenRefusal::Expired.into()),
                TokenStatus::Revoked => Err(TokenRefusal::Revoked.into()),
            }
        })
    }

    /// Apply `change` to the records under the directory lock and write them back (pruned of
    /// stale tombstones) if it succeeded. A refusal writes nothing.
    fn modify<T>(
        &self,
        now: OffsetDateTime,
        change: impl FnOnce(&mut Vec<TokenRecord>) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        fsutil::update(&self.path, self.mode, |bytes| {
            let mut records = self.parse(bytes);
            let result = change(&mut records)?;
            records.retain(|r| !r.stale(now));
            let mut text = String::from(HEADER);
            for record in &records {
                // Its times come from the clock or were parsed as RFC 3339, so they format as
                // RFC 3339; nothing else in a record can fail to serialise.
                let line = serde_json::to_string(&Line::from(record))
                    .expect("a token record always serialises");
                text.push_str(&line);
                text.push('\n');
            }
            Ok((result, text.into_bytes()))
        })
    }

    fn read(&self) -> Result<Vec<TokenRecord>, Error> {
        Ok(self.parse(fsutil::read_optional(&self.path)?))
    }

    fn parse(&self, bytes: Option<Vec<u8>>) -> Vec<TokenRecord> {
        let Some(bytes) = bytes else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut records = Vec::new();
        let mut skipped = 0;
        for line in text.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(record) => records.push(record),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            // Fail closed: a line we cannot read is a token nobody can redeem.
            tracing::warn!(
                path = %self.path.display(),
                skipped,
                "enrollment token file holds lines that are not tokens; ignoring them"
            );
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_out_of_whitespace_and_quotes() {
        let token = format!("mpt_{}", "0123456789abcdef0123".repeat(2));
        for entered in [
            format!("{token} "),
            format!("\t{token}\r "),
            format!("'{token}'"),
            format!(" \"{token} \" "),
            format!("`{token}`"),
        ] {
            assert_eq!(token_in(&entered), Some(token.as_str()), "{entered:?}");
        }
        for not_one in [
            format!("'{token}\""),
            format!("''{token}''"),
            format!("{token}x"),
            format!("{} ", &token[..20]),
            "a passphrase".to_string(),
        ] {
            assert_eq!(token_in(&not_one), None, "{not_one:?}");
        }
    }

    fn store(dir: &Path) -> TokenStore {
        TokenStore::new(dir.join("enrollment-tokens"), FileMode::PRIVATE)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn tokens_have_the_recognisable_shape() {
        let token = Token::generate();
        assert!(looks_like_token(token.expose()), "{}", token.expose());
        assert_eq!(token.expose().len(), TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        assert_ne!(Token::generate().expose(), token.expose());
        for not_a_token in [
            "",
            "passphrase",
            "mpt_",
            &format!("mpt_{}", "a".repeat(39)),
            &format!("mpt_{}", "a".repeat(41)),
            &format!("mpt_{}", "A".repeat(40)),
            &format!("MPT_{}", "a".repeat(40)),
            &format!("mpt_{}g", "a".repeat(39)),
        ] {
            assert!(!looks_like_token(not_a_token), "{not_a_token}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let token = Token::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn a_token_works_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (token, record) = s
            .create(Some("bob"), DEFAULT_LIFETIME, Some(1000), now())
            .unwrap();
        assert_eq!(record.name, "bob");
        let redeemed = s
            .redeem(token.expose(), Redeemer::default(), now())
            .unwrap();
        assert_eq!(redeemed.name, "bob");
        assert_eq!(redeemed.created_by, Some(1000));
        assert!(matches!(
            s.redeem(token.expose(), Redeemer::default(), now()),
            Err(TokenError::Refused(TokenRefusal::Used))
        ));
        assert_eq!(s.list().unwrap()[0].status(now()), TokenStatus::Used);
    }

    #[test]
    fn only_the_hash_is_stored_privately() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (token, _) = s.create(None, DEFAULT_LIFETIME, None, now()).unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(!text.contains(token.expose()));
        assert!(!text.contains(&token.expose()[TOKEN_PREFIX.len()..]));
        assert!(text.contains(&hex::encode(Sha256::digest(token.expose().as_bytes()))));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn expired_revoked_and_unknown_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let t0 = now();
        let (short, _) = s
            .create(Some("short"), Duration::seconds(5), None, t0)
            .unwrap();
        assert!(matches!(
            s.redeem(
                short.expose(),
                Redeemer::default(),
                t0 + Duration::seconds(5)
            ),
            Err(TokenError::Refused(TokenRefusal::Expired))
        ));
        let (revoked, _) = s.create(Some("gone"), DEFAULT_LIFETIME, None, t0).unwrap();
        assert_eq!(
            s.revoke("gone", t0).unwrap().record.status(t0),
            TokenStatus::Revoked
        );
        let again = s.revoke("gone", t0).unwrap();
        assert_eq!(again.before, TokenStatus::Revoked, "nothing changed");
        assert_eq!(again.record.status(t0), TokenStatus::Revoked);
        // An expired token stays expired: it says when it stopped working.
        let (_, _) = s
            .create(Some("lapsed"), Duration::seconds(5), None, t0)
            .unwrap();
        let later = t0 + Duration::seconds(10);
        let lapsed = s.revoke("lapsed", later).unwrap();
        assert_eq!(lapsed.before, TokenStatus::Expired);
        assert_eq!(lapsed.record.status(later), TokenStatus::Expired);
        assert!(matches!(
            s.redeem(revoked.expose(), Redeemer::default(), t0),
            Err(TokenError::Refused(TokenRefusal::Revoked))
        ));
        assert!(matches!(
            s.redeem(Token::generate().expose(), Redeemer::default(), t0),
            Err(TokenError::Refused(TokenRefusal::Unknown))
        ));
        assert!(matches!(
            s.revoke("nobody", t0),
            Err(TokenError::NoSuchToken(_))
        ));
        // By the token itself, as well as by its name; an unknown one is not shown back.
        let (value, _) = s
            .create(Some("by-value"), DEFAULT_LIFETIME, None, t0)
            .unwrap();
        let revoked = s.revoke(value.expose(), t0).unwrap();
        assert_eq!(revoked.record.name, "by-value");
        assert_eq!(revoked.before, TokenStatus::Active);
        let unknown = Token::generate();
        let refusal = s.revoke(unknown.expose(), t0).unwrap_err();
        assert!(matches!(refusal, TokenError::NoSuchTokenValue));
        assert!(!refusal.to_string().contains(unknown.expose()));
    }

    #[test]
    fn revoking_a_used_token_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (token, _) = s.create(Some("x"), DEFAULT_LIFETIME, None, now()).unwrap();
        s.redeem(token.expose(), Redeemer::default(), now())
            .unwrap();
        assert!(matches!(
            s.revoke("x", now()),
            Err(TokenError::AlreadyUsed { client: None, .. })
        ));
    }

    #[test]
    fn a_used_token_keeps_who_redeemed_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (token, _) = s.create(Some("x"), DEFAULT_LIFETIME, None, now()).unwrap();
        let by = Redeemer {
            uid: Some(1000),
            client: crate::Fingerprint::from_hex(&"ab".repeat(32)),
        };
        s.redeem(token.expose(), by.clone(), now()).unwrap();
        let listed = s.list().unwrap();
        assert_eq!(listed[0].used_by, by, "read back from the file");
        let refusal = s.revoke("x", now()).unwrap_err().to_string();
        assert!(
            refusal.contains(&format!("`multipass trust remove {}`", "ab".repeat(8))),
            "{refusal}"
        );
        // What the file says of the client is shown to administrators: a fingerprint or nothing.
        let text = std::fs::read_to_string(s.path.clone()).unwrap();
        std::fs::write(&s.path, text.replace(&"ab".repeat(32), "\\u001b[31mred")).unwrap();
        assert_eq!(s.list().unwrap()[0].used_by.client, None);
    }

    #[test]
    fn names_are_validated_and_unique_among_active_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for bad in [
            "",
            "-x",
            "a b",
            "a\tb",
            "ü",
            "a\u{202E}b",
            "a\u{2028}b",
            &"a".repeat(65),
            Token::generate().expose(),
        ] {
            assert!(
                matches!(
                    s.create(Some(bad), DEFAULT_LIFETIME, None, now()),
                    Err(TokenError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        // A refused name is shown back with its invisible characters escaped.
        let refusal = s
            .create(Some("evil\u{202E}gpj.exe"), DEFAULT_LIFETIME, None, now())
            .unwrap_err()
            .to_string();
        assert_eq!(
            refusal,
            "Invalid token name 'evil\\u{202e}gpj.exe': it contains U+202E, an invisible \
             formatting or bidirectional control character."
        );
        s.create(Some("dup"), DEFAULT_LIFETIME, None, now())
            .unwrap();
        assert!(matches!(
            s.create(Some("dup"), DEFAULT_LIFETIME, None, now()),
            Err(TokenError::NameTaken(_))
        ));
        // Once revoked, the name is free again.
        s.revoke("dup", now()).unwrap();
        s.create(Some("dup"), DEFAULT_LIFETIME, None, now())
            .unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn lifetimes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for bad in [
            Duration::ZERO,
            Duration::seconds(-1),
            MAX_LIFETIME + Duration::SECOND,
        ] {
            assert!(matches!(
                s.create(None, bad, None, now()),
                Err(TokenError::InvalidLifetime)
            ));
        }
    }

    #[test]
    fn stale_tombstones_are_pruned_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let t0 = now();
        let (token, _) = s.create(Some("old"), DEFAULT_LIFETIME, None, t0).unwrap();
        s.redeem(token.expose(), Redeemer::default(), t0).unwrap();
        let later = t0 + TOMBSTONE_RETENTION + Duration::minutes(1);
        s.create(Some("new"), DEFAULT_LIFETIME, None, later)
            .unwrap();
        let names: Vec<String> = s.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["new".to_string()]);
    }

    #[test]
    fn a_chosen_name_names_the_client_a_generated_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, named) = s
            .create(Some("bob-laptop"), DEFAULT_LIFETIME, None, now())
            .unwrap();
        let (token, generated) = s.create(None, DEFAULT_LIFETIME, None, now()).unwrap();
        assert_eq!(named.client_name(), Some("bob-laptop"));
        assert!(generated.name.starts_with("token-"), "{}", generated.name);
        assert_eq!(generated.client_name(), None);
        // Remembered across a write and a read.
        let redeemed = s
            .redeem(token.expose(), Redeemer::default(), now())
            .unwrap();
        assert_eq!(redeemed.client_name(), None);
        let listed = s.list().unwrap();
        assert_eq!(listed[0].client_name(), Some("bob-laptop"));
        assert_eq!(listed[1].client_name(), None);
    }

    /// The file as the first release wrote it (tab-separated lines).
    const LEGACY_FILE: &str = "\
# multipassd enrollment tokens: the SHA-256 of each token, never the token.
# name\tsha256\tcreated\texpires\tcreator-uid\tstate\tstate-changed
ci-runner\taaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\t2027-01-15T08:00:00Z\t2027-01-15T08:15:00Z\t0\tactive\t-
old\tbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\t2027-01-14T08:00:00Z\t2027-01-14T08:15:00Z\t1000\tused\t2027-01-14T08:05:00Z
";

    #[test]
    fn a_legacy_file_is_read_and_rewritten_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        std::fs::write(s.path(), LEGACY_FILE).unwrap();
        let at = OffsetDateTime::parse("2027-01-15T08:01:00Z", &Rfc3339).unwrap();
        let before = s.list().unwrap();
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].name, "ci-runner");
        assert_eq!(before[0].created_by, Some(0));
        assert_eq!(before[0].status(at), TokenStatus::Active);
        assert_eq!(before[0].client_name(), Some("ci-runner"));
        assert_eq!(before[1].status(at), TokenStatus::Used);
        assert_eq!(before[1].created_by, Some(1000));

        // The next write migrates the whole file.
        s.revoke("ci-runner", at).unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        let records: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(records.len(), 2, "{text}");
        for line in &records {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(value["sha256"].as_str().unwrap().len() == 64, "{line}");
        }
        assert!(!text.contains('\t'), "{text}");
        let after = s.list().unwrap();
        assert_eq!(after[0].status(at), TokenStatus::Revoked);
        assert_eq!(after[1].name, "old");
        assert_eq!(after[1].status(at), TokenStatus::Used);
        assert_eq!(after[1].state_changed, before[1].state_changed);
        assert_eq!(after[1].hash, before[1].hash);
    }

    #[test]
    fn records_roundtrip_and_damaged_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, record) = s
            .create(Some("a.b@c+d-e_f"), DEFAULT_LIFETIME, Some(7), now())
            .unwrap();
        let mut text = std::fs::read_to_string(s.path()).unwrap();
        text.push_str("garbage line\n\tno\tname\n{\"name\": \"half\"}\n{not json\n");
        std::fs::write(s.path(), text).unwrap();
        let back = s.list().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].name, record.name);
        assert_eq!(back[0].created_by, Some(7));
        assert_eq!(
            back[0].expires.unix_timestamp(),
            record.expires.unix_timestamp()
        );
    }
}
