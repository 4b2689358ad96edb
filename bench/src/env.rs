//! The world a run measures in: a scratch directory with a data directory whose certificates
//! are already persisted, a client identity that the trust store already trusts (so the harness
//! needs neither root nor the first-client rule), and the processes it starts.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tls::{ClientIdentity, ServerPki, ServerPkiOptions};
use trust::fsutil::{self, FileMode};
use trust::{DataDir, Entry, Metadata, TrustStore};

/// Scratch space and the client identity of one run.
pub struct Env {
    dir: tempfile::TempDir,
    /// `multipassd` and `multipass` live here.
    pub bins: PathBuf,
    /// The daemon's `--data-dir`.
    pub data: PathBuf,
    /// The client's `XDG_DATA_HOME`.
    pub xdg: PathBuf,
    /// The client's identity (trusted by the store in `data`).
    pub identity: ClientIdentity,
}

impl Env {
    /// A fresh scratch directory (short path: socket paths are limited to 107 bytes), the
    /// daemon's certificates created and persisted, the client identity created and trusted.
    pub fn new(bins: PathBuf) -> Result<Env> {
        for name in ["multipassd", "multipass"] {
            if !bins.join(name).is_file() {
                bail!(
                    "{} not found; build the workspace first (scripts/bench.sh does)",
                    bins.join(name).display()
                );
            }
        }
        let dir = tempfile::Builder::new().prefix("mpbench-").tempdir()?;
        let data = dir.path().join("data");
        let xdg = dir.path().join("share");
        prepare_data_dir(&data)?;
        let identity = ClientIdentity::load_or_create(&client_dir(&xdg))?;
        trust(&data, &identity)?;
        Ok(Env {
            dir,
            bins,
            data,
            xdg,
            identity,
        })
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The client's certificate directory.
    pub fn client_dir(&self) -> PathBuf {
        client_dir(&self.xdg)
    }

    /// The client's TLS configuration against the daemon of `data`, as the CLI builds it (it
    /// keeps no sessions: every new connection is a full handshake, as every new `multipass`
    /// process makes).
    pub fn client_tls(&self, data: &Path) -> Result<Arc<rustls::ClientConfig>> {
        let root = std::fs::read(DataDir::new(data).root_cert())?;
        Ok(tls::client_config(&root, &self.identity)?)
    }

    /// A `multipass` command against the daemon on `socket` with the state in `data`; output
    /// discarded.
    pub fn cli(&self, socket: &Path, data: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bins.join("multipass"));
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path())
            .env("XDG_DATA_HOME", &self.xdg)
            .env(
                "MULTIPASS_SERVER_ADDRESS",
                format!("unix:{}", socket.display()),
            )
            .env("MULTIPASS_ROOT_CERT", DataDir::new(data).root_cert())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

fn client_dir(xdg: &Path) -> PathBuf {
    xdg.join(trust::paths::CLIENT_CERT_DIR_NAME)
}

/// A data directory with the daemon's certificates made and persisted.
pub fn prepare_data_dir(data: &Path) -> Result<()> {
    let dir = DataDir::new(data);
    fsutil::ensure_dir(data, 0o711)?;
    fsutil::ensure_dir(&dir.trust_store_dir(), 0o700)?;
    ServerPki::load_or_create(&dir, ServerPkiOptions::default())?;
    Ok(())
}

/// Add `identity` to the trust store of `data`.
pub fn trust(data: &Path, identity: &ClientIdentity) -> Result<()> {
    let store = TrustStore::new(DataDir::new(data).trust_store(), FileMode::PRIVATE);
    store.add(Entry::new(identity.cert.clone(), Metadata::default()))?;
    Ok(())
}

/// Receive on `notify` (a `NOTIFY_SOCKET`) until a message says `READY=1`; errors when its read
/// timeout passes first.
pub fn wait_for_ready(notify: &UnixDatagram) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = notify.recv(&mut buf)?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            return Ok(());
        }
    }
}

/// A server process (the daemon, or the plaintext floor server) that said `READY=1`. Stopped
/// with SIGTERM on drop.
pub struct Server {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// From spawn to `READY=1`.
    pub start_to_ready: Duration,
}

impl Server {
    /// Spawn `cmd` (which must listen on `socket`) with `NOTIFY_SOCKET` set, and wait for its
    /// `READY=1`.
    pub fn spawn(mut cmd: Command, socket: PathBuf, scratch: &Path, log: &Path) -> Result<Server> {
        let notify_path = scratch.join(format!(
            "notify-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let notify = UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(Duration::from_secs(20)))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let mut server = Server {
            child,
            socket,
            start_to_ready: Duration::ZERO,
        };
        wait_for_ready(&notify).with_context(|| format!("no READY=1 from {cmd:?}"))?;
        server.start_to_ready = started.elapsed();
        let _ = std::fs::remove_file(&notify_path);
        Ok(server)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// SIGTERM, and wait (SIGKILL after 10 s).
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("server {} did not stop on SIGTERM", self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The real daemon on `socket` over the state in `data`.
pub fn daemon(env: &Env, socket: &Path, data: &Path, log: &str) -> Result<Server> {
    let mut cmd = Command::new(env.bins.join("multipassd"));
    cmd.arg("--address")
        .arg(format!("unix:{}", socket.display()))
        .arg("--data-dir")
        .arg(data)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
    Server::spawn(cmd, socket.to_path_buf(), env.path(), &env.path().join(log))
}

/// The plaintext floor server (this program's `floor-server`) on `socket`, over the same state.
pub fn floor(env: &Env, socket: &Path, data: &Path) -> Result<Server> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("floor-server")
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data)
        .arg("--client-dir")
        .arg(env.client_dir())
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
    Server::spawn(
        cmd,
        socket.to_path_buf(),
        env.path(),
        &env.path().join("floor.log"),
    )
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// CPU time (user + system, all threads) `pid` has used so far; `None` for this process.
pub fn cpu_time(pid: Option<u32>) -> Result<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path)?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 12 and 13 after the state (field 3).
    let ticks: u64 = fields
        .get(11..13)
        .with_context(|| format!("short {path}"))?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}
