//! `multipass-docgen OUTDIR`: man pages (`OUTDIR/man/`) and shell completions
//! (`OUTDIR/completions/`) from the programs' own clap definitions, so they never drift from
//! `--help`. Run by `debian/rules`.
//!
//! Each subcommand gets a page named after its path (`multipass-trust-token-create(1)`) whose
//! synopsis is the command as it is typed (`multipass trust token create [--name <NAME>] ...`). The
//! sections clap does not know (exit status, environment, files, signals) come from the programs'
//! crates, where `--help` takes them from too.

// Only its test runs it: it checks debian/copyright against Cargo.lock.
#[cfg(test)]
mod copyright;
mod fish;

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};

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
    const USAGE: &str = "usage: multipass-docgen OUTDIR\nWrites man pages to OUTDIR/man and shell \
                         completions to OUTDIR/completions.";
    let out = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let Some(out) = out else {
        // `--help` asks for this; anything else starting with `-` is no directory we would
        // want to create.
        let asked = std::env::args()
            .nth(1)
            .is_some_and(|a| a == "--help" || a == "-h");
        if asked {
            println!("{USAGE}");
            return Ok(());
        }
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
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

    for (shell, file) in [(Shell::Bash, "multipass"), (Shell::Zsh, "_multipass")] {
        let mut cmd = multipass_cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "multipass", &mut buf);
        fs::write(completions.join(file), buf)?;
    }
    let mut cmd = multipass_cli::command();
    cmd.build();
    fs::write(
        completions.join("multipass.fish"),
        fish::script(&cmd, "multipass"),
    )?;
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

/// The pages of `parent`'s subcommands, and of theirs, recursively. Each says what its exit
/// status means (the same for every command), and points to multipass(1) for the environment
/// and the files.
fn write_subcommand_pages(dir: &Path, parent: &clap::Command) -> anyhow::Result<()> {
    for sub in parent.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut extra = vec![format!("{}(1)", page_name(parent))];
        if extra[0] != "multipass(1)" {
            extra.insert(0, "multipass(1)".into());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let sections = [Section::new(
            "EXIT STATUS",
            cli_doc(multipass_cli::doc::EXIT_STATUS),
        )];
        write_page(
            dir,
            sub,
            "1",
            &sections,
            &see_also(sub, &extra),
            Subcommands::Pages,
        )?;
        write_subcommand_pages(dir, sub)?;
    }
    Ok(())
}

/// A COMMANDS section: each subcommand's usage, description and options.
fn inline_subcommands(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        roff.control("TP", []);
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let mut usage = vec![bold(name), roman(" ")];
        usage.extend(synopsis(sub, own_option, None));
        roff.text(usage);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            for (i, paragraph) in about.to_string().split("\n\n").enumerate() {
                if i > 0 {
                    roff.control("IP", []);
                }
                roff.text([roman(paragraph)]);
            }
        }
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && own_option(a))
        {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
                continue;
            };
            roff.control("IP", []);
            let mut entry = with_value(arg, format!("--{long}"));
            entry.push(roman(format!(": {help}")));
            let defaults = arg.get_default_values();
            if !defaults.is_empty() && !arg.is_hide_default_value_set() {
                let defaults: Vec<_> = defaults.iter().map(|d| d.to_string_lossy()).collect();
                entry.push(roman(format!(" [default: {}]", defaults.join(", "))));
            }
            roff.text(entry);
        }
    }
}

/// Whether a subcommand described inline lists `arg`: the page's synopsis gives the global
/// options, and `--help` goes without saying on every command.
fn own_option(arg: &clap::Arg) -> bool {
    !arg.is_global_set() && arg.get_id() != "help"
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

/// The SYNOPSIS: the command as it is typed, each option with its value.
///
/// `clap_mangen` writes an option that takes a value without it (`[--format]`), which typed as
/// shown is refused for want of the value; so the synopsis is written here, in clap's notation
/// (`[--format <FORMAT>]`, as `--help` writes it) and in `clap_mangen`'s order.
///
/// An argument that conflicts with others gets a line of its own, required there and without
/// them, as `--help`'s usage shows it (`authenticate [PASSPHRASE]` and `authenticate --admin`):
/// one line with both would show a command that is refused.
fn synopsis_section(cmd: &clap::Command) -> String {
    let mut roff = Roff::default();
    roff.control("SH", ["SYNOPSIS"]);
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    // The option, rather than the argument it excludes, is the one shown alone: `--admin`.
    let exclusive = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !conflicts(cmd, a).is_empty())
        .min_by_key(|a| a.is_positional());
    let lines: Vec<Vec<Inline>> = match exclusive {
        None => vec![synopsis(cmd, |_| true, None)],
        Some(alone) => {
            let others = conflicts(cmd, alone);
            let without_others = |a: &clap::Arg| !others.contains(&a.get_id());
            vec![
                synopsis(cmd, |a| a.get_id() != alone.get_id(), None),
                synopsis(cmd, without_others, Some(alone)),
            ]
        }
    };
    for line in lines {
        // `.SY`: the lines after the first hang from the command's name, left-adjusted and not
        // hyphenated.
        roff.control("SY", [name]);
        roff.text(line);
        roff.control("YS", []);
    }
    with_no_breaks(roff)
}

/// The arguments `arg` cannot be given with, whichever of the two declared the conflict.
fn conflicts<'a>(cmd: &'a clap::Command, arg: &clap::Arg) -> Vec<&'a clap::Id> {
    cmd.get_arguments()
        .filter(|other| {
            let declared_by = |a: &clap::Arg, b: &clap::Arg| {
                cmd.get_arg_conflicts_with(a)
                    .iter()
                    .any(|c| c.get_id() == b.get_id())
            };
            declared_by(arg, other) || declared_by(other, arg)
        })
        .map(clap::Arg::get_id)
        .collect()
}

/// What follows the command's name in its synopsis: the arguments `keep` keeps (`required`
/// shown as required whatever clap says) and the subcommand.
fn synopsis(
    cmd: &clap::Command,
    keep: impl Fn(&clap::Arg) -> bool,
    required: Option<&clap::Arg>,
) -> Vec<Inline> {
    let bracketed = |required: bool| if required { ("<", ">") } else { ("[", "]") };
    let is_required =
        |a: &clap::Arg| a.is_required_set() || required.is_some_and(|r| r.get_id() == a.get_id());
    let mut options: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional() && keep(a))
        .collect();
    options.sort_by_key(|a| {
        let key = match (a.get_short(), a.get_long()) {
            (Some(short), _) => format!("{}{}", short.to_ascii_lowercase(), !short.is_lowercase()),
            (None, Some(long)) => long.to_string(),
            (None, None) => format!("{{{}", a.get_id()),
        };
        (a.get_display_order(), key)
    });
    let mut words: Vec<Vec<Inline>> = Vec::new();
    for arg in options {
        let names = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("-{short}|--{long}"),
            (Some(short), None) => format!("-{short}"),
            (None, Some(long)) => format!("--{long}"),
            (None, None) => continue,
        };
        let (open, close) = if is_required(arg) {
            ("", "")
        } else {
            ("[", "]")
        };
        let mut word = vec![roman(open)];
        word.extend(with_value(arg, names));
        word.push(roman(close));
        if matches!(arg.get_action(), clap::ArgAction::Count) {
            word.push(roman("..."));
        }
        words.push(word);
    }
    for arg in cmd
        .get_positionals()
        .filter(|a| !a.is_hide_set() && keep(a))
    {
        let (open, close) = bracketed(is_required(arg));
        let names = arg
            .get_value_names()
            .map(|names| names.join(" "))
            .unwrap_or_else(|| arg.get_id().to_string());
        words.push(vec![roman(open), italic(names), roman(close)]);
    }
    if cmd.has_subcommands() {
        let (open, close) = bracketed(cmd.is_subcommand_required_set());
        let name = cmd.get_subcommand_value_name().unwrap_or("COMMAND");
        words.push(vec![roman(open), italic(name), roman(close)]);
    }
    let mut line: Vec<Inline> = Vec::new();
    for (i, word) in words.into_iter().enumerate() {
        if i > 0 {
            line.push(roman(" "));
        }
        line.extend(word);
    }
    line.retain(|i| !matches!(i, Inline::Roman(s) if s.is_empty()));
    line
}

/// An option's `names` in bold, then the values it takes (`--expires <DURATION>`), held on one
/// line with it.
fn with_value(arg: &clap::Arg, names: String) -> Vec<Inline> {
    let mut word = vec![bold(names)];
    if arg.get_num_args().is_some_and(|n| n.takes_values()) {
        for value in arg.get_value_names().unwrap_or_default() {
            word.extend([roman(NO_BREAK), italic(format!("<{value}>"))]);
        }
    }
    word
}

/// Stands for roff's unbreakable space, `\~`, until a page is rendered: the `roff` crate escapes
/// backslashes in text. (A U+00A0 left in would show as a space, but a shell does not split
/// words there: pasted, the option would be refused.)
const NO_BREAK: &str = "\u{a0}";

/// `roff` rendered, with [`NO_BREAK`] made roff's unbreakable space.
fn with_no_breaks(roff: Roff) -> String {
    roff.render().replace(NO_BREAK, "\\~")
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
    buf.extend(synopsis_section(&cmd).into_bytes());
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
    buf.extend(with_no_breaks(roff).into_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf)?;
    }
    let page = code_in_bold(&String::from_utf8(buf)?);
    let path = dir.join(format!("{name}.{section}"));
    fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}

/// The `code` spans of the help texts, which `--help` shows as they are, set in bold, as man
/// pages show what is typed literally: `man` would show the backticks themselves. A line with an
/// unpaired backtick keeps its last one as it is.
fn code_in_bold(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for line in page.split_inclusive('\n') {
        let mut parts = line.split('`');
        out.push_str(parts.next().unwrap_or_default());
        let rest: Vec<&str> = parts.collect();
        let mut spans = rest.chunks_exact(2);
        for span in spans.by_ref() {
            out.push_str("\\fB");
            out.push_str(span[0]);
            out.push_str("\\fP");
            out.push_str(span[1]);
        }
        if let [unpaired] = spans.remainder() {
            out.push('`');
            out.push_str(unpaired);
        }
    }
    out
}
