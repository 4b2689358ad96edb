//! `multipass-docgen OUTDIR`: man pages (`OUTDIR/man/`) and shell completions
//! (`OUTDIR/completions/`) from the programs' own clap definitions, so they never drift from
//! `--help`. Run by `debian/rules`.
//!
//! Each subcommand gets a page named after its path (`multipass-trust-token-create(1)`) whose
//! synopsis is the command as it is typed (`multipass trust token create`). The sections clap
//! does not know (exit status, environment, files, signals) come from the programs' crates, where
//! `--help` takes them from too.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

/// How a page presents its command's subcommands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subcommands {
    /// Each has a page of its own, which the page lists.
    Pages,
    /// Described on the page itself, each with its options.
    Inline,
}

/// A section of a page that clap does not generate: a heading and its entries.
struct Section {
    heading: &'static str,
    entries: Vec<(String, String)>,
}

impl Section {
    fn new<'a>(
        heading: &'static str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Section {
        Section {
            heading,
            entries: entries
                .into_iter()
                .map(|(t, d)| (t.to_string(), d.to_string()))
                .collect(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: multipass-docgen OUTDIR")?;
    let out = Path::new(&out);
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;

    let mut client = multipass_cli::command();
    client.build();
    let client = without_help_subcommands(client);
    write_page(
        &man,
        &client,
        "1",
        &[
            Section::new("EXIT STATUS", cli_doc(multipass_cli::doc::EXIT_STATUS)),
            Section::new("ENVIRONMENT", cli_doc(multipass_cli::doc::ENVIRONMENT)),
            Section::new("FILES", cli_doc(multipass_cli::doc::FILES)),
        ],
        &see_also(&client, &["multipassd(8)", "multipassd-helper(8)"]),
        Subcommands::Pages,
    )?;
    write_subcommand_pages(&man, &client)?;

    let mut daemon = multipassd::args::Args::command();
    daemon.build();
    write_page(
        &man,
        &daemon,
        "8",
        &[
            Section::new("FILES", multipassd::doc::FILES.to_vec()),
            Section::new("SIGNALS", multipassd::doc::SIGNALS.to_vec()),
            Section::new("EXIT STATUS", multipassd::doc::EXIT_STATUS.to_vec()),
        ],
        &["multipass(1)", "multipassd-helper(8)", "systemd.socket(5)"],
        Subcommands::Pages,
    )?;

    let mut helper = multipassd_helper::cli::command();
    helper.build();
    let helper = without_help_subcommands(helper);
    write_page(
        &man,
        &helper,
        "8",
        &[
            Section::new("FILES", multipassd_helper::doc::FILES.to_vec()),
            Section::new("SIGNALS", multipassd_helper::doc::SIGNALS.to_vec()),
            Section::new("EXIT STATUS", multipassd_helper::doc::EXIT_STATUS.to_vec()),
        ],
        &["multipass(1)", "multipassd(8)", "pkexec(1)", "polkit(8)"],
        Subcommands::Inline,
    )?;

    for (shell, file) in [
        (Shell::Bash, "multipass"),
        (Shell::Zsh, "_multipass"),
        (Shell::Fish, "multipass.fish"),
    ] {
        let mut cmd = multipass_cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "multipass", &mut buf);
        fs::write(completions.join(file), buf)?;
    }
    Ok(())
}

/// `cmd` with clap's `help` subcommands hidden: `multipass help set` works, but is no command to
/// write a page about.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(&name, |sub| {
            let sub = without_help_subcommands(sub);
            if name == "help" {
                sub.hide(true)
            } else {
                sub
            }
        })
    })
}

/// The entries of a section of `multipass --help`.
fn cli_doc(
    entries: &'static [multipass_cli::doc::Entry],
) -> impl Iterator<Item = (&'static str, &'static str)> {
    entries.iter().map(|e| (e.term, e.text))
}

/// The page name of a command: its path with dashes (`multipass-trust-token`).
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_bin_name()
        .unwrap_or_else(|| cmd.get_name())
        .replace(' ', "-")
}

/// The pages of `parent`'s subcommands, and of theirs, recursively.
fn write_subcommand_pages(dir: &Path, parent: &clap::Command) -> anyhow::Result<()> {
    for sub in parent.get_subcommands().filter(|s| !s.is_hide_set()) {
        let also = see_also(sub, &[&format!("{}(1)", page_name(parent))]);
        write_page(dir, sub, "1", &[], &also, Subcommands::Pages)?;
        write_subcommand_pages(dir, sub)?;
    }
    Ok(())
}

/// A COMMANDS section: each subcommand's usage, description and options.
fn inline_subcommands(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut sub = sub.clone();
        let usage = sub.render_usage().to_string();
        roff.control("TP", []);
        roff.text([bold(usage.trim_start_matches("Usage: "))]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            for (i, paragraph) in about.to_string().split("\n\n").enumerate() {
                if i > 0 {
                    roff.control("IP", []);
                }
                roff.text([roman(paragraph)]);
            }
        }
        // `--help` goes without saying on every command.
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
        {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
                continue;
            };
            roff.control("IP", []);
            roff.text([bold(format!("--{long}")), roman(format!(": {help}"))]);
        }
    }
}

/// `extra`, then the pages of `cmd`'s subcommands.
fn see_also(cmd: &clap::Command, extra: &[&str]) -> Vec<String> {
    let mut pages: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    pages.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("{}(1)", page_name(s))),
    );
    pages
}

/// Write `cmd`'s page: clap's sections (the synopsis names the command as it is typed: the
/// bin name after `build()`), then `sections`, SEE ALSO and the version.
fn write_page(
    dir: &Path,
    cmd: &clap::Command,
    section: &str,
    sections: &[Section],
    see_also: &[impl AsRef<str>],
    subcommands: Subcommands,
) -> anyhow::Result<()> {
    let name = page_name(cmd);
    // The page's title and the names of its subcommands' pages come from the display name.
    let cmd = cmd.clone().display_name(name.clone());
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("multipass")
        .source(format!("multipass {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    let mut roff = Roff::default();
    match subcommands {
        _ if !cmd.has_subcommands() => {}
        Subcommands::Pages => man.render_subcommands_section(&mut buf)?,
        Subcommands::Inline => inline_subcommands(&mut roff, &cmd),
    }
    for s in sections {
        roff.control("SH", [s.heading]);
        for (term, text) in &s.entries {
            roff.control("TP", []);
            roff.text([bold(term.as_str())]);
            roff.text([roman(text.as_str())]);
        }
    }
    if !see_also.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        let list: Vec<&str> = see_also.iter().map(AsRef::as_ref).collect();
        roff.text([roman(list.join(", "))]);
    }
    buf.extend(roff.render().into_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf)?;
    }
    let path = dir.join(format!("{name}.{section}"));
    fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))
}
