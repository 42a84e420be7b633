//! cgroup v2 (unified) control files: resources, controller delegation, freeze, stats.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use crate::Error;
use crate::convert::{self, v2_bytes};
use crate::fsutil::{self, read, read_opt, read_u64_opt, set};
use crate::stats::{self, Stats};

/// Controllers usable in `dir` (its `cgroup.controllers`).
pub(crate) fn available(dir: &Path) -> Result<Vec<String>, Error> {
    Ok(read(&dir.join("cgroup.controllers"))?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Enable controllers for `dir`: walk from `mount` down to `dir`'s parent and write the
/// missing ones to each level's `cgroup.subtree_control`. `only` limits which controllers
/// (hybrid hosts enable just what a config asks for); `None` enables everything the level
/// offers, as runc and crun do on v2 hosts. A controller the kernel refuses to enable
/// (e.g. cpu while a realtime task sits in the parent) is left out here; `apply` then
/// reports it as not delegated if the config uses it.
pub(crate) fn enable_controllers(
    mount: &Path,
    dir: &Path,
    only: Option<&[&str]>,
    create: bool,
) -> Result<(), Error> {
    let rel = dir.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut level = mount.to_path_buf();
    for comp in rel.components() {
        let avail = available(&level)?;
        let enabled = read(&level.join("cgroup.subtree_control"))?;
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let missing: Vec<&String> = avail
            .iter()
            .filter(|c| !enabled.contains(&c.as_str()))
            .filter(|c| only.is_none_or(|o| o.contains(&c.as_str())))
            .collect();
        if !missing.is_empty() {
            let ctl = level.join("cgroup.subtree_control");
            let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
            if fsutil::write_raw(&ctl, &all.join(" ")).is_err() {
                for c in &all {
                    if let Err(error) = fsutil::write_raw(&ctl, c) {
                        tracing::debug!(path = %ctl.display(), controller = %c, %error, "cannot enable controller");
                    }
                }
            }
        }
        level.push(comp);
        if create {
            match std::fs::create_dir(&level) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(Error::Create { path: level, error }),
            }
        }
    }
    Ok(())
}

/// Context for applying to one cgroup2 directory.
pub(crate) struct V2Target<'a> {
    pub dir: &'a Path,
    pub avail: Vec<String>,
    /// Where the directory lives, for error messages ("cgroup2 at ...").
    pub mount: &'a Path,
}

impl V2Target<'_> {
    fn need(&self, ctrl: &str, field: &str, value: &dyn std::fmt::Display) -> Result<(), Error> {
        if self.avail.iter().any(|c| c == ctrl) {
            return Ok(());
        }
        Err(Error::Unsupported {
            field: field.to_string(),
            value: value.to_string(),
            reason: format!(
                "the {ctrl} controller is not available to {} (cgroup2 at {} does not delegate it{})",
                self.dir.display(),
                self.mount.display(),
                if self.avail.is_empty() {
                    String::new()
                } else {
                    format!("; available: {}", self.avail.join(" "))
                }
            ),
        })
    }
}

pub(crate) fn apply(t: &V2Target, r: &LinuxResources) -> Result<(), Error> {
    if let Some(cpu) = r.cpu() {
        apply_cpu(t, cpu)?;
    }
    if let Some(mem) = r.memory() {
        apply_memory(t, mem)?;
    }
    if let Some(pids) = r.pids() {
        let v = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_string()
        };
        t.need("pids", "pids.limit", &pids.limit())?;
        set(t.dir, "pids.max", "pids.limit", v)?;
    }
    if let Some(io) = r.block_io() {
        apply_io(t, io)?;
    }
    if let Some(h) = r.hugepage_limits() {
        apply_hugetlb(t, h)?;
    }
    if let Some(devs) = r.devices().as_ref().filter(|d| !d.is_empty()) {
        crate::devfilter::apply(t.dir, devs)?;
    }
    if let Some(net) = r.network() {
        if let Some(id) = net.class_id() {
            return Err(unsupported_net("network.classID", id));
        }
        if let Some(p) = net.priorities().as_ref().and_then(|p| p.first()) {
            return Err(unsupported_net(
                "network.priorities",
                format!("{} {}", p.name(), p.priority()),
            ));
        }
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
            t.need("rdma", "rdma", &v)?;
            set(t.dir, "rdma.max", "rdma", &v)?;
        }
    }
    if let Some(u) = r.unified() {
        apply_unified(t.dir, u)?;
    }
    Ok(())
}

fn unsupported_net(field: &str, value: impl std::fmt::Display) -> Error {
    Error::Unsupported {
        field: field.into(),
        value: value.to_string(),
        reason: "cgroup v2 has no net_cls/net_prio controllers (classify with nftables \
                 `meta cgroup` or `socket cgroupv2` instead)"
            .into(),
    }
}

/// `linux.resources.unified`: raw cgroup2 file writes, keys checked to stay in `dir`.
pub(crate) fn apply_unified(
    dir: &Path,
    u: &std::collections::HashMap<String, String>,
) -> Result<(), Error> {
    for (k, v) in u {
        if k.contains('/') || k.starts_with('.') || k.is_empty() || !k.contains('.') {
            return Err(Error::Invalid {
                field: format!("unified.{k}"),
                value: v.clone(),
                reason: "not a cgroup2 control file name".into(),
            });
        }
        set(dir, k, &format!("unified.{k}"), v)?;
    }
    Ok(())
}

fn apply_cpu(t: &V2Target, cpu: &LinuxCpu) -> Result<(), Error> {
    if let Some(rt) = cpu.realtime_runtime().filter(|&v| v != 0) {
        return Err(Error::Unsupported {
            field: "cpu.realtimeRuntime".into(),
            value: rt.to_string(),
            reason: "cgroup v2 has no realtime cpu limits".into(),
        });
    }
    if let Some(rt) = cpu.realtime_period().filter(|&v| v != 0) {
        return Err(Error::Unsupported {
            field: "cpu.realtimePeriod".into(),
            value: rt.to_string(),
            reason: "cgroup v2 has no realtime cpu limits".into(),
        });
    }
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        t.need("cpu", "cpu.shares", &shares)?;
        let w = convert::shares_to_weight(shares);
        set(t.dir, "cpu.weight", "cpu.shares", w)?;
    }
    if let Some(line) = convert::cpu_max(cpu.quota(), cpu.period()) {
        t.need("cpu", "cpu.quota", &line)?;
        set(t.dir, "cpu.max", "cpu.quota", line)?;
    }
    if let Some(b) = cpu.burst() {
        t.need("cpu", "cpu.burst", &b)?;
        set(t.dir, "cpu.max.burst", "cpu.burst", b)?;
    }
    if let Some(i) = cpu.idle() {
        t.need("cpu", "cpu.idle", &i)?;
        set(t.dir, "cpu.idle", "cpu.idle", i)?;
    }
    if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
        t.need("cpuset", "cpu.cpus", &c)?;
        set(t.dir, "cpuset.cpus", "cpu.cpus", c)?;
    }
    if let Some(m) = cpu.mems().as_deref().filter(|c| !c.is_empty()) {
        t.need("cpuset", "cpu.mems", &m)?;
        set(t.dir, "cpuset.mems", "cpu.mems", m)?;
    }
    Ok(())
}

fn apply_memory(t: &V2Target, m: &LinuxMemory) -> Result<(), Error> {
    if let Some(k) = m.kernel().filter(|&v| v > 0) {
        return Err(Error::Unsupported {
            field: "memory.kernel".into(),
            value: k.to_string(),
            reason: "cgroup v2 has no separate kernel memory limit (it is part of memory.max)"
                .into(),
        });
    }
    if let Some(k) = m.kernel_tcp().filter(|&v| v > 0) {
        return Err(Error::Unsupported {
            field: "memory.kernelTCP".into(),
            value: k.to_string(),
            reason: "cgroup v2 has no separate kernel tcp memory limit".into(),
        });
    }
    if let Some(s) = m.swappiness() {
        return Err(Error::Unsupported {
            field: "memory.swappiness".into(),
            value: s.to_string(),
            reason: "cgroup v2 has no per-cgroup swappiness".into(),
        });
    }
    if m.disable_oom_killer() == Some(true) {
        return Err(Error::Unsupported {
            field: "memory.disableOOMKiller".into(),
            value: "true".into(),
            reason: "cgroup v2 cannot disable the oom killer".into(),
        });
    }
    let limit = m.limit().filter(|&v| v != 0);
    let swap = convert::swap_to_v2(m.swap(), m.limit()).map_err(|reason| Error::Invalid {
        field: "memory.swap".into(),
        value: m.swap().unwrap_or(0).to_string(),
        reason,
    })?;
    if let Some(sw) = swap {
        t.need("memory", "memory.swap", &m.swap().unwrap_or(sw))?;
        let path = t.dir.join("memory.swap.max");
        if !path.exists() {
            if sw != -1 {
                return Err(Error::Unsupported {
                    field: "memory.swap".into(),
                    value: m.swap().unwrap_or(sw).to_string(),
                    reason: "swap accounting not enabled on this host (no memory.swap.max)".into(),
                });
            }
        } else {
            set(t.dir, "memory.swap.max", "memory.swap", v2_bytes(sw))?;
        }
    }
    if let Some(l) = limit {
        t.need("memory", "memory.limit", &l)?;
        if m.check_before_update() == Some(true) && l > 0 {
            let cur = read_u64_opt(&t.dir.join("memory.current")).unwrap_or(0);
            if cur > l as u64 {
                return Err(Error::Invalid {
                    field: "memory.limit".into(),
                    value: l.to_string(),
                    reason: format!("below current usage {cur}"),
                });
            }
        }
        set(t.dir, "memory.max", "memory.limit", v2_bytes(l))?;
    }
    if let Some(r) = m.reservation().filter(|&v| v != 0) {
        t.need("memory", "memory.reservation", &r)?;
        set(t.dir, "memory.low", "memory.reservation", v2_bytes(r))?;
    }
    Ok(())
}

fn apply_io(t: &V2Target, io: &LinuxBlockIo) -> Result<(), Error> {
    let bfq = t.dir.join("io.bfq.weight").exists();
    if let Some(w) = io.weight().filter(|&w| w != 0) {
        t.need("io", "blockIO.weight", &w)?;
        if bfq {
            set(t.dir, "io.bfq.weight", "blockIO.weight", w)?;
        } else {
            let v = convert::blkio_weight_to_io_weight(w.into());
            set(t.dir, "io.weight", "blockIO.weight", v)?;
        }
    }
    if let Some(lw) = io.leaf_weight() {
        return Err(Error::Unsupported {
            field: "blockIO.leafWeight".into(),
            value: lw.to_string(),
            reason: "cgroup v2 has no leaf weights".into(),
        });
    }
    for d in io.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            let field = "blockIO.weightDevice";
            let dev = format!("{}:{}", d.major(), d.minor());
            t.need("io", field, &format!("{dev} {w}"))?;
            if bfq {
                set(t.dir, "io.bfq.weight", field, format!("{dev} {w}"))?;
            } else {
                let v = convert::blkio_weight_to_io_weight(w.into());
                set(t.dir, "io.weight", field, format!("{dev} {v}"))?;
            }
        }
        if let Some(lw) = d.leaf_weight() {
            return Err(Error::Unsupported {
                field: "blockIO.weightDevice.leafWeight".into(),
                value: lw.to_string(),
                reason: "cgroup v2 has no leaf weights".into(),
            });
        }
    }
    let throttles = [
        (
            "blockIO.throttleReadBpsDevice",
            "rbps",
            io.throttle_read_bps_device(),
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            "wbps",
            io.throttle_write_bps_device(),
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            "riops",
            io.throttle_read_iops_device(),
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            "wiops",
            io.throttle_write_iops_device(),
        ),
    ];
    for (field, key, list) in throttles {
        for d in list.iter().flatten() {
            let v = format!("{}:{} {key}={}", d.major(), d.minor(), d.rate());
            t.need("io", field, &v)?;
            set(t.dir, "io.max", field, v)?;
        }
    }
    Ok(())
}

pub(crate) fn apply_hugetlb(t: &V2Target, limits: &[LinuxHugepageLimit]) -> Result<(), Error> {
    for l in limits {
        let size = l.page_size();
        let field = format!("hugepageLimits[{size}]");
        crate::manager::check_page_size(&field, size, l.limit())?;
        t.need("hugetlb", &field, &l.limit())?;
        let v = v2_bytes(l.limit());
        set(t.dir, &format!("hugetlb.{size}.max"), &field, &v)?;
        // The reservation counter (5.7+) keeps limits honest with overcommit; set it too
        // where the kernel has it, as runc does.
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if t.dir.join(&rsvd).exists() {
            set(t.dir, &rsvd, &field, &v)?;
        }
    }
    Ok(())
}

/// Write `cgroup.freeze` and wait until `cgroup.events` says so.
pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), Error> {
    let want = if frozen { "1" } else { "0" };
    let path = dir.join("cgroup.freeze");
    fsutil::write_raw(&path, want).map_err(|error| Error::Write {
        path: path.clone(),
        value: want.into(),
        error,
    })?;
    let events = dir.join("cgroup.events");
    let line = if frozen { "frozen 1" } else { "frozen 0" };
    let start = Instant::now();
    let mut delay = Duration::from_micros(50);
    loop {
        if read(&events)?.lines().any(|l| l == line) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            if frozen {
                let _ = fsutil::write_raw(&path, "0");
            }
            return Err(Error::Freeze {
                path: dir.to_path_buf(),
                reason: format!("cgroup.events did not report {line:?} within 5s"),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub(crate) fn is_frozen(dir: &Path) -> Result<bool, Error> {
    Ok(read(&dir.join("cgroup.freeze"))?.trim() == "1")
}

/// Stats from a cgroup2 directory (pure v2), or just its hugetlb part (hybrid).
pub(crate) fn stats_into(dir: &Path, s: &mut Stats, only_hugetlb: bool) {
    hugetlb_stats(dir, s);
    if only_hugetlb {
        return;
    }
    if let Some(cpu) = read_opt(&dir.join("cpu.stat")) {
        let m = stats::parse_flat_keyed(&cpu);
        let g = |k: &str| m.get(k).copied().unwrap_or(0);
        s.cpu.usage.total = g("usage_usec") * 1000;
        s.cpu.usage.user = g("user_usec") * 1000;
        s.cpu.usage.kernel = g("system_usec") * 1000;
        s.cpu.throttling.periods = g("nr_periods");
        s.cpu.throttling.throttled_periods = g("nr_throttled");
        s.cpu.throttling.throttled_time = g("throttled_usec") * 1000;
    }
    if let Some(usage) = read_u64_opt(&dir.join("memory.current")) {
        s.memory.usage.usage = usage;
        s.memory.usage.limit = read_u64_opt(&dir.join("memory.max")).unwrap_or(u64::MAX);
        s.memory.usage.max = read_u64_opt(&dir.join("memory.peak")).unwrap_or(0);
        if let Some(ev) = read_opt(&dir.join("memory.events")) {
            s.memory.usage.failcnt = stats::parse_flat_keyed(&ev)
                .get("max")
                .copied()
                .unwrap_or(0);
        }
        s.memory.swap.usage = read_u64_opt(&dir.join("memory.swap.current")).unwrap_or(0);
        s.memory.swap.limit = read_u64_opt(&dir.join("memory.swap.max")).unwrap_or(0);
        s.memory.swap.max = read_u64_opt(&dir.join("memory.swap.peak")).unwrap_or(0);
        if let Some(st) = read_opt(&dir.join("memory.stat")) {
            s.memory.raw = stats::parse_flat_keyed(&st);
            s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
            s.memory.kernel.usage = s.memory.raw.get("kernel").copied().unwrap_or(0);
        }
    }
    if let Some(cur) = read_u64_opt(&dir.join("pids.current")) {
        s.pids.current = cur;
        s.pids.limit = match read_u64_opt(&dir.join("pids.max")) {
            Some(u64::MAX) | None => 0,
            Some(v) => v,
        };
    } else if let Some(procs) = read_opt(&dir.join("cgroup.procs")) {
        // No pids controller: count what is there, so `ps`-like callers still see it.
        s.pids.current = procs.lines().count() as u64;
    }
    if let Some(io) = read_opt(&dir.join("io.stat")) {
        let (b, i) = stats::parse_io_stat(&io);
        s.blkio.io_service_bytes_recursive = b;
        s.blkio.io_serviced_recursive = i;
    }
}

fn hugetlb_stats(dir: &Path, s: &mut Stats) {
    for size in crate::manager::host_page_sizes() {
        let cur = dir.join(format!("hugetlb.{size}.current"));
        if let Some(usage) = read_u64_opt(&cur) {
            let max = read_u64_opt(&dir.join(format!("hugetlb.{size}.max"))).unwrap_or(0);
            let failcnt = read_opt(&dir.join(format!("hugetlb.{size}.events")))
                .map(|e| stats::parse_flat_keyed(&e).get("max").copied().unwrap_or(0))
                .unwrap_or(0);
            s.hugetlb.insert(
                size,
                stats::HugetlbStats {
                    usage,
                    max,
                    failcnt,
                },
            );
        }
    }
}

/// `true` if the kernel has `cgroup.kill` in `dir`.
pub(crate) fn kill_file(dir: &Path) -> Option<PathBuf> {
    let p = dir.join("cgroup.kill");
    p.exists().then_some(p)
}
