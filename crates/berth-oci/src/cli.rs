//! runc's command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// berth-oci: runc-compatible OCI runtime.
#[derive(Debug, Parser)]
#[command(name = "berth-oci", version, about)]
pub struct Cli {
    /// Root directory for container state (default: /run/berth-oci, or
    /// $XDG_RUNTIME_DIR/berth-oci when not root).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Log file (errors and, with --debug, debug lines).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use the systemd cgroup driver (not supported).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility (no checkpoint support).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// The verb.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a container (init waits for start).
    Create(Create),
    /// Start a created container.
    Start(Id),
    /// Print the state of a container.
    State(Id),
    /// Send a signal to the container init (or all processes).
    Kill(Kill),
    /// Delete a container.
    Delete(Delete),
    /// Create and start a container.
    Run(Run),
    /// Run a new process inside a container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps(Ps),
    /// Freeze all processes of a container.
    Pause(Id),
    /// Thaw a paused container.
    Resume(Id),
    /// Update resource limits.
    Update(Update),
    /// Container events and stats.
    Events(Events),
    /// List containers.
    List(List),
    /// Write a default config.json.
    Spec(Spec),
    /// Print the features JSON.
    Features,
}

/// Options shared by create and run.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bundle directory.
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    /// Console socket receiving the pty master.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the init pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Number of extra fds (from 3) to pass to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
}

/// `create`.
#[derive(Debug, Args)]
pub struct Create {
    #[command(flatten)]
    pub common: CreateArgs,
    /// Container id.
    pub id: String,
}

/// `run`.
#[derive(Debug, Args)]
pub struct Run {
    #[command(flatten)]
    pub common: CreateArgs,
    /// Detach from the container.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container after it exits (accepted, not needed).
    #[arg(long)]
    pub keep: bool,
    /// Container id.
    pub id: String,
}

/// A verb taking just an id.
#[derive(Debug, Args)]
pub struct Id {
    /// Container id.
    pub id: String,
}

/// `kill`.
#[derive(Debug, Args)]
pub struct Kill {
    /// Send to all processes of the container.
    #[arg(short, long)]
    pub all: bool,
    /// Container id.
    pub id: String,
    /// Signal name or number (default SIGTERM).
    pub signal: Option<String>,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct Delete {
    /// Kill a running container first; a missing container is not an error.
    #[arg(short, long)]
    pub force: bool,
    /// Container id.
    pub id: String,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// process.json to run.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pty.
    #[arg(short, long)]
    pub tty: bool,
    /// Detach.
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Console socket receiving the pty master.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Extra environment variables.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// uid[:gid].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Extra fds to pass.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct Ps {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Container id.
    pub id: String,
    /// Arguments for ps(1).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `update`.
#[derive(Debug, Args)]
pub struct Update {
    /// Resources JSON file, or - for stdin.
    #[arg(short, long)]
    pub resources: Option<String>,
    /// Container id.
    pub id: String,
}

/// `events`.
#[derive(Debug, Args)]
pub struct Events {
    /// Print stats once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Interval between stats.
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Container id.
    pub id: String,
}

/// `list`.
#[derive(Debug, Args)]
pub struct List {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `spec`.
#[derive(Debug, Args)]
pub struct Spec {
    /// Bundle directory to write config.json into.
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    /// A config for rootless containers.
    #[arg(long)]
    pub rootless: bool,
}
