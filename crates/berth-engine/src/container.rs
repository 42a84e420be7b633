//! Containers: the metadata rows, create, start (through a monitor), stop, kill,
//! remove, rename, pause, wait, and the listing/inspect views.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use berth_image::{Image, Store};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{self, CreateConfig, MountKind, RestartPolicy};
use crate::error::{Error, Result};
use crate::network::{self, Attachment};
use crate::runtime::{self, Runtime};
use crate::spec::{self, ResolvedMount};
use crate::{names, timefmt, volume};

/// Table of containers.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    config TEXT NOT NULL,
    lowerdirs TEXT NOT NULL,
    mounts TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    monitor_pid INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    attachment TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT ''
);
";

/// A container's state names (docker's, plus `starting` and `removing`).
pub mod state {
    /// Made, never started.
    pub const CREATED: &str = "created";
    /// The monitor is starting it.
    pub const STARTING: &str = "starting";
    /// Its process runs.
    pub const RUNNING: &str = "running";
    /// Frozen.
    pub const PAUSED: &str = "paused";
    /// Exited, waiting for the restart back-off.
    pub const RESTARTING: &str = "restarting";
    /// Stopped.
    pub const EXITED: &str = "exited";
    /// Being removed.
    pub const REMOVING: &str = "removing";
}

/// One container row.
#[derive(Debug, Clone, Serialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Image as typed.
    pub image: String,
    /// Image config digest.
    pub image_id: String,
    /// The create request.
    pub config: CreateConfig,
    /// Overlay lower directories, top first.
    pub lowerdirs: Vec<PathBuf>,
    /// Mounts resolved at create.
    pub mounts: Vec<ResolvedMount>,
    /// Creation time.
    pub created: String,
    /// State (see [`state`]).
    pub state: String,
    /// Host pid of the container's init (0 when not running).
    pub pid: i64,
    /// Pid of its monitor.
    pub monitor_pid: i64,
    /// Last exit code.
    pub exit_code: i64,
    /// Last start.
    pub started_at: String,
    /// Last exit.
    pub finished_at: String,
    /// Restarts made by the policy.
    pub restart_count: i64,
    /// A user stopped it (no restart).
    pub stop_requested: bool,
    /// Network attachment of the current/last run.
    pub attachment: Option<Attachment>,
    /// Last start error.
    pub error: String,
}

impl Container {
    /// Whether the container's process is (or is about to be) alive.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            state::RUNNING | state::PAUSED | state::STARTING | state::RESTARTING
        )
    }

    /// First 12 digits of the id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// docker ps's STATUS column.
    pub fn status_text(&self) -> String {
        let since = |t: &str| {
            timefmt::parse(t)
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map(timefmt::human)
                .unwrap_or_default()
        };
        match self.state.as_str() {
            state::RUNNING => format!("Up {}", since(&self.started_at)),
            state::PAUSED => format!("Up {} (Paused)", since(&self.started_at)),
            state::RESTARTING => format!(
                "Restarting ({}) {} ago",
                self.exit_code,
                since(&self.finished_at)
            ),
            state::EXITED => format!(
                "Exited ({}) {} ago",
                self.exit_code,
                since(&self.finished_at)
            ),
            state::CREATED => "Created".into(),
            state::STARTING => "Starting".into(),
            state::REMOVING => "Removal In Progress".into(),
            s => s.to_string(),
        }
    }

    /// Labels given at create.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.config.labels
    }

    /// The network request with the container's own name and hostname.
    pub fn network_request(&self) -> network::Request {
        let mut r = self.config.network.clone();
        r.name = self.name.clone();
        if r.hostname.is_empty() {
            r.hostname = self
                .config
                .hostname
                .clone()
                .unwrap_or_else(|| self.id[..12].to_string());
        }
        r
    }
}

const COLUMNS: &str = "id, name, image, image_id, config, lowerdirs, mounts, created, state, pid, \
    monitor_pid, exit_code, started_at, finished_at, restart_count, stop_requested, attachment, error";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Container> {
    let js = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let att: String = js(16)?;
    Ok(Container {
        id: r.get(0)?,
        name: r.get(1)?,
        image: r.get(2)?,
        image_id: r.get(3)?,
        config: serde_json::from_str(&js(4)?).map_err(|e| bad(4, e))?,
        lowerdirs: serde_json::from_str(&js(5)?).map_err(|e| bad(5, e))?,
        mounts: serde_json::from_str(&js(6)?).map_err(|e| bad(6, e))?,
        created: r.get(7)?,
        state: r.get(8)?,
        pid: r.get(9)?,
        monitor_pid: r.get(10)?,
        exit_code: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        restart_count: r.get(14)?,
        stop_requested: r.get::<_, i64>(15)? != 0,
        attachment: if att.is_empty() {
            None
        } else {
            serde_json::from_str(&att).ok()
        },
        error: r.get(17)?,
    })
}

/// `name` with `:latest` added when it has no tag or digest.
pub fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Finds an image in the store by name (`busybox` = `busybox:latest`) or id prefix.
pub fn find_image(store: &Store, name: &str) -> Result<Option<Image>> {
    let platform = berth_image::Platform::default();
    let desc = store
        .resolve(&normalize_image(name))
        .or_else(|_| store.resolve(name))
        .or_else(|_| store.lookup(name));
    match desc {
        Ok(d) => Ok(Some(store.image_from_desc(&d, &platform)?)),
        Err(_) => Ok(None),
    }
}

/// How to start a monitor: the program (usually the `berth` binary itself) and the
/// arguments before the container id (e.g. `--root R --state S internal-monitor`).
#[derive(Debug, Clone)]
pub struct Launcher {
    /// Program.
    pub program: PathBuf,
    /// Arguments before the id.
    pub args: Vec<std::ffi::OsString>,
}

/// The engine over one root and state directory.
#[derive(Debug)]
pub struct Engine {
    /// Persistent root (`/var/lib/berth`).
    pub root: PathBuf,
    /// Runtime state root (`/run/berth`).
    pub state: PathBuf,
    /// Metadata database.
    pub conn: rusqlite::Connection,
}

fn is_mountpoint(dir: &Path) -> bool {
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Whether a process with `pid` exists and is the monitor of `id`.
pub fn monitor_alive(pid: i64, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => {
            let s = String::from_utf8_lossy(&c);
            s.contains(id) && s.contains("monitor")
        }
        Err(_) => false,
    }
}

/// The container's overlay: volatile for `--rm` containers, whose writes are thrown
/// away (their unmount then skips syncing the filesystem under the upper layer).
fn mount_overlay(cfg: &CreateConfig, lowers: &[PathBuf], cdir: &Path) -> Result<PathBuf> {
    Ok(if cfg.auto_remove {
        berth_image::mount_overlay_volatile(lowers, cdir)?
    } else {
        berth_image::mount_overlay(lowers, cdir)?
    })
}

fn remove_dir(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p)(e)),
    }
}

impl Engine {
    /// Opens the engine's database under `root`; runtime state goes under `state`.
    pub fn open(root: &Path, state: &Path) -> Result<Engine> {
        let conn = crate::store::open(root)?;
        Ok(Engine {
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            conn,
        })
    }

    /// Persistent directory of a container (overlay upper/work, rootfs, logs).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Runtime directory of a container (bundle, pid file, sockets).
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.state.join("containers").join(id)
    }

    /// The json log file.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    /// The container's root filesystem mountpoint.
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("rootfs")
    }

    /// The runtime for a container.
    pub fn runtime(&self, c: &Container) -> Result<Runtime> {
        Ok(Runtime::new(
            runtime::find(c.config.runtime.as_deref())?,
            self.state.join("runtime"),
        ))
    }

    /// A container by full id, name, or unique id prefix.
    pub fn get(&self, reference: &str) -> Result<Container> {
        let q = format!("SELECT {COLUMNS} FROM containers WHERE id = ?1 OR name = ?2");
        let name = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(c) = self
            .conn
            .query_row(&q, params![reference, name], from_row)
            .optional()?
        {
            return Ok(c);
        }
        if reference.len() >= 3 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
            let q = format!("SELECT {COLUMNS} FROM containers WHERE id LIKE ?1 || '%' LIMIT 2");
            let mut st = self.conn.prepare(&q)?;
            let v = st
                .query_map([reference], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            if v.len() == 1 {
                return Ok(v.into_iter().next().expect("one"));
            }
            if v.len() > 1 {
                return Err(Error::invalid(
                    "container reference",
                    format!("{reference:?} matches several containers"),
                ));
            }
        }
        Err(Error::NoSuchContainer(reference.to_string()))
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let q = format!("SELECT {COLUMNS} FROM containers ORDER BY created DESC");
        let mut st = self.conn.prepare(&q)?;
        let v = st
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Sets columns of a row (`sets` like `state = ?2, pid = ?3` with `?1` the id).
    pub fn update(&self, id: &str, sets: &str, values: &[&dyn rusqlite::ToSql]) -> Result<usize> {
        let q = format!("UPDATE containers SET {sets} WHERE id = ?1");
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&id];
        p.extend_from_slice(values);
        Ok(self.conn.execute(&q, p.as_slice())?)
    }

    /// Creates a container from `image` (already in `store`): checks every flag, takes
    /// the name, lays out and mounts the root filesystem, resolves volumes and writes
    /// the config.json template. On error nothing of it remains.
    pub fn create(&self, mut cfg: CreateConfig, store: &Store, image: &Image) -> Result<Container> {
        config::validate(&cfg)?;
        // the image's exposed ports (read directly: no rootfs is needed for them)
        let mut exposed: Vec<String> = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        for e in &cfg.network.exposed {
            if !exposed.contains(e) {
                exposed.push(e.clone());
            }
        }
        cfg.network.exposed = exposed;
        if cfg.stop_signal.is_none() {
            // the image's STOPSIGNAL, like docker
            cfg.stop_signal = image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.stop_signal().clone())
                .filter(|s| config::signal_number(s).is_ok());
        }
        if let Some(h) = &cfg.hostname {
            cfg.network.hostname = h.clone();
        }
        network::validate(&self.conn, &cfg.network)?;
        if let network::NetworkMode::Container(target) = cfg.network.mode() {
            // by id, so a rename of the target does not break the join
            let t = self.get(&target)?;
            cfg.network.network = network::NetworkMode::Container(t.id).to_string();
        }
        let specs = config::mounts_of(&cfg)?;
        let id = names::new_id();
        let image_id = image.config_digest.to_string();
        let created = timefmt::now();
        // the unique name constraint decides races between parallel creates
        let mut name = cfg.name.clone().unwrap_or_else(|| names::random_name(0));
        let mut tries = 0;
        loop {
            let r = self.conn.execute(
                "INSERT INTO containers (id, name, image, image_id, config, lowerdirs, created, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, '[]', ?6, ?7)",
                params![
                    id,
                    name,
                    cfg.image,
                    image_id,
                    serde_json::to_string(&cfg).unwrap_or_default(),
                    created,
                    state::CREATED
                ],
            );
            match r {
                Ok(_) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    if cfg.name.is_some() || tries > 20 {
                        let other: String = self
                            .conn
                            .query_row("SELECT id FROM containers WHERE name = ?1", [&name], |r| {
                                r.get(0)
                            })
                            .unwrap_or_default();
                        return Err(Error::NameInUse { name, id: other });
                    }
                    tries += 1;
                    name = names::random_name(tries);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let res = self.create_files(&id, &cfg, store, image, &specs);
        match res {
            Ok(()) => self.get(&id),
            Err(e) => {
                let _ = self.cleanup(&id, true);
                let _ = self
                    .conn
                    .execute("DELETE FROM containers WHERE id = ?1", [&id]);
                Err(e)
            }
        }
    }

    fn create_files(
        &self,
        id: &str,
        cfg: &CreateConfig,
        store: &Store,
        image: &Image,
        specs: &[config::MountSpec],
    ) -> Result<()> {
        let cdir = self.container_dir(id);
        let lowers = store.prepare_rootfs(image, &cdir)?;
        let rootfs = mount_overlay(cfg, &lowers, &cdir)?;
        let mut mounts = Vec::new();
        let mut created_volumes = Vec::new();
        for m in specs {
            let rm = match m.kind {
                MountKind::Bind => ResolvedMount {
                    kind: MountKind::Bind,
                    source: PathBuf::from(&m.source),
                    name: None,
                    target: m.target.clone(),
                    readonly: m.readonly,
                    options: m.options.clone(),
                },
                MountKind::Tmpfs => ResolvedMount {
                    kind: MountKind::Tmpfs,
                    source: PathBuf::new(),
                    name: None,
                    target: m.target.clone(),
                    readonly: m.readonly,
                    options: m.options.clone(),
                },
                MountKind::Volume => {
                    let anonymous = m.source.is_empty();
                    let vname = if anonymous {
                        names::new_id()
                    } else {
                        m.source.clone()
                    };
                    let (v, new) = volume::create(
                        &self.conn,
                        &self.root,
                        &vname,
                        &BTreeMap::new(),
                        anonymous,
                    )?;
                    if new {
                        created_volumes.push(vname.clone());
                    }
                    // docker copies the image's files into an empty volume on first use
                    let empty = std::fs::read_dir(&v.mountpoint)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                    let inside_exists =
                        berth_runtime::rootfs::secure_join(&rootfs, Path::new(&m.target))
                            .map(|p| p.is_dir())
                            .unwrap_or(false);
                    if empty && inside_exists {
                        let inside =
                            berth_runtime::rootfs::secure_join(&rootfs, Path::new(&m.target))
                                .map_err(|e| Error::invalid("mount", e.to_string()))?;
                        volume::copy_tree(&inside, &v.mountpoint)?;
                    }
                    ResolvedMount {
                        kind: MountKind::Volume,
                        source: v.mountpoint.clone(),
                        name: Some(vname),
                        target: m.target.clone(),
                        readonly: m.readonly,
                        options: m.options.clone(),
                    }
                }
            };
            mounts.push(rm);
        }
        let tmpl = spec::build(id, cfg, &image.config, &rootfs, &mounts);
        let tmpl = match tmpl {
            Ok(t) => t,
            Err(e) => {
                for v in created_volumes {
                    let _ = volume::remove(&self.conn, &self.root, &v, true);
                }
                return Err(e);
            }
        };
        let p = cdir.join("spec.json");
        std::fs::write(&p, serde_json::to_vec(&tmpl).unwrap_or_default())
            .map_err(Error::io("write", &p))?;
        self.update(
            id,
            "lowerdirs = ?2, mounts = ?3, labels = ?4",
            &[
                &serde_json::to_string(&lowers).unwrap_or_default(),
                &serde_json::to_string(&mounts).unwrap_or_default(),
                &serde_json::to_string(&cfg.labels).unwrap_or_default(),
            ],
        )?;
        Ok(())
    }

    /// Mounts the container's root filesystem unless it is mounted.
    pub fn mount_rootfs(&self, c: &Container) -> Result<PathBuf> {
        let rootfs = self.rootfs(&c.id);
        if !is_mountpoint(&rootfs) {
            mount_overlay(&c.config, &c.lowerdirs, &self.container_dir(&c.id))?;
        }
        Ok(rootfs)
    }

    /// Stops the container's networking and unmounts its root (after it exited).
    pub fn release(&self, id: &str) {
        if let Err(e) = network::teardown(&self.conn, &self.root, &self.state, id) {
            tracing::warn!(container = id, error = %e, "network teardown");
        }
        let _ = berth_image::unmount_overlay(&self.container_dir(id));
    }

    /// Everything on disk of a container, except its row and volumes.
    fn cleanup(&self, id: &str, remove_files: bool) -> Result<()> {
        self.release(id);
        remove_dir(&self.run_dir(id))?;
        if remove_files {
            remove_dir(&self.container_dir(id))?;
        }
        Ok(())
    }

    /// Deletes what removals left in the trash (see [`crate::trash`]).
    pub fn empty_trash(&self) {
        crate::trash::empty(&self.root);
        crate::trash::empty(&self.state);
    }

    /// Records that a container's run ended.
    pub fn record_exit(&self, id: &str, code: i64, next_state: &str) -> Result<()> {
        self.update(
            id,
            "state = CASE WHEN state = 'removing' THEN state ELSE ?2 END, exit_code = ?3, finished_at = ?4, pid = 0",
            &[&next_state, &code, &timefmt::now()],
        )?;
        Ok(())
    }

    /// Starts a created or stopped container through a new monitor. `attach` passes
    /// the caller's stdio to the monitor (foreground run); the handle reports start,
    /// and exit.
    pub fn start(
        &self,
        reference: &str,
        launcher: &Launcher,
        attach: Option<crate::monitor::Attach>,
    ) -> Result<Option<crate::monitor::Handle>> {
        let c = self.get(reference)?;
        // only one starter wins the created/exited -> starting transition
        let n = self.conn.execute(
            "UPDATE containers SET state = 'starting', stop_requested = 0, error = ''
             WHERE id = ?1 AND state IN ('created', 'exited')",
            [&c.id],
        )?;
        if n == 0 {
            if c.is_active() {
                return Ok(None); // already running: like docker, nothing to do
            }
            return Err(Error::Conflict {
                id: c.short_id().to_string(),
                detail: format!("cannot start a container in state {}", c.state),
            });
        }
        match crate::monitor::spawn(self, &c, launcher, attach) {
            Ok(h) => Ok(Some(h)),
            Err(e) => {
                let _ = self.update(&c.id, "state = ?2", &[&c.state]);
                Err(e)
            }
        }
    }

    /// Waits until the container is no longer running (or `timeout`); true if it stopped.
    pub fn wait_inactive(&self, id: &str, timeout: Duration) -> Result<bool> {
        let end = Instant::now() + timeout;
        loop {
            let c = match self.get(id) {
                Ok(c) => c,
                Err(Error::NoSuchContainer(_)) => return Ok(true),
                Err(e) => return Err(e),
            };
            let monitor_gone = !monitor_alive(c.monitor_pid, &c.id);
            if !c.is_active()
                && (c.state != state::EXITED
                    || monitor_gone
                    || c.config.restart.is_empty()
                    || c.stop_requested)
            {
                return Ok(true);
            }
            if c.is_active() && monitor_gone && c.monitor_pid > 0 {
                // the monitor died (kill -9): nobody will record the exit
                let alive = c.pid > 0
                    && nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid as i32), None)
                        .is_ok();
                if !alive {
                    self.record_exit(&c.id, 137, state::EXITED)?;
                    self.release(&c.id);
                    return Ok(true);
                }
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_monitor_gone(&self, c: &Container, timeout: Duration) {
        let end = Instant::now() + timeout;
        while monitor_alive(c.monitor_pid, &c.id) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` seconds.
    pub fn stop(&self, reference: &str, timeout: Option<u32>) -> Result<()> {
        let c = self.get(reference)?;
        self.update(&c.id, "stop_requested = 1", &[])?;
        if !c.is_active() {
            return Ok(());
        }
        let rt = self.runtime(&c)?;
        let sig = c
            .config
            .stop_signal
            .as_deref()
            .map(config::signal_number)
            .transpose()?
            .unwrap_or(libc::SIGTERM);
        let t = timeout.or(c.config.stop_timeout).unwrap_or(10);
        if c.state == state::PAUSED {
            let _ = rt.run(["resume", &c.id]);
        }
        let _ = rt.kill(&c.id, sig, false);
        if !self.wait_inactive(&c.id, Duration::from_secs(u64::from(t)))? {
            let _ = rt.kill(&c.id, libc::SIGKILL, false);
            if !self.wait_inactive(&c.id, Duration::from_secs(10))? {
                self.force_down(&c, &rt)?;
            }
        }
        let c = self.get(&c.id)?;
        self.wait_monitor_gone(&c, Duration::from_secs(5));
        Ok(())
    }

    /// Brings a container down without its monitor (it died): kill, delete, record.
    fn force_down(&self, c: &Container, rt: &Runtime) -> Result<()> {
        let _ = rt.delete(&c.id);
        if c.pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.record_exit(&c.id, 137, state::EXITED)?;
        self.release(&c.id);
        Ok(())
    }

    /// Sends a signal to the container's init.
    pub fn kill(&self, reference: &str, signal: i32) -> Result<()> {
        let c = self.get(reference)?;
        if !matches!(c.state.as_str(), state::RUNNING | state::PAUSED) {
            return Err(Error::Conflict {
                id: c.short_id().to_string(),
                detail: "container is not running".into(),
            });
        }
        if signal == libc::SIGKILL {
            self.update(&c.id, "stop_requested = 1", &[])?;
        }
        self.runtime(&c)?.kill(&c.id, signal, false)
    }

    /// Removes a container (`force` stops a running one first; `volumes` removes its
    /// anonymous volumes).
    pub fn remove(&self, reference: &str, force: bool, volumes: bool) -> Result<String> {
        let c = self.get(reference)?;
        if c.is_active() && !force {
            return Err(Error::Conflict {
                id: c.short_id().to_string(),
                detail: "cannot remove a running container: stop it first or use rm -f".into(),
            });
        }
        self.update(&c.id, "state = ?2, stop_requested = 1", &[&state::REMOVING])?;
        let rt = self.runtime(&c)?;
        // the monitor itself removes --rm containers (after its own delete): it must
        // not wait for itself
        let from_monitor = c.monitor_pid == i64::from(std::process::id());
        // delete --force kills what runs and is fine with what is gone
        let del = if from_monitor {
            Ok(())
        } else {
            rt.delete(&c.id)
        };
        if c.pid > 0 && c.is_active() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !from_monitor {
            self.wait_monitor_gone(&c, Duration::from_secs(10));
        }
        if !from_monitor && monitor_alive(c.monitor_pid, &c.id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.monitor_pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Err(e) = del
            && rt.exists(&c.id)
        {
            rt.delete(&c.id).map_err(|_| e)?;
        }
        if !from_monitor {
            // the monitor released the network and root just before
            self.release(&c.id);
        }
        // renamed away now, deleted after the monitor reported the exit (see crate::trash)
        let run_dir = self.run_dir(&c.id);
        crate::trash::discard(&self.state, &run_dir).map_err(Error::io("remove", &run_dir))?;
        let cdir = self.container_dir(&c.id);
        crate::trash::discard(&self.root, &cdir).map_err(Error::io("remove", &cdir))?;
        self.conn
            .execute("DELETE FROM containers WHERE id = ?1", [&c.id])?;
        if !from_monitor {
            self.empty_trash();
        }
        if volumes {
            for m in &c.mounts {
                if let Some(n) = &m.name
                    && let Ok(v) = volume::get(&self.conn, &self.root, n)
                    && v.anonymous
                {
                    let _ = volume::remove(&self.conn, &self.root, n, false);
                }
            }
        }
        Ok(c.id)
    }

    /// Renames a container.
    pub fn rename(&self, reference: &str, new: &str) -> Result<()> {
        if !names::valid_name(new) {
            return Err(Error::invalid("container name", format!("{new:?}")));
        }
        let c = self.get(reference)?;
        match self.update(&c.id, "name = ?2", &[&new]) {
            Err(Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let other = self.get(new).map(|o| o.id).unwrap_or_default();
                Err(Error::NameInUse {
                    name: new.to_string(),
                    id: other,
                })
            }
            r => r.map(|_| ()),
        }
    }

    /// Freezes (`pause`) or thaws a container.
    pub fn pause(&self, reference: &str, pause: bool) -> Result<()> {
        let c = self.get(reference)?;
        let want = if pause { state::RUNNING } else { state::PAUSED };
        if c.state != want {
            return Err(Error::Conflict {
                id: c.short_id().to_string(),
                detail: if pause {
                    "container is not running".into()
                } else {
                    "container is not paused".into()
                },
            });
        }
        let rt = self.runtime(&c)?;
        rt.run([if pause { "pause" } else { "resume" }, &c.id])?;
        self.update(
            &c.id,
            "state = ?2",
            &[&if pause { state::PAUSED } else { state::RUNNING }],
        )?;
        Ok(())
    }

    /// Waits for the container to stop; returns its exit code.
    pub fn wait(&self, reference: &str) -> Result<i64> {
        let c = self.get(reference)?;
        loop {
            if self.wait_inactive(&c.id, Duration::from_secs(3600))? {
                return Ok(self.get(&c.id).map(|c| c.exit_code).unwrap_or(c.exit_code));
            }
        }
    }

    /// docker-inspect-like JSON of a container.
    pub fn inspect(&self, c: &Container) -> Value {
        let att = c.attachment.as_ref();
        let policy = RestartPolicy::parse(&c.config.restart).unwrap_or(RestartPolicy::No);
        let max = match policy {
            RestartPolicy::OnFailure { max } => max,
            _ => 0,
        };
        let ports: serde_json::Map<String, Value> = att
            .map(|a| {
                let mut m = serde_json::Map::new();
                for p in &a.ports {
                    let key = format!("{}/{}", p.container_port, p.proto);
                    let e = m.entry(key).or_insert_with(|| json!([]));
                    if let Some(arr) = e.as_array_mut() {
                        arr.push(json!({ "HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string() }));
                    }
                }
                m
            })
            .unwrap_or_default();
        let net_name = match c.config.network.network.as_str() {
            "" => network::DEFAULT_NETWORK,
            n => n,
        };
        let tmpl: Value = std::fs::read(self.container_dir(&c.id).join("spec.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        json!({
            "Id": c.id,
            "Created": c.created,
            "Path": tmpl["process"]["args"][0],
            "Args": tmpl["process"]["args"].as_array().map(|a| a[1..].to_vec()).unwrap_or_default(),
            "State": {
                "Status": match c.state.as_str() { state::STARTING => state::CREATED, s => s },
                "Running": matches!(c.state.as_str(), state::RUNNING | state::PAUSED),
                "Paused": c.state == state::PAUSED,
                "Restarting": c.state == state::RESTARTING,
                "Dead": false,
                "Pid": c.pid,
                "ExitCode": c.exit_code,
                "Error": c.error,
                "StartedAt": if c.started_at.is_empty() { "0001-01-01T00:00:00Z" } else { &c.started_at },
                "FinishedAt": if c.finished_at.is_empty() { "0001-01-01T00:00:00Z" } else { &c.finished_at },
            },
            "Image": c.image_id,
            "Name": format!("/{}", c.name),
            "RestartCount": c.restart_count,
            "LogPath": self.log_path(&c.id),
            "Config": {
                "Hostname": c.network_request().hostname,
                "User": c.config.user.clone().unwrap_or_default(),
                "Tty": c.config.tty,
                "OpenStdin": c.config.interactive,
                "Env": tmpl["process"]["env"],
                "Cmd": if c.config.cmd.is_empty() { Value::Null } else { json!(c.config.cmd) },
                "Entrypoint": c.config.entrypoint,
                "Image": c.image,
                "WorkingDir": tmpl["process"]["cwd"],
                "Labels": c.config.labels,
                "ExposedPorts": c.config.network.exposed.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
            },
            "HostConfig": {
                "NetworkMode": net_name,
                "PortBindings": c.config.network.ports,
                "PublishAllPorts": c.config.network.publish_all,
                "RestartPolicy": { "Name": policy.name(), "MaximumRetryCount": max },
                "AutoRemove": c.config.auto_remove,
                "Binds": c.config.volumes,
                "Tmpfs": c.config.tmpfs,
                "ReadonlyRootfs": c.config.read_only,
                "Privileged": c.config.privileged,
                "CapAdd": c.config.cap_add,
                "CapDrop": c.config.cap_drop,
                "SecurityOpt": c.config.security_opt,
                "Memory": c.config.memory.as_deref().and_then(|m| config::parse_size(m).ok()).unwrap_or(0),
                "NanoCpus": c.config.cpus.map(|x| (x * 1e9) as i64).unwrap_or(0),
                "PidsLimit": c.config.pids_limit,
                "Init": c.config.init,
                "Runtime": c.config.runtime.clone().unwrap_or_else(|| runtime::DEFAULT_RUNTIME.into()),
            },
            "GraphDriver": {
                "Name": "overlay2",
                "Data": {
                    "LowerDir": c.lowerdirs.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":"),
                    "UpperDir": self.container_dir(&c.id).join("upper"),
                    "WorkDir": self.container_dir(&c.id).join("work"),
                    "MergedDir": self.rootfs(&c.id),
                }
            },
            "Mounts": c.mounts.iter().map(|m| json!({
                "Type": match m.kind { MountKind::Bind => "bind", MountKind::Volume => "volume", MountKind::Tmpfs => "tmpfs" },
                "Name": m.name,
                "Source": m.source,
                "Destination": m.target,
                "Driver": if m.kind == MountKind::Volume { "local" } else { "" },
                "RW": !m.readonly,
                "Mode": if m.readonly { "ro" } else { "" },
            })).collect::<Vec<_>>(),
            "NetworkSettings": {
                "IPAddress": att.and_then(|a| a.ip).map(|i| i.to_string()).unwrap_or_default(),
                "Gateway": att.and_then(|a| a.gateway).map(|i| i.to_string()).unwrap_or_default(),
                "IPPrefixLen": att.map(|a| a.prefix).unwrap_or(0),
                "MacAddress": att.and_then(|a| a.mac.clone()).unwrap_or_default(),
                "Ports": ports,
                "SandboxKey": att.and_then(|a| match &a.netns { network::Netns::Path(p) => Some(p.clone()), _ => None }),
                "Networks": {
                    net_name: {
                        "IPAddress": att.and_then(|a| a.ip).map(|i| i.to_string()).unwrap_or_default(),
                        "Gateway": att.and_then(|a| a.gateway).map(|i| i.to_string()).unwrap_or_default(),
                        "IPPrefixLen": att.map(|a| a.prefix).unwrap_or(0),
                        "MacAddress": att.and_then(|a| a.mac.clone()).unwrap_or_default(),
                        "Aliases": c.config.network.aliases,
                    }
                }
            },
        })
    }
}
