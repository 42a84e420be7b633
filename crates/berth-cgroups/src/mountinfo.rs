//! Host layout detection: which cgroup hierarchies are mounted where.
//!
//! Parsing is plain string splitting (no regex): it runs once per runtime invocation,
//! on the start path.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How cgroups are mounted on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Only cgroup v1 hierarchies.
    V1,
    /// One cgroup2 hierarchy (the unified mode).
    V2,
    /// cgroup v1 hierarchies plus a cgroup2 mount (systemd's "hybrid" mode): controllers
    /// bound to v1 are used there; a controller only cgroup2 has (e.g. hugetlb) is used
    /// through the cgroup2 mount.
    Hybrid,
}

/// One v1 hierarchy: its controllers (and `name=` tag) and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Mount {
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The `root` field of mountinfo: which cgroup of the hierarchy is mounted there.
    pub root: String,
}

/// The cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2Mount {
    pub mount_point: PathBuf,
    pub root: String,
}

/// Every cgroup mount that matters, and the layout they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostMounts {
    pub layout: Layout,
    pub v1: Vec<V1Mount>,
    pub v2: Option<V2Mount>,
}

/// Controller names a v1 mount's super options can carry; everything else there is an
/// option (rw, xattr, release_agent=..., clone_children, noprefix, cpuset_v2_mode).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// Undo the octal escapes (`\040` for space etc.) mountinfo uses in paths; public as
/// [`crate::unescape_mountinfo`] for other readers of /proc/self/mountinfo.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `true` if a mount at `later` hides one at `earlier`: same mount point or a parent
/// directory of it. Both are raw (still escaped) mountinfo fields; escaping never
/// produces `/`, so comparing them raw is exact.
fn covers(later: &str, earlier: &str) -> bool {
    match earlier.strip_prefix(later) {
        Some(rest) => rest.is_empty() || later.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Parse `/proc/self/mountinfo` text into the host's cgroup mounts. Returns `None` when
/// no visible cgroup filesystem is mounted.
///
/// mountinfo lists mounts in mount order and keeps the ones a later mount has shadowed
/// (e.g. the host's `/sys/fs/cgroup/unified` after a fresh tmpfs went on
/// `/sys/fs/cgroup` in a private mount namespace): a mount counts only if no later mount
/// sits on its mount point or on a parent directory of it. Among visible mounts the
/// first one of a hierarchy wins (later ones are bind mounts of the same thing).
pub(crate) fn parse_mountinfo(text: &str) -> Option<HostMounts> {
    // Raw mount point of every line, and the indices of the cgroup ones, so the
    // shadowing check is one pass plus a scan of the lines after each cgroup mount.
    let mut points: Vec<&str> = Vec::new();
    let mut cgroup_lines: Vec<(usize, &str, &str, &str, &str)> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut l = left.split(' ');
        let (Some(root), Some(mount_point)) = (l.nth(3), l.next()) else {
            continue;
        };
        points.push(mount_point);
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let _source = r.next();
        let superopts = r.next().unwrap_or("");
        cgroup_lines.push((points.len() - 1, fstype, root, mount_point, superopts));
    }
    let mut v1: Vec<V1Mount> = Vec::new();
    let mut v2: Option<V2Mount> = None;
    for (i, fstype, root, mount_point, superopts) in cgroup_lines {
        if points[i + 1..]
            .iter()
            .any(|later| covers(later, mount_point))
        {
            continue;
        }
        let root = unescape(root);
        let mount_point = PathBuf::from(unescape(mount_point));
        if fstype == "cgroup2" {
            if v2.is_none() {
                v2 = Some(V2Mount { mount_point, root });
            }
            continue;
        }
        let controllers: Vec<String> = superopts
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        let known = v1
            .iter()
            .any(|m| m.controllers.iter().any(|c| controllers.contains(c)));
        if !known {
            v1.push(V1Mount {
                controllers,
                mount_point,
                root,
            });
        }
    }
    let layout = match (v1.is_empty(), v2.is_some()) {
        (true, false) => return None,
        (true, true) => Layout::V2,
        (false, false) => Layout::V1,
        (false, true) => Layout::Hybrid,
    };
    Some(HostMounts { layout, v1, v2 })
}

/// The calling process's own cgroups, from `/proc/self/cgroup`: (controllers, path)
/// pairs; the v2 entry has no controllers.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// Where the runtime itself sits in a hierarchy (by its controllers; empty = cgroup2),
/// as a path below the hierarchy's mount point.
pub(crate) fn own_path_below_mount(
    own: &[(Vec<String>, String)],
    controllers: &[String],
    mount_root: &str,
) -> Option<String> {
    let path = own.iter().find_map(|(c, p)| {
        let hit = if controllers.is_empty() {
            c.is_empty()
        } else {
            c.iter().any(|x| controllers.contains(x))
        };
        hit.then_some(p.as_str())
    })?;
    // The mount may show a subtree (`root` != "/"): strip it so the path is relative to
    // the mount point.
    let rel = if mount_root == "/" {
        path
    } else {
        match path.strip_prefix(mount_root) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => path,
        }
    };
    Some(rel.trim_start_matches('/').to_string())
}

/// `true` if `path` is on a cgroup2 filesystem (one statfs, no mountinfo read).
pub(crate) fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host() {
        let m = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(m.layout, Layout::Hybrid);
        assert_eq!(m.v1.len(), 9);
        assert_eq!(m.v1[0].controllers, vec!["cpu"]);
        assert_eq!(m.v1[8].controllers, vec!["name=systemd"]);
        assert_eq!(
            m.v2.unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
    }

    /// The view crun needs on this hybrid host, built in a private mount namespace: the
    /// host's mounts (still listed, now shadowed), a fresh tmpfs on /sys/fs/cgroup, then
    /// bind mounts of the v1 hierarchies only (from a copy saved at /run/saved-cg).
    fn shadowed_view(rebound: &[&str]) -> String {
        let mut text = HYBRID.to_string();
        text.push_str("500 31 0:90 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n");
        for (i, h) in rebound.iter().enumerate() {
            let opts = if *h == "systemd" {
                "name=systemd".to_string()
            } else {
                h.to_string()
            };
            text.push_str(&format!(
                "{} 500 0:{} / /sys/fs/cgroup/{h} rw,relatime - cgroup cgroup rw,{opts}\n",
                501 + i,
                29 + i
            ));
        }
        text
    }

    #[test]
    fn tmpfs_over_cgroup_root_hides_old_mounts() {
        let all_v1 = [
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
        ];
        let m = parse_mountinfo(&shadowed_view(&all_v1)).unwrap();
        assert_eq!(m.layout, Layout::V1, "the old cgroup2 mount is shadowed");
        assert_eq!(m.v2, None);
        assert_eq!(m.v1.len(), 9);
        assert_eq!(m.v1[3].controllers, vec!["memory"]);
        assert_eq!(m.v1[3].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m.v1[8].controllers, vec!["name=systemd"]);
    }

    #[test]
    fn only_remounted_hierarchies_are_visible() {
        let m = parse_mountinfo(&shadowed_view(&["memory", "pids"])).unwrap();
        assert_eq!(m.layout, Layout::V1);
        assert_eq!(m.v2, None);
        let got: Vec<_> = m.v1.iter().map(|v| v.controllers.join(",")).collect();
        assert_eq!(got, vec!["memory", "pids"]);
    }

    #[test]
    fn tmpfs_alone_over_cgroup_root_is_no_cgroups() {
        assert!(parse_mountinfo(&shadowed_view(&[])).is_none());
    }

    #[test]
    fn mount_on_same_point_hides_only_that_one() {
        let mut text = HYBRID.to_string();
        text.push_str("600 35 0:91 / /sys/fs/cgroup/memory rw - tmpfs tmpfs rw\n");
        text.push_str("601 31 0:92 / /sys/fs/cgroup/memory2 rw - tmpfs tmpfs rw\n");
        let m = parse_mountinfo(&text).unwrap();
        assert_eq!(m.layout, Layout::Hybrid);
        assert_eq!(m.v1.len(), 8);
        assert!(m.v1.iter().all(|v| v.controllers != ["memory"]));
        assert!(m.v1.iter().any(|v| v.controllers == ["cpu"]));
    }

    #[test]
    fn covering_is_by_path_component() {
        assert!(covers("/sys/fs/cgroup", "/sys/fs/cgroup"));
        assert!(covers("/sys/fs/cgroup", "/sys/fs/cgroup/unified"));
        assert!(covers("/", "/sys/fs/cgroup"));
        assert!(!covers("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory2"));
        assert!(!covers("/sys/fs/cgroup/unified", "/sys/fs/cgroup"));
    }

    #[test]
    fn pure_v2_host() {
        let text = "25 20 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.layout, Layout::V2);
        assert!(m.v1.is_empty());
        assert_eq!(m.v2.unwrap().root, "/");
    }

    #[test]
    fn v1_host_with_joined_controllers_and_bind_mount() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory,release_agent=/x
99 25 0:26 /sub /mnt/again rw - cgroup cgroup rw,cpu,cpuacct
";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.layout, Layout::V1);
        assert_eq!(m.v1.len(), 3);
        assert_eq!(m.v1[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m.v1[1].controllers, vec!["net_cls", "net_prio"]);
        assert_eq!(m.v1[2].controllers, vec!["memory"]);
    }

    #[test]
    fn no_cgroups() {
        assert!(parse_mountinfo("22 28 0:21 / /sys rw - sysfs sysfs rw\n").is_none());
    }

    #[test]
    fn escaped_mount_point() {
        let text = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.v2.unwrap().mount_point, PathBuf::from("/mnt/my cg"));
    }

    #[test]
    fn own_cgroup_paths() {
        let own = parse_proc_cgroup(
            "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/a/b\n0::/x/y\n",
        );
        let mem = vec!["memory".to_string()];
        assert_eq!(
            own_path_below_mount(&own, &mem, "/").unwrap(),
            "process_api/abc"
        );
        assert_eq!(
            own_path_below_mount(&own, &mem, "/process_api").unwrap(),
            "abc"
        );
        let cpu = vec!["cpuacct".to_string(), "cpu".to_string()];
        assert_eq!(own_path_below_mount(&own, &cpu, "/").unwrap(), "a/b");
        assert_eq!(own_path_below_mount(&own, &[], "/").unwrap(), "x/y");
        let sd = vec!["name=systemd".to_string()];
        assert_eq!(own_path_below_mount(&own, &sd, "/").unwrap(), "");
        assert!(own_path_below_mount(&own, &["pids".to_string()], "/").is_none());
    }
}
