//! What `-v` shows of the client's own steps, on stderr: which daemon it reached, which client
//! certificate it presented and which root CA it verified the daemon against, so that "which
//! client am I?" (a user's, or root's after `sudo`) and "which daemon?" have an answer. `-vv`
//! adds what TLS negotiated and when each step ended, counted from the command's start.
//!
//! Nothing secret is shown: paths, the certificate's fingerprint (what `trust list` shows), and
//! names of protocols.

use std::fmt::Display;
use std::time::Instant;

/// The client's trace of its own steps, at the verbosity `-v` was given.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    level: u8,
    start: Instant,
}

impl Trace {
    /// A trace at `level` (the count of `-v`), its times counted from now.
    pub fn new(level: u8) -> Trace {
        Trace {
            level,
            start: Instant::now(),
        }
    }

    /// Whether steps are shown (`-v`): what only a step needs is worked out only then, as every
    /// command goes through here.
    pub fn shows_steps(&self) -> bool {
        self.level >= 1
    }

    /// Whether details are shown (`-vv`).
    pub fn shows_details(&self) -> bool {
        self.level >= 2
    }

    /// A step, shown from `-v` on.
    pub fn step(&self, text: impl Display) {
        self.at(1, text);
    }

    /// A detail, shown from `-vv` on.
    pub fn detail(&self, text: impl Display) {
        self.at(2, text);
    }

    fn at(&self, level: u8, text: impl Display) {
        if self.level < level {
            return;
        }
        // A trace that cannot be written (stderr closed) is not the command's failure.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), self.line(&text).as_bytes());
    }

    /// The line for `text`: with the time since the start from `-vv` on.
    fn line(&self, text: &dyn Display) -> String {
        if self.level >= 2 {
            let ms = self.start.elapsed().as_secs_f64() * 1000.0;
            format!("[client {ms:8.3} ms] {text}\n")
        } else {
            format!("[client] {text}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_time_from_vv_on() {
        assert_eq!(Trace::new(1).line(&"daemon: x"), "[client] daemon: x\n");
        let line = Trace::new(2).line(&"daemon: x");
        assert!(
            line.starts_with("[client ") && line.ends_with(" ms] daemon: x\n"),
            "{line}"
        );
    }
}
