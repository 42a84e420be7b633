//! Verbs about berth itself: shell completions and man pages generated from the CLI
//! definition, so they never drift from the real flags; `info`; and the body of
//! `system check` (the image store's blobs and snapshots, then the engine's containers,
//! endpoints, runtime state and mounts).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Verbs about berth itself.
#[derive(Debug, clap::Subcommand)]
pub enum SystemCommand {
    /// Show the roots, the runtime, what is stored and the defaults in force.
    Info,
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

pub fn run(g: &crate::Global, cmd: SystemCommand) -> anyhow::Result<u8> {
    let mut cli = crate::Cli::command();
    match cmd {
        SystemCommand::Info => info(g)?,
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

fn info(g: &crate::Global) -> anyhow::Result<()> {
    let eng = berth_engine::Engine::open(&g.root, &g.state)?;
    let containers = eng.list()?;
    let count = |state: &str| containers.iter().filter(|c| c.state == state).count();
    let images = crate::cmd_image::store(g)?
        .list()
        .map(|l| l.len())
        .unwrap_or(0);
    let networks = berth_engine::network::list_networks(&eng.conn, &g.root)
        .map(|n| n.len())
        .unwrap_or(0);
    let volumes = berth_engine::volume::list(&eng.conn, &g.root)
        .map(|v| v.len())
        .unwrap_or(0);
    let runtime = berth_engine::runtime::find(None)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("not found ({e})"));
    let caps = berth_engine::config::capabilities(&[], &[], false)?;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("berth version: {}", env!("CARGO_PKG_VERSION"));
    println!("kernel: {kernel}");
    println!("root: {}", g.root.display());
    println!("state: {}", g.state.display());
    println!("runtime: {runtime}");
    println!(
        "containers: {} (running {}, paused {}, stopped {})",
        containers.len(),
        count("running"),
        count("paused"),
        count("exited") + count("created")
    );
    println!("images: {images}");
    println!("networks: {networks}");
    println!("volumes: {volumes}");
    println!("defaults for `berth run` and `berth apply`:");
    println!("  capabilities: {}", caps.join(" "));
    println!("  seccomp: berth's default profile (--security-opt seccomp=FILE|unconfined)");
    println!("  masked and read-only /proc and /sys paths: yes");
    println!("  no-new-privileges: off (--security-opt no-new-privileges)");
    Ok(())
}

/// `berth system check [--repair]`: the image store, then the engine's metadata against
/// the host. Exit 1 while a problem remains; interrupted operations and leftover
/// temporary files are listed but are not problems.
pub fn check(g: &crate::Global, store: &berth_image::Store, repair: bool) -> anyhow::Result<u8> {
    let r = berth_image::gc::check(store, repair)?;
    for p in &r.problems {
        println!("problem: {p}");
    }
    let fixed = |n: usize| {
        if repair {
            format!(", {n} repaired")
        } else {
            String::new()
        }
    };
    if r.leftovers > 0 {
        println!(
            "{} leftover temporary file(s) of interrupted writes{}",
            r.leftovers,
            if repair {
                " removed"
            } else {
                " (remove with --repair)"
            }
        );
    }
    println!(
        "checked {} blobs, {} snapshots: {} problem(s){}",
        r.blobs_checked,
        r.snapshots_checked,
        r.problems.len(),
        fixed(r.repaired)
    );
    let mut remaining = r.problems.len().saturating_sub(r.repaired);
    // a root without containers has no database: do not make one (the disk may be full)
    if !g.root.join(berth_engine::store::DB_FILE).exists() {
        println!("checked 0 containers, 0 endpoints: 0 problem(s), 0 interrupted operation(s)");
        return Ok(if remaining > 0 { 1 } else { 0 });
    }
    let eng = berth_engine::Engine::open(&g.root, &g.state)?;
    let e = berth_engine::check::check(&eng, repair)?;
    for f in &e.findings {
        let kind = if f.is_interrupted() {
            "interrupted"
        } else {
            "problem"
        };
        println!("{kind}: {f}");
    }
    let problems = e.problems().count();
    let interrupted = e.findings.len() - problems;
    println!(
        "checked {} containers, {} endpoints: {problems} problem(s), {interrupted} interrupted operation(s){}",
        e.containers,
        e.endpoints,
        fixed(e.repaired)
    );
    if !repair {
        remaining += problems;
    } else if e.repaired < e.findings.len() {
        remaining += e.findings.len() - e.repaired;
    }
    Ok(if remaining > 0 { 1 } else { 0 })
}
