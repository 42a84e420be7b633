//! `berth build`: builds an image from a Dockerfile with berth-build's executor.
//!
//! `--dump-ast` prints the parsed Dockerfile as JSON and builds nothing. Otherwise the
//! stages the target needs are built (RUN steps through `berth-oci`), the image is
//! committed to the store under `--root`, tagged with every `-t`, and optionally
//! written out with `--output type=oci|docker,dest=FILE`. Progress goes to stderr in
//! BuildKit's plain format; a failed build exits 1 like `docker build`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The `build` verb.
#[derive(Debug, clap::Subcommand)]
pub enum BuildCommand {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// Manage the build cache.
    Builder {
        #[command(subcommand)]
        command: BuilderSub,
    },
}

/// `berth builder ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BuilderSub {
    /// Remove build cache: step-cache entries no image uses (all of them with
    /// --all), RUN cache mounts, and the layers only they kept.
    Prune {
        /// Remove every entry, also those whose layers tagged images use.
        #[arg(short, long)]
        all: bool,
        /// `until=DURATION` (24h, 90m, 30s): only what was last used longer ago.
        #[arg(long = "filter", value_name = "until=DURATION")]
        filters: Vec<String>,
        /// Do not ask for confirmation (berth never asks).
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs `berth builder prune`: the options turned into berth-build's, and the
/// report printed as docker does.
fn prune(global: &crate::Global, all: bool, filters: &[String]) -> Result<u8> {
    let mut until = None;
    for f in filters {
        match f.split_once('=') {
            Some(("until", v)) => {
                let ns = berth_build::duration::parse_go_duration(v)
                    .filter(|n| *n >= 0)
                    .with_context(|| format!("--filter {f:?}: not a duration like 24h or 90m"))?;
                until = Some(std::time::Duration::from_nanos(ns as u64));
            }
            _ => bail!("--filter {f:?}: only until=DURATION is supported"),
        }
    }
    let store = crate::cmd_image::store(global)?;
    let r = berth_build::prune::prune(
        &store,
        &global.root,
        &berth_build::prune::PruneOptions { all, until },
    )?;
    if !r.removed.is_empty() {
        println!("Deleted build cache objects:");
        for id in &r.removed {
            println!("{id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::cmd_image::human(r.bytes)
    );
    Ok(0)
}

/// Options of `berth build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Print the parsed instructions as JSON (name as written, flags, arguments,
    /// heredocs, start and end line) and build nothing.
    #[arg(long)]
    pub dump_ast: bool,
    /// Name (and tag) for the image; may be given several times.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Build-time variable `KEY=VALUE` (`KEY` alone takes the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build this stage (name or index) instead of the last one.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Label `KEY=VALUE` for the image.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Secret for `RUN --mount=type=secret`: `id=X,src=FILE` (or `id=X,env=VAR`).
    #[arg(long = "secret", value_name = "id=X,src=FILE")]
    pub secrets: Vec<String>,
    /// SSH agent for `RUN --mount=type=ssh` and git sources over ssh: `default` or
    /// `ID`, optionally `=SOCKET` or `=KEY[,KEY]` (default: the agent of
    /// $SSH_AUTH_SOCK; key files are loaded into a private agent for this build).
    #[arg(long = "ssh", value_name = "ID[=SOCKET|KEY[,KEY]]")]
    pub ssh: Vec<String>,
    /// Also write the image out: `type=oci,dest=FILE` or `type=docker,dest=FILE`.
    #[arg(short = 'o', long = "output", value_name = "type=oci|docker,dest=FILE")]
    pub output: Vec<String>,
    /// Pull every base image first, even when the store has it (missing ones are
    /// always pulled).
    #[arg(long)]
    pub pull: bool,
    /// Target platform (only the host's, linux/amd64, is supported).
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the image ID (config digest) to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Print only the image ID on standard output.
    #[arg(short, long)]
    pub quiet: bool,
    /// The build context directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

fn key_value(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("invalid {what} {s:?}: expected KEY=VALUE"),
    }
}

/// The images the FROM lines name (meta ARGs expanded), earlier stages and `scratch`
/// left out.
fn base_images(
    df: &berth_build::Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    use berth_build::scope::{MetaArgs, stages};
    let (meta_insts, all) = stages(df)?;
    let lexer = berth_build::shell::Lexer::new(df.escape);
    let meta = MetaArgs::new(&meta_insts, build_args, &[], &lexer)?;
    let mut out: Vec<String> = Vec::new();
    for st in &all {
        let (image, _) = meta.expand_from(st, &lexer)?;
        let lower = image.to_ascii_lowercase();
        let is_stage = all[..st.index]
            .iter()
            .any(|s| s.name() == Some(lower.as_str()));
        if lower == "scratch" || is_stage || out.contains(&image) {
            continue;
        }
        out.push(image);
    }
    Ok(out)
}

/// An ssh-agent started for `--ssh ID=KEY`: killed and its directory removed on drop.
struct KeyAgent {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `ssh-agent` on a private socket and loads `keys` into it.
fn key_agent(state: &std::path::Path, id: &str, keys: &[PathBuf]) -> Result<(PathBuf, KeyAgent)> {
    let dir = state
        .join("build-ssh")
        .join(format!("{}-{id}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sock = dir.join("agent.sock");
    let child = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| {
            format!("--ssh {id}: starting ssh-agent (is openssh-client installed?)")
        })?;
    let agent = KeyAgent { child, dir };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("--ssh {id}: ssh-agent did not start");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = std::process::Command::new("ssh-add")
        .args(keys)
        .env("SSH_AUTH_SOCK", &sock)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("--ssh {id}: running ssh-add"))?;
    if !out.status.success() {
        bail!(
            "--ssh {id}: loading keys: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((sock, agent))
}

/// `--ssh` values: agent sockets by id, and the agents started for key files.
fn ssh_agents(
    state: &std::path::Path,
    specs: &[String],
) -> Result<(BTreeMap<String, PathBuf>, Vec<KeyAgent>)> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = BTreeMap::new();
    let mut agents = Vec::new();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, p)) => (
                id.to_string(),
                p.split(',')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect::<Vec<_>>(),
            ),
            None => (spec.clone(), Vec::new()),
        };
        if id.is_empty() {
            bail!("--ssh {spec:?}: missing id (use default)");
        }
        let sock = match paths.as_slice() {
            [] => PathBuf::from(std::env::var_os("SSH_AUTH_SOCK").with_context(|| {
                format!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set (give a socket or key: --ssh {id}=PATH)"
                )
            })?),
            [one] if std::fs::metadata(one).is_ok_and(|m| m.file_type().is_socket()) => one.clone(),
            keys => {
                for k in keys {
                    if !k.is_file() {
                        bail!(
                            "--ssh {id}: {} is neither a socket nor a key file",
                            k.display()
                        );
                    }
                }
                let (sock, agent) = key_agent(state, &id, keys)?;
                agents.push(agent);
                sock
            }
        };
        out.insert(id, sock);
    }
    Ok((out, agents))
}

fn fields(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Runs `berth build`.
pub fn run(global: &crate::Global, cmd: BuildCommand) -> Result<u8> {
    let args = match cmd {
        BuildCommand::Build(args) => *args,
        BuildCommand::Builder {
            command: BuilderSub::Prune { all, filters, .. },
        } => return prune(global, all, &filters),
    };
    let (name, text) = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the dockerfile from standard input")?;
            ("<stdin>".to_string(), s)
        }
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .with_context(|| format!("reading dockerfile {}", p.display()))?,
        ),
        None => {
            let p = args.context.join("Dockerfile");
            (
                p.display().to_string(),
                std::fs::read_to_string(&p)
                    .with_context(|| format!("reading dockerfile {}", p.display()))?,
            )
        }
    };
    let df = berth_build::parse(&text).with_context(|| format!("parsing {name}"))?;
    for w in &df.warnings {
        eprintln!("warning: {name}: line {}: {}", w.line, w.message);
    }
    if args.dump_ast {
        let json = serde_json::to_string_pretty(&df).context("encoding the parsed dockerfile")?;
        println!("{json}");
        return Ok(0);
    }
    if let Some(p) = &args.platform
        && p != "linux/amd64"
        && p != "linux/x86_64"
    {
        bail!("--platform {p}: only linux/amd64 (this host) can be built");
    }
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => match std::env::var(a) {
                Ok(v) => build_args.insert(a.clone(), v),
                Err(_) => None,
            },
        };
    }
    let labels = args
        .labels
        .iter()
        .map(|l| key_value(l, "label"))
        .collect::<Result<Vec<_>>>()?;
    let mut secrets = BTreeMap::new();
    let mut secret_tmp = Vec::new();
    for s in &args.secrets {
        let f = fields(s);
        let id = f
            .get("id")
            .cloned()
            .with_context(|| format!("--secret {s:?}: missing id="))?;
        let src = match (f.get("src").or_else(|| f.get("source")), f.get("env")) {
            (Some(p), _) => PathBuf::from(p),
            (None, Some(var)) => {
                // an environment secret goes through a private temporary file
                let v = std::env::var(var)
                    .with_context(|| format!("--secret {s:?}: variable {var} is not set"))?;
                let dir = global.state.join("build-secrets");
                std::fs::create_dir_all(&dir)?;
                let p = dir.join(format!("{}-{id}", std::process::id()));
                std::fs::write(&p, v)?;
                secret_tmp.push(p.clone());
                p
            }
            (None, None) => bail!("--secret {s:?}: missing src="),
        };
        if !src.is_file() {
            bail!("--secret {s:?}: {} is not a readable file", src.display());
        }
        secrets.insert(id, src);
    }
    let mut outputs = Vec::new();
    for o in &args.output {
        let f = fields(o);
        let kind = f.get("type").map(String::as_str).unwrap_or("");
        let dest = f
            .get("dest")
            .with_context(|| format!("--output {o:?}: missing dest="))?;
        match kind {
            "oci" | "docker" => outputs.push(PathBuf::from(dest)),
            other => bail!("--output type={other} is not supported (use type=oci or type=docker)"),
        }
    }
    let epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH {v:?} is not a number of seconds"))
        })
        .transpose()?
        .unwrap_or(0);
    let (ssh, _key_agents) = ssh_agents(&global.state, &args.ssh)?;
    let store = crate::cmd_image::store(global)?;
    // base images: pulled when asked (--pull) or missing from the store, as docker does
    for image in base_images(&df, &build_args)? {
        let have = store.image(&crate::cmd_image::normalize(&image), &Default::default());
        if !args.pull && (have.is_ok() || store.image(&image, &Default::default()).is_ok()) {
            continue;
        }
        eprintln!("pulling {image}");
        let pull = crate::cmd_registry::RegistryCommand::Pull(crate::cmd_registry::PullArgs {
            platform: "linux/amd64".into(),
            quiet: true,
            insecure: false,
            no_unpack: false,
            reference: image.clone(),
        });
        match crate::cmd_registry::run(global, pull) {
            Ok(0) => {}
            Ok(code) => {
                eprintln!("berth: build failed: pulling base image {image} failed");
                return Ok(code.max(1));
            }
            Err(e) => {
                eprintln!("berth: build failed: pulling base image {image}: {e:#}");
                return Ok(1);
            }
        }
    }
    let opts = berth_build::executor::BuildOptions {
        root: global.root.clone(),
        state: global.state.clone(),
        context: args.context.clone(),
        dockerfile: text,
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        labels,
        secrets,
        ssh,
        runtime: berth_build::runner::default_runtime(),
        epoch,
        ignore_file: args
            .file
            .as_ref()
            .filter(|f| f.as_os_str() != "-")
            .map(|f| PathBuf::from(format!("{}.dockerignore", f.display())))
            .filter(|p| p.is_file()),
    };
    berth_build::runner::install_interrupt_handler();
    let mut err = std::io::stderr();
    let result = berth_build::executor::build(&store, &opts, &mut err);
    for p in &secret_tmp {
        let _ = std::fs::remove_file(p);
    }
    let built = match result {
        Ok(b) => b,
        Err(e) => {
            eprintln!("berth: build failed: {e}");
            return Ok(1);
        }
    };
    let tags: Vec<String> = args
        .tags
        .iter()
        .map(|t| crate::cmd_image::normalize(t))
        .collect();
    for t in &tags {
        // an unchanged tag is not rewritten (a cached rebuild then writes nothing)
        let same = store
            .resolve(t)
            .is_ok_and(|d| d.digest() == built.manifest.digest());
        if !same {
            store
                .tag(t, built.manifest.clone())
                .with_context(|| format!("tagging {t}"))?;
        }
        eprintln!("naming to {t} done");
    }
    for dest in &outputs {
        let names = if tags.is_empty() {
            vec![built.manifest.digest().to_string()]
        } else {
            tags.clone()
        };
        let tmp = PathBuf::from(format!("{}.tmp-{}", dest.display(), std::process::id()));
        let write = || -> Result<()> {
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let w = berth_image::archive::save(&store, &names, std::io::BufWriter::new(f))
                .with_context(|| format!("writing {}", dest.display()))?;
            let f = w
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", dest.display()))?;
            f.sync_all()
                .with_context(|| format!("writing {}", dest.display()))?;
            std::fs::rename(&tmp, dest).with_context(|| format!("writing {}", dest.display()))
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        eprintln!("exported to {}", dest.display());
    }
    let id = built.config_digest.to_string();
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).with_context(|| format!("writing {}", f.display()))?;
    }
    if args.quiet {
        println!("{id}");
    }
    Ok(0)
}
