//! What a new user reads: `--help` of every subcommand of the real `multipass`, and the man pages
//! the real `multipass-docgen` writes (the ones the package installs), read with the real `man`.
//! Each subcommand's long description reaches both; every page's synopsis names a real command,
//! and every option it offers is accepted by that command.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use multipass_system_tests::bin;
use multipass_system_tests::process::{run, CliOutput, DEFAULT_TIMEOUT};

/// Run `program args...` with an empty environment.
fn output(program: &str, args: &[&str]) -> CliOutput {
    output_with(program, args, &[])
}

/// [`output`] with the variables of `env` set.
fn output_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = Command::new(bin(program));
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied());
    run(cmd, None, DEFAULT_TIMEOUT)
}

/// `text` with every run of whitespace made one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The subcommands `multipass <path> --help` lists (clap's own `help` left out). Each must be
/// listed with a line saying what it does, not its name (and alias) alone.
fn subcommands_of(path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = output("multipass", &args);
    out.assert_code(0, "--help");
    let listed: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let mut names = Vec::new();
    for line in listed {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        if name == "help" {
            continue;
        }
        let summary = words.collect::<Vec<_>>().join(" ");
        let summary = summary.split("[alias:").next().unwrap_or_default().trim();
        assert!(
            !summary.is_empty(),
            "`multipass {}` --help lists `{name}` without saying what it does:\n{}",
            path.join(" "),
            out.stdout
        );
        names.push(name.to_string());
    }
    names
}

/// Every subcommand path of `multipass`, found by reading `--help` as a user would.
fn subcommand_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        for name in subcommands_of(&path) {
            let mut sub = path.clone();
            sub.push(name);
            todo.push(sub.clone());
            paths.push(sub);
        }
    }
    paths.sort();
    paths
}

/// The text of a help before its `Usage:` line.
fn description(help: &str) -> &str {
    help.split("\nUsage:").next().unwrap_or_default()
}

fn every_subcommand_shows_its_long_description() {
    let paths = subcommand_paths();
    let names: Vec<String> = paths.iter().map(|p| p.join(" ")).collect();
    for expected in [
        "authenticate",
        "set",
        "get",
        "list",
        "version",
        "trust",
        "trust list",
        "trust remove",
        "trust token",
        "trust token create",
        "trust token list",
        "trust token revoke",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no `{expected}` in {names:?}"
        );
    }
    for path in &paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let long = output("multipass", &args);
        long.assert_code(0, "--help");
        *args.last_mut().unwrap() = "-h";
        let short = output("multipass", &args);
        short.assert_code(0, "-h");
        let (long_text, short_text) = (description(&long.stdout), description(&short.stdout));
        // More than the one line of `-h`: paragraphs of its own.
        assert!(
            long_text.trim().split("\n\n").count() >= 2 && long_text.len() > 2 * short_text.len(),
            "`multipass {}` --help shows no long description:\n{long_text}",
            path.join(" ")
        );
    }
}

fn help_texts_say_what_each_command_needs() {
    for (command, needed, absent) in [
        (
            &["set", "--help"][..],
            &["Settings keys:", "local.passphrase", "KEY=VALUE"][..],
            &[][..],
        ),
        (
            &["get", "--help"],
            &["Settings keys:", "local.passphrase", "--keys"],
            &[],
        ),
        (
            &["trust", "list", "--help"],
            &[
                "trusted",
                "fingerprint",
                "how it came to be trusted",
                "Possible values",
            ],
            &["instance"],
        ),
        (
            &["authenticate", "--help"],
            &["enrollment token", "standard input", "--admin"],
            &[],
        ),
        (
            &["trust", "remove", "--help"],
            &["fingerprint", "at least 4 hex digits"],
            &[],
        ),
        (
            &["trust", "token", "create", "--help"],
            &["login name", "only this once"],
            &[],
        ),
        (
            &["list", "--help"],
            &["--snapshots", "No snapshots found."],
            &[],
        ),
        (
            &["--help"],
            &[
                "Exit status:",
                "Environment:",
                "Files:",
                "MULTIPASS_ROOT_CERT",
            ],
            &[],
        ),
    ] {
        let out = output("multipass", command);
        out.assert_code(0, "--help");
        let text = flat(&out.stdout);
        for n in needed {
            assert!(
                text.contains(n),
                "`multipass {}` lacks {n:?}\n{out}",
                command.join(" ")
            );
        }
        for a in absent {
            assert!(
                !text.to_lowercase().contains(a),
                "`multipass {}` mentions {a:?}\n{out}",
                command.join(" ")
            );
        }
    }
}

/// The man pages `multipass-docgen` writes into `dir`, by file name.
fn generate(dir: &Path) -> BTreeSet<String> {
    let out = output("multipass-docgen", &[dir.to_str().expect("utf-8 path")]);
    out.assert_code(0, "multipass-docgen");
    std::fs::read_dir(dir.join("man"))
        .expect("the man directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// A page as `man` shows it, one paragraph per line.
fn read_page(path: &Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("MANWIDTH", "2000")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("man (package man-db)");
    assert!(out.status.success(), "man -l {}", path.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sections of a rendered page: heading and body.
fn sections(page: &str) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for line in page.lines() {
        let heading = !line.is_empty() && !line.starts_with(' ') && line.to_uppercase() == line;
        if heading {
            all.push((line.trim().to_string(), String::new()));
        } else if let Some((_, body)) = all.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    all
}

fn section<'a>(sections: &'a [(String, String)], name: &str) -> Option<&'a str> {
    sections
        .iter()
        .find(|(h, _)| h == name)
        .map(|(_, b)| b.as_str())
}

/// An option a synopsis offers: its long (or only) name, and the name of the value it shows.
struct Offered {
    name: String,
    value: Option<String>,
}

/// The program, the words of the command and the options of a synopsis (`multipass trust list
/// [--format <FORMAT>] [-v|--verbose]... [-h|--help]`): of all its lines when it has several
/// (`multipass authenticate [PASSPHRASE]`, `multipass authenticate --admin`), whose commands
/// must be the same.
fn parse_synopsis(synopsis: &str) -> (Vec<String>, Vec<Offered>) {
    let mut command: Option<Vec<String>> = None;
    let mut options = Vec::new();
    for line in synopsis.split("\n\n").filter(|l| !l.trim().is_empty()) {
        let (words, offered) = parse_synopsis_line(line);
        match &command {
            Some(first) => assert_eq!(first, &words, "lines of one synopsis:\n{synopsis}"),
            None => command = Some(words),
        }
        options.extend(offered);
    }
    (command.unwrap_or_default(), options)
}

fn parse_synopsis_line(synopsis: &str) -> (Vec<String>, Vec<Offered>) {
    let mut words = synopsis.split_whitespace().peekable();
    let mut command = Vec::new();
    while let Some(word) =
        words.next_if(|w| !w.starts_with('[') && !w.starts_with('<') && !w.starts_with('-'))
    {
        command.push(word.to_string());
    }
    let mut options = Vec::new();
    while let Some(word) = words.next() {
        // `[--format <FORMAT>]`, or a required `--admin`.
        let Some(names) = word
            .strip_prefix("[-")
            .map(|rest| format!("-{rest}"))
            .or_else(|| word.starts_with('-').then(|| word.to_string()))
        else {
            continue;
        };
        // `-v|--verbose`: the long form; both name the same option.
        let names = names.split(']').next().unwrap_or_default();
        let name = names.rsplit('|').next().unwrap_or(names).to_string();
        // `[--format <FORMAT>]`: the value is the next word, and closes the brackets.
        let value = match word.contains(']') {
            true => None,
            false => words.next_if(|v| v.starts_with('<')).map(|v| {
                v.split(']')
                    .next()
                    .unwrap_or_default()
                    .trim_matches(['<', '>'])
                    .to_string()
            }),
        };
        options.push(Offered { name, value });
    }
    (command, options)
}

/// The name of the value `option` takes, as the page's OPTIONS section writes it
/// (`--format <FORMAT>`).
fn value_name_in_options(options_section: &str, option: &str) -> Option<String> {
    let head = options_section
        .lines()
        .map(str::trim)
        .find(|l| l.split([',', ' ']).any(|word| word == option))?;
    let value_name = head.split('<').nth(1)?.split('>').next()?;
    Some(value_name.to_string())
}

/// A value `option` accepts, from the page's OPTIONS section: its default, its first possible
/// value, or something of the shape its value name asks for.
fn value_for(options_section: &str, option: &str, value_name: &str) -> String {
    let mut lines = options_section.lines().map(str::trim);
    let head = lines
        .find(|l| l.split([',', ' ']).any(|word| word == option))
        .unwrap_or_default();
    if let Some(default) = head.split("[default: ").nth(1) {
        return default.trim_end_matches(']').to_string();
    }
    let rest: Vec<&str> = lines.take_while(|l| !l.starts_with('-')).collect();
    if let Some(i) = rest.iter().position(|l| l.starts_with("Possible values")) {
        if let Some(first) = rest[i + 1..].iter().find(|l| !l.is_empty()) {
            return first.trim_start_matches('•').trim().to_string();
        }
    }
    match value_name {
        "DURATION" => "1h",
        "SECONDS" => "1",
        "ADDRESS" => "unix:/run/multipass_socket",
        _ => "x",
    }
    .to_string()
}

fn man_pages_name_real_commands_and_offer_options_that_work() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pages = generate(dir.path());
    let mut expected: BTreeSet<String> = ["multipass.1", "multipassd.8", "multipassd-helper.8"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for path in subcommand_paths() {
        expected.insert(format!("multipass-{}.1", path.join("-")));
    }
    assert_eq!(pages, expected, "one page per command, no more");
    assert!(pages.contains("multipass-trust-token.1"));

    for page in &pages {
        let text = read_page(&dir.path().join("man").join(page));
        let parts = sections(&text);
        assert!(
            section(&parts, "EXTRA").is_none(),
            "{page}: an EXTRA section\n{text}"
        );
        let synopsis = section(&parts, "SYNOPSIS").unwrap_or_else(|| panic!("{page}: no SYNOPSIS"));
        let (command, options) = parse_synopsis(synopsis);
        let title = page.rsplit_once('.').unwrap().0;
        assert_eq!(
            command.join("-"),
            title,
            "{page}: the synopsis names {command:?}"
        );
        let program = command[0].as_str();
        let words: Vec<&str> = command[1..].iter().map(String::as_str).collect();

        let mut help = words.clone();
        help.push("--help");
        let out = output(program, &help);
        out.assert_code(0, &format!("{page}: its synopsis as a command"));

        // Each option typed as the synopsis shows it, a value put for the value's name.
        let options_section = section(&parts, "OPTIONS").unwrap_or_default();
        for Offered { name, value } in &options {
            assert_eq!(
                value.as_deref(),
                value_name_in_options(options_section, name).as_deref(),
                "{page}: the synopsis and OPTIONS differ on the value {name} takes\n{text}"
            );
            let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            args.push(name.clone());
            if let Some(value_name) = value {
                args.push(value_for(options_section, name, value_name));
            }
            args.push("--help".into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = output(program, &args);
            assert!(
                out.code == Some(0) && (out.stdout.contains("Usage:") || name == "--version"),
                "{page}: the synopsis offers {name}, which `{program} {}` refuses\n{out}",
                args.join(" ")
            );
        }
        // ...and each option OPTIONS describes is in the synopsis.
        for head in options_section
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('-'))
        {
            let names: Vec<&str> = head
                .split([',', ' '])
                .filter(|w| w.starts_with('-'))
                .collect();
            let name = names.iter().find(|n| n.starts_with("--")).or(names.first());
            assert!(
                name.is_some_and(|n| options.iter().any(|o| o.name == *n)),
                "{page}: OPTIONS describes {head:?}, which the synopsis does not offer\n{text}"
            );
        }

        // The description is the long one: more than the NAME line.
        let description = section(&parts, "DESCRIPTION").unwrap_or_default();
        let name = flat(section(&parts, "NAME").unwrap_or_default());
        assert!(
            description.trim().split("\n\n").count() >= 2 && description.len() > 2 * name.len(),
            "{page}: a short DESCRIPTION\n{text}"
        );
    }
}

fn the_long_description_of_each_subcommand_reaches_its_man_page() {
    let dir = tempfile::tempdir().expect("temporary directory");
    generate(dir.path());
    for path in subcommand_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = output("multipass", &args);
        let page = read_page(
            &dir.path()
                .join("man")
                .join(format!("multipass-{}.1", path.join("-"))),
        );
        // Every command's page says what its exit status means, and where the rest is.
        let parts = sections(&page);
        let exit = flat(section(&parts, "EXIT STATUS").unwrap_or_default());
        assert!(
            exit.contains("could not be reached"),
            "`multipass {}`: no EXIT STATUS\n{page}",
            path.join(" ")
        );
        assert!(
            flat(section(&parts, "SEE ALSO").unwrap_or_default()).contains("multipass(1)"),
            "`multipass {}`: SEE ALSO does not name multipass(1)\n{page}",
            path.join(" ")
        );
        // `code` in the help text is set in bold on the page, without its backticks.
        assert!(
            !page.contains('`'),
            "`multipass {}`: the page shows backticks\n{page}",
            path.join(" ")
        );
        let described = flat(section(&sections(&page), "DESCRIPTION").unwrap_or_default());
        for paragraph in description(&help.stdout).split("\n\n") {
            assert!(
                described.contains(&flat(&paragraph.replace('`', ""))),
                "`multipass {}`: {paragraph:?} is not in the man page\n{page}",
                path.join(" ")
            );
        }
    }
}

/// Panics unless the page `file` in `man` has each section of `expected` and each of those holds
/// the texts listed for it. `DESCRIPTION` is compared with its lines joined.
fn assert_sections(man: &Path, file: &str, expected: &[(&str, &[&str])]) {
    let parts = sections(&read_page(&man.join(file)));
    for (heading, needed) in expected {
        let body = section(&parts, heading).unwrap_or_else(|| panic!("{file}: no {heading}"));
        let body = flat(body);
        for n in needed.iter() {
            assert!(body.contains(n), "{file}: {heading} lacks {n:?}:\n{body}");
        }
    }
}

fn pages_of_the_client_daemon_and_helper_have_their_sections() {
    let dir = tempfile::tempdir().expect("temporary directory");
    generate(dir.path());
    let man = dir.path().join("man");
    assert_sections(
        &man,
        "multipass.1",
        &[
            ("EXIT STATUS", &["0", "1", "2", "3", "could not be reached"]),
            (
                "ENVIRONMENT",
                &[
                    "MULTIPASS_SERVER_ADDRESS",
                    "MULTIPASS_ROOT_CERT",
                    "XDG_DATA_HOME",
                    "HOME",
                ],
            ),
            (
                "FILES",
                &[
                    "multipass_cert.pem",
                    "multipass_root_cert.pem",
                    "/run/multipass_socket",
                ],
            ),
        ],
    );
    assert_sections(
        &man,
        "multipassd.8",
        &[
            (
                "DESCRIPTION",
                &[
                    "multipass.socket",
                    "first client",
                    "passphrase",
                    "multipassd-helper",
                ],
            ),
            (
                "FILES",
                &[
                    "multipass_client_certs.pem",
                    "multipassd.conf",
                    "enrollment-tokens",
                ],
            ),
            ("SIGNALS", &["SIGTERM"]),
            ("EXIT STATUS", &["75", "--idle-timeout"]),
        ],
    );
    assert_sections(
        &man,
        "multipassd-helper.8",
        &[
            ("DESCRIPTION", &["polkit", "pkexec", "io.multipass.Helper1"]),
            (
                "COMMANDS",
                // Each command as it is typed, an option with its value.
                &[
                    "multipassd-helper serve [--idle-timeout <SECONDS>]",
                    "--idle-timeout <SECONDS>: Exit after",
                    "[default: 30]",
                    "multipassd-helper apply-socket-policy",
                    "multipassd-helper set-passphrase [--clear]",
                    "multipassd-helper trust-certificate [--name <NAME>]",
                    "--name <NAME>: Name to record",
                ],
            ),
            ("FILES", &["io.multipass.policy", "multipassd.conf"]),
            ("SIGNALS", &["SIGTERM"]),
            ("EXIT STATUS", &["0", "1", "2"]),
        ],
    );
    // What is typed literally is in bold, as man pages set it, not between backticks.
    for page in generate(dir.path()) {
        let shown = read_page(&man.join(&page));
        assert!(!shown.contains('`'), "{page} shows backticks\n{shown}");
    }
    let source = std::fs::read_to_string(man.join("multipass-trust-remove.1")).expect("page");
    assert!(
        source.contains("\\fBmultipass trust list\\fP"),
        "no bold command in multipass-trust-remove.1\n{source}"
    );
}

/// On a narrow terminal the sections after the options (exit status, environment, files) are
/// wrapped once, keeping their indent: no line is longer than the terminal unless it is one word
/// (a path), and no line is cut short where the next line's first word would have fitted.
fn narrow_help_is_wrapped_once() {
    const WIDTH: usize = 30;
    let out = output_with("multipass", &["--help"], &[("COLUMNS", &WIDTH.to_string())]);
    out.assert_code(0, "--help");
    let start = out
        .stdout
        .find("Exit status:")
        .expect("no exit status section");
    let lines: Vec<&str> = out.stdout[start..].lines().collect();
    for line in &lines {
        assert!(
            line.len() <= WIDTH || !line.trim().contains(' '),
            "{line:?} is wider than {WIDTH} columns\n{out}"
        );
    }
    for pair in lines.windows(2) {
        let (line, next) = (pair[0], pair[1]);
        // Both lines go on one entry's text (a term's line is indented by two).
        if line.starts_with("      ") && next.starts_with("      ") {
            let word = next.split_whitespace().next().unwrap_or_default();
            assert!(
                line.len() + 1 + word.len() > WIDTH,
                "{line:?} is cut short: {word:?} fits on it\n{out}"
            );
        }
    }
}

/// Every subcommand lists its own options first and the ones every command has (`-v`, `-h`)
/// last, so that a command's own options are not split by `-v`.
fn each_commands_own_options_come_first() {
    for path in subcommand_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("-h");
        let out = output("multipass", &args);
        out.assert_code(0, "-h");
        let options: Vec<&str> = out
            .stdout
            .split("\nOptions:\n")
            .nth(1)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim_start().starts_with('-'))
            .map(|l| l.split_whitespace().next().unwrap_or_default())
            .collect();
        assert!(
            options.ends_with(&["-v,", "-h,"]),
            "`multipass {} -h` lists {options:?}\n{out}",
            path.join(" ")
        );
    }
}

/// A combination refused as a usage error is answered with usage lines that each work: none of
/// them shows the two refused arguments together.
fn a_refused_combination_is_shown_usage_that_works() {
    let out = output("multipass", &["authenticate", "--admin", "passphrase"]);
    out.assert_code(1, "a passphrase with --admin");
    assert!(out.stderr.contains("cannot be used with"), "{out}");
    let usage: Vec<&str> = out
        .stderr
        .split("Usage:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(usage.len(), 2, "{out}");
    for line in usage {
        assert!(
            !(line.contains("--admin") && line.contains("PASSPHRASE")),
            "{line:?} shows the refused combination\n{out}"
        );
    }

    // The man page's synopsis, the same two ways.
    let dir = tempfile::tempdir().expect("temporary directory");
    generate(dir.path());
    let page = read_page(&dir.path().join("man/multipass-authenticate.1"));
    let parts = sections(&page);
    let synopsis = section(&parts, "SYNOPSIS").expect("a SYNOPSIS");
    let lines: Vec<&str> = synopsis
        .split("\n\n")
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{page}");
    assert!(lines[0].ends_with("[PASSPHRASE]"), "{page}");
    assert!(
        lines[1].starts_with("multipass authenticate --admin ") && !lines[1].contains("PASSPHRASE"),
        "{page}"
    );
}

multipass_system_tests::process_tests! {
    plain: [every_subcommand_shows_its_long_description, help_texts_say_what_each_command_needs, man_pages_name_real_commands_and_offer_options_that_work, the_long_description_of_each_subcommand_reaches_its_man_page, pages_of_the_client_daemon_and_helper_have_their_sections, narrow_help_is_wrapped_once, each_commands_own_options_come_first, a_refused_combination_is_shown_usage_that_works],
}
