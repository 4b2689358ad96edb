//! The enrollment-token file (`DATA/enrollment-tokens`: JSON lines, and the tab-separated lines of
//! the first release) is ours, but an administrator may edit it, and a crash or a full disk may
//! cut it short. Reading it must not panic; a token presented by a client (the input's last line)
//! must not panic the redemption; and whatever file was read, a write that adds a token must
//! produce a file that reads back with that token in it and no more records than before plus one.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};
use trust::fsutil::FileMode;
use trust::tokens::{looks_like_token, TokenStatus, TokenStore};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // In memory where possible: every write is fsynced.
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("multipass-fuzz-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch().join("enrollment-tokens");
    std::fs::write(&path, data).expect("write the input");
    let store = TokenStore::new(&path, FileMode::PRIVATE);
    // A fixed instant: the same input always behaves the same.
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid time");

    let candidate =
        String::from_utf8_lossy(data.rsplit(|b| *b == b'\n').next().unwrap_or(b"")).into_owned();
    let _ = looks_like_token(&candidate);

    let Ok(before) = store.list() else {
        return;
    };
    for record in &before {
        let _ = record.status(now);
    }
    let _ = store.redeem(&candidate, Default::default(), now);
    // Rewrite the input: the redemption may have changed the file.
    std::fs::write(&path, data).expect("write the input");
    let Ok((_token, created)) = store.create(Some("fuzz-new"), Duration::minutes(15), Some(0), now)
    else {
        return;
    };
    let after = store
        .list()
        .unwrap_or_else(|e| panic!("the file we wrote does not read back: {e}"));
    assert!(
        after
            .iter()
            .any(|r| r.name == created.name && r.status(now) == TokenStatus::Active),
        "the new token is missing after the write"
    );
    assert!(
        after.len() <= before.len() + 1,
        "records appeared from nowhere"
    );
});
