//! cgroup v1 control files: resources, cpuset initialisation, freezer, stats.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxNetwork,
};

use crate::Error;
use crate::fsutil::{self, read, read_opt, read_u64_opt, set};
use crate::manager::Manager;
use crate::stats::{self, Stats};

/// The kernel's "unlimited" for v1 memory files (PAGE_COUNTER_MAX pages, 4 KiB pages).
const V1_UNLIMITED: u64 = 9_223_372_036_854_771_712;

/// A new v1 cpuset cgroup starts with empty cpus/mems and refuses tasks: copy the
/// parent's into every level from the mount point down that is still empty.
pub(crate) fn init_cpuset(mount: &Path, dir: &Path) -> Result<(), Error> {
    let rel = dir.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let level = parent.join(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = level.join(file);
            if read(&mine)?.trim().is_empty() {
                let theirs = read(&parent.join(file))?;
                let v = theirs.trim();
                fsutil::write_raw(&mine, v).map_err(|error| Error::Write {
                    path: mine.clone(),
                    value: v.into(),
                    error,
                })?;
            }
        }
        parent = level;
    }
    Ok(())
}

pub(crate) fn apply_cpu(m: &Manager, cpu: &LinuxCpu) -> Result<(), Error> {
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        let dir = m.need_v1("cpu", "cpu.shares", &shares)?;
        set(dir, "cpu.shares", "cpu.shares", shares)?;
        // The kernel clamps instead of failing: report it rather than run with another
        // value than asked.
        let got = read_u64_opt(&dir.join("cpu.shares")).unwrap_or(shares);
        if got != shares {
            return Err(Error::Unsupported {
                field: "cpu.shares".into(),
                value: shares.to_string(),
                reason: format!("the kernel clamps it to {got} (allowed range 2..=262144)"),
            });
        }
    }
    let period = cpu.period().filter(|&p| p != 0);
    let quota = cpu.quota().filter(|&q| q != 0);
    if period.is_some() || quota.is_some() {
        let dir = m.need_v1(
            "cpu",
            "cpu.quota",
            &format!("{} {}", quota.unwrap_or(0), period.unwrap_or(0)),
        )?;
        // The kernel checks quota against period at each write; write period first and
        // retry in the other order if that combination is refused.
        let write_period = || match period {
            Some(p) => set(dir, "cpu.cfs_period_us", "cpu.period", p),
            None => Ok(()),
        };
        let write_quota = || match quota {
            Some(q) => set(dir, "cpu.cfs_quota_us", "cpu.quota", q),
            None => Ok(()),
        };
        if write_period().is_err() {
            write_quota()?;
            write_period()?;
        } else {
            write_quota()?;
        }
    }
    if let Some(b) = cpu.burst() {
        let dir = m.need_v1("cpu", "cpu.burst", &b)?;
        set(dir, "cpu.cfs_burst_us", "cpu.burst", b)?;
    }
    if let Some(p) = cpu.realtime_period().filter(|&p| p != 0) {
        let dir = m.need_v1("cpu", "cpu.realtimePeriod", &p)?;
        set(dir, "cpu.rt_period_us", "cpu.realtimePeriod", p)?;
    }
    if let Some(r) = cpu.realtime_runtime().filter(|&r| r != 0) {
        let dir = m.need_v1("cpu", "cpu.realtimeRuntime", &r)?;
        set(dir, "cpu.rt_runtime_us", "cpu.realtimeRuntime", r).map_err(|e| match e {
            Error::Apply {
                field,
                value,
                path,
                error,
            } if error.raw_os_error() == Some(libc::EINVAL) => Error::Unsupported {
                field,
                value,
                reason: format!(
                    "{} refused it ({error}): the parent cgroups must have at least that much \
                     cpu.rt_runtime_us and it must not exceed cpu.rt_period_us",
                    path.display()
                ),
            },
            e => e,
        })?;
    }
    if let Some(i) = cpu.idle() {
        let dir = m.need_v1("cpu", "cpu.idle", &i)?;
        set(dir, "cpu.idle", "cpu.idle", i)?;
    }
    for (field, file, value) in [
        ("cpu.cpus", "cpuset.cpus", cpu.cpus()),
        ("cpu.mems", "cpuset.mems", cpu.mems()),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            let dir = m.need_v1("cpuset", field, &v)?;
            set(dir, file, field, v).map_err(|e| match e {
                Error::Apply {
                    field,
                    value,
                    path,
                    error,
                } if matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ERANGE)) => {
                    let allowed = dir
                        .parent()
                        .and_then(|p| read_opt(&p.join(file)))
                        .unwrap_or_default();
                    Error::Unsupported {
                        field,
                        value,
                        reason: format!(
                            "{} refused it ({error}); the host allows {:?}",
                            path.display(),
                            allowed.trim()
                        ),
                    }
                }
                e => e,
            })?;
        }
    }
    Ok(())
}

pub(crate) fn apply_memory(m: &Manager, mem: &LinuxMemory) -> Result<(), Error> {
    let limit = mem.limit().filter(|&v| v != 0);
    let mut swap = mem.swap().filter(|&v| v != 0);
    let any = limit.is_some()
        || swap.is_some()
        || mem.reservation().is_some()
        || mem.kernel().is_some()
        || mem.kernel_tcp().is_some()
        || mem.swappiness().is_some()
        || mem.disable_oom_killer() == Some(true)
        || mem.use_hierarchy() == Some(false);
    if !any {
        return Ok(());
    }
    let first = limit.or(swap).unwrap_or(0);
    let dir = m.need_v1("memory", "memory", &first)?;
    if let (Some(l), Some(s)) = (limit, swap)
        && s != -1
        && s < l
    {
        return Err(Error::Invalid {
            field: "memory.swap".into(),
            value: s.to_string(),
            reason: format!("memory+swap must be at least the memory limit ({l})"),
        });
    }
    if let Some(l) = limit
        && mem.check_before_update() == Some(true)
        && l > 0
    {
        let cur = read_u64_opt(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
        if cur > l as u64 {
            return Err(Error::Invalid {
                field: "memory.limit".into(),
                value: l.to_string(),
                reason: format!("below current usage {cur}"),
            });
        }
    }
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let has_memsw = memsw.exists();
    if limit == Some(-1) && swap.is_none() && has_memsw {
        // "unlimited memory" with no swap given means both unlimited (as runc does): the
        // kernel refuses a memory limit above a finite memsw one.
        swap = Some(-1);
    }
    if let Some(s) = swap
        && !has_memsw
        && s != -1
    {
        return Err(Error::Unsupported {
            field: "memory.swap".into(),
            value: s.to_string(),
            reason: "swap accounting not enabled on this host (no memory.memsw.limit_in_bytes; boot with swapaccount=1)".into(),
        });
    }
    let write_limit = |l: i64| set(dir, "memory.limit_in_bytes", "memory.limit", l);
    let write_swap = |s: i64| {
        if has_memsw {
            set(dir, "memory.memsw.limit_in_bytes", "memory.swap", s)
        } else {
            Ok(())
        }
    };
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // memsw must never drop below the memory limit: grow memsw first when the
            // limit grows (or memsw becomes unlimited), shrink the limit first otherwise.
            let cur = read_u64_opt(&dir.join("memory.limit_in_bytes")).unwrap_or(V1_UNLIMITED);
            let growing = l < 0 || l as u64 > cur;
            if s == -1 || growing {
                write_swap(s)?;
                write_limit(l)?;
            } else {
                write_limit(l)?;
                write_swap(s)?;
            }
        }
        (Some(l), None) => write_limit(l)?,
        (None, Some(s)) => write_swap(s)?,
        (None, None) => {}
    }
    if let Some(r) = mem.reservation().filter(|&v| v != 0) {
        set(dir, "memory.soft_limit_in_bytes", "memory.reservation", r)?;
    }
    if let Some(k) = mem.kernel().filter(|&v| v != 0 && v != -1) {
        set(dir, "memory.kmem.limit_in_bytes", "memory.kernel", k)?;
        // Since Linux 5.16 the write succeeds and does nothing: check it took.
        let got = read_u64_opt(&dir.join("memory.kmem.limit_in_bytes")).unwrap_or(0);
        if k > 0 && got != (k as u64) & !4095 {
            return Err(Error::Unsupported {
                field: "memory.kernel".into(),
                value: k.to_string(),
                reason: "this kernel ignores kernel memory limits (memory.kmem.limit_in_bytes is deprecated)".into(),
            });
        }
    }
    if let Some(k) = mem.kernel_tcp().filter(|&v| v != 0) {
        set(dir, "memory.kmem.tcp.limit_in_bytes", "memory.kernelTCP", k)?;
    }
    if let Some(s) = mem.swappiness() {
        if s > 100 {
            return Err(Error::Invalid {
                field: "memory.swappiness".into(),
                value: s.to_string(),
                reason: "must be 0..=100".into(),
            });
        }
        set(dir, "memory.swappiness", "memory.swappiness", s)?;
    }
    if mem.disable_oom_killer() == Some(true) {
        set(dir, "memory.oom_control", "memory.disableOOMKiller", 1)?;
    }
    if mem.use_hierarchy() == Some(false) {
        return Err(Error::Unsupported {
            field: "memory.useHierarchy".into(),
            value: "false".into(),
            reason: "this kernel always uses hierarchical memory accounting".into(),
        });
    }
    Ok(())
}

pub(crate) fn apply_blkio(m: &Manager, io: &LinuxBlockIo) -> Result<(), Error> {
    // CFQ's files, or BFQ's where that is the scheduler (kernel 5.0+ has no CFQ).
    let pick = |dir: &Path, cfq: &str, bfq: &str| {
        if dir.join(cfq).exists() {
            Some(cfq.to_string())
        } else if dir.join(bfq).exists() {
            Some(bfq.to_string())
        } else {
            None
        }
    };
    let no_file = |field: &str, value: String, what: &str| Error::Unsupported {
        field: field.into(),
        value,
        reason: format!(
            "this host has no {what} (needs the bfq io scheduler on the block devices)"
        ),
    };
    if let Some(w) = io.weight().filter(|&w| w != 0) {
        let dir = m.need_v1("blkio", "blockIO.weight", &w)?;
        let f = pick(dir, "blkio.weight", "blkio.bfq.weight")
            .ok_or_else(|| no_file("blockIO.weight", w.to_string(), "blkio.weight"))?;
        set(dir, &f, "blockIO.weight", w)?;
    }
    if let Some(w) = io.leaf_weight().filter(|&w| w != 0) {
        let dir = m.need_v1("blkio", "blockIO.leafWeight", &w)?;
        set(dir, "blkio.leaf_weight", "blockIO.leafWeight", w)?;
    }
    for d in io.weight_device().iter().flatten() {
        let dev = format!("{}:{}", d.major(), d.minor());
        if let Some(w) = d.weight() {
            let v = format!("{dev} {w}");
            let dir = m.need_v1("blkio", "blockIO.weightDevice", &v)?;
            let f = pick(dir, "blkio.weight_device", "blkio.bfq.weight_device")
                .ok_or_else(|| no_file("blockIO.weightDevice", v.clone(), "blkio.weight_device"))?;
            set(dir, &f, "blockIO.weightDevice", v)?;
        }
        if let Some(w) = d.leaf_weight() {
            let v = format!("{dev} {w}");
            let dir = m.need_v1("blkio", "blockIO.weightDevice.leafWeight", &v)?;
            set(
                dir,
                "blkio.leaf_weight_device",
                "blockIO.weightDevice.leafWeight",
                v,
            )?;
        }
    }
    let throttles = [
        (
            "blockIO.throttleReadBpsDevice",
            "blkio.throttle.read_bps_device",
            io.throttle_read_bps_device(),
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            "blkio.throttle.write_bps_device",
            io.throttle_write_bps_device(),
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            "blkio.throttle.read_iops_device",
            io.throttle_read_iops_device(),
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            "blkio.throttle.write_iops_device",
            io.throttle_write_iops_device(),
        ),
    ];
    for (field, file, list) in throttles {
        for d in list.iter().flatten() {
            let v = format!("{}:{} {}", d.major(), d.minor(), d.rate());
            let dir = m.need_v1("blkio", field, &v)?;
            set(dir, file, field, v)?;
        }
    }
    Ok(())
}

/// One v1 device rule line ("c 1:3 rwm", "a").
pub(crate) fn device_rule(d: &LinuxDeviceCgroup) -> Result<String, Error> {
    let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => return Ok("a".into()),
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => {
            return Err(Error::Unsupported {
                field: "devices.type".into(),
                value: "p".into(),
                reason: "the devices cgroup has no rules for fifos".into(),
            });
        }
    };
    let num = |n: Option<i64>| match n {
        None | Some(-1) => "*".to_string(),
        Some(n) => n.to_string(),
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::Invalid {
            field: "devices.access".into(),
            value: access,
            reason: "must be made of r, w and m".into(),
        });
    }
    Ok(format!(
        "{typ} {}:{} {access}",
        num(d.major()),
        num(d.minor())
    ))
}

pub(crate) fn apply_devices(m: &Manager, rules: &[LinuxDeviceCgroup]) -> Result<(), Error> {
    if rules.is_empty() {
        return Ok(());
    }
    let lines: Vec<(bool, String)> = rules
        .iter()
        .map(|d| Ok((d.allow(), device_rule(d)?)))
        .collect::<Result<_, Error>>()?;
    let dir = m.need_v1("devices", "devices", &lines[0].1)?;
    for (allow, line) in &lines {
        let file = if *allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        set(dir, file, "devices", line)?;
    }
    Ok(())
}

pub(crate) fn apply_network(m: &Manager, net: &LinuxNetwork) -> Result<(), Error> {
    if let Some(id) = net.class_id() {
        let dir = m.need_v1("net_cls", "network.classID", &id)?;
        set(dir, "net_cls.classid", "network.classID", id)?;
    }
    for p in net.priorities().iter().flatten() {
        let v = format!("{} {}", p.name(), p.priority());
        let dir = m.need_v1("net_prio", "network.priorities", &v)?;
        set(dir, "net_prio.ifpriomap", "network.priorities", v)?;
    }
    Ok(())
}

/// Write `freezer.state` and wait for the kernel to reach it.
pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), Error> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let path = dir.join("freezer.state");
    let write = || {
        fsutil::write_raw(&path, want).map_err(|error| Error::Write {
            path: path.clone(),
            value: want.into(),
            error,
        })
    };
    write()?;
    let start = Instant::now();
    let mut delay = Duration::from_micros(50);
    let mut n = 0u32;
    loop {
        if read(&path)?.trim() == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            if frozen {
                let _ = fsutil::write_raw(&path, "THAWED");
            }
            return Err(Error::Freeze {
                path: dir.to_path_buf(),
                reason: format!("freezer.state did not reach {want} within 5s"),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
        n += 1;
        // A task forking while being frozen can leave the cgroup FREEZING: asking again
        // makes the kernel retry.
        if n.is_multiple_of(4) {
            write()?;
        }
    }
}

pub(crate) fn is_frozen(dir: &Path) -> Result<bool, Error> {
    Ok(read(&dir.join("freezer.state"))?.trim() != "THAWED")
}

pub(crate) fn stats_into(m: &Manager, s: &mut Stats) {
    if let Some(dir) = m.v1_dir("cpuacct") {
        s.cpu.usage.total = read_u64_opt(&dir.join("cpuacct.usage")).unwrap_or(0);
        s.cpu.usage.user = read_u64_opt(&dir.join("cpuacct.usage_user")).unwrap_or(0);
        s.cpu.usage.kernel = read_u64_opt(&dir.join("cpuacct.usage_sys")).unwrap_or(0);
        s.cpu.usage.percpu = read_opt(&dir.join("cpuacct.usage_percpu"))
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
    }
    if let Some(dir) = m.v1_dir("cpu")
        && let Some(st) = read_opt(&dir.join("cpu.stat"))
    {
        let k = stats::parse_flat_keyed(&st);
        s.cpu.throttling.periods = k.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = k.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = k.get("throttled_time").copied().unwrap_or(0);
    }
    if let Some(dir) = m.v1_dir("memory") {
        let entry = |prefix: &str| stats::MemoryEntry {
            limit: read_u64_opt(&dir.join(format!("{prefix}.limit_in_bytes"))).unwrap_or(0),
            usage: read_u64_opt(&dir.join(format!("{prefix}.usage_in_bytes"))).unwrap_or(0),
            max: read_u64_opt(&dir.join(format!("{prefix}.max_usage_in_bytes"))).unwrap_or(0),
            failcnt: read_u64_opt(&dir.join(format!("{prefix}.failcnt"))).unwrap_or(0),
        };
        s.memory.usage = entry("memory");
        s.memory.swap = entry("memory.memsw");
        s.memory.kernel = entry("memory.kmem");
        if let Some(st) = read_opt(&dir.join("memory.stat")) {
            s.memory.raw = stats::parse_flat_keyed(&st);
            s.memory.cache = s.memory.raw.get("total_cache").copied().unwrap_or(0);
        }
    }
    if let Some(dir) = m.v1_dir("pids") {
        s.pids.current = read_u64_opt(&dir.join("pids.current")).unwrap_or(0);
        s.pids.limit = match read_u64_opt(&dir.join("pids.max")) {
            Some(u64::MAX) | None => 0,
            Some(v) => v,
        };
    }
    if let Some(dir) = m.v1_dir("blkio") {
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| read_opt(&dir.join(n)))
                .map(|t| stats::parse_blkio_v1(&t))
                .unwrap_or_default()
        };
        s.blkio.io_service_bytes_recursive = pick(&[
            "blkio.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ]);
        s.blkio.io_serviced_recursive = pick(&[
            "blkio.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
        ]);
    }
    if let Some(dir) = m.v1_dir("hugetlb") {
        for size in crate::manager::host_page_sizes() {
            if let Some(usage) = read_u64_opt(&dir.join(format!("hugetlb.{size}.usage_in_bytes"))) {
                s.hugetlb.insert(
                    size.clone(),
                    stats::HugetlbStats {
                        usage,
                        max: read_u64_opt(&dir.join(format!("hugetlb.{size}.max_usage_in_bytes")))
                            .unwrap_or(0),
                        failcnt: read_u64_opt(&dir.join(format!("hugetlb.{size}.failcnt")))
                            .unwrap_or(0),
                    },
                );
            }
        }
    }
}
