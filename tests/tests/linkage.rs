//! Starting an executable loads no shared library but libc (multipass-linkage): the dynamic
//! loader maps and relocates each one before `main`, and every `multipass` command pays for it.
//! Checked on the binaries the workspace built, in the file (`readelf`) and as the loader runs
//! them (`LD_DEBUG=libs`).

use std::process::Command;

use multipass_system_tests::bin;

const EXECUTABLES: [&str; 3] = ["multipass", "multipassd", "multipassd-helper"];

/// `readelf OPTION` of `name`: `-d` its dynamic section, one tag a line; `-l` its segments.
fn readelf(option: &str, name: &str) -> String {
    let out = Command::new("readelf")
        .args([option, "-W"])
        .arg(bin(name))
        .output()
        .expect("run readelf (binutils, which the linker comes with)");
    assert!(out.status.success(), "readelf {option} {name}: {out:?}");
    String::from_utf8(out.stdout).expect("readelf prints text")
}

/// Checks that `libraries` (file names, as `source` gave them for `name`) are glibc's C library
/// and its dynamic loader alone. `source` must have named libc, or it was read wrong.
fn assert_libc_alone(name: &str, libraries: &[&str], source: &str) {
    assert!(
        libraries.iter().any(|l| l.starts_with("libc.so.")),
        "{name}: no libc in {source}, so it was read wrong"
    );
    let others: Vec<&&str> = libraries
        .iter()
        .filter(|l| !l.starts_with("libc.so.") && !l.starts_with("ld-linux"))
        .collect();
    assert!(others.is_empty(), "{name} also loads {others:?}: {source}");
}

#[test]
fn each_executable_names_only_libc() {
    for name in EXECUTABLES {
        let dynamic = readelf("-d", name);
        let needed: Vec<&str> = dynamic
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1)?.strip_suffix(']'))
            .collect();
        assert_libc_alone(name, &needed, &dynamic);
    }
}

/// What the linking must not give up: a position-independent executable (its addresses
/// randomised), relocated all at once at start (`BIND_NOW`) and then made read-only (RELRO).
#[test]
fn each_executable_stays_position_independent_with_full_relro() {
    for name in EXECUTABLES {
        let dynamic = readelf("-d", name);
        let flags = dynamic
            .lines()
            .find(|l| l.contains("(FLAGS_1)"))
            .unwrap_or_else(|| panic!("{name} has no FLAGS_1: {dynamic}"));
        assert!(
            flags.contains("PIE") && flags.contains("NOW"),
            "{name}: {flags}"
        );
        let segments = readelf("-l", name);
        assert!(
            segments
                .lines()
                .any(|l| l.trim_start().starts_with("GNU_RELRO")),
            "{name} has no RELRO segment: {segments}"
        );
    }
}

#[test]
fn the_loader_opens_nothing_but_libc_to_start_an_executable() {
    for name in EXECUTABLES {
        let out = Command::new(bin(name))
            .arg("--version")
            .env_clear()
            .env("LD_DEBUG", "libs")
            .output()
            .unwrap_or_else(|e| panic!("run {name} --version: {e}"));
        assert!(out.status.success(), "{name} --version: {out:?}");
        // The loader prints what it looks for and each library whose initialisers it runs.
        let trace = String::from_utf8_lossy(&out.stderr);
        let initialised: Vec<&str> = trace
            .lines()
            .filter_map(|l| l.split("calling init: ").nth(1))
            .map(|path| path.rsplit('/').next().unwrap_or(path))
            .collect();
        assert_libc_alone(name, &initialised, &trace);
    }
}
