//! `berth`: the user CLI with docker-like and kubectl-like verbs.
//!
//! Glue only: it parses arguments and calls the library crates. Each group of verbs
//! lives in its own module (`cmd_*.rs`) and is flattened into the top-level command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod cmd_build;
mod cmd_container;
mod cmd_image;
mod cmd_kube;
mod cmd_kube_describe;
mod cmd_network;
mod cmd_registry;
mod cmd_system;
mod cmd_volume;

/// berth: a container toolkit (images, containers, builds, manifests).
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every verb understands.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Root of persistent data (images, metadata); rootless:
    /// $XDG_DATA_HOME/berth or ~/.local/share/berth.
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value_os_t = default_root()
    )]
    pub root: PathBuf,
    /// Root of runtime state (running containers); rootless: $XDG_RUNTIME_DIR/berth.
    #[arg(long, global = true, env = "BERTH_STATE", default_value_os_t = default_state())]
    pub state: PathBuf,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "BERTH_LOG", default_value = "warn")]
    pub log_level: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show berth's version.
    Version,
    #[command(flatten)]
    Build(cmd_build::BuildCommand),
    #[command(flatten)]
    Image(cmd_image::ImageCommand),
    #[command(flatten)]
    Registry(cmd_registry::RegistryCommand),
    #[command(flatten)]
    Network(cmd_network::NetworkCommand),
    #[command(flatten)]
    Container(cmd_container::ContainerCommand),
    #[command(flatten)]
    Volume(cmd_volume::VolumeCommand),
    #[command(flatten)]
    System(cmd_system::SystemCommand),
    #[command(flatten)]
    Kube(cmd_kube::KubeCommand),
}

/// `/var/lib/berth` for root; an unprivileged user's own root otherwise.
fn default_root() -> PathBuf {
    if !berth_runtime::rootless::is_rootless() {
        return PathBuf::from("/var/lib/berth");
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_DATA_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("berth")
}

/// `/run/berth` for root; `$XDG_RUNTIME_DIR/berth` for an unprivileged user.
fn default_state() -> PathBuf {
    berth_runtime::rootless::default_state_root("berth")
}

/// The monitor's hidden verb exactly as the engine's launcher spells it, read without
/// clap: every container start runs it, and building the whole command tree to parse
/// it costs about a millisecond.
fn monitor_cli() -> Option<Cli> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match &args[..] {
        [r, root, s, state, verb, id]
            if r == "--root" && s == "--state" && verb == "internal-monitor" =>
        {
            Some(Cli {
                global: Global {
                    root: root.into(),
                    state: state.into(),
                    log_level: std::env::var("BERTH_LOG").unwrap_or_else(|_| "warn".into()),
                },
                command: Command::Container(cmd_container::ContainerCommand::InternalMonitor {
                    id: id.to_str()?.to_owned(),
                }),
            })
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    // `berth ps | head` must end quietly like other Unix tools, not panic on EPIPE
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    berth_engine::trace::mark("main");
    let mut cli = monitor_cli().unwrap_or_else(Cli::parse);
    // a relative --root or --state would be read from other directories later (the
    // runtime's config.json, the monitor): resolve them once against ours
    for dir in [&mut cli.global.root, &mut cli.global.state] {
        if let Ok(abs) = std::path::absolute(&*dir) {
            *dir = abs;
        }
    }
    berth_engine::trace::mark("parsed");
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.global.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Rootless: every verb runs as root of the user's own user and mount namespaces
    // (held by a pause process), entered here while the process has one thread.
    if berth_runtime::rootless::is_rootless()
        && !matches!(cli.command, Command::Version)
        && let Err(e) =
            berth_runtime::rootless::join_user_namespace(&cli.global.state.join("userns"))
    {
        eprintln!("berth: rootless: {e}");
        return ExitCode::from(125);
    }
    let result: anyhow::Result<u8> = match cli.command {
        Command::Version => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Build(cmd) => cmd_build::run(&cli.global, cmd),
        Command::Image(cmd) => cmd_image::run(&cli.global, cmd),
        Command::Registry(cmd) => cmd_registry::run(&cli.global, cmd),
        Command::Network(cmd) => cmd_network::run(&cli.global, cmd),
        Command::Container(cmd) => cmd_container::run(&cli.global, cmd),
        Command::Volume(cmd) => cmd_volume::run(&cli.global, cmd),
        Command::System(cmd) => cmd_system::run(&cli.global, cmd),
        Command::Kube(cmd) => cmd_kube::run(&cli.global, cmd),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("berth: {err:#}");
            // 125 like docker: berth itself failed
            ExitCode::from(125)
        }
    }
}
