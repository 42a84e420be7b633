//! berth-cgroups on the real host (root): the hybrid layout of the CI machine, and the
//! pure cgroup2 code path in a private mount namespace with a fresh cgroup2 mount.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_cgroups::{CgroupManager, Error, Layout, Signal};
use integration_tests::{LeakCheck, require_cmd, require_root, unique_id};
use oci_spec::runtime::LinuxResources;
use serde_json::json;

const MIB: u64 = 1 << 20;

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).expect("valid LinuxResources json")
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// A child killed when the test ends, even by a panic (a leftover `sleep` would hold the
/// outer test's output pipe open for minutes).
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Kid {
    Kid(Command::new(require_cmd("sleep"))
        .arg("300")
        .spawn()
        .expect("spawn sleep"))
}

/// Removes the test's cgroup even when an assertion fails midway.
struct Guard<'a>(&'a dyn CgroupManager);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill_all(Signal::SIGKILL);
        let _ = self.0.thaw();
        let _ = self.0.destroy();
    }
}

/// Waits for the child and returns the signal that ended it.
fn wait_signal(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st.signal();
        }
        assert!(
            Instant::now() < deadline,
            "child did not exit after kill_all"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_gone(paths: &[PathBuf]) {
    for p in paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

/// The proc state letter of `pid` ("S", "D", ...).
fn proc_state(pid: i32) -> String {
    read(format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn hybrid_host_full_lifecycle() {
    require_root();
    assert_eq!(
        berth_cgroups::detect_layout().unwrap(),
        Layout::Hybrid,
        "the CI host is hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified)"
    );
    let support = berth_cgroups::host_support().unwrap();
    assert!(support.has("memory") && support.has("hugetlb") && !support.has("net_cls"));
    assert!(support.v2_controllers.contains(&"hugetlb".to_string()));
    let id = unique_id("cgt-life");
    let leaks = LeakCheck::new(std::slice::from_ref(&id));
    let cg = berth_cgroups::open(None, &id).unwrap();
    assert_eq!(cg.layout(), Layout::Hybrid);
    assert_eq!(cg.v2_dir(), None, "no CLONE_INTO_CGROUP on hybrid hosts");
    cg.create().unwrap();
    let _guard = Guard(&*cg);
    let mem = PathBuf::from(format!("/sys/fs/cgroup/memory/berth/{id}"));
    let unified = PathBuf::from(format!("/sys/fs/cgroup/unified/berth/{id}"));
    assert!(mem.is_dir());
    assert!(unified.is_dir());
    for hierarchy in [
        "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "pids", "systemd",
    ] {
        assert!(
            Path::new(&format!("/sys/fs/cgroup/{hierarchy}/berth/{id}")).is_dir(),
            "{hierarchy}"
        );
    }

    let r = resources(json!({
        "memory": {"limit": 64 * MIB, "swap": 128 * MIB, "reservation": 32 * MIB, "swappiness": 10},
        "pids": {"limit": 50},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rw"}
        ],
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MIB}],
        "blockIO": {"weight": 500}
    }));
    cg.apply(&r).unwrap();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.soft_limit_in_bytes")),
        (32 * MIB).to_string()
    );
    assert_eq!(read(mem.join("memory.swappiness")), "10");
    assert_eq!(
        read(format!("/sys/fs/cgroup/pids/berth/{id}/pids.max")),
        "50"
    );
    assert_eq!(
        read(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.shares")),
        "512"
    );
    assert_eq!(
        read(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(
        read(format!("/sys/fs/cgroup/cpuset/berth/{id}/cpuset.cpus")),
        "0"
    );
    assert_eq!(
        read(format!("/sys/fs/cgroup/devices/berth/{id}/devices.list")),
        "c 1:3 rwm\nc 136:* rw"
    );
    // no CFQ on kernel 6: the weight goes to BFQ's file
    let bfq = read(format!("/sys/fs/cgroup/blkio/berth/{id}/blkio.bfq.weight"));
    assert!(bfq.split_whitespace().any(|w| w == "500"), "{bfq}");
    // hugetlb lives on the cgroup2 mount of this hybrid host
    assert_eq!(read(unified.join("hugetlb.2MB.max")), (4 * MIB).to_string());

    let mut child = sleeper();
    let pid = child.0.id() as i32;
    cg.add_process(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let own = read(format!("/proc/{pid}/cgroup"));
    assert!(own.contains(&format!(":memory:/berth/{id}")), "{own}");
    assert!(own.contains(&format!("0::/berth/{id}")), "{own}");

    // update: raise the memory limit above memsw's old value (order of writes matters)
    cg.apply(&resources(
        json!({"memory": {"limit": 256 * MIB, "swap": 512 * MIB}}),
    ))
    .unwrap();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (256 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        (512 * MIB).to_string()
    );

    let stats = cg.stats().unwrap();
    assert_eq!(stats.memory.usage.limit, 256 * MIB);
    // then unlimited (memsw follows), then back to 256 MiB
    cg.apply(&resources(json!({"memory": {"limit": -1}})))
        .unwrap();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        "9223372036854771712"
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        "9223372036854771712"
    );
    cg.apply(&resources(
        json!({"memory": {"limit": 256 * MIB, "swap": 512 * MIB}}),
    ))
    .unwrap();
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        (512 * MIB).to_string()
    );
    assert_eq!(stats.pids.current, 1);
    assert_eq!(stats.pids.limit, 50);
    assert_eq!(stats.hugetlb["2MB"].max, 4 * MIB);
    let js = serde_json::to_value(&stats).unwrap();
    assert_eq!(js["pids"]["limit"], 50);

    cg.freeze().unwrap();
    assert_eq!(
        read(format!("/sys/fs/cgroup/freezer/berth/{id}/freezer.state")),
        "FROZEN"
    );
    assert!(cg.is_frozen().unwrap());
    assert!(
        proc_state(pid).starts_with('D'),
        "frozen task state {}",
        proc_state(pid)
    );
    cg.thaw().unwrap();
    assert_eq!(
        read(format!("/sys/fs/cgroup/freezer/berth/{id}/freezer.state")),
        "THAWED"
    );
    assert!(!cg.is_frozen().unwrap());

    // A saved state reopens the same cgroup without detection.
    let saved = serde_json::to_string(&cg.state()).unwrap();
    let cg2 = berth_cgroups::from_state(&serde_json::from_str(&saved).unwrap());
    cg2.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(wait_signal(&mut child.0), Some(9));
    let paths = cg2.paths();
    assert_eq!(paths.len(), 10, "9 v1 hierarchies + the cgroup2 dir");
    cg2.destroy().unwrap();
    assert_gone(&paths);
    cg2.destroy().expect("destroying twice is fine");
    leaks.assert_clean();
}

#[test]
fn kill_all_with_sigterm_freezes_signals_and_thaws() {
    require_root();
    let id = unique_id("cgt-term");
    let cg = berth_cgroups::open(Some(&format!("/berth-test/{id}")), &id).unwrap();
    cg.create().unwrap();
    let _guard = Guard(&*cg);
    let mut a = sleeper();
    let mut b = sleeper();
    cg.add_process(a.0.id() as i32).unwrap();
    cg.add_process(b.0.id() as i32).unwrap();
    let mut pids = cg.pids().unwrap();
    pids.sort();
    let mut want = vec![a.0.id() as i32, b.0.id() as i32];
    want.sort();
    assert_eq!(pids, want);
    cg.kill_all(Signal::SIGTERM).unwrap();
    assert_eq!(wait_signal(&mut a.0), Some(15));
    assert_eq!(wait_signal(&mut b.0), Some(15));
    assert!(!cg.is_frozen().unwrap(), "thawed after signalling");
    let paths = cg.paths();
    cg.destroy().unwrap();
    assert_gone(&paths);
    // not the default path: the (empty) parent stays, remove it ourselves
    for p in &paths {
        let _ = std::fs::remove_dir(p.parent().unwrap());
    }
}

#[test]
fn relative_path_is_below_own_cgroup() {
    require_root();
    let id = unique_id("cgt-rel");
    let cg = berth_cgroups::open(Some(&format!("rel-{id}")), &id).unwrap();
    let own = read("/proc/self/cgroup");
    let mem_own = own
        .lines()
        .find_map(|l| {
            l.strip_prefix(|c: char| c.is_ascii_digit())
                .and_then(|l| l.strip_prefix(":memory:"))
        })
        .unwrap()
        .to_string();
    let want = Path::new("/sys/fs/cgroup/memory")
        .join(mem_own.trim_start_matches('/'))
        .join(format!("rel-{id}"));
    assert!(
        cg.paths().contains(&want),
        "{:?} lacks {}",
        cg.paths(),
        want.display()
    );
    cg.create().unwrap();
    let _guard = Guard(&*cg);
    assert!(want.is_dir());
    cg.destroy().unwrap();
    assert!(!want.exists());
}

#[test]
fn host_limits_give_clear_errors() {
    require_root();
    let id = unique_id("cgt-err");
    let cg = berth_cgroups::open(None, &id).unwrap();
    cg.create().unwrap();
    let _guard = Guard(&*cg);
    let err = |v: serde_json::Value| cg.apply(&resources(v)).unwrap_err().to_string();

    let e = err(json!({"network": {"classID": 1048577}}));
    assert!(
        e.contains("network.classID") && e.contains("1048577") && e.contains("net_cls"),
        "{e}"
    );
    let e = err(json!({"cpu": {"cpus": "0-63"}}));
    assert!(
        e.contains("cpu.cpus") && e.contains("0-63") && e.contains("host allows"),
        "{e}"
    );
    let e = err(json!({"memory": {"kernel": 64 * MIB}}));
    assert!(e.contains("memory.kernel") && e.contains("ignores"), "{e}");
    let e = err(json!({"memory": {"limit": 64 * MIB, "swap": 32 * MIB}}));
    assert!(e.contains("memory.swap") && e.contains("at least"), "{e}");
    let e = err(json!({"hugepageLimits": [{"pageSize": "4MB", "limit": 1}]}));
    assert!(e.contains("4MB") && e.contains("huge pages"), "{e}");
    let e = err(json!({"blockIO": {"leafWeight": 500}}));
    assert!(
        e.contains("blockIO.leafWeight") && e.contains("500") && e.contains("no blkio.leaf_weight"),
        "{e}"
    );
    let e = err(json!({"cpu": {"shares": 1}}));
    assert!(e.contains("cpu.shares") && e.contains("clamps"), "{e}");

    let e = berth_cgroups::open(Some("system.slice:berth:x"), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("systemd"), "{e}");
    cg.destroy().unwrap();
}

/// Env var telling the re-executed test binary it runs inside the private namespace.
const V2_INNER: &str = "BERTH_CGROUPS_V2_INNER";

#[test]
fn pure_v2_in_private_mount_namespace() {
    require_root();
    let unshare = require_cmd("unshare");
    let exe = std::env::current_exe().unwrap();
    let id = unique_id("cgt-v2");
    let leaks = LeakCheck::new(std::slice::from_ref(&id));
    let out = Command::new(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" --exact v2_inner --ignored --nocapture --test-threads 1")
        .arg(&exe)
        .env(V2_INNER, &id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test v2_inner ... ok"),
        "inner test did not run:\n{stdout}\n{stderr}"
    );
    // The private cgroup2 mount shows the host's cgroup2 hierarchy: nothing may remain.
    assert!(!Path::new(&format!("/sys/fs/cgroup/unified/berth/{id}")).exists());
    leaks.assert_clean();
}

/// Runs only inside `pure_v2_in_private_mount_namespace` (a private mount namespace whose
/// /sys/fs/cgroup is a fresh cgroup2 mount).
#[test]
#[ignore = "run by pure_v2_in_private_mount_namespace"]
fn v2_inner() {
    let id = std::env::var(V2_INNER).expect("only run from pure_v2_in_private_mount_namespace");
    assert_eq!(berth_cgroups::detect_layout().unwrap(), Layout::V2);
    let cg = berth_cgroups::open(None, &id).unwrap();
    assert_eq!(cg.layout(), Layout::V2);
    let dir = PathBuf::from(format!("/sys/fs/cgroup/berth/{id}"));
    assert_eq!(cg.v2_dir(), Some(dir.clone()));
    cg.create().unwrap();
    let _guard = Guard(&*cg);
    assert!(dir.is_dir());
    let avail = read("/sys/fs/cgroup/cgroup.controllers");

    // v1 owns every controller but hugetlb on this host: the ones asked for that cgroup2
    // does not have are clear errors naming field and value.
    let e = cg
        .apply(&resources(json!({"memory": {"limit": 64 * MIB}})))
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("memory.limit")
            && e.contains(&(64 * MIB).to_string())
            && e.contains("not available"),
        "{e}"
    );
    let e = cg
        .apply(&resources(json!({"pids": {"limit": 10}})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pids.limit") && e.contains("10"), "{e}");
    let e = cg
        .apply(&resources(json!({"cpu": {"realtimeRuntime": 1000}})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("realtime"), "{e}");
    let e = cg
        .apply(&resources(json!({"memory": {"swappiness": 10}})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("swappiness"), "{e}");
    if avail.split_whitespace().any(|c| c == "hugetlb") {
        cg.apply(&resources(
            json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 * MIB}]}),
        ))
        .unwrap();
        assert_eq!(read(dir.join("hugetlb.2MB.max")), (2 * MIB).to_string());
    }

    let mut child = sleeper();
    let pid = child.0.id() as i32;
    cg.add_process(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids.current, 1);

    cg.freeze().unwrap();
    assert!(read(dir.join("cgroup.events")).contains("frozen 1"));
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(read(dir.join("cgroup.events")).contains("frozen 0"));

    // Device rules become an eBPF filter on the cgroup: /dev/null allowed, /dev/zero not.
    cg.apply(&resources(json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]})))
    .unwrap();
    let probe = |dev: &str| {
        let mut c = Command::new(require_cmd("sh"))
            .args(["-c", &format!("read x; exec head -c 1 {dev}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        cg.add_process(c.id() as i32).unwrap();
        drop(c.stdin.take()); // EOF: `read` returns, head runs inside the cgroup
        let out = c.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = probe("/dev/null");
    assert!(ok, "/dev/null allowed: {err}");
    let (ok, err) = probe("/dev/zero");
    assert!(
        !ok && err.contains("Operation not permitted"),
        "/dev/zero denied: {err}"
    );
    // An update replaces the filter (it does not add a second one): all allowed now.
    cg.apply(&resources(
        json!({"devices": [{"allow": true, "access": "rwm"}]}),
    ))
    .unwrap();
    let (ok, err) = probe("/dev/zero");
    assert!(ok, "/dev/zero allowed after update: {err}");

    assert!(
        dir.join("cgroup.kill").exists(),
        "kernel 6.18 has cgroup.kill"
    );
    cg.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(wait_signal(&mut child.0), Some(9));
    cg.destroy().unwrap();
    assert!(!dir.exists());
}

/// Env var telling the re-executed test binary it runs inside the v1-only view.
const V1_VIEW_INNER: &str = "BERTH_CGROUPS_V1_VIEW_INNER";

/// The view crun needs on this hybrid host: a private mount namespace whose
/// /sys/fs/cgroup is a fresh tmpfs with bind mounts of the v1 hierarchies only. The
/// host's old mounts (the cgroup2 one at /sys/fs/cgroup/unified included) are still
/// listed in mountinfo, shadowed; berth-cgroups must see a plain v1 host.
#[test]
fn v1_only_view_over_shadowed_hybrid_mounts() {
    require_root();
    let unshare = require_cmd("unshare");
    let exe = std::env::current_exe().unwrap();
    let id = unique_id("cgt-v1view");
    let leaks = LeakCheck::new(std::slice::from_ref(&id));
    let saved = std::env::temp_dir().join(&id);
    std::fs::create_dir(&saved).unwrap();
    // Save the host hierarchies, cover /sys/fs/cgroup, re-mount each v1 hierarchy
    // (statfs type cgroupfs; the cgroup2 one is cgroup2fs) and drop the saved copy so
    // only the new mounts and the shadowed old ones remain in mountinfo.
    let script = r#"set -e
S="$1"
mount --rbind /sys/fs/cgroup "$S"
mount -t tmpfs tmpfs /sys/fs/cgroup
for d in "$S"/*; do
  [ -L "$d" ] && continue
  [ "$(stat -f -c %T "$d")" = cgroupfs ] || continue
  h="${d##*/}"
  mkdir /sys/fs/cgroup/"$h"
  mount --bind "$d" /sys/fs/cgroup/"$h"
done
umount -R "$S"
exec "$0" --exact v1_view_inner --ignored --nocapture --test-threads 1"#;
    let out = Command::new(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(&exe)
        .arg(&saved)
        .env(V1_VIEW_INNER, &id)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&saved);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test v1_view_inner ... ok"),
        "inner test did not run:\n{stdout}\n{stderr}"
    );
    // The bind mounts show the host's hierarchies: nothing may remain in any of them.
    for h in ["memory", "pids", "cpu", "systemd", "unified"] {
        let p = format!("/sys/fs/cgroup/{h}/berth/{id}");
        assert!(!Path::new(&p).exists(), "{p} left behind");
    }
    leaks.assert_clean();
}

/// Runs only inside `v1_only_view_over_shadowed_hybrid_mounts`.
#[test]
#[ignore = "run by v1_only_view_over_shadowed_hybrid_mounts"]
fn v1_view_inner() {
    let id = std::env::var(V1_VIEW_INNER)
        .expect("only run from v1_only_view_over_shadowed_hybrid_mounts");
    let mountinfo = read("/proc/self/mountinfo");
    assert!(
        mountinfo.contains(" /sys/fs/cgroup/unified "),
        "the shadowed cgroup2 mount is still listed (the case under test):\n{mountinfo}"
    );
    assert!(!Path::new("/sys/fs/cgroup/unified").exists());
    assert_eq!(berth_cgroups::detect_layout().unwrap(), Layout::V1);
    let support = berth_cgroups::host_support().unwrap();
    assert!(support.v2_controllers.is_empty(), "{support:?}");
    assert!(support.has("memory") && support.has("pids"));
    let cg = berth_cgroups::open(None, &id).unwrap();
    assert_eq!(cg.layout(), Layout::V1);
    assert_eq!(cg.v2_dir(), None);
    let paths = cg.paths();
    assert_eq!(paths.len(), 9, "the 9 v1 hierarchies only: {paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("/sys/fs/cgroup/unified")),
        "{paths:?}"
    );
    cg.create().unwrap();
    let _guard = Guard(&*cg);
    let mem = PathBuf::from(format!("/sys/fs/cgroup/memory/berth/{id}"));
    assert!(mem.is_dir());
    cg.apply(&resources(
        json!({"memory": {"limit": 64 * MIB}, "pids": {"limit": 20}}),
    ))
    .unwrap();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );

    let mut child = sleeper();
    let pid = child.0.id() as i32;
    cg.add_process(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let own = read(format!("/proc/{pid}/cgroup"));
    assert!(own.contains(&format!(":memory:/berth/{id}")), "{own}");
    assert!(own.contains(&format!(":pids:/berth/{id}")), "{own}");

    cg.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(wait_signal(&mut child.0), Some(9));
    cg.destroy().unwrap();
    assert_gone(&paths);
}
