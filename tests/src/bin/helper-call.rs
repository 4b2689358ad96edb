//! Calls one method of `multipassd-helper` through the typed proxy of `helper_api`, as whoever
//! runs it (the tests start it as a test user with `setpriv`), and prints the reply, or the
//! D-Bus error's name and text.
//!
//! `multipass-test-helper-call METHOD SIGNATURE ARG...`, exit status 0 on success, 1 when the
//! helper refused, 2 on a usage error.
//!
//! `multipass-test-helper-call --flood SECONDS IN_FLIGHT SetPassphrase s P` calls the method
//! again and again for that long, that many calls in flight at once on one connection, and prints
//! `calls N refused N busy N failed N` (refused: the helper's `NotAuthorized`; busy: refused for
//! too many calls in flight; failed: anything else, or a success). `--flood-bytes N SECONDS
//! IN_FLIGHT` does the same with a passphrase of N bytes, too long for an argument.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use helper_api::HelperError;
use zbus::DBusError;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, seconds, in_flight, method, signature, passphrase] = args.as_slice() {
        if flag == "--flood" && method == "SetPassphrase" && signature == "s" {
            let (Ok(seconds), Ok(in_flight)) = (seconds.parse(), in_flight.parse()) else {
                return usage("--flood SECONDS IN_FLIGHT SetPassphrase s P");
            };
            return flood(Duration::from_secs(seconds), in_flight, passphrase).await;
        }
    }
    if let [flag, bytes, seconds, in_flight] = args.as_slice() {
        if flag == "--flood-bytes" {
            let (Ok(bytes), Ok(seconds), Ok(in_flight)) =
                (bytes.parse(), seconds.parse(), in_flight.parse())
            else {
                return usage("--flood-bytes BYTES SECONDS IN_FLIGHT");
            };
            let passphrase = "p".repeat(bytes);
            return flood(Duration::from_secs(seconds), in_flight, &passphrase).await;
        }
    }
    let (method, signature, rest) = match args.as_slice() {
        [method, signature, rest @ ..] => (method.as_str(), signature.as_str(), rest),
        _ => return usage("METHOD SIGNATURE ARG..."),
    };
    let proxy = match connect().await {
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

/// The helper's proxy on a new connection to the system bus.
async fn connect() -> zbus::Result<helper_api::Helper1Proxy<'static>> {
    let connection = zbus::Connection::system().await?;
    helper_api::proxy(&connection).await
}

/// `SetPassphrase(passphrase)` for `length`, `in_flight` calls at a time.
async fn flood(length: Duration, in_flight: usize, passphrase: &str) -> ExitCode {
    let proxy = match connect().await {
        Ok(p) => p,
        Err(e) => return failed(&HelperError::ZBus(e)),
    };
    let end = Instant::now() + length;
    let (mut calls, mut refused, mut busy, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < in_flight && Instant::now() < end {
            let (proxy, passphrase) = (proxy.clone(), passphrase.to_string());
            running.spawn(async move { proxy.set_passphrase(&passphrase).await });
            calls += 1;
        }
        match running.join_next().await {
            Some(Ok(Err(HelperError::NotAuthorized(_)))) => refused += 1,
            Some(Ok(Err(HelperError::Busy(_)))) => busy += 1,
            Some(_) => other += 1,
            None => break,
        }
    }
    println!("calls {calls} refused {refused} busy {busy} failed {other}");
    ExitCode::SUCCESS
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
