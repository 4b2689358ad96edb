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
use zbus::proxy::MethodFlags;
use zeroize::Zeroizing;

use crate::error::Error;

const BUS_NAME: &str = "io.multipass.Helper1";
const OBJECT_PATH: &str = "/io/multipass/Helper1";

/// What to run instead, for the messages.
const PKEXEC_HINT: &str = "Without a terminal, an administrator can run instead, from one:\n  \
     pkexec /usr/libexec/multipassd-helper trust-certificate < ~/.local/share/multipass-client-certificate/multipass_cert.pem\n\
     (with polkit older than 124, start `pkttyagent --process $$ &` in that shell first)";

/// Trust this client's certificate through the helper; returns the fingerprint.
pub async fn trust_certificate(pem: &str, name: &str) -> Result<String, Error> {
    call("TrustCertificate", &(pem, name)).await
}

/// Set (or with an empty value, clear) the passphrase through the helper.
pub async fn set_passphrase(passphrase: Zeroizing<String>) -> Result<(), Error> {
    call::<_, ()>("SetPassphrase", &(passphrase.as_str(),)).await
}

async fn call<B, R>(method: &str, body: &B) -> Result<R, Error>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    let connection = zbus::Connection::system().await.map_err(|e| {
        Error::Local(anyhow!(
            "cannot reach the system bus to ask multipassd-helper ({e}); is dbus running?"
        ))
    })?;
    let proxy = zbus::Proxy::new(&connection, BUS_NAME, OBJECT_PATH, BUS_NAME)
        .await
        .map_err(|e| Error::Local(anyhow!("cannot reach multipassd-helper: {e}")))?;
    // An agent on our terminal lets polkit ask for the administrator's password.
    let agent = if std::io::stdin().is_terminal() {
        start_agent()
    } else {
        None
    };
    let result = proxy
        .call_with_flags::<_, B, R>(method, MethodFlags::AllowInteractiveAuth.into(), body)
        .await;
    if let Some(mut agent) = agent {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    match result {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(Error::Local(anyhow!("multipassd-helper sent no reply"))),
        Err(zbus::Error::MethodError(name, description, _)) => {
            let text = description.unwrap_or_else(|| name.to_string());
            let hint = if name.as_str().ends_with(".InteractionRequired")
                || name.as_str().ends_with(".NotAuthorized")
            {
                if std::io::stdin().is_terminal() {
                    String::new()
                } else {
                    format!("\n{PKEXEC_HINT}")
                }
            } else {
                String::new()
            };
            Err(Error::Local(anyhow!("{text}{hint}")))
        }
        Err(e) => Err(Error::Local(anyhow!("multipassd-helper failed: {e}"))),
    }
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
