//! Writing results to stdout and daemon log lines to stderr.
//!
//! Writes to stdout go through here so that a failure is an [`Error::Stdout`] rather than a panic
//! (`println!` panics on a closed pipe), and so that a broken pipe ends the command successfully.

use std::borrow::Cow;
use std::io::{self, Write};

use crate::error::Error;

/// `text` without the characters that would drive the terminal or change how the text reads:
/// control characters other than line breaks and tabs (an escape sequence can retitle the
/// window, clear the screen or rewrite what was shown), and the invisible, bidirectional and
/// separator characters that `trust::names` refuses in names. Most of what a command prints
/// comes from the daemon (its messages, log lines, names), and a daemon is not trusted with the
/// user's terminal.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    let dropped = |c: char| c != '\n' && c != '\t' && trust::names::is_forbidden(c);
    if text.chars().any(dropped) {
        Cow::Owned(text.chars().filter(|&c| !dropped(c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Write `text` to stdout.
pub fn print(text: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(for_terminal(text).as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

/// Write `line` and a newline to stdout.
pub fn print_line(line: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", for_terminal(line))
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

/// Write a log line sent by the daemon to stderr (with a newline if it has none).
pub fn log_line(line: &str) {
    if line.is_empty() {
        return;
    }
    let line = for_terminal(line);
    let mut stderr = io::stderr().lock();
    let _ = if line.ends_with('\n') {
        stderr.write_all(line.as_bytes())
    } else {
        writeln!(stderr, "{line}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_drive_the_terminal_is_dropped() {
        assert_eq!(
            for_terminal("multipassd \u{1b}]0;TITLE\u{7}\u{1b}[2J1.0\u{202e}\u{2028}x"),
            "multipassd ]0;TITLE[2J1.0x"
        );
        assert_eq!(
            for_terminal("two\nlines\tand a tab"),
            "two\nlines\tand a tab"
        );
        assert!(matches!(for_terminal("plain é"), Cow::Borrowed(_)));
    }
}
