//! The paragraphs of `debian/copyright` that name the crates compiled into the packaged
//! binaries, from `cargo metadata` and the crates' own licence files.
//!
//! The binaries link every Rust crate they use statically, so the packages distribute those
//! crates' object code and their copyright file must name each one with its licence. The list
//! follows `Cargo.lock`; the test at the end fails when the file no longer matches it, and
//! rewrites it when run with `MULTIPASS_UPDATE_COPYRIGHT=1`:
//!
//! ```text
//! MULTIPASS_UPDATE_COPYRIGHT=1 cargo test -p multipass-docgen debian_copyright
//! ```
//!
//! Only the crates' paragraphs are generated; the header, the project's own paragraph and the
//! licence texts are written by hand in the file, and the test checks that every licence a crate
//! names has its text there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The packages whose binaries the Debian packages ship.
const PACKAGED: [&str; 3] = ["multipass-cli", "multipassd", "multipassd-helper"];

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    resolve: Resolve,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    license: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    /// `None` for the workspace's own packages.
    source: Option<String>,
    manifest_path: String,
    targets: Vec<Target>,
}

impl Package {
    /// A procedural macro runs in the compiler: neither it nor what only it uses is linked.
    fn is_proc_macro(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.kind.iter().any(|k| k == "proc-macro"))
    }
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    /// `None` for a normal dependency, `"build"` or `"dev"` otherwise.
    kind: Option<String>,
}

/// `cargo metadata` for Linux on x86-64 (the dependencies of other targets are never linked),
/// without the network: the crates must already be fetched, as a build fetches them.
fn metadata(workspace: &Path) -> anyhow::Result<Metadata> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(workspace)
        .output()
        .context("cannot run cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("cannot read cargo metadata's output")
}

/// The crates from a registry that the packaged binaries link: reached from them through
/// normal dependencies (build scripts' and tests' dependencies are not in the binaries), not
/// through a procedural macro.
fn linked(meta: &Metadata) -> Vec<&Package> {
    let by_id: HashMap<&str, &Package> = meta.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    let nodes: HashMap<&str, &Node> = meta
        .resolve
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut next: Vec<&str> = meta
        .packages
        .iter()
        .filter(|p| PACKAGED.contains(&p.name.as_str()))
        .map(|p| p.id.as_str())
        .collect();
    while let Some(id) = next.pop() {
        if by_id.get(id).is_some_and(|p| p.is_proc_macro()) || !seen.insert(id) {
            continue;
        }
        for dep in nodes.get(id).map(|n| n.deps.as_slice()).unwrap_or_default() {
            if dep.dep_kinds.iter().any(|k| k.kind.is_none()) {
                next.push(&dep.pkg);
            }
        }
    }
    let mut crates: Vec<&Package> = seen
        .into_iter()
        .filter_map(|id| by_id.get(id).copied())
        .filter(|p| p.source.is_some())
        .collect();
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    crates
}

/// The crates' paragraphs, in the order of their names.
fn paragraphs(meta: &Metadata) -> anyhow::Result<String> {
    let mut out = String::new();
    for krate in linked(meta) {
        let spdx = krate
            .license
            .as_deref()
            .with_context(|| format!("{} {} names no SPDX licence", krate.name, krate.version))?;
        let dir = Path::new(&krate.manifest_path)
            .parent()
            .context("a manifest path without a directory")?;
        let mut holders = holders_in(dir);
        if holders.is_empty() {
            holders = krate
                .authors
                .iter()
                .map(|a| without_email(a).to_string())
                .filter(|a| !a.is_empty())
                .collect();
        }
        if holders.is_empty() {
            holders.push(format!("the {} developers", krate.name));
        }
        out.push_str(&format!(
            "\nFiles: registry/src/*/{}-{}/*\nCopyright: {}\nLicense: {}\n",
            krate.name,
            krate.version,
            holders.join("\n "),
            dep5_license(spdx)
        ));
    }
    Ok(out)
}

/// `Jane Doe <jane@example.org>` as `Jane Doe`: the copyright holder, without an address that
/// is often no longer read.
fn without_email(author: &str) -> &str {
    author.split('<').next().unwrap_or_default().trim()
}

/// The copyright lines of a crate's licence and notice files (`Copyright (c) 2014 The Rust
/// Project Developers` as `2014 The Rust Project Developers`), without a licence template's
/// placeholders.
fn holders_in(dir: &Path) -> Vec<String> {
    const FILES: [&str; 5] = ["LICENSE", "LICENCE", "COPYING", "COPYRIGHT", "NOTICE"];
    const PLACEHOLDERS: [&str; 8] = [
        "[yyyy]",
        "{yyyy}",
        "<year>",
        "[year]",
        "{year}",
        "[fullname]",
        "<owner>",
        "<name",
    ];
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_uppercase();
            FILES.iter().any(|f| name.starts_with(f)) && e.path().is_file()
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut lines: Vec<String> = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let lower = line.to_lowercase();
            let names_holder = lower.starts_with("copyright ")
                && (lower.contains("(c)")
                    || lower.contains('©')
                    || line
                        .split_whitespace()
                        .nth(1)
                        .is_some_and(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit())));
            if !names_holder || PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
                continue;
            }
            // The field's convention: years and holders, without the word and the sign.
            let mut holder = line["copyright".len()..].trim_start();
            for sign in ["(c)", "(C)", "©"] {
                holder = holder.trim_start_matches(sign).trim_start();
            }
            if !lines.iter().any(|l| l == holder) {
                lines.push(holder.to_string());
            }
        }
    }
    lines
}

/// An SPDX expression as the copyright format writes it: `or` and `and` in lower case, `and`
/// binding tighter and a comma for a lower precedence (`(MIT OR Apache-2.0) AND Unicode-3.0` is
/// `MIT or Apache-2.0, and Unicode-3.0`), an exception as `with ... exception`, and the old
/// `MIT/Apache-2.0` of some crates as `or`.
fn dep5_license(spdx: &str) -> String {
    let spdx = spdx.replace('/', " OR ");
    let parts = split_top(&spdx, " AND ");
    let nested = parts.len() > 1 && parts.iter().any(|p| p.contains(" OR "));
    let parts: Vec<String> = parts
        .iter()
        .map(|p| {
            let p = p.trim().trim_start_matches('(').trim_end_matches(')');
            p.split(" OR ")
                .map(|name| match name.trim().split_once(" WITH ") {
                    Some((name, exception)) => format!(
                        "{name} with {} exception",
                        exception.trim_end_matches("-exception")
                    ),
                    None => name.trim().to_string(),
                })
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .collect();
    parts.join(if nested { ", and " } else { " and " })
}

/// `text` cut at `sep` where no parenthesis is open.
fn split_top<'a>(text: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let (mut depth, mut start, mut i) = (0i32, 0, 0);
    while i < text.len() {
        match text.as_bytes()[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ if depth == 0 && text[i..].starts_with(sep) => {
                parts.push(&text[start..i]);
                i += sep.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

/// The licence names a `License:` field of the copyright format names.
fn license_names(field: &str) -> Vec<&str> {
    field
        .split(", and ")
        .flat_map(|p| p.split(" or "))
        .flat_map(|p| p.split(" and "))
        .map(str::trim)
        .collect()
}

/// `debian/copyright` cut into its paragraphs: the header and the project's own, the crates',
/// and the licence texts, by field name.
fn split_file(text: &str) -> (Vec<&str>, Vec<&str>, BTreeMap<&str, &str>) {
    let mut head = Vec::new();
    let mut crates = Vec::new();
    let mut licenses = BTreeMap::new();
    for paragraph in text
        .split("\n\n")
        .map(|p| p.trim_start_matches('\n'))
        .filter(|p| !p.trim().is_empty())
    {
        let first = paragraph.lines().next().unwrap_or_default();
        if let Some(name) = first.strip_prefix("License: ") {
            licenses.insert(name.trim(), paragraph);
        } else if first.starts_with("Files: registry/") {
            crates.push(paragraph);
        } else {
            head.push(paragraph);
        }
    }
    (head, crates, licenses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdx_expressions_in_the_copyright_format() {
        for (spdx, dep5) in [
            ("MIT", "MIT"),
            ("MIT OR Apache-2.0", "MIT or Apache-2.0"),
            ("MIT/Apache-2.0", "MIT or Apache-2.0"),
            ("Apache-2.0 / MIT", "Apache-2.0 or MIT"),
            ("Apache-2.0 AND ISC", "Apache-2.0 and ISC"),
            (
                "(MIT OR Apache-2.0) AND Unicode-3.0",
                "MIT or Apache-2.0, and Unicode-3.0",
            ),
            (
                "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT",
                "Apache-2.0 with LLVM exception or Apache-2.0 or MIT",
            ),
        ] {
            assert_eq!(dep5_license(spdx), dep5, "{spdx}");
        }
        assert_eq!(
            license_names("MIT or Apache-2.0, and Unicode-3.0"),
            ["MIT", "Apache-2.0", "Unicode-3.0"]
        );
    }

    #[test]
    fn debian_copyright_names_every_crate_the_binaries_link() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = workspace.join("debian/copyright");
        let text = fs::read_to_string(&path).expect("debian/copyright");
        let meta = metadata(&workspace).expect("cargo metadata");
        let generated = paragraphs(&meta).expect("the crates' paragraphs");

        let (head, crates, licenses) = split_file(&text);
        let now: Vec<&str> = crates.iter().map(|p| p.trim_end()).collect();
        let wanted: Vec<&str> = split_file(&generated).1;
        let wanted: Vec<&str> = wanted.iter().map(|p| p.trim_end()).collect();
        if now != wanted {
            let mut file = head.join("\n\n");
            file.push('\n');
            file.push_str(&generated);
            for paragraph in licenses.values() {
                file.push('\n');
                file.push_str(paragraph.trim_end());
                file.push('\n');
            }
            if std::env::var_os("MULTIPASS_UPDATE_COPYRIGHT").is_some() {
                fs::write(&path, file).expect("debian/copyright written");
            }
            let gone: Vec<_> = now.iter().filter(|p| !wanted.contains(p)).collect();
            let new: Vec<_> = wanted.iter().filter(|p| !now.contains(p)).collect();
            panic!(
                "debian/copyright does not name the crates Cargo.lock links (run again with \
                 MULTIPASS_UPDATE_COPYRIGHT=1 to rewrite it)\nno longer linked: {gone:#?}\n\
                 not named: {new:#?}"
            );
        }

        let mut missing = BTreeSet::new();
        for paragraph in &crates {
            let field = paragraph
                .lines()
                .find_map(|l| l.strip_prefix("License: "))
                .expect("a License field");
            for name in license_names(field) {
                let text = licenses.get(name).map(|p| p.lines().count()).unwrap_or(0);
                if text < 2 {
                    missing.insert(name);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "licences with no text in debian/copyright: {missing:?}"
        );
        assert!(
            linked(&meta).iter().any(|p| p.name == "rustls"),
            "the crates found are the binaries' crates"
        );
    }
}
