//! The one manager implementation: resolved directories plus per-layout dispatch.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxHugepageLimit, LinuxResources};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, set};
use crate::mountinfo::{self, HostMounts, Layout, V2Mount};
use crate::path::CgroupPath;
use crate::stats::Stats;
use crate::{CgroupManager, Error, v1, v2};

/// Where the pure-v2 fast path looks (one statfs instead of a mountinfo scan).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's cgroup directory in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    /// Controllers of the hierarchy ("cpu", "cpuacct", "name=systemd", ...).
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The container's directory in it.
    pub path: PathBuf,
}

/// Everything a manager needs, resolved once by [`crate::open`]; serde so the runtime can
/// keep it in the container state and reopen with [`crate::from_state`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupState {
    pub layout: Layout,
    /// One entry per v1 hierarchy (empty on pure v2).
    pub v1: Vec<V1Dir>,
    /// The container's cgroup2 directory (pure v2: its cgroup; hybrid: its directory on
    /// the cgroup2 mount).
    pub v2: Option<PathBuf>,
    /// The cgroup2 mount point.
    pub v2_mount: Option<PathBuf>,
}

/// Read a procfs file with one large buffer (procfs reports size 0, so the default
/// growth strategy would take many small reads).
fn read_proc(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|error| Error::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut buf = Vec::with_capacity(16 * 1024);
    f.read_to_end(&mut buf).map_err(|error| Error::Read {
        path: path.to_path_buf(),
        error,
    })?;
    String::from_utf8(buf).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

pub(crate) fn detect_host() -> Result<HostMounts, Error> {
    let root = Path::new(CGROUP_ROOT);
    if mountinfo::is_cgroup2(root) {
        return Ok(HostMounts {
            layout: Layout::V2,
            v1: Vec::new(),
            v2: Some(V2Mount {
                mount_point: root.to_path_buf(),
                root: "/".into(),
            }),
        });
    }
    let text = read_proc(Path::new("/proc/self/mountinfo"))?;
    mountinfo::parse_mountinfo(&text).ok_or(Error::NoCgroups)
}

/// Resolve a cleaned cgroups path against the host's mounts.
pub(crate) fn resolve(host: &HostMounts, path: &CgroupPath) -> Result<CgroupState, Error> {
    resolve_with(host, path, || read_proc(Path::new("/proc/self/cgroup")))
}

pub(crate) fn resolve_with(
    host: &HostMounts,
    path: &CgroupPath,
    own_cgroups: impl FnOnce() -> Result<String, Error>,
) -> Result<CgroupState, Error> {
    let own = match path {
        CgroupPath::Relative(_) => Some(mountinfo::parse_proc_cgroup(&own_cgroups()?)),
        CgroupPath::Absolute(_) => None,
    };
    let dir_in = |mount_point: &Path, controllers: &[String], root: &str| {
        let mut dir = mount_point.to_path_buf();
        if let Some(own) = &own {
            let base = mountinfo::own_path_below_mount(own, controllers, root).ok_or_else(
                || Error::Path {
                    path: path.rel().to_string(),
                    reason: format!(
                        "relative path, but /proc/self/cgroup has no entry for the hierarchy at {}",
                        mount_point.display()
                    ),
                },
            )?;
            if !base.is_empty() {
                dir.push(base);
            }
        }
        dir.push(path.rel());
        Ok::<_, Error>(dir)
    };
    let mut v1 = Vec::with_capacity(host.v1.len());
    for m in &host.v1 {
        v1.push(V1Dir {
            controllers: m.controllers.clone(),
            mount_point: m.mount_point.clone(),
            path: dir_in(&m.mount_point, &m.controllers, &m.root)?,
        });
    }
    let (v2, v2_mount) = match &host.v2 {
        Some(m) => (
            Some(dir_in(&m.mount_point, &[], &m.root)?),
            Some(m.mount_point.clone()),
        ),
        None => (None, None),
    };
    Ok(CgroupState {
        layout: host.layout,
        v1,
        v2,
        v2_mount,
    })
}

/// The manager for every layout.
#[derive(Debug)]
pub(crate) struct Manager {
    s: CgroupState,
}

impl Manager {
    pub(crate) fn new(s: CgroupState) -> Self {
        Manager { s }
    }

    /// The directory of the v1 hierarchy holding `ctrl`.
    pub(crate) fn v1_dir(&self, ctrl: &str) -> Option<&Path> {
        self.s
            .v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == ctrl))
            .map(|d| d.path.as_path())
    }

    /// The v1 directory for `ctrl`, or an error naming the field and value.
    pub(crate) fn need_v1(
        &self,
        ctrl: &str,
        field: &str,
        value: &dyn std::fmt::Display,
    ) -> Result<&Path, Error> {
        self.v1_dir(ctrl).ok_or_else(|| Error::Unsupported {
            field: field.to_string(),
            value: value.to_string(),
            reason: format!("the {ctrl} cgroup controller is not mounted on this host"),
        })
    }

    fn v2_target(&self) -> Result<Option<v2::V2Target<'_>>, Error> {
        match (&self.s.v2, &self.s.v2_mount) {
            (Some(dir), Some(mount)) => Ok(Some(v2::V2Target {
                dir,
                avail: v2::available(dir)?,
                mount,
            })),
            _ => Ok(None),
        }
    }

    fn apply_hybrid_hugetlb(&self, limits: &[LinuxHugepageLimit]) -> Result<(), Error> {
        if let Some(dir) = self.v1_dir("hugetlb") {
            for l in limits {
                let size = l.page_size();
                let field = format!("hugepageLimits[{size}]");
                check_page_size(&field, size, l.limit())?;
                set(
                    dir,
                    &format!("hugetlb.{size}.limit_in_bytes"),
                    &field,
                    l.limit(),
                )?;
            }
            return Ok(());
        }
        let (Some(dir), Some(mount)) = (&self.s.v2, &self.s.v2_mount) else {
            let l = &limits[0];
            return Err(Error::Unsupported {
                field: format!("hugepageLimits[{}]", l.page_size()),
                value: l.limit().to_string(),
                reason: "the hugetlb cgroup controller is not mounted on this host".into(),
            });
        };
        // Hybrid host with hugetlb bound to the cgroup2 mount: enable it down to us.
        if v2::available(mount)?.iter().any(|c| c == "hugetlb") {
            v2::enable_controllers(mount, dir, Some(&["hugetlb"]), false)?;
        }
        let t = v2::V2Target {
            dir,
            avail: v2::available(dir)?,
            mount,
        };
        v2::apply_hugetlb(&t, limits)
    }

    /// The directory whose cgroup.procs lists the container's processes.
    fn procs_dir(&self) -> Option<&Path> {
        if self.s.layout == Layout::V2 {
            return self.s.v2.as_deref();
        }
        self.v1_dir("freezer")
            .or_else(|| self.v1_dir("pids"))
            .or_else(|| self.s.v1.first().map(|d| d.path.as_path()))
            .or(self.s.v2.as_deref())
    }

    fn signal_all(&self, signal: Signal) -> Result<(), Error> {
        for pid in self.pids()? {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(error) => return Err(Error::Kill { pid, signal, error }),
            }
        }
        Ok(())
    }
}

/// Page sizes this kernel has ("2MB", "1GB").
pub(crate) fn host_page_sizes() -> Vec<String> {
    std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| crate::convert::page_size_name(&e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn check_page_size(field: &str, size: &str, limit: i64) -> Result<(), Error> {
    if !crate::convert::valid_page_size(size) {
        return Err(Error::Invalid {
            field: field.into(),
            value: size.into(),
            reason: "page size must look like 2MB or 1GB".into(),
        });
    }
    let sizes = host_page_sizes();
    if !sizes.iter().any(|s| s == size) {
        return Err(Error::Unsupported {
            field: field.into(),
            value: limit.to_string(),
            reason: format!(
                "this host has no {size} huge pages (it has: {})",
                if sizes.is_empty() {
                    "none".to_string()
                } else {
                    sizes.join(", ")
                }
            ),
        });
    }
    Ok(())
}

impl CgroupManager for Manager {
    fn layout(&self) -> Layout {
        self.s.layout
    }

    fn create(&self) -> Result<(), Error> {
        for d in &self.s.v1 {
            fsutil::mkdir_all(&d.path)?;
            if d.controllers.iter().any(|c| c == "cpuset") {
                v1::init_cpuset(&d.mount_point, &d.path)?;
            }
        }
        if let (Some(dir), Some(mount)) = (&self.s.v2, &self.s.v2_mount) {
            if self.s.layout == Layout::V2 {
                v2::enable_controllers(mount, dir, None, true)?;
            }
            fsutil::mkdir_all(dir)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), Error> {
        let pid_s = pid.to_string();
        for dir in self.paths() {
            let path = dir.join("cgroup.procs");
            fsutil::write_raw(&path, &pid_s).map_err(|error| Error::AddProcess {
                pid,
                path,
                error,
            })?;
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), Error> {
        if self.s.layout == Layout::V2 {
            let t = self.v2_target()?.ok_or(Error::NoCgroups)?;
            return v2::apply(&t, r);
        }
        if let Some(cpu) = r.cpu() {
            v1::apply_cpu(self, cpu)?;
        }
        if let Some(mem) = r.memory() {
            v1::apply_memory(self, mem)?;
        }
        if let Some(p) = r.pids() {
            let dir = self.need_v1("pids", "pids.limit", &p.limit())?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            set(dir, "pids.max", "pids.limit", v)?;
        }
        if let Some(io) = r.block_io() {
            v1::apply_blkio(self, io)?;
        }
        if let Some(h) = r.hugepage_limits().as_ref().filter(|h| !h.is_empty()) {
            self.apply_hybrid_hugetlb(h)?;
        }
        if let Some(d) = r.devices() {
            v1::apply_devices(self, d)?;
        }
        if let Some(n) = r.network() {
            v1::apply_network(self, n)?;
        }
        if let Some(rdma) = r.rdma() {
            for (dev, lim) in rdma {
                let mut v = dev.clone();
                if let Some(h) = lim.hca_handles() {
                    v.push_str(&format!(" hca_handle={h}"));
                }
                if let Some(o) = lim.hca_objects() {
                    v.push_str(&format!(" hca_object={o}"));
                }
                let dir = self.need_v1("rdma", "rdma", &v)?;
                set(dir, "rdma.max", "rdma", &v)?;
            }
        }
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            let Some(dir) = &self.s.v2 else {
                let (k, v) = u.iter().next().expect("non-empty");
                return Err(Error::Unsupported {
                    field: format!("unified.{k}"),
                    value: v.clone(),
                    reason: "this host has no cgroup2 hierarchy".into(),
                });
            };
            v2::apply_unified(dir, u)?;
        }
        Ok(())
    }

    fn freeze(&self) -> Result<(), Error> {
        if let Some(dir) = self.v1_dir("freezer") {
            return v1::set_frozen(dir, true);
        }
        match &self.s.v2 {
            Some(dir) => v2::set_frozen(dir, true),
            None => Err(Error::Unsupported {
                field: "freeze".into(),
                value: "FROZEN".into(),
                reason: "the freezer cgroup controller is not mounted on this host".into(),
            }),
        }
    }

    fn thaw(&self) -> Result<(), Error> {
        if let Some(dir) = self.v1_dir("freezer") {
            return v1::set_frozen(dir, false);
        }
        match &self.s.v2 {
            Some(dir) => v2::set_frozen(dir, false),
            None => Ok(()),
        }
    }

    fn is_frozen(&self) -> Result<bool, Error> {
        if let Some(dir) = self.v1_dir("freezer") {
            return v1::is_frozen(dir);
        }
        match &self.s.v2 {
            Some(dir) => v2::is_frozen(dir),
            None => Ok(false),
        }
    }

    fn pids(&self) -> Result<Vec<i32>, Error> {
        match self.procs_dir() {
            Some(dir) => fsutil::read_pids(&dir.join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn kill_all(&self, signal: Signal) -> Result<(), Error> {
        if signal == Signal::SIGKILL
            && let Some(file) = self.s.v2.as_deref().and_then(v2::kill_file)
        {
            fsutil::write_raw(&file, "1").map_err(|error| Error::Write {
                path: file.clone(),
                value: "1".into(),
                error,
            })?;
            if self.s.layout == Layout::V2 {
                return Ok(());
            }
            // Hybrid: signal anything that joined only the v1 hierarchies too. No freeze
            // needed: cgroup.kill already stops the cgroup2 side from forking.
            return self.signal_all(signal);
        }
        let frozen = self.freeze().is_ok();
        let res = self.signal_all(signal);
        if frozen {
            self.thaw()?;
        }
        res
    }

    fn stats(&self) -> Result<Stats, Error> {
        let mut s = Stats::default();
        if self.s.layout == Layout::V2 {
            if let Some(dir) = &self.s.v2 {
                v2::stats_into(dir, &mut s, false);
            }
            return Ok(s);
        }
        v1::stats_into(self, &mut s);
        if self.v1_dir("hugetlb").is_none()
            && let Some(dir) = &self.s.v2
        {
            v2::stats_into(dir, &mut s, true);
        }
        Ok(s)
    }

    fn destroy(&self) -> Result<(), Error> {
        let mut first_err = None;
        for dir in self.paths() {
            if let Err(e) = fsutil::remove_cgroup(&dir) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn v2_dir(&self) -> Option<PathBuf> {
        match self.s.layout {
            Layout::V2 => self.s.v2.clone(),
            _ => None,
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.s
            .v1
            .iter()
            .map(|d| d.path.clone())
            .chain(self.s.v2.clone())
            .collect()
    }

    fn state(&self) -> CgroupState {
        self.s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;

    fn hybrid() -> HostMounts {
        mountinfo::parse_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )
        .unwrap()
    }

    #[test]
    fn resolve_absolute_and_default() {
        let p = path::parse(None, "c1").unwrap();
        let s = resolve_with(&hybrid(), &p, || panic!("not needed")).unwrap();
        assert_eq!(s.layout, Layout::Hybrid);
        assert_eq!(s.v1[0].path, PathBuf::from("/sys/fs/cgroup/cpu/berth/c1"));
        assert_eq!(
            s.v1[1].path,
            PathBuf::from("/sys/fs/cgroup/memory/berth/c1")
        );
        assert_eq!(
            s.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/berth/c1"))
        );
    }

    #[test]
    fn resolve_relative_under_own_cgroup() {
        let p = path::parse(Some("pod/c1"), "c1").unwrap();
        let s = resolve_with(&hybrid(), &p, || {
            Ok("4:memory:/process_api/abc\n1:cpu:/\n0::/sess\n".into())
        })
        .unwrap();
        assert_eq!(s.v1[0].path, PathBuf::from("/sys/fs/cgroup/cpu/pod/c1"));
        assert_eq!(
            s.v1[1].path,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/pod/c1")
        );
        assert_eq!(
            s.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/sess/pod/c1"))
        );
    }

    fn res(v: &str) -> LinuxResources {
        serde_json::from_str(v).unwrap()
    }

    fn touch(dir: &Path, files: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), "").unwrap();
        }
    }

    fn get(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn v2_values_on_a_fake_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("berth/c1");
        touch(
            &dir,
            &[
                "cpu.weight",
                "cpu.max",
                "memory.max",
                "memory.swap.max",
                "memory.low",
                "pids.max",
                "io.weight",
                "io.max",
                "cpuset.cpus",
            ],
        );
        std::fs::write(
            dir.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let m = Manager::new(CgroupState {
            layout: Layout::V2,
            v1: vec![],
            v2: Some(dir.clone()),
            v2_mount: Some(tmp.path().to_path_buf()),
        });
        m.apply(&res(
            r#"{"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0"},
            "memory":{"limit":1048576,"swap":3145728,"reservation":524288},
            "pids":{"limit":0},"blockIO":{"weight":500,
            "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1000}]}}"#,
        ))
        .unwrap();
        assert_eq!(get(&dir, "cpu.weight"), "39");
        assert_eq!(get(&dir, "cpu.max"), "50000 100000");
        assert_eq!(get(&dir, "cpuset.cpus"), "0");
        assert_eq!(get(&dir, "memory.max"), "1048576");
        assert_eq!(get(&dir, "memory.swap.max"), "2097152");
        assert_eq!(get(&dir, "memory.low"), "524288");
        assert_eq!(get(&dir, "pids.max"), "max");
        assert_eq!(get(&dir, "io.weight"), "4950");
        assert_eq!(get(&dir, "io.max"), "8:0 rbps=1000");
        assert_eq!(m.v2_dir(), Some(dir.clone()));
        // hugetlb is not delegated here: a clear error naming field and value
        let e = m
            .apply(&res(r#"{"rdma":{"mlx5_0":{"hcaHandles":3}}}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rdma") && e.contains("mlx5_0 hca_handle=3") && e.contains("not available"),
            "{e}"
        );
    }

    #[test]
    fn v1_values_on_a_fake_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |ctrl: &str, files: &[&str]| {
            let mount = tmp.path().join(ctrl);
            let path = mount.join("berth/c1");
            touch(&path, files);
            V1Dir {
                controllers: vec![ctrl.to_string()],
                mount_point: mount,
                path,
            }
        };
        let state = CgroupState {
            layout: Layout::V1,
            v1: vec![
                mk(
                    "cpu",
                    &["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"],
                ),
                mk(
                    "memory",
                    &[
                        "memory.limit_in_bytes",
                        "memory.soft_limit_in_bytes",
                        "memory.swappiness",
                        "memory.oom_control",
                    ],
                ),
                mk("pids", &["pids.max"]),
                mk("devices", &["devices.allow", "devices.deny"]),
            ],
            v2: None,
            v2_mount: None,
        };
        let m = Manager::new(state.clone());
        m.apply(&res(
            r#"{"cpu":{"shares":512,"quota":20000,"period":100000},
            "memory":{"limit":1048576,"reservation":4096,"swappiness":0,"disableOOMKiller":true},
            "pids":{"limit":42},
            "devices":[{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]}"#,
        ))
        .unwrap();
        let d = |i: usize| state.v1[i].path.clone();
        assert_eq!(get(&d(0), "cpu.shares"), "512");
        assert_eq!(get(&d(0), "cpu.cfs_quota_us"), "20000");
        assert_eq!(get(&d(0), "cpu.cfs_period_us"), "100000");
        assert_eq!(get(&d(1), "memory.limit_in_bytes"), "1048576");
        assert_eq!(get(&d(1), "memory.soft_limit_in_bytes"), "4096");
        assert_eq!(get(&d(1), "memory.oom_control"), "1");
        assert_eq!(get(&d(2), "pids.max"), "42");
        assert_eq!(get(&d(3), "devices.allow"), "c 1:3 rw");
        // no memsw file: swap accounting is off, and the error says so
        let e = m
            .apply(&res(r#"{"memory":{"limit":1048576,"swap":2097152}}"#))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "memory.swap: cannot set 2097152: swap accounting not enabled on this host (no memory.memsw.limit_in_bytes; boot with swapaccount=1)"
        );
        // controllers not mounted
        let e = m
            .apply(&res(r#"{"network":{"classID":7}}"#))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "network.classID: cannot set 7: the net_cls cgroup controller is not mounted on this host"
        );
        let e = m
            .apply(&res(r#"{"unified":{"memory.high":"1"}}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unified.memory.high") && e.contains("no cgroup2"),
            "{e}"
        );
        assert_eq!(m.paths().len(), 4);
        assert_eq!(m.v2_dir(), None);
    }
}
