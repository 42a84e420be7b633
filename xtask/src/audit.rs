//! The host leak audit after the whole test suite, and the sweep of stale test roots
//! before it.
//!
//! - [`Snapshot::take`] lists every berth-made thing on the host: mounts and loop
//!   devices under berth roots, `berth-*` cgroups (and children of the runtime's shared
//!   `berth` parent) in every hierarchy, named network namespaces, bridges and veths,
//!   nft tables, and processes living in a berth root or a berth cgroup.
//! - [`check`] compares the host after the tests with the snapshot taken before them.
//!   Under `CI=true` (a fresh machine) anything found fails; on a shared developer
//!   machine only what appeared during the run does (another engineer's containers
//!   are not the suite's fault).
//! - [`sweep`] removes test roots (`/tmp/berth-test-*` and the other test prefixes) left
//!   by killed test runs, with their processes, mounts, loop devices, cgroups, networks
//!   and Service tables, when they were made before this run and no test process that
//!   could own them is alive.
//!
//! Per-test checks live in `integration_tests::LeakCheck`; this catches what a test
//! cannot see about itself (a killed test, a helper process outliving its test).

use berth_cgroups::unescape_mountinfo as unescape;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};

/// Name prefixes of the temporary roots the tests make (TestRoots and the tests that
/// make their own bundles and runtime roots).
const TEST_ROOT_PREFIXES: &[&str] = &[
    "berth-test-",
    "berth-rt-",
    "berth-rts-",
    "berth-nettest-",
    "berth-esc-",
    "berth-crash-",
    "berth-load-",
    "berth-rl-",
    "berth-registry-",
];

/// The file [`integration_tests::TestRoots`] writes with its owner's pid and start time.
const OWNER_FILE: &str = integration_tests::TEST_ROOT_OWNER_FILE;

/// Whether this is a CI run (`CI=true`, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Every berth-made thing on the host, one line each (`kind: description`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    items: BTreeSet<String>,
}

impl Snapshot {
    pub fn take() -> Self {
        let mut items = BTreeSet::new();
        let mut add = |kind: &str, list: Vec<String>| {
            items.extend(list.into_iter().map(|d| format!("{kind}: {d}")));
        };
        add("mount", mounts(is_berth_path));
        add(
            "loop",
            loop_devices(|p| is_berth_path(p) || p.contains("berth")),
        );
        add("cgroup", cgroups());
        add("netns", named_netns());
        add("link", links());
        add("nft", nft_tables());
        add("process", processes(is_berth_path));
        Self { items }
    }
}

/// The audit after the suite: fails listing what the run left (under CI: anything).
/// Processes get a few seconds to finish exiting before anything counts.
///
/// Off CI, on a machine shared with other engineers, what appeared during the run
/// but belongs to another run still going is listed and not counted: objects under
/// a test root that a live test process owns (the suite has finished, so that
/// process is another run's), cgroups of the containers in such roots, processes of
/// berth binaries from another target directory, and, while such a run exists,
/// bridges, veths and nft tables (their names do not say their root).
pub fn check(before: &Snapshot, own_target: &Path) -> Result<()> {
    let ci = in_ci();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (now, blamed, others) = loop {
        let now = Snapshot::take();
        let new: Vec<String> = if ci {
            now.items.iter().cloned().collect()
        } else {
            now.items.difference(&before.items).cloned().collect()
        };
        let (others, blamed): (Vec<String>, Vec<String>) = if ci {
            (Vec::new(), new)
        } else {
            let live = LiveRuns::find(own_target);
            new.into_iter().partition(|item| live.owns(item))
        };
        if blamed.is_empty() || Instant::now() >= deadline {
            break (now, blamed, others);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let old: Vec<&String> = now.items.intersection(&before.items).collect();
    if !ci && !old.is_empty() {
        println!(
            "leak audit: {} berth object(s) existed before the run and are not counted \
             (another engineer's work, or an earlier run; CI=true counts them)",
            old.len()
        );
        for item in &old {
            println!("  (before) {item}");
        }
    }
    if !others.is_empty() {
        println!(
            "leak audit: {} berth object(s) of another test run still going are not counted",
            others.len()
        );
        for item in &others {
            println!("  (other run) {item}");
        }
    }
    if blamed.is_empty() {
        println!(
            "leak audit: clean (mounts, loop devices, cgroups, netns, links, nft tables, processes)"
        );
        return Ok(());
    }
    for item in &blamed {
        let when = if ci && before.items.contains(item) {
            " (there before the run)"
        } else {
            ""
        };
        println!("  LEAK {item}{when}");
    }
    bail!(
        "leak audit: {} thing(s) left on the host {}",
        blamed.len(),
        if ci {
            "(CI=true: a fresh machine has none)"
        } else {
            "that were not there before the run"
        }
    )
}

/// Other test runs going on at the audit: roots a live test process owns, the
/// container ids in them, and the target directory of this run's binaries.
#[derive(Debug, Default)]
struct LiveRuns {
    roots: Vec<String>,
    ids: BTreeSet<String>,
    own_target: String,
}

impl LiveRuns {
    fn find(own_target: &Path) -> LiveRuns {
        let procs = proc_list();
        let (boot, ticks) = (boot_time(), clock_ticks());
        let mut live = LiveRuns {
            own_target: format!("{}/", own_target.display()),
            ..LiveRuns::default()
        };
        for dir in test_root_dirs(&[]) {
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                continue;
            };
            let made = meta
                .created()
                .or_else(|_| meta.modified())
                .unwrap_or_else(|_| SystemTime::now());
            if in_use(&dir, made, &procs, boot, ticks).is_some() {
                let (names, _) = container_names(&dir);
                live.ids.extend(names.into_iter().filter(|n| n.len() >= 12));
                live.roots.push(format!("{}/", dir.display()));
            }
        }
        live
    }

    /// Whether a snapshot line belongs to one of these runs.
    fn owns(&self, item: &str) -> bool {
        if self.roots.iter().any(|r| item.contains(r.as_str()))
            || self.ids.iter().any(|id| item.contains(id.as_str()))
        {
            return true;
        }
        // a berth binary of another build: "process: pid N `/x/debug/berth ...`"
        if let Some(exe) = item
            .split_once('`')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            && (exe.ends_with("/berth") || exe.ends_with("/berth-oci"))
            && !exe.starts_with(&self.own_target)
        {
            return true;
        }
        !self.roots.is_empty() && (item.starts_with("link: ") || item.starts_with("nft: "))
    }
}

/// Whether `path` is inside a berth root: a test root under the temp directory, the
/// system roots, or a rootless user's roots.
fn is_berth_path(path: &str) -> bool {
    let tmp = std::env::temp_dir().join("berth-");
    path.starts_with("/tmp/berth-")
        || path.starts_with(&*tmp.to_string_lossy())
        || path.starts_with("/var/lib/berth/")
        || path.starts_with("/run/berth/")
        || path.starts_with("/run/berth-oci/")
        || (path.starts_with("/run/user/") && path.contains("/berth"))
}

/// One mount of the host's mount namespace.
#[derive(Debug)]
struct Mount {
    id: u64,
    point: String,
    root: String,
    fstype: String,
    source: String,
}

fn mount_table() -> Vec<Mount> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mountpoint options ... - fstype source super
            let (head, tail) = line.split_once(" - ")?;
            let f: Vec<&str> = head.split_whitespace().collect();
            let t: Vec<&str> = tail.split_whitespace().collect();
            Some(Mount {
                id: f.first()?.parse().ok()?,
                root: unescape(f.get(3)?),
                point: unescape(f.get(4)?),
                fstype: t.first()?.to_string(),
                source: unescape(t.get(1).unwrap_or(&"")),
            })
        })
        .collect()
}

/// Mounts whose mount point is in a berth root, and namespace pins named by berth.
fn mounts(inside: impl Fn(&str) -> bool) -> Vec<String> {
    mount_table()
        .into_iter()
        .filter(|m| inside(&m.point) || (m.fstype == "nsfs" && m.point.contains("berth")))
        .map(|m| {
            format!(
                "{} ({} from {}, root {})",
                m.point, m.fstype, m.source, m.root
            )
        })
        .collect()
}

/// Loop devices whose backing file passes `pick` (`/sys/block/loopN/loop/backing_file`;
/// `losetup -l` reads the same).
fn loop_devices(pick: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim();
        if pick(backing) {
            found.push(format!("/dev/{name} backed by {backing}"));
        }
    }
    found
}

/// The cgroup hierarchies: every v1 controller mount, named ones, and the cgroup2
/// mount (`/sys/fs/cgroup/unified` on a hybrid host), each once.
fn hierarchies() -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in mount_table() {
        if (m.fstype == "cgroup" || m.fstype == "cgroup2") && seen.insert(m.point.clone()) {
            out.push(PathBuf::from(m.point));
        }
    }
    out
}

/// `berth-*` cgroups (the engine's `/berth-<id>`) at any depth up to 5, and the
/// children of the runtime's shared `berth` parent (`/berth/<id>`; the parent itself
/// stays, as runc's does).
fn cgroups() -> Vec<String> {
    let mut found = Vec::new();
    for h in hierarchies() {
        walk_cgroups(&h, &h, 0, &mut found);
    }
    found
}

fn walk_cgroups(top: &Path, dir: &Path, depth: usize, found: &mut Vec<String>) {
    if depth > 5 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("berth-") || dir == top.join("berth") {
            let procs = fs::read_to_string(path.join("cgroup.procs"))
                .map(|t| t.lines().count())
                .unwrap_or(0);
            found.push(format!("{} ({procs} processes)", path.display()));
            continue;
        }
        walk_cgroups(top, &path, depth + 1, found);
    }
}

/// `/run/netns` entries named by berth (the engine pins its namespaces in its state
/// directory instead: those show as nsfs mounts).
fn named_netns() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("berth"))
                .map(|n| format!("/run/netns/{n}"))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a link name is one berth makes: default bridges `berthXXXXXXXX`, user
/// network bridges `bbr-XXXXXXXX`, host ends of veths `vbXXXXXXXXXXXX`.
fn is_berth_link(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    name.starts_with("berth")
        || name.starts_with("bbr-")
        || name.strip_prefix("vb").is_some_and(|h| hex(h, 12))
}

fn links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            // "5: name@peer: <FLAGS> ..."
            let name = l.split(':').nth(1)?.trim();
            let base = name.split('@').next()?;
            is_berth_link(base).then(|| name.to_owned())
        })
        .collect()
}

/// nft tables named by berth (`berth_<bridge>` for a network's NAT and ports,
/// `berth_svc_<hash>` for a root's Services), with their rule count.
fn nft_tables() -> Vec<String> {
    let nft = |args: &[&str]| {
        Command::new("nft")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    nft(&["list", "tables"])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "table").then_some(())?;
            let family = w.next()?;
            let name = w.next()?;
            name.starts_with("berth")
                .then(|| (family.to_owned(), name.to_owned()))
        })
        .map(|(family, name)| {
            let listing = nft(&["list", "table", &family, &name]);
            let comment = listing.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("comment \"")
                    .and_then(|c| c.strip_suffix('"'))
                    .map(str::to_owned)
            });
            match comment {
                Some(c) => format!("table {family} {name} ({c})"),
                None => format!("table {family} {name}"),
            }
        })
        .collect()
}

/// A live process as the audit and the sweep see it.
#[derive(Debug)]
struct Proc {
    pid: i32,
    cmdline: String,
    /// cwd, root and exe targets, `BERTH_ROOT`/`BERTH_STATE` from its environment.
    paths: Vec<(&'static str, String)>,
    /// Its cgroup paths (one per hierarchy).
    cgroups: Vec<String>,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    start_ticks: u64,
}

fn proc_list() -> Vec<Proc> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = e.path();
        let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": fields after the comm's closing parenthesis
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // zombies hold nothing but a pid; kernel threads have no cmdline
        if fields.first() == Some(&"Z") {
            continue;
        }
        let start_ticks = fields.get(19).and_then(|v| v.parse().ok()).unwrap_or(0);
        let cmdline = fs::read(dir.join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        if cmdline.is_empty() {
            continue;
        }
        let mut paths = Vec::new();
        for link in ["cwd", "root", "exe"] {
            if let Ok(t) = fs::read_link(dir.join(link)) {
                paths.push((link, t.to_string_lossy().into_owned()));
            }
        }
        if let Ok(env) = fs::read(dir.join("environ")) {
            for var in env.split(|b| *b == 0) {
                let var = String::from_utf8_lossy(var);
                for key in ["BERTH_ROOT", "BERTH_STATE"] {
                    if let Some(v) = var.strip_prefix(key).and_then(|v| v.strip_prefix('=')) {
                        paths.push((key, v.to_owned()));
                    }
                }
            }
        }
        let cgroups = fs::read_to_string(dir.join("cgroup"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Proc {
            pid,
            cmdline,
            paths,
            cgroups,
            start_ticks,
        });
    }
    out
}

fn is_berth_cgroup(cg: &str) -> bool {
    cg.split('/').any(|c| c.starts_with("berth-")) || cg.starts_with("/berth/")
}

/// Processes living in a berth root (`inside` their cwd, root, exe or berth roots)
/// or in a berth cgroup.
fn processes(inside: impl Fn(&str) -> bool) -> Vec<String> {
    proc_list()
        .into_iter()
        .filter_map(|p| {
            let args = p
                .cmdline
                .split_whitespace()
                .filter(|a| inside(a))
                .map(|a| ("arg", a.to_owned()));
            let why: Vec<String> = p
                .paths
                .iter()
                .cloned()
                .chain(args)
                .filter(|(_, v)| inside(v))
                .map(|(k, v)| format!("{k} {v}"))
                .chain(
                    p.cgroups
                        .iter()
                        .find(|c| is_berth_cgroup(c))
                        .map(|c| format!("cgroup {c}")),
                )
                .collect();
            (!why.is_empty()).then(|| format!("pid {} `{}` ({})", p.pid, p.cmdline, why.join(", ")))
        })
        .collect()
}

/// What the sweep did with one stale root.
#[derive(Debug, Default)]
struct Swept {
    killed: Vec<String>,
    cli: Vec<String>,
    unmounted: Vec<String>,
    loops: Vec<String>,
    cgroups: Vec<String>,
    kept_cgroups: Vec<String>,
    tables: Vec<String>,
    kept: Option<String>,
}

/// Removes test roots left by killed test runs: made before `run_start`, and neither
/// their owner (recorded by TestRoots) nor, for roots without an owner file, any test
/// process that started before the root is alive. Prints what it swept. `only`
/// limits it to those roots; `dry_run` only says what it would sweep.
pub fn sweep(
    run_start: SystemTime,
    berth: Option<&Path>,
    only: &[PathBuf],
    dry_run: bool,
) -> Result<()> {
    let dirs = test_root_dirs(only);
    let procs = proc_list();
    let boot = boot_time();
    let ticks = clock_ticks();
    let mut swept = 0;
    let mut kept_in_use = 0;
    for dir in dirs {
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        let made = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or(run_start);
        if made >= run_start {
            continue;
        }
        if let Some(owner) = in_use(&dir, made, &procs, boot, ticks) {
            kept_in_use += 1;
            println!("sweep: keeping {} (in use: {owner})", dir.display());
            continue;
        }
        swept += 1;
        if dry_run {
            println!("sweep: would sweep {}", dir.display());
            continue;
        }
        let s = sweep_root(&dir, berth);
        println!("sweep: {}", dir.display());
        let show = |what: &str, list: &[String]| {
            for x in list {
                println!("  {what} {x}");
            }
        };
        show("killed", &s.killed);
        show("berth", &s.cli);
        show("unmounted", &s.unmounted);
        show("detached", &s.loops);
        show("removed cgroup", &s.cgroups);
        show("kept cgroup", &s.kept_cgroups);
        show("deleted nft", &s.tables);
        if let Some(why) = &s.kept {
            println!("  NOT removed: {why}");
        }
    }
    println!(
        "sweep: {swept} stale test root(s) {}, {kept_in_use} in use by running tests kept",
        if dry_run { "to sweep" } else { "swept" }
    );
    Ok(())
}

/// The test roots in the temp directory (only those in `only` when it is not empty).
fn test_root_dirs(only: &[PathBuf]) -> BTreeSet<PathBuf> {
    let tmp = std::env::temp_dir();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for base in [tmp.as_path(), Path::new("/tmp")] {
        let Ok(rd) = fs::read_dir(base) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if TEST_ROOT_PREFIXES.iter().any(|p| name.starts_with(p))
                && e.file_type().is_ok_and(|t| t.is_dir())
                && (only.is_empty() || only.iter().any(|o| *o == e.path()))
            {
                dirs.insert(e.path());
            }
        }
    }
    dirs
}

/// Who may still be using a root: its recorded owner if alive, else (no owner file)
/// any running cargo test binary that started before the root was made.
fn in_use(
    dir: &Path,
    made: SystemTime,
    procs: &[Proc],
    boot: Option<SystemTime>,
    ticks: u64,
) -> Option<String> {
    let started = |p: &Proc| -> Option<SystemTime> {
        Some(boot? + Duration::from_millis(p.start_ticks * 1000 / ticks.max(1)))
    };
    if let Ok(text) = fs::read_to_string(dir.join(OWNER_FILE)) {
        let mut w = text.split_whitespace();
        let pid: i32 = w.next()?.parse().ok()?;
        let start: u64 = w.next()?.parse().ok()?;
        return procs
            .iter()
            .find(|p| p.pid == pid && p.start_ticks == start)
            .map(|p| format!("owner pid {} `{}`", p.pid, p.cmdline));
    }
    procs
        .iter()
        .filter(|p| is_test_binary(p))
        .find(|p| started(p).is_none_or(|s| s <= made + Duration::from_secs(1)))
        .map(|p| {
            format!(
                "test process pid {} `{}` started before it",
                p.pid, p.cmdline
            )
        })
}

/// A cargo test binary: `target/<profile>/deps/<name>-<hash>`.
fn is_test_binary(p: &Proc) -> bool {
    p.paths.iter().any(|(k, v)| {
        *k == "exe"
            && Path::new(v)
                .parent()
                .is_some_and(|d| d.file_name().is_some_and(|n| n == "deps"))
    })
}

fn boot_time() -> Option<SystemTime> {
    let up: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    SystemTime::now().checked_sub(Duration::from_secs_f64(up))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Tears one stale root down: its processes, its engine objects (through `berth`
/// itself when the root has a database: containers, sandboxes, networks), mounts,
/// loop devices, cgroups and Service tables, then the directory.
fn sweep_root(dir: &Path, berth: Option<&Path>) -> Swept {
    let mut s = Swept::default();
    let prefix = format!("{}/", dir.display());
    let inside = |p: &str| p.starts_with(&prefix) || p == prefix.trim_end_matches('/');

    // 1. processes: containers (by their cgroups: a pivoted root does not show the
    //    path), monitors, serve, helpers
    let (names, cgroup_paths) = container_names(dir);
    let hex_ids: Vec<&String> = names
        .iter()
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let in_its_cgroup = |p: &Proc| {
        p.cgroups.iter().any(|cg| {
            hex_ids.iter().any(|id| {
                cg.ends_with(&format!("/berth-{id}")) || cg.ends_with(&format!("/berth/{id}"))
            }) || cgroup_paths.iter().any(|c| !c.is_empty() && cg == c)
        })
    };
    let mut killed_pids = BTreeSet::new();
    for p in proc_list() {
        if p.paths.iter().any(|(_, v)| inside(v))
            || p.cmdline.split_whitespace().any(&inside)
            || in_its_cgroup(&p)
        {
            // SAFETY: kill has no memory preconditions; the pid was just read from /proc.
            if unsafe { libc::kill(p.pid, libc::SIGKILL) } == 0 {
                killed_pids.insert(p.pid);
                s.killed.push(format!("pid {} `{}`", p.pid, p.cmdline));
            }
        }
    }
    if !s.killed.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
    }

    // 2. the engine's own teardown of what it made (veths, bridges, nft, sandboxes)
    for engine_root in engine_roots(dir) {
        match berth {
            Some(b) if b.is_file() => s.cli.extend(engine_teardown(b, &engine_root)),
            _ => s.cli.push(format!(
                "not run ({} not built): its bridge and nft table may stay",
                berth.map(|b| b.display().to_string()).unwrap_or_default()
            )),
        }
    }

    // 3. mounts, deepest first (MNT_DETACH: a busy one goes once unused)
    let mut ms: Vec<Mount> = mount_table()
        .into_iter()
        .filter(|m| inside(&m.point))
        .collect();
    ms.sort_by_key(|m| std::cmp::Reverse((m.point.len(), m.id)));
    for m in ms {
        let Ok(c) = std::ffi::CString::new(m.point.clone()) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            s.unmounted.push(format!("{} ({})", m.point, m.fstype));
        }
    }

    // 4. loop devices backed by its files
    for l in loop_devices(|b| inside(b)) {
        let dev = l.split_whitespace().next().unwrap_or_default().to_owned();
        if Command::new("losetup")
            .args(["-d", &dev])
            .status()
            .is_ok_and(|st| st.success())
        {
            s.loops.push(l);
        }
    }

    // 5. cgroups named after its containers (ids and cgroupsPath from its tree)
    for h in hierarchies() {
        let mut candidates: Vec<PathBuf> = Vec::new();
        for id in &names {
            candidates.push(h.join(format!("berth-{id}")));
            candidates.push(h.join("berth").join(id));
        }
        for p in &cgroup_paths {
            candidates.push(h.join(p.trim_start_matches('/')));
        }
        for c in candidates {
            if !c.is_dir() {
                continue;
            }
            // a short name (a runtime test's "c1") may be another root's live
            // container: only cgroups holding nothing but what was killed above go
            let foreign: Vec<i32> = cgroup_pids(&c)
                .into_iter()
                .filter(|p| !killed_pids.contains(p))
                .collect();
            if !foreign.is_empty() {
                s.kept_cgroups.push(format!(
                    "{} (it holds pids {foreign:?} not of this root)",
                    c.display()
                ));
            } else if remove_cgroup(&c) {
                s.cgroups.push(c.display().to_string());
            }
        }
    }

    // 6. Service tables naming it
    for t in nft_tables() {
        let Some((name, comment)) = t
            .strip_prefix("table ip ")
            .and_then(|r| r.split_once(" (berth services of "))
        else {
            continue;
        };
        if inside(comment.trim_end_matches(')'))
            && Command::new("nft")
                .args(["delete", "table", "ip", name])
                .status()
                .is_ok_and(|st| st.success())
        {
            s.tables.push(name.to_owned());
        }
    }

    // 7. the directory, unless something is still mounted under it (removing then
    //    would delete the mounted file system's contents)
    if mount_table().iter().any(|m| inside(&m.point)) {
        s.kept = Some("mounts remain under it".into());
    } else if let Err(e) = fs::remove_dir_all(dir) {
        s.kept = Some(format!("remove: {e}"));
    }
    s
}

/// The engine roots (directories holding `berth.db`) in a test root, with their state
/// directory: TestRoots' `root`/`state` pair.
fn engine_roots(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let root = dir.join("root");
    if root.join("berth.db").is_file() {
        out.push((root, dir.join("state")));
    }
    out
}

/// `berth rm -f` of every container, `network prune`, `network rm bridge`, each bounded
/// in time. Returns what it ran and how that ended.
fn engine_teardown(berth: &Path, (root, state): &(PathBuf, PathBuf)) -> Vec<String> {
    let run = |args: &[&str]| -> (bool, String) {
        let mut child = match Command::new(berth)
            .args(args)
            .env("BERTH_ROOT", root)
            .env("BERTH_STATE", state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return (false, e.to_string()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    let (mut out, mut err) = (String::new(), String::new());
                    if let Some(mut o) = child.stdout.take() {
                        let _ = std::io::Read::read_to_string(&mut o, &mut out);
                    }
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return (st.success(), if st.success() { out } else { err });
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (false, "timed out after 20s".into());
                }
            }
        }
    };
    let mut log = Vec::new();
    let (_, ids) = run(&["ps", "-aq", "--no-trunc"]);
    let ids: Vec<&str> = ids
        .split_whitespace()
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().copied());
        let (ok, err) = run(&args);
        log.push(format!(
            "rm -f {} container(s): {}",
            ids.len(),
            if ok {
                "ok".to_owned()
            } else {
                format!("failed: {}", err.trim())
            }
        ));
    }
    for args in [
        &["network", "prune", "-f"][..],
        &["network", "rm", "bridge"][..],
    ] {
        let (ok, _) = run(args);
        if ok {
            log.push(args.join(" "));
        }
    }
    log
}

/// Directory names in the root's tree (depth 4) that may be container ids, and the
/// `linux.cgroupsPath` of every config.json in it.
fn container_names(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut paths = BTreeSet::new();
    walk_names(dir, 0, &mut ids, &mut paths);
    (ids, paths)
}

fn walk_names(dir: &Path, depth: usize, ids: &mut BTreeSet<String>, paths: &mut BTreeSet<String>) {
    if depth > 4 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if t.is_dir() {
            // rootfs trees are the containers' files, not names
            if name == "rootfs" || name == "images" || name == "blobs" {
                continue;
            }
            ids.insert(name);
            walk_names(&e.path(), depth + 1, ids, paths);
        } else if t.is_file() && (name == "config.json" || name == "state.json") {
            let Ok(text) = fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(p) = v["linux"]["cgroupsPath"].as_str()
                && !p.is_empty()
                && !p.contains("..")
            {
                paths.insert(p.to_owned());
            }
        }
    }
}

/// The processes in a cgroup and its children.
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&e.path()));
            }
        }
    }
    pids
}

/// Removes a cgroup directory and its children (deepest first); true when it is gone.
fn remove_cgroup(dir: &Path) -> bool {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    // a frozen (v1 freezer) cgroup's killed processes cannot exit until thawed
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    for _ in 0..20 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berth_links_and_paths() {
        assert!(is_berth_link("berth1a2b3c4d"));
        assert!(is_berth_link("bbr-0011aabb"));
        assert!(is_berth_link("vb0123456789ab"));
        assert!(!is_berth_link("vbox0"));
        assert!(!is_berth_link("eth0"));
        assert!(is_berth_path("/tmp/berth-test-abc/root/overlay/x/merged"));
        assert!(is_berth_path("/run/user/23790/berth/x"));
        assert!(!is_berth_path("/tmp/other/berth-test-abc"));
        assert!(is_berth_cgroup("/berth-0123"));
        assert!(is_berth_cgroup("/berth/c1"));
        assert!(!is_berth_cgroup("/berth"));
        assert!(!is_berth_cgroup("/user.slice"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\\y"), r"/x\\y");
    }
}
