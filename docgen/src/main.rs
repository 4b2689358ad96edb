//! `multipass-docgen OUTDIR`: man pages (`OUTDIR/man/`) and shell completions
//! (`OUTDIR/completions/`) from the programs' own clap definitions, so they never drift from
//! `--help`. Run by `debian/rules`.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: multipass-docgen OUTDIR")?;
    let out = Path::new(&out);
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;

    let client = multipass_cli::command().name("multipass");
    write_man(&man, &client, "1")?;
    for sub in client.get_subcommands() {
        let name = format!("multipass-{}", sub.get_name());
        let page = sub.clone().name(name).version(env!("CARGO_PKG_VERSION"));
        write_man(&man, &page, "1")?;
    }
    write_man(
        &man,
        &multipassd::args::Args::command().name("multipassd"),
        "8",
    )?;
    write_man(
        &man,
        &multipassd_helper::cli::command().name("multipassd-helper"),
        "8",
    )?;

    for (shell, file) in [
        (Shell::Bash, "multipass"),
        (Shell::Zsh, "_multipass"),
        (Shell::Fish, "multipass.fish"),
    ] {
        let mut cmd = multipass_cli::command().name("multipass");
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "multipass", &mut buf);
        fs::write(completions.join(file), buf)?;
    }
    Ok(())
}

fn write_man(dir: &Path, cmd: &clap::Command, section: &str) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("multipass")
        .source(format!("multipass {}", env!("CARGO_PKG_VERSION")))
        .render(&mut buf)?;
    let path = dir.join(format!("{}.{section}", cmd.get_name()));
    fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))
}
