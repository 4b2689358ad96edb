//! Running a command with optional stdin, a timeout and captured output.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Default limit for one CLI invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `cmd` spawned, tried again for up to 2 s while its program is "busy" (`ETXTBSY`): a program
/// this process has just written (a copy of a binary) stays busy until every child that another
/// test's thread forked meanwhile, holding the written file's descriptor, has run its own exec.
pub fn spawn_written(cmd: &mut Command) -> std::io::Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// `child`'s exit status once it has exited within `within`, else `None` (it is left running).
pub fn wait_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `child`'s exit status, killing it first if it has not exited within `within`; whether it was
/// killed.
pub fn wait_or_kill(child: &mut Child, within: Duration) -> (ExitStatus, bool) {
    match wait_within(child, within) {
        Some(status) => (status, false),
        None => {
            let _ = child.kill();
            (child.wait().expect("wait for a killed child process"), true)
        }
    }
}

/// What a finished (or killed) command produced.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `None` if killed by a signal (or by the timeout).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Wall-clock time it took.
    pub elapsed: Duration,
}

impl CliOutput {
    /// Standard error without trailing newlines.
    pub fn stderr_trimmed(&self) -> &str {
        self.stderr.trim_end_matches(['\n', '\r'])
    }

    /// Standard output without trailing newlines.
    pub fn stdout_trimmed(&self) -> &str {
        self.stdout.trim_end_matches(['\n', '\r'])
    }

    /// Standard output without trailing newlines and without the passphrase prompt that
    /// `multipass` writes there when stdin is not a terminal.
    pub fn stdout_after_prompt(&self) -> &str {
        self.stdout_trimmed()
            .trim_start_matches("Please enter passphrase: ")
    }

    /// Panics (with everything the command printed) unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32, what: &str) -> &Self {
        if self.code != Some(code) {
            panic!("{what}: expected exit code {code}\n{self}");
        }
        self
    }

    /// Panics unless `multipass <command>` was refused as not authenticated: exit 2, the first two
    /// lines of stderr exactly Multipass's message (prefixed `<command> failed: `), then exactly
    /// one line saying how to get in, naming nobody (a command may add its own hint after that, as
    /// `set local.passphrase` does).
    #[track_caller]
    pub fn assert_not_authenticated(&self, command: &str, what: &str) -> &Self {
        self.assert_code(2, what);
        let expected = format!("{command} failed: {}", crate::NOT_AUTHENTICATED);
        let lines: Vec<&str> = self.stderr_trimmed().lines().collect();
        let head: Vec<&str> = expected.lines().collect();
        if lines.len() < 3 || lines[..2] != head[..] {
            panic!("{what}: expected stderr to be\n  {expected:?}\nand one line more\n{self}");
        }
        let hint = lines[2];
        if !(hint.contains("trusted") && hint.contains("multipass authenticate --admin")) {
            panic!("{what}: the third line should say how to get trusted: {hint:?}\n{self}");
        }
        self
    }

    /// Panics unless it exited with `code` and its stderr begins with exactly the lines of
    /// `stderr`. Further lines may follow: ours adds actionable hints after Multipass's message,
    /// whose lines stay exact.
    #[track_caller]
    pub fn assert_failure(&self, code: i32, stderr: &str, what: &str) -> &Self {
        self.assert_code(code, what);
        let actual = self.stderr_trimmed();
        let exact_lines = actual == stderr
            || actual
                .strip_prefix(stderr)
                .is_some_and(|rest| rest.starts_with('\n'));
        if !exact_lines {
            panic!("{what}: expected stderr to begin with the lines\n  {stderr:?}\n{self}");
        }
        self
    }
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.command)?;
        writeln!(
            f,
            "  exit: {:?}{} after {:?}",
            self.code,
            if self.timed_out {
                " (killed: timeout)"
            } else {
                ""
            },
            self.elapsed
        )?;
        writeln!(f, "  stdout: {:?}", self.stdout)?;
        write!(f, "  stderr: {:?}", self.stderr)
    }
}

/// Run `cmd` to completion (killing it after `timeout`), feeding it `stdin` (or /dev/null).
pub fn run(cmd: Command, stdin: Option<&str>, timeout: Duration) -> CliOutput {
    run_bytes(cmd, stdin.map(str::as_bytes), timeout)
}

/// [`run`] with any bytes on stdin, text or not.
pub fn run_bytes(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CliOutput {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            // The command may exit without reading everything: a broken pipe is fine.
            let _ = pipe.write_all(&input);
        })
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let (status, timed_out) = wait_or_kill(&mut child, timeout.saturating_sub(start.elapsed()));
    let elapsed = start.elapsed();
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    CliOutput {
        command,
        code: status.code(),
        stdout,
        stderr,
        timed_out,
        elapsed,
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}
