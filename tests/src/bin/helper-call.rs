//! Calls one method of `multipassd-helper` through the typed proxy of `helper_api`, as whoever
//! runs it (the tests start it as a test user with `setpriv`), and prints the reply, or the
//! D-Bus error's name and text.
//!
//! `multipass-test-helper-call METHOD SIGNATURE ARG...`, exit status 0 on success, 1 when the
//! helper refused, 2 on a usage error.

use std::process::ExitCode;

use helper_api::HelperError;
use zbus::DBusError;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (method, signature, rest) = match args.as_slice() {
        [method, signature, rest @ ..] => (method.as_str(), signature.as_str(), rest),
        _ => return usage("METHOD SIGNATURE ARG..."),
    };
    let connection = match zbus::Connection::system().await {
        Ok(c) => c,
        Err(e) => return failed(&HelperError::ZBus(e)),
    };
    let proxy = match helper_api::proxy(&connection).await {
        Ok(p) => p,
        Err(e) => return failed(&HelperError::ZBus(e)),
    };
    let reply = match (method, signature, rest) {
        ("SetPassphrase", "s", [passphrase]) => {
            proxy.set_passphrase(passphrase).await.map(|()| None)
        }
        ("TrustCertificate", "ss", [pem, name]) => {
            proxy.trust_certificate(pem, name).await.map(Some)
        }
        ("SetSocketAccess", "b", [open]) => match open.as_str() {
            "true" => proxy.set_socket_access(true).await,
            "false" => proxy.set_socket_access(false).await,
            _ => return usage("SetSocketAccess b true|false"),
        }
        .map(|()| None),
        _ => {
            return usage("SetPassphrase s P | TrustCertificate ss PEM NAME | SetSocketAccess b B")
        }
    };
    match reply {
        Ok(Some(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

fn failed(e: &HelperError) -> ExitCode {
    match e {
        HelperError::ZBus(inner) => eprintln!("{inner}"),
        typed => eprintln!(
            "{}: {}",
            typed.name(),
            typed.description().unwrap_or_default()
        ),
    }
    ExitCode::from(1)
}

fn usage(what: &str) -> ExitCode {
    eprintln!("usage: multipass-test-helper-call {what}");
    ExitCode::from(2)
}
