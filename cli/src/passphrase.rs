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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicI32, Ordering};
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
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open("/dev/tty");
    match tty {
        Ok(tty) => {
            let mut prompt_to = &tty;
            read_hidden_from(tty.as_fd(), &mut prompt_to, prompt, limit)
        }
        // No controlling terminal (see the module's documentation).
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            read_hidden_from(io::stdin().as_fd(), &mut io::stderr(), prompt, limit)
        }
        Err(e) => Err(e.into()),
    }
}

/// Prompt on stdout and read one line of at most `limit` bytes from stdin, with echo.
pub fn read_visible(prompt: &str, limit: usize) -> Result<Zeroizing<String>, ReadError> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(prompt.as_bytes())?;
    stdout.flush()?;
    drop(stdout);
    read_line(&mut io::stdin().lock(), limit)
}

/// What the terminal being read was set to before echo was turned off, and its descriptor, for
/// the signal handler that puts it back.
static SAVED_TERMINAL: OnceLock<libc::termios> = OnceLock::new();
static SAVED_TERMINAL_FD: AtomicI32 = AtomicI32::new(-1);

/// Put the terminal back as it was and die of the signal, as if it had not been caught.
extern "C" fn restore_terminal_and_reraise(signal: libc::c_int) {
    let fd = SAVED_TERMINAL_FD.load(Ordering::SeqCst);
    if let (Some(saved), 0..) = (SAVED_TERMINAL.get(), fd) {
        // SAFETY: tcsetattr, signal and raise are async-signal-safe; `saved` is a plain struct
        // that is never written after it was set, and `fd` stays open while the handler is in
        // place.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, saved);
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Read one line from the terminal `fd` with its echo off, after writing `prompt` to `prompt_to`.
/// Ctrl-C (or a SIGTERM or SIGHUP) while waiting leaves the terminal echoing again: the default
/// action of those signals would end the process with echo still off, and the shell does not
/// turn it back on.
fn read_hidden_from(
    fd: BorrowedFd<'_>,
    prompt_to: &mut impl Write,
    prompt: &str,
    limit: usize,
) -> Result<Zeroizing<String>, ReadError> {
    let original: Termios = termios::tcgetattr(fd)?;
    let mut quiet = original.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    // The Enter key still moves to the next line.
    quiet.local_flags.insert(LocalFlags::ECHONL);
    let _ = SAVED_TERMINAL.set(libc::termios::from(original.clone()));
    SAVED_TERMINAL_FD.store(fd.as_raw_fd(), Ordering::SeqCst);
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
    let line = termios::tcsetattr(fd, SetArg::TCSANOW, &quiet)
        .map_err(ReadError::from)
        .and_then(|()| {
            prompt_to.write_all(prompt.as_bytes())?;
            prompt_to.flush()?;
            let (line, ended) = read_terminal_line(fd, limit)?;
            // Ended by Ctrl-D rather than Enter: the terminal is still on the prompt's line, and
            // what the command says next must not follow the prompt there.
            if !ended {
                prompt_to.write_all(b"\n")?;
                prompt_to.flush()?;
            }
            Ok(line)
        });
    let restored = termios::tcsetattr(fd, SetArg::TCSANOW, &original);
    for (signal, old) in previous {
        // SAFETY: puts back the disposition that was there before.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &old) };
    }
    SAVED_TERMINAL_FD.store(-1, Ordering::SeqCst);
    let line = line?;
    restored?;
    Ok(line)
}

/// One line from the terminal `fd`, as [`read_line`] reads it, and whether it ended with Enter
/// (not end of input). A terminal hands over at most one line per read, so this stops at the
/// line's end without a buffer that would keep a copy of the secret or of the next answer.
fn read_terminal_line(
    fd: BorrowedFd<'_>,
    limit: usize,
) -> Result<(Zeroizing<String>, bool), ReadError> {
    let most = limit + 3;
    let mut bytes = Zeroizing::new(vec![0u8; most]);
    let mut len = 0;
    while len < most && !bytes[..len].ends_with(b"\n") {
        match nix::unistd::read(fd, &mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The rest of a line too long to take is read and dropped: left on the terminal, it would be
    // the shell's next command line once this process exits.
    if len == most && !bytes.ends_with(b"\n") {
        let mut rest = Zeroizing::new([0u8; 256]);
        loop {
            match nix::unistd::read(fd, &mut rest[..]) {
                Ok(0) => break,
                Ok(n) if rest[..n].ends_with(b"\n") => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let ended = bytes[..len].ends_with(b"\n") || len == most;
    Ok((
        read_line(&mut io::Cursor::new(&bytes[..len]), limit)?,
        ended,
    ))
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
