//! CPU and memory of containers from their cgroups (`/berth-<id>`, the path the engine
//! gives every container), for `top pods` and the HorizontalPodAutoscaler.
//!
//! Works on v1, v2 and hybrid hosts: a v1 controller directory wins when present.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used since the container started, nanoseconds.
    pub cpu_ns: u64,
    /// Working set: memory in use minus inactive page cache, bytes (what kubectl
    /// top shows).
    pub working_set: u64,
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

fn stat_field(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Reads the cgroup of container `id`; None when it has none (not running).
pub fn usage(id: &str) -> Option<Usage> {
    let cpu_ns = read_num(&cgroup_file("cpuacct", id, "cpuacct.usage")).or_else(|| {
        stat_field(&cgroup_file("", id, "cpu.stat"), "usage_usec").map(|us| us * 1000)
    })?;
    let v1_mem = cgroup_file("memory", id, "memory.usage_in_bytes");
    let (usage, inactive) = if v1_mem.exists() {
        (
            read_num(&v1_mem).unwrap_or(0),
            stat_field(
                &cgroup_file("memory", id, "memory.stat"),
                "total_inactive_file",
            )
            .unwrap_or(0),
        )
    } else {
        (
            read_num(&cgroup_file("", id, "memory.current")).unwrap_or(0),
            stat_field(&cgroup_file("", id, "memory.stat"), "inactive_file").unwrap_or(0),
        )
    };
    Some(Usage {
        cpu_ns,
        working_set: usage.saturating_sub(inactive),
    })
}

/// CPU in millicores of each container over `window` (two readings), and its
/// working set at the end. Containers without a cgroup are left out.
pub fn sample(ids: &[String], window: Duration) -> Vec<(String, u64, u64)> {
    let before: Vec<(String, Usage)> = ids
        .iter()
        .filter_map(|id| Some((id.clone(), usage(id)?)))
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let wall = t0.elapsed().as_nanos().max(1) as u64;
    before
        .into_iter()
        .filter_map(|(id, b)| {
            let a = usage(&id)?;
            let milli = a.cpu_ns.saturating_sub(b.cpu_ns) * 1000 / wall;
            Some((id, milli, a.working_set))
        })
        .collect()
}

/// CPU rate between two readings, millicores.
pub fn millicores(before: u64, after: u64, elapsed: Duration) -> u64 {
    let wall = elapsed.as_nanos().max(1) as u64;
    after.saturating_sub(before) * 1000 / wall
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_in_millicores() {
        // half a second of CPU in one second is 500m
        assert_eq!(millicores(0, 500_000_000, Duration::from_secs(1)), 500);
        assert_eq!(millicores(10, 5, Duration::from_secs(1)), 0);
        assert!(usage("no-such-container-id").is_none());
    }
}
