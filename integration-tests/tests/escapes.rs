//! Secure defaults and escape regressions (issue 9): every test attacks from inside a
//! container started the way users start them (`berth run`/`exec`, or berth-oci with a
//! bundle where that is the path an engine uses) and asserts both that the attack was
//! really attempted (the syscall was made, the file exists on the host) and that it
//! failed (EPERM/EROFS/EACCES, the host file unchanged, no marker on the host).
//!
//! The attacker is `fixtures/escape-probe.c`, compiled static with gcc at test time
//! and bind-mounted into the container at /probe.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use integration_tests::{
    LeakCheck, TestRoots, bin_path, busybox_bundle, require_cmd, require_root, unique_id,
    write_config,
};

const EPERM: i32 = libc::EPERM;
const EACCES: i32 = libc::EACCES;
const EROFS: i32 = libc::EROFS;

/// The static attacker binary, compiled once per test binary into cargo's tmp dir.
fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let gcc = require_cmd("gcc");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/escape-probe.c");
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
            std::fs::create_dir_all(dir).unwrap();
            let fin = dir.join("escape-probe");
            let fresh = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
            if fresh(&fin).is_some() && fresh(&fin) >= fresh(&src) {
                return fin;
            }
            let out = dir.join(format!("escape-probe-{}", std::process::id()));
            let o = Command::new(gcc)
                .args(["-static", "-O1", "-Wall", "-o"])
                .arg(&out)
                .arg(&src)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "gcc -static escape-probe.c failed (needs gcc and libc6-dev): {}",
                text(&o.stderr)
            );
            std::fs::rename(&out, &fin).unwrap();
            fin
        })
        .clone()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `what=errno` lines of the probe's output.
fn errnos(out: &str) -> BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

fn errno_of(map: &BTreeMap<String, i32>, what: &str, out: &str) -> i32 {
    *map.get(what)
        .unwrap_or_else(|| panic!("probe printed no {what}=: {out}"))
}

fn setup() -> (TestRoots, LeakCheck) {
    TestRoots::with_busybox()
}

fn berth(roots: &TestRoots, args: &[&str]) -> Output {
    roots.output(args)
}

fn ok(roots: &TestRoots, args: &[&str]) -> String {
    let o = berth(roots, args);
    assert!(
        o.status.success(),
        "berth {args:?} failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// `-v PROBE:/probe:ro`, the way a user hands a binary to a container.
fn probe_mount() -> String {
    format!("{}:/probe:ro", probe().display())
}

/// `berth run --rm --network none [flags] busybox ARGS`, stdout on success.
fn run(roots: &TestRoots, flags: &[&str], args: &[&str]) -> String {
    let pm = probe_mount();
    let mut a = vec!["run", "--rm", "--network", "none", "-v", &pm];
    a.extend_from_slice(flags);
    a.push("busybox");
    a.extend_from_slice(args);
    ok(roots, &a)
}

/// `berth run -d` of a long sleeper with the probe, returns its name.
fn run_detached(roots: &TestRoots, flags: &[&str], args: &[&str]) -> String {
    let name = unique_id("esc");
    let pm = probe_mount();
    let mut a = vec!["run", "-d", "--name", &name, "--network", "none", "-v", &pm];
    a.extend_from_slice(flags);
    a.push("busybox");
    a.extend_from_slice(args);
    ok(roots, &a);
    name
}

fn inspect_state(roots: &TestRoots, name: &str) -> String {
    ok(roots, &["inspect", "-f", "{{.State.Status}}", name])
        .trim()
        .to_string()
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status: {status}"))
        .trim()
        .to_string()
}

fn sha256(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &data)
        .as_ref()
        .to_vec()
}

/// docker's 14 default capabilities as a CapEff mask.
fn docker_default_caps() -> u64 {
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
    // NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
    [0u32, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]
        .iter()
        .fold(0u64, |m, c| m | 1 << c)
}

// ---------------------------------------------------------------------------
// Secure defaults
// ---------------------------------------------------------------------------

/// CapEff/CapPrm/CapBnd are docker's 14, CapInh and CapAmb empty (CVE-2022-29162) for
/// the init and for an exec'd process; seccomp is in filter mode; no_new_privs is off
/// by default and on with `--security-opt no-new-privileges`; `berth info` says so.
#[test]
fn defaults_capabilities_seccomp_no_new_privs() {
    let (roots, leak) = setup();
    let want = format!("{:016x}", docker_default_caps());
    let name = run_detached(&roots, &[], &["sleep", "60"]);
    let init = ok(&roots, &["exec", &name, "cat", "/proc/1/status"]);
    let exec = ok(&roots, &["exec", &name, "cat", "/proc/self/status"]);
    for (who, st) in [("init", &init), ("exec", &exec)] {
        for f in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(status_field(st, f), want, "{who} {f}");
        }
        assert_eq!(status_field(st, "CapInh"), "0000000000000000", "{who}");
        assert_eq!(status_field(st, "CapAmb"), "0000000000000000", "{who}");
        assert_eq!(status_field(st, "Seccomp"), "2", "{who}");
        assert_eq!(status_field(st, "NoNewPrivs"), "0", "{who}");
    }
    ok(&roots, &["rm", "-f", &name]);
    let st = run(
        &roots,
        &["--security-opt", "no-new-privileges"],
        &["cat", "/proc/self/status"],
    );
    assert_eq!(status_field(&st, "NoNewPrivs"), "1");
    assert_eq!(status_field(&st, "CapEff"), want);
    // berth info states the defaults in force, and they are the ones above
    let info = ok(&roots, &["info"]);
    assert!(info.contains("seccomp"), "{info}");
    for cap in ["CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"] {
        assert!(info.contains(cap), "berth info misses {cap}: {info}");
    }
    for cap in [
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
        "CAP_NET_ADMIN",
    ] {
        assert!(!info.contains(cap), "berth info lists {cap}: {info}");
    }
    leak.assert_clean();
}

/// The default seccomp profile answers EPERM to every class docker's blocks, while the
/// calls a program needs work. The unconfined control proves the probe's calls reach
/// the kernel (they do not fail with EPERM there), so the EPERM comes from the filter.
#[test]
fn default_seccomp_blocks_dangerous_syscalls() {
    let (roots, leak) = setup();
    let out = run(&roots, &[], &["/probe", "blocked"]);
    let got = errnos(&out);
    for what in [
        "unshare_user",
        "keyctl",
        "add_key",
        "userfaultfd",
        "perf_event_open",
        "clock_settime",
        "settimeofday",
        "personality",
        "unshare_mnt",
        "unshare_net",
        "mount",
        "setns",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "reboot",
        "swapon",
        "swapoff",
        "quotactl",
        "acct",
        "pivot_root",
        "open_by_handle_at",
    ] {
        assert_eq!(
            errno_of(&got, what, &out),
            EPERM,
            "{what} not blocked: {out}"
        );
    }
    let out = run(&roots, &[], &["/probe", "allowed"]);
    for (what, e) in errnos(&out) {
        assert_eq!(e, 0, "{what} fails under the default profile: {out}");
    }
    let out = run(
        &roots,
        &["--security-opt", "seccomp=unconfined"],
        &["/probe", "blocked-unprivileged"],
    );
    let got = errnos(&out);
    assert_eq!(got.len(), 8, "{out}");
    for (what, e) in got {
        assert_ne!(e, EPERM, "{what}: EPERM even without seccomp: {out}");
    }
    leak.assert_clean();
}

/// Masked paths read as empty, and /proc/sys, /proc/sysrq-trigger, /proc/irq are
/// read-only (opened for writing: EROFS; the probe never writes).
#[test]
fn masked_and_read_only_proc_and_sys() {
    let (roots, leak) = setup();
    let out = run(
        &roots,
        &[],
        &[
            "/probe",
            "read",
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sys/kernel/core_pattern",
        ],
    );
    // this kernel has no /proc/kcore; what exists must read as empty (and be readable:
    // a failed open is no proof of a mask)
    let mut checked = 0;
    for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if !Path::new(p).exists() {
            continue;
        }
        let line = out.lines().find(|l| l.starts_with(p)).unwrap();
        assert_eq!(line, format!("{p}=0 bytes=0"), "{p} not masked");
        checked += 1;
    }
    assert!(checked >= 2, "no masked path to check on this host");
    // the control: an unmasked file reads non-empty through the same probe
    assert!(
        !out.contains("/proc/sys/kernel/core_pattern=0 bytes=0")
            && out.contains("/proc/sys/kernel/core_pattern=0"),
        "{out}"
    );
    let host_firmware = std::fs::read_dir("/sys/firmware").unwrap().count();
    assert!(host_firmware > 0, "host /sys/firmware is empty: no control");
    let ls = run(&roots, &[], &["ls", "-A", "/sys/firmware"]);
    assert_eq!(ls.trim(), "", "/sys/firmware not masked");
    let paths = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches",
        "/proc/sysrq-trigger",
        "/proc/irq/default_smp_affinity",
        "/proc/bus/pci/devices",
    ];
    let core_before = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
    let mut args = vec!["/probe", "open-w"];
    args.extend(paths.iter().filter(|p| Path::new(p).exists()));
    let out = run(&roots, &[], &args);
    let got = errnos(&out);
    for p in &args[2..] {
        assert_eq!(errno_of(&got, p, &out), EROFS, "{p} writable: {out}");
    }
    assert_eq!(
        std::fs::read("/proc/sys/kernel/core_pattern").unwrap(),
        core_before
    );
    leak.assert_clean();
}

// ---------------------------------------------------------------------------
// Escapes
// ---------------------------------------------------------------------------

/// Host cgroup files (the container's own cgroup, the v1 hierarchies, the cgroup2
/// mount) and /proc/sys cannot be opened for writing; mounting a cgroup hierarchy to
/// reach release_agent is refused.
#[test]
fn host_cgroup_and_proc_sys_not_writable() {
    let (roots, leak) = setup();
    let listing = run(
        &roots,
        &[],
        &[
            "sh",
            "-c",
            "find /sys/fs/cgroup -maxdepth 2 -type f \\( -name cgroup.procs -o -name 'memory.limit_in_bytes' -o -name 'pids.max' -o -name 'devices.allow' -o -name release_agent -o -name notify_on_release \\)",
        ],
    );
    let mut files: Vec<&str> = listing.lines().collect();
    assert!(
        files.iter().any(|f| f.ends_with("cgroup.procs")),
        "no cgroup files visible in the container, nothing attacked: {listing}"
    );
    files.push("/proc/sys/kernel/core_pattern");
    files.push("/proc/sys/net/ipv4/ip_forward");
    let mut args = vec!["/probe", "open-w"];
    args.extend(files.iter().copied());
    let out = run(&roots, &[], &args);
    let got = errnos(&out);
    for f in &files {
        let e = errno_of(&got, f, &out);
        assert!(
            e == EROFS || e == EACCES || e == EPERM,
            "{f} opened for writing (errno {e}): {out}"
        );
    }
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && echo MOUNTED",
        ],
    );
    assert!(!o.status.success() && !text(&o.stdout).contains("MOUNTED"));
    leak.assert_clean();
}

/// The host's block device (the one holding /) made with mknod inside: docker allows
/// the mknod (CAP_MKNOD) but the device cgroup refuses the open; without CAP_MKNOD the
/// mknod itself fails.
#[test]
fn mknod_of_host_block_device_cannot_be_opened() {
    let (roots, leak) = setup();
    let (maj, min) = host_block_device();
    let (maj, min) = (maj.to_string(), min.to_string());
    let out = run(&roots, &[], &["/probe", "mknod", "/tmp/disk", &maj, &min]);
    let got = errnos(&out);
    assert_eq!(errno_of(&got, "mknod", &out), 0, "{out}");
    assert_eq!(errno_of(&got, "open", &out), EPERM, "{out}");
    let out = run(
        &roots,
        &["--cap-drop", "MKNOD"],
        &["/probe", "mknod", "/tmp/disk", &maj, &min],
    );
    assert_eq!(errno_of(&errnos(&out), "mknod", &out), EPERM, "{out}");
    leak.assert_clean();
}

/// major:minor of a real block device on the host (that of /, else the first disk).
fn host_block_device() -> (u32, u32) {
    let dev = std::fs::metadata("/").unwrap().dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    if maj != 0 {
        return (maj, min);
    }
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("dev"))
            && let Some((a, b)) = s.trim().split_once(':')
            && !e.file_name().to_string_lossy().starts_with("loop")
        {
            return (a.parse().unwrap(), b.parse().unwrap());
        }
    }
    panic!("no block device on the host to attack");
}

/// Raw and packet sockets need CAP_NET_RAW (in docker's default set, so the default
/// run is the control); mount needs CAP_SYS_ADMIN, which a container lacks.
#[test]
fn raw_sockets_and_mount_without_capability() {
    let (roots, leak) = setup();
    let out = run(&roots, &[], &["/probe", "rawsock"]);
    assert_eq!(errno_of(&errnos(&out), "raw_socket", &out), 0, "{out}");
    let out = run(&roots, &["--cap-drop", "NET_RAW"], &["/probe", "rawsock"]);
    let got = errnos(&out);
    assert_eq!(errno_of(&got, "raw_socket", &out), EPERM, "{out}");
    assert_eq!(errno_of(&got, "packet_socket", &out), EPERM, "{out}");
    // with seccomp out of the way the capability checks alone refuse mounts, new
    // namespaces and the other privileged calls
    let out = run(
        &roots,
        &["--security-opt", "seccomp=unconfined"],
        &["/probe", "blocked"],
    );
    let got = errnos(&out);
    for what in [
        "mount",
        "unshare_mnt",
        "unshare_net",
        "setns",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
    ] {
        assert_eq!(errno_of(&got, what, &out), EPERM, "{what}: {out}");
    }
    leak.assert_clean();
}

// ---------------------------------------------------------------------------
// The runtime's own process and binary (berth-oci with a bundle, as engines use it)
// ---------------------------------------------------------------------------

/// A busybox bundle with the probe at /probe and `#!/proc/self/exe` at /evil, and a
/// private berth-oci root; removes what it made.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new(args: &[&str]) -> Bundle {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-esc-")
            .tempdir()
            .unwrap();
        let b = busybox_bundle(&dir.path().join("bundle"), args).unwrap();
        std::fs::copy(probe(), b.join("rootfs/probe")).unwrap();
        std::fs::write(b.join("rootfs/evil"), "#!/proc/self/exe\n").unwrap();
        std::fs::set_permissions(
            b.join("rootfs/evil"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Bundle {
            dir,
            id: unique_id("esc"),
        }
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn config(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.bundle().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        write_config(&self.bundle(), &v).unwrap();
    }

    fn oci(&self) -> Command {
        let mut c = Command::new(bin_path("berth-oci"));
        c.arg("--root").arg(self.dir.path().join("root"));
        c
    }

    /// Runs a verb to completion with its output captured.
    fn out(&self, args: &[&str]) -> Output {
        self.oci().args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a verb that leaves a process behind, its stdout and stderr going to
    /// `log` (appended), and asserts it succeeded.
    fn bg(&self, args: &[&str], log: &Path) {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let st = self
            .oci()
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "berth-oci {args:?}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    fn create(&self, log: &Path) {
        let b = self.bundle();
        self.bg(&["create", "--bundle", b.to_str().unwrap(), &self.id], log);
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.out(&["delete", "--force", &self.id]);
    }
}

fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(needle) || Instant::now() > end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The runtime's init, waiting in the container between create and start, is not
/// dumpable: a process exec'd into the container cannot open its /proc/1/exe (the
/// CVE-2019-5736 handle) or environ, nor ptrace it. After start, pid 1 is the user's
/// program and the same probe opens its exe: the control that the probe works.
#[test]
fn runtime_init_not_dumpable_nor_ptraceable() {
    let b = Bundle::new(&["sleep", "30"]);
    let leak = LeakCheck::new(&[b.marker(), b.id.clone()]);
    let log = b.dir.path().join("log");
    b.create(&log);
    let o = b.out(&["exec", &b.id, "/probe", "trace", "1"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    let got = errnos(&out);
    assert_eq!(errno_of(&got, "open_exe", &out), EACCES, "{out}");
    assert_eq!(errno_of(&got, "readlink_exe", &out), EACCES, "{out}");
    assert_eq!(errno_of(&got, "open_environ", &out), EACCES, "{out}");
    assert_eq!(errno_of(&got, "ptrace_attach", &out), EPERM, "{out}");
    let o = b.out(&["start", &b.id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = b.out(&["exec", &b.id, "/probe", "trace", "1"]);
    let out = text(&o.stdout);
    assert_eq!(errno_of(&errnos(&out), "open_exe", &out), 0, "{out}");
    let o = b.out(&["delete", "--force", &b.id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    leak.assert_clean();
}

/// Checks the outcome of a CVE-2019-5736 attack: `attempt` is how the runtime
/// answered the request to run `#!/proc/self/exe` (this kernel refuses to run the
/// runtime's protected binary that way: "no such file or directory"); if it did run,
/// the watcher's lines say whether the binary could be reopened for writing (a sealed
/// copy may be; the host's inode never). The host binary must be unchanged.
fn assert_exe_attack_failed(attempt: &Output, watch: &str, host_bin: &Path, sha_before: &[u8]) {
    let m = host_bin.metadata().unwrap();
    let host = format!("dev={} ino={}", m.dev(), m.ino());
    let caught: Vec<&str> = watch
        .lines()
        .filter(|l| l.starts_with("write ") && !l.starts_with("write /probe-copy"))
        .collect();
    if caught.is_empty() {
        assert!(
            !attempt.status.success()
                && text(&attempt.stderr).contains("\"/evil\": no such file or directory"),
            "the runtime ran /evil but the watcher never caught it: {}\n{watch}",
            text(&attempt.stderr)
        );
    }
    for line in caught {
        let e: i32 = line
            .split_once('=')
            .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert!(
            (e == 0 && !line.contains(&host)) || [EROFS, EPERM, EACCES].contains(&e),
            "the runtime's binary was opened for writing: {line}\n{watch}"
        );
    }
    assert_eq!(sha256(host_bin), sha_before, "host runtime binary changed");
}

/// The control of the watcher: a non-busybox binary exec'd into the container (a copy
/// of the probe) is caught and its exe opened.
fn assert_watcher_caught_control(watch: &str) {
    assert!(
        watch.lines().any(|l| l.starts_with("write /probe-copy=")),
        "the watcher did not catch the control binary: {watch}"
    );
}

/// CVE-2019-5736 through `berth exec`: the container writes `#!/proc/self/exe` to
/// /evil and a user runs `berth exec CTR /evil`, so the runtime's exec'd process would
/// become the runtime's binary inside the container; the attacker (pid 1) watches for
/// it and tries to reopen its exe for writing.
#[test]
fn proc_self_exe_overwrite_from_exec() {
    let (roots, mut leak) = setup();
    let host_bin = bin_path("berth-oci");
    let before = sha256(&host_bin);
    let name = run_detached(&roots, &[], &["/probe", "exe-watch", "20"]);
    leak.add_marker(name.clone());
    ok(
        &roots,
        &[
            "exec",
            &name,
            "sh",
            "-c",
            "printf '#!/proc/self/exe\\n' > /evil && chmod 755 /evil && cp /probe /probe-copy",
        ],
    );
    let attempt = berth(&roots, &["exec", &name, "/evil"]);
    ok(&roots, &["exec", &name, "/probe-copy", "exe-watch", "1"]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut watch = String::new();
    while Instant::now() < end && !watch.contains("write /probe-copy") {
        std::thread::sleep(Duration::from_millis(50));
        watch = ok(&roots, &["logs", &name]);
    }
    assert_watcher_caught_control(&watch);
    assert_exe_attack_failed(&attempt, &watch, &host_bin, &before);
    ok(&roots, &["rm", "-f", &name]);
    leak.assert_clean();
}

/// CVE-2019-5736 from the init: the container's entrypoint is `#!/proc/self/exe`, so
/// the runtime's init would exec the runtime's binary as pid 1; an attacker exec'd
/// into the container before start sees the waiting init hidden (not dumpable) and
/// watches for the binary.
#[test]
fn proc_self_exe_overwrite_from_init() {
    let b = Bundle::new(&["/evil"]);
    let leak = LeakCheck::new(&[b.marker(), b.id.clone()]);
    let host_bin = bin_path("berth-oci");
    let before = sha256(&host_bin);
    let log = b.dir.path().join("log");
    let watch = b.dir.path().join("watch");
    b.create(&log);
    b.bg(
        &["exec", "--detach", &b.id, "/probe", "exe-watch", "10"],
        &watch,
    );
    let seen = wait_for_text(&watch, "hidden 1=", Duration::from_secs(10));
    assert!(
        seen.contains(&format!("hidden 1={EACCES}")),
        "the waiting init was not hidden: {seen}"
    );
    let attempt = b.out(&["start", &b.id]);
    std::thread::sleep(Duration::from_millis(300));
    let out = std::fs::read_to_string(&watch).unwrap();
    assert_exe_attack_failed(&attempt, &out, &host_bin, &before);
    let o = b.out(&["delete", "--force", &b.id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    leak.assert_clean();
}

/// Open descriptors of a container process other than 0, 1 and 2 (the probe's own
/// /proc/self/fd listing excluded), with their targets.
fn extra_fds(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("fd "))
        .filter(|l| !["0 ", "1 ", "2 "].iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// CVE-2024-21626: no host descriptor leaks into the container's init or an exec'd
/// process, and a working directory of /proc/self/fd/N (the runc exploit) never
/// lands on a host directory: either the start fails or the process is inside and
/// cannot climb to a host file.
#[test]
fn no_leaked_fds_or_host_working_directory() {
    let (roots, mut leak) = setup();
    let secret = roots.path().join("host-secret");
    std::fs::write(&secret, "host only").unwrap();
    let secret = secret.to_str().unwrap().to_string();
    let out = run(&roots, &[], &["/probe", "fds"]);
    assert!(out.contains("cwd -> /\n"), "{out}");
    assert_eq!(extra_fds(&out), Vec::<String>::new(), "init: {out}");
    let name = run_detached(&roots, &[], &["sleep", "60"]);
    leak.add_marker(name.clone());
    let out = ok(&roots, &["exec", &name, "/probe", "fds"]);
    assert_eq!(extra_fds(&out), Vec::<String>::new(), "exec: {out}");
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        for how in ["exec", "run"] {
            let pm = probe_mount();
            let o = if how == "exec" {
                berth(
                    &roots,
                    &["exec", "-w", &cwd, &name, "/probe", "climb", &secret],
                )
            } else {
                berth(
                    &roots,
                    &[
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        "-v",
                        &pm,
                        "-w",
                        &cwd,
                        "busybox",
                        "/probe",
                        "climb",
                        &secret,
                    ],
                )
            };
            let out = text(&o.stdout);
            if o.status.success() {
                assert_ne!(
                    errno_of(&errnos(&out), "climb", &out),
                    0,
                    "{how} -w {cwd} reached the host file {secret}"
                );
            }
        }
    }
    ok(&roots, &["rm", "-f", &name]);
    // the runtime path engines use: config.json's cwd
    let b = Bundle::new(&["/probe", "fds"]);
    let bundle = b.bundle().display().to_string();
    let o = b.out(&["run", "--bundle", &bundle, &b.id]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert_eq!(
        extra_fds(&out),
        Vec::<String>::new(),
        "berth-oci run: {out}"
    );
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        b.config(|v| {
            v["process"]["cwd"] = cwd.clone().into();
            v["process"]["args"] = serde_json::json!(["/probe", "climb", secret]);
        });
        let o = b.out(&["run", "--bundle", &bundle, &format!("{}-{n}", b.id)]);
        let out = text(&o.stdout);
        if o.status.success() {
            assert_ne!(
                errno_of(&errnos(&out), "climb", &out),
                0,
                "berth-oci run with cwd {cwd} reached the host file"
            );
        }
        let _ = b.out(&["delete", "--force", &format!("{}-{n}", b.id)]);
    }
    drop(b);
    leak.assert_clean();
}

// ---------------------------------------------------------------------------
// Crafted images
// ---------------------------------------------------------------------------

/// One entry of a hand-made tar: the tar crate refuses to write the hostile names.
struct RawEntry<'a> {
    kind: u8,
    name: &'a str,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        kind: b'0',
        name,
        link: "",
        data,
    }
}

fn symlink_entry<'a>(name: &'a str, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        kind: b'2',
        name,
        link: target,
        data: b"",
    }
}

fn hardlink_entry<'a>(name: &'a str, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        kind: b'1',
        name,
        link: target,
        data: b"",
    }
}

/// A ustar archive of `entries`, names written byte for byte.
fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        assert!(e.name.len() < 100 && e.link.len() < 100, "{}", e.name);
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        let mode = if e.kind == b'5' { 0o755 } else { 0o644 };
        h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", e.data.len()).as_bytes());
        h[136..148].copy_from_slice(format!("{:011o}\0", 946_684_800).as_bytes());
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The busybox rootfs as an uncompressed layer.
fn busybox_layer(dir: &Path) -> Vec<u8> {
    let rootfs = dir.join("busybox-rootfs");
    integration_tests::busybox_rootfs(&rootfs).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &rootfs).unwrap();
    b.into_inner().unwrap()
}

/// Tags `tag` in the roots' store: busybox plus one crafted layer on top.
fn crafted_image(roots: &TestRoots, tag: &str, base: &[u8], entries: &[RawEntry]) {
    let store = berth_image::Store::open(&roots.root().join("images")).unwrap();
    berth_image::fixtures::image_from_layers(
        &store,
        tag,
        &[base.to_vec(), raw_tar(entries)],
        &["sh"],
    )
    .unwrap();
}

/// Everything under `dir` (names relative to it), to compare before and after.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// CVE-2021-30465 class: the image makes a volume's target a symlink pointing out of
/// the rootfs (absolute and `../` forms); binds, tmpfs and a named volume (filled from
/// the image) must all land inside the container's root, and the host directory the
/// links name is untouched (no new file, no mount, not copied into the volume).
#[test]
fn mount_target_symlink_stays_in_rootfs() {
    let (roots, leak) = setup();
    let host = roots.path().join("host-dir");
    let names = ["abs", "rel", "tmp", "vol"];
    for n in names {
        std::fs::create_dir_all(host.join(n)).unwrap();
        std::fs::write(host.join(n).join("hostfile"), "host only").unwrap();
    }
    let at = |n: &str| host.join(n).display().to_string();
    let rel = format!("../../../../../../../../../..{}", at("rel"));
    let base = busybox_layer(roots.path());
    crafted_image(
        &roots,
        "evil-mounts:1",
        &base,
        &[
            symlink_entry("evil-abs", &at("abs")),
            symlink_entry("evil-rel", &rel),
            symlink_entry("evil-tmp", &at("tmp")),
            symlink_entry("evil-vol", &at("vol")),
        ],
    );
    let before = tree(&host);
    let (v1, v2) = (roots.path().join("v1"), roots.path().join("v2"));
    for v in [&v1, &v2] {
        std::fs::create_dir(v).unwrap();
        std::fs::write(v.join("volfile"), "volume").unwrap();
    }
    let vol = unique_id("escvol");
    let m1 = format!("{}:/evil-abs", v1.display());
    let m2 = format!("{}:/evil-rel", v2.display());
    let m3 = format!("{vol}:/evil-vol");
    let out = ok(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &m1,
            "-v",
            &m2,
            "-v",
            &m3,
            "--tmpfs",
            "/evil-tmp",
            "evil-mounts:1",
            "sh",
            "-c",
            "ls /evil-abs /evil-rel /evil-tmp /evil-vol; for d in abs rel tmp vol; do touch /evil-$d/from-ctr; done",
        ],
    );
    assert!(!out.contains("hostfile"), "host directory visible: {out}");
    assert!(out.matches("volfile").count() == 2, "{out}");
    assert!(v1.join("from-ctr").exists() && v2.join("from-ctr").exists());
    assert_eq!(tree(&host), before, "the host directory changed");
    ok(&roots, &["volume", "rm", &vol]);
    leak.assert_clean();
}

/// Layer extraction escapes (berth-image/src/unpack.rs, reached by `berth run` of a
/// pulled or loaded image): `..`, absolute paths, a symlink then a file through it, a
/// hardlink to a host file, a symlink then a hardlink through it. Each image fails to
/// unpack or unpacks harmlessly; the host directory and file are untouched (no new
/// entry, the victim's link count still 1).
#[test]
fn layer_extraction_stays_inside_root() {
    let (roots, leak) = setup();
    let host = roots.path().join("host-dir");
    std::fs::create_dir(&host).unwrap();
    let victim = host.join("victim");
    std::fs::write(&victim, "host only").unwrap();
    let abs = host.display().to_string();
    let up = "../../../../../../../../../../../../..";
    let dotdot = format!("{up}{abs}/dotdot");
    let absolute = format!("{abs}/absolute");
    let via_rel = format!("{up}{abs}");
    let victim_s = victim.display().to_string();
    let victim_rel = format!("{up}{victim_s}");
    let base = busybox_layer(roots.path());
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        ("dotdot", vec![file(&dotdot, b"x")]),
        ("absolute", vec![file(&absolute, b"x")]),
        (
            "symlink-abs",
            vec![symlink_entry("l", &abs), file("l/through-abs", b"x")],
        ),
        (
            "symlink-rel",
            vec![symlink_entry("l", &via_rel), file("l/through-rel", b"x")],
        ),
        ("hardlink-abs", vec![hardlink_entry("h", &victim_s)]),
        ("hardlink-rel", vec![hardlink_entry("h", &victim_rel)]),
        (
            "symlink-hardlink",
            vec![symlink_entry("l", &abs), hardlink_entry("h", "l/victim")],
        ),
        (
            "symlink-then-overwrite",
            vec![symlink_entry("l", &victim_s), file("l", b"overwritten")],
        ),
    ];
    for (name, entries) in &cases {
        let tag = format!("evil-{name}:1");
        crafted_image(&roots, &tag, &base, entries);
        let o = berth(
            &roots,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &tag,
                "sh",
                "-c",
                "cat /h /l 2>/dev/null; ls /",
            ],
        );
        assert_eq!(tree(&host), vec!["victim".to_string()], "{name}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "host only",
            "{name}"
        );
        assert_eq!(victim.metadata().unwrap().nlink(), 1, "{name}: hardlinked");
        assert!(
            !text(&o.stdout).contains("host only"),
            "{name}: the container reads the host file"
        );
        // a refused layer says why
        if !o.status.success() {
            assert!(
                text(&o.stderr).contains(name.split('-').next().unwrap())
                    || text(&o.stderr).contains("unsafe")
                    || text(&o.stderr).contains("outside"),
                "{name}: {}",
                text(&o.stderr)
            );
        }
    }
    leak.assert_clean();
}

// ---------------------------------------------------------------------------
// berth cp
// ---------------------------------------------------------------------------

/// `berth cp` with stdin from `input` (a tar stream for `cp -`).
fn berth_stdin(roots: &TestRoots, args: &[&str], input: &[u8]) -> Output {
    let mut child = roots
        .berth()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    child.wait_with_output().unwrap()
}

/// CVE-2019-14271 class: symlinks the container plants (absolute, `../`, to its own
/// /etc/shadow, to /) are resolved inside the container for copies out, copies in and
/// tar streams in, running and stopped; no host file is read or written.
#[test]
fn cp_resolves_every_path_inside_the_container() {
    let (roots, mut leak) = setup();
    let secret_dir = roots.path().join("host-secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("shadow"), "host secret\n").unwrap();
    let victim = roots.path().join("host-victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), "host\n").unwrap();
    let (sd, vd) = (secret_dir.display(), victim.display());
    let name = run_detached(&roots, &[], &["sleep", "60"]);
    leak.add_marker(name.clone());
    let plant = format!(
        "echo ctr-shadow > /etc/shadow && ln -s {sd} /leak-abs && ln -s ../../../../../../..{sd} /leak-rel \
         && ln -s /etc/shadow /shadowlink && ln -s {vd} /victim && ln -s / /rootlink && mkdir -p {vd}"
    );
    ok(&roots, &["exec", &name, "sh", "-c", &plant]);
    let out = roots.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let check_out = |roots: &TestRoots, label: &str| {
        for (i, src) in [
            "/leak-abs/shadow".to_string(),
            "/leak-rel/shadow".to_string(),
            format!("/rootlink{sd}/shadow"),
            "/leak-abs/.".to_string(),
        ]
        .iter()
        .enumerate()
        {
            let dst = out.join(format!("{label}-{i}"));
            let o = berth(
                roots,
                &["cp", &format!("{name}:{src}"), dst.to_str().unwrap()],
            );
            let got = tree(&out)
                .iter()
                .filter_map(|f| std::fs::read_to_string(out.join(f)).ok())
                .collect::<Vec<_>>();
            assert!(
                !got.iter().any(|c| c.contains("host secret")),
                "{label}: cp {src} copied the host's file ({})",
                text(&o.stderr)
            );
            assert!(
                !o.status.success()
                    || !dst.exists()
                    || std::fs::symlink_metadata(&dst).unwrap().is_dir(),
                "{label}: cp {src} produced {}",
                dst.display()
            );
        }
    };
    check_out(&roots, "running");
    // the link is copied as a link, its target never read
    let dst = out.join("shadowlink");
    ok(
        &roots,
        &["cp", &format!("{name}:/shadowlink"), dst.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_link(&dst).unwrap(), Path::new("/etc/shadow"));
    // copies in: through the links, the files land inside the container
    let src = roots.path().join("upload");
    std::fs::write(&src, "uploaded\n").unwrap();
    for dest in ["/victim/x", &format!("/rootlink{vd}/y"), "/victim"] {
        ok(
            &roots,
            &["cp", src.to_str().unwrap(), &format!("{name}:{dest}")],
        );
    }
    let tarball = raw_tar(&[
        file("in-tar", b"t"),
        file("../../../../../../../escape", b"t"),
    ]);
    let o = berth_stdin(&roots, &["cp", "-", &format!("{name}:/victim")], &tarball);
    assert!(!o.status.success(), "a `..` entry was accepted");
    let o = berth_stdin(
        &roots,
        &["cp", "-", &format!("{name}:/victim")],
        &raw_tar(&[file("in-tar", b"t")]),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(tree(&victim), vec!["keep".to_string()], "host dir written");
    let inside = ok(&roots, &["exec", &name, "ls", &vd.to_string()]);
    assert_eq!(
        inside.split_whitespace().collect::<Vec<_>>(),
        ["in-tar", "upload", "x", "y"],
        "the copies did not land inside the container"
    );
    ok(&roots, &["stop", "-t", "0", &name]);
    check_out(&roots, "stopped");
    ok(
        &roots,
        &["cp", src.to_str().unwrap(), &format!("{name}:/victim/z")],
    );
    assert_eq!(tree(&victim), vec!["keep".to_string()], "host dir written");
    ok(&roots, &["rm", "-f", &name]);
    leak.assert_clean();
}

/// The race of CVE-2018-15664: while `berth cp` runs, the container keeps exchanging
/// (renameat2 RENAME_EXCHANGE, millions of times a second) a directory and a symlink to
/// a host directory; no copy ever reads or writes there. The container also holds a
/// decoy at the host directory's path inside its own root: a copy that met the symlink
/// (the attacker won the swap during cp's work) reads or writes the decoy, which
/// counts; the test fails unless that happened both ways, so it cannot pass without
/// the race having been run.
#[test]
fn cp_symlink_swap_race_stays_inside() {
    let (roots, mut leak) = setup();
    let host = roots.path().join("host-race");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    let h = host.display();
    let prep =
        format!("mkdir -p {h} && echo decoy > {h}/secret && mkdir /w && echo ctr > /w/secret");
    let swapper = Swapper::start(&roots, &mut leak, &[], &prep, "/w", &host);
    let name = swapper.name.as_str();
    let src = roots.path().join("upload");
    std::fs::write(&src, "uploaded\n").unwrap();
    let out = roots.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (mut reads, mut decoy_reads, mut decoy_writes) = (0, 0, 0);
    let mut attempts = 0;
    while attempts < 40 && (decoy_reads == 0 || decoy_writes == 0) {
        let i = attempts;
        attempts += 1;
        // a failed copy (the path changed under it) is fine; where a copy went is not
        let _ = berth(
            &roots,
            &["cp", src.to_str().unwrap(), &format!("{name}:/w/up{i}")],
        );
        let dst = out.join(format!("s{i}"));
        let _ = berth(
            &roots,
            &["cp", &format!("{name}:/w/secret"), dst.to_str().unwrap()],
        );
        if let Ok(s) = std::fs::read_to_string(&dst) {
            assert_ne!(s, "host secret\n", "copy {i} read the host file");
            assert!(s == "ctr\n" || s == "decoy\n", "copy {i} read {s:?}");
            reads += 1;
            decoy_reads += (s == "decoy\n") as u32;
        }
        if decoy_reads > 0 && i % 4 == 3 {
            // uploads that met the symlink landed in the container's decoy
            let listing = ok(&roots, &["exec", name, "ls", &h.to_string()]);
            decoy_writes = listing.lines().filter(|l| l.starts_with("up")).count();
        }
    }
    integration_tests::figure("escapes.cp_race.attempts", attempts as f64, "runs");
    integration_tests::figure("escapes.cp_race.decoy_reads", decoy_reads as f64, "copies");
    integration_tests::figure(
        "escapes.cp_race.decoy_writes",
        decoy_writes as f64,
        "copies",
    );
    assert_eq!(
        tree(&host),
        vec!["secret".to_string()],
        "a copy landed in the host directory"
    );
    assert!(reads > 0, "no copy out of the container ever went through");
    assert!(
        decoy_reads > 0 && decoy_writes > 0,
        "in {attempts} attempts cp never met the swapped-in symlink ({decoy_reads} reads, \
         {decoy_writes} writes through it): the race was not run"
    );
    swapper.stop(&roots);
    leak.assert_clean();
}

/// `cp` reaches volumes and binds mounted in the container (running and stopped),
/// and speaks tar streams like docker: `CTR:PATH -` writes one, `- CTR:DIR` reads one.
#[test]
fn cp_volumes_binds_and_tar_streams() {
    let (roots, mut leak) = setup();
    let bind = roots.path().join("bind");
    std::fs::create_dir(&bind).unwrap();
    let vol = unique_id("cpvol");
    let mb = format!("{}:/bind", bind.display());
    let mv = format!("{vol}:/data");
    let name = run_detached(
        &roots,
        &["-v", &mb, "-v", &mv, "--tmpfs", "/scratch"],
        &["sleep", "60"],
    );
    leak.add_marker(name.clone());
    let src = roots.path().join("upload");
    std::fs::write(&src, "uploaded\n").unwrap();
    // a tmpfs exists only in the running container's own mount namespace
    ok(
        &roots,
        &["cp", src.to_str().unwrap(), &format!("{name}:/scratch/x")],
    );
    assert_eq!(
        ok(&roots, &["exec", &name, "cat", "/scratch/x"]),
        "uploaded\n"
    );
    ok(
        &roots,
        &["cp", src.to_str().unwrap(), &format!("{name}:/data/")],
    );
    ok(
        &roots,
        &["cp", src.to_str().unwrap(), &format!("{name}:/bind/b")],
    );
    assert_eq!(
        std::fs::read_to_string(bind.join("b")).unwrap(),
        "uploaded\n"
    );
    assert_eq!(
        ok(&roots, &["exec", &name, "cat", "/data/upload"]),
        "uploaded\n"
    );
    // tar out
    let o = berth(&roots, &["cp", &format!("{name}:/data"), "-"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut a = tar::Archive::new(&o.stdout[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.contains(&"data/upload".to_string()),
        "tar out: {names:?}"
    );
    // tar in, into a volume
    let o = berth_stdin(
        &roots,
        &["cp", "-", &format!("{name}:/data")],
        &raw_tar(&[file("from-tar.txt", b"tar in\n")]),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        ok(&roots, &["exec", &name, "cat", "/data/from-tar.txt"]),
        "tar in\n"
    );
    // stopped: the volume and the bind are still what cp reaches
    ok(&roots, &["stop", "-t", "0", &name]);
    let down = roots.path().join("down");
    ok(
        &roots,
        &[
            "cp",
            &format!("{name}:/data/from-tar.txt"),
            down.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&down).unwrap(), "tar in\n");
    ok(
        &roots,
        &["cp", src.to_str().unwrap(), &format!("{name}:/bind/c")],
    );
    assert!(bind.join("c").exists());
    ok(&roots, &["start", &name]);
    assert_eq!(
        ok(&roots, &["exec", &name, "cat", "/data/upload"]),
        "uploaded\n"
    );
    ok(&roots, &["rm", "-f", &name]);
    ok(&roots, &["volume", "rm", &vol]);
    leak.assert_clean();
}

/// CVE-2021-30465 itself: a container sharing a volume with a new container keeps
/// exchanging (renameat2) a directory of the volume with a symlink to a host
/// directory while the new container's runtime mounts a bind on that directory. Each
/// start either fails (the runtime caught the swap) or shows the bind inside its own
/// root; an escaped mount would land on the host directory (before the runtime pinned
/// mount targets with openat2, the same race with a link to "/" ran a container on
/// the host's root filesystem). Starts repeat until one caught the swap.
#[test]
fn mount_target_swap_race_stays_in_rootfs() {
    let (roots, mut leak) = setup();
    let marker = roots.path().join("race-marker");
    std::fs::create_dir(&marker).unwrap();
    let race = MountRace::new(&roots, &mut leak, "racevol");
    race.run(&roots, "mount_swap", |_| {
        vec![(marker.clone(), "/vol/sub".into())]
    });
    race.stop(&roots);
    leak.assert_clean();
}

/// `berth load` of a hand-made docker-archive whose members are named out of the
/// archive (`../`, absolute) and whose top layer goes through a symlink to a host
/// directory: loading writes nothing outside the store, and running the image either
/// refuses the layer or keeps everything inside the container.
#[test]
fn load_crafted_archive_stays_inside_root() {
    let (roots, leak) = setup();
    let host = roots.path().join("host-load");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("victim"), "host only").unwrap();
    let abs = host.display().to_string();
    let base = busybox_layer(roots.path());
    let through = raw_tar(&[symlink_entry("l", &abs), file("l/through", b"x")]);
    let digest = |b: &[u8]| {
        let d = ring::digest::digest(&ring::digest::SHA256, b);
        let hex: String = d.as_ref().iter().map(|x| format!("{x:02x}")).collect();
        format!("sha256:{hex}")
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": [digest(&base), digest(&through)] },
    })
    .to_string();
    let m_base = format!("../../../../../../..{abs}/base.tar");
    let m_top = format!("{abs}/top.tar");
    let m_cfg = "cfg.json";
    let manifest = serde_json::json!([{
        "Config": m_cfg, "RepoTags": ["evil-load:1"], "Layers": [m_base, m_top],
    }])
    .to_string();
    let archive = raw_tar(&[
        file(m_cfg, config.as_bytes()),
        file(&m_base, &base),
        file(&m_top, &through),
        file("manifest.json", manifest.as_bytes()),
    ]);
    let path = roots.path().join("evil.tar");
    std::fs::write(&path, archive).unwrap();
    let o = berth(&roots, &["load", "-i", path.to_str().unwrap()]);
    assert_eq!(
        tree(&host),
        vec!["victim".to_string()],
        "load wrote outside"
    );
    assert!(
        o.status.success(),
        "load refused the archive: {}",
        text(&o.stderr)
    );
    let o = berth(
        &roots,
        &["run", "--rm", "--network", "none", "evil-load:1", "ls", "/"],
    );
    assert_eq!(tree(&host), vec!["victim".to_string()], "run wrote outside");
    assert!(
        !o.status.success() && text(&o.stderr).contains("leaves the root"),
        "the layer going through a symlink to the host was applied: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    leak.assert_clean();
}

/// The CVE-2024-45310 class, next to CVE-2021-30465: while the runtime creates the
/// targets of a file bind and a directory bind inside a shared volume's directory, the
/// other container exchanges that directory with a symlink to a host directory; the
/// runtime never creates anything there. Starts repeat until one caught the swap.
#[test]
fn mount_target_creation_race_stays_in_rootfs() {
    let (roots, mut leak) = setup();
    let src_file = roots.path().join("bind-file");
    std::fs::write(&src_file, "bound").unwrap();
    let src_dir = roots.path().join("bind-dir");
    std::fs::create_dir(&src_dir).unwrap();
    let race = MountRace::new(&roots, &mut leak, "createvol");
    race.run(&roots, "mount_create", |i| {
        vec![
            (src_file.clone(), format!("/vol/sub/f{i}")),
            (src_dir.clone(), format!("/vol/sub/d{i}")),
        ]
    });
    race.stop(&roots);
    leak.assert_clean();
}

/// The attacker of the race tests: a container (with the probe) that keeps exchanging
/// (renameat2 RENAME_EXCHANGE, millions of times a second) the directory `dir`, made
/// by `prep`, with a symlink to `target`.
struct Swapper {
    name: String,
}

impl Swapper {
    fn start(
        roots: &TestRoots,
        leak: &mut LeakCheck,
        flags: &[&str],
        prep: &str,
        dir: &str,
        target: &Path,
    ) -> Swapper {
        let script = format!(
            "{prep} && ln -s {} {dir}.l && exec /probe swap {dir} {dir}.l 120",
            target.display()
        );
        let name = run_detached(roots, flags, &["sh", "-c", &script]);
        leak.add_marker(name.clone());
        Swapper { name }
    }

    /// Removes the attacker, which must have swapped all along (a dead one races
    /// nothing).
    fn stop(self, roots: &TestRoots) {
        assert_eq!(
            inspect_state(roots, &self.name),
            "running",
            "the attacker stopped: the race was not run"
        );
        ok(roots, &["rm", "-f", &self.name]);
    }
}

/// CVE-2021-30465 and CVE-2024-45310 races: a swapper exchanges `/vol/sub` in a shared
/// volume with a symlink to a host directory (empty, made by the test) while victims
/// start with binds whose targets are at or below `/vol/sub`.
struct MountRace {
    swapper: Swapper,
    vol: String,
    host: PathBuf,
}

/// How a victim's start met the race.
#[derive(Debug, PartialEq)]
enum Met {
    /// Started; every bind on its own target (the swap never showed).
    Plain,
    /// Started; a bind resolved through the symlink, inside the container's root.
    FollowedInside,
    /// Refused: the runtime caught the swap between resolving a target and using it.
    Caught,
    /// Refused for another reason (printed).
    Refused(String),
}

impl MountRace {
    /// Most victims started per test: the loop ends at the first caught swap.
    const MAX_ATTEMPTS: usize = 25;

    fn new(roots: &TestRoots, leak: &mut LeakCheck, vol: &str) -> MountRace {
        let host = roots.path().join(format!("host-{vol}"));
        std::fs::create_dir(&host).unwrap();
        let vol = unique_id(vol);
        let swapper = Swapper::start(
            roots,
            leak,
            &["-v", &format!("{vol}:/vol")],
            "mkdir /vol/sub",
            "/vol/sub",
            &host,
        );
        MountRace { swapper, vol, host }
    }

    /// Starts victims with `binds(i)` (source, target) until the runtime has caught
    /// the swap during its work once (at most MAX_ATTEMPTS): each victim either
    /// starts with every bind inside its root (on its target, or on the host path
    /// the symlink names resolved inside the root) or is refused; the host directory
    /// stays empty and unmounted. Fails when no start ever met the swap in the
    /// runtime's window, so the race is known to have been run.
    fn run(&self, roots: &TestRoots, what: &str, binds: impl Fn(usize) -> Vec<(PathBuf, String)>) {
        let mv = format!("{}:/vol", self.vol);
        let h = self.host.display().to_string();
        let mut seen = Vec::new();
        for i in 0..Self::MAX_ATTEMPTS {
            let binds = binds(i);
            let specs: Vec<String> = binds
                .iter()
                .map(|(src, dst)| format!("{}:{dst}", src.display()))
                .collect();
            let mut args = vec!["run", "--rm", "--network", "none", "-v", &mv];
            for s in &specs {
                args.extend(["-v", s.as_str()]);
            }
            args.extend(["busybox", "cat", "/proc/self/mountinfo"]);
            let o = berth(roots, &args);
            let met = if o.status.success() {
                let mi = text(&o.stdout);
                let mut followed = false;
                for (src, dst) in &binds {
                    let base = src.file_name().unwrap().to_str().unwrap();
                    // fields: id parent dev root mountpoint ...
                    let point = mi
                        .lines()
                        .filter_map(|l| {
                            let f: Vec<&str> = l.split_whitespace().collect();
                            f[3].ends_with(base).then(|| f[4].to_string())
                        })
                        .next_back()
                        .unwrap_or_else(|| panic!("{what} {i}: bind of {base} missing:\n{mi}"));
                    // the attacker goes on exchanging the names: a bind on the volume's
                    // directory shows under whichever name it has when mountinfo is read
                    let moved = dst.replacen("/vol/sub", "/vol/sub.l", 1);
                    let inside = dst.replacen("/vol/sub", &h, 1);
                    assert!(
                        point == *dst || point == moved || point == inside,
                        "{what} {i}: bind of {base} on {point}, not {dst} or {inside}:\n{mi}"
                    );
                    followed |= point == inside;
                }
                if followed {
                    Met::FollowedInside
                } else {
                    Met::Plain
                }
            } else {
                let err = text(&o.stderr);
                // the runtime met the name in one state while resolving and in the
                // other when it used it (a link appeared, stopped being one, or a
                // directory it was creating in became one)
                let caught = err.contains("a symlink appeared in the path after it was resolved")
                    || (err.contains("readlink") && err.contains("invalid argument"))
                    || (err.contains("create mount target")
                        && (err.contains("symbolic links") || err.contains("not a directory")));
                if caught {
                    Met::Caught
                } else {
                    Met::Refused(err)
                }
            };
            assert_eq!(
                tree(&self.host),
                Vec::<String>::new(),
                "{what} {i}: the runtime wrote in the host directory"
            );
            let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !host_mounts.contains(&h),
                "{what} {i}: a mount on the host directory:\n{host_mounts}"
            );
            let done = met == Met::Caught;
            seen.push(met);
            if done {
                break;
            }
        }
        let count = |m: &dyn Fn(&Met) -> bool| seen.iter().filter(|x| m(x)).count() as f64;
        integration_tests::figure(
            &format!("escapes.{what}_race.attempts"),
            seen.len() as f64,
            "runs",
        );
        integration_tests::figure(
            &format!("escapes.{what}_race.caught"),
            count(&|m| *m == Met::Caught),
            "runs",
        );
        integration_tests::figure(
            &format!("escapes.{what}_race.followed_inside"),
            count(&|m| *m == Met::FollowedInside),
            "runs",
        );
        eprintln!("{what}: {seen:?}");
        assert!(
            seen.contains(&Met::Caught),
            "{what}: in {} starts the runtime never met the swap during its work: the race \
             was not run ({seen:?})",
            seen.len()
        );
    }

    fn stop(self, roots: &TestRoots) {
        self.swapper.stop(roots);
        ok(roots, &["volume", "rm", &self.vol]);
    }
}

/// `berth apply` pods get the same confinement as `berth run`: docker's capabilities
/// (none inheritable or ambient), seccomp filtering, and masked /proc paths.
#[test]
fn apply_pods_get_the_secure_defaults() {
    let (roots, leak) = setup();
    let serve = roots.serve("0.3").unwrap();
    let manifest = roots.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: confined}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: app\n      image: busybox:latest\n      imagePullPolicy: Never\n      command: [sh, -c, 'cat /proc/self/status; echo masked=$(grep -c -e \" /proc/keys \" -e \" /proc/timer_list \" /proc/self/mountinfo); echo END; exec sleep 30']\n",
    )
    .unwrap();
    let applied = berth(&roots, &["apply", "-f", manifest.to_str().unwrap()]);
    let mut logs = String::new();
    let end = Instant::now() + Duration::from_secs(30);
    while applied.status.success() && !logs.contains("END") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        logs = text(&berth(&roots, &["logs", "confined", "-c", "app"]).stdout);
    }
    let _ = berth(&roots, &["delete", "pod", "confined"]);
    drop(serve);
    for id in ok(&roots, &["ps", "-aq"]).split_whitespace() {
        let _ = berth(&roots, &["rm", "-f", id]);
    }
    // serve was stopped right after the delete: the pod's network sandbox may remain
    ok(&roots, &["network", "prune", "-f"]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert!(logs.contains("END"), "the pod never ran: {logs}");
    let want = format!("{:016x}", docker_default_caps());
    for f in ["CapEff", "CapBnd"] {
        assert_eq!(status_field(&logs, f), want, "{f}");
    }
    assert_eq!(status_field(&logs, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&logs, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(&logs, "Seccomp"), "2");
    assert!(
        logs.contains("masked=2"),
        "/proc/keys, /proc/timer_list not masked: {logs}"
    );
    leak.assert_clean();
}
