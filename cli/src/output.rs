//! Writing results to stdout and daemon log lines to stderr.
//!
//! Writes to stdout go through here so that a failure is an [`Error::Stdout`] rather than a panic
//! (`println!` panics on a closed pipe), and so that a broken pipe ends the command successfully.

use std::io::{self, Write};

use crate::error::Error;

/// Write `text` to stdout.
pub fn print(text: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

/// Write `line` and a newline to stdout.
pub fn print_line(line: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

/// Write a log line sent by the daemon to stderr (with a newline if it has none).
pub fn log_line(line: &str) {
    if line.is_empty() {
        return;
    }
    let mut stderr = io::stderr().lock();
    let _ = if line.ends_with('\n') {
        stderr.write_all(line.as_bytes())
    } else {
        writeln!(stderr, "{line}")
    };
}
