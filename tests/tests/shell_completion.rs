//! Shell completion as the package installs it (written by the real `multipass-docgen`): bash
//! and fish, run for real, and zsh, read, offer the settings keys after `get` and `set`; fish
//! completes every level of subcommands. Trusted clients'
//! names are not offered after `trust remove`: only the daemon knows them, and completion never
//! asks it (README.md, "Shell completion").

use std::path::{Path, PathBuf};
use std::process::Command;

use multipass_system_tests::bin;
use multipass_system_tests::process::{run, DEFAULT_TIMEOUT};

/// The completion scripts, generated into `dir`.
fn generate(dir: &Path) -> PathBuf {
    let mut cmd = Command::new(bin("multipass-docgen"));
    cmd.arg(dir).env_clear().env("PATH", "/usr/bin:/bin");
    run(cmd, None, DEFAULT_TIMEOUT).assert_code(0, "multipass-docgen");
    dir.join("completions")
}

/// What bash offers for the command line `line` (the cursor at its end), with the generated
/// script loaded, as bash calls the completion function on Tab.
fn bash_completes(script: &Path, line: &str) -> Vec<String> {
    bash_completes_in(script, line, None)
}

/// [`bash_completes`] run in the directory `cwd`, whose files bash would offer as file names.
fn bash_completes_in(script: &Path, line: &str, cwd: Option<&Path>) -> Vec<String> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if line.ends_with(' ') {
        words.push("");
    }
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE='{line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _multipass multipass '{}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words[cword],
    );
    let mut bash = Command::new("bash");
    bash.arg("--norc")
        .arg("--noprofile")
        .arg("-c")
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    if let Some(cwd) = cwd {
        bash.current_dir(cwd);
    }
    let out = run(bash, None, DEFAULT_TIMEOUT);
    out.assert_code(0, &format!("bash completion of {line:?}"));
    out.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn bash_offers_the_settings_keys_after_get_and_set() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = generate(dir.path()).join("multipass");

    for line in ["multipass get ", "multipass set "] {
        let offered = bash_completes(&script, line);
        assert!(
            offered.iter().any(|w| w == "local.passphrase"),
            "{line:?} offers {offered:?}"
        );
    }
    assert_eq!(
        bash_completes(&script, "multipass get loc"),
        ["local.passphrase"]
    );
    assert_eq!(
        bash_completes(&script, "multipass set local.pa"),
        ["local.passphrase"]
    );
    // The rest of the completion still works around them.
    assert_eq!(
        bash_completes(&script, "multipass trust list --format "),
        ["table", "json", "csv", "yaml"]
    );
    assert!(bash_completes(&script, "multipass tr").contains(&"trust".to_string()));
    assert!(bash_completes(&script, "multipass list --sn").contains(&"--snapshots".to_string()));
}

/// Values that are not files (a passphrase, a name, a duration, a client's ID) are not completed
/// as file names.
fn bash_offers_no_file_names_where_no_file_is_wanted() {
    let (_dir, completions, cwd) = scripts_beside_a_file();
    let script = completions.join("multipass");
    for line in NO_FILE_WANTED {
        let offered = bash_completes_in(&script, line, Some(&cwd));
        assert!(
            !offered.iter().any(|w| w == "a-file"),
            "{line:?} offers {offered:?}"
        );
    }
}

/// Command lines whose next word is no file name.
const NO_FILE_WANTED: [&str; 5] = [
    "multipass trust token create --expires ",
    "multipass trust token create --name ",
    "multipass trust token revoke ",
    "multipass trust remove ",
    "multipass authenticate ",
];

/// The scripts generated into a temporary directory (kept while the first is), and a directory
/// beside them holding one file, `a-file`, to complete in.
fn scripts_beside_a_file() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let completions = generate(dir.path());
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("a-file"), "").unwrap();
    (dir, completions, cwd)
}

/// What fish offers for the command line `line` (`complete -C`), with the generated script
/// loaded, in `cwd`: the words alone, without their descriptions.
fn fish_completes(script: &Path, line: &str, cwd: &Path) -> Vec<String> {
    let mut fish = Command::new("fish");
    fish.arg("--no-config")
        .arg("-c")
        .arg("source $argv[1]; complete -C $argv[2]")
        .args([script.as_os_str(), line.as_ref()])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    let out = run(fish, None, DEFAULT_TIMEOUT);
    out.assert_code(0, &format!("fish completion of {line:?}"));
    let mut words: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    words.sort();
    words
}

/// fish (as the package installs its script): each level of subcommands, its own options and
/// no other's, the settings keys and the formats, and no file names, where clap_complete's
/// script stopped at two levels and offered a command's subcommands again once one was typed.
fn fish_completes_every_level() {
    let (_dir, completions, cwd) = scripts_beside_a_file();
    let script = completions.join("multipass.fish");
    let fish = |line: &str| fish_completes(&script, line, &cwd);
    let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();

    assert_eq!(
        fish("multipass trust token "),
        words(&["create", "help", "list", "revoke"])
    );
    assert_eq!(
        fish("multipass trust token create --"),
        words(&["--expires", "--help", "--name", "--verbose"])
    );
    // An option's value is no subcommand, even when it is spelt like one.
    assert_eq!(
        fish("multipass -v trust token create --name list --"),
        words(&["--expires", "--help", "--name", "--verbose"])
    );
    assert!(fish("multipass trust token create ").is_empty());
    assert_eq!(
        fish("multipass trust list --format "),
        words(&["csv", "json", "table", "yaml"])
    );
    assert_eq!(fish("multipass auth --ad"), words(&["--admin"]));
    assert_eq!(fish("multipass ls --sn"), words(&["--snapshots"]));
    for line in ["multipass get ", "multipass set "] {
        assert_eq!(fish(line), words(&["local.passphrase"]), "{line:?}");
    }
    for line in NO_FILE_WANTED {
        let offered = fish(line);
        assert!(
            !offered.iter().any(|w| w == "a-file"),
            "{line:?} offers {offered:?}"
        );
    }
}

fn zsh_offers_the_settings_keys_after_get_and_set() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let script =
        std::fs::read_to_string(generate(dir.path()).join("_multipass")).expect("the zsh script");
    for command in ["set", "get"] {
        let case = script
            .split(&format!("\n({command})\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no case for {command} in the zsh script"));
        let case = case.split(";;").next().unwrap_or_default();
        assert!(
            case.contains(":(local.passphrase)'"),
            "zsh completion of `multipass {command}` offers no settings keys:\n{case}"
        );
    }
}

multipass_system_tests::process_tests! {
    plain: [bash_offers_the_settings_keys_after_get_and_set, bash_offers_no_file_names_where_no_file_is_wanted, fish_completes_every_level, zsh_offers_the_settings_keys_after_get_and_set],
}
