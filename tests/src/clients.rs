//! Many clients at once, for the reliability tests: client identities made without the
//! CLI, the CLI with a chosen `XDG_DATA_HOME` (one user, many clients), hand appends to the
//! store, the helper's direct mode, gRPC calls over one connection, and connections whose kernel
//! credentials are another user's (SO_PEERCRED records whoever called `connect`).

use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::{AuthenticateRequest, GetRequest, ListRequest, SetRequest};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::grpc::BoxError;
use crate::process::{self, CliOutput, DEFAULT_TIMEOUT};
use crate::{Daemon, User};

/// A client certificate and key on disk, laid out as the CLI keeps them.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `XDG_DATA_HOME` it lives under.
    pub xdg_data_home: PathBuf,
    /// `.../multipass-client-certificate/multipass_cert.pem`.
    pub cert_path: PathBuf,
    /// `.../multipass-client-certificate/multipass_cert_key.pem`.
    pub key_path: PathBuf,
    /// The certificate, PEM (what a hand append writes).
    pub cert_pem: String,
    /// The certificate, DER: the identity.
    pub der: Vec<u8>,
}

impl Identity {
    /// A new identity under `xdg_data_home` (made as the CLI makes one), owned by `owner` if given.
    pub fn create(xdg_data_home: &Path, owner: Option<&User>) -> Identity {
        let dir = xdg_data_home.join("multipass-client-certificate");
        let made = tls::ClientIdentity::load_or_create(&dir).unwrap_or_else(|e| {
            panic!("cannot create a client identity in {}: {e}", dir.display())
        });
        let identity = Identity {
            xdg_data_home: xdg_data_home.to_path_buf(),
            cert_path: dir.join("multipass_cert.pem"),
            key_path: dir.join("multipass_cert_key.pem"),
            cert_pem: made.cert_pem.clone(),
            der: made.cert.to_vec(),
        };
        if let Some(user) = owner {
            chown_tree(xdg_data_home, user);
        }
        identity
    }

    /// A client TLS configuration presenting this identity to `daemon`.
    pub fn tls(&self, daemon: &Daemon) -> Arc<rustls::ClientConfig> {
        crate::grpc::client_config(&daemon.root_cert(), Some((&self.cert_path, &self.key_path)))
            .expect("client TLS configuration")
    }
}

/// A client identity that exists only in memory: cheap enough to make thousands.
#[derive(Clone)]
pub struct MemoryIdentity {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: String,
    /// A TLS configuration presenting it, trusting the daemon's root CA.
    pub config: Arc<rustls::ClientConfig>,
}

impl MemoryIdentity {
    /// A new self-signed client certificate made as the CLI makes one, for `daemon`.
    pub fn new(daemon: &Daemon) -> MemoryIdentity {
        let root = std::fs::read(daemon.root_cert()).expect("read the daemon's root CA");
        MemoryIdentity::for_root(&root)
    }

    /// The same, for the root CA `root_ca_pem`.
    pub fn for_root(root_ca_pem: &[u8]) -> MemoryIdentity {
        use rustls_pki_types::pem::PemObject;
        let (pem, key) = tls::pki::new_client_cert(time::OffsetDateTime::now_utc())
            .expect("make a client certificate");
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("parse the new certificate");
        let key =
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("the new key");
        let identity =
            tls::ClientIdentity::new(cert.clone(), pem.clone(), key).expect("the new identity");
        let config = tls::client_config(root_ca_pem, &identity).expect("TLS configuration");
        MemoryIdentity {
            der: cert.to_vec(),
            pem,
            config,
        }
    }
}

/// Start a daemon that logs at the default level only (under load, `-v` writes a line per
/// HTTP/2 frame), with `extra_args`.
pub fn quiet_daemon(dir: &crate::TestDir, admins: &crate::Group, extra_args: &[&str]) -> Daemon {
    Daemon::start_with(
        dir,
        admins,
        crate::DaemonConfig {
            verbosity: 0,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            ..crate::DaemonConfig::default()
        },
    )
}

/// Append to the store, as an administrator could by hand, `count` entries recording that the
/// user `uid` trusted them with the passphrase (their keys made in `scratch`).
pub fn trusted_by_passphrase_already(daemon: &Daemon, scratch: &Path, uid: u32, count: usize) {
    use trust::{Bundle, Enrolment, Entry, Metadata};
    let mut bundle = Bundle::default();
    for i in 0..count {
        let identity = Identity::create(&scratch.join(format!("earlier-{uid}-{i}")), None);
        bundle.insert(Entry::new(
            identity.der.into(),
            Metadata {
                name: Some(format!("earlier-{uid}-{i}")),
                uid: Some(uid),
                how: Some(Enrolment::Passphrase),
                ..Default::default()
            },
        ));
    }
    append_by_hand(&daemon.store_path(), &bundle.to_pem());
}

/// A daemon for tests that hold connections which never start TLS (they must outlive the
/// test), with `open_files` as its open-file limit if given: `admin` is its first client and
/// root is trusted by `passphrase`.
pub fn daemon_for_stalled_connections(
    dir: &crate::TestDir,
    admins: &crate::Group,
    admin: &User,
    passphrase: &str,
    open_files: Option<u64>,
) -> Daemon {
    let daemon = Daemon::start_with(
        dir,
        admins,
        crate::DaemonConfig {
            open_files,
            extra_args: vec!["--handshake-timeout".into(), "120".into()],
            ..crate::DaemonConfig::default()
        },
    );
    first_client_sets_passphrase(&daemon, admin, passphrase);
    daemon
        .run_as_root(&["authenticate"], Some(&format!("{passphrase}\n")))
        .assert_code(0, "root authenticates");
    daemon
}

/// `admin` becomes the first client and sets the passphrase to `passphrase`.
pub fn first_client_sets_passphrase(daemon: &Daemon, admin: &User, passphrase: &str) {
    daemon
        .run_as(admin, &["list"], None)
        .assert_code(0, "the first client");
    daemon
        .run_as(
            admin,
            &["set", "local.passphrase"],
            Some(&format!("{passphrase}\n{passphrase}\n")),
        )
        .assert_code(0, "set the passphrase");
}

/// Bytes that are not a TLS handshake, of four kinds by `i`: HTTP/1.1, an HTTP/2 preface without
/// TLS, a TLS record header announcing more than will ever come, noise.
///
/// All but the third can be refused as soon as they arrive. The third is the start of a
/// well-formed ClientHello that never ends ([`garbage_is_unfinished`]): only the handshake
/// timeout closes it.
pub fn garbage(i: usize) -> Vec<u8> {
    match i % 4 {
        0 => b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        1 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        2 => vec![0x16, 0x03, 0x01, 0x3f, 0xff, 0x01, 0x00, 0x3f, 0xfb],
        _ => (0..4096).map(|n| (n * 131 + i * 7) as u8).collect(),
    }
}

/// Whether `garbage(i)` is the record that announces more than will ever come.
pub fn garbage_is_unfinished(i: usize) -> bool {
    i % 4 == 2
}

/// Give `path` and everything below it to `user`.
pub fn chown_tree(path: &Path, user: &User) {
    let uid = nix::unistd::Uid::from_raw(user.uid);
    let gid = nix::unistd::Gid::from_raw(user.gid);
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        nix::unistd::chown(&p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        if p.is_dir() {
            for entry in std::fs::read_dir(&p).expect("read_dir").flatten() {
                stack.push(entry.path());
            }
        }
    }
}

/// A directory `name` in `user`'s home, owned by them (an `XDG_DATA_HOME` of one of their
/// clients).
pub fn user_dir(user: &User, name: &str) -> PathBuf {
    let dir = user.home.join(name);
    std::fs::create_dir_all(&dir).expect("create user directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_tree(&dir, user);
    dir
}

/// Run `multipass args...` as `user` with `XDG_DATA_HOME=xdg_data_home`: one of the user's many
/// clients.
pub fn cli(
    daemon: &Daemon,
    user: &User,
    xdg_data_home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> CliOutput {
    let env = [
        ("XDG_DATA_HOME", xdg_data_home.display().to_string()),
        ("MULTIPASS_SERVER_ADDRESS", daemon.address.clone()),
        (
            "MULTIPASS_ROOT_CERT",
            daemon.root_cert().display().to_string(),
        ),
    ];
    let mut cmd = user.command(&crate::bin("multipass"), &env);
    cmd.args(args);
    process::run(cmd, stdin, DEFAULT_TIMEOUT)
}

/// Append `pem` to the trust store the way `cat cert.pem | sudo tee -a store.pem` does: no lock,
/// `O_APPEND`, no fsync.
pub fn append_by_hand(store: &Path, pem: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(store)
        .unwrap_or_else(|e| panic!("open {} for appending: {e}", store.display()));
    file.write_all(pem.as_bytes()).expect("append to the store");
}

/// `multipassd-helper --data-dir D --socket S --admin-group G args...` (direct mode, as root).
pub fn helper_command(daemon: &Daemon, admin_group: &str, args: &[&str]) -> Command {
    helper_command_from(&crate::bin("multipassd-helper"), daemon, admin_group, args)
}

/// [`helper_command`] with the helper's program at `program` (e.g. a copy, to remove).
pub fn helper_command_from(
    program: &Path,
    daemon: &Daemon,
    admin_group: &str,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("--data-dir")
        .arg(&daemon.data_dir)
        .arg("--socket")
        .arg(daemon.socket())
        .arg("--admin-group")
        .arg(admin_group)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        // Every line it can write, so that a secret in any of them is seen.
        .env("MULTIPASSD_HELPER_LOG", "trace");
    cmd
}

/// Trust `pem` through the helper's direct mode (PEM on standard input).
pub fn helper_trust(daemon: &Daemon, admin_group: &str, pem: &str, name: &str) -> CliOutput {
    let cmd = helper_command(daemon, admin_group, &["trust-certificate", "--name", name]);
    process::run(cmd, Some(pem), DEFAULT_TIMEOUT)
}

/// A gRPC channel over the already connected `stream` (TLS with `config`). The channel cannot
/// reconnect: a call after the connection closed fails.
pub async fn channel_over(
    stream: std::os::unix::net::UnixStream,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, BoxError> {
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    let name = ServerName::try_from("localhost").expect("valid server name");
    let tls = TlsConnector::from(config).connect(name, stream).await?;
    let slot = Arc::new(Mutex::new(Some(tls)));
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            tls.map(TokioIo::new)
                .ok_or_else(|| io::Error::other("this test connection was already used"))
        }
    });
    Ok(Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await?)
}

/// `authenticate` with `passphrase`.
pub async fn authenticate(channel: Channel, passphrase: &str) -> Result<(), Status> {
    authenticate_within(channel, passphrase, None).await
}

/// `authenticate` with `passphrase`, telling the daemon to give up after `deadline`
/// (`grpc-timeout`) if one is given.
pub async fn authenticate_within(
    channel: Channel,
    passphrase: &str,
    deadline: Option<Duration>,
) -> Result<(), Status> {
    let request = AuthenticateRequest {
        passphrase: passphrase.to_string(),
        verbosity_level: 0,
    };
    let mut replies = RpcClient::new(channel)
        .authenticate(within(tokio_stream::iter(vec![request]), deadline))
        .await?
        .into_inner();
    while replies.message().await?.is_some() {}
    Ok(())
}

/// `set key=val`.
pub async fn set(channel: Channel, key: &str, val: &str) -> Result<(), Status> {
    set_within(channel, key, val, None).await
}

/// `set key=val`, with a deadline as in [`authenticate_within`].
pub async fn set_within(
    channel: Channel,
    key: &str,
    val: &str,
    deadline: Option<Duration>,
) -> Result<(), Status> {
    let request = SetRequest {
        key: key.to_string(),
        val: val.to_string(),
        ..SetRequest::default()
    };
    let mut replies = RpcClient::new(channel)
        .set(within(tokio_stream::iter(vec![request]), deadline))
        .await?
        .into_inner();
    while replies.message().await?.is_some() {}
    Ok(())
}

fn within<T>(message: T, deadline: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}

/// `get key`.
pub async fn get(channel: Channel, key: &str) -> Result<String, Status> {
    let request = GetRequest {
        key: key.to_string(),
        verbosity_level: 0,
    };
    let mut replies = RpcClient::new(channel)
        .get(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let mut value = String::new();
    while let Some(reply) = replies.message().await? {
        value = reply.value;
    }
    Ok(value)
}

/// `list`; Ok if the daemon answered.
pub async fn list(channel: Channel) -> Result<(), Status> {
    let mut replies = RpcClient::new(channel)
        .list(tokio_stream::iter(vec![ListRequest::default()]))
        .await?
        .into_inner();
    while replies.message().await?.is_some() {}
    Ok(())
}

/// Python that connects `n` times to a socket and hands each connection back over a control
/// socket (SCM_RIGHTS).
const CONNECT_AND_PASS: &str = r#"
import socket, sys
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.connect(sys.argv[1])
for _ in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[2])
    socket.send_fds(ctl, [b"c"], [s.fileno()])
    s.close()
ctl.close()
"#;

/// `n` connections to `socket` made by a process running as `user`: the daemon sees `user`'s
/// uid in SO_PEERCRED, while this process drives them. `scratch` is a directory (reachable by
/// `user`) for the control socket.
pub fn connect_as(
    user: &User,
    socket: &Path,
    n: usize,
    scratch: &Path,
) -> Vec<std::os::unix::net::UnixStream> {
    let ctl_path = scratch.join(format!("ctl-{}.sock", crate::random_suffix()));
    let listener = std::os::unix::net::UnixListener::bind(&ctl_path).expect("bind control socket");
    std::fs::set_permissions(&ctl_path, std::fs::Permissions::from_mode(0o777))
        .expect("chmod control socket");
    let mut cmd = user.command(Path::new("/usr/bin/python3"), &[]);
    cmd.arg("-c")
        .arg(CONNECT_AND_PASS)
        .arg(&ctl_path)
        .arg(socket)
        .arg(n.to_string());
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn python3 as the user");
    let (ctl, _) = listener.accept().expect("accept the control connection");
    ctl.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        match receive_fd(ctl.as_raw_fd()) {
            Some(fd) => streams.push(std::os::unix::net::UnixStream::from(fd)),
            None => break,
        }
    }
    let status = child.wait().expect("wait for python3");
    let _ = std::fs::remove_file(&ctl_path);
    assert!(
        status.success() && streams.len() == n,
        "connect_as {}: {} of {n} connections, python3 {status}",
        user.name,
        streams.len()
    );
    streams
}

fn receive_fd(ctl: RawFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(ctl, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    if msg.bytes == 0 {
        return None;
    }
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us
                // (SCM_RIGHTS); nothing else owns it.
                return Some(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    None
}

/// A connected stream socket whose reads can time out (Unix or TCP).
pub trait Stream: io::Read {
    /// `set_read_timeout` of the standard library's sockets.
    fn read_timeout(&self, wait: Option<Duration>) -> io::Result<()>;
}

impl Stream for std::os::unix::net::UnixStream {
    fn read_timeout(&self, wait: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(wait)
    }
}

impl Stream for std::net::TcpStream {
    fn read_timeout(&self, wait: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(wait)
    }
}

/// Whether the daemon closed `stream` (EOF or reset), waiting up to `wait` for it.
pub fn closed_by_daemon(stream: &mut impl Stream, wait: Duration) -> bool {
    stream.read_timeout(Some(wait)).expect("set a read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a TLS alert, then EOF
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Count of `streams` the daemon closed within `wait` (each waited for in turn, so the first one
/// takes the wait and the others are checked at once).
pub fn count_closed(streams: &mut [impl Stream], wait: Duration) -> usize {
    let deadline = std::time::Instant::now() + wait;
    streams
        .iter_mut()
        .filter_map(|s| {
            let left = deadline
                .saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(1));
            closed_by_daemon(s, left).then_some(())
        })
        .count()
}
