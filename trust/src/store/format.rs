//! The file format: PEM `CERTIFICATE` blocks, each preceded by `key: value` metadata lines
//! (RFC 7468 explanatory text) saying who the client is and how it was trusted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;

use rustls_pki_types::CertificateDer;

use crate::pki::Fingerprint;

pub(super) const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
pub(super) const END: &str = "-----END CERTIFICATE-----";
/// The metadata key naming the certificate its metadata belongs to.
const FINGERPRINT_KEY: &str = "fingerprint";
/// What precedes an entry we write, found without parsing: a newline, then its `fingerprint:`
/// line. Where [`parts`] cuts and where [`certificates_at`] stops.
const ENTRY_START: &str = "\nfingerprint:";

/// How a client came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enrolment {
    /// The first admin client on a fresh service.
    FirstClient,
    /// `multipass authenticate` with the passphrase.
    Passphrase,
    /// `multipass authenticate` with a one-time token.
    Token,
    /// An administrator, through the polkit-guarded helper.
    Admin,
    /// Appended to the file by hand (a block without metadata).
    ByHand,
}

impl Enrolment {
    /// The word stored in the file and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Enrolment::FirstClient => "first-client",
            Enrolment::Passphrase => "passphrase",
            Enrolment::Token => "token",
            Enrolment::Admin => "admin",
            Enrolment::ByHand => "by-hand",
        }
    }

    fn parse(word: &str) -> Option<Enrolment> {
        Some(match word {
            "first-client" => Enrolment::FirstClient,
            "passphrase" => Enrolment::Passphrase,
            "token" => Enrolment::Token,
            "admin" => Enrolment::Admin,
            "by-hand" => Enrolment::ByHand,
            _ => return None,
        })
    }
}

impl fmt::Display for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What we know about a trusted client besides its certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// A name for people (defaults to the enrolling user's login name).
    pub name: Option<String>,
    /// Uid of the user whose connection enrolled it.
    pub uid: Option<u32>,
    /// Login name of that user.
    pub user: Option<String>,
    /// How it was trusted; absent means added by hand.
    pub how: Option<Enrolment>,
    /// When, RFC 3339.
    pub when: Option<String>,
}

impl Metadata {
    /// Metadata of a client trusted now, `how`, by a connection of `uid`: its login name looked
    /// up, the time in RFC 3339 (UTC).
    pub fn enrolled_now(name: Option<String>, uid: Option<u32>, how: Enrolment) -> Metadata {
        Metadata {
            name,
            uid,
            user: uid.and_then(crate::access::user_name),
            how: Some(how),
            when: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
        }
    }

    fn apply(&mut self, key: &str, value: &str) -> bool {
        let value = sanitize(value);
        let value = &*value;
        match key {
            "name" => self.name = Some(value.to_string()),
            "uid" => self.uid = value.parse().ok(),
            "user" => self.user = Some(value.to_string()),
            "how" => self.how = Enrolment::parse(value),
            "when" => self.when = Some(value.to_string()),
            _ => return false,
        }
        true
    }

    fn write(&self, out: &mut String) {
        let mut line = |key: &str, value: &str| {
            out.push_str(key);
            out.push_str(": ");
            out.push_str(&sanitize(value));
            out.push('\n');
        };
        if let Some(v) = &self.name {
            line("name", v);
        }
        if let Some(v) = self.uid {
            line("uid", &v.to_string());
        }
        if let Some(v) = &self.user {
            line("user", v);
        }
        if let Some(v) = self.how {
            line("how", v.as_str());
        }
        if let Some(v) = &self.when {
            line("when", v);
        }
    }
}

/// Metadata values are single printable lines of at most 128 characters that cannot be mistaken
/// for a PEM boundary, without the characters names may not hold ([`crate::names`]: controls,
/// bidirectional and other format characters, line and paragraph separators), so that a
/// hand-edited entry cannot make a listing lie either. Applied when reading too, so that what
/// is read is exactly what would be written (found by fuzzing: a control character or an
/// overlong value read from the file was silently changed by the next rewrite; and a single
/// pass turned nine dashes into five).
fn sanitize(value: &str) -> Cow<'_, str> {
    // What nearly every value is: printable ASCII, short, without dashes to collapse.
    let trimmed = trim(value);
    if trimmed.len() <= 128
        && trimmed.bytes().all(|b| (0x20..0x7f).contains(&b))
        && memchr::memmem::find(trimmed.as_bytes(), b"-----").is_none()
    {
        return Cow::Borrowed(trimmed);
    }
    let mut clean: String = value
        .chars()
        .filter(|&c| !crate::names::is_forbidden(c))
        .collect();
    while clean.contains("-----") {
        clean = clean.replace("-----", "-");
    }
    let clean: String = clean.trim().chars().take(128).collect();
    Cow::Owned(clean.trim_end().to_string())
}

/// One trusted certificate.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The certificate, exact DER: the identity.
    pub certificate: CertificateDer<'static>,
    /// Its SHA-256.
    pub fingerprint: Fingerprint,
    /// Who and how.
    pub metadata: Metadata,
}

impl Entry {
    /// An entry for `certificate`.
    pub fn new(certificate: CertificateDer<'static>, metadata: Metadata) -> Entry {
        Entry {
            fingerprint: Fingerprint::of(&certificate),
            certificate,
            metadata,
        }
    }

    /// How it was trusted.
    pub fn enrolment(&self) -> Enrolment {
        self.metadata.how.unwrap_or(Enrolment::ByHand)
    }
}

/// The parsed content of a trust store file.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    entries: Vec<Entry>,
    index: HashMap<Fingerprint, usize>,
    skipped: usize,
    /// Lines outside certificate blocks that are neither blank nor metadata (see
    /// [`Bundle::notes`]).
    notes: usize,
    /// The file held text but no certificate block at all (see [`Bundle::only_text`]).
    only_text: bool,
    /// Set by any change other than adding entries at the end: the file must then be rewritten
    /// rather than appended to.
    pub(super) rewritten: bool,
}

impl Bundle {
    /// Parse a store file. Never fails: text that is not a certificate block or metadata is
    /// skipped (and counted in [`Bundle::skipped`]), as PEM readers do. A large file is parsed in
    /// parts on several threads (see [`parts`]); the result is the same as in one piece.
    pub fn parse(bytes: &[u8]) -> Bundle {
        // Asked only for a file big enough to cut: on Linux the answer reads cgroup files.
        let threads = if bytes.len() >= 2 * MIN_PART {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        Bundle::parse_in_parts(bytes, threads, MIN_PART).with_text_of(bytes)
    }

    /// Sets [`Bundle::only_text`] for the file `bytes` this was parsed from.
    fn with_text_of(mut self, bytes: &[u8]) -> Bundle {
        self.only_text = self.entries.is_empty()
            && self.skipped == 0
            && bytes.iter().any(|b| !b.is_ascii_whitespace());
        self
    }

    /// Whether the file held something, but no certificate block, whole or damaged: zeroed by a
    /// disk fault, overwritten by another file, or only notes. Nobody is trusted then, as with
    /// an empty file, which deserves a warning: the next administrator becomes the first client.
    pub fn only_text(&self) -> bool {
        self.only_text
    }

    /// [`Bundle::parse`] with the number of threads and the smallest part given (tests cut
    /// small texts).
    pub(super) fn parse_in_parts(bytes: &[u8], threads: usize, min_part: usize) -> Bundle {
        let parts = parts(bytes, threads, min_part);
        let parsed: Vec<Parsed> = if parts.len() == 1 {
            vec![parse_part(parts[0])]
        } else {
            // The calling thread parses the first part itself.
            std::thread::scope(|scope| {
                let running: Vec<_> = parts[1..]
                    .iter()
                    .map(|&part| scope.spawn(move || parse_part(part)))
                    .collect();
                let mut parsed = vec![parse_part(parts[0])];
                parsed.extend(
                    running
                        .into_iter()
                        .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
                );
                parsed
            })
        };
        Bundle::from_parsed(parsed)
    }

    /// The parts' entries in order, each certificate once, with their counts added up.
    fn from_parsed(parsed: Vec<Parsed>) -> Bundle {
        let total = parsed.iter().map(|p| p.entries.len()).sum();
        let mut parts = parsed.into_iter();
        // The first part's list grows to hold the others (a large list grows in place, by
        // mremap), rather than every entry being moved into a new one.
        let mut all = parts.next().unwrap_or_default();
        all.entries.reserve(total - all.entries.len());
        for part in parts {
            all.append(part);
        }
        let mut bundle = Bundle {
            entries: all.entries,
            index: HashMap::with_capacity(total),
            skipped: all.skipped,
            notes: all.notes,
            ..Bundle::default()
        };
        let mut repeated = false;
        for (at, entry) in bundle.entries.iter().enumerate() {
            match bundle.index.entry(entry.fingerprint) {
                std::collections::hash_map::Entry::Vacant(place) => {
                    place.insert(at);
                }
                std::collections::hash_map::Entry::Occupied(_) => repeated = true,
            }
        }
        if repeated {
            // A certificate in the file twice (rare): the first is kept, as `insert` keeps it.
            let entries = std::mem::take(&mut bundle.entries);
            bundle.index.clear();
            for entry in entries {
                bundle.insert(entry);
            }
        }
        bundle
    }

    /// [`Bundle::parse`] of what `file` holds, `len` bytes when it was opened. A file large
    /// enough to be parsed in parts is also read in parts, each by the thread that parses it
    /// (`pread`), so that reading it is shared out as parsing is instead of coming first: at
    /// 100,000 entries (75 MB) reading it alone took a third of the time the whole load took
    /// (docs/PERFORMANCE.md). A smaller file is read and parsed in one part.
    pub(super) fn read(file: &File, len: u64) -> io::Result<Bundle> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let threads = if len >= 2 * MIN_PART {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        Bundle::read_in_parts(file, len, threads, MIN_PART)
    }

    /// [`Bundle::read`] with the number of threads and the smallest part given (tests cut small
    /// files).
    ///
    /// Share `k` of `n` is the `k`-th `n`-th of the file's bytes. Its thread reads it, gives
    /// the text before its first `fingerprint:` line (where [`parts`] would cut) to the share
    /// before it, takes the text the share after it gives, and parses its own text followed by
    /// that: the parts parsed are the text between consecutive cuts, each cut just before a
    /// `fingerprint:` line, which is what [`Bundle::parse_in_parts`] relies on for the result to
    /// be the whole parse's. A share without such a line gives all of its text (and what it was
    /// given) to the one before it and parses nothing. A share parses its text up to its own
    /// last cut before it waits for the next share's: the shares' reads end at different times
    /// (7 ms apart at 100,000 entries), and waiting idle for the later one cost more than the
    /// second cut.
    pub(super) fn read_in_parts(
        file: &File,
        len: usize,
        threads: usize,
        min_part: usize,
    ) -> io::Result<Bundle> {
        use std::sync::mpsc;
        let shares = threads.min(len / min_part.max(1)).max(1);
        if shares == 1 {
            // `pread` too, as the shares read: what is read does not depend on the file's offset.
            let bytes = read_range(file, 0, len)?;
            return Ok(Bundle::parse_in_parts(&bytes, 1, min_part).with_text_of(&bytes));
        }
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (1..shares).map(|_| mpsc::channel::<Vec<Vec<u8>>>()).unzip();
        // Share k gives to share k - 1 (`to_previous`) and takes from share k + 1 (`from_next`).
        let mut to_previous: Vec<Option<mpsc::Sender<Vec<Vec<u8>>>>> = vec![None];
        to_previous.extend(senders.into_iter().map(Some));
        let mut from_next: Vec<Option<mpsc::Receiver<Vec<Vec<u8>>>>> =
            receivers.into_iter().map(Some).collect();
        from_next.push(None);
        let shared: Vec<io::Result<Share>> = std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(shares);
            let mut first = None;
            for (k, (to_previous, from_next)) in to_previous.into_iter().zip(from_next).enumerate()
            {
                let (start, end) = (
                    len / shares * k,
                    if k + 1 == shares {
                        len
                    } else {
                        len / shares * (k + 1)
                    },
                );
                let work = move || read_share(file, start, end, to_previous, from_next);
                if k == 0 {
                    first = Some(work);
                } else {
                    handles.push(scope.spawn(work));
                }
            }
            // The calling thread takes the first share itself.
            let mut shared = vec![first.map_or_else(|| Ok(Share::default()), |work| work())];
            shared.extend(
                handles
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
            );
            shared
        });
        // A share that failed makes the one before it fail to get its text: the last failure
        // is the cause, so the results are looked at from the last.
        let mut shared = shared
            .into_iter()
            .rev()
            .collect::<io::Result<Vec<Share>>>()?;
        shared.reverse();
        let text = shared.iter().any(|share| share.text);
        let mut bundle = Bundle::from_parsed(shared.into_iter().map(|s| s.parsed).collect());
        bundle.only_text = bundle.entries.is_empty() && bundle.skipped == 0 && text;
        Ok(bundle)
    }

    /// The file content: each entry's metadata, then its PEM block.
    pub fn to_pem(&self) -> String {
        self.pem_from(0)
    }

    /// The file text of the entries from the `first`-th on.
    pub(super) fn pem_from(&self, first: usize) -> String {
        let mut out = String::with_capacity(self.entries.len().saturating_sub(first) * 800);
        for entry in &self.entries[first.min(self.entries.len())..] {
            // First, so that any metadata line that survives a torn write comes after it.
            out.push_str(FINGERPRINT_KEY);
            out.push_str(": ");
            out.push_str(&entry.fingerprint.to_hex());
            out.push('\n');
            entry.metadata.write(&mut out);
            out.push_str(&crate::pki::certificate_pem(&entry.certificate));
        }
        out
    }

    /// Whether `fingerprint` is trusted.
    pub fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.index.contains_key(fingerprint)
    }

    /// The entry for `fingerprint`.
    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&Entry> {
        self.index.get(fingerprint).map(|&i| &self.entries[i])
    }

    /// Add `entry`; `false` (and nothing changes) if its certificate is already there.
    pub fn insert(&mut self, entry: Entry) -> bool {
        // One lookup, not a look and then an insert: a load makes one per entry.
        match self.index.entry(entry.fingerprint) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(place) => {
                place.insert(self.entries.len());
                self.entries.push(entry);
                true
            }
        }
    }

    /// `base`, or if a client already has that name or it is `reserved`, `base-2`, `base-3`...
    /// the first that is neither; `base` is shortened when the suffix would make a name longer
    /// than names may be.
    pub fn unique_name(&self, base: &str, reserved: &[String]) -> String {
        let taken = |name: &str| {
            reserved.iter().any(|r| r == name)
                || self
                    .entries
                    .iter()
                    .any(|e| e.metadata.name.as_deref() == Some(name))
        };
        if !taken(base) {
            return base.to_string();
        }
        (2..)
            .map(|n| {
                let suffix = format!("-{n}");
                let mut head = crate::names::MAX_NAME_LEN.saturating_sub(suffix.len());
                while !base.is_char_boundary(head.min(base.len())) {
                    head -= 1;
                }
                format!("{}{suffix}", &base[..head.min(base.len())])
            })
            .find(|name| !taken(name))
            .expect("some suffix is free")
    }

    /// Remove the entry for `fingerprint`.
    pub fn remove(&mut self, fingerprint: &Fingerprint) -> Option<Entry> {
        let i = self.index.remove(fingerprint)?;
        self.rewritten = true;
        let entry = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(entry)
    }

    /// How many of the entries were enrolled `how` by a uid for which `user` holds, by the
    /// metadata written when they were trusted (a certificate appended by hand has none).
    pub fn enrolled_by(&self, user: impl Fn(u32) -> bool, how: Enrolment) -> usize {
        self.entries
            .iter()
            .filter(|e| e.metadata.how == Some(how) && e.metadata.uid.is_some_and(&user))
            .count()
    }

    /// Number of trusted certificates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Blocks that were not certificates (damaged or of another PEM type).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// What the bundle reads as once it was written whole ([`Bundle::to_pem`]): nothing
    /// skipped, nothing but certificates and their metadata.
    pub(super) fn as_written(&mut self) {
        self.skipped = 0;
        self.notes = 0;
        self.only_text = false;
    }

    /// How many lines outside certificate blocks were neither blank nor metadata: comments,
    /// or what a tool wrote around the blocks (OpenSSL's `Bag Attributes`). Like damaged blocks
    /// ([`Bundle::skipped`]), they are not in the text a rewrite writes.
    pub fn notes(&self) -> usize {
        self.notes
    }
}

/// Below this many bytes per part a file is parsed on one thread: starting a thread costs more.
const MIN_PART: usize = 1 << 20;

/// The entries, the damaged-block count and the count of other lines of one part of a file.
#[derive(Default)]
struct Parsed {
    entries: Vec<Entry>,
    skipped: usize,
    notes: usize,
}

impl Parsed {
    /// `other`'s entries after these, and its counts added.
    fn append(&mut self, other: Parsed) {
        self.entries.extend(other.entries);
        self.skipped += other.skipped;
        self.notes += other.notes;
    }
}

/// What one thread of [`Bundle::read_in_parts`] parsed, and whether that text held anything but
/// whitespace (asked only when it parsed neither a certificate nor a damaged block).
#[derive(Default)]
struct Share {
    parsed: Parsed,
    text: bool,
}

/// Read bytes `start..end` of `file`, give the text before their first `fingerprint:` line to
/// `to_previous` (all of it, and what `from_next` gives, if there is no such line), and parse
/// the rest followed by what `from_next` gives. See [`Bundle::read_in_parts`].
fn read_share(
    file: &File,
    start: usize,
    end: usize,
    to_previous: Option<std::sync::mpsc::Sender<Vec<Vec<u8>>>>,
    from_next: Option<std::sync::mpsc::Receiver<Vec<Vec<u8>>>>,
) -> io::Result<Share> {
    let not_given = || io::Error::other("the next part of the trust store was not read");
    let mut bytes = read_range(file, start, end)?;
    // Where this share's own text starts: at once for the first, else after its first cut.
    let own = match &to_previous {
        None => Some(0),
        Some(_) => memchr::memmem::find(&bytes, ENTRY_START.as_bytes()).map(|at| at + 1),
    };
    let Some(own) = own else {
        // No `fingerprint:` line of its own: all of it, and what follows, is the previous
        // share's to parse.
        // Passed on as they are, without copying: a store with no such line at all (written by
        // Multipass, or appended by hand) would otherwise be copied once per share.
        let mut chunks = vec![bytes];
        if let Some(from_next) = from_next {
            chunks.extend(from_next.recv().map_err(|_| not_given())?);
        }
        if let Some(to_previous) = to_previous {
            let _ = to_previous.send(chunks);
        }
        return Ok(Share::default());
    };
    if let Some(to_previous) = &to_previous {
        // At once, so that the share before does not wait for this one's parse.
        let _ = to_previous.send(vec![bytes[..own].to_vec()]);
    }
    let mut parsed = Parsed::default();
    let mut rest = own;
    if let Some(from_next) = from_next {
        // What comes before this share's last cut is parsed while the next share reads: only
        // the text after it needs the next share's.
        if let Some(at) = memchr::memmem::rfind(&bytes[own..], ENTRY_START.as_bytes()) {
            rest = own + at + 1;
            parsed = parse_part(&bytes[own..rest]);
        }
        for chunk in from_next.recv().map_err(|_| not_given())? {
            bytes.extend_from_slice(&chunk);
        }
    }
    parsed.append(parse_part(&bytes[rest..]));
    let text = parsed.entries.is_empty()
        && parsed.skipped == 0
        && bytes[own..].iter().any(|b| !b.is_ascii_whitespace());
    Ok(Share { parsed, text })
}

/// Bytes `start..end` of `file` (fewer if it ends before), read with `pread`: threads read their
/// parts of one open file at once without sharing its offset.
fn read_range(file: &File, start: usize, end: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    // Zeroed memory of this size comes from mmap and is not written to here.
    let mut bytes = vec![0u8; end - start];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], (start + filled) as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// `bytes` cut into at most `threads` parts of at least `min_part` bytes, each cut just before a
/// line that starts with `fingerprint:`. Such a line puts the parser in the same state whatever
/// came before it: it ends a block in progress (counted as damaged; cut off at the end of the
/// previous part, it is counted there) and starts new metadata, or, if a boundary is glued to its
/// end, a new block without metadata. So parsing the parts separately and joining them gives
/// what parsing the whole gives. A cut follows a newline, so it never splits a UTF-8 sequence
/// and each part is decoded as the whole would be. A file without such lines is one part.
pub(super) fn parts(bytes: &[u8], threads: usize, min_part: usize) -> Vec<&[u8]> {
    let wanted = threads.min(bytes.len() / min_part.max(1)).max(1);
    let finder = memchr::memmem::Finder::new(ENTRY_START);
    let mut parts = Vec::with_capacity(wanted);
    let mut start = 0;
    for k in 1..wanted {
        let goal = (bytes.len() * k / wanted).max(start);
        match finder.find(&bytes[goal..]) {
            Some(at) => {
                let cut = goal + at + 1;
                parts.push(&bytes[start..cut]);
                start = cut;
            }
            None => break,
        }
    }
    parts.push(&bytes[start..]);
    parts
}

/// How many characters of base64 PEM writers put on a line.
const PEM_LINE: usize = 64;

/// Whether the store file `file` holds `certificate`, found without parsing the whole file:
/// `true` only if [`Bundle::parse`] of the file would trust `fingerprint`. `false` says nothing
/// (a block laid out otherwise is not found this way): ask the whole parse.
///
/// The certificate's whole block is looked for, laid out as PEM writers lay it out whoever
/// appended it: ours, OpenSSL's (so Multipass's) and most others put [`PEM_LINE`] characters of
/// base64 on a line and end lines with a newline alone. Where it is found, the text from its
/// boundary on is parsed, and the parser decides. Sound because a line that ends with the
/// boundary starts a block whatever came before it, and what that block becomes (a certificate,
/// or skipped) depends only on its own lines (see [`parse_part`]): the text from the boundary
/// on, parsed alone, holds only certificates the whole parse holds too. The certificate only
/// says where to look: the answer is whether one with the SHA-256 `fingerprint` was parsed
/// there. The file is read in `chunk`-byte pieces, however large it is.
pub(super) fn holds_certificate(
    file: &std::fs::File,
    certificate: &[u8],
    fingerprint: &Fingerprint,
    chunk: usize,
) -> std::io::Result<bool> {
    let block = crate::pki::certificate_pem(certificate);
    let block = block.as_bytes();
    // Searched for by its boundary and first line (a search for these goes through a large file
    // several times faster than one for the whole block), then compared whole.
    let start = &block[..block.len().min(BEGIN.len() + 1 + PEM_LINE)];
    let finder = memchr::memmem::Finder::new(start);
    // What is kept of a piece for the next: enough for a match cut by its end, too little to hold
    // a whole one, so no match is looked at twice.
    let keep = start.len() - 1;
    let mut buf = vec![0u8; chunk.max(2 * start.len())];
    // `buf[..filled]` is the file from `offset`.
    let (mut offset, mut filled) = (0u64, 0usize);
    loop {
        let (read, eof) = read_at_most(file, &mut buf[filled..], offset + filled as u64)?;
        filled += read;
        for at in finder.find_iter(&buf[..filled]) {
            // As much of the block as this piece holds; a block cut by its end is parsed to tell.
            let here = &buf[at..filled.min(at + block.len())];
            if here == &block[..here.len()]
                && certificates_at(file, offset + at as u64)?.contains(fingerprint)
            {
                return Ok(true);
            }
        }
        if eof {
            return Ok(false);
        }
        let kept = keep.min(filled);
        buf.copy_within(filled - kept..filled, 0);
        offset += (filled - kept) as u64;
        filled = kept;
    }
}

/// How much of the file [`certificates_at`] reads: many times an entry we write (under 2 KiB).
const ENTRY_WINDOW: usize = 16 * 1024;

/// The fingerprints of the certificates in the text of `file` from `offset` (where a block's
/// boundary starts) up to the next line that starts with `fingerprint:`, or to the end of the
/// last whole line within [`ENTRY_WINDOW`]: parsing stops at a line boundary, so each line read
/// is read whole, as the whole parse reads it.
fn certificates_at(file: &std::fs::File, offset: u64) -> std::io::Result<Vec<Fingerprint>> {
    let mut window = vec![0u8; ENTRY_WINDOW];
    let (read, eof) = read_at_most(file, &mut window, offset)?;
    let window = &window[..read];
    let end = match memchr::memmem::find(window, ENTRY_START.as_bytes()) {
        Some(at) => at + 1,
        None if eof => read,
        None => memchr::memrchr(b'\n', window).map_or(0, |at| at + 1),
    };
    Ok(parse_part(&window[..end])
        .entries
        .into_iter()
        .map(|entry| entry.fingerprint)
        .collect())
}

/// Fill `buf` from `offset` of `file`; how much was read, and whether the file ended first.
fn read_at_most(
    file: &std::fs::File,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<(usize, bool)> {
    use std::os::unix::fs::FileExt;
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], offset + read as u64) {
            Ok(0) => return Ok((read, true)),
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((read, false))
}

/// Where the last whole block of `bytes` ends: just after its end boundary's line. `None` when
/// no block ends in it.
pub(super) fn end_of_last_block(bytes: &[u8]) -> Option<usize> {
    let marker = END.as_bytes();
    let at = memchr::memmem::rfind(bytes, marker)?;
    let after = at + marker.len();
    match memchr::memchr(b'\n', &bytes[after..]) {
        Some(newline) => Some(after + newline + 1),
        None => Some(bytes.len()),
    }
}

/// Parse one part of a store file (all of it, for a small file).
fn parse_part(bytes: &[u8]) -> Parsed {
    // Invalid UTF-8 is replaced, as a PEM reader of text would; valid (nearly always) is borrowed.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    // An entry we write takes about 750 bytes; room for as many, so that the list never grows
    // by copying.
    let mut parsed = Parsed {
        entries: Vec::with_capacity(bytes.len() / 700 + 1),
        skipped: 0,
        notes: 0,
    };
    let mut pending = Metadata::default();
    // The `fingerprint:` line that opens the metadata of entries we write: metadata is given
    // only to the certificate it names, so the metadata of a write torn before its certificate
    // is never lent to a certificate appended by hand after it.
    let mut pending_for: Option<&str> = None;
    // The base64 of the block in progress, if any: one buffer for every block.
    let mut in_block = false;
    let mut body = String::with_capacity(1024);
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let line = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        let trimmed = trim(line);
        // A boundary ends any block in progress: a block cut short (an interrupted write)
        // followed by a hand append must not swallow the appended certificate. Text glued
        // before the boundary (the cut block had no final newline) belongs to the cut block.
        if trimmed.ends_with(BEGIN) {
            if in_block {
                parsed.skipped += 1;
                pending = Metadata::default();
                pending_for = None;
            } else if trimmed != BEGIN {
                pending = Metadata::default();
                pending_for = None;
            }
            in_block = true;
            body.clear();
            rest = &rest[take_body(rest, &mut body)..];
            continue;
        }
        // A metadata line also ends a block in progress: base64 has no colon, so the block
        // was cut short and the next writer's metadata belongs to the next certificate.
        if in_block && memchr::memchr(b':', trimmed.as_bytes()).is_some() {
            in_block = false;
            parsed.skipped += 1;
            pending = Metadata::default();
            pending_for = None;
        }
        if !in_block {
            if let Some(colon) = memchr::memchr(b':', trimmed.as_bytes()) {
                let (key, value) = (&trimmed[..colon], &trimmed[colon + 1..]);
                let key = trim(key);
                if key == FINGERPRINT_KEY {
                    // It opens an entry: what came before belongs to a torn write.
                    pending = Metadata::default();
                    pending_for = Some(trim(value));
                } else if !pending.apply(key, value) {
                    parsed.notes += 1;
                }
            } else if !trimmed.is_empty() {
                parsed.notes += 1;
            }
            continue;
        }
        if trimmed != END {
            body.push_str(trimmed);
            continue;
        }
        match decode_certificate(&body) {
            Some(der) => {
                let mut entry = Entry::new(der, std::mem::take(&mut pending));
                if pending_for.is_some_and(|hex| !entry.fingerprint.is_written_as(hex)) {
                    entry.metadata = Metadata::default();
                }
                parsed.entries.push(entry);
            }
            None => parsed.skipped += 1,
        }
        pending = Metadata::default();
        pending_for = None;
        in_block = false;
    }
    if in_block {
        // A block cut short, e.g. by an interrupted `tee -a`.
        parsed.skipped += 1;
    }
    parsed
}

/// The lines of a block's base64 that follow its boundary, taken in one step when the block is
/// whole: up to the first `-` or `:` (base64 has neither), which must then be on the end boundary
/// line. Adds each of those lines, trimmed, to `body` and returns how many bytes of `rest` they
/// took, so that the end boundary comes next; or takes nothing (0), leaving anything else (a
/// block cut short) to be read line by line. Either way the result is the same; this is only
/// faster.
fn take_body(rest: &str, body: &mut String) -> usize {
    let bytes = rest.as_bytes();
    let Some(mark) = memchr::memchr2(b'-', b':', bytes) else {
        return 0;
    };
    let line_start = memchr::memrchr(b'\n', &bytes[..mark]).map_or(0, |at| at + 1);
    let line_end = memchr::memchr(b'\n', &bytes[mark..]).map_or(bytes.len(), |at| mark + at);
    if trim(&rest[line_start..line_end]) != END {
        return 0;
    }
    let mut from = 0;
    for end in memchr::memchr_iter(b'\n', &bytes[..line_start]) {
        body.push_str(trim(&rest[from..end]));
        from = end + 1;
    }
    line_start
}

/// `str::trim`, with a shortcut for the usual text: ASCII spaces around visible ASCII.
fn trim(text: &str) -> &str {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|&c| c != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&c| c != b' ')
        .map_or(start, |at| at + 1);
    let inner = &text[start..end];
    match (inner.as_bytes().first(), inner.as_bytes().last()) {
        (Some(a), Some(z)) if !(a.is_ascii_graphic() && z.is_ascii_graphic()) => inner.trim(),
        _ => inner,
    }
}

/// The DER of a block's base64 (its lines joined, whitespace trimmed), if it is canonical
/// base64 of something. Certificates are public, so a decoder that is not constant-time is fine.
fn decode_certificate(body: &str) -> Option<CertificateDer<'static>> {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()?;
    (!der.is_empty()).then(|| CertificateDer::from(der))
}
