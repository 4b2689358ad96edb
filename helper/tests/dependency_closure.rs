//! What runs as root links no TLS stack, no certificate generation and no gRPC: the helper's
//! dependency closure, as cargo resolves it for the helper's own build, holds none of those
//! crates. A dependency that brings one back fails this test.

use std::process::Command;

/// Crates that must not be in the helper's closure. `rustls-pki-types` (certificate and key
/// byte containers, no code that speaks TLS or does cryptography) may be: names are compared
/// whole.
const FORBIDDEN: &[&str] = &[
    "rustls",
    "tokio-rustls",
    "rustls-webpki",
    "ring",
    "aws-lc-rs",
    "aws-lc-sys",
    "rcgen",
    "tonic",
    "hyper",
    "hyper-util",
    "h2",
    "prost",
    "multipass-tls",
    "multipass-rpc",
];

#[test]
fn helper_links_no_tls_no_certificate_generation_no_grpc() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "multipassd-helper",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).expect("UTF-8");
    let mut names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    names.sort_unstable();
    names.dedup();
    // The listing must be the helper's closure, or the check below proves nothing.
    for expected in [
        "multipassd-helper",
        "multipass-trust",
        "zbus",
        "x509-parser",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from:\n{tree}"
        );
    }
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(
        found.is_empty(),
        "the helper's dependency closure holds {found:?}:\n{tree}"
    );
    println!(
        "{} crates in the helper's closure, none of {FORBIDDEN:?}",
        names.len()
    );
}
