//! The build executor: walks the stages a target needs, applies metadata
//! instructions to the image config, makes layers for RUN, COPY and ADD on overlay
//! snapshots, reuses cached steps, and commits the result into the image store.
//!
//! Cache keys chain: a stage starts from its base's id (manifest digest, or the id of
//! the stage it builds on), and each layer step's key hashes that id, the expanded
//! instruction with everything that shapes its result (environment, working
//! directory, user, shell, mounts, owner and mode flags) and the content digests of
//! what it reads. The state after a step is the hash of its key and the resulting
//! layer's diff ID, so a changed file rebuilds that step and everything after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use berth_image::layer::{commit_image, write_dir_layer};
use berth_image::oci_spec::image::Descriptor;
use berth_image::{Digest, Platform, Store};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::ast::{CmdLine, Command, Dockerfile, Healthcheck, Instruction, Source};
use crate::dockerignore::{IgnoreError, Matcher};
use crate::fsutil::{self, CopyAttrs, Entry, Item};
use crate::mount::MountType;
use crate::parser::ParseError;
use crate::runner::{INTERRUPTED, RunSpec, Runtime};
use crate::scope::{MetaArgs, ScopeError, Stage, StageScope, stages, target_stage};
use crate::shell::Lexer;

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("dockerfile parse error: {0}")]
    Parse(#[from] ParseError),
    /// Stages or variables could not be resolved.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// `.dockerignore` is malformed.
    #[error(".dockerignore: {0}")]
    Ignore(#[from] IgnoreError),
    /// A source of COPY/ADD does not exist (or is excluded by .dockerignore).
    #[error("{0}: not found")]
    NotFound(String),
    /// An instruction cannot be executed.
    #[error("line {line}: {instruction}: {message}")]
    Step {
        /// Line of the instruction.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// A RUN step exited non-zero.
    #[error("line {line}: process \"{command}\" did not complete successfully: exit code: {code}")]
    RunFailed {
        /// Line of the RUN.
        line: usize,
        /// The command run.
        command: String,
        /// Its exit status.
        code: i32,
    },
    /// SIGINT or SIGTERM arrived.
    #[error("build interrupted")]
    Interrupted,
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The berth root (images under `root/images`, build cache under `root/build`).
    pub root: PathBuf,
    /// The runtime state root (`--state`).
    pub state: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile text.
    pub dockerfile: String,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--label`s for the final image.
    pub labels: Vec<(String, String)>,
    /// `--secret id=X,src=FILE`.
    pub secrets: BTreeMap<String, PathBuf>,
    /// `--ssh ID=SOCKET`: ssh agent sockets by id (`default` also serves git sources).
    pub ssh: BTreeMap<String, PathBuf>,
    /// The runc-compatible runtime binary.
    pub runtime: PathBuf,
    /// Timestamps and mtime clamp (SOURCE_DATE_EPOCH, or 0).
    pub epoch: u64,
    /// The ignore file (default: CONTEXT/.dockerignore); the CLI passes
    /// `<Dockerfile>.dockerignore` when that exists, as BuildKit does.
    pub ignore_file: Option<PathBuf>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image manifest (untagged; the caller tags it).
    pub manifest: Descriptor,
    /// The config digest (docker's image ID).
    pub config_digest: Digest,
    /// Layer steps executed.
    pub executed: usize,
    /// Layer steps taken from the cache.
    pub cached: usize,
}

#[derive(Debug, Clone)]
struct Layer {
    desc: Descriptor,
    diff_id: Digest,
}

#[derive(Debug, Clone)]
struct StageOut {
    layers: Vec<Layer>,
    config: Value,
    state: Digest,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { op, path, source }
}

fn hash(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    Digest::from_sha256(h.finalize().into())
}

/// RFC 3339 UTC time of a Unix timestamp.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A temporary directory with `upper`, `work` and `rootfs`, overlay-mounted on demand;
/// unmounted and removed when dropped (also on errors and interruption).
struct Work {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Work {
    fn new(parent: &Path) -> Result<Work, BuildError> {
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("step-{}-", std::process::id()))
            .tempdir_in(parent)
            .map_err(io_err("create temporary directory in", parent))?;
        for d in ["upper", "work", "rootfs"] {
            let p = dir.path().join(d);
            fs::create_dir(&p).map_err(io_err("create directory", &p))?;
        }
        Ok(Work {
            dir,
            mounted: false,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    fn mount(&mut self, mut lowers: Vec<PathBuf>) -> Result<(), BuildError> {
        if lowers.is_empty() {
            let p = self.dir.path().join("empty");
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
            lowers.push(p);
        }
        berth_image::mount_overlay(&lowers, self.dir.path())?;
        self.mounted = true;
        Ok(())
    }

    fn unmount(&mut self) -> Result<(), BuildError> {
        if self.mounted {
            berth_image::unmount_overlay(self.dir.path())?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.mounted {
            let _ = berth_image::unmount_overlay(self.dir.path());
        }
    }
}

/// Step results by cache key, as small files under `root/build/cache`.
#[derive(Debug)]
struct Cache {
    dir: PathBuf,
}

impl Cache {
    fn get(&self, store: &Store, key: &Digest) -> Option<Layer> {
        let bytes = fs::read(self.dir.join(key.hex())).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        let desc: Descriptor = serde_json::from_value(v.get("layer")?.clone()).ok()?;
        let diff_id: Digest = v.get("diff_id")?.as_str()?.parse().ok()?;
        let blob = berth_image::desc_digest(&desc).ok()?;
        // a pruned blob makes the entry useless
        if !store.has_blob(&blob) {
            return None;
        }
        // the last use, for `builder prune --filter until=`
        touch(&self.dir.join(key.hex()));
        Some(Layer { desc, diff_id })
    }

    fn put(&self, key: &Digest, layer: &Layer) -> Result<(), BuildError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let v = json!({"layer": layer.desc, "diff_id": layer.diff_id.to_string()});
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(io_err("create temporary file in", &self.dir))?;
        tmp.write_all(&serde_json::to_vec(&v).unwrap_or_default())
            .map_err(io_err("write", tmp.path()))?;
        let path = self.dir.join(key.hex());
        tmp.persist(&path)
            .map_err(|e| io_err("write", &path)(e.error))?;
        Ok(())
    }
}

/// Sets a path's modification time to now (best effort).
fn touch(path: &Path) {
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

static CONTAINER_SEQ: AtomicUsize = AtomicUsize::new(0);

struct Builder<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    runtime: Runtime,
    ignore: Matcher,
    cache: Cache,
    tmp: PathBuf,
    step: usize,
    executed: usize,
    cached: usize,
}

/// Builds the Dockerfile in `opts` and commits the image (untagged) into `store`,
/// writing BuildKit-style plain progress to `out`.
pub fn build(store: &Store, opts: &BuildOptions, out: &mut dyn Write) -> Result<Built, BuildError> {
    let df = crate::parse(&opts.dockerfile)?;
    let ignore_path = opts
        .ignore_file
        .clone()
        .unwrap_or_else(|| opts.context.join(".dockerignore"));
    let ignore = match fs::read_to_string(&ignore_path) {
        Ok(text) => Matcher::from_dockerignore(&text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Matcher::new(Vec::<String>::new())?,
        Err(e) => return Err(io_err("read", &ignore_path)(e)),
    };
    let build_dir = opts.root.join("build");
    let mut b = Builder {
        store,
        opts,
        out,
        runtime: Runtime {
            binary: opts.runtime.clone(),
            state_root: opts.state.join("build"),
        },
        ignore,
        cache: Cache {
            dir: build_dir.join("cache"),
        },
        tmp: build_dir.join("tmp"),
        step: 0,
        executed: 0,
        cached: 0,
    };
    sweep_stale(&b.tmp, &b.runtime);
    b.run(&df)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes what builds killed outright (SIGKILL, power loss) left: their step
/// directories (unmounted first) and their RUN containers. Names carry the builder's
/// pid, so live builds are left alone.
fn sweep_stale(tmp: &Path, runtime: &Runtime) {
    if let Ok(rd) = fs::read_dir(&runtime.state_root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead_owner(&name, "berth-build-") {
                runtime.delete_force(&name);
            }
        }
    }
    sweep(tmp);
}

/// Removes the step directories of builds that are gone (unmounted first).
pub(crate) fn sweep(tmp: &Path) {
    if let Ok(rd) = fs::read_dir(tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead_owner(&name, "step-") {
                let _ = berth_image::unmount_overlay(&e.path());
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Whether `name` is `<prefix><pid>-...` of a process that no longer exists.
fn dead_owner(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|pid| pid > 0 && !pid_alive(pid))
}

fn automatic_args() -> Vec<(String, String)> {
    let p = Platform::default();
    let plat = p.to_string();
    [
        ("TARGETPLATFORM", plat.clone()),
        ("TARGETOS", p.os.clone()),
        ("TARGETARCH", p.architecture.clone()),
        ("TARGETVARIANT", p.variant.clone().unwrap_or_default()),
        ("BUILDPLATFORM", plat),
        ("BUILDOS", p.os.clone()),
        ("BUILDARCH", p.architecture.clone()),
        ("BUILDVARIANT", p.variant.clone().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn find_stage(all: &[Stage<'_>], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    all.iter()
        .take(before)
        .find(|s| s.name() == Some(lower.as_str()))
        .map(|s| s.index)
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

fn normalize(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn step_label(st: &Stage<'_>) -> String {
    st.name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("stage-{}", st.index))
}

fn is_layer_step(c: &Command) -> bool {
    matches!(c, Command::Run(_) | Command::Copy(_) | Command::Add(_))
}

fn instr_text(inst: &Instruction) -> String {
    let mut s = inst.original.trim().to_string();
    if let Some(i) = s.find('\n') {
        s.truncate(i);
    }
    s
}

fn clean_abs(p: &str) -> String {
    let c = crate::dockerignore::clean(p);
    if c.starts_with('/') {
        c
    } else {
        format!("/{c}")
    }
}

impl Builder<'_> {
    fn check_interrupt(&self) -> Result<(), BuildError> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            Err(BuildError::Interrupted)
        } else {
            Ok(())
        }
    }

    fn run(&mut self, df: &Dockerfile) -> Result<Built, BuildError> {
        let (meta_insts, all) = stages(df)?;
        let lexer = Lexer::new(df.escape);
        let meta = MetaArgs::new(
            &meta_insts,
            &self.opts.build_args,
            &automatic_args(),
            &lexer,
        )?;
        let target = target_stage(&all, self.opts.target.as_deref())?;
        // the stages the target needs, through FROM, COPY --from and RUN --mount from=
        let mut needed = BTreeSet::new();
        let mut todo = vec![target.index];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let st = &all[i];
            let mut refs = Vec::new();
            if let Ok((img, _)) = meta.expand_from(st, &lexer) {
                refs.push(img);
            }
            for inst in st.body {
                match &inst.command {
                    Command::Copy(c) => refs.extend(c.from.clone()),
                    Command::Run(r) => refs.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
                    _ => {}
                }
            }
            for r in refs {
                if let Some(j) = find_stage(&all, &r, i) {
                    todo.push(j);
                }
            }
        }
        let mut done: Vec<Option<StageOut>> = vec![None; all.len()];
        for &i in &needed {
            self.check_interrupt()?;
            let out = self.build_stage(df, &all, i, &meta, &lexer, &done)?;
            done[i] = Some(out);
        }
        let mut fin = done[target.index].take().expect("target stage was built");
        // the final config: rootfs, history and --label
        let created = rfc3339(self.opts.epoch);
        let cfg = &mut fin.config;
        if !self.opts.labels.is_empty() {
            let c = config_obj(cfg);
            let labels = c
                .entry("Labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if !labels.is_object() {
                *labels = Value::Object(Map::new());
            }
            for (k, v) in &self.opts.labels {
                labels[k] = Value::String(v.clone());
            }
        }
        cfg["created"] = Value::String(created);
        cfg["rootfs"] = json!({
            "type": "layers",
            "diff_ids": fin.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        });
        let descs: Vec<Descriptor> = fin.layers.iter().map(|l| l.desc.clone()).collect();
        self.step += 1;
        let n = self.step;
        let t = Instant::now();
        let _ = writeln!(self.out, "#{n} exporting to image");
        let manifest = commit_image(self.store, cfg, &descs)?;
        let config_bytes = serde_json::to_vec(cfg).unwrap_or_default();
        let config_digest = Digest::of(&config_bytes);
        let _ = writeln!(self.out, "#{n} writing image {config_digest} done");
        let _ = writeln!(self.out, "#{n} manifest {} done", manifest.digest());
        let _ = writeln!(self.out, "#{n} DONE {:.1}s", t.elapsed().as_secs_f64());
        Ok(Built {
            manifest,
            config_digest,
            executed: self.executed,
            cached: self.cached,
        })
    }

    fn base(
        &mut self,
        image: &str,
        all: &[Stage<'_>],
        index: usize,
        done: &[Option<StageOut>],
    ) -> Result<StageOut, BuildError> {
        if let Some(j) = find_stage(all, image, index) {
            return done[j].clone().ok_or_else(|| BuildError::Step {
                line: all[index].from_instruction.start_line,
                instruction: instr_text(all[index].from_instruction),
                message: format!("stage {image} was not built"),
            });
        }
        if image.eq_ignore_ascii_case("scratch") {
            let p = Platform::default();
            return Ok(StageOut {
                layers: Vec::new(),
                config: json!({
                    "architecture": p.architecture,
                    "os": p.os,
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }),
                state: hash(&[b"scratch"]),
            });
        }
        let img = self.load_image(image)?;
        Ok(img)
    }

    fn load_image(&self, image: &str) -> Result<StageOut, BuildError> {
        let platform = Platform::default();
        let candidates = [
            image.to_string(),
            normalize(image),
            format!("docker.io/library/{}", normalize(image)),
        ];
        let mut last = None;
        for c in &candidates {
            match self.store.image(c, &platform) {
                Ok(img) => {
                    let raw = self.store.read_blob(&img.config_digest)?;
                    let mut config: Value = serde_json::from_slice(&raw).map_err(|e| {
                        BuildError::Image(berth_image::Error::Invalid {
                            what: format!("image config {}", img.config_digest),
                            reason: e.to_string(),
                        })
                    })?;
                    if let Some(o) = config.as_object_mut() {
                        for k in [
                            "container",
                            "container_config",
                            "docker_version",
                            "id",
                            "parent",
                        ] {
                            o.remove(k);
                        }
                    }
                    let diff_ids = img.diff_ids()?;
                    let layers = img
                        .manifest
                        .layers()
                        .iter()
                        .zip(diff_ids)
                        .map(|(d, diff_id)| Layer {
                            desc: d.clone(),
                            diff_id,
                        })
                        .collect();
                    return Ok(StageOut {
                        layers,
                        config,
                        state: hash(&[b"image", img.digest().to_string().as_bytes()]),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(BuildError::Step {
            line: 0,
            instruction: format!("FROM {image}"),
            message: format!(
                "image {image} is not in the local store ({}); pull it first with `berth pull`",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        })
    }

    fn snapshot_lowers(&self, layers: &[Layer]) -> Result<Vec<PathBuf>, BuildError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chain = berth_image::manifest::chain_ids(&diff_ids);
        let mut out = Vec::with_capacity(layers.len());
        for (l, c) in layers.iter().zip(&chain) {
            out.push(self.store.unpack_snapshot(&l.desc, &l.diff_id, c)?);
        }
        out.reverse();
        Ok(out)
    }

    fn build_stage(
        &mut self,
        df: &Dockerfile,
        all: &[Stage<'_>],
        index: usize,
        meta: &MetaArgs,
        lexer: &Lexer,
        done: &[Option<StageOut>],
    ) -> Result<StageOut, BuildError> {
        let st = &all[index];
        let label = step_label(st);
        let (image, _platform) = meta.expand_from(st, lexer)?;
        self.step += 1;
        let t = Instant::now();
        let mut so = self.base(&image, all, index, done).map_err(|e| match e {
            BuildError::Step {
                line: 0, message, ..
            } => BuildError::Step {
                line: st.from_instruction.start_line,
                instruction: instr_text(st.from_instruction),
                message,
            },
            e => e,
        })?;
        // the base's ONBUILD triggers run first, and are consumed
        let mut triggers: Vec<Instruction> = Vec::new();
        if let Some(list) = config_obj(&mut so.config).remove("OnBuild")
            && let Some(list) = list.as_array()
        {
            for t in list.iter().filter_map(Value::as_str) {
                // the parser wants a stage: parse the trigger inside one
                let parsed =
                    crate::parse(&format!("FROM scratch\n{t}")).map_err(|e| BuildError::Step {
                        line: st.from_instruction.start_line,
                        instruction: format!("ONBUILD {t}"),
                        message: format!("base image trigger does not parse: {e}"),
                    })?;
                triggers.extend(parsed.instructions.into_iter().skip(1));
            }
        }
        let body: Vec<&Instruction> = triggers.iter().chain(st.body.iter()).collect();
        let total = 1 + body.iter().filter(|i| is_layer_step(&i.command)).count();
        let _ = writeln!(self.out, "#{} [{label} 1/{total}] FROM {image}", self.step);
        let _ = writeln!(
            self.out,
            "#{} DONE {:.1}s",
            self.step,
            t.elapsed().as_secs_f64()
        );
        if !so.config.get("config").is_some_and(Value::is_object) {
            so.config["config"] = json!({});
        }
        if !so.config.get("history").is_some_and(Value::is_array) {
            so.config["history"] = json!([]);
        }
        let image_env: Vec<(String, String)> = config_obj(&mut so.config)
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| match s.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (s.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut scope = StageScope::new(meta, &self.opts.build_args, image_env, df.escape);
        let mut cmd_set = false;
        let mut k = 1;
        for inst in body {
            self.check_interrupt()?;
            if is_layer_step(&inst.command) {
                k += 1;
                self.step += 1;
                let _ = writeln!(
                    self.out,
                    "#{} [{label} {k}/{total}] {}",
                    self.step,
                    instr_text(inst)
                );
                let t = Instant::now();
                let res = match &inst.command {
                    Command::Run(_) => self.run_step(inst, &scope, &mut so, all, index, done, t),
                    _ => self.copy_step(inst, &scope, &mut so, all, index, done),
                };
                match res {
                    Ok(true) => {
                        self.cached += 1;
                        let _ = writeln!(self.out, "#{} CACHED", self.step);
                    }
                    Ok(false) => {
                        self.executed += 1;
                        let _ = writeln!(
                            self.out,
                            "#{} DONE {:.1}s",
                            self.step,
                            t.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(self.out, "#{} ERROR: {e}", self.step);
                        return Err(e);
                    }
                }
                continue;
            }
            self.metadata(inst, &mut scope, &mut so, &mut cmd_set)?;
        }
        Ok(so)
    }

    fn history(&self, so: &mut StageOut, created_by: String, empty: bool) {
        let mut h = json!({
            "created": rfc3339(self.opts.epoch),
            "created_by": created_by,
            "comment": "buildkit.dockerfile.v0",
        });
        if empty {
            h["empty_layer"] = Value::Bool(true);
        }
        if let Some(a) = so.config["history"].as_array_mut() {
            a.push(h);
        }
    }

    fn metadata(
        &mut self,
        inst: &Instruction,
        scope: &mut StageScope<'_>,
        so: &mut StageOut,
        cmd_set: &mut bool,
    ) -> Result<(), BuildError> {
        let line = inst.start_line;
        let shell = shell_of(&so.config);
        let cmdline = |c: &CmdLine| -> Value {
            match c {
                CmdLine::Exec(v) => json!(v),
                CmdLine::Shell(s) => {
                    let mut v = shell.clone();
                    v.push(s.clone());
                    json!(v)
                }
            }
        };
        let mut record = true;
        match &inst.command {
            Command::Arg(_) => {
                scope.apply(inst)?;
                record = false;
            }
            Command::Env(kvs) => {
                let pairs = scope.expand_pairs(kvs, line)?;
                let c = config_obj(&mut so.config);
                let mut env: Vec<String> = c
                    .get("Env")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                for (k, v) in &pairs {
                    let kv = format!("{k}={v}");
                    match env.iter_mut().find(|e| e.split('=').next() == Some(k)) {
                        Some(slot) => *slot = kv,
                        None => env.push(kv),
                    }
                }
                c.insert("Env".into(), json!(env));
                scope.apply(inst)?;
            }
            Command::Workdir(w) => {
                let w = scope.expand(w, line)?;
                let c = config_obj(&mut so.config);
                let cur = c
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/")
                    .to_string();
                let new = if w.starts_with('/') {
                    clean_abs(&w)
                } else {
                    clean_abs(&format!("{cur}/{w}"))
                };
                c.insert("WorkingDir".into(), Value::String(new));
            }
            Command::User(u) => {
                let u = scope.expand(u, line)?;
                config_obj(&mut so.config).insert("User".into(), Value::String(u));
            }
            Command::Cmd(c) => {
                let v = cmdline(c);
                config_obj(&mut so.config).insert("Cmd".into(), v);
                *cmd_set = true;
            }
            Command::Entrypoint(c) => {
                let v = cmdline(c);
                let o = config_obj(&mut so.config);
                o.insert("Entrypoint".into(), v);
                if !*cmd_set {
                    o.insert("Cmd".into(), Value::Null);
                }
            }
            Command::Shell(v) => {
                config_obj(&mut so.config).insert("Shell".into(), json!(v));
            }
            Command::Label(kvs) => {
                let pairs = scope.expand_pairs(kvs, line)?;
                let labels = obj_field(config_obj(&mut so.config), "Labels");
                for (k, v) in pairs {
                    labels.insert(k, Value::String(v));
                }
            }
            Command::Maintainer(m) => {
                so.config["author"] = Value::String(m.clone());
            }
            Command::Expose(ports) => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(scope.expand_words(p, line)?);
                }
                let exposed = obj_field(config_obj(&mut so.config), "ExposedPorts");
                for w in words {
                    let w = if w.contains('/') {
                        w.to_ascii_lowercase()
                    } else {
                        format!("{w}/tcp")
                    };
                    exposed.insert(w, json!({}));
                }
            }
            Command::Volume(vols) => {
                let mut words = Vec::new();
                for v in vols {
                    if inst.json {
                        words.push(scope.expand(v, line)?);
                    } else {
                        words.extend(scope.expand_words(v, line)?);
                    }
                }
                let volumes = obj_field(config_obj(&mut so.config), "Volumes");
                for w in words {
                    volumes.insert(w, json!({}));
                }
            }
            Command::Stopsignal(s) => {
                let s = scope.expand(s, line)?;
                config_obj(&mut so.config).insert("StopSignal".into(), Value::String(s));
            }
            Command::Healthcheck(h) => {
                let v = match h {
                    Healthcheck::None => json!({"Test": ["NONE"]}),
                    Healthcheck::Cmd {
                        cmd,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test = match cmd {
                            CmdLine::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            CmdLine::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        };
                        let mut o = Map::new();
                        o.insert("Test".into(), json!(test));
                        let ns =
                            |d: &Option<std::time::Duration>| d.map(|d| json!(d.as_nanos() as u64));
                        for (k, d) in [
                            ("Interval", interval),
                            ("Timeout", timeout),
                            ("StartPeriod", start_period),
                            ("StartInterval", start_interval),
                        ] {
                            if let Some(v) = ns(d) {
                                o.insert(k.into(), v);
                            }
                        }
                        if let Some(r) = retries {
                            o.insert("Retries".into(), json!(r));
                        }
                        Value::Object(o)
                    }
                };
                config_obj(&mut so.config).insert("Healthcheck".into(), v);
            }
            Command::Onbuild(_) => {
                let trigger = inst.onbuild_trigger().unwrap_or_default();
                let c = config_obj(&mut so.config);
                let arr = c.entry("OnBuild").or_insert_with(|| json!([]));
                if !arr.is_array() {
                    *arr = json!([]);
                }
                if let Some(a) = arr.as_array_mut() {
                    a.push(Value::String(trigger));
                }
            }
            Command::From(_) | Command::Run(_) | Command::Copy(_) | Command::Add(_) => {}
        }
        if record {
            self.history(so, instr_text(inst), true);
        }
        Ok(())
    }

    /// Commits a step's result: a cached layer, or the diff in `work`'s upper.
    fn add_layer(&mut self, so: &mut StageOut, key: &Digest, layer: Layer) {
        // the parent's state is part of the new one even when the key leaves it out
        // (--link), so the steps after a linked one still depend on the base
        so.state = hash(&[
            so.state.to_string().as_bytes(),
            key.to_string().as_bytes(),
            layer.diff_id.to_string().as_bytes(),
        ]);
        so.layers.push(layer);
    }

    fn finish_work(
        &mut self,
        so: &mut StageOut,
        key: &Digest,
        mut work: Work,
    ) -> Result<(), BuildError> {
        work.unmount()?;
        let upper = work.upper();
        let nl = write_dir_layer(self.store, &upper, self.opts.epoch)?;
        let layer = Layer {
            desc: nl.descriptor,
            diff_id: nl.diff_id,
        };
        let mut diff_ids: Vec<Digest> = so.layers.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(layer.diff_id.clone());
        let chain = berth_image::manifest::chain_ids(&diff_ids);
        let chain_id = chain.last().expect("one layer at least");
        self.store
            .adopt_snapshot(&upper, &layer.diff_id, chain_id)?;
        self.cache.put(key, &layer)?;
        self.add_layer(so, key, layer);
        Ok(())
    }

    fn lookup(&mut self, so: &mut StageOut, key: &Digest) -> bool {
        if self.opts.no_cache {
            return false;
        }
        match self.cache.get(self.store, key) {
            Some(layer) => {
                self.add_layer(so, key, layer);
                true
            }
            None => false,
        }
    }

    fn step_err(inst: &Instruction, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            line: inst.start_line,
            instruction: instr_text(inst),
            message: message.into(),
        }
    }

    /// Mounts the root filesystem of a stage or image named by `--from`, for reading.
    fn mount_from(
        &mut self,
        from: &str,
        all: &[Stage<'_>],
        index: usize,
        done: &[Option<StageOut>],
    ) -> Result<(Work, Digest), BuildError> {
        let so = match find_stage(all, from, index) {
            Some(j) => done[j]
                .clone()
                .ok_or_else(|| BuildError::NotFound(format!("stage {from}")))?,
            None => self.load_image(from)?,
        };
        let mut w = Work::new(&self.tmp)?;
        let lowers = self.snapshot_lowers(&so.layers)?;
        w.mount(lowers)?;
        Ok((w, so.state))
    }

    /// The step's scratch directory for downloads and checkouts, made on first use
    /// (named like step directories, so a killed build's is swept too).
    fn download_dir(&self, slot: &mut Option<tempfile::TempDir>) -> Result<PathBuf, BuildError> {
        if let Some(d) = slot {
            return Ok(d.path().to_path_buf());
        }
        fs::create_dir_all(&self.tmp).map_err(io_err("create directory", &self.tmp))?;
        let d = tempfile::Builder::new()
            .prefix(&format!("step-{}-dl", std::process::id()))
            .tempdir_in(&self.tmp)
            .map_err(io_err("create temporary directory in", &self.tmp))?;
        let p = d.path().to_path_buf();
        *slot = Some(d);
        Ok(p)
    }

    /// The agent socket of `--ssh default`, for git over ssh.
    fn ssh_default(&self) -> Option<&Path> {
        self.opts.ssh.get("default").map(PathBuf::as_path)
    }

    fn state_of(
        &self,
        from: &str,
        all: &[Stage<'_>],
        index: usize,
        done: &[Option<StageOut>],
    ) -> Result<Digest, BuildError> {
        match find_stage(all, from, index) {
            Some(j) => done[j]
                .as_ref()
                .map(|s| s.state.clone())
                .ok_or_else(|| BuildError::NotFound(format!("stage {from}"))),
            None => Ok(self.load_image(from)?.state),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        inst: &Instruction,
        scope: &StageScope<'_>,
        so: &mut StageOut,
        all: &[Stage<'_>],
        index: usize,
        done: &[Option<StageOut>],
    ) -> Result<bool, BuildError> {
        let line = inst.start_line;
        let (sources, dest, from, chown, chmod, is_add, unpack, exclude) = match &inst.command {
            Command::Copy(c) => (
                &c.sources,
                &c.dest,
                c.from.clone(),
                c.chown.clone(),
                c.chmod.clone(),
                false,
                false,
                &c.exclude,
            ),
            Command::Add(a) if a.checksum.is_some() && a.sources.len() != 1 => {
                return Err(Self::step_err(inst, "--checksum needs exactly one source"));
            }
            Command::Add(a) => (
                &a.sources,
                &a.dest,
                None,
                a.chown.clone(),
                a.chmod.clone(),
                true,
                a.unpack != Some(false),
                &a.exclude,
            ),
            _ => unreachable!("copy_step gets COPY or ADD"),
        };
        let unpack_remote = matches!(&inst.command, Command::Add(a) if a.unpack == Some(true));
        let (link, parents) = match &inst.command {
            Command::Copy(c) => (c.link, c.parents),
            Command::Add(a) => (a.link, false),
            _ => (false, false),
        };
        let checksum = match &inst.command {
            Command::Add(a) => a
                .checksum
                .as_ref()
                .map(|c| scope.expand(c, line))
                .transpose()?,
            _ => None,
        };
        let mut downloads: Option<tempfile::TempDir> = None;
        let mut remote: Vec<usize> = Vec::new();
        let from = from.map(|f| scope.expand(&f, line)).transpose()?;
        let chown = chown.map(|c| scope.expand(&c, line)).transpose()?;
        let chmod = chmod.map(|c| scope.expand(&c, line)).transpose()?;
        let mode = chmod
            .as_deref()
            .map(|m| {
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|v| *v <= 0o7777)
                    .ok_or_else(|| Self::step_err(inst, format!("invalid --chmod value {m:?}")))
            })
            .transpose()?;
        let dest = scope.expand(dest, line)?;
        let workdir = config_obj(&mut so.config)
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string();
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), dest)
        };
        let dest_dir_syntax = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
        let mut srcs: Vec<String> = Vec::new();
        let mut urls: Vec<String> = Vec::new();
        let mut heredocs: Vec<(String, String)> = Vec::new();
        let mut gits: Vec<(crate::git::GitSource, String)> = Vec::new();
        let keep_git_dir = matches!(&inst.command, Command::Add(a) if a.keep_git_dir);
        for s in sources {
            match s {
                Source::Path(p) => {
                    let p = scope.expand(p, line)?;
                    if is_add && let Some(g) = crate::git::parse(&p) {
                        // the commit is resolved now (it is the cache key); the
                        // checkout happens only when the step runs
                        let commit = crate::git::resolve(&g, self.ssh_default())
                            .map_err(|m| Self::step_err(inst, m))?;
                        if let Some(want) = &checksum
                            && !commit.starts_with(want.trim_start_matches("sha1:"))
                        {
                            return Err(Self::step_err(
                                inst,
                                format!(
                                    "{}: checksum mismatch: expected commit {want}, got {commit}",
                                    g.url
                                ),
                            ));
                        }
                        gits.push((g, commit));
                        continue;
                    }
                    let http = p.starts_with("http://") || p.starts_with("https://");
                    if is_add && http {
                        urls.push(p);
                        continue;
                    }
                    if p.contains("://") || p.starts_with("git@") {
                        return Err(Self::step_err(
                            inst,
                            format!(
                                "remote source {p} is not supported{}",
                                if is_add { "" } else { " by COPY (use ADD)" }
                            ),
                        ));
                    }
                    srcs.push(p);
                }
                Source::Heredoc(name) => {
                    let h = inst
                        .heredocs
                        .iter()
                        .find(|h| &h.name == name)
                        .ok_or_else(|| Self::step_err(inst, format!("heredoc {name} missing")))?;
                    // unquoted delimiters expand the body, quotes kept as written
                    let data = if h.expand {
                        scope.expand_raw(&h.data(), line)?
                    } else {
                        h.data()
                    };
                    heredocs.push((name.clone(), data));
                }
            }
        }
        let exclude_m = if exclude.is_empty() {
            None
        } else {
            Some(Matcher::new(exclude)?)
        };
        // what the step reads, and its digest
        let mut hasher = Sha256::new();
        // each item with its entries and, for --parents, the path it keeps under dest
        let mut items: Vec<(Item, Vec<Entry>, Option<String>)> = Vec::new();
        let from_state = match &from {
            None => {
                for s in &srcs {
                    let depth = parents.then(|| pivot_depth(s));
                    for it in fsutil::find_sources(&self.opts.context, s, Some(&self.ignore))? {
                        let mut entries = fsutil::walk(&it, Some(&self.ignore))?;
                        if let Some(m) = &exclude_m
                            && !keep_after_exclude(m, &it, &mut entries, s)
                        {
                            continue;
                        }
                        hasher.update(it.rel.as_bytes());
                        hasher.update([0]);
                        fsutil::digest_entries(&entries, &mut hasher)?;
                        let kept = depth.map(|n| strip_components(&it.rel, n));
                        items.push((it, entries, kept));
                    }
                }
                // remote files: fetched now (their content is part of the key), never
                // unpacked, mode 0600 as BuildKit gives them
                for u in &urls {
                    let dir = self.download_dir(&mut downloads)?;
                    let name = crate::fetch::file_name(u);
                    let path = dir.join(format!("{}-{name}", items.len()));
                    let got = crate::fetch::fetch(u, &path)
                        .map_err(|m| Self::step_err(inst, format!("fetching {m}")))?;
                    if let Some(want) = &checksum
                        && want != &got
                    {
                        return Err(Self::step_err(
                            inst,
                            format!("{u}: checksum mismatch: expected {want}, got {got}"),
                        ));
                    }
                    {
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                            .map_err(io_err("chmod", &path))?;
                    }
                    hasher.update(u.as_bytes());
                    hasher.update(got.as_bytes());
                    let it = Item { rel: name, path };
                    let entries = fsutil::walk(&it, None)?;
                    remote.push(items.len());
                    items.push((it, entries, None));
                }
                None
            }
            Some(f) => Some(self.state_of(f, all, index, done)?),
        };
        for (g, commit) in &gits {
            hasher.update(g.url.as_bytes());
            hasher.update([0]);
            hasher.update(commit.as_bytes());
            hasher.update([0]);
            hasher.update(g.subdir.as_deref().unwrap_or("").as_bytes());
            hasher.update([u8::from(keep_git_dir)]);
        }
        for (n, d) in &heredocs {
            hasher.update(n.as_bytes());
            hasher.update([0]);
            hasher.update(d.as_bytes());
        }
        let inputs = Digest::from_sha256(hasher.finalize().into());
        let desc = json!({
            "op": if is_add { "add" } else { "copy" },
            "srcs": srcs,
            "dest": dest_abs,
            "dest_dir": dest_dir_syntax,
            "chown": chown,
            "chmod": mode,
            "unpack": unpack,
            "exclude": exclude,
            "parents": parents,
            "link": link,
            "from": from_state.as_ref().map(|d| d.to_string()),
            "inputs": inputs.to_string(),
        });
        // a --link layer is made apart from its parent, so its key leaves the parent out:
        // a changed base keeps the entry (and the layer digest)
        let key = if link {
            hash(&[b"link", desc.to_string().as_bytes()])
        } else {
            hash(&[so.state.to_string().as_bytes(), desc.to_string().as_bytes()])
        };
        let created_by = format!("{} # buildkit", instr_text(inst));
        if self.lookup(so, &key) {
            self.history(so, created_by, false);
            return Ok(true);
        }
        let mut work = Work::new(&self.tmp)?;
        // --link: files go into an empty directory that becomes the layer as is; the
        // parent is mounted only to resolve --chown names
        let numeric_owner = chown.as_deref().is_none_or(|c| {
            c.split(':')
                .all(|p| p.chars().all(|ch| ch.is_ascii_digit()))
        });
        let mut parent_view = None;
        let rootfs = if link {
            work.upper()
        } else {
            let lowers = self.snapshot_lowers(&so.layers)?;
            work.mount(lowers)?;
            work.rootfs()
        };
        let user_root = if link && !numeric_owner {
            let mut w = Work::new(&self.tmp)?;
            let lowers = self.snapshot_lowers(&so.layers)?;
            w.mount(lowers)?;
            let r = w.rootfs();
            parent_view = Some(w);
            r
        } else {
            rootfs.clone()
        };
        let owner = chown
            .as_deref()
            .map(|c| {
                berth_image::spec::resolve_user(c, &user_root)
                    .map(|(u, g, _)| (u, g))
                    .map_err(|e| Self::step_err(inst, format!("--chown={c}: {e}")))
            })
            .transpose()?;
        drop(parent_view);
        // the source of --from: items found now under its mounted root
        let _from_mount = match &from {
            Some(f) => {
                let (w, _) = self.mount_from(f, all, index, done)?;
                let root = w.rootfs();
                for s in &srcs {
                    let depth = parents.then(|| pivot_depth(s));
                    for it in fsutil::find_sources(&root, s, None)? {
                        let mut entries = fsutil::walk(&it, None)?;
                        if let Some(m) = &exclude_m
                            && !keep_after_exclude(m, &it, &mut entries, s)
                        {
                            continue;
                        }
                        let kept = depth.map(|n| strip_components(&it.rel, n));
                        items.push((it, entries, kept));
                    }
                }
                Some(w)
            }
            None => None,
        };
        for (g, commit) in &gits {
            let dir = self.download_dir(&mut downloads)?;
            let repo = dir.join(format!("git-{}", items.len()));
            crate::git::checkout(g, commit, &repo, keep_git_dir, self.ssh_default())
                .map_err(|m| Self::step_err(inst, m))?;
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&repo, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &repo))?;
            }
            let path = match &g.subdir {
                Some(sd) => {
                    let p = fsutil::resolve_in_root(&repo, sd, true)
                        .map_err(io_err("resolve", &repo))?;
                    if !p.is_dir() {
                        return Err(Self::step_err(
                            inst,
                            format!("{}: no directory {sd} at {commit}", g.url),
                        ));
                    }
                    p
                }
                None => repo,
            };
            let it = Item {
                rel: String::new(),
                path,
            };
            let entries = fsutil::walk(&it, None)?;
            items.push((it, entries, None));
        }
        let attrs = CopyAttrs {
            owner,
            keep_owner: from.is_some(),
            mode,
        };
        if !link {
            fsutil::mkdir_in_root(&rootfs, &workdir, None)?;
        }
        let many = items.len() + heredocs.len() > 1
            || srcs.iter().any(|s| fsutil::has_wildcard(s))
            || parents;
        let dest_exists_dir = || {
            fsutil::resolve_in_root(&rootfs, &dest_abs, true)
                .ok()
                .and_then(|p| fs::metadata(p).ok())
                .is_some_and(|m| m.is_dir())
        };
        let into_dir = dest_dir_syntax || many || dest_exists_dir();
        if many && !dest_dir_syntax && !dest_exists_dir() {
            return Err(Self::step_err(
                inst,
                "when using COPY with more than one source file, the destination must be a directory and end with a /",
            ));
        }
        for (i, (it, entries, kept)) in items.iter().enumerate() {
            let Some(top) = entries.first() else { continue };
            if let Some(rel) = kept {
                // --parents: the source's path (after a /./ pivot) is kept under dest
                let target = if rel.is_empty() {
                    dest_abs.clone()
                } else {
                    format!("{}/{rel}", dest_abs.trim_end_matches('/'))
                };
                fsutil::copy_entries(&rootfs, &target, entries, attrs)?;
                continue;
            }
            let base = it.rel.rsplit('/').next().unwrap_or("").to_string();
            if top.kind == fsutil::Kind::Dir {
                fsutil::copy_entries(&rootfs, &dest_abs, entries, attrs)?;
                continue;
            }
            if is_add
                && unpack
                // remote archives are unpacked only when asked (--unpack=true)
                && (!remote.contains(&i) || unpack_remote)
                && top.kind == fsutil::Kind::File
                && is_archive(&top.path)
            {
                let dir = fsutil::mkdir_in_root(&rootfs, &dest_abs, owner)?;
                let f = fs::File::open(&top.path).map_err(io_err("open", &top.path))?;
                let r = berth_image::unpack::decompress(f, None)?;
                berth_image::unpack::unpack_layer(r, &dir, berth_image::unpack::Whiteouts::Apply)?;
                continue;
            }
            let target = if into_dir {
                format!("{}/{base}", dest_abs.trim_end_matches('/'))
            } else {
                dest_abs.clone()
            };
            fsutil::copy_entries(&rootfs, &target, entries, attrs)?;
        }
        for (name, data) in &heredocs {
            let target = if into_dir {
                format!("{}/{name}", dest_abs.trim_end_matches('/'))
            } else {
                dest_abs.clone()
            };
            let (parent, file) = target.rsplit_once('/').unwrap_or(("", &target));
            let dir = fsutil::mkdir_in_root(&rootfs, parent, owner)?;
            let p = dir.join(file);
            fs::write(&p, data).map_err(io_err("write", &p))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode.unwrap_or(0o644)))
                .map_err(io_err("chmod", &p))?;
            let (u, g) = owner.unwrap_or((0, 0));
            std::os::unix::fs::lchown(&p, Some(u), Some(g)).map_err(io_err("chown", &p))?;
        }
        drop(_from_mount);
        self.finish_work(so, &key, work)?;
        self.history(so, created_by, false);
        Ok(false)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        inst: &Instruction,
        scope: &StageScope<'_>,
        so: &mut StageOut,
        all: &[Stage<'_>],
        index: usize,
        done: &[Option<StageOut>],
        started: Instant,
    ) -> Result<bool, BuildError> {
        let Command::Run(run) = &inst.command else {
            unreachable!("run_step gets RUN")
        };
        let line = inst.start_line;
        let shell = shell_of(&so.config);
        let args: Vec<String> = match &run.cmd {
            CmdLine::Exec(v) => v.clone(),
            CmdLine::Shell(s) => {
                let script = if inst.heredocs.len() == 1
                    && s.trim().starts_with("<<")
                    && !s.trim().contains(char::is_whitespace)
                {
                    inst.heredocs[0].data()
                } else if inst.heredocs.is_empty() {
                    s.clone()
                } else {
                    let mut t = s.clone();
                    for h in &inst.heredocs {
                        t.push('\n');
                        t.push_str(&h.content);
                        t.push_str(&h.name);
                    }
                    t
                };
                let mut v = shell.clone();
                v.push(script);
                v
            }
        };
        let c = config_obj(&mut so.config);
        let workdir = c
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string();
        let user = c
            .get("User")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut env: Vec<String> = scope
            .run_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, berth_image::spec::DEFAULT_PATH.to_string());
        }
        let host_network = matches!(run.network, Some(crate::ast::NetworkMode::Host));
        let privileged = matches!(run.security, Some(crate::ast::SecurityMode::Insecure));
        // mounts: expanded, and the digest of what bind mounts from the context read
        let mut hasher = Sha256::new();
        let mut mounts_desc = Vec::new();
        struct Planned {
            kind: MountType,
            target: String,
            source: Option<PathBuf>,
            readonly: bool,
            from: Option<String>,
            size: Option<u64>,
            env: Option<String>,
            mode: Option<u32>,
            uid: Option<u32>,
            gid: Option<u32>,
        }
        let mut planned = Vec::new();
        for m in &run.mounts {
            let ex = |v: &Option<String>| v.as_ref().map(|s| scope.expand(s, line)).transpose();
            let target = ex(&m.target)?;
            let id = ex(&m.id)?;
            let source = ex(&m.source)?;
            let from = ex(&m.from)?;
            let abs = |t: &str| {
                if t.starts_with('/') {
                    clean_abs(t)
                } else {
                    clean_abs(&format!("{workdir}/{t}"))
                }
            };
            match m.kind {
                MountType::Secret => {
                    let id = id
                        .clone()
                        .or_else(|| {
                            target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .map(str::to_string)
                        })
                        .ok_or_else(|| Self::step_err(inst, "secret mount needs an id"))?;
                    let Some(src) = self.opts.secrets.get(&id) else {
                        if m.required {
                            return Err(Self::step_err(
                                inst,
                                format!(
                                    "secret {id} is required but was not given (--secret id={id},src=FILE)"
                                ),
                            ));
                        }
                        continue;
                    };
                    let target = match (&target, &m.env) {
                        (Some(t), _) => Some(abs(t)),
                        (None, Some(_)) => None,
                        (None, None) => Some(format!("/run/secrets/{id}")),
                    };
                    mounts_desc.push(json!({"secret": id, "target": target, "env": m.env}));
                    planned.push(Planned {
                        kind: MountType::Secret,
                        target: target.unwrap_or_default(),
                        source: Some(src.clone()),
                        readonly: true,
                        from: None,
                        size: None,
                        env: m.env.clone(),
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                    });
                }
                MountType::Cache => {
                    let target = abs(target.as_deref().unwrap_or("/"));
                    let cid = id.clone().unwrap_or_else(|| target.clone());
                    let dir = self
                        .opts
                        .root
                        .join("build")
                        .join("mounts")
                        .join(hash(&[cid.as_bytes()]).hex());
                    mounts_desc.push(json!({"cache": cid, "target": target}));
                    planned.push(Planned {
                        kind: MountType::Cache,
                        target,
                        source: Some(dir),
                        readonly: m.readonly,
                        from: None,
                        size: None,
                        env: None,
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                    });
                }
                MountType::Tmpfs => {
                    let target = abs(target.as_deref().unwrap_or("/"));
                    mounts_desc.push(json!({"tmpfs": target, "size": m.size}));
                    planned.push(Planned {
                        kind: MountType::Tmpfs,
                        target,
                        source: None,
                        readonly: false,
                        from: None,
                        size: m.size,
                        env: None,
                        mode: None,
                        uid: None,
                        gid: None,
                    });
                }
                MountType::Bind => {
                    let target = abs(target.as_deref().unwrap_or("/"));
                    let src = source.clone().unwrap_or_default();
                    match &from {
                        None => {
                            let it =
                                fsutil::find_sources(&self.opts.context, &src, Some(&self.ignore))?;
                            for it in &it {
                                let entries = fsutil::walk(it, Some(&self.ignore))?;
                                fsutil::digest_entries(&entries, &mut hasher)?;
                            }
                            mounts_desc
                                .push(json!({"bind": src, "target": target, "rw": !m.readonly}));
                        }
                        Some(f) => {
                            let st = self.state_of(f, all, index, done)?;
                            mounts_desc.push(json!({"bind": src, "from": st.to_string(), "target": target, "rw": !m.readonly}));
                        }
                    }
                    planned.push(Planned {
                        kind: MountType::Bind,
                        target,
                        source: Some(PathBuf::from(src)),
                        readonly: m.readonly,
                        from: from.clone(),
                        size: None,
                        env: None,
                        mode: None,
                        uid: None,
                        gid: None,
                    });
                }
                MountType::Ssh => {
                    let sid = id.clone().unwrap_or_else(|| "default".to_string());
                    let Some(sock) = self.opts.ssh.get(&sid) else {
                        if m.required {
                            return Err(Self::step_err(
                                inst,
                                format!(
                                    "ssh agent {sid} is required but was not given (--ssh {sid}[=SOCKET|KEY])"
                                ),
                            ));
                        }
                        continue;
                    };
                    let n = planned.iter().filter(|p| p.kind == MountType::Ssh).count();
                    let target = target
                        .as_deref()
                        .map(abs)
                        .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}"));
                    // which agent answers is not part of the key, as in BuildKit
                    mounts_desc.push(json!({"ssh": sid, "target": target}));
                    planned.push(Planned {
                        kind: MountType::Ssh,
                        target,
                        source: Some(sock.clone()),
                        readonly: true,
                        from: None,
                        size: None,
                        env: None,
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                    });
                }
            }
        }
        let inputs = Digest::from_sha256(hasher.finalize().into());
        let desc = json!({
            "op": "run",
            "args": args,
            "env": env,
            "cwd": workdir,
            "user": user,
            "network": host_network,
            "privileged": privileged,
            "mounts": mounts_desc,
            "inputs": inputs.to_string(),
        });
        let key = hash(&[so.state.to_string().as_bytes(), desc.to_string().as_bytes()]);
        let created_by = format!(
            "RUN {} # buildkit",
            match &run.cmd {
                CmdLine::Exec(v) => json!(v).to_string(),
                CmdLine::Shell(_) => args.join(" "),
            }
        );
        if self.lookup(so, &key) {
            self.history(so, created_by, false);
            return Ok(true);
        }
        let mut work = Work::new(&self.tmp)?;
        let lowers = self.snapshot_lowers(&so.layers)?;
        work.mount(lowers)?;
        let rootfs = work.rootfs();
        fsutil::mkdir_in_root(&rootfs, &workdir, None)?;
        let (uid, gid, additional_gids) = berth_image::spec::resolve_user(&user, &rootfs)
            .map_err(|e| Self::step_err(inst, format!("user {user:?}: {e}")))?;
        let mut oci_mounts = Vec::new();
        let mut created: Vec<String> = Vec::new();
        let mut from_mounts: Vec<Work> = Vec::new();
        let mut relays: Vec<crate::ssh::AgentRelay> = Vec::new();
        // /etc/hosts and /etc/resolv.conf as BuildKit gives them, bound from the step's
        // directory so they never reach the layer
        if fs::symlink_metadata(rootfs.join("etc")).is_ok_and(|m| m.is_dir()) {
            let hosts = work.path().join("hosts");
            fs::write(
                &hosts,
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            )
            .map_err(io_err("write", &hosts))?;
            let resolv = work.path().join("resolv.conf");
            let text = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            fs::write(&resolv, text).map_err(io_err("write", &resolv))?;
            for (src, dst) in [(hosts, "/etc/hosts"), (resolv, "/etc/resolv.conf")] {
                created.extend(make_mount_target(&rootfs, dst, true)?);
                oci_mounts.push(json!({"destination": dst, "type": "bind",
                    "source": src, "options": ["rbind", "rw"]}));
            }
        }
        for p in &planned {
            if p.kind == MountType::Secret && p.target.is_empty() {
                // env-only secret
                if let (Some(var), Some(src)) = (&p.env, &p.source) {
                    let v = fs::read_to_string(src).map_err(io_err("read secret", src))?;
                    env.push(format!("{var}={}", v.trim_end_matches('\n')));
                }
                continue;
            }
            let file_target = p.kind == MountType::Secret
                || p.kind == MountType::Ssh
                || (p.kind == MountType::Bind
                    && p.from.is_none()
                    && p.source.as_ref().is_some_and(|s| {
                        self.opts
                            .context
                            .join(fsutil::clean_rel(&s.to_string_lossy()))
                            .is_file()
                    }));
            created.extend(make_mount_target(&rootfs, &p.target, file_target)?);
            match p.kind {
                MountType::Secret => {
                    let src = p.source.clone().unwrap_or_default();
                    if let (Some(var), true) = (&p.env, true) {
                        let v = fs::read_to_string(&src).map_err(io_err("read secret", &src))?;
                        env.push(format!("{var}={}", v.trim_end_matches('\n')));
                    }
                    oci_mounts.push(json!({"destination": p.target, "type": "bind",
                        "source": src, "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
                }
                MountType::Cache => {
                    let dir = p.source.clone().unwrap_or_default();
                    if !dir.exists() {
                        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(
                            &dir,
                            fs::Permissions::from_mode(p.mode.unwrap_or(0o755)),
                        )
                        .map_err(io_err("chmod", &dir))?;
                        std::os::unix::fs::chown(
                            &dir,
                            Some(p.uid.unwrap_or(0)),
                            Some(p.gid.unwrap_or(0)),
                        )
                        .map_err(io_err("chown", &dir))?;
                    }
                    touch(&dir);
                    let ro = if p.readonly { "ro" } else { "rw" };
                    oci_mounts.push(json!({"destination": p.target, "type": "bind",
                        "source": dir, "options": ["rbind", ro]}));
                }
                MountType::Tmpfs => {
                    let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                    if let Some(s) = p.size {
                        opts.push(format!("size={s}"));
                    }
                    oci_mounts.push(json!({"destination": p.target, "type": "tmpfs",
                        "source": "tmpfs", "options": opts}));
                }
                MountType::Bind => {
                    let rel =
                        fsutil::clean_rel(&p.source.clone().unwrap_or_default().to_string_lossy());
                    let src = match &p.from {
                        None => self.opts.context.join(&rel),
                        Some(f) => {
                            let (w, _) = self.mount_from(f, all, index, done)?;
                            let s = fsutil::resolve_in_root(&w.rootfs(), &rel, true)
                                .map_err(io_err("resolve", &w.rootfs()))?;
                            from_mounts.push(w);
                            s
                        }
                    };
                    let ro = if p.readonly { "ro" } else { "rw" };
                    oci_mounts.push(json!({"destination": p.target, "type": "bind",
                        "source": src, "options": ["rbind", ro]}));
                }
                MountType::Ssh => {
                    let upstream = p.source.clone().unwrap_or_default();
                    let sock = work.path().join(format!("ssh-{}.sock", relays.len()));
                    let relay = crate::ssh::AgentRelay::start(
                        &upstream,
                        &sock,
                        p.uid.unwrap_or(0),
                        p.gid.unwrap_or(0),
                        p.mode.unwrap_or(0o600),
                    )
                    .map_err(|e| Self::step_err(inst, format!("ssh mount {}: {e}", p.target)))?;
                    relays.push(relay);
                    // the first agent mount is the one ssh clients find
                    if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={}", p.target));
                    }
                    oci_mounts.push(json!({"destination": p.target, "type": "bind",
                        "source": sock, "options": ["rbind"]}));
                }
            }
        }
        let spec = RunSpec {
            args: args.clone(),
            env,
            cwd: workdir,
            uid,
            gid,
            additional_gids,
            host_network,
            privileged,
            mounts: oci_mounts,
        };
        let id = format!(
            "berth-build-{}-{}",
            std::process::id(),
            CONTAINER_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let step = self.step;
        let code = self
            .runtime
            .run(work.path(), &id, &spec, self.out, step, started)?;
        drop(from_mounts);
        drop(relays);
        if code != 0 {
            return Err(BuildError::RunFailed {
                line,
                command: match &run.cmd {
                    CmdLine::Exec(v) => json!(v).to_string(),
                    CmdLine::Shell(_) => args.join(" "),
                },
                code,
            });
        }
        work.unmount()?;
        // mount points made for this step are not part of its result
        let upper = work.upper();
        for c in created.iter().rev() {
            let p = upper.join(c.trim_start_matches('/'));
            if let Ok(md) = fs::symlink_metadata(&p) {
                if md.is_dir() {
                    let _ = fs::remove_dir(&p);
                } else if md.len() == 0 {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        self.finish_work(so, &key, work)?;
        self.history(so, created_by, false);
        Ok(false)
    }
}

/// Creates a mount point (file or directory) in `rootfs` where missing; returns the
/// container paths it created, parents first.
fn make_mount_target(rootfs: &Path, target: &str, file: bool) -> Result<Vec<String>, BuildError> {
    let mut made = Vec::new();
    let mut logical = String::new();
    let parts: Vec<&str> = target.split('/').filter(|s| !s.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        logical.push('/');
        logical.push_str(part);
        let host =
            fsutil::resolve_in_root(rootfs, &logical, true).map_err(io_err("resolve", rootfs))?;
        if fs::symlink_metadata(&host).is_ok() {
            continue;
        }
        if i + 1 == parts.len() && file {
            fs::write(&host, b"").map_err(io_err("create mount point", &host))?;
        } else {
            fs::create_dir(&host).map_err(io_err("create mount point", &host))?;
        }
        made.push(logical.clone());
    }
    Ok(made)
}

/// For `COPY --parents`: how many leading components of a source are not kept (those
/// before a `/./` pivot; none without one).
fn pivot_depth(src: &str) -> usize {
    match src.find("/./") {
        Some(i) => fsutil::clean_rel(&src[..i])
            .split('/')
            .filter(|c| !c.is_empty())
            .count(),
        None => 0,
    }
}

fn strip_components(rel: &str, n: usize) -> String {
    rel.split('/')
        .filter(|c| !c.is_empty())
        .skip(n)
        .collect::<Vec<_>>()
        .join("/")
}

/// Applies `--exclude` to one found item: entries whose path below the item or from
/// the source root matches are dropped, and an item a wildcard found is dropped
/// whole when it matches. Returns false when nothing of the item is left.
fn keep_after_exclude(m: &Matcher, it: &Item, entries: &mut Vec<Entry>, src: &str) -> bool {
    if fsutil::has_wildcard(src) && m.matches(&it.rel) {
        return false;
    }
    entries.retain(|e| {
        e.rel.is_empty()
            || !(m.matches(&e.rel)
                || (!it.rel.is_empty() && m.matches(&format!("{}/{}", it.rel, e.rel))))
    });
    true
}

fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

fn config_obj(cfg: &mut Value) -> &mut Map<String, Value> {
    if !cfg.get("config").is_some_and(Value::is_object) {
        cfg["config"] = json!({});
    }
    cfg["config"].as_object_mut().expect("config is an object")
}

fn obj_field<'m>(m: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let v = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("just made an object")
}

fn shell_of(cfg: &Value) -> Vec<String> {
    cfg.get("config")
        .and_then(|c| c.get("Shell"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(946_684_800), "2000-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn parents_pivot() {
        assert_eq!(pivot_depth("x/a.txt"), 0);
        assert_eq!(pivot_depth("./x/a.txt"), 0);
        assert_eq!(pivot_depth("a/b/./c/*.txt"), 2);
        assert_eq!(pivot_depth("/app/./out"), 1);
        assert_eq!(strip_components("a/b/c/d.txt", 2), "c/d.txt");
        assert_eq!(strip_components("a", 1), "");
    }
}
