//! The privileged operations, in the order they happen. Each is called only after polkit said
//! yes (D-Bus) or by root (pkexec, the socket unit's hook).
//!
//! Writes into the state directory are done by a child process running as the directory's
//! owner (the daemon's user), with the same lock and atomic replacement the daemon uses: root
//! never writes into a directory that a less privileged user controls, so a compromised daemon
//! user cannot redirect the helper's writes with symlinks, and the files keep their owner and
//! mode (0600) without chown. What it is asked and answers are typed messages ([`crate::writer`]).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use nix::fcntl::OFlag;
use trust::access::{apply_to, Access};
use trust::fsutil::FileMode;
use trust::settings::SettingsFile;
use trust::{Enrolment, Entry, Metadata, PassphraseHash, TrustStore};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::writer::{self, Passphrase, Reply, Request};
use helper_api::HelperError;

/// Largest trust store the helper reads to decide the socket's access.
const MAX_STORE_READ: u64 = 256 * 1024 * 1024;

/// Check a passphrase before anything else happens, with the daemon's own rules
/// ([`trust::passphrase::validate_new`]). Empty means "clear the passphrase".
pub fn validate_passphrase(passphrase: &str) -> Result<(), HelperError> {
    trust::passphrase::validate_new(passphrase)
        .map_err(|e| HelperError::InvalidInput(e.to_string()))
}

/// Check a certificate before anything else happens; its DER on success.
pub fn validate_certificate(pem: &str) -> Result<Vec<u8>, HelperError> {
    trust::pki::parse_single_certificate(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| HelperError::InvalidInput(e.to_string()))
}

/// The name to record for a client trusted on behalf of `uid`: `given` if it is a valid name
/// ([`trust::names::validate`]), the user's login name (or `uid-N`) when `given` is empty.
pub fn client_name(given: &str, uid: u32) -> Result<String, HelperError> {
    Ok(requested_name(given)?.unwrap_or_else(|| trust::names::default_for_uid(uid)))
}

/// `given`, checked as a client name ([`trust::names::validate`]); `None` when it is empty (the
/// caller's login name then, which [`client_name`] finds once the caller is known).
pub fn requested_name(given: &str) -> Result<Option<String>, HelperError> {
    if given.is_empty() {
        return Ok(None);
    }
    trust::names::validate(given)
        .map(|name| Some(name.to_string()))
        .map_err(|e| {
            HelperError::InvalidInput(format!(
                "Invalid client name '{}': {e}.",
                trust::names::shown(given)
            ))
        })
}

/// Set the passphrase, or with an empty one clear it; whether anything changed (clearing a
/// passphrase that is not set changes nothing).
pub fn set_passphrase(config: &Config, passphrase: Zeroizing<String>) -> anyhow::Result<bool> {
    let request = Request::SetPassphrase {
        passphrase: Passphrase::new(passphrase),
    };
    match run_as_owner(config, &request)? {
        Reply::PassphraseSet => Ok(true),
        Reply::NoPassphraseToClear => Ok(false),
        other => bail!("the writer process answered {other:?} to a passphrase change"),
    }
}

/// Who asked for a certificate to be trusted, for its metadata.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Their uid.
    pub uid: u32,
    /// The name to record (defaults to their login name).
    pub name: String,
}

/// A certificate the helper was asked to trust.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// Its SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// Whether it was added now; false when it was trusted already and nothing changed (no
    /// audit line is then written).
    pub added: bool,
}

/// Trust a certificate (already validated).
pub fn trust_certificate(config: &Config, der: &[u8], who: &Requester) -> anyhow::Result<Trusted> {
    let request = Request::Trust {
        uid: who.uid,
        name: who.name.clone(),
        pem: trust::pki::certificate_pem(der),
    };
    let trusted = match run_as_owner(config, &request)? {
        Reply::Trusted { fingerprint, added } => Trusted { fingerprint, added },
        other => bail!("the writer process answered {other:?} to a trust request"),
    };
    let applied = apply_socket_policy(config);
    if let Err(e) = applied {
        tracing::warn!(error = %e, "could not update the socket's access after trusting");
    }
    Ok(trusted)
}

/// Open or restrict the socket as asked, holding the trust store's lock meanwhile (see
/// [`StoreLock`]) so that no setting made under the lock comes between. The store is not read:
/// the daemon that asks read it without the lock, and reads it again once this is done, setting
/// the access again if a write came between (`Gate::sync_socket`).
pub fn set_socket_access(config: &Config, access: Access) -> anyhow::Result<()> {
    let _lock = StoreLock::take(config)?;
    apply_socket(config, access)
}

/// Give the socket the access that matches the trust store (`apply-socket-policy`, and after
/// trusting a certificate). The store is read and the access set under the store's lock, so
/// that a change of the store (a removal by the daemon) cannot come between them and leave the
/// socket open with nobody trusted.
pub fn apply_socket_policy(config: &Config) -> anyhow::Result<Access> {
    let lock = StoreLock::take(config)?;
    let access = Access::for_store(lock.store_is_empty()?);
    apply_socket(config, access)?;
    Ok(access)
}

fn apply_socket(config: &Config, access: Access) -> anyhow::Result<()> {
    // The error names the socket and why (a symbolic link, a directory others can write...).
    Ok(apply_to(&config.socket, access, &config.admin())?)
}

/// The trust store's directory, opened and locked as its writers lock it (the daemon, the
/// helper's writer), so that no store change and no other setting of the socket's access comes
/// between reading the store and setting the socket. Opened as root in a directory the daemon's
/// user controls: no link is followed from the state directory on, the store's own directory
/// included. `None` inside when there is no such directory (nothing is trusted, and nothing to
/// lock).
struct StoreLock {
    dir: Option<nix::fcntl::Flock<std::fs::File>>,
    path: std::path::PathBuf,
}

impl StoreLock {
    fn take(config: &Config) -> anyhow::Result<StoreLock> {
        use nix::fcntl::{open, openat, Flock, FlockArg};
        use nix::sys::stat::Mode;
        let layout = config.layout();
        let path = layout.trust_store();
        let dir = layout.trust_store_dir();
        // The state directory comes from root's command line, in a directory its user cannot
        // write.
        let opened = open(
            layout.root(),
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(|root| {
            let name = dir
                .file_name()
                .map(std::path::PathBuf::from)
                .unwrap_or_default();
            openat(
                &root,
                &name,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        });
        let dir = match opened {
            Ok(fd) => Some(
                Flock::lock(std::fs::File::from(fd), FlockArg::LockExclusive).map_err(
                    |(_, errno)| {
                        anyhow::Error::new(errno).context(format!("cannot lock {}", dir.display()))
                    },
                )?,
            ),
            Err(nix::errno::Errno::ENOENT) => None,
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", dir.display())),
        };
        Ok(StoreLock { dir, path })
    }

    /// Whether nobody is trusted: the store read from the locked directory, bounded, and only
    /// if it is a regular file (never through a link).
    fn store_is_empty(&self) -> anyhow::Result<bool> {
        use nix::fcntl::openat;
        use nix::sys::stat::Mode;
        let Some(dir) = &self.dir else {
            return Ok(true);
        };
        let name = self
            .path
            .file_name()
            .map(std::path::PathBuf::from)
            .unwrap_or_default();
        let file = match openat(
            &**dir,
            &name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => std::fs::File::from(fd),
            Err(nix::errno::Errno::ENOENT) => return Ok(true),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open {}", self.path.display()))
            }
        };
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            bail!("{} is not a regular file", self.path.display());
        }
        let mut bytes = Vec::new();
        file.take(MAX_STORE_READ).read_to_end(&mut bytes)?;
        Ok(trust::Bundle::parse(&bytes).is_empty())
    }
}

/// Run `multipassd-helper write-as-owner` as the owner of the state directory, `request` on its
/// standard input (never in argv); its reply, or why there is none.
fn run_as_owner(config: &Config, request: &Request) -> anyhow::Result<Reply> {
    let dir = &config.data_dir;
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot find the state directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // The running program itself, through /proc: a package upgrade may have replaced or removed
    // the file it was started from, and its path would then start the new version, or nothing.
    // The name it was started as stays its argv[0], for `ps`.
    let name = std::env::current_exe().context("cannot find the helper's own executable")?;
    let mut child = Command::new("/proc/self/exe")
        .arg0(&name)
        .arg("write-as-owner")
        .arg("--data-dir")
        .arg(dir)
        .uid(meta.uid())
        .gid(meta.gid())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the writer process")?;
    // Dropped at the end of the statement: the child sees the end of its input.
    writer::send(request, child.stdin.take().context("no stdin")?)
        .context("cannot pass the request to the writer process")?;
    let output = child.wait_with_output()?;
    let reply = writer::receive::<Reply>(&output.stdout[..], writer::MAX_REPLY);
    match reply {
        Ok(Reply::Failed { error }) => bail!("the write failed: {error}"),
        Ok(reply) if output.status.success() => Ok(reply),
        _ => bail!(
            "the write failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// The child's side of [`run_as_owner`]: read the request from stdin and apply it with the
/// daemon's own file discipline. Every outcome is a [`Reply`], failures included.
pub fn write_as_owner(data_dir: &std::path::Path) -> Reply {
    match apply(data_dir) {
        Ok(reply) => reply,
        Err(e) => Reply::Failed {
            error: format!("{e:#}"),
        },
    }
}

fn apply(data_dir: &std::path::Path) -> anyhow::Result<Reply> {
    let request: Request = writer::receive(std::io::stdin(), writer::MAX_REQUEST)
        .context("cannot read the request")?;
    let layout = trust::DataDir::new(data_dir);
    match request {
        Request::SetPassphrase { passphrase } => {
            let passphrase = passphrase.expose();
            validate_passphrase(passphrase).map_err(|e| anyhow::anyhow!("{e}"))?;
            let settings = SettingsFile::new(layout.settings(), FileMode::PRIVATE);
            // Clearing what is clear changes nothing, as with the daemon: no write, no audit
            // line. (A damaged file is not "clear": the write below mends it.)
            if passphrase.is_empty()
                && settings
                    .load()
                    .ok()
                    .is_some_and(|ini| matches!(ini.passphrase(), Ok(None)))
            {
                return Ok(Reply::NoPassphraseToClear);
            }
            let hash = if passphrase.is_empty() {
                None
            } else {
                Some(PassphraseHash::new(passphrase)?)
            };
            settings.update(|ini| ini.set_passphrase(hash.as_ref()))?;
            Ok(Reply::PassphraseSet)
        }
        Request::Trust { uid, name, pem } => {
            let name = client_name(&name, uid).map_err(|e| anyhow::anyhow!("{e}"))?;
            let der = validate_certificate(&pem).map_err(|e| anyhow::anyhow!("{e}"))?;
            let entry = Entry::new(
                der.into(),
                Metadata::enrolled_now(Some(name), Some(uid), Enrolment::Admin),
            );
            let fingerprint = entry.fingerprint;
            trust::fsutil::ensure_dir(&layout.trust_store_dir(), 0o700)?;
            // Named as the daemon names the clients it trusts: never a name taken already.
            let tokens = trust::tokens::TokenStore::new(layout.tokens(), FileMode::PRIVATE);
            let enrolled = TrustStore::new(layout.trust_store(), FileMode::PRIVATE).enrol(
                entry,
                Some(&tokens),
                time::OffsetDateTime::now_utc(),
            )?;
            Ok(Reply::Trusted {
                fingerprint: fingerprint.to_hex(),
                added: enrolled.added,
            })
        }
    }
}
