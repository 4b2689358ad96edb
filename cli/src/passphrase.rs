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

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::OnceLock;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use zeroize::Zeroizing;

/// Room reserved up front for a line, so that reading it does not reallocate (and leave copies of
/// the secret behind in freed memory) unless it is unusually long.
const LINE_CAPACITY: usize = 1024;

/// The error for a failure to read `what` (e.g. "the passphrase") from the user: what happened,
/// and the other way to give it.
pub fn read_error(what: &str, e: io::Error) -> crate::error::Error {
    crate::error::Error::Local(anyhow::anyhow!(
        "cannot read {what}: {e}\nGive it on standard input instead, one line per question \
         (for example from a file: `multipass authenticate < FILE`)."
    ))
}

/// Prompt for a secret. End of input gives an empty string.
pub fn read_hidden(prompt: &str) -> io::Result<Zeroizing<String>> {
    if !io::stdin().is_terminal() {
        return read_visible(prompt);
    }
    match rpassword::prompt_password(prompt) {
        Ok(secret) => Ok(Zeroizing::new(secret)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Zeroizing::default()),
        // No controlling terminal (see the module's documentation).
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => read_hidden_from_stdin(prompt),
        Err(e) => Err(e),
    }
}

/// Prompt on stdout and read one line from stdin, with echo.
pub fn read_visible(prompt: &str) -> io::Result<Zeroizing<String>> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(prompt.as_bytes())?;
    stdout.flush()?;
    drop(stdout);
    read_line(&mut io::stdin().lock())
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
fn read_hidden_from_stdin(prompt: &str) -> io::Result<Zeroizing<String>> {
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
    let line = prompted.and_then(|()| read_line(&mut stdin.lock()));
    let restored = termios::tcsetattr(&stdin, SetArg::TCSANOW, &original);
    for (signal, old) in previous {
        // SAFETY: puts back the disposition that was there before.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &old) };
    }
    let line = line?;
    restored?;
    Ok(line)
}

/// One line of `input` without its line ending; empty at end of input.
fn read_line(input: &mut impl BufRead) -> io::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::with_capacity(LINE_CAPACITY));
    input.read_line(&mut line)?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_ending_only() {
        let mut input = io::Cursor::new(b"first\nsecond\r\n third \n".to_vec());
        assert_eq!(read_line(&mut input).unwrap().as_str(), "first");
        assert_eq!(read_line(&mut input).unwrap().as_str(), "second");
        assert_eq!(read_line(&mut input).unwrap().as_str(), " third ");
        assert_eq!(read_line(&mut input).unwrap().as_str(), "");
    }

    #[test]
    fn last_line_without_newline() {
        let mut input = io::Cursor::new(b"secret".to_vec());
        assert_eq!(read_line(&mut input).unwrap().as_str(), "secret");
    }
}
