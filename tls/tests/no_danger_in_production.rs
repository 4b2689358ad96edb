//! The test-only way to make a `VerifiedClient` without a handshake is not in what ships: the
//! programs' own dependency graphs, as cargo resolves them for a release build, do not enable
//! the `danger-test-client` feature.

use std::process::Command;

#[test]
fn shipped_programs_cannot_build_a_client_without_a_handshake() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-e", "normal,features"])
        .args([
            "-p",
            "multipassd",
            "-p",
            "multipass-cli",
            "-p",
            "multipassd-helper",
        ])
        .args(["-i", "multipass-tls", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).expect("UTF-8");
    // The graph must be the one asked for, or the check below proves nothing.
    assert!(tree.contains("multipassd v"), "{tree}");
    assert!(
        !tree.contains("danger-test-client"),
        "a shipped program enables danger-test-client:\n{tree}"
    );
}
