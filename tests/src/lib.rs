//! Harness of the whole-system process tests (docs/CONTRACT.md, Tests, tier 2).
//!
//! The tests start the real `multipassd` on a fresh Unix socket (or TCP port) with a fresh data
//! directory, create real OS users for the test (`useradd`, deleted afterwards) and run the real
//! `multipass` client as those users through `setpriv --reuid --regid --init-groups`, so the
//! daemon sees genuine SO_PEERCRED credentials and group memberships.
//!
//! - [`harness`]: the test harness of every file (root-only tests ignored without root, failed
//!   without root under `CI=true`).
//! - [`Fixture`]: the opening most tests share (directory, admin group, users, daemon).
//! - [`TestDir`]: a world-traversable per-test directory for the socket, data and homes.
//! - [`users`]: per-test admin groups and users.
//! - [`daemon`]: starting, restarting and stopping `multipassd`, running the CLI against it.
//! - [`process`]: running a command with stdin, a timeout and captured output.
//! - [`pem`]: certificates of the trust store and of users, as DER.
//! - [`grpc`]: a tonic client over TLS over the Unix socket, for tests that speak gRPC directly.
//! - [`python`]: a stock-protocol client (Python grpcio, the gRPC C core Multipass uses too).
//! - [`clients`]: many clients at once: identities, the CLI with a chosen
//!   `XDG_DATA_HOME`, hand appends, the helper's direct mode, connections made as another user.
//! - [`procfs`]: figures from /proc (peak RSS, descriptors, children, command lines).
//! - [`pty`]: a command on a pseudo-terminal, answering its prompts as a person would.
#![warn(missing_docs)]

pub mod bus;
pub mod clients;
pub mod daemon;
pub mod fixture;
pub mod grpc;
pub mod harness;
pub mod mount;
pub mod pem;
pub mod process;
pub mod procfs;
pub mod pty;
pub mod python;
pub mod users;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use daemon::{Daemon, DaemonConfig};
pub use fixture::Fixture;
pub use process::CliOutput;
pub use users::{Group, User};

/// The gate's message (docs/CONTRACT.md, Messages), without the CLI's `<command> failed: ` prefix:
/// the first two lines of the refusal, exactly as Multipass words them. The daemon adds one line
/// after them (see [`process::CliOutput::assert_not_authenticated`]).
pub const NOT_AUTHENTICATED: &str = "The client is not authenticated with the Multipass service.\nPlease use 'multipass authenticate' before proceeding.";

/// The start of every enrollment token.
pub const TOKEN_PREFIX: &str = "mpt_";

/// `authenticate` while no passphrase is set.
pub const PASSPHRASE_NOT_SET: &str =
    "Passphrase is not set. Please `multipass set local.passphrase` with a trusted client.";

/// `authenticate` with a wrong passphrase.
pub const PASSPHRASE_NOT_CORRECT: &str = "Passphrase is not correct. Please try again.";

/// Multipass's scrypt hash of the passphrase `passphrase` (a legacy settings value).
pub const LEGACY_PASSPHRASE_HASH: &str = "f28cb995d91eed8064674766f28e468aae8065b2cf02af556c857dd77de2d2476f3830fd02147f3e35037a1812df0d0d0934fa677be585269fee5358d5c70758";

/// Directory holding `multipassd` and `multipass`: `$MULTIPASS_BIN_DIR`, else the workspace's
/// `target/debug`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("MULTIPASS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives inside the workspace")
            .join("target")
            .join("debug"),
    }
}

/// Path of the binary `name`, executable by every test user. Panics with a clear message when it
/// is missing. If the build directory cannot be reached by other users (e.g. it lives in a 0700
/// home), the binaries are copied once to a world-readable directory.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary {} not found; build the workspace first (`cargo build --workspace`) or point \
             MULTIPASS_BIN_DIR at the directory holding multipassd and multipass",
            path.display()
        );
    }
    if usable_by_others(&path) {
        return path;
    }
    static SHARED: OnceLock<PathBuf> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mpt-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create shared binary directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod shared binary directory");
        dir
    });
    let copy = shared.join(name);
    if !copy.exists() {
        let tmp = shared.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
        std::fs::copy(&path, &tmp).expect("copy binary");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .expect("chmod binary copy");
        std::fs::rename(&tmp, &copy).expect("rename binary copy");
    }
    copy
}

fn usable_by_others(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.permissions().mode() & 0o005 != 0o005 {
        return false;
    }
    path.ancestors().skip(1).all(|dir| {
        dir.as_os_str().is_empty()
            || std::fs::metadata(dir)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
    })
}

/// A per-test directory, mode 0755 so that test users can reach the socket and their homes
/// inside it. Removed on drop.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A new directory under the system temporary directory (short path: socket paths are
    /// limited to 107 bytes).
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("mpt-")
            .tempdir()
            .expect("create test directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod test directory");
        TestDir { dir }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A subdirectory (created, mode 0755).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(&path).expect("create subdirectory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod subdirectory");
        path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Print a figure of the reliability tests on standard error, where it shows even when
/// the test passes: libtest captures `println!`, not direct writes. `scripts/test.sh` output
/// then carries every figure of docs/RELIABILITY.md.
pub fn figure(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "figure: {text}");
}

/// A short random suffix for names unique to this run.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The enrollment token in `text` (the first word with the token prefix), if any.
pub fn token_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(TOKEN_PREFIX))
        .map(str::to_string)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The lines of `log` that are audit events (tracing target `audit`) with `event="<event>"`.
pub fn audit_events<'a>(log: &'a str, event: &str) -> Vec<&'a str> {
    let needle = format!("event=\"{event}\"");
    log.lines()
        .filter(|l| l.contains(" audit: ") && l.contains(&needle))
        .collect()
}

/// What `read` returns once `done` holds for it, read again every 100 ms for at most `limit`
/// (then the last read): for lines a timer writes, or work finished after a reply.
pub fn read_until(
    limit: std::time::Duration,
    mut read: impl FnMut() -> String,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = read();
        if done(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The value of the field `name` in a log line (`... name=value ...`), without quotes removed.
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()
}

/// The time a log line was written (its first word, RFC 3339).
#[track_caller]
pub fn log_timestamp(line: &str) -> time::OffsetDateTime {
    let word = line.split_whitespace().next().unwrap_or_default();
    time::OffsetDateTime::parse(word, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("no timestamp in {line:?}: {e}"))
}

/// The counts that collapsed audit lines carry (`refusals=N`), summed, and the shortest time
/// between two of `lines`.
#[track_caller]
pub fn collapsed_counts(lines: &[&str]) -> (u64, Option<std::time::Duration>) {
    let counted = lines
        .iter()
        .map(|l| {
            log_field(l, "refusals")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no refusals count in {l}"))
        })
        .sum();
    let shortest = lines
        .windows(2)
        .map(|w| {
            (log_timestamp(w[1]) - log_timestamp(w[0]))
                .try_into()
                .unwrap_or_default()
        })
        .min();
    (counted, shortest)
}

/// Panics unless `secret` appears nowhere in `log` nor in any of `outputs` (stdout and stderr).
#[track_caller]
pub fn assert_secret_absent(secret: &str, what: &str, log: &str, outputs: &[&CliOutput]) {
    assert!(!secret.is_empty(), "{what}: empty secret");
    if let Some(line) = log.lines().find(|l| l.contains(secret)) {
        panic!("{what} appears in the daemon log: {line}");
    }
    for out in outputs {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{what} appears in the output of a CLI command\n{out}"
        );
    }
}

/// `(mode & 0o7777, uid, gid)` of a path, without following symlinks.
pub fn mode_owner(path: &Path) -> std::io::Result<(u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.mode() & 0o7777, m.uid(), m.gid()))
}

/// The value of `local.passphrase` in the `[General]` section of an INI file, without surrounding
/// quotes. `None` if absent.
pub fn ini_passphrase(text: &str) -> Option<String> {
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].trim().to_string();
            continue;
        }
        if section != "General" {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "local.passphrase" {
                let value = value.trim();
                let unquoted = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                return Some(unquoted.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_passphrase_reads_quoted_and_plain() {
        assert_eq!(
            ini_passphrase("[General]\nlocal.passphrase=abc\n").as_deref(),
            Some("abc")
        );
        assert_eq!(
            ini_passphrase(
                "[Other]\nlocal.passphrase=x\n[General]\nlocal.passphrase=\"$argon2id$v=19$m=1\"\n"
            )
            .as_deref(),
            Some("$argon2id$v=19$m=1")
        );
        assert_eq!(ini_passphrase("[General]\nfoo=bar\n"), None);
    }
}
