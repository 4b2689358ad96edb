use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::format::{BEGIN, END};
use super::*;
use crate::pki::tests::new_certificate;

fn cert() -> (String, CertificateDer<'static>) {
    let (pem, _) = new_certificate();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    (pem, der)
}

fn store(dir: &Path) -> TrustStore {
    TrustStore::new(dir.join("store.pem"), FileMode::PRIVATE)
}

/// A store in `dir` trusting two new certificates, and theirs.
fn two_clients(dir: &Path) -> (TrustStore, CertificateDer<'static>, CertificateDer<'static>) {
    let s = store(dir);
    let (_, a) = cert();
    let (_, b) = cert();
    s.add(Entry::new(a.clone(), Metadata::default())).unwrap();
    s.add(Entry::new(b.clone(), Metadata::default())).unwrap();
    (s, a, b)
}

#[test]
fn empty_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(store(dir.path()).current().unwrap().is_empty());
}

#[test]
fn add_then_trusted_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, der) = cert();
    let meta = Metadata {
        name: Some("alice".into()),
        uid: Some(1000),
        user: Some("alice".into()),
        how: Some(Enrolment::Passphrase),
        when: Some("2026-01-01T00:00:00Z".into()),
    };
    assert!(s.add(Entry::new(der.clone(), meta.clone())).unwrap());
    assert!(!s.add(Entry::new(der.clone(), Metadata::default())).unwrap());
    let fresh = store(dir.path());
    let bundle = fresh.current().unwrap();
    let entry = bundle.get(&Fingerprint::of(&der)).unwrap();
    assert_eq!(entry.metadata, meta);
}

#[test]
fn unique_names_take_the_first_free_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let named = |name: &str| Metadata {
        name: Some(name.into()),
        ..Metadata::default()
    };
    s.modify(|bundle| {
        assert_eq!(bundle.unique_name("alice", &[]), "alice");
        bundle.insert(Entry::new(cert().1, named("alice")));
        bundle.insert(Entry::new(cert().1, named("alice-3")));
        assert_eq!(bundle.unique_name("alice", &[]), "alice-2");
        bundle.insert(Entry::new(cert().1, named("alice-2")));
        assert_eq!(bundle.unique_name("alice", &[]), "alice-4");
        assert_eq!(bundle.unique_name("bob", &[]), "bob");
        // A name kept for a token is taken too.
        let kept = ["bob".to_string(), "bob-2".to_string()];
        assert_eq!(bundle.unique_name("bob", &kept), "bob-3");
        // Never longer than a name may be, even for a base of the longest length.
        let long = "é".repeat(32);
        bundle.insert(Entry::new(cert().1, named(&long)));
        let unique = bundle.unique_name(&long, &[]);
        assert!(unique.len() <= crate::names::MAX_NAME_LEN, "{unique}");
        assert!(unique.ends_with("-2") && long.starts_with(&unique[..unique.len() - 2]));
        true
    })
    .unwrap();
}

#[test]
fn hand_appended_block_is_noticed_and_kept_by_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, first) = cert();
    s.add(Entry::new(first.clone(), Metadata::default()))
        .unwrap();
    assert_eq!(s.current().unwrap().len(), 1);
    // `tee -a`, as the documented recovery does.
    let (pem, by_hand) = cert();
    append_by_hand(s.path(), &pem);
    assert!(s.is_trusted(&Fingerprint::of(&by_hand)).unwrap());
    let (_, third) = cert();
    s.add(Entry::new(third.clone(), Metadata::default()))
        .unwrap();
    let bundle = store(dir.path()).current().unwrap();
    assert_eq!(bundle.len(), 3);
    assert_eq!(
        bundle.get(&Fingerprint::of(&by_hand)).unwrap().enrolment(),
        Enrolment::ByHand
    );
}

#[test]
fn multipass_style_bundle_parses() {
    let (a, da) = cert();
    let (b, db) = cert();
    let text = format!("{a}{b}");
    let bundle = Bundle::parse(text.as_bytes());
    assert_eq!(bundle.len(), 2);
    assert!(bundle.contains(&Fingerprint::of(&da)) && bundle.contains(&Fingerprint::of(&db)));
    // And what we write is still such a bundle for a plain PEM reader.
    let written = bundle.to_pem();
    let plain: Vec<_> = CertificateDer::pem_slice_iter(written.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    assert_eq!(plain, vec![da, db]);
}

#[test]
fn damaged_and_foreign_blocks_are_skipped() {
    let (a, da) = cert();
    let text = format!(
        "junk line\n{BEGIN}\n!!!notbase64\n{END}\n{a}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{BEGIN}\nMIIB"
    );
    let bundle = Bundle::parse(text.as_bytes());
    assert_eq!(bundle.len(), 1);
    assert!(bundle.contains(&Fingerprint::of(&da)));
    assert_eq!(bundle.skipped(), 2);
    // The junk line and the private key's three: text a rewrite would not carry.
    assert_eq!(bundle.notes(), 4);
}

#[test]
fn a_cut_block_does_not_swallow_the_next_one() {
    let (a, da) = cert();
    let (b, db) = cert();
    // An interrupted write, then a hand append: on its own line, or glued to the cut line.
    for cut in [format!("{BEGIN}\nMIIBcut\n"), format!("{BEGIN}\nMIIBcut")] {
        let text = format!("{a}name: torn\n{cut}{b}");
        let bundle = Bundle::parse(text.as_bytes());
        assert!(bundle.contains(&Fingerprint::of(&da)), "{text}");
        assert!(bundle.contains(&Fingerprint::of(&db)), "{text}");
        assert_eq!(bundle.len(), 2);
        assert_eq!(bundle.skipped(), 1);
        // The cut entry's metadata does not stick to the appended certificate.
        assert_eq!(
            bundle.get(&Fingerprint::of(&db)).unwrap().metadata,
            Metadata::default()
        );
    }
}

#[test]
fn a_writer_after_a_writer_sees_a_hand_append_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, first) = cert();
    s.add(Entry::new(first, Metadata::default())).unwrap();
    // The next writer may start from what the first one wrote, but not past a hand append
    // that nobody has read yet.
    let (pem, by_hand) = cert();
    append_by_hand(s.path(), &pem);
    let (_, third) = cert();
    s.add(Entry::new(third, Metadata::default())).unwrap();
    let bundle = store(dir.path()).current().unwrap();
    assert_eq!(bundle.len(), 3);
    assert!(bundle.get(&Fingerprint::of(&by_hand)).is_some());
}

#[test]
fn metadata_of_a_torn_write_is_not_lent_to_a_hand_append() {
    let (_, torn) = cert();
    let torn_fp = Fingerprint::of(&torn);
    let mut written = Bundle::default();
    written.insert(Entry::new(
        torn,
        Metadata {
            name: Some("root".into()),
            uid: Some(0),
            how: Some(Enrolment::FirstClient),
            ..Metadata::default()
        },
    ));
    let text = written.to_pem();
    // Cut after the metadata lines, before the certificate; then an administrator appends
    // a certificate by hand (found by the admission model check).
    let cut = &text[..text.find(BEGIN).unwrap()];
    let (pem, by_hand) = cert();
    let bundle = Bundle::parse(format!("{cut}{pem}").as_bytes());
    assert_eq!(bundle.len(), 1);
    let entry = bundle.get(&Fingerprint::of(&by_hand)).unwrap();
    assert_eq!(entry.metadata, Metadata::default());
    assert_eq!(entry.enrolment(), Enrolment::ByHand);
    // The same cut, then an entry whose own metadata is only its `fingerprint:` line.
    let mut plain = Bundle::default();
    plain.insert(Entry::new(by_hand.clone(), Metadata::default()));
    let bundle = Bundle::parse(format!("{cut}{}", plain.to_pem()).as_bytes());
    assert_eq!(
        bundle.get(&Fingerprint::of(&by_hand)).unwrap().enrolment(),
        Enrolment::ByHand
    );
    // Cut inside the base64 instead, then a whole write: the whole write keeps its metadata.
    let cut = &text[..text.find(END).unwrap() - 10];
    let after = Bundle::parse(format!("{cut}\n{text}").as_bytes());
    assert_eq!(after.len(), 1);
    assert_eq!(after.skipped(), 1);
    assert_eq!(
        after.get(&torn_fp).unwrap().enrolment(),
        Enrolment::FirstClient
    );
    // Metadata without the line (written by hand, or by earlier releases) still applies.
    let legacy = format!("name: laptop\nhow: admin\n{pem}");
    let entry = Bundle::parse(legacy.as_bytes())
        .get(&Fingerprint::of(&by_hand))
        .cloned()
        .unwrap();
    assert_eq!(entry.metadata.name.as_deref(), Some("laptop"));
    assert_eq!(entry.enrolment(), Enrolment::Admin);
}

#[test]
fn additions_are_appended_in_place_and_removals_rewrite() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, a) = cert();
    let (_, b) = cert();
    s.add(Entry::new(a.clone(), Metadata::default())).unwrap();
    let first = std::fs::metadata(s.path()).unwrap();
    let before = std::fs::read_to_string(s.path()).unwrap();
    s.add(Entry::new(b.clone(), Metadata::default())).unwrap();
    let second = std::fs::metadata(s.path()).unwrap();
    assert_eq!(
        first.ino(),
        second.ino(),
        "an addition appends to the same file"
    );
    assert!(std::fs::read_to_string(s.path())
        .unwrap()
        .starts_with(&before));
    assert_eq!(store(dir.path()).current().unwrap().len(), 2);
    s.remove(&Fingerprint::of(&a)).unwrap();
    let third = std::fs::metadata(s.path()).unwrap();
    assert_ne!(second.ino(), third.ino(), "a removal replaces the file");
    let bundle = store(dir.path()).current().unwrap();
    assert_eq!(bundle.len(), 1);
    assert!(bundle.contains(&Fingerprint::of(&b)));
}

#[test]
fn appending_supplies_a_missing_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (a, da) = cert();
    crate::fsutil::write_atomic(s.path(), a.trim_end().as_bytes(), FileMode::PRIVATE).unwrap();
    let (_, db) = cert();
    s.add(Entry::new(db.clone(), Metadata::default())).unwrap();
    let bundle = store(dir.path()).current().unwrap();
    assert!(bundle.contains(&Fingerprint::of(&da)) && bundle.contains(&Fingerprint::of(&db)));
    assert_eq!(bundle.skipped(), 0);
}

#[test]
fn a_store_with_another_mode_is_rewritten_with_ours() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (a, _) = cert();
    // Created by `tee -a` under a 022 umask.
    std::fs::write(s.path(), a).unwrap();
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, db) = cert();
    s.add(Entry::new(db, Metadata::default())).unwrap();
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(store(dir.path()).current().unwrap().len(), 2);
}

#[test]
fn metadata_cannot_inject_a_block() {
    let (_, der) = cert();
    let mut bundle = Bundle::default();
    bundle.insert(Entry::new(
        der,
        Metadata {
            name: Some(format!("x\n{BEGIN}\nAAAA\n{END}")),
            ..Metadata::default()
        },
    ));
    let back = Bundle::parse(bundle.to_pem().as_bytes());
    assert_eq!(back.len(), 1);
    assert_eq!(back.skipped(), 0);
}

#[test]
fn metadata_reads_as_it_would_be_written() {
    let (a, da) = cert();
    let nine = "-".repeat(9);
    let long = "x".repeat(300);
    let text = format!("name: {nine}BEGIN CERTIFICATE{nine}\nuser: a\u{8}b \nwhen: {long}\n{a}");
    let bundle = Bundle::parse(text.as_bytes());
    let meta = &bundle.get(&Fingerprint::of(&da)).unwrap().metadata;
    assert!(!meta.name.as_ref().unwrap().contains("-----"));
    assert_eq!(meta.user.as_deref(), Some("ab"));
    assert_eq!(meta.when.as_ref().unwrap().len(), 128);
    let back = Bundle::parse(bundle.to_pem().as_bytes());
    assert_eq!(back.skipped(), 0);
    assert_eq!(&back.get(&Fingerprint::of(&da)).unwrap().metadata, meta);
    assert_eq!(back.to_pem(), bundle.to_pem());
}

#[test]
fn metadata_drops_bidi_and_separator_characters() {
    let (a, da) = cert();
    let text = format!("name: admin\u{202E}\u{2066}x\u{2028}y\u{FEFF}\nuser: r\u{200F}oot\n{a}");
    let bundle = Bundle::parse(text.as_bytes());
    let meta = &bundle.get(&Fingerprint::of(&da)).unwrap().metadata;
    assert_eq!(meta.name.as_deref(), Some("adminxy"));
    assert_eq!(meta.user.as_deref(), Some("root"));
    assert!(!bundle.to_pem().contains('\u{202E}'));
}

#[test]
fn remove_keeps_others() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_clients(dir.path());
    assert!(s.remove(&Fingerprint::of(&a)).unwrap().is_some());
    assert!(s.remove(&Fingerprint::of(&a)).unwrap().is_none());
    let bundle = store(dir.path()).current().unwrap();
    assert_eq!(bundle.len(), 1);
    assert!(bundle.contains(&Fingerprint::of(&b)));
}

/// The names kept beside `store`'s file because a rewrite dropped text, with their content.
fn kept_versions(s: &TrustStore) -> Vec<String> {
    let prefix = crate::fsutil::aside_prefix(s.path(), "replaced");
    let mut kept: Vec<String> = std::fs::read_dir(s.path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    kept.sort();
    kept
}

#[test]
fn a_rewrite_that_drops_text_keeps_the_version_it_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_clients(dir.path());
    // Plain entries and metadata only: nothing is dropped, nothing kept.
    assert!(s.remove(&Fingerprint::of(&a)).unwrap().is_some());
    assert_eq!(kept_versions(&s), Vec::<String>::new());
    assert_eq!(store(dir.path()).current().unwrap().notes(), 0);
    // An administrator's note and a damaged block, then a removal.
    let (c, dc) = cert();
    let mut text = std::fs::read_to_string(s.path()).unwrap();
    text.push_str(&format!(
        "# added for the build farm\n{c}{BEGIN}\nMIIBcut\n"
    ));
    std::fs::write(s.path(), &text).unwrap();
    assert!(s.remove(&Fingerprint::of(&b)).unwrap().is_some());
    assert_eq!(
        kept_versions(&s),
        vec![text.clone()],
        "the version before, as it was"
    );
    let now = std::fs::read_to_string(s.path()).unwrap();
    assert!(
        !now.contains("build farm") && !now.contains("MIIBcut"),
        "{now}"
    );
    assert!(store(dir.path())
        .current()
        .unwrap()
        .contains(&Fingerprint::of(&dc)));
    // What is rewritten now holds nothing it would drop: the next removal keeps nothing more.
    s.add(Entry::new(a.clone(), Metadata::default())).unwrap();
    assert!(s.remove(&Fingerprint::of(&dc)).unwrap().is_some());
    assert_eq!(kept_versions(&s).len(), 1);
    // At most four kept, the first ones: a file that keeps getting notes adds no more.
    for n in 0..6 {
        let mut text = std::fs::read_to_string(s.path()).unwrap();
        text.push_str(&format!("note {n}\n"));
        let (extra, der) = cert();
        text.push_str(&extra);
        std::fs::write(s.path(), &text).unwrap();
        assert!(s.remove(&Fingerprint::of(&der)).unwrap().is_some());
    }
    let kept = kept_versions(&s);
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept.iter().any(|k| k.contains("note 2")));
    assert!(!kept.iter().any(|k| k.contains("note 3")));
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.pem");
    let certs: Vec<_> = (0..16).map(|_| cert().1).collect();
    std::thread::scope(|scope| {
        for der in &certs {
            let path = path.clone();
            scope.spawn(move || {
                // A store object per writer, as separate processes would have.
                let s = TrustStore::new(path, FileMode::PRIVATE);
                s.add(Entry::new(der.clone(), Metadata::default())).unwrap();
            });
        }
    });
    let bundle = TrustStore::new(path, FileMode::PRIVATE).current().unwrap();
    assert_eq!(bundle.len(), certs.len());
}

/// `cat cert.pem | tee -a STORE`: an append without the writers' lock.
fn append_by_hand(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The text we write for `der`'s entry, named `name`.
fn written_entry(der: &CertificateDer<'static>, name: &str) -> String {
    let mut bundle = Bundle::default();
    bundle.insert(Entry::new(
        der.clone(),
        Metadata {
            name: Some(name.into()),
            uid: Some(1000),
            how: Some(Enrolment::Token),
            ..Metadata::default()
        },
    ));
    bundle.to_pem()
}

/// A store file with every kind of text the parser meets: entries we wrote, a torn write, a
/// damaged block, a hand append, a duplicate, a boundary glued to a `fingerprint:` line, and
/// metadata that is not UTF-8. Also the certificate appended by hand and the one whose write was
/// torn (its `fingerprint:` line is there, its block is not whole).
fn awkward_store() -> (Vec<u8>, CertificateDer<'static>, CertificateDer<'static>) {
    let written = |meta_name: &str| {
        let der = cert().1;
        (written_entry(&der, meta_name), der)
    };
    let (by_hand, by_hand_der) = cert();
    let first = written("first").0;
    let (torn, torn_der) = {
        let (text, der) = written("torn");
        (text[..text.len() / 2].to_string(), der)
    };
    let text = [
        first.clone(),
        written("second").0,
        torn,
        by_hand.clone(),
        format!("fingerprint: 00\nname: no certificate\n{BEGIN}\n!!!\n{END}\n"),
        written("third").0,
        first,
        written("fourth").0,
        format!("name: lent?\n{by_hand}"),
        written("fifth").0,
        // A boundary glued to a `fingerprint:` line, its block cut short.
        format!("fingerprint: 00{BEGIN}\nMIIB\n"),
        written("sixth").0,
    ]
    .concat();
    // And a metadata value that is not UTF-8.
    let mut bytes = text.clone().into_bytes();
    bytes.extend_from_slice(b"fingerprint: 00\nname: caf\xe9\n");
    bytes.extend_from_slice(written("seventh").0.as_bytes());
    (bytes, by_hand_der, torn_der)
}

/// Each entry's identity and metadata, in order.
fn entries_of(bundle: &Bundle) -> Vec<(Fingerprint, Metadata)> {
    bundle
        .iter()
        .map(|e| (e.fingerprint, e.metadata.clone()))
        .collect()
}

/// Panics unless `read` holds what `whole` holds: its entries, and what it skipped and noted.
fn assert_read_as_parsed(read: &Bundle, whole: &Bundle, case: &str) {
    assert_eq!(entries_of(read), entries_of(whole), "{case}");
    assert_eq!(read.skipped(), whole.skipped(), "{case}");
    assert_eq!(read.notes(), whole.notes(), "{case}");
    assert_eq!(read.only_text(), whole.only_text(), "{case}");
}

/// A seed from the clock and a generator of numbers below its argument drawn from it.
fn seeded_random() -> (u64, impl FnMut(usize) -> usize) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut state = seed;
    let next = move |below: usize| {
        // xorshift64: enough to spread the cases; the seed is in every failure message.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    (seed, next)
}

/// Parsing in parts, as large files are, gives what parsing in one piece gives, wherever the
/// cuts fall: written entries, a torn write, a damaged block, a hand append, a duplicate.
#[test]
fn parsing_in_parts_gives_the_same_bundle() {
    let (bytes, _, _) = awkward_store();
    let whole = Bundle::parse_in_parts(&bytes, 1, 1);
    assert_eq!(whole.len(), 8);
    assert_eq!(whole.skipped(), 3);
    for threads in 2..=16 {
        let cut = Bundle::parse_in_parts(&bytes, threads, 1);
        assert_eq!(cut.skipped(), whole.skipped(), "{threads} parts");
        assert_eq!(cut.notes(), whole.notes(), "{threads} parts");
        assert_eq!(entries_of(&cut), entries_of(&whole), "{threads} parts");
    }
    assert!(super::format::parts(&bytes, 6, 1).len() > 1, "never cut");
}

/// Reading a large file in parts, each part read by the thread that parses it, gives what
/// reading and parsing it whole gives, wherever the parts' boundaries fall (many counts of
/// parts, so boundaries inside `fingerprint:` lines, blocks and metadata), for stores with
/// entries, without any `fingerprint:` line (certificates appended by hand), holding only
/// notes, only blanks, or nothing.
#[test]
fn reading_in_parts_gives_the_same_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (awkward, _, _) = awkward_store();
    let (by_hand, _) = cert();
    let stores: Vec<(&str, Vec<u8>)> = vec![
        ("awkward", awkward),
        (
            "by hand only",
            format!("{by_hand}{by_hand}\nnote\n{by_hand}").into_bytes(),
        ),
        (
            "notes only",
            b"some text\nfingerprint: 00\nmore text\n".to_vec(),
        ),
        ("blanks only", b"\n  \n\t\n".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in stores {
        let path = dir.path().join("store.pem");
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let whole = Bundle::parse(&bytes);
        for threads in 1..=40 {
            let read = Bundle::read_in_parts(&file, bytes.len(), threads, 1).unwrap();
            assert_read_as_parsed(&read, &whole, &format!("{what}, {threads} parts"));
        }
    }
    // The awkward store is parsed as a large one is: its entries, damaged blocks and notes.
    let (awkward, _, _) = awkward_store();
    assert_eq!(Bundle::parse(&awkward).len(), 8);
    assert!(Bundle::parse(b"some text\n").only_text());
}

/// Random stores of the pieces a store is made of (entries we wrote, hand appends, blocks cut
/// short or with a character changed, lone `fingerprint:` and metadata lines, CRLF, bytes that
/// are not UTF-8, pieces glued together) read in 2 to 9 parts give what the whole parse gives.
#[test]
fn random_stores_read_in_parts_as_parsed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.pem");
    let certs: Vec<(String, CertificateDer<'static>)> = (0..4).map(|_| cert()).collect();
    let (seed, mut next) = seeded_random();
    for round in 0..300 {
        let mut bytes: Vec<u8> = Vec::new();
        for _ in 0..1 + next(12) {
            let (pem, der) = &certs[next(certs.len())];
            let piece: Vec<u8> = match next(10) {
                0 | 1 => written_entry(der, &format!("n{round}")).into_bytes(),
                2 => pem.clone().into_bytes(),
                3 => pem.as_bytes()[..next(pem.len())].to_vec(),
                4 => format!("fingerprint: {}\n", Fingerprint::of(der).to_hex()).into_bytes(),
                5 => b"name: someone\nnot metadata\n".to_vec(),
                6 => pem.replace('\n', "\r\n").into_bytes(),
                7 => {
                    let mut bytes = pem.clone().into_bytes();
                    let at = BEGIN.len() + 1 + next(64);
                    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                    bytes
                }
                8 => b"name: caf\xe9\n\xff\xfe\n".to_vec(),
                _ => b" \n\n".to_vec(),
            };
            bytes.extend_from_slice(&piece);
            if next(4) == 0 {
                // Glue the next piece to this one's last line.
                while bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let whole = Bundle::parse(&bytes);
        for threads in 2..=9 {
            let read = Bundle::read_in_parts(&file, bytes.len(), threads, 1).unwrap();
            let case = format!(
                "seed {seed}, round {round}, {threads} parts:\n{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_read_as_parsed(&read, &whole, &case);
        }
    }
}

/// A certificate found by its block is one the whole parse trusts, in pieces of any size: those
/// we wrote, one appended by hand, one after a line naming another, one glued to a line before
/// it. A block laid out otherwise (CRLF, 76 columns) is left to the whole parse, but for the
/// one case below; a torn block, and a certificate that is not there, find nothing.
#[test]
fn a_certificate_found_by_its_block_is_one_the_whole_parse_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, by_hand, torn) = awkward_store();
    let (named, _) = cert();
    let (_, absent) = cert();
    let (glued, _) = cert();
    let (_, wide_der) = cert();
    let (_, crlf_der) = cert();
    let laid_out = |der: &CertificateDer<'_>, width: usize, line_ending: pem::LineEnding| {
        pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der.to_vec()),
            pem::EncodeConfig::new()
                .set_line_wrap(width)
                .set_line_ending(line_ending),
        )
    };
    bytes.extend_from_slice(
        [
            // A line naming a certificate that is not there, before another one's block.
            format!(
                "fingerprint: {}\n{named}",
                Fingerprint::of(&absent).to_hex()
            ),
            format!("name: glued to the boundary{glued}"),
            laid_out(&wide_der, 76, pem::LineEnding::LF),
            laid_out(&crlf_der, 64, pem::LineEnding::CRLF),
        ]
        .concat()
        .as_bytes(),
    );
    let path = dir.path().join("store.pem");
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();

    let whole = Bundle::parse(&bytes);
    assert_eq!(whole.len(), 12);
    let (wide, crlf) = (Fingerprint::of(&wide_der), Fingerprint::of(&crlf_der));
    assert!(bytes.len() < 64 * 1024);
    for chunk in (150..=450).step_by(7).chain([4096, 64 * 1024]) {
        for entry in whole.iter() {
            let found = super::format::holds_certificate(
                &file,
                &entry.certificate,
                &entry.fingerprint,
                chunk,
            );
            let expected = if entry.fingerprint == crlf {
                Some(false)
            } else if entry.fingerprint == wide {
                // Its first line is as ours: where a piece ends right after it, the block is
                // parsed to tell, and found (soundly). In one piece it is compared, and is not.
                (chunk == 64 * 1024).then_some(false)
            } else {
                Some(true)
            };
            if let Some(expected) = expected {
                assert_eq!(
                    found.unwrap(),
                    expected,
                    "{:?}, pieces of {chunk}",
                    entry.metadata
                );
            }
        }
        for missing in [&torn, &absent] {
            let fingerprint = Fingerprint::of(missing);
            assert!(!whole.contains(&fingerprint));
            let found = super::format::holds_certificate(&file, missing, &fingerprint, chunk);
            assert!(!found.unwrap(), "pieces of {chunk}");
        }
        // The certificate only says where to look: the answer is about the fingerprint.
        let found =
            super::format::holds_certificate(&file, &by_hand, &Fingerprint::of(&absent), chunk);
        assert!(!found.unwrap(), "pieces of {chunk}");
    }
}

/// While another thread reads the store, a client whose block is found (written by us or
/// appended by hand) is answered from it; anybody else waits for the whole store, which answers
/// the same.
#[test]
fn presence_answers_from_the_entry_only_while_the_store_is_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (_, written) = cert();
    let (by_hand_pem, by_hand) = cert();
    let (_, stranger) = cert();
    let presence = |der: &CertificateDer<'_>| store.presence(der, &Fingerprint::of(der)).unwrap();
    store
        .add(Entry::new(written.clone(), Metadata::default()))
        .unwrap();
    append_by_hand(store.path(), &by_hand_pem);
    let answer = |trusted, whole| Presence {
        trusted,
        empty: false,
        whole,
    };

    for reading in [false, true] {
        store.reading.store(reading, Ordering::Release);
        assert_eq!(presence(&written), answer(true, !reading));
        assert_eq!(presence(&by_hand), answer(true, !reading));
        assert_eq!(presence(&stranger), answer(false, true));
    }
    // The flag is the reader's: a whole read clears it.
    store.reading.store(true, Ordering::Release);
    std::fs::write(store.path(), "").unwrap();
    assert_eq!(
        presence(&written),
        Presence {
            trusted: false,
            empty: true,
            whole: true
        }
    );
    assert!(!store.reading.load(Ordering::Acquire));
}

/// A read announced for later makes requests look in the file until a read ends; once the store
/// has been read, announcing does nothing.
#[test]
fn presence_looks_in_the_file_until_an_announced_read_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (by_hand_pem, by_hand) = cert();
    let (_, stranger) = cert();
    let store = store(dir.path());
    std::fs::write(store.path(), by_hand_pem).unwrap();
    let presence = |der: &CertificateDer<'_>| store.presence(der, &Fingerprint::of(der)).unwrap();

    store.read_later();
    assert_eq!(
        presence(&by_hand),
        Presence {
            trusted: true,
            empty: false,
            whole: false
        }
    );
    assert!(
        !store.cache.lock().unwrap().loaded,
        "answered from the file without reading it whole"
    );
    // A client not found there makes the whole read, which ends the announcement.
    assert_eq!(
        presence(&stranger),
        Presence {
            trusted: false,
            empty: false,
            whole: true
        }
    );
    assert!(!store.reading.load(Ordering::Acquire));
    store.read_later();
    assert!(!store.reading.load(Ordering::Acquire), "read already");
    assert!(presence(&by_hand).whole);
}

/// Random stores made of the pieces the parser meets (entries we write, hand appends, torn and
/// damaged blocks, boundaries glued to other text, lone `fingerprint:` and metadata lines, CRLF,
/// blank lines), searched in pieces of random sizes: whatever the lookup finds, the whole parse
/// trusts, whichever certificate is asked about under whichever fingerprint; and a block laid
/// out as we write it is always found.
#[test]
fn the_lookup_finds_only_what_the_whole_parse_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.pem");
    let certs: Vec<(String, CertificateDer<'static>)> = (0..5).map(|_| cert()).collect();
    let (seed, mut next) = seeded_random();
    for round in 0..400 {
        let mut text = String::new();
        for _ in 0..1 + next(10) {
            let (pem, der) = &certs[next(certs.len())];
            let piece = match next(9) {
                0 | 1 => written_entry(der, &format!("n{round}")),
                2 => pem.clone(),
                3 => pem[..next(pem.len())].to_string(),
                4 => format!("fingerprint: {}\n", Fingerprint::of(der).to_hex()),
                5 => "name: someone\n".to_string(),
                6 => pem.replace('\n', "\r\n"),
                7 => {
                    // One character of the base64 changed.
                    let mut bytes = pem.clone().into_bytes();
                    let at = BEGIN.len() + 1 + next(64);
                    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                    String::from_utf8(bytes).unwrap()
                }
                _ => " \n\n".to_string(),
            };
            text.push_str(&piece);
            if next(4) == 0 {
                // Glue the next piece to this one's last line.
                while text.ends_with('\n') {
                    text.pop();
                }
            }
        }
        std::fs::write(&path, &text).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let whole = Bundle::parse(text.as_bytes());
        for (_, der) in &certs {
            for (_, asked) in &certs {
                let fingerprint = Fingerprint::of(asked);
                let chunk = 64 + next(4096);
                let found =
                    super::format::holds_certificate(&file, der, &fingerprint, chunk).unwrap();
                let context = format!("seed {seed}, round {round}, pieces of {chunk}:\n{text}");
                if found {
                    assert!(
                        whole.contains(&fingerprint),
                        "found, not trusted; {context}"
                    );
                }
                if der == asked && text.contains(&crate::pki::certificate_pem(der)) {
                    assert!(found, "laid out as we write it, not found; {context}");
                }
            }
        }
    }
}

#[test]
fn a_file_of_text_without_certificates_is_told_from_an_empty_one() {
    assert!(!Bundle::parse(b"").only_text());
    assert!(!Bundle::parse(b" \n\n").only_text());
    assert!(Bundle::parse(&[0u8; 512]).only_text());
    assert!(Bundle::parse(b"name: alice\n").only_text());
    let zeroed = Bundle::parse(&[0u8; 512]);
    assert!(zeroed.is_empty(), "nobody is trusted");
}

/// A hand append (`tee -a`) opens the file when it starts and may write seconds later: a removal
/// that replaces the file meanwhile would leave its certificate in the old file, where nobody
/// reads, although the append succeeded. The next read of the store carries it over.
#[test]
fn a_hand_append_into_a_file_a_removal_replaced_is_carried_over() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_clients(dir.path());
    // `tee -a` starts: the file is opened before the certificate is at hand.
    let mut tee = std::fs::OpenOptions::new()
        .append(true)
        .open(s.path())
        .unwrap();
    assert!(s.remove(&Fingerprint::of(&b)).unwrap().is_some());
    let (late_pem, late) = cert();
    // Half of it first: nothing is taken until its block ends.
    let (first, rest) = late_pem.split_at(late_pem.len() / 2);
    tee.write_all(first.as_bytes()).unwrap();
    assert!(!s.current().unwrap().contains(&Fingerprint::of(&late)));
    tee.write_all(rest.as_bytes()).unwrap();
    let now = s.current().unwrap();
    assert!(now.contains(&Fingerprint::of(&late)), "carried over");
    assert!(now.contains(&Fingerprint::of(&a)));
    assert!(!now.contains(&Fingerprint::of(&b)), "the removal stands");
    // In the file, for every reader, and once only.
    let on_disk = Bundle::parse(&std::fs::read(s.path()).unwrap());
    assert!(on_disk.contains(&Fingerprint::of(&late)));
    assert_eq!(on_disk.len(), 2);
    s.current().unwrap();
    assert_eq!(Bundle::parse(&std::fs::read(s.path()).unwrap()).len(), 2);
}

/// A store of `mode`, a certificate appended by hand through a handle opened before a removal
/// replaced the file and written after it: whether the store then trusts it, and the mode of
/// the file the removal wrote.
fn late_append_into_a_version_of_mode(mode: u32) -> (bool, u32) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (s, _, b) = two_clients(dir.path());
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    let mut held = std::fs::OpenOptions::new()
        .append(true)
        .open(s.path())
        .unwrap();
    assert!(s.remove(&Fingerprint::of(&b)).unwrap().is_some());
    let (late_pem, late) = cert();
    held.write_all(late_pem.as_bytes()).unwrap();
    let carried = s.current().unwrap().contains(&Fingerprint::of(&late));
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
    (carried, mode)
}

/// A version that others could write (a store made by hand under a lax umask) could have been
/// opened by anyone: what is written into it after the rewrite goes nowhere.
#[test]
fn a_replaced_file_that_others_could_write_is_not_carried_over() {
    let (carried, mode) = late_append_into_a_version_of_mode(0o664);
    assert!(!carried);
    assert_eq!(mode, 0o600, "the rewrite put the mode right");
}

/// A version that only its owner could write (`tee -a` into a missing store makes it 0644 under
/// the usual umask) is kept: what its owner appends to it late is carried over.
#[test]
fn a_late_append_into_a_version_only_its_owner_could_write_is_carried_over() {
    let (carried, mode) = late_append_into_a_version_of_mode(0o644);
    assert!(carried);
    assert_eq!(mode, 0o600, "the rewrite put the mode right");
}

/// A change that changes nothing (a trusted client authenticating again, a removal of nobody)
/// keeps the cached content as it is: a `trust list` sent in pages of it goes on.
#[test]
fn a_change_of_nothing_keeps_the_cached_content() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, _) = two_clients(dir.path());
    let before = s.current().unwrap();
    assert!(!s.add(Entry::new(a.clone(), Metadata::default())).unwrap());
    assert!(s.remove(&Fingerprint::of(b"nobody")).unwrap().is_none());
    assert!(Arc::ptr_eq(&before, &s.current().unwrap()));
    assert!(Arc::ptr_eq(&before, &s.current_if_unchanged().unwrap()));
}

/// A long run of the ways the file changes (this store's writes, another process's writes
/// through a store of its own, appends by hand whole or torn, an editor replacing the file, the
/// file truncated or removed), in an order drawn from a seeded generator: after each, what the
/// store answers from its cache (`current`, `presence`) is what a fresh parse of the file says.
/// The cache is what every request reads; a stale answer would trust a removed client.
#[test]
fn the_cache_answers_what_a_fresh_parse_of_the_file_says() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let daemon = store(dir.path());
    let helper = store(dir.path());
    let path = daemon.path().to_path_buf();
    let certs: Vec<(String, CertificateDer<'static>)> = (0..6).map(|_| cert()).collect();
    let seed: u64 = std::env::var("STORE_SEQUENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut state = seed;
    let mut next = move |n: usize| {
        // xorshift64*: reproducible from the seed printed on failure.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let append = |text: &[u8]| {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        file.write_all(text).unwrap();
    };
    let mut done = Vec::new();
    for step in 0..1500 {
        let (pem, der) = &certs[next(certs.len())];
        let fingerprint = Fingerprint::of(der);
        let op = next(11);
        match op {
            0 | 1 => {
                daemon
                    .add(Entry::new(der.clone(), Metadata::default()))
                    .unwrap();
            }
            2 => {
                daemon.remove(&fingerprint).unwrap();
            }
            3 => {
                helper
                    .add(Entry::new(der.clone(), Metadata::default()))
                    .unwrap();
            }
            4 => {
                helper.remove(&fingerprint).unwrap();
            }
            5 => append(pem.as_bytes()),
            6 => append(&pem.as_bytes()[..pem.len() / 2]),
            7 => {
                // An editor: the file rewritten whole under another name, with its mode, then
                // renamed.
                let kept: Bundle = Bundle::parse(&std::fs::read(&path).unwrap_or_default());
                let mut text = String::new();
                for entry in kept.iter().filter(|e| e.fingerprint != fingerprint) {
                    let mut one = Bundle::default();
                    one.insert(entry.clone());
                    text.push_str(&one.to_pem());
                }
                let temporary = dir.path().join("store.pem.edited");
                std::fs::write(&temporary, text).unwrap();
                std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                std::fs::rename(&temporary, &path).unwrap();
            }
            8 => {
                std::fs::File::create(&path).unwrap();
            }
            9 => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {
                // `tee -a` opened the file before this store's removal replaced it, and writes
                // after: the store carries the append over into the file it reads.
                let late = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .unwrap();
                let (_, other) = &certs[next(certs.len())];
                daemon
                    .add(Entry::new(other.clone(), Metadata::default()))
                    .unwrap();
                daemon.remove(&Fingerprint::of(other)).unwrap();
                (&late).write_all(pem.as_bytes()).unwrap();
            }
        }
        done.push(op);
        // This store first: reading it carries a late append over into the file.
        daemon.current().unwrap();
        let fresh = Bundle::parse(&std::fs::read(&path).unwrap_or_default());
        let why = || format!("seed {seed}, step {step}, operations so far {done:?}");
        if op == 10 {
            assert!(fresh.contains(&fingerprint), "late append lost: {}", why());
        }
        for s in [&daemon, &helper] {
            let cached = s.current().unwrap();
            let cached_set: Vec<_> = cached.iter().map(|e| e.fingerprint).collect();
            let fresh_set: Vec<_> = fresh.iter().map(|e| e.fingerprint).collect();
            assert_eq!(cached_set, fresh_set, "{}", why());
            for (_, der) in &certs {
                let presence = s.presence(der, &Fingerprint::of(der)).unwrap();
                assert_eq!(
                    (presence.trusted, presence.empty),
                    (fresh.contains(&Fingerprint::of(der)), fresh.is_empty()),
                    "{}",
                    why()
                );
            }
        }
    }
}
