//! Reading passphrases and values from the user.
//!
//! On a terminal, secrets are read without echo (the prompt goes to the terminal). Otherwise, so
//! that scripts and tests can pipe them in, the prompt goes to stdout and one line is read from
//! stdin. Either way a secret is held in a [`Zeroizing`] buffer, and it never has to appear in argv.

use std::io::{self, BufRead, IsTerminal, Write};

use zeroize::Zeroizing;

/// Room reserved up front for a line, so that reading it does not reallocate (and leave copies of
/// the secret behind in freed memory) unless it is unusually long.
const LINE_CAPACITY: usize = 1024;

/// Prompt for a secret. End of input gives an empty string.
pub fn read_hidden(prompt: &str) -> io::Result<Zeroizing<String>> {
    if io::stdin().is_terminal() {
        match rpassword::prompt_password(prompt) {
            Ok(secret) => Ok(Zeroizing::new(secret)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Zeroizing::default()),
            Err(e) => Err(e),
        }
    } else {
        read_visible(prompt)
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
