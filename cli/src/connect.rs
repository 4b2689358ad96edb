//! Connecting to the daemon: the one way every command gets its gRPC client.
//!
//! The order matters. The client identity is loaded (or created) first, so that even a failed
//! first command leaves the user a certificate to have trusted. Then the socket is dialed, and only
//! then is the root CA read: under systemd socket activation the connection is what starts the
//! daemon, and a daemon that runs for the first time creates the root CA file, so the client waits
//! a little for it to appear.

use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use rpc::client::ConnectError;
use rpc::proto::rpc_client::RpcClient;
use rpc::Address;
use tls::ClientIdentity;
use tonic::transport::Channel;
use trust::paths::{client_cert_dir, client_root_cert, ENV_ROOT_CERT, ENV_SERVER_ADDRESS};

use crate::error::{Error, SocketGroup, Unreachable};
use crate::trace::Trace;

/// How long to wait for the root CA file to appear after dialing.
const ROOT_CERT_WAIT: Duration = Duration::from_secs(2);
/// How often to look for the root CA file meanwhile.
const ROOT_CERT_POLL: Duration = Duration::from_millis(50);
/// How long a call may wait for the daemon's whole answer (`commands::answer`,
/// `Context::replies`). The daemon answers every request within 30 s (with a refusal if it
/// must), so past this it is stopped or stuck, and the command says so instead of waiting for
/// ever.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon's address: `$MULTIPASS_SERVER_ADDRESS`, or the default socket when it is unset or
/// empty (as Multipass reads it, and as `$MULTIPASS_ROOT_CERT` is read).
pub fn server_address() -> Result<Address, Error> {
    match std::env::var_os(ENV_SERVER_ADDRESS).filter(|value| !value.is_empty()) {
        None => Ok(Address::default()),
        Some(value) => {
            let text = value
                .to_str()
                .ok_or_else(|| Error::Config(anyhow!("{ENV_SERVER_ADDRESS} is not valid UTF-8")))?;
            text.parse::<Address>()
                .with_context(|| format!("invalid {ENV_SERVER_ADDRESS}"))
                .map_err(Error::Config)
        }
    }
}

/// This client's certificate and key, created on first use.
pub fn identity(trace: &Trace) -> Result<ClientIdentity, Error> {
    let dir = client_cert_dir().ok_or_else(|| {
        Error::Config(anyhow!(
            "cannot find the client certificate directory: neither XDG_DATA_HOME nor HOME is set, \
             and this user has no home directory in the password database"
        ))
    })?;
    let cert = dir.join(trust::paths::CLIENT_CERT_FILE);
    // Through sudo, root's client is made on first use, not the user's: on a fresh service the
    // first command would make it the first client, which the user meant to be theirs.
    let sudo_user = nix::unistd::geteuid()
        .is_root()
        .then(|| std::env::var("SUDO_USER").ok())
        .flatten()
        .filter(|user| !user.is_empty() && user != "root");
    let existed = (trace.shows_steps() || sudo_user.is_some()) && cert.exists();
    let identity = ClientIdentity::load_or_create(&dir).map_err(|e| identity_error(&dir, e))?;
    if let Some(user) = sudo_user.filter(|_| !existed) {
        eprintln!(
            "Through sudo, this command is root's client, not {user}'s: root's certificate was \
             made now, in {}. A service that trusts nobody yet trusts root's client as the first \
             one; run multipass without sudo for {user}'s own.",
            dir.display()
        );
    }
    if let Some(aside) = &identity.moved_aside {
        eprintln!(
            "{} had no certificate (a first command was stopped before it made one): it was \
             moved aside to {}, and this client has a new certificate and key.",
            dir.join(trust::paths::CLIENT_KEY_FILE).display(),
            aside.display()
        );
    }
    if trace.shows_steps() {
        trace.step(format_args!(
            "this client: {}{}, fingerprint {}",
            cert.display(),
            if existed { "" } else { " (created now)" },
            identity.fingerprint()
        ));
    }
    Ok(identity)
}

/// What to say when this client's identity in `dir` cannot be loaded or created.
///
/// A directory that cannot be made is the environment's fault (HOME, XDG_DATA_HOME): a usage
/// error. Files that are there but do not make an identity are the client's own state gone bad,
/// which nothing but a new client mends: the command fails, and says how to get one.
fn identity_error(dir: &Path, e: tls::Error) -> Error {
    use trust::Error as T;
    let setting_up = || format!("cannot set up the client certificate in {}", dir.display());
    let unusable_dir = |source: &io::Error| {
        matches!(
            source.kind(),
            io::ErrorKind::NotFound
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::NotADirectory
                | io::ErrorKind::ReadOnlyFilesystem
        )
    };
    let problem = match &e {
        tls::Error::Trust(T::Directory { path, source }) if unusable_dir(source) => {
            return Error::Config(anyhow!(
                "cannot use the client certificate directory {}: {}\n\
                 HOME or XDG_DATA_HOME must name a directory of this user's own, which this user \
                 can write to and no other user can.",
                path.display(),
                os_text(source)
            ));
        }
        tls::Error::Trust(T::Read { path, source }) if source.kind() == io::ErrorKind::NotFound => {
            let other = if path.ends_with(trust::paths::CLIENT_CERT_FILE) {
                "its key is there without it"
            } else {
                "the certificate is there without it"
            };
            format!("{} is missing: {other}", path.display())
        }
        tls::Error::Trust(T::Read { path, source }) => {
            format!("cannot read {}: {}", path.display(), os_text(source))
        }
        tls::Error::Trust(T::InvalidPem { .. })
        | tls::Error::KeyMismatch { .. }
        | tls::Error::UnusableKey { .. } => format!("{:#}", anyhow::Error::new(e)),
        _ => return Error::Local(anyhow::Error::new(e).context(setting_up())),
    };
    let shown = dir.display();
    Error::Local(anyhow!(
        "this client's certificate and key cannot be used: {problem}\n\
         To start again as a new client, move the directory aside (`mv {shown} {shown}.broken`); \
         the next command creates a new certificate and key, which `multipass authenticate` \
         then has trusted. An administrator can remove the old client with `multipass trust \
         remove`."
    ))
}

/// The operating system's text for an error, without Rust's ` (os error N)` suffix.
fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// Connect to the daemon and return a client for it.
pub async fn connect(trace: &Trace) -> Result<RpcClient<Channel>, Error> {
    // The service's replies are a few hundred bytes; a message decodes to up to about 50 times
    // its size (empty repeated entries), so tonic's 4 MiB would let one reply take 200 MB.
    Ok(RpcClient::new(channel(trace).await?).max_decoding_message_size(MAX_REPLY))
}

/// Largest message of the `multipass.Rpc` service the client reads.
const MAX_REPLY: usize = 256 << 10;

/// Where a setting came from, for the trace: `variable` when it is set, else the default.
fn source(variable: &str) -> String {
    if std::env::var_os(variable).is_some_and(|v| !v.is_empty()) {
        format!("from {variable}")
    } else {
        "the default".to_string()
    }
}

/// Connect to the daemon and return the channel, for any of its services.
pub async fn channel(trace: &Trace) -> Result<Channel, Error> {
    let address = server_address()?;
    trace.step(format_args!(
        "daemon: {address} ({})",
        source(ENV_SERVER_ADDRESS)
    ));
    let identity = identity(trace)?;

    // Connected before the root CA is read: under socket activation the connection starts the
    // daemon, which makes the root CA on its first start.
    let (mut dialed, mut connected_to) = dial_waiting(
        &address,
        trace,
        tokio::time::Instant::now() + SOCKET_SETUP_WAIT,
    )
    .await
    .map_err(|e| unreachable(&address, e))?;
    trace.detail("connected to the socket");

    let root_path = client_root_cert();
    trace.step(format_args!(
        "daemon's root CA: {} ({})",
        root_path.display(),
        source(ENV_ROOT_CERT)
    ));
    let root_pem = read_root_cert(&root_path)
        .await
        .map_err(|e| Unreachable::RootCert {
            path: root_path.clone(),
            reason: e.to_string(),
            denied: e.kind() == io::ErrorKind::PermissionDenied,
        })?;
    let tls = tls::client_config(&root_pem, &identity).map_err(|e| Unreachable::RootCert {
        path: root_path.clone(),
        reason: format!("{:#}", anyhow::Error::new(e)),
        denied: false,
    })?;

    let negotiated = |tls: &rustls::ClientConnection| {
        if !trace.shows_details() {
            return;
        }
        trace.detail(format_args!(
            "TLS handshake done: {}, {}",
            tls.protocol_version()
                .map_or("no version".into(), |v| format!("{v:?}")),
            tls.negotiated_cipher_suite()
                .map_or("no cipher suite".into(), |s| format!("{:?}", s.suite()))
        ));
    };
    // A socket restarted under the command drops the connections queued on it: connected, then
    // reset before the daemon took them, and the socket file is then gone or another. Nothing
    // was sent but the handshake's first message, so connecting again is safe. A connection
    // the daemon closed itself (too many from this user), the socket file unchanged, is not
    // tried again.
    let deadline = tokio::time::Instant::now() + SOCKET_SETUP_WAIT;
    let handshaken = loop {
        match dialed.handshake_then(tls.clone(), negotiated).await {
            Err(ConnectError::Tls { source, .. })
                if dropped_unserved(&source)
                    && connected_to.is_some()
                    && socket_file(&address) != connected_to
                    && tokio::time::Instant::now() < deadline =>
            {
                trace.detail(format_args!(
                    "the connection was dropped before the daemon took it ({source}); the \
                     socket may be restarting: connecting again"
                ));
                tokio::time::sleep(Duration::from_millis(50)).await;
                (dialed, connected_to) = dial_waiting(&address, trace, deadline)
                    .await
                    .map_err(|e| unreachable(&address, e))?;
                trace.detail("connected to the socket");
            }
            other => break other,
        }
    };
    let channel = handshaken.map_err(|e| match e {
        ConnectError::Tls { address, source } if rejects_server_certificate(&source) => {
            Error::Unreachable(Unreachable::ServerNotVerified {
                reason: source.to_string(),
                address,
                root_cert: root_path,
                from_env: std::env::var_os(ENV_ROOT_CERT).is_some_and(|v| !v.is_empty()),
            })
        }
        ConnectError::Tls { address, source } if server_certificate_out_of_time(&source) => {
            Error::Unreachable(Unreachable::ServerCertTime {
                reason: source.to_string(),
                address,
            })
        }
        other => unreachable(&address, other),
    })?;
    trace.step("connected");
    Ok(channel)
}

/// How long a command waits for a Unix socket that is being set up again. When its unit is
/// restarted (a package upgrade, a change of the admin group), systemd removes the socket file,
/// makes it anew for root alone (0600), and the start hook then gives it its group and mode:
/// about 0.1 s in which a trusted user's command would fail.
const SOCKET_SETUP_WAIT: Duration = Duration::from_millis(1500);

/// [`rpc::client::dial`], waiting until `deadline` while the socket looks as it does while
/// being set up: missing, with nobody listening, or root's alone. With the connection, the
/// socket file it was made to ([`socket_file`], looked at just before connecting: a file that
/// changes after that is a socket being restarted).
async fn dial_waiting(
    address: &Address,
    trace: &Trace,
    deadline: tokio::time::Instant,
) -> Result<(rpc::client::Dialed, Option<(u64, u64)>), ConnectError> {
    let mut pause = Duration::from_millis(10);
    let mut said = false;
    loop {
        let file = socket_file(address);
        match rpc::client::dial(address).await {
            Ok(dialed) => return Ok((dialed, file)),
            Err(ConnectError::Dial {
                address: Address::Unix(path),
                source,
            }) if being_set_up(&path, &source) && tokio::time::Instant::now() < deadline => {
                if !said {
                    trace.detail(format_args!(
                        "the socket may be being set up ({source}); waiting for it"
                    ));
                    said = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The device and inode of a Unix socket's file (`None` for TCP, or once the file is gone): a
/// socket restarted is a new file.
fn socket_file(address: &Address) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    match address {
        Address::Unix(path) => std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())),
        Address::Tcp(_) => None,
    }
}

/// Whether a TLS handshake failed with `e` because the connection was dropped before anyone
/// answered: reset, or closed, as a socket's queued connections are when it stops.
fn dropped_unserved(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
    )
}

/// Whether a socket that refused a connection with `e` may be in the middle of being set up.
/// A socket of the admin group refusing a user who is not in it is not: that answer is final.
fn being_set_up(path: &Path, e: &io::Error) -> bool {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => true,
        io::ErrorKind::PermissionDenied => nix::sys::stat::stat(path)
            .is_ok_and(|st| st.st_uid == 0 && st.st_gid == 0 && st.st_mode & 0o777 == 0o600),
        _ => false,
    }
}

/// Whether a failed handshake is our verification finding the daemon's certificate not signed
/// by the root CA we read (rather than expired, or the connection or the daemon failing).
fn rejects_server_certificate(e: &io::Error) -> bool {
    use rustls::CertificateError::{BadSignature, UnknownIssuer};
    rpc::tls_error(e).is_some_and(|e| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(UnknownIssuer | BadSignature)
        )
    })
}

/// Whether TLS failed because the daemon's certificate is not valid at this machine's time.
fn server_certificate_out_of_time(e: &io::Error) -> bool {
    use rustls::CertificateError::{Expired, ExpiredContext, NotValidYet, NotValidYetContext};
    rpc::tls_error(e).is_some_and(|e| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(
                Expired | ExpiredContext { .. } | NotValidYet | NotValidYetContext { .. }
            )
        )
    })
}

/// Largest root CA file read: a PEM certificate is about 1 KiB, a bundle of a few is still far
/// below this.
const MAX_ROOT_CERT: u64 = 64 << 10;

/// The root CA file's bytes, if it is a regular file of at most [`MAX_ROOT_CERT`]. Opened
/// without blocking, so that a FIFO named by `MULTIPASS_ROOT_CERT` is refused rather than
/// waited on, and read no further than the bound, so that `/dev/zero` is refused rather than
/// read until memory runs out.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_ROOT_CERT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_ROOT_CERT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} KiB", MAX_ROOT_CERT >> 10),
        ));
    }
    Ok(bytes)
}

/// Read the root CA file, waiting up to [`ROOT_CERT_WAIT`] for it to appear.
async fn read_root_cert(path: &Path) -> io::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + ROOT_CERT_WAIT;
    loop {
        match read_bounded(path) {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(ROOT_CERT_POLL).await;
            }
            other => return other,
        }
    }
}

/// Turn a transport error into the message the user sees.
fn unreachable(address: &Address, e: ConnectError) -> Error {
    Error::Unreachable(match e {
        ConnectError::Dial { address, source } => {
            let socket_group = match (&address, source.kind()) {
                (Address::Unix(path), io::ErrorKind::PermissionDenied) => socket_group(path),
                _ => None,
            };
            let service_installed = match &address {
                Address::Unix(path) if path.as_os_str() == trust::paths::DEFAULT_SOCKET => {
                    socket_unit_installed()
                }
                _ => true,
            };
            Unreachable::Dial {
                address,
                source,
                socket_group,
                service_installed,
            }
        }
        ConnectError::Tls { address, source } => Unreachable::Tls { address, source },
        other => Unreachable::Other {
            address: address.clone(),
            reason: anyhow::Error::new(other),
        },
    })
}

/// Whether systemd has the daemon's socket unit (`multipass.socket`) in one of the directories
/// it loads units from: installed by the package, or by an administrator.
fn socket_unit_installed() -> bool {
    [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .any(|dir| Path::new(dir).join("multipass.socket").exists())
}

/// The group owning the socket at `path`, and whether this user joined it since logging in.
fn socket_group(path: &Path) -> Option<SocketGroup> {
    use nix::unistd::{getegid, getgrouplist, getgroups, getuid, Gid, Group, User};
    let stat = nix::sys::stat::stat(path).ok()?;
    let gid = Gid::from_raw(stat.st_gid);
    let name = match Group::from_gid(gid) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    };
    let ours = getegid() == gid || getgroups().is_ok_and(|groups| groups.contains(&gid));
    let listed = || {
        let user = User::from_uid(getuid()).ok().flatten()?;
        let user_name = std::ffi::CString::new(user.name).ok()?;
        Some(getgrouplist(&user_name, user.gid).ok()?.contains(&gid))
    };
    Some(SocketGroup {
        name,
        joined_since_login: !ours && listed() == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_group_of_a_file_we_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let gid = nix::unistd::getegid();
        let expected = nix::unistd::Group::from_gid(gid)
            .unwrap()
            .map(|g| g.name)
            .unwrap_or_else(|| gid.to_string());
        assert_eq!(
            socket_group(&file),
            Some(SocketGroup {
                name: expected,
                joined_since_login: false
            })
        );
        assert_eq!(socket_group(&dir.path().join("missing")), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn root_cert_wait_gives_up_on_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let e = read_root_cert(&dir.path().join("missing"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(started.elapsed() >= ROOT_CERT_WAIT);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn root_cert_wait_sees_a_file_that_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, b"pem").unwrap();
                std::fs::rename(tmp, path).unwrap();
            })
        };
        assert_eq!(read_root_cert(&path).await.unwrap(), b"pem");
        writer.join().unwrap();
    }
}
