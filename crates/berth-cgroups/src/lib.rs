//! Cgroup management for berth containers: v1, v2 and hybrid hosts.
//!
//! Creates and removes a container's cgroup, applies OCI `LinuxResources`, reads
//! stats, freezes/thaws and kills every process in it. It does not decide cgroup paths
//! for engines (the caller passes them) and has no systemd driver yet.
//!
//! # Use
//!
//! ```no_run
//! # fn main() -> Result<(), berth_cgroups::Error> {
//! let cg = berth_cgroups::open(Some("/berth/c1"), "c1")?; // detects V1 / V2 / Hybrid once
//! cg.create()?;
//! # let resources = oci_spec::runtime::LinuxResources::default();
//! cg.apply(&resources)?;
//! cg.add_process(1234)?;
//! let saved = cg.state(); // serde: keep it in the container's state dir
//! // ... later, in another invocation (no mountinfo scan again):
//! let cg = berth_cgroups::from_state(&saved);
//! cg.kill_all(nix::sys::signal::Signal::SIGKILL)?;
//! cg.destroy()?;
//! # Ok(()) }
//! ```
//!
//! # Layouts
//!
//! * **V1**: one directory per mounted hierarchy (every controller mount plus named
//!   ones such as `name=systemd`); the process joins all of them, as runc does.
//! * **V2**: one directory on the cgroup2 mount; controllers available in the parent are
//!   enabled in every ancestor's `cgroup.subtree_control` at `create`.
//!   [`CgroupManager::v2_dir`] gives the directory for `clone3(CLONE_INTO_CGROUP)`.
//! * **Hybrid** (v1 controllers plus a cgroup2 mount, this project's CI host): v1 as
//!   above, and the process also joins a directory on the cgroup2 mount. A controller
//!   that only the cgroup2 mount has (hugetlb on the CI host) is used there: `apply`
//!   enables it in the ancestors' `cgroup.subtree_control` when the config asks for it.
//!   `kill_all(SIGKILL)` uses that directory's `cgroup.kill`.
//!
//! Detection reads mountinfo once and ignores mounts a later mount shadows (on the same
//! point or a parent): a private namespace with a fresh tmpfs on /sys/fs/cgroup holding
//! only the v1 hierarchies (what crun needs on a hybrid host) is a V1 host.
//!
//! Device rules: v1 `devices.allow`/`devices.deny`; on v2 an eBPF
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program generated from the rules (last match wins, as
//! in v1) replaces any device program attached before.
//!
//! # Paths
//!
//! The OCI `linux.cgroupsPath` is cleaned lexically (`..` cannot climb out). An absolute
//! path is taken below each hierarchy's mount point, a relative one below the runtime's
//! own cgroup in each hierarchy (from `/proc/self/cgroup`), none means
//! `/berth/<container-id>` ([`DEFAULT_PARENT`]; like runc, `destroy` leaves the shared
//! parent in place: removing and recreating it would cost ~20 syscalls per container).
//! The systemd `slice:prefix:name` form is refused with a clear error.
//!
//! # What the host cannot do is an error, never a silent no-op
//!
//! A value for a controller that is not mounted or not delegated, swap without swap
//! accounting, kernel memory limits on kernels that ignore them, realtime CPU on v2,
//! network class/priorities without `net_cls`/`net_prio`: each
//! fails with [`Error::Unsupported`] naming the OCI field and value, e.g.
//! `memory.swap: cannot set 1073741824: swap accounting not enabled on this host`.
//!
//! # Why not cgroups-rs
//!
//! DESIGN.md named cgroups-rs, but its `hierarchies::auto()` treats a hybrid host
//! as v1 only (hugetlb on the cgroup2 mount is out of reach), and it scans mountinfo and
//! builds per-controller objects on every open. This
//! crate writes the control files itself: a handful of open/write calls on the start
//! path, the same formulas as runc/crun for v1 -> v2 conversions.

mod convert;
mod devfilter;
mod fsutil;
mod manager;
mod mountinfo;
mod path;
mod stats;
mod v1;
mod v2;

use std::io;
use std::path::PathBuf;

pub use convert::{blkio_weight_to_io_weight, cpu_max, shares_to_weight, swap_to_v2};
pub use manager::{CgroupState, V1Dir};
pub use mountinfo::{Layout, unescape as unescape_mountinfo};
pub use nix::sys::signal::Signal;
pub use path::DEFAULT_PARENT;
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryStats, PidsStats,
    Stats, Throttling,
};

/// Errors of this crate. Messages are lowercase and name the path, field and value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "no cgroup filesystem is mounted (/sys/fs/cgroup is not cgroup2 and /proc/self/mountinfo lists no cgroup mount)"
    )]
    NoCgroups,
    #[error("read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("cgroups path {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error("create cgroup {path}: {error}")]
    Create { path: PathBuf, error: io::Error },
    #[error("add pid {pid} to cgroup {path}: {error}")]
    AddProcess {
        pid: i32,
        path: PathBuf,
        error: io::Error,
    },
    /// The kernel refused a value (EINVAL for out-of-range values, ...).
    #[error("{field}: cannot set {value} in {path}: {error}")]
    Apply {
        field: String,
        value: String,
        path: PathBuf,
        error: io::Error,
    },
    /// The host cannot apply this field at all.
    #[error("{field}: cannot set {value}: {reason}")]
    Unsupported {
        field: String,
        value: String,
        reason: String,
    },
    /// The value is invalid whatever the host.
    #[error("{field}: invalid value {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("write {value:?} to {path}: {error}")]
    Write {
        path: PathBuf,
        value: String,
        error: io::Error,
    },
    #[error("freeze cgroup {path}: {reason}")]
    Freeze { path: PathBuf, reason: String },
    #[error("send {signal} to pid {pid}: {error}")]
    Kill {
        pid: i32,
        signal: Signal,
        error: nix::Error,
    },
    #[error("remove cgroup {path}: {error}")]
    Remove { path: PathBuf, error: io::Error },
}

/// A container's cgroup, whatever the host layout.
pub trait CgroupManager: std::fmt::Debug {
    /// The host layout this manager drives.
    fn layout(&self) -> Layout;
    /// Create the cgroup directories (existing ones are reused, as runc does for pods).
    fn create(&self) -> Result<(), Error>;
    /// Move a process (and, on v1, only that thread group) into the cgroup in every
    /// hierarchy.
    fn add_process(&self, pid: i32) -> Result<(), Error>;
    /// Apply OCI resources (used at create and by `update`).
    fn apply(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), Error>;
    /// Freeze every process and wait until the kernel reports the cgroup frozen.
    fn freeze(&self) -> Result<(), Error>;
    /// Thaw the cgroup.
    fn thaw(&self) -> Result<(), Error>;
    /// `true` if the cgroup is frozen (or freezing).
    fn is_frozen(&self) -> Result<bool, Error>;
    /// Process ids in the cgroup.
    fn pids(&self) -> Result<Vec<i32>, Error>;
    /// Send `signal` to every process in the cgroup: `cgroup.kill` for SIGKILL where the
    /// kernel has it, else freeze, signal each pid, thaw.
    fn kill_all(&self, signal: Signal) -> Result<(), Error>;
    /// Resource usage.
    fn stats(&self) -> Result<Stats, Error>;
    /// Remove the cgroup directories in every hierarchy (child cgroups too), retrying
    /// briefly while exiting processes keep it busy. Already gone is success.
    fn destroy(&self) -> Result<(), Error>;
    /// The cgroup2 directory on a pure v2 host, for `clone3(CLONE_INTO_CGROUP)`; `None`
    /// on v1 and hybrid hosts (there the child must still join the v1 hierarchies).
    fn v2_dir(&self) -> Option<PathBuf>;
    /// Every directory of the cgroup (v1 hierarchies first, then cgroup2).
    fn paths(&self) -> Vec<PathBuf>;
    /// The resolved paths, to save in the container state and reopen with
    /// [`from_state`] without detecting the host again.
    fn state(&self) -> CgroupState;
}

/// Detect the host layout (one statfs, plus one read of /proc/self/mountinfo when
/// /sys/fs/cgroup is not cgroup2) and resolve `cgroups_path` (the OCI
/// `linux.cgroupsPath`; `None` or empty: `/berth/<container_id>`).
pub fn open(
    cgroups_path: Option<&str>,
    container_id: &str,
) -> Result<Box<dyn CgroupManager>, Error> {
    let path = path::parse(cgroups_path, container_id)?;
    let host = manager::detect_host()?;
    let state = manager::resolve(&host, &path)?;
    Ok(Box::new(manager::Manager::new(state)))
}

/// Reopen a cgroup from a saved [`CgroupState`] (no host detection).
pub fn from_state(state: &CgroupState) -> Box<dyn CgroupManager> {
    Box::new(manager::Manager::new(state.clone()))
}

/// What this host's cgroups offer, for `berth-oci features`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostSupport {
    pub layout: Layout,
    /// Controllers of the mounted v1 hierarchies (with `name=` ones).
    pub v1_controllers: Vec<String>,
    /// Controllers the cgroup2 root offers (its `cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl HostSupport {
    /// `true` if `controller` can be used, through v1 or cgroup2.
    pub fn has(&self, controller: &str) -> bool {
        self.v1_controllers.iter().any(|c| c == controller)
            || self.v2_controllers.iter().any(|c| c == controller)
    }
}

/// Detect what the host offers (one statfs, one mountinfo read, one small file read).
pub fn host_support() -> Result<HostSupport, Error> {
    let host = manager::detect_host()?;
    let v2_controllers = match &host.v2 {
        Some(m) => v2::available(&m.mount_point).unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(HostSupport {
        layout: host.layout,
        v1_controllers: host
            .v1
            .iter()
            .flat_map(|m| m.controllers.iter().cloned())
            .collect(),
        v2_controllers,
    })
}

/// The host layout, detected as `open` does.
pub fn detect_layout() -> Result<Layout, Error> {
    Ok(manager::detect_host()?.layout)
}
