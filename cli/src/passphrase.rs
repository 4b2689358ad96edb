//! Reading passphrases and values from the user.
//!
//! On a terminal, secrets are read without echo. Otherwise, so that scripts and tests can pipe
//! them in, the prompt goes to stdout and one line is read from stdin. Either way a secret is held
//! in a [`Zeroizing`] buffer, and it never has to appear in argv.
//!
//! A terminal on standard input is not always the process's controlling terminal: `su - alice -c
//! "multipass authenticate"` runs the command in a new session, where `/dev/tty` cannot be opened
//! (ENXIO), and as another user, who may not reopen the terminal's device by its path. The
//! inherited descriptor still works, so then the line is read from standard input itself, with its
//! echo turned off for the time of the read.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::sync::OnceLock;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;

/// Why a line could not be read from the user.
#[derive(Debug)]
pub enum ReadError {
    /// The line is longer than the caller accepts; the rest of it was left unread.
    TooLong,
    /// The line is not UTF-8 text, which is all a passphrase or a setting can be on the wire.
    NotText,
    /// The terminal or standard input failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

impl From<nix::errno::Errno> for ReadError {
    fn from(e: nix::errno::Errno) -> ReadError {
        ReadError::Io(e.into())
    }
}

impl ReadError {
    /// The error to report for a failure to read `what` (e.g. "passphrase"). A line that is too
    /// long gives `too_long`, the error the command gives for a too-long argument, so that how
    /// the value came does not change what is said about it.
    pub fn into_error(self, what: &str, too_long: impl FnOnce() -> Error) -> Error {
        match self {
            ReadError::TooLong => too_long(),
            ReadError::NotText => Error::Usage(format!("The {what} must be UTF-8 text.")),
            // Giving it on standard input is the way out only when a terminal failed.
            ReadError::Io(e) if io::stdin().is_terminal() => Error::Local(anyhow::anyhow!(
                "cannot read the {what}: {e}\nGive it on standard input instead, one line per \
                 question (for example from a file: `multipass authenticate < FILE`)."
            )),
            ReadError::Io(e) => Error::Local(anyhow::anyhow!("cannot read the {what}: {e}")),
        }
    }
}

/// Prompt for a secret of at most `limit` bytes. End of input gives an empty string.
pub fn read_hidden(prompt: &str, limit: usize) -> Result<Zeroizing<String>, ReadError> {
    if !io::stdin().is_terminal() {
        return read_visible(prompt, limit);
    }
    let secret = match rpassword::prompt_password(prompt) {
        Ok(secret) => Zeroizing::new(secret),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Zeroizing::default(),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(ReadError::NotText),
        // No controlling terminal (see the module's documentation).
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return read_hidden_from_stdin(prompt, limit)
        }
        Err(e) => return Err(e.into()),
    };
    // A terminal bounds the line it hands over (4 KiB on Linux), so it was read whole.
    if secret.len() > limit {
        return Err(ReadError::TooLong);
    }
    Ok(secret)
}

/// Prompt on stdout and read one line of at most `limit` bytes from stdin, with echo.
pub fn read_visible(prompt: &str, limit: usize) -> Result<Zeroizing<String>, ReadError> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(prompt.as_bytes())?;
    stdout.flush()?;
    drop(stdout);
    read_line(&mut io::stdin().lock(), limit)
}

/// What the terminal on standard input was set to before echo was turned off, for the signal
/// handler that puts it back.
static SAVED_TERMINAL: OnceLock<libc::termios> = OnceLock::new();

/// Put the terminal back as it was and die of the signal, as if it had not been caught.
extern "C" fn restore_terminal_and_reraise(signal: libc::c_int) {
    if let Some(saved) = SAVED_TERMINAL.get() {
        // SAFETY: tcsetattr, signal and raise are async-signal-safe; `saved` is a plain struct
        // that is never written after it was set.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Read one line from standard input, a terminal, with its echo off; the prompt goes to stderr.
/// Ctrl-C (or a SIGTERM) while waiting leaves the terminal echoing again.
fn read_hidden_from_stdin(prompt: &str, limit: usize) -> Result<Zeroizing<String>, ReadError> {
    let stdin = io::stdin();
    let original: Termios = termios::tcgetattr(&stdin)?;
    let mut quiet = original.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    // The Enter key still moves to the next line, as with rpassword.
    quiet.local_flags.insert(LocalFlags::ECHONL);
    let _ = SAVED_TERMINAL.set(libc::termios::from(original.clone()));
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(restore_terminal_and_reraise),
        nix::sys::signal::SaFlags::SA_RESETHAND,
        nix::sys::signal::SigSet::empty(),
    );
    let mut previous = Vec::new();
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        // SAFETY: the handler only calls async-signal-safe functions.
        if let Ok(old) = unsafe { nix::sys::signal::sigaction(signal, &handler) } {
            previous.push((signal, old));
        }
    }

    // Echo off before the prompt: whoever waits for the prompt to type must not be echoed.
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let prompted = io::stderr()
        .lock()
        .write_all(prompt.as_bytes())
        .and_then(|()| io::stderr().flush());
    let line = prompted
        .map_err(ReadError::from)
        .and_then(|()| read_line(&mut stdin.lock(), limit));
    let restored = termios::tcsetattr(&stdin, SetArg::TCSANOW, &original);
    for (signal, old) in previous {
        // SAFETY: puts back the disposition that was there before.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &old) };
    }
    let line = line?;
    restored?;
    Ok(line)
}

/// One line of `input` without its line ending; empty at end of input. A line longer than `limit`
/// bytes is refused after reading a few bytes past the limit, never buffered whole: a pipe may
/// carry megabytes.
fn read_line(input: &mut impl BufRead, limit: usize) -> Result<Zeroizing<String>, ReadError> {
    // The limit, a line ending ("\r\n"), and one byte that shows the line goes on. Reserved up
    // front, so that reading never reallocates and leaves copies of the secret in freed memory.
    let most = limit + 3;
    let mut bytes = Zeroizing::new(Vec::with_capacity(most));
    Read::take(&mut *input, most as u64).read_until(b'\n', &mut bytes)?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() > limit {
        return Err(ReadError::TooLong);
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(line) => Ok(Zeroizing::new(line)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(ReadError::NotText)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &mut impl BufRead) -> String {
        read_line(input, 64).unwrap().to_string()
    }

    #[test]
    fn lines_lose_their_ending_only() {
        let mut input = io::Cursor::new(b"first\nsecond\r\n third \n".to_vec());
        assert_eq!(line(&mut input), "first");
        assert_eq!(line(&mut input), "second");
        assert_eq!(line(&mut input), " third ");
        assert_eq!(line(&mut input), "");
    }

    #[test]
    fn last_line_without_newline() {
        let mut input = io::Cursor::new(b"secret".to_vec());
        assert_eq!(line(&mut input), "secret");
    }

    #[test]
    fn a_line_of_the_limit_is_taken_and_one_byte_more_is_refused() {
        let mut input = io::Cursor::new("a".repeat(8));
        assert_eq!(read_line(&mut input, 8).unwrap().as_str(), "a".repeat(8));
        for ending in ["\n", "\r\n"] {
            let mut input = io::Cursor::new(format!("{}{ending}next\n", "a".repeat(8)));
            assert_eq!(read_line(&mut input, 8).unwrap().as_str(), "a".repeat(8));
            assert_eq!(read_line(&mut input, 8).unwrap().as_str(), "next");
        }
        for ending in ["", "\n", "\r\n"] {
            let mut input = io::Cursor::new(format!("{}{ending}", "a".repeat(9)));
            assert!(matches!(read_line(&mut input, 8), Err(ReadError::TooLong)));
        }
    }

    /// A megabyte without a line break, as from `/dev/zero`, which counts what is read.
    struct Megabyte {
        read: usize,
    }

    impl Read for Megabyte {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min((1 << 20) - self.read);
            buf[..n].fill(b'a');
            self.read += n;
            Ok(n)
        }
    }

    #[test]
    fn a_long_line_is_refused_without_reading_it_all() {
        let mut source = Megabyte { read: 0 };
        let mut input = io::BufReader::with_capacity(16, &mut source);
        assert!(matches!(
            read_line(&mut input, 1024),
            Err(ReadError::TooLong)
        ));
        drop(input);
        assert!(source.read <= 1024 + 3 + 16, "read {} bytes", source.read);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused() {
        let mut input = io::Cursor::new(b"\xff\xfe\nnext\n".to_vec());
        assert!(matches!(read_line(&mut input, 64), Err(ReadError::NotText)));
        assert_eq!(line(&mut input), "next");
    }

    #[test]
    fn what_cannot_be_read_is_said_without_a_remedy_that_does_not_apply() {
        let e = ReadError::NotText.into_error("passphrase", || unreachable!());
        assert_eq!(e.exit(), crate::error::Exit::Usage);
        assert_eq!(
            e.message("authenticate").unwrap(),
            "The passphrase must be UTF-8 text."
        );
        let e = ReadError::TooLong.into_error("passphrase", || Error::Usage("too long".into()));
        assert_eq!(e.message("authenticate").unwrap(), "too long");
    }
}
