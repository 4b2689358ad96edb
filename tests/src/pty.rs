//! Running a command on a pseudo-terminal, as a person at a terminal runs it: the terminal is its
//! standard input, output and error and its controlling terminal, and the test types answers
//! when it sees the prompts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running on a pseudo-terminal.
pub struct PtySession {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PtySession {
    /// Start `cmd` in a new session whose controlling terminal is a new pseudo-terminal.
    pub fn spawn(mut cmd: Command) -> PtySession {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup the terminal")))
            .stdout(Stdio::from(slave.try_clone().expect("dup the terminal")))
            .stderr(Stdio::from(slave.try_clone().expect("dup the terminal")));
        // SAFETY: setsid and ioctl are async-signal-safe, and touch nothing but this process.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start the command on the terminal");
        // Only the child holds the terminal now: when it is done, reading the master ends.
        drop(slave);
        let master = File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let mut master = master.try_clone().expect("dup the master");
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once every holder of the terminal has closed it.
                while let Ok(n @ 1..) = master.read(&mut buf) {
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            })
        };
        PtySession {
            child,
            master,
            output,
            reader: Some(reader),
        }
    }

    /// Everything the terminal showed so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Wait until the terminal has shown `text` `count` times in all; panics after `timeout`.
    #[track_caller]
    pub fn wait_for(&mut self, text: &str, count: usize, timeout: Duration) {
        let start = Instant::now();
        while self.screen().matches(text).count() < count {
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "the terminal did not show {text:?} ({count} times) within {timeout:?}; it \
                     shows:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Type `text`.
    pub fn type_text(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("type on the terminal");
    }

    /// Whether the terminal echoes what is typed (its ECHO flag), as a shell would find it.
    pub fn echoes(&self) -> bool {
        let termios =
            nix::sys::termios::tcgetattr(&self.master).expect("read the terminal's settings");
        termios
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO)
    }

    /// Wait for the command to exit (killing it after `timeout`); its exit code and the whole
    /// screen.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String) {
        let (status, _) = crate::process::wait_or_kill(&mut self.child, timeout);
        // The rest of the output, unless something the command started still holds the terminal.
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (status.code(), self.screen())
    }
}
