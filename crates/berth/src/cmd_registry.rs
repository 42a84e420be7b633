//! `berth pull`, `push`, `login`, `logout`: the registry verbs.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use berth_registry::{
    Client, ClientConfig, Credentials, DockerConfig, Event, ImageRef, Platform, PullOptions,
    PushOptions,
};

/// Registry verbs.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Download an image from a registry into the local store.
    Pull(PullArgs),
    /// Upload an image from the local store to a registry.
    Push(PushArgs),
    /// Save credentials for a registry in the docker config file.
    Login(LoginArgs),
    /// Remove a registry's credentials from the docker config file.
    Logout(LogoutArgs),
}

/// `berth pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Print only the image name when done.
    #[arg(short, long)]
    pub quiet: bool,
    /// Use plain HTTP for this (non-loopback) registry.
    #[arg(long)]
    pub insecure: bool,
    /// Only download into the store; do not unpack the layers into snapshots.
    #[arg(long)]
    pub no_unpack: bool,
    /// Image reference: [registry/]name[:tag][@digest].
    pub reference: String,
}

/// `berth push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Print only the manifest digest when done.
    #[arg(short, long)]
    pub quiet: bool,
    /// Use plain HTTP for this (non-loopback) registry.
    #[arg(long)]
    pub insecure: bool,
    /// Mount blobs from this repository of the same registry instead of uploading them.
    #[arg(long, value_name = "REPOSITORY")]
    pub mount_from: Option<String>,
    /// Image to push, named as its destination: [registry/]name[:tag].
    pub reference: String,
}

/// `berth login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to other users of this machine: prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Use plain HTTP for this (non-loopback) registry.
    #[arg(long)]
    pub insecure: bool,
    /// Registry host[:port] (default: docker.io).
    pub server: Option<String>,
}

/// `berth logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Registry host[:port] (default: docker.io).
    pub server: Option<String>,
}

/// Runs a registry verb.
pub fn run(global: &crate::Global, cmd: RegistryCommand) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match cmd {
            RegistryCommand::Pull(a) => pull(a, global).await,
            RegistryCommand::Push(a) => push(a, global).await,
            RegistryCommand::Login(a) => login(a).await,
            RegistryCommand::Logout(a) => logout(a),
        }
    })
}

fn client(registry: &str, insecure: bool) -> Result<Client> {
    let mut config = ClientConfig::default();
    if insecure {
        config.insecure_registries.push(registry.to_owned());
    }
    Ok(Client::new(config)?)
}

fn open_store(global: &crate::Global) -> Result<berth_image::Store> {
    let root = global.root.join("images");
    berth_image::Store::open(&root)
        .with_context(|| format!("opening the image store at {}", root.display()))
}

async fn pull(a: PullArgs, global: &crate::Global) -> Result<u8> {
    let r = ImageRef::parse(&a.reference)?;
    let platform = Platform::parse(&a.platform)?;
    let store = open_store(global)?;
    let client = client(&r.registry, a.insecure)?;
    let display = Display::new(a.quiet);
    let sink = display.sink();
    // named as typed (":latest" added), the way the image verbs look names up
    let name = crate::cmd_image::normalize(&a.reference);
    // layers become snapshots as they arrive, so the first run does not pay for it
    let opts = PullOptions {
        platform,
        name: Some(name),
        unpack: !a.no_unpack,
    };
    let pulled = client
        .pull(&store, &r, &opts, sink)
        .await
        .with_context(|| format!("pulling {r}"));
    display.finish();
    let pulled = pulled?;
    if a.quiet {
        println!("{}", pulled.name);
    } else {
        println!("Digest: {}", pulled.manifest.digest());
        println!(
            "Pulled {} ({} downloaded)",
            pulled.name,
            human(pulled.downloaded)
        );
    }
    Ok(0)
}

async fn push(a: PushArgs, global: &crate::Global) -> Result<u8> {
    let r = ImageRef::parse(&a.reference)?;
    let store = open_store(global)?;
    // the store names images fully (registry/repo:tag); accept what the user typed too
    let local = [
        crate::cmd_image::normalize(&a.reference),
        r.name(),
        a.reference.clone(),
    ]
    .into_iter()
    .find(|n| store.resolve(n).is_ok())
    .with_context(|| format!("no image named {} in the local store", r.name()))?;
    let client = client(&r.registry, a.insecure)?;
    let display = Display::new(a.quiet);
    let opts = PushOptions {
        mount_from: a.mount_from.clone(),
    };
    let pushed = client
        .push(&store, &local, &r, &opts, display.sink())
        .await
        .with_context(|| format!("pushing {r}"));
    display.finish();
    let pushed = pushed?;
    if a.quiet {
        println!("{}", pushed.digest);
    } else {
        println!(
            "Pushed {r}: digest {} ({} uploaded)",
            pushed.digest,
            human(pushed.uploaded)
        );
    }
    Ok(0)
}

fn server_name(server: Option<&str>) -> String {
    let s = server.unwrap_or(berth_registry::reference::DEFAULT_REGISTRY);
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let s = s.strip_suffix("/v1").or(s.strip_suffix("/v2")).unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        s => s.to_owned(),
    }
}

async fn login(a: LoginArgs) -> Result<u8> {
    let registry = server_name(a.server.as_deref());
    let stdin = std::io::stdin();
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin || !stdin.is_terminal() => {
            bail!("a user name is needed: pass -u USER")
        }
        None => prompt("Username: ")?,
    };
    let password = if a.password_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(p) = a.password {
        eprintln!(
            "warning: a password on the command line is visible to other users; use --password-stdin"
        );
        p
    } else if stdin.is_terminal() {
        prompt("Password: ")?
    } else {
        bail!("a password is needed: pass -p PASS or --password-stdin")
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let creds = Credentials::new(username, password);
    client(&registry, a.insecure)?
        .login(&registry, &creds)
        .await
        .with_context(|| format!("logging in to {registry}"))?;
    let mut cfg = DockerConfig::load()?;
    cfg.store(&registry, &creds)?;
    println!(
        "Login succeeded ({registry}, saved in {})",
        cfg.path().display()
    );
    Ok(0)
}

fn logout(a: LogoutArgs) -> Result<u8> {
    let registry = server_name(a.server.as_deref());
    let mut cfg = DockerConfig::load()?;
    if cfg.erase(&registry)? {
        println!("Removed login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}

fn prompt(what: &str) -> Result<String> {
    eprint!("{what}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Progress output: bars per blob on a terminal, plain lines otherwise, nothing quiet.
struct Display {
    quiet: bool,
    bars: Option<(
        indicatif::MultiProgress,
        Mutex<HashMap<String, indicatif::ProgressBar>>,
    )>,
}

impl Display {
    fn new(quiet: bool) -> Arc<Display> {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            (
                indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Arc::new(Display { quiet, bars })
    }

    fn sink(self: &Arc<Display>) -> berth_registry::Sink {
        let me = self.clone();
        Arc::new(move |e| me.event(e))
    }

    fn event(&self, e: Event) {
        if self.quiet {
            return;
        }
        let Some((multi, bars)) = &self.bars else {
            plain(&e);
            return;
        };
        let Ok(mut bars) = bars.lock() else { return };
        match e {
            Event::Resolved { .. } => plain(&e),
            Event::Started {
                digest,
                size,
                offset,
            } => {
                let bar = multi.add(indicatif::ProgressBar::new(size));
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                ) {
                    bar.set_style(style);
                }
                bar.set_prefix(short(&digest).to_owned());
                bar.set_position(offset);
                bars.insert(digest, bar);
            }
            Event::Progress { digest, done, .. } => {
                if let Some(b) = bars.get(&digest) {
                    b.set_position(done);
                }
            }
            Event::Retrying {
                digest,
                attempt,
                reason,
            } => {
                if let Some(b) = bars.get(&digest) {
                    b.set_message(format!("retry {attempt}: {reason}"));
                }
            }
            Event::Done { digest, .. } => {
                if let Some(b) = bars.get(&digest) {
                    b.finish_with_message("done");
                }
            }
            Event::Unpacked { digest } => {
                if let Some(b) = bars.get(&digest) {
                    b.finish_with_message("unpacked");
                } else {
                    let _ = multi.println(line(&Event::Unpacked { digest }));
                }
            }
            Event::Exists { .. } | Event::Mounted { .. } => {
                let _ = multi.println(line(&e));
            }
        }
    }

    fn finish(&self) {
        if let Some((_, bars)) = &self.bars
            && let Ok(bars) = bars.lock()
        {
            for b in bars.values() {
                if !b.is_finished() {
                    b.abandon();
                }
            }
        }
    }
}

fn line(e: &Event) -> String {
    match e {
        Event::Resolved {
            reference,
            digest,
            layers,
        } => {
            format!("{reference}: resolved to {digest} ({layers} layers)")
        }
        Event::Started {
            digest,
            size,
            offset: 0,
        } => format!("{}: transferring {}", short(digest), human(*size)),
        Event::Started {
            digest,
            size,
            offset,
        } => {
            format!(
                "{}: resuming at {} of {}",
                short(digest),
                human(*offset),
                human(*size)
            )
        }
        Event::Progress { digest, done, size } => {
            format!("{}: {} of {}", short(digest), human(*done), human(*size))
        }
        Event::Retrying {
            digest,
            attempt,
            reason,
        } => format!("{}: retry {attempt}: {reason}", short(digest)),
        Event::Exists { digest, .. } => format!("{}: already exists", short(digest)),
        Event::Mounted { digest, from } => format!("{}: mounted from {from}", short(digest)),
        Event::Done { digest, size } => format!("{}: done ({})", short(digest), human(*size)),
        Event::Unpacked { digest } => format!("{}: unpacked", short(digest)),
    }
}

fn plain(e: &Event) {
    // per-chunk progress would flood a log file; start/done lines say enough
    if !matches!(e, Event::Progress { .. }) {
        eprintln!("{}", line(e));
    }
}
