//! Harness for berth's end-to-end tests: the parts every root-needing test shares.
//!
//! - [`require_cmd`]: a prerequisite that is missing fails the test (never a silent skip).
//! - [`busybox_bundle`]: an OCI bundle whose rootfs is Debian's static busybox.
//! - [`bin_path`]: the workspace's own binaries, built by `cargo xtask test`.
//! - [`TestRoots`]: private berth roots per test, so tests run in parallel.
//! - [`LeakCheck`]: mounts, cgroups, network namespaces, links, nft rules, loop devices
//!   and processes left behind by a test.
//!
//! It does not start or fake any berth functionality itself.

pub mod fault_proxy;
pub mod registry;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Full path of a command on PATH; panics with a clear message if it is missing.
///
/// `cargo xtask test` installs every prerequisite, so a missing one is a broken
/// environment and the test must fail, not pass without testing anything.
pub fn require_cmd(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!("prerequisite missing: `{name}` is not on PATH (run `cargo xtask test`, which installs it)")
    })
}

/// Looks a command up on PATH (plus the sbin directories root usually has).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Panics unless the test runs as root; root-needing tests call this first.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it creates namespaces, mounts and cgroups)"
    );
}

/// Path of a binary of this workspace (`berth`, `berth-oci`), from the same target
/// directory and profile as the running test.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build --workspace --bins` (cargo xtask test does)",
        path.display()
    );
    path
}

/// A unique, short name for containers, networks or cgroups made by one test.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Fills `rootfs` with the busybox fixture tree (the same files as the fixture image:
/// Debian's static busybox, one symlink per applet, /etc/passwd, /etc/group, /tmp) plus
/// the empty directories runtimes and tests mount on.
pub fn busybox_rootfs(rootfs: &Path) -> Result<()> {
    let busybox = require_cmd("busybox");
    berth_image::fixtures::busybox_rootfs(rootfs, &busybox)
        .with_context(|| format!("writing a busybox rootfs into {}", rootfs.display()))?;
    for dir in ["home", "var", "run"] {
        fs::create_dir_all(rootfs.join(dir)).with_context(|| format!("mkdir {dir} in rootfs"))?;
    }
    Ok(())
}

/// The `config.json` of a busybox bundle: what `runc spec` writes, with `args`,
/// no terminal and a writable root, so runc and berth-oci get the same input.
pub fn default_config(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "berth",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Makes an OCI bundle in `dir` (created if needed): `rootfs/` from busybox and a
/// `config.json` running `args`. Returns the bundle directory.
pub fn busybox_bundle(dir: &Path, args: &[&str]) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating bundle dir {}", dir.display()))?;
    busybox_rootfs(&dir.join("rootfs"))?;
    write_config(dir, &default_config(args))?;
    Ok(dir.to_path_buf())
}

/// Writes `config` as the bundle's `config.json`.
pub fn write_config(bundle: &Path, config: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(config)?;
    fs::write(bundle.join("config.json"), text)
        .with_context(|| format!("writing {}/config.json", bundle.display()))
}

/// The file in a test root naming the test process that owns it (`PID STARTTIME`,
/// the start time as in `/proc/PID/stat`): `cargo xtask test` sweeps roots of killed
/// runs only when that process is gone.
pub const TEST_ROOT_OWNER_FILE: &str = ".berth-test-owner";

/// Records this process as the owner of the test root `dir` ([`TEST_ROOT_OWNER_FILE`]).
pub fn write_owner(dir: &Path) -> Result<()> {
    let stat = fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    // "pid (comm) S ppid ...": the start time is field 22, the 20th after the comm
    let start = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .context("no start time in /proc/self/stat")?;
    let path = dir.join(TEST_ROOT_OWNER_FILE);
    fs::write(&path, format!("{} {start}\n", std::process::id()))
        .with_context(|| format!("write {}", path.display()))
}

/// What a runtime state directory still holds, hidden entries (locks) aside: empty
/// once every container of a test is deleted. A missing directory holds nothing.
pub fn state_entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Private berth roots for one test: persistent root and runtime state, both removed
/// when dropped.
#[derive(Debug)]
pub struct TestRoots {
    dir: tempfile::TempDir,
    env: Vec<(String, std::ffi::OsString)>,
}

impl TestRoots {
    /// Makes fresh, empty roots.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir()?;
        write_owner(dir.path())?;
        fs::create_dir_all(dir.path().join("root"))?;
        fs::create_dir_all(dir.path().join("state"))?;
        Ok(Self {
            dir,
            env: Vec::new(),
        })
    }

    /// These roots, with `key=value` set on every berth command they make
    /// ([`TestRoots::berth`], [`TestRoots::output`], [`TestRoots::ok`]).
    pub fn with_env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// These roots, with a docker client config of their own (`DOCKER_CONFIG` in
    /// [`TestRoots::path`]`/docker`: credentials a test writes stay its own and the
    /// host's are never read) and this workspace's berth-oci as the runtime
    /// (`BERTH_RUNTIME`).
    pub fn with_own_config(self) -> Self {
        let docker = self.path().join("docker");
        self.with_env("DOCKER_CONFIG", docker)
            .with_env("BERTH_RUNTIME", bin_path("berth-oci"))
    }

    /// The temporary directory holding both roots (and room for bundles).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `--root` / `BERTH_ROOT`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `--state` / `BERTH_STATE`.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A `berth` command bound to these roots.
    pub fn berth(&self) -> Command {
        let mut cmd = Command::new(bin_path("berth"));
        cmd.env("BERTH_ROOT", self.root())
            .env("BERTH_STATE", self.state())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `berth ARGS` on these roots with stdin closed and returns what it did.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        self.berth()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running berth")
    }

    /// Runs `berth ARGS`, fails the test (with both streams) unless it succeeded, and
    /// returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.output(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed: {}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts `berth serve --interval INTERVAL` on these roots (see [`Serve::start`]).
    pub fn serve(&self, interval: &str) -> Result<Serve> {
        let mut cmd = self.berth();
        cmd.args(["serve", "--interval", interval]);
        Serve::start(cmd, &self.state())
    }

    /// Private roots holding the busybox fixture image as `busybox:latest`, and a leak
    /// check scoped to them: the start of most engine tests.
    pub fn with_busybox() -> (TestRoots, LeakCheck) {
        require_root();
        require_cmd("busybox");
        let roots = TestRoots::new().expect("making test roots");
        let store = berth_image::Store::open(&roots.root().join("images"))
            .expect("opening the test image store");
        berth_image::fixtures::busybox_image(&store, "busybox:latest")
            .expect("making the busybox image");
        let leaks = LeakCheck::new(&[roots.path().to_string_lossy().into_owned()]);
        (roots, leaks)
    }
}

/// A running `berth serve`: started by [`Serve::start`] (or [`TestRoots::serve`]), which
/// returns once it holds its lock (`apply` refuses until then), and stopped with
/// SIGTERM and reaped when dropped.
#[derive(Debug)]
pub struct Serve {
    child: Option<std::process::Child>,
}

impl Serve {
    /// Spawns `cmd` (a `berth serve` command line; output discarded) and waits, at most
    /// 10 s, until it holds the serve lock in the `state` directory. Fails if it exits
    /// or never takes the lock.
    pub fn start(mut cmd: Command, state: &Path) -> Result<Serve> {
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut serve = Serve { child: Some(child) };
        let lock = state.join("serve.lock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flock_held(&lock) {
            if let Some(status) = serve.child_mut().try_wait()? {
                bail!(
                    "berth serve exited ({status}) before taking {}",
                    lock.display()
                );
            }
            if Instant::now() >= deadline {
                bail!("berth serve did not take {} within 10 s", lock.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(serve)
    }

    /// The process id of serve.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Sends `signal` (SIGKILL for a crash, SIGTERM for a clean stop) and reaps it.
    pub fn stop(mut self, signal: nix::sys::signal::Signal) {
        self.signal_and_reap(signal);
    }

    /// The serve process itself, no longer stopped on drop (for a test that kills it
    /// at a moment of its own choosing).
    pub fn into_child(mut self) -> std::process::Child {
        self.child
            .take()
            .expect("serve child present until stopped")
    }

    fn child_mut(&mut self) -> &mut std::process::Child {
        self.child
            .as_mut()
            .expect("serve child present until stopped")
    }

    fn signal_and_reap(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.signal_and_reap(nix::sys::signal::Signal::SIGTERM);
    }
}

/// Whether some process holds a flock on `path`, read from /proc/locks: trying the lock
/// ourselves could make a serve starting at that moment refuse as a second one.
fn flock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let id = format!("{major:02x}:{minor:02x}:{ino}");
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF": device:inode is field 5
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str())
        })
}

impl Drop for TestRoots {
    /// A root's default bridge outlives its containers (like docker0); take it down
    /// with the root so no test leaves a bridge or its nft table behind.
    fn drop(&mut self) {
        if self.root().join("berth.db").exists() {
            // a test that failed midway leaves its containers running: remove them
            // (a passing test removed its own, as its leak check proved)
            if std::thread::panicking() {
                let ids = self.output(&["ps", "-aq", "--no-trunc"]);
                for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                    let _ = self.output(&["rm", "-f", id]);
                }
            }
            // sandboxes (pods) first: their endpoints keep a network in use
            let _ = self
                .berth()
                .args(["network", "prune", "-f"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = self
                .berth()
                .args(["network", "rm", "bridge"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// What the host looks like, limited to things whose description contains one of the
/// test's markers (its temp dir, container ids, names): tests run in parallel, so a
/// global diff would blame one test for another's work in progress.
#[derive(Debug, Default, PartialEq, Eq)]
struct HostSnapshot {
    mounts: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    netns: BTreeSet<String>,
    links: BTreeSet<String>,
    nft: BTreeSet<String>,
    processes: BTreeSet<String>,
    loops: BTreeSet<String>,
}

/// Finds what a test left behind: mounts, cgroup directories, named network namespaces,
/// network links, nft rules and processes that mention the test's markers.
///
/// Make it before the test acts, with every marker the test's objects carry (the temp
/// dir path, container ids); call [`LeakCheck::assert_clean`] at the end.
#[derive(Debug)]
pub struct LeakCheck {
    markers: Vec<String>,
    before: HostSnapshot,
}

impl LeakCheck {
    /// Snapshots the host now, scoped to `markers` (must be non-empty strings).
    pub fn new<S: AsRef<str>>(markers: &[S]) -> Self {
        let markers: Vec<String> = markers.iter().map(|m| m.as_ref().to_owned()).collect();
        assert!(
            !markers.is_empty() && markers.iter().all(|m| m.len() >= 3),
            "leak check needs specific markers, got {markers:?}"
        );
        let before = snapshot(&markers);
        Self { markers, before }
    }

    /// Adds a marker learnt after the check was made (say, a generated container id).
    pub fn add_marker(&mut self, marker: impl Into<String>) {
        self.markers.push(marker.into());
    }

    /// What exists now that did not exist before, one line per leaked thing.
    pub fn leaks(&self) -> Vec<String> {
        let now = snapshot(&self.markers);
        let mut leaks = Vec::new();
        let mut diff = |kind: &str, before: &BTreeSet<String>, after: &BTreeSet<String>| {
            leaks.extend(
                after
                    .difference(before)
                    .map(|item| format!("{kind}: {item}")),
            );
        };
        diff("mount", &self.before.mounts, &now.mounts);
        diff("cgroup", &self.before.cgroups, &now.cgroups);
        diff("netns", &self.before.netns, &now.netns);
        diff("link", &self.before.links, &now.links);
        diff("nft", &self.before.nft, &now.nft);
        diff("process", &self.before.processes, &now.processes);
        diff("loop device", &self.before.loops, &now.loops);
        leaks
    }

    /// Panics listing everything left behind. Processes get a short grace period to
    /// finish exiting (a killed container's init may still be reaped by its parent).
    pub fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("left behind by the test:\n  {}", leaks.join("\n  "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn mentions(text: &str, markers: &[String]) -> bool {
    markers.iter().any(|m| text.contains(m.as_str()))
}

fn snapshot(markers: &[String]) -> HostSnapshot {
    HostSnapshot {
        mounts: scoped_mounts(markers),
        cgroups: scoped_cgroups(markers),
        netns: scoped_dir_entries(Path::new("/run/netns"), markers),
        links: command_lines("ip", &["-o", "link", "show"], markers),
        nft: command_lines("nft", &["list", "ruleset"], markers),
        processes: scoped_processes(markers),
        loops: scoped_loop_devices(markers),
    }
}

/// Loop devices whose backing file mentions a marker (`losetup -l` reads the same
/// `/sys/block/loopN/loop/backing_file`).
fn scoped_loop_devices(markers: &[String]) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let desc = format!("/dev/{name} backed by {}", backing.trim());
            mentions(&desc, markers).then_some(desc)
        })
        .collect()
}

fn scoped_mounts(markers: &[String]) -> BTreeSet<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // fields: id parent major:minor root mountpoint options ... - fstype source
            let mut fields = line.split_whitespace();
            let root = fields.nth(3)?;
            let mountpoint = fields.next()?;
            let fstype = line.split(" - ").nth(1)?.split_whitespace().next()?;
            let desc = format!("{mountpoint} ({fstype}, root {root})");
            mentions(&desc, markers).then_some(desc)
        })
        .collect()
}

fn scoped_cgroups(markers: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for hierarchy in hierarchies.flatten() {
        walk_cgroups(&hierarchy.path(), 0, markers, &mut found);
    }
    found
}

fn walk_cgroups(dir: &Path, depth: usize, markers: &[String], found: &mut BTreeSet<String>) {
    // containers sit a few levels down at most; bounded so a deep host tree stays cheap
    if depth > 4 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        let text = path.display().to_string();
        if mentions(&text, markers) {
            found.insert(text);
        }
        walk_cgroups(&path, depth + 1, markers, found);
    }
}

fn scoped_dir_entries(dir: &Path, markers: &[String]) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| mentions(name, markers))
                .collect()
        })
        .unwrap_or_default()
}

fn command_lines(program: &str, args: &[&str], markers: &[String]) -> BTreeSet<String> {
    let Some(path) = which(program) else {
        return BTreeSet::new();
    };
    Command::new(path)
        .args(args)
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|line| mentions(line, markers))
                .map(|line| line.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn scoped_processes(markers: &[String]) -> BTreeSet<String> {
    let me = std::process::id().to_string();
    let mut found = BTreeSet::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let proc_dir = entry.path();
        let status = fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
        // zombies hold nothing but a pid; their parent reaps them
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            continue;
        }
        let cmdline = fs::read(proc_dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let root = fs::read_link(proc_dir.join("root")).unwrap_or_default();
        let cwd = fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
        let desc = format!(
            "pid {pid}: {} (root {}, cwd {})",
            cmdline.trim(),
            root.display(),
            cwd.display()
        );
        if mentions(&desc, markers) {
            found.insert(desc);
        }
    }
    found
}

/// `GET path` over HTTP/1.0 from `addr`, retried (each try bounded to 2.5 s) for at most
/// `wait`: the whole response, or the last error.
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    wait: Duration,
) -> std::result::Result<String, String> {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + wait;
    let mut last = String::new();
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).and_then(
            |mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            },
        ) {
            Ok(text) if text.starts_with("HTTP/1") => return Ok(text),
            Ok(text) => last = format!("not HTTP: {text:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("GET http://{addr}{path} failed: {last}"))
}

/// What a finished command printed, stdout then stderr, as one text (for assertions
/// on what a user saw, and failure messages).
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command to completion and returns its stdout, failing with its stderr.
pub fn run_ok<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = program.as_ref();
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new(program)
        .args(&args)
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed ({}): {}",
            program.to_string_lossy(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Environment variable naming a directory where tests write figures (what `cargo xtask
/// test` prints as a table after the tests).
pub const FIGURES_ENV: &str = "BERTH_TEST_FIGURES";

/// Records a figure of the test run (say, `crash.pull.runs`, 50, `runs`): printed to
/// stderr, and appended as one JSON line `{"name","value","unit"}` to a file in
/// `$BERTH_TEST_FIGURES` when set.
pub fn figure(name: &str, value: f64, unit: &str) {
    eprintln!("figure: {name} = {value} {unit}");
    let Some(dir) = std::env::var_os(FIGURES_ENV) else {
        return;
    };
    let line = serde_json::json!({ "name": name, "value": value, "unit": unit }).to_string();
    let _ = fs::create_dir_all(&dir);
    // one file per test process: appends of one short line never interleave
    let path = Path::new(&dir).join(format!("{}.jsonl", std::process::id()));
    let _ = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
}

/// A small seeded generator (xorshift64) for tests that pick random points (kill
/// delays, faults). The seed comes from `BERTH_TEST_SEED` when set, else from the clock,
/// and is printed so a failing run can be replayed exactly.
#[derive(Debug, Clone)]
pub struct SeededRng {
    seed: u64,
    state: u64,
}

impl SeededRng {
    /// A generator seeded from `BERTH_TEST_SEED` or the clock; prints the seed with `what`.
    pub fn from_env(what: &str) -> Self {
        let seed = std::env::var("BERTH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{what}: seed {seed} (BERTH_TEST_SEED={seed} replays it)");
        Self::new(seed)
    }

    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            state: seed | 1,
        }
    }

    /// The seed it started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A value in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// A count a heavy test repeats, from the environment variable `var` when set (e.g.
/// `BERTH_CRASH_RUNS=50` for the full run the issue asks), else `default` (what fits
/// CI's time budget).
pub fn count_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
