//! Container verbs: run, create, start, stop, restart, kill, rm, ps, logs, wait,
//! inspect, exec, pause, unpause, top, stats, port, rename, cp (over berth-engine).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use berth_engine::container::{Container, state};
use berth_engine::{CreateConfig, Engine, Error as EngineError, logs, monitor, trace};
use serde_json::{Value, json};

use crate::Global;

/// Container verbs, flattened into the top-level command.
#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container from an image.
    Run(Box<RunArgs>),
    /// Create a container without starting it.
    Create(Box<CreateArgs>),
    /// Start stopped containers.
    Start {
        /// Attach stdout/stderr and return the container's exit code.
        #[arg(short, long)]
        attach: bool,
        /// Attach stdin.
        #[arg(short, long)]
        interactive: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    Stop {
        /// Seconds to wait before killing.
        #[arg(short = 't', long = "time", visible_alias = "timeout")]
        time: Option<u32>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        /// Seconds to wait before killing.
        #[arg(short = 't', long = "time", visible_alias = "timeout")]
        time: Option<u32>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        /// Signal (name or number).
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Stop and remove running containers.
        #[arg(short, long)]
        force: bool,
        /// Remove anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(PsArgs),
    /// Show a container's logs.
    Logs {
        /// Follow until the container stops.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (or "all").
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Only since a time (RFC 3339, unix seconds, or a duration like 10m).
        #[arg(long)]
        since: Option<String>,
        /// Only before a time.
        #[arg(long)]
        until: Option<String>,
        /// Prefix each line with its time.
        #[arg(short, long)]
        timestamps: bool,
        /// Container, or a pod of `berth apply`.
        container: String,
        /// For a pod: which of its containers.
        #[arg(short = 'c', long = "container")]
        pod_container: Option<String>,
        /// For a pod: its namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Wait for containers to stop; print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers (or volumes) as JSON.
    Inspect {
        /// Go-template-like format (`{{.State.Status}}`, `{{json .Config}}`).
        #[arg(short, long)]
        format: Option<String>,
        /// Containers.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Freeze containers.
    Pause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw containers.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a container's processes; `top pods [NAME]` shows pods' CPU and memory.
    Top {
        /// Container, or `pods`.
        container: String,
        /// With `pods`: one pod.
        pod: Option<String>,
        /// With `pods`: the namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// With `pods`: every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show resource usage.
    Stats {
        /// One sample, then exit.
        #[arg(long)]
        no_stream: bool,
        /// Containers (default: running ones).
        containers: Vec<String>,
    },
    /// Show published ports.
    Port {
        /// Container.
        container: String,
        /// Only this container port (`80` or `80/tcp`).
        port: Option<String>,
    },
    /// Rename a container.
    Rename {
        /// Container.
        container: String,
        /// New name.
        new_name: String,
    },
    /// Copy files between a container and the host (CONTAINER:PATH on one side; `-`
    /// on the other side is a tar stream on stdin or stdout).
    Cp {
        /// Source: CONTAINER:PATH, a host path, or `-` (a tar stream on stdin).
        src: String,
        /// Destination: CONTAINER:PATH, a host path, or `-` (a tar stream on stdout).
        dest: String,
    },
    /// Attach to a running container: its output, and its input when it was started
    /// with -i. Ends with the container's exit code, or at the detach keys.
    Attach {
        /// Do not send stdin.
        #[arg(long)]
        no_stdin: bool,
        /// Forward the signals berth receives to the container (without a terminal).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        sig_proxy: bool,
        /// Keys that detach, comma separated: ctrl-<letter>, ctrl-@, ctrl-[ or a
        /// single character.
        #[arg(long, default_value = "ctrl-p,ctrl-q")]
        detach_keys: String,
        /// Container.
        container: String,
    },
    /// The per-container monitor (started by run/start; not for users).
    #[command(hide = true, name = "internal-monitor")]
    InternalMonitor {
        /// Container id.
        id: String,
    },
}

/// Flags of `create` (and `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Name.
    #[arg(long)]
    name: Option<String>,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Environment variable (KEY=value, or KEY to pass the caller's).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// File of KEY=value lines.
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// user[:group].
    #[arg(short, long)]
    user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Network: bridge, host, none, a network name, container:NAME|ID (share that
    /// running container's network namespace) or sandbox:NAME.
    #[arg(long, visible_alias = "net", default_value = "")]
    network: String,
    /// Extra names on a user network.
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// A fixed IPv4 address on the network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// Add a hosts-file line: NAME:IP.
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// DNS search domain (repeatable).
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// Publish a port: [ip:]host:container[/proto].
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    /// Publish every exposed port on a free host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Expose a port (or range).
    #[arg(long)]
    expose: Vec<String>,
    /// Bind or volume: host:ctr[:ro], name:ctr[:ro], or ctr.
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=..,target=..[,readonly].
    #[arg(long)]
    mount: Vec<String>,
    /// A tmpfs: /path[:options].
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Read-only root filesystem.
    #[arg(long)]
    read_only: bool,
    /// Memory limit (512m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs (1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Add capabilities.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop capabilities.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Every capability, no seccomp, every device.
    #[arg(long)]
    privileged: bool,
    /// seccomp=FILE|unconfined, no-new-privileges.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Run a small init as pid 1 (reaps zombies, forwards signals).
    #[arg(long)]
    init: bool,
    /// Label (key=value).
    #[arg(short, long)]
    label: Vec<String>,
    /// Pull policy: missing, always, never.
    #[arg(long, default_value = "missing")]
    pull: String,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Runtime binary (runc-compatible), default berth-oci.
    #[arg(long)]
    runtime: Option<String>,
    /// Signal to stop the container.
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds to wait at stop before SIGKILL.
    #[arg(long)]
    stop_timeout: Option<u32>,
    /// Image.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Run in the background and print the id.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    create: CreateArgs,
}

/// `ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// All containers (default: running).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: name=, status=, label=, id=.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format: table, json, or a template like `{{.ID}}\t{{.Names}}`.
    #[arg(long)]
    format: Option<String>,
    /// Full ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Only the latest container.
    #[arg(short, long)]
    latest: bool,
}

/// `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Environment variable.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// user[:group].
    #[arg(short, long)]
    user: Option<String>,
    /// Privileged (every capability).
    #[arg(long)]
    privileged: bool,
    /// For a pod: which of its containers.
    #[arg(short = 'c', long = "container")]
    pod_container: Option<String>,
    /// For a pod: its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Container, or a pod of `berth apply`.
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn engine(g: &Global) -> anyhow::Result<Engine> {
    Ok(Engine::open(&g.root, &g.state)?)
}

fn launcher(g: &Global) -> anyhow::Result<berth_engine::Launcher> {
    Ok(monitor::self_launcher([
        "--root".as_ref(),
        g.root.as_os_str(),
        "--state".as_ref(),
        g.state.as_os_str(),
        "internal-monitor".as_ref(),
    ])?)
}

/// Prints an engine error like docker and gives its exit code.
fn report(e: &anyhow::Error) -> u8 {
    eprintln!("berth: {e:#}");
    e.downcast_ref::<EngineError>()
        .map(EngineError::exit_code)
        .unwrap_or(125)
}

/// Runs a container verb; returns the exit code.
pub fn run(g: &Global, cmd: ContainerCommand) -> anyhow::Result<u8> {
    match cmd {
        ContainerCommand::InternalMonitor { id } => {
            let code = monitor::run(&g.root, &g.state, &id);
            Ok(code.clamp(0, 255) as u8)
        }
        ContainerCommand::Run(a) => match run_container(g, *a) {
            Ok(code) => Ok(code),
            Err(e) => Ok(report(&e)),
        },
        ContainerCommand::Create(a) => {
            let eng = engine(g)?;
            let c = create(g, &eng, *a)?;
            println!("{}", c.id);
            Ok(0)
        }
        ContainerCommand::Start {
            attach,
            interactive,
            containers,
        } => {
            let eng = engine(g)?;
            let l = launcher(g)?;
            let mut code = 0;
            for name in containers {
                let r = (|| -> anyhow::Result<u8> {
                    let c = eng.get(&name)?;
                    if attach {
                        let h = eng.start(
                            &c.id,
                            &l,
                            Some(monitor::Attach {
                                stdin: interactive,
                                output: true,
                            }),
                        )?;
                        return match h {
                            Some(h) => foreground(&h, &c, interactive),
                            None => bail!("container {name} is already running"),
                        };
                    }
                    if let Some(h) = eng.start(&c.id, &l, None)? {
                        h.started()?;
                    }
                    println!("{name}");
                    Ok(0)
                })();
                match r {
                    Ok(c) => code = c,
                    Err(e) => code = report(&e).max(1),
                }
            }
            Ok(code)
        }
        ContainerCommand::Stop { time, containers } => each(g, &containers, |eng, n| {
            eng.stop(n, time)?;
            println!("{n}");
            Ok(())
        }),
        ContainerCommand::Restart { time, containers } => {
            let l = launcher(g)?;
            each(g, &containers, |eng, n| {
                eng.stop(n, time)?;
                if let Some(h) = eng.start(n, &l, None)? {
                    h.started()?;
                }
                println!("{n}");
                Ok(())
            })
        }
        ContainerCommand::Kill { signal, containers } => {
            let sig = berth_engine::config::signal_number(&signal)?;
            each(g, &containers, |eng, n| {
                eng.kill(n, sig)?;
                println!("{n}");
                Ok(())
            })
        }
        ContainerCommand::Rm {
            force,
            volumes,
            containers,
        } => each(g, &containers, |eng, n| {
            eng.remove(n, force, volumes)?;
            println!("{n}");
            Ok(())
        }),
        ContainerCommand::Ps(a) => ps(g, a),
        ContainerCommand::Logs {
            follow,
            tail,
            since,
            until,
            timestamps,
            container,
            pod_container,
            namespace,
        } => {
            let container = crate::cmd_kube::pod_container(
                g,
                &container,
                pod_container.as_deref(),
                &namespace,
            )?
            .unwrap_or(container);
            show_logs(g, &container, follow, &tail, since, until, timestamps)
        }
        ContainerCommand::Wait { containers } => {
            let eng = engine(g)?;
            let mut rc = 0;
            for n in containers {
                match eng.wait(&n) {
                    Ok(code) => println!("{code}"),
                    Err(e) => rc = report(&e.into()).max(1),
                }
            }
            Ok(rc)
        }
        ContainerCommand::Inspect { format, names } => inspect(g, format.as_deref(), &names),
        ContainerCommand::Exec(a) => match exec(g, a) {
            Ok(code) => Ok(code),
            Err(e) => Ok(report(&e)),
        },
        ContainerCommand::Pause { containers } => each(g, &containers, |eng, n| {
            eng.pause(n, true)?;
            println!("{n}");
            Ok(())
        }),
        ContainerCommand::Unpause { containers } => each(g, &containers, |eng, n| {
            eng.pause(n, false)?;
            println!("{n}");
            Ok(())
        }),
        ContainerCommand::Top {
            container,
            pod,
            namespace,
            all_namespaces,
        } => match container.as_str() {
            "pods" | "pod" | "po" => crate::cmd_kube::top_pods(
                g,
                pod.as_deref(),
                (!all_namespaces).then_some(namespace.as_str()),
            ),
            _ => top(g, &container),
        },
        ContainerCommand::Stats {
            no_stream,
            containers,
        } => stats(g, no_stream, &containers),
        ContainerCommand::Port { container, port } => {
            let eng = engine(g)?;
            let c = eng.get(&container)?;
            let want = port.map(|p| {
                if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                }
            });
            for p in c.attachment.iter().flat_map(|a| &a.ports) {
                let key = format!("{}/{}", p.container_port, p.proto);
                match &want {
                    Some(w) if *w == key => println!("{}:{}", p.host_ip, p.host_port),
                    Some(_) => {}
                    None => println!("{key} -> {}:{}", p.host_ip, p.host_port),
                }
            }
            Ok(0)
        }
        ContainerCommand::Rename {
            container,
            new_name,
        } => {
            engine(g)?.rename(&container, &new_name)?;
            Ok(0)
        }
        ContainerCommand::Attach {
            no_stdin,
            sig_proxy,
            detach_keys,
            container,
        } => attach(g, no_stdin, sig_proxy, &detach_keys, &container),
        ContainerCommand::Cp { src, dest } => {
            let eng = engine(g)?;
            let split = |s: &str| -> Option<(String, String)> {
                if s.starts_with('/') || s.starts_with('.') {
                    return None;
                }
                s.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            };
            match (split(&src), split(&dest)) {
                (Some((c, p)), None) if dest == "-" => {
                    let c = eng.get(&c)?;
                    let out = std::io::stdout().lock();
                    berth_engine::cp::archive_from_container(&eng, &c, &p, out)?;
                }
                (Some((c, p)), None) => {
                    let c = eng.get(&c)?;
                    berth_engine::cp::from_container(&eng, &c, &p, Path::new(&dest))?;
                }
                (None, Some((c, p))) if src == "-" => {
                    let c = eng.get(&c)?;
                    let input = std::io::stdin().lock();
                    berth_engine::cp::archive_to_container(&eng, &c, input, &p)?;
                }
                (None, Some((c, p))) => {
                    let c = eng.get(&c)?;
                    berth_engine::cp::to_container(&eng, &c, Path::new(&src), &p)?;
                }
                _ => bail!("cp: exactly one of SRC and DEST must be CONTAINER:PATH"),
            }
            Ok(0)
        }
    }
}

fn each(
    g: &Global,
    names: &[String],
    f: impl Fn(&Engine, &str) -> anyhow::Result<()>,
) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let mut rc = 0;
    for n in names {
        if let Err(e) = f(&eng, n) {
            eprintln!("berth: {e:#}");
            rc = 1;
        }
    }
    Ok(rc)
}

fn to_config(a: &CreateArgs) -> anyhow::Result<CreateConfig> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(berth_engine::config::read_env_file(f)?);
    }
    env.extend(a.env.iter().cloned());
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut exposed = Vec::new();
    for e in &a.expose {
        exposed.push(if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        });
    }
    if !["missing", "always", "never"].contains(&a.pull.as_str()) {
        bail!("invalid pull policy {:?} (missing, always, never)", a.pull);
    }
    // Rootless (inside the user's own user namespace): bridges, veths and nft rules
    // need host root; the default network is slirp4netns, other modes are refused.
    if berth_runtime::rootless::in_user_namespace()
        && !["", "bridge", "none"].contains(&a.network.as_str())
    {
        bail!(
            "rootless berth run supports the default network (slirp4netns) and --network none; {:?} needs host root (bridges, user networks, host and shared namespaces are not implemented for rootless containers)",
            a.network
        );
    }
    Ok(CreateConfig {
        image: a.image.clone(),
        cmd: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        name: a.name.clone(),
        network: berth_engine::network::Request {
            network: a.network.clone(),
            ports: a.publish.clone(),
            publish_all: a.publish_all,
            exposed,
            hostname: a.hostname.clone().unwrap_or_default(),
            name: a.name.clone().unwrap_or_default(),
            aliases: a.network_alias.clone(),
            ip: a.ip,
            extra_hosts: a.add_host.clone(),
            dns_search: a.dns_search.clone(),
            embedded_dns: false,
        },
        volumes: a.volume.clone(),
        mounts: a.mount.clone(),
        tmpfs: a.tmpfs.clone(),
        read_only: a.read_only,
        memory: a.memory.clone(),
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        security_opt: a.security_opt.clone(),
        restart: a.restart.clone(),
        init: a.init,
        labels,
        tty: a.tty,
        interactive: a.interactive,
        auto_remove: a.rm,
        runtime: a.runtime.clone(),
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
    })
}

/// The image, pulled first when missing (or `--pull always`), like `berth pull`.
fn ensure_image(
    g: &Global,
    name: &str,
    policy: &str,
) -> anyhow::Result<(berth_image::Store, berth_image::Image)> {
    let store = crate::cmd_image::store(g)?;
    let found = berth_engine::container::find_image(&store, name)?;
    match (found, policy) {
        (Some(img), "missing" | "never") => return Ok((store, img)),
        (None, "never") => bail!("no such image: {name} (and --pull never)"),
        _ => {}
    }
    eprintln!("Unable to find image '{name}' locally");
    let args = crate::cmd_registry::PullArgs {
        platform: "linux/amd64".into(),
        quiet: true,
        insecure: false,
        no_unpack: false,
        reference: name.to_string(),
    };
    crate::cmd_registry::run(g, crate::cmd_registry::RegistryCommand::Pull(args))
        .with_context(|| format!("no such image {name} locally, and pulling it failed"))?;
    let img = berth_engine::container::find_image(&store, name)?
        .with_context(|| format!("image {name} not in the store after pulling it"))?;
    Ok((store, img))
}

fn create(g: &Global, eng: &Engine, a: CreateArgs) -> anyhow::Result<Container> {
    let cfg = to_config(&a)?;
    berth_engine::config::validate(&cfg)?;
    let (store, img) = ensure_image(g, &a.image, &a.pull)?;
    trace::mark("cli: image resolved");
    Ok(eng.create(cfg, &store, &img)?)
}

fn run_container(g: &Global, a: RunArgs) -> anyhow::Result<u8> {
    trace::mark("cli: run");
    let eng = engine(g)?;
    trace::mark("cli: engine open");
    let interactive = a.create.interactive;
    let c = create(g, &eng, a.create)?;
    trace::mark("cli: created");
    let l = launcher(g)?;
    if a.detach {
        let h = eng
            .start(&c.id, &l, None)?
            .context("container did not start")?;
        h.started()?;
        println!("{}", c.id);
        return Ok(0);
    }
    let h = eng
        .start(
            &c.id,
            &l,
            Some(monitor::Attach {
                stdin: interactive,
                output: true,
            }),
        )?
        .context("container did not start")?;
    foreground(&h, &c, interactive)
}

/// Restores the terminal when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        match nix::sys::termios::tcgetattr(&stdin) {
            Ok(orig) => {
                let mut raw = orig.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ =
                    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
                RawMode(Some(orig))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn copy_winsize(from: RawFd, to: RawFd) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills ws; TIOCSWINSZ reads it.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Forwards the signals a foreground CLI gets to `pid` (SIGWINCH resizes `pty`).
fn forward_signals(pid: i32, pty: Option<RawFd>) {
    let mut set = nix::sys::signal::SigSet::empty();
    use nix::sys::signal::Signal::*;
    for s in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH] {
        set.add(s);
    }
    let _ = set.thread_block();
    std::thread::spawn(move || {
        loop {
            let Ok(sig) = set.wait() else { return };
            if sig == SIGWINCH {
                if let Some(p) = pty {
                    copy_winsize(0, p);
                }
                continue;
            }
            if pty.is_some() && sig == SIGINT {
                // with a terminal, ^C reaches the container through the pty
                continue;
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    });
}

fn foreground(h: &monitor::Handle, c: &Container, interactive: bool) -> anyhow::Result<u8> {
    let raw = (c.config.tty && interactive && std::io::stdin().is_terminal()).then(RawMode::enter);
    trace::mark("cli: monitor spawned");
    let (pty, pid) = match h.started() {
        Ok(x) => x,
        Err(e) => {
            drop(raw);
            let code = e.exit_code();
            eprintln!("berth: {e}");
            return Ok(code);
        }
    };
    let pty_fd: Option<OwnedFd> = pty;
    if let Some(p) = &pty_fd {
        copy_winsize(0, p.as_raw_fd());
    }
    trace::mark("cli: started");
    forward_signals(pid, pty_fd.as_ref().map(|p| p.as_raw_fd()));
    let code = h.exited();
    trace::mark("cli: exited");
    drop(raw);
    let _ = std::io::stdout().flush();
    Ok(code?.clamp(0, 255) as u8)
}

/// `ctrl-p,ctrl-q` as bytes.
fn parse_detach_keys(s: &str) -> anyhow::Result<Vec<u8>> {
    s.split(',')
        .map(|k| {
            let k = k.trim();
            if let Some(c) = k.strip_prefix("ctrl-") {
                match c.as_bytes() {
                    [b @ b'a'..=b'z'] => Ok(b - b'a' + 1),
                    [b'@'] => Ok(0),
                    [b'['] => Ok(27),
                    [b'\\'] => Ok(28),
                    [b']'] => Ok(29),
                    [b'^'] => Ok(30),
                    [b'_'] => Ok(31),
                    _ => bail!("invalid detach key {k:?}"),
                }
            } else if k.len() == 1 {
                Ok(k.as_bytes()[0])
            } else {
                bail!("invalid detach key {k:?}")
            }
        })
        .collect()
}

fn send_winsize(sock: &std::os::unix::net::UnixStream) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ fills ws.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            let mut data = ws.ws_row.to_be_bytes().to_vec();
            data.extend_from_slice(&ws.ws_col.to_be_bytes());
            let _ =
                berth_engine::attach::write_frame(&mut &*sock, berth_engine::attach::RESIZE, &data);
            return;
        }
    }
}

fn attach(
    g: &Global,
    no_stdin: bool,
    sig_proxy: bool,
    detach_keys: &str,
    name: &str,
) -> anyhow::Result<u8> {
    use berth_engine::attach as at;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let keys = parse_detach_keys(detach_keys)?;
    let eng = engine(g)?;
    let c = eng.get(name)?;
    if !matches!(c.state.as_str(), state::RUNNING | state::PAUSED) {
        bail!("cannot attach to a stopped container, start it first");
    }
    let sock = at::connect(&eng, &c.id).with_context(|| format!("attach to container {name}"))?;
    let tty = c.config.tty;
    let stdin_on = c.config.interactive && !no_stdin;
    let raw = (tty && stdin_on && std::io::stdin().is_terminal()).then(RawMode::enter);
    if tty {
        send_winsize(&sock);
    }
    let proxy = sig_proxy && !tty;
    if proxy || tty {
        let mut set = nix::sys::signal::SigSet::empty();
        use nix::sys::signal::Signal::*;
        set.add(SIGWINCH);
        if proxy {
            for s in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] {
                set.add(s);
            }
        }
        let _ = set.thread_block();
        let (pid, out) = (c.pid as i32, sock.try_clone()?);
        std::thread::spawn(move || {
            while let Ok(sig) = set.wait() {
                if sig == SIGWINCH {
                    if tty {
                        send_winsize(&out);
                    }
                    continue;
                }
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
        });
    }
    let detached = Arc::new(AtomicBool::new(false));
    if stdin_on {
        let (out, detached) = (sock.try_clone()?, detached.clone());
        std::thread::spawn(move || {
            let mut held: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a live buffer.
                let n = unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                if n <= 0 {
                    // stdin ended: the container's stays open (docker's -d -i)
                    return;
                }
                let mut send = Vec::with_capacity(n as usize);
                for &b in &buf[..n as usize] {
                    if !keys.is_empty() && b != keys[held.len()] {
                        // not the sequence after all: what was held goes through
                        send.append(&mut held);
                    }
                    if !keys.is_empty() && b == keys[held.len()] {
                        held.push(b);
                        if held.len() == keys.len() {
                            detached.store(true, Ordering::SeqCst);
                            let _ = out.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        continue;
                    }
                    send.push(b);
                }
                if !send.is_empty() && at::write_frame(&mut &out, at::STDIN, &send).is_err() {
                    return;
                }
            }
        });
    }
    let mut reader = std::io::BufReader::new(&sock);
    let mut code = None;
    while let Ok(Some((kind, data))) = at::read_frame(&mut reader) {
        match kind {
            at::STDOUT => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&data);
                let _ = o.flush();
            }
            at::STDERR => {
                let _ = std::io::stderr().write_all(&data);
            }
            at::EXIT if data.len() == 4 => {
                code = Some(i32::from_be_bytes([data[0], data[1], data[2], data[3]]));
                break;
            }
            _ => {}
        }
    }
    drop(raw);
    if detached.load(Ordering::SeqCst) {
        eprintln!("read escape sequence");
        return Ok(0);
    }
    let code = match code {
        Some(c) => i64::from(c),
        None => eng.wait(&c.id)?,
    };
    Ok(code.clamp(0, 255) as u8)
}

fn short(id: &str, no_trunc: bool) -> &str {
    if no_trunc { id } else { &id[..12] }
}

fn command_text(eng: &Engine, c: &Container) -> String {
    let tmpl: Value = std::fs::read(eng.container_dir(&c.id).join("spec.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    tmpl["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn ports_text(c: &Container) -> String {
    c.attachment
        .iter()
        .flat_map(|a| &a.ports)
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ps_row(eng: &Engine, c: &Container, no_trunc: bool) -> Value {
    let mut cmd = command_text(eng, c);
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
    }
    json!({
        "ID": short(&c.id, no_trunc),
        "Names": c.name,
        "Image": c.image,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": c.created,
        "Status": c.status_text(),
        "State": match c.state.as_str() { state::STARTING => state::CREATED, s => s },
        "Ports": ports_text(c),
        "Labels": c.labels().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Networks": if c.config.network.network.is_empty() { "bridge" } else { &c.config.network.network },
        "Mounts": c.mounts.iter().map(|m| m.name.clone().unwrap_or_else(|| m.source.to_string_lossy().into_owned())).collect::<Vec<_>>().join(","),
    })
}

fn matches_filter(c: &Container, f: &str) -> anyhow::Result<bool> {
    let (k, v) = f
        .split_once('=')
        .with_context(|| format!("invalid filter {f:?} (key=value)"))?;
    Ok(match k {
        "name" => c.name.contains(v),
        "id" => c.id.starts_with(v),
        "status" => {
            let s = match c.state.as_str() {
                state::STARTING => state::CREATED,
                s => s,
            };
            s == v
        }
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.labels().get(lk).is_some_and(|x| x == lv),
            None => c.labels().contains_key(v),
        },
        "ancestor" => c.image == v || c.image_id.contains(v),
        _ => bail!("invalid filter key {k:?} (name, id, status, label, ancestor)"),
    })
}

/// Renders a Go-template-like format over a JSON value: `{{.A.B}}`, `{{json .A}}`,
/// `{{json .}}`, `\t` and `\n`.
pub fn render(tmpl: &str, v: &Value) -> String {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find("}}") else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let expr = rest[i + 2..i + j].trim();
        rest = &rest[i + j + 2..];
        let (as_json, path) = match expr.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, expr),
        };
        let mut cur = v;
        for part in path
            .trim_start_matches('.')
            .split('.')
            .filter(|p| !p.is_empty())
        {
            cur = cur.get(part).unwrap_or(&Value::Null);
        }
        if as_json {
            out.push_str(&cur.to_string());
        } else {
            match cur {
                Value::String(s) => out.push_str(s),
                Value::Null => out.push_str("<no value>"),
                other => out.push_str(&other.to_string()),
            }
        }
    }
    out.push_str(rest);
    out.replace("\\t", "\t").replace("\\n", "\n")
}

fn ps(g: &Global, a: PsArgs) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let mut list = Vec::new();
    for c in eng.list()? {
        if !a.all
            && !matches!(
                c.state.as_str(),
                state::RUNNING | state::PAUSED | state::RESTARTING
            )
            && a.filter.is_empty()
        {
            continue;
        }
        let mut ok = true;
        for f in &a.filter {
            ok &= matches_filter(&c, f)?;
        }
        if !a.all
            && !a.filter.iter().any(|f| f.starts_with("status="))
            && !matches!(
                c.state.as_str(),
                state::RUNNING | state::PAUSED | state::RESTARTING
            )
        {
            ok = false;
        }
        if ok {
            list.push(c);
        }
    }
    if a.latest {
        list.truncate(1);
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for c in &list {
            writeln!(out, "{}", short(&c.id, a.no_trunc))?;
        }
        return Ok(0);
    }
    let rows: Vec<Value> = list.iter().map(|c| ps_row(&eng, c, a.no_trunc)).collect();
    match a.format.as_deref() {
        Some("json") => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        Some(t) if t != "table" => {
            let (header, t) = match t.strip_prefix("table ") {
                Some(t) => (true, t),
                None => (false, t),
            };
            if header {
                let h = t
                    .replace("{{", "")
                    .replace("}}", "")
                    .replace('.', "")
                    .to_ascii_uppercase();
                writeln!(out, "{}", h.replace("\\T", "\t"))?;
            }
            for r in &rows {
                writeln!(out, "{}", render(t, r))?;
            }
        }
        _ => {
            writeln!(
                out,
                "{:<14}{:<22}{:<24}{:<26}{:<28}{:<22}NAMES",
                "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"
            )?;
            for (c, r) in list.iter().zip(&rows) {
                let created = berth_engine::timefmt::parse(&c.created)
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .map(|d| format!("{} ago", berth_engine::timefmt::human(d)))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<14}{:<22}{:<24}{:<26}{:<28}{:<22}{}",
                    r["ID"].as_str().unwrap_or_default(),
                    r["Image"].as_str().unwrap_or_default(),
                    r["Command"].as_str().unwrap_or_default(),
                    created,
                    r["Status"].as_str().unwrap_or_default(),
                    r["Ports"].as_str().unwrap_or_default(),
                    c.name
                )?;
            }
        }
    }
    Ok(0)
}

fn show_logs(
    g: &Global,
    container: &str,
    follow: bool,
    tail: &str,
    since: Option<String>,
    until: Option<String>,
    timestamps: bool,
) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let c = eng.get(container)?;
    let now = SystemTime::now();
    let parse = |s: Option<String>, what: &str| -> anyhow::Result<Option<SystemTime>> {
        s.map(|s| {
            berth_engine::timefmt::parse_since(&s, now)
                .with_context(|| format!("invalid --{what} value {s:?}"))
        })
        .transpose()
    };
    let filter = logs::Filter {
        tail: if tail == "all" || tail == "-1" {
            None
        } else {
            Some(
                tail.parse()
                    .with_context(|| format!("invalid --tail value {tail:?}"))?,
            )
        },
        since: parse(since, "since")?,
        until: parse(until, "until")?,
    };
    let path = eng.log_path(&c.id);
    let emit = |e: &logs::Entry| -> std::io::Result<()> {
        let text = if timestamps {
            format!("{} {}", e.time, e.log)
        } else {
            e.log.clone()
        };
        if e.stream == "stderr" {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes())?;
            err.flush()
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        }
    };
    let (entries, offset) = logs::read(&path, &filter)?;
    for e in &entries {
        emit(e)?;
    }
    if follow {
        let id = c.id.clone();
        let follow_filter = logs::Filter {
            tail: None,
            ..filter
        };
        logs::follow(&path, offset, &follow_filter, emit, || match eng.get(&id) {
            Ok(c) => {
                !c.is_active() && !berth_engine::container::monitor_alive(c.monitor_pid, &c.id)
            }
            Err(_) => true,
        })?;
    }
    Ok(0)
}

fn inspect(g: &Global, format: Option<&str>, names: &[String]) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let mut out = Vec::new();
    let mut rc = 0;
    for n in names {
        match eng.get(n) {
            Ok(c) => out.push(eng.inspect(&c)),
            Err(e) => match berth_engine::volume::get(&eng.conn, &eng.root, n) {
                Ok(v) => out.push(serde_json::to_value(v)?),
                Err(_) => {
                    eprintln!("berth: {e}");
                    rc = 1;
                }
            },
        }
    }
    match format {
        Some(f) => {
            for v in &out {
                println!("{}", render(f, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(rc)
}

fn exec(g: &Global, a: ExecArgs) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let target =
        crate::cmd_kube::pod_container(g, &a.container, a.pod_container.as_deref(), &a.namespace)?
            .unwrap_or_else(|| a.container.clone());
    let c = eng.get(&target)?;
    if c.state != state::RUNNING {
        bail!("container {} is not running", a.container);
    }
    let rt = eng.runtime(&c)?;
    let bundle_cfg = eng.run_dir(&c.id).join("bundle/config.json");
    let spec: Value = serde_json::from_slice(
        &std::fs::read(&bundle_cfg).with_context(|| format!("read {}", bundle_cfg.display()))?,
    )?;
    let mut p = spec["process"].clone();
    p["args"] = json!(a.command);
    p["terminal"] = json!(a.tty);
    let mut env: Vec<String> = serde_json::from_value(p["env"].clone()).unwrap_or_default();
    for e in berth_engine::config::resolve_env(&a.env) {
        let k = e.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(&k));
        env.push(e);
    }
    p["env"] = json!(env);
    if let Some(w) = &a.workdir {
        p["cwd"] = json!(w);
    }
    if let Some(u) = &a.user {
        let (uid, gid, extra) = berth_image::spec::resolve_user(u, &eng.rootfs(&c.id))?;
        p["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": extra });
    }
    if a.privileged {
        let all = berth_engine::config::ALL_CAPABILITIES;
        p["capabilities"] = json!({ "bounding": all, "effective": all, "permitted": all });
    }
    let dir = tempfile::Builder::new().prefix("exec-").tempdir_in({
        let d = eng.run_dir(&c.id);
        std::fs::create_dir_all(&d)?;
        d
    })?;
    let pfile = dir.path().join("process.json");
    std::fs::write(&pfile, serde_json::to_vec(&p)?)?;
    let mut cmd = rt.command(None);
    cmd.arg("exec").arg("--process").arg(&pfile);
    if a.detach {
        cmd.arg("--detach");
    }
    if !a.tty {
        cmd.arg(&c.id);
        if !a.interactive {
            cmd.stdin(std::process::Stdio::null());
        }
        if a.detach {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        cmd.stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("run {}", rt.bin.display()))?;
        // the process's stderr passes through; the runtime's own error is recognised
        let mut err = child.stderr.take().expect("piped");
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            use std::io::Read;
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.len() > 1 << 16 {
                        seen.drain(..seen.len() - 4096);
                    }
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
            }
        }
        let st = child.wait()?;
        let text = String::from_utf8_lossy(&seen);
        if let Some(line) = text
            .lines()
            .rev()
            .find(|l| l.starts_with("berth-oci: ") || l.contains("runc"))
        {
            let code = berth_engine::runtime::exit_code_for(line);
            if code != 125 || !st.success() {
                return Ok(if st.success() { 0 } else { code });
            }
        }
        return Ok(exit_status(st));
    }
    // -t: the pty comes over a console socket (sun_path holds 108 bytes: deep state
    // roots get a short directory under /tmp instead)
    let mut sock = dir.path().join("console.sock");
    let short_dir;
    if sock.as_os_str().len() > 100 {
        short_dir = tempfile::Builder::new().prefix("berth-exec-").tempdir()?;
        sock = short_dir.path().join("console.sock");
    }
    let l = std::os::unix::net::UnixListener::bind(&sock)?;
    cmd.arg("--tty")
        .arg("--console-socket")
        .arg(&sock)
        .arg(&c.id);
    cmd.stdin(std::process::Stdio::null());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("run {}", rt.bin.display()))?;
    l.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(st) = child.try_wait()? {
                    return Ok(exit_status(st));
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("runtime sent no terminal");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e.into()),
        }
    };
    conn.set_nonblocking(false)?;
    let master = recv_fd(&conn)?;
    copy_winsize(0, master.as_raw_fd());
    if a.detach {
        let st = child.wait()?;
        return Ok(exit_status(st));
    }
    let raw = (a.interactive && std::io::stdin().is_terminal()).then(RawMode::enter);
    forward_signals(child.id() as i32, Some(master.as_raw_fd()));
    if a.interactive {
        let m = master.try_clone()?;
        std::thread::spawn(move || copy_fd(0, m.as_raw_fd()));
    }
    let m = master.try_clone()?;
    let out = std::thread::spawn(move || copy_fd(m.as_raw_fd(), 1));
    let st = child.wait()?;
    let _ = out.join();
    drop(raw);
    Ok(exit_status(st))
}

fn exit_status(st: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        _ => 125,
    }
}

fn copy_fd(from: RawFd, to: RawFd) {
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reading into a live buffer.
        let n = unsafe { libc::read(from, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n <= 0 {
            return;
        }
        let mut d = &buf[..n as usize];
        while !d.is_empty() {
            // SAFETY: writing from a live buffer.
            let w = unsafe { libc::write(to, d.as_ptr() as *const libc::c_void, d.len()) };
            if w <= 0 {
                return;
            }
            d = &d[w as usize..];
        }
    }
}

fn recv_fd(conn: &std::os::unix::net::UnixStream) -> anyhow::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 1024];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = space;
    // SAFETY: hdr points to live buffers.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel filled msg_control within controllen.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS {
            return Ok(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(c) as *const RawFd,
            )));
        }
    }
    bail!("no terminal received from the runtime")
}

fn top(g: &Global, container: &str) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let c = eng.get(container)?;
    if !c.is_active() {
        bail!("container {container} is not running");
    }
    let rt = eng.runtime(&c)?;
    let out = rt
        .command(None)
        .args(["ps", "--format", "json", &c.id])
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let pids: Vec<i32> = serde_json::from_slice(&out.stdout).context("runtime ps output")?;
    println!("{:<10}{:<10}{:<10}CMD", "UID", "PID", "PPID");
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("?")
                .to_string()
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = cmdline
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:<10}{:<10}{:<10}{}",
            field("Uid:"),
            pid,
            field("PPid:"),
            cmd
        );
    }
    Ok(0)
}

fn read_num(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn cgroup_file(controller: &str, id: &str, file: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(format!("berth-{id}"))
        .join(file);
    if v1.exists() {
        return v1;
    }
    Path::new("/sys/fs/cgroup")
        .join(format!("berth-{id}"))
        .join(file)
}

fn cpu_usage_ns(id: &str) -> u64 {
    if let Some(v) = read_num(&cgroup_file("cpuacct", id, "cpuacct.usage")) {
        return v;
    }
    std::fs::read_to_string(cgroup_file("", id, "cpu.stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map(|us| us * 1000)
        .unwrap_or(0)
}

fn stats(g: &Global, no_stream: bool, names: &[String]) -> anyhow::Result<u8> {
    let eng = engine(g)?;
    let list: Vec<Container> = if names.is_empty() {
        eng.list()?
            .into_iter()
            .filter(|c| c.state == state::RUNNING)
            .collect()
    } else {
        names.iter().map(|n| eng.get(n)).collect::<Result<_, _>>()?
    };
    loop {
        let before: Vec<u64> = list.iter().map(|c| cpu_usage_ns(&c.id)).collect();
        let t0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let wall = t0.elapsed().as_nanos() as f64;
        println!(
            "{:<14}{:<24}{:<10}{:<24}{:<10}PIDS",
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %"
        );
        for (c, b) in list.iter().zip(before) {
            let cpu = (cpu_usage_ns(&c.id).saturating_sub(b)) as f64 / wall * 100.0;
            let mem = read_num(&cgroup_file("memory", &c.id, "memory.usage_in_bytes"))
                .or_else(|| read_num(&cgroup_file("", &c.id, "memory.current")))
                .unwrap_or(0);
            let host_mem = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0)
                * 1024;
            let limit = read_num(&cgroup_file("memory", &c.id, "memory.limit_in_bytes"))
                .or_else(|| read_num(&cgroup_file("", &c.id, "memory.max")))
                .unwrap_or(host_mem)
                .min(host_mem.max(1));
            let pids = read_num(&cgroup_file("pids", &c.id, "pids.current")).unwrap_or(0);
            println!(
                "{:<14}{:<24}{:<10}{:<24}{:<10}{}",
                c.short_id(),
                c.name,
                format!("{cpu:.2}%"),
                format!("{} / {}", human(mem), human(limit)),
                format!("{:.2}%", mem as f64 / limit.max(1) as f64 * 100.0),
                pids
            );
        }
        if no_stream {
            return Ok(0);
        }
    }
}

fn human(b: u64) -> String {
    let f = b as f64;
    if f >= (1u64 << 30) as f64 {
        format!("{:.2}GiB", f / (1u64 << 30) as f64)
    } else if f >= (1u64 << 20) as f64 {
        format!("{:.2}MiB", f / (1u64 << 20) as f64)
    } else if f >= 1024.0 {
        format!("{:.2}KiB", f / 1024.0)
    } else {
        format!("{b}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_templates() {
        let v = json!({"ID": "abc", "State": {"Status": "running", "Pid": 4}});
        assert_eq!(render("{{.ID}}\\t{{.State.Status}}", &v), "abc\trunning");
        assert_eq!(
            render("{{.State.Pid}} {{json .State}}", &v),
            "4 {\"Pid\":4,\"Status\":\"running\"}"
        );
        assert_eq!(render("{{.Nope}}", &v), "<no value>");
    }
}
