//! fish completion for `multipass`, from its clap definition.
//!
//! clap_complete's fish output tells subcommands apart by which names were typed, not where:
//! below two levels it gives nothing (`multipass trust token create --` offered only `--help`
//! and `--verbose`, not `--name` or `--expires`), it offers a command's subcommands again once
//! one is typed (`trust token create <Tab>` offered `create list revoke help`), and `trust list`
//! took `trust token list`'s options. The script written here walks the command line through the
//! command tree instead: `__fish_multipass_at PATH` holds where the subcommands typed so far
//! (options and their values skipped, aliases taken for their command) lead exactly to `PATH`.

use std::fmt::Write as _;

use clap::{Arg, Command};

/// The completion script for `cmd` (built, so that its `help` subcommands exist), whose
/// program is `name`.
pub fn script(cmd: &Command, name: &str) -> String {
    let mut out = String::new();
    let fun = format!("__fish_{}", name.replace('-', "_"));
    writeln!(
        out,
        "# fish completion for {name}, written by multipass-docgen."
    )
    .unwrap();
    writeln!(out, "# Nothing {name} takes is a file name.").unwrap();
    writeln!(out, "complete -c {name} -f").unwrap();
    out.push('\n');

    // The step from one command to a subcommand: the canonical name, for its name or alias.
    writeln!(out, "function {fun}_step --argument-names path word").unwrap();
    writeln!(out, "    switch \"$path:$word\"").unwrap();
    walk(cmd, &mut Vec::new(), &mut |path, command| {
        for sub in command.get_subcommands() {
            let names: Vec<String> = std::iter::once(sub.get_name())
                .chain(sub.get_all_aliases())
                .map(|alias| quote(&format!("{}:{alias}", path.join(" "))))
                .collect();
            writeln!(out, "        case {}", names.join(" ")).unwrap();
            writeln!(out, "            echo {}", quote(sub.get_name())).unwrap();
        }
    });
    writeln!(out, "        case '*'").unwrap();
    writeln!(out, "            return 1").unwrap();
    writeln!(out, "    end").unwrap();
    writeln!(out, "end").unwrap();
    out.push('\n');

    // Options whose value is the next word, which is then no subcommand.
    let mut valued = Vec::new();
    walk(cmd, &mut Vec::new(), &mut |_, command| {
        for arg in command.get_arguments().filter(|a| takes_value(a)) {
            let forms = arg
                .get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}"))
                .chain(
                    arg.get_short_and_visible_aliases()
                        .into_iter()
                        .flatten()
                        .map(|s| format!("-{s}")),
                );
            for form in forms {
                if !valued.contains(&form) {
                    valued.push(form);
                }
            }
        }
    });
    let valued: Vec<String> = valued.iter().map(|v| quote(v)).collect();
    let valued = match valued.is_empty() {
        true => String::new(),
        false => format!(
            "\n            case {}\n                set skip 1",
            valued.join(" ")
        ),
    };
    write!(
        out,
        r#"# The subcommands typed so far, by their names, options and their values left out.
function {fun}_path
    set -l words (commandline -opc)
    set -l path
    set -l skip 0
    for word in $words[2..-1]
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $word
            case '--*=*'{valued}
            case '-*'
            case '*'
                set -l next ({fun}_step "$path" $word)
                and set path $path $next
        end
    end
    echo $path
end

function {fun}_at --argument-names path
    test "$({fun}_path)" = "$path"
end
"#
    )
    .unwrap();

    walk(cmd, &mut Vec::new(), &mut |path, command| {
        out.push('\n');
        let at = format!(
            "-n {}",
            quote(&format!("{fun}_at {}", quote(&path.join(" "))))
        );
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            for word in std::iter::once(sub.get_name()).chain(sub.get_visible_aliases()) {
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                writeln!(
                    out,
                    "complete -c {name} {at} -a {} -d {}",
                    quote(word),
                    quote(&about)
                )
                .unwrap();
            }
        }
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let mut line = format!("complete -c {name} {at}");
            if arg.is_positional() {
                let values = possible_values(arg);
                if values.is_empty() {
                    continue;
                }
                writeln!(line, " -a {}", quote(&values)).unwrap();
                out.push_str(&line);
                continue;
            }
            for short in arg.get_short_and_visible_aliases().into_iter().flatten() {
                write!(line, " -s {short}").unwrap();
            }
            for long in arg.get_long_and_visible_aliases().into_iter().flatten() {
                write!(line, " -l {long}").unwrap();
            }
            if takes_value(arg) {
                // A value is wanted, and no file name (`-r -f`).
                line.push_str(" -x");
                let values = possible_values(arg);
                if !values.is_empty() {
                    write!(line, " -a {}", quote(&values)).unwrap();
                }
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            writeln!(line, " -d {}", quote(&help)).unwrap();
            out.push_str(&line);
        }
    });
    out
}

/// Call `visit` with each command of the tree under `cmd` and the path of subcommand names that
/// leads to it (empty for `cmd` itself).
fn walk<'c>(cmd: &'c Command, path: &mut Vec<&'c str>, visit: &mut impl FnMut(&[&str], &Command)) {
    visit(path, cmd);
    for sub in cmd.get_subcommands() {
        path.push(sub.get_name());
        walk(sub, path, visit);
        path.pop();
    }
}

fn takes_value(arg: &Arg) -> bool {
    !arg.is_positional() && arg.get_action().takes_values()
}

/// `arg`'s possible values as fish's `-a` takes them, a list it expands as it would a command
/// line: each value a quoted word, with its help after a tab (`\t`, which that expansion reads).
fn possible_values(arg: &Arg) -> String {
    arg.get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| match v.get_help() {
            Some(help) => format!("{}\\t{}", quote(v.get_name()), quote(&help.to_string())),
            None => quote(v.get_name()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` as one fish word in single quotes (fish's single quotes escape only `\` and `'`).
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
