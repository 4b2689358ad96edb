//! Starting `multipassd` for one test and running the CLI against it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::process::{self, CliOutput, DEFAULT_TIMEOUT};
use crate::users::{Group, User};
use crate::TestDir;

/// How long the daemon may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// Number of `-v` flags.
    pub verbosity: u8,
    /// Listen on `127.0.0.1:<free port>` instead of a Unix socket.
    pub tcp: bool,
    /// More arguments (e.g. `--user multipassd`).
    pub extra_args: Vec<String>,
    /// Start the daemon with the admin group as a supplementary group. It runs as root but drops
    /// every capability once its socket is bound, so without this it cannot give the socket to
    /// the admin group at run time (restricting it again after the last client is removed); in
    /// production the privileged helper does that. A file's owner may change its group to one of
    /// its own groups without CAP_CHOWN.
    pub admin_group_member: bool,
    /// Start the daemon with this open-file limit, soft and hard (so it cannot raise it).
    pub open_files: Option<u64>,
    /// More environment variables (e.g. `LD_PRELOAD`).
    pub env: Vec<(String, String)>,
}

/// A running `multipassd` with its own socket and data directory. Stopped on drop (SIGTERM, then
/// SIGKILL).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    config: DaemonConfig,
    /// The `--address` value (`unix:PATH` or `127.0.0.1:PORT`), also the client's
    /// `MULTIPASS_SERVER_ADDRESS`.
    pub address: String,
    /// The socket path (Unix only).
    pub socket: Option<PathBuf>,
    /// The `--data-dir`.
    pub data_dir: PathBuf,
    admin_group: String,
    admin_gid: u32,
    dir: PathBuf,
    root_home: PathBuf,
    logs: Vec<PathBuf>,
    /// `(mode, uid, gid)` of the socket file the first time it was seen after the latest start
    /// (Unix only, and only if no stale socket file was present).
    pub first_socket_mode: Option<(u32, u32, u32)>,
}

impl Daemon {
    /// Start a daemon on a fresh Unix socket in `dir` with data directory `dir/data`, `-v`.
    pub fn start(dir: &TestDir, admin: &Group) -> Daemon {
        Daemon::start_with(
            dir,
            admin,
            DaemonConfig {
                verbosity: 1,
                ..DaemonConfig::default()
            },
        )
    }

    /// Start a daemon with `config`.
    pub fn start_with(dir: &TestDir, admin: &Group, config: DaemonConfig) -> Daemon {
        let (address, socket) = if config.tcp {
            (format!("127.0.0.1:{}", free_tcp_port()), None)
        } else {
            let socket = dir.path().join("multipass_socket");
            (format!("unix:{}", socket.display()), Some(socket))
        };
        let root_home = dir.path().join("root-home");
        std::fs::create_dir_all(&root_home).expect("create root home");
        std::fs::set_permissions(&root_home, std::fs::Permissions::from_mode(0o700))
            .expect("chmod root home");
        let mut daemon = Daemon {
            child: None,
            config,
            address,
            socket,
            data_dir: dir.path().join("data"),
            admin_group: admin.name.clone(),
            admin_gid: admin.gid,
            dir: dir.path().to_path_buf(),
            root_home,
            logs: Vec::new(),
            first_socket_mode: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log_path = self
            .dir
            .join(format!("multipassd-{}.log", self.logs.len() + 1));
        let log = File::create(&log_path).expect("create daemon log");
        self.logs.push(log_path);
        let mut cmd = if self.config.admin_group_member {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .arg("--groups")
                .arg(self.admin_gid.to_string())
                .arg(crate::bin("multipassd"));
            setpriv
        } else {
            Command::new(crate::bin("multipassd"))
        };
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--admin-group")
            .arg(&self.admin_group);
        if self.config.verbosity > 0 {
            cmd.arg(format!("-{}", "v".repeat(self.config.verbosity.into())));
        }
        cmd.args(&self.config.extra_args);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("RUST_BACKTRACE", "1")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        cmd.envs(self.config.env.iter().map(|(k, v)| (k, v)));
        if let Some(limit) = self.config.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        let stale_socket = self.socket.as_ref().is_some_and(|s| s.exists());
        let child = cmd.spawn().expect("spawn multipassd");
        self.child = Some(child);
        self.first_socket_mode = None;
        self.wait_ready(stale_socket);
    }

    fn wait_ready(&mut self, stale_socket: bool) {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("wait")
            {
                panic!(
                    "multipassd exited during start-up with {status}\n--- log ---\n{}",
                    self.log()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "multipassd did not listen on {} within {START_TIMEOUT:?}\n--- log ---\n{}",
                    self.address,
                    self.log()
                );
            }
            let listening = match &self.socket {
                Some(socket) => match crate::mode_owner(socket) {
                    Ok(mode) => {
                        if !stale_socket && self.first_socket_mode.is_none() {
                            self.first_socket_mode = Some(mode);
                        }
                        // Root may connect whatever the mode; a stale file refuses.
                        std::os::unix::net::UnixStream::connect(socket).is_ok()
                    }
                    Err(_) => false,
                },
                None => {
                    // Probed only once the certificates exist. The daemon counts loopback's
                    // connections together until it sees them close, and a test may count
                    // connections from 127.0.0.1 right after start-up: wait for it to see the
                    // probe's close, when it holds its listening socket alone.
                    crate::pem::holds_certificate(&self.root_cert())
                        && probe_tcp(self.address.parse().expect("socket address"))
                        && crate::procfs::wait_tcp_connections_closed(
                            self.address.parse().expect("socket address"),
                            Duration::from_secs(5),
                        )
                }
            };
            // The daemon binds its socket first (connections queue meanwhile) and then creates
            // its certificates: ready means both.
            if listening && crate::pem::holds_certificate(&self.root_cert()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop the daemon with SIGTERM (SIGKILL after 10 s) and return its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let (status, killed) = crate::process::wait_or_kill(&mut child, Duration::from_secs(10));
        if killed {
            eprintln!("multipassd ignored SIGTERM for 10 s and was killed");
        }
        status
    }

    /// Process id of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// Kill the daemon with SIGKILL (a crash: no clean-up of any kind) and reap it.
    pub fn kill_hard(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let _ = child.kill();
        child.wait().expect("wait for killed multipassd")
    }

    /// Start the daemon again after [`Daemon::kill_hard`] (or [`Daemon::stop`]), with the same
    /// data directory and socket path, and wait until it serves.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// Stop (asserting that SIGTERM makes it exit 0) and start again with the same data directory
    /// and socket path.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "multipassd should exit 0 on SIGTERM, got {status}\n--- log ---\n{}",
            self.log()
        );
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("wait").is_none(),
            None => false,
        }
    }

    /// Everything the daemon wrote to stdout and stderr, over all its starts.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for (i, path) in self.logs.iter().enumerate() {
            if self.logs.len() > 1 {
                all.push_str(&format!("=== start {} ===\n", i + 1));
            }
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(path).unwrap_or_default(),
            ));
        }
        all
    }

    /// The socket path (panics for a TCP daemon).
    pub fn socket(&self) -> &Path {
        self.socket.as_deref().expect("a Unix-socket daemon")
    }

    /// `(mode, uid, gid)` of the socket file now.
    pub fn socket_mode(&self) -> (u32, u32, u32) {
        crate::mode_owner(self.socket()).expect("stat socket")
    }

    /// Wait up to 2 s for the socket to have `(mode, uid, gid)`; panic with what it has otherwise.
    #[track_caller]
    pub fn assert_socket_mode(&self, expected: (u32, u32, u32), what: &str) {
        let start = Instant::now();
        loop {
            let now = self.socket_mode();
            if now == expected {
                return;
            }
            if start.elapsed() > Duration::from_secs(2) {
                panic!(
                    "{what}: socket should be mode {:o} uid {} gid {}, is mode {:o} uid {} gid {}",
                    expected.0, expected.1, expected.2, now.0, now.1, now.2
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The root CA certificate clients verify against.
    pub fn root_cert(&self) -> PathBuf {
        self.data_dir.join("multipass_root_cert.pem")
    }

    /// The trust store file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir
            .join("authenticated-certs")
            .join("multipass_client_certs.pem")
    }

    /// The settings file.
    pub fn conf_path(&self) -> PathBuf {
        self.data_dir.join("multipassd.conf")
    }

    /// Certificates in the trust store, as DER (none if the file is absent).
    pub fn store_certs(&self) -> Vec<Vec<u8>> {
        crate::pem::certificates_in_file(&self.store_path())
    }

    /// Append `user`'s certificate file to the trust store by hand, as the documented recovery
    /// does (`cat cert | sudo tee -a store`).
    pub fn append_to_store_by_hand(&self, user: &User) {
        self.append_to_store_with_metadata(user, "");
    }

    /// Append `user`'s certificate to the trust store preceded by `metadata` (RFC 7468 explanatory
    /// `key: value` lines), as the privileged helper or an administrator would write it.
    pub fn append_to_store_with_metadata(&self, user: &User, metadata: &str) {
        use std::io::Write;
        let cert = std::fs::read(user.cert_path()).expect("read the user's certificate");
        let mut store = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.store_path())
            .expect("open trust store for appending");
        store
            .write_all(metadata.as_bytes())
            .and_then(|()| store.write_all(&cert))
            .expect("append to trust store");
        store.sync_all().expect("sync trust store");
    }

    /// The enrollment token file.
    pub fn tokens_path(&self) -> PathBuf {
        self.data_dir.join("enrollment-tokens")
    }

    /// The client's environment besides `PATH` and `HOME`.
    pub fn client_env(&self, xdg_data_home: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("XDG_DATA_HOME", xdg_data_home.display().to_string()),
            ("MULTIPASS_SERVER_ADDRESS", self.address.clone()),
            (
                "MULTIPASS_ROOT_CERT",
                self.root_cert().display().to_string(),
            ),
        ]
    }

    /// Run `multipass args...` as `user`, with `stdin` piped in (or /dev/null).
    pub fn run_as(&self, user: &User, args: &[&str], stdin: Option<&str>) -> CliOutput {
        self.run_as_bytes(user, args, stdin.map(str::as_bytes))
    }

    /// [`Daemon::run_as`] with any bytes on stdin, text or not.
    pub fn run_as_bytes(&self, user: &User, args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
        let env = self.client_env(&user.xdg_data_home());
        let mut cmd = user.command(&crate::bin("multipass"), &env);
        cmd.args(args);
        process::run_bytes(cmd, stdin, DEFAULT_TIMEOUT)
    }

    /// Run `multipass args...` as root (with its own home in the test directory).
    pub fn run_as_root(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        self.run_as_root_with(args, stdin, &[])
    }

    /// [`Daemon::run_as_root`] with more environment variables (`SUDO_USER`, as `sudo` sets it).
    pub fn run_as_root_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> CliOutput {
        let mut cmd = Command::new(crate::bin("multipass"));
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.root_home)
            .envs(env.iter().copied())
            .current_dir(&self.root_home);
        for (key, value) in self.client_env(&self.root_xdg_data_home()) {
            cmd.env(key, value);
        }
        process::run(cmd, stdin, DEFAULT_TIMEOUT)
    }

    /// `$XDG_DATA_HOME` of [`Daemon::run_as_root`].
    pub fn root_xdg_data_home(&self) -> PathBuf {
        self.root_home.join(".local").join("share")
    }

    /// As `user` (already trusted), set the passphrase the way people do: `multipass set
    /// local.passphrase`, typed twice.
    #[track_caller]
    pub fn set_passphrase(&self, user: &User, passphrase: &str) -> CliOutput {
        let out = self.run_as(
            user,
            &["set", "local.passphrase"],
            Some(&format!("{passphrase}\n{passphrase}\n")),
        );
        out.assert_code(0, &format!("{} `set local.passphrase`", user.name));
        out
    }

    /// Run `multipass authenticate` as `user` with `passphrase` (a wrong one) on standard input
    /// until the failure limiter refuses an attempt, at most `attempts` times; each attempt it
    /// lets through must fail with [`crate::PASSPHRASE_NOT_CORRECT`]. Returns the number of the
    /// refused attempt (from 1), or `None`.
    ///
    /// Doubling waits make this hold on a slow machine: an attempt that comes after its wait
    /// has ended is checked, fails, and sets a wait twice as long for the next one.
    #[track_caller]
    pub fn authenticate_until_limited(
        &self,
        user: &User,
        passphrase: &str,
        attempts: usize,
    ) -> Option<usize> {
        for attempt in 1..=attempts {
            let out = self.run_as(user, &["authenticate"], Some(&format!("{passphrase}\n")));
            if out
                .stderr
                .contains("Too many failed authentication attempts")
            {
                out.assert_code(2, "an attempt refused by the failure limiter");
                return Some(attempt);
            }
            out.assert_failure(
                2,
                &format!("authenticate failed: {}", crate::PASSPHRASE_NOT_CORRECT),
                &format!(
                    "{} `authenticate` with a wrong passphrase, attempt {attempt}",
                    user.name
                ),
            );
        }
        None
    }

    /// Make sure `user` has a client certificate by running `multipass args...` as them (the
    /// outcome of the command itself does not matter). Panics if no certificate appears.
    pub fn ensure_client_cert(&self, user: &User, args: &[&str], stdin: Option<&str>) {
        let out = self.run_as(user, args, stdin);
        assert!(
            user.cert_path().is_file() && user.key_path().is_file(),
            "`multipass {}` as {} should have created {} and {}\n{out}",
            args.join(" "),
            user.name,
            user.cert_path().display(),
            user.key_path().display()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- multipassd log ({}) ---\n{}",
                self.address,
                tail(&self.log(), 200)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A TCP port nobody listens on right now.
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Whether a TCP connection to `addr` is accepted (from 127.0.0.2 when `addr` is 127.0.0.1).
fn probe_tcp(addr: std::net::SocketAddr) -> bool {
    use socket2::{Domain, Socket, Type};
    let timeout = Duration::from_millis(200);
    if addr.ip() != std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
        return std::net::TcpStream::connect_timeout(&addr, timeout).is_ok();
    }
    let Ok(socket) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
        return false;
    };
    let source: std::net::SocketAddr = "127.0.0.2:0".parse().expect("address");
    socket.bind(&source.into()).is_ok() && socket.connect_timeout(&addr.into(), timeout).is_ok()
}
