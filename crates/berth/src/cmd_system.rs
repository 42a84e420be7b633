//! Verbs about berth itself: shell completions and man pages generated from the CLI
//! definition, so they never drift from the real flags.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Verbs about berth itself.
#[derive(Debug, clap::Subcommand)]
pub enum SystemCommand {
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for berth and every verb into DIR (berth.1, berth-run.1, ...).
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

pub fn run(cmd: SystemCommand) -> anyhow::Result<u8> {
    let mut cli = crate::Cli::command();
    match cmd {
        SystemCommand::Completion { shell } => {
            clap_complete::generate(shell, &mut cli, "berth", &mut std::io::stdout());
        }
        SystemCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("create man page directory {}", dir.display()))?;
            cli.build();
            let n = write_pages(&cli, "berth", &dir)?;
            println!("wrote {n} man pages to {}", dir.display());
        }
    }
    Ok(0)
}

/// One page per command, named like git's (`berth-network-ls.1`); returns how many.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let path = dir.join(format!("{name}.1"));
    // clap names are 'static; a man run renders each page once, so leaking is fine
    let page = cmd.clone().name(&*String::leak(name.to_string()));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .with_context(|| format!("render man page {name}"))?;
    std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}
