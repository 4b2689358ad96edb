//! The administrator's path: when the daemon cannot help (nobody trusts this client and no
//! passphrase is set, or the caller is the administrator who was not the first client), ask
//! `multipassd-helper` over the system bus. polkit decides, with the caller's own identity; on a
//! terminal a `pkttyagent` is started for this process so polkit can ask for the
//! administrator's password.

use std::io::{IsTerminal, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::anyhow;
use helper_api::{Helper1Proxy, HelperError};
use std::future::Future;
use zbus::DBusError;
use zeroize::Zeroizing;

use crate::error::Error;

/// What is asked of the helper, for the messages that say how to do it without the bus.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Trust,
    Passphrase,
}

impl Asked {
    /// The helper's direct mode for the same thing: no bus, no polkit, only root.
    fn instead(self) -> String {
        let how = "(or pkexec instead of sudo; with polkit older than 124, start `pkttyagent \
                   --process $$ &` in that shell first)";
        match self {
            Asked::Trust => trust_instead(how),
            Asked::Passphrase => format!(
                "An administrator can do it without the system bus and polkit, on a terminal:\n  \
                 sudo /usr/libexec/multipassd-helper set-passphrase\n{how}"
            ),
        }
    }
}

/// How an administrator trusts this client's certificate without the bus ([`trust_hint`]).
fn trust_instead(how: &str) -> String {
    let cert = trust::paths::client_cert_dir().map_or_else(
        || "CERTIFICATE".to_string(),
        |dir| {
            dir.join(trust::paths::CLIENT_CERT_FILE)
                .display()
                .to_string()
        },
    );
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    trust_hint(
        &cert,
        user.as_ref().map(|u| u.name.as_str()),
        uid.is_root(),
        how,
    )
}

/// The helper's command that trusts the certificate at `cert`, for `user` (`root` when run as
/// root). It names the client after the user (without `--name` the helper takes the name of
/// whoever runs it, the administrator) and reads the certificate in the administrator's shell,
/// where another user's file is not readable: so it says to hand over a copy, and offers a
/// token instead.
fn trust_hint(cert: &str, user: Option<&str>, root: bool, how: &str) -> String {
    let name = user.unwrap_or("NAME");
    let copy = if root {
        String::new()
    } else {
        format!(
            "\nThat file is readable by {} alone: another administrator needs a copy of it (it \
             holds no secret; the private key beside it is never needed). An administrator can \
             also give you a one-time token (`multipass trust token create`) to type at \
             `multipass authenticate`.",
            user.unwrap_or("this user")
        )
    };
    format!(
        "An administrator can do it without the system bus and polkit, on a terminal:\n  \
         sudo /usr/libexec/multipassd-helper trust-certificate --name {name} < {cert}\n{how}{copy}"
    )
}

/// Trust this client's certificate through the helper; returns the fingerprint.
pub async fn trust_certificate(pem: &str, name: &str) -> Result<String, Error> {
    let helper = connect(Asked::Trust).await?;
    with_agent(Asked::Trust, helper.trust_certificate(pem, name)).await
}

/// Set (or with an empty value, clear) the passphrase through the helper.
pub async fn set_passphrase(passphrase: Zeroizing<String>) -> Result<(), Error> {
    let helper = connect(Asked::Passphrase).await?;
    with_agent(
        Asked::Passphrase,
        helper.set_passphrase(passphrase.as_str()),
    )
    .await
}

async fn connect(asked: Asked) -> Result<Helper1Proxy<'static>, Error> {
    let connection = zbus::Connection::system().await.map_err(|e| {
        Error::Local(anyhow!(
            "cannot reach the system bus to ask multipassd-helper ({e}); is dbus running?\n{}",
            asked.instead()
        ))
    })?;
    helper_api::proxy(&connection).await.map_err(|e| {
        Error::Local(anyhow!(
            "cannot reach multipassd-helper: {e}\n{}",
            asked.instead()
        ))
    })
}

/// Make `call` (whose proxy method carries the allow-interactive-authorization flag) with an
/// agent on our terminal, so that polkit can ask for the administrator's password.
async fn with_agent<R>(
    asked: Asked,
    call: impl Future<Output = Result<R, HelperError>>,
) -> Result<R, Error> {
    let agent = if std::io::stdin().is_terminal() {
        start_agent()
    } else {
        None
    };
    let result = call.await;
    if let Some(mut agent) = agent {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    result.map_err(|e| match e {
        // Errors of the bus itself (e.g. no such service) by their text, as D-Bus gives it.
        HelperError::ZBus(zbus::Error::MethodError(name, description, _)) => Error::Local(anyhow!(
            "{}\n{}",
            description.unwrap_or_else(|| name.to_string()),
            asked.instead()
        )),
        HelperError::ZBus(e) => Error::Local(anyhow!(
            "multipassd-helper failed: {e}\n{}",
            asked.instead()
        )),
        typed => {
            // polkit said no: with no terminal it could not ask for a password, and on one it
            // may have had no agent to ask with.
            let hint = if typed.is_denial() {
                format!("\n{}", asked.instead())
            } else {
                String::new()
            };
            let text = typed
                .description()
                .map_or_else(|| typed.name().to_string(), str::to_string);
            Error::Local(anyhow!("{text}{hint}"))
        }
    })
}

/// Start `pkttyagent` for this process and wait until it is registered (it signals on the
/// notify fd). `None` if it cannot run; polkit then answers without asking.
fn start_agent() -> Option<Child> {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().ok()?;
    let write_fd = write.as_raw_fd();
    let mut command = Command::new("pkttyagent");
    command
        .arg("--process")
        .arg(std::process::id().to_string())
        .arg("--notify-fd")
        .arg(write_fd.to_string())
        .arg("--fallback")
        .stdout(Stdio::null());
    // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec on the pipe's write end
    // so that the agent inherits it.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(write_fd, libc::F_GETFD);
            libc::fcntl(write_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let child = command.spawn().ok()?;
    drop(write);
    // Registered when it writes to (or closes) the notify fd.
    let mut buf = [0u8; 1];
    let _ = std::fs::File::from(read).read(&mut buf);
    Some(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_hint_names_the_user_and_says_how_the_certificate_gets_to_the_administrator() {
        let cert = "/home/bob/.local/share/multipass-client-certificate/multipass_cert.pem";
        let bob = trust_hint(cert, Some("bob"), false, "(how)");
        assert!(
            bob.contains(&format!(
                "sudo /usr/libexec/multipassd-helper trust-certificate --name bob < {cert}\n(how)"
            )),
            "{bob}"
        );
        assert!(bob.contains("readable by bob alone"), "{bob}");
        assert!(bob.contains("multipass trust token create"), "{bob}");
        let root = trust_hint("/root/cert.pem", Some("root"), true, "(how)");
        assert!(
            root.ends_with("--name root < /root/cert.pem\n(how)"),
            "{root}"
        );
        let nameless = trust_hint(cert, None, false, "(how)");
        assert!(nameless.contains("--name NAME <"), "{nameless}");
        assert!(
            nameless.contains("readable by this user alone"),
            "{nameless}"
        );
    }
}
