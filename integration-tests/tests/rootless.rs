//! User namespaces and rootless containers: berth-oci joining a user namespace given
//! by path, compared with runc.

use integration_tests::{
    LeakCheck, bin_path, busybox_bundle, require_cmd, require_root, unique_id, write_config,
};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_config(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

/// A user namespace kept alive by a bind mount of its nsfs file (no process holds
/// it), with `0 100000 65536` as both mappings; unmounted when dropped.
struct PinnedUserns {
    file: PathBuf,
}

impl PinnedUserns {
    fn new(file: PathBuf) -> PinnedUserns {
        std::fs::write(&file, "").unwrap();
        let mut child = Command::new(require_cmd("unshare"))
            .args(["--user", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/user")).ok() == Some(ours.clone()) {
            assert!(Instant::now() < deadline, "unshare --user did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{f}"), "0 100000 65536\n").unwrap();
        }
        let o = Command::new(require_cmd("mount"))
            .arg("--bind")
            .arg(format!("/proc/{pid}/ns/user"))
            .arg(&file)
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(o.status.success(), "pin the user namespace: {}", err(&o));
        PinnedUserns { file }
    }

    /// What `readlink /proc/self/ns/user` shows inside the namespace.
    fn link(&self) -> String {
        format!("user:[{}]", std::fs::metadata(&self.file).unwrap().ino())
    }
}

impl Drop for PinnedUserns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.file).status();
    }
}

/// A user namespace given by path is joined before the others, its mappings are not
/// written again (the config repeats them, as podman does), and the container's new
/// namespaces belong to it: the same as runc.
#[test]
fn join_user_namespace_by_path_like_runc() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-rl-join-")
        .tempdir()
        .unwrap();
    let leak = LeakCheck::new(&[dir.path().display().to_string()]);
    let pin = PinnedUserns::new(dir.path().join("userns"));
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/user; cat /proc/self/uid_map /proc/self/gid_map; \
             id -u; touch /tmp/f; stat -c '%u %g' /tmp/f /bin/busybox; \
             cat /proc/self/status | grep CapEff",
        ],
    )
    .unwrap();
    let mut v = read_config(&bundle);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user", "path": pin.file}));
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    v["linux"]["uidMappings"] = map.clone();
    v["linux"]["gidMappings"] = map;
    write_config(&bundle, &v).unwrap();

    let mut outs = Vec::new();
    for (tag, rt) in [
        ("berth", bin_path("berth-oci")),
        ("runc", require_cmd("runc")),
    ] {
        let o = Command::new(&rt)
            .arg("--root")
            .arg(dir.path().join(format!("root-{tag}")))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(unique_id(tag))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{tag}: {}", err(&o));
        outs.push(text(&o));
        let _ = std::fs::remove_file(bundle.join("rootfs/tmp/f"));
    }
    assert_eq!(
        outs[0], outs[1],
        "berth-oci (left) and runc (right) disagree"
    );
    let lines: Vec<&str> = outs[0].lines().collect();
    assert_eq!(lines[0], pin.link(), "{}", outs[0]);
    for l in &lines[1..3] {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f, ["0", "100000", "65536"], "{}", outs[0]);
    }
    // Root inside is host uid 100000; the host-root-owned rootfs shows as nobody.
    assert_eq!(&lines[3..6], ["0", "0 0", "65534 65534"], "{}", outs[0]);
    drop(pin);
    leak.assert_clean();
}

// ---- rootless: berth-oci as an unprivileged user ----

/// The test user `cargo xtask install` creates (xtask/src/install.rs), with its
/// subordinate ranges of 65536 ids from SUBID.
const USER: &str = "berth-rootless";
const UID: u32 = 23790;
const SUBID: u32 = 2_000_000;

/// Fails unless the test user and its /etc/subuid and /etc/subgid ranges exist, and
/// makes its XDG_RUNTIME_DIR (/run/user/UID, as a login would).
fn rootless_user() -> PathBuf {
    require_root();
    let o = Command::new("id").args(["-u", USER]).output().unwrap();
    assert!(
        o.status.success() && text(&o).trim() == UID.to_string(),
        "prerequisite missing: user {USER} with uid {UID} (run `cargo xtask install`)"
    );
    for f in ["/etc/subuid", "/etc/subgid"] {
        let t = std::fs::read_to_string(f).unwrap_or_default();
        assert!(
            t.lines().any(|l| l == format!("{USER}:{SUBID}:65536")),
            "prerequisite missing: {USER}:{SUBID}:65536 in {f} (run `cargo xtask install`)"
        );
    }
    require_cmd("newuidmap");
    let run = PathBuf::from(format!("/run/user/{UID}"));
    std::fs::create_dir_all(&run).unwrap();
    chown(&run);
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    run
}

fn chown(p: &Path) {
    std::os::unix::fs::chown(p, Some(UID), Some(UID)).unwrap();
}

/// A command run as the test user (setpriv drops every privilege), with the
/// environment of its login.
fn as_user(prog: &Path) -> Command {
    let mut c = Command::new(require_cmd("setpriv"));
    c.args(["--reuid", &UID.to_string(), "--regid", &UID.to_string()])
        .args(["--init-groups", "--inh-caps=-all", "--"])
        .arg(prog)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", format!("/home/{USER}"))
        .env("USER", USER)
        .env("XDG_RUNTIME_DIR", format!("/run/user/{UID}"))
        .stdin(Stdio::null());
    c
}

/// A temp dir owned by the test user holding a busybox bundle with runc's rootless
/// config (`runc spec --rootless`) running `script`, a writable root and `maps` as
/// both uid and gid mappings.
struct UserBundle {
    dir: tempfile::TempDir,
}

impl UserBundle {
    fn new(tag: &str, script: &str, maps: Value) -> UserBundle {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-rl-{tag}-"))
            .tempdir()
            .unwrap();
        let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"]).unwrap();
        std::fs::remove_file(bundle.join("config.json")).unwrap();
        // runc writes the caller's ids into the mappings, which are replaced below.
        let o = Command::new(require_cmd("runc"))
            .args(["spec", "--rootless", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(o.status.success(), "runc spec --rootless: {}", err(&o));
        let mut v = read_config(&bundle);
        v["process"]["terminal"] = json!(false);
        v["process"]["args"] = json!(["sh", "-c", script]);
        v["root"]["readonly"] = json!(false);
        v["linux"]["uidMappings"] = maps.clone();
        v["linux"]["gidMappings"] = maps;
        write_config(&bundle, &v).unwrap();
        let o = Command::new("chown")
            .args(["-R", &format!("{UID}:{UID}")])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        UserBundle { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }
}

/// `delete --force` of a container of the test user when dropped (a failed
/// assertion must not leave it running).
struct ForceDelete(PathBuf, String);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        let _ = as_user(&self.0)
            .args(["delete", "--force", &self.1])
            .output();
    }
}

fn own_map() -> Value {
    json!([{"containerID": 0, "hostID": UID, "size": 1}])
}

fn multi_map() -> Value {
    json!([
        {"containerID": 0, "hostID": UID, "size": 1},
        {"containerID": 1, "hostID": SUBID, "size": 65536}
    ])
}

/// `berth-oci spec --rootless` writes what `runc spec --rootless` writes: a user
/// namespace with the caller's own ids mapped, no network namespace, /sys bound from
/// the host, no uid=/gid= mount options, no resources.
#[test]
fn rootless_spec_like_runc() {
    rootless_user();
    let dir = tempfile::Builder::new()
        .prefix("berth-rl-spec-")
        .tempdir()
        .unwrap();
    chown(dir.path());
    let mut specs = Vec::new();
    for (tag, rt) in [
        ("berth", bin_path("berth-oci")),
        ("runc", require_cmd("runc")),
    ] {
        let b = dir.path().join(tag);
        std::fs::create_dir(&b).unwrap();
        chown(&b);
        let o = as_user(&rt)
            .args(["spec", "--rootless", "--bundle"])
            .arg(&b)
            .output()
            .unwrap();
        assert!(o.status.success(), "{tag}: {}", err(&o));
        let mut v = read_config(&b);
        let o = v.as_object_mut().unwrap();
        o.remove("hostname");
        o.remove("ociVersion");
        specs.push(v);
    }
    assert_eq!(specs[0], specs[1], "berth-oci (left) vs runc (right)");
    assert_eq!(specs[0]["linux"]["uidMappings"], own_map());
}

/// `run` as the test user with its own uid mapped (written directly) gives what runc
/// gives; nothing is delegated on this host, so berth-oci warns and runs without a
/// cgroup.
#[test]
fn rootless_run_own_id_like_runc() {
    rootless_user();
    let ub = UserBundle::new(
        "own",
        "id; cat /proc/self/uid_map /proc/self/gid_map; hostname; \
         grep -c ' /sys .*ro,' /proc/self/mountinfo; touch /f && stat -c '%u %g' /f; rm /f",
        own_map(),
    );
    let leak = LeakCheck::new(&[ub.marker()]);
    let mut outs = Vec::new();
    for (tag, rt) in [
        ("berth", bin_path("berth-oci")),
        ("runc", require_cmd("runc")),
    ] {
        let id = unique_id(&format!("rl-own-{tag}"));
        let o = as_user(&rt)
            .args(["run", "--bundle"])
            .arg(ub.bundle())
            .arg(&id)
            .output()
            .unwrap();
        assert!(o.status.success(), "{tag}: {}{}", err(&o), text(&o));
        if tag == "berth" {
            assert!(
                err(&o).contains("no cgroup delegated to this user"),
                "{}",
                err(&o)
            );
        }
        outs.push(text(&o));
    }
    assert_eq!(
        outs[0], outs[1],
        "berth-oci (left) and runc (right) disagree"
    );
    let l: Vec<Vec<&str>> = outs[0]
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        l[0],
        ["uid=0(root)", "gid=0(root)", "groups=0(root)"],
        "{}",
        outs[0]
    );
    assert_eq!(l[1], ["0", "23790", "1"], "{}", outs[0]);
    assert_eq!(l[2], ["0", "23790", "1"], "{}", outs[0]);
    assert_eq!(l[5], ["0", "0"], "{}", outs[0]);
    // The file made by container root belongs to the user on the host.
    assert_eq!(
        std::fs::metadata(ub.bundle().join("rootfs/bin/busybox"))
            .unwrap()
            .uid(),
        UID
    );
    leak.assert_clean();
}

/// Create, state, list, start, exec, kill and delete as the test user, with a
/// multi-range mapping written through newuidmap/newgidmap; state lives under
/// $XDG_RUNTIME_DIR/berth-oci. runc runs the same bundle for comparison.
#[test]
fn rootless_lifecycle_with_subid_ranges() {
    let run_dir = rootless_user();
    let ub = UserBundle::new(
        "multi",
        "cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/f; echo started; exec sleep 100",
        multi_map(),
    );
    // Container uid 1000 and gid 1001 are host ids from the subordinate ranges.
    let mut v = read_config(&ub.bundle());
    v["process"]["user"] = json!({"uid": 1000, "gid": 1001});
    write_config(&ub.bundle(), &v).unwrap();
    let mut leak = LeakCheck::new(&[ub.marker()]);
    let berth = bin_path("berth-oci");
    let id = unique_id("rl-multi");
    leak.add_marker(id.clone());
    let b = |args: &[&str]| -> Output { as_user(&berth).args(args).output().unwrap() };
    let bundle = ub.bundle();
    // The init keeps create's stdio: a file, so nothing waits for a pipe to close.
    let log = ub.dir.path().join("create.log");
    let logf = std::fs::File::create(&log).unwrap();
    let status = as_user(&berth)
        .args(["create", "--bundle", bundle.to_str().unwrap(), &id])
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .status()
        .unwrap();
    let _gone = ForceDelete(berth.clone(), id.clone());
    let created = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "create: {created}");
    assert!(created.contains("no cgroup delegated"), "{created}");
    assert!(
        run_dir.join("berth-oci").join(&id).is_dir(),
        "state not under $XDG_RUNTIME_DIR/berth-oci"
    );
    let st: Value = serde_json::from_slice(&b(&["state", &id]).stdout).unwrap();
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().unwrap();
    let listed = text(&b(&["list", "-q"]));
    assert!(listed.lines().any(|l| l == id), "{listed}");
    let o = b(&["start", &id]);
    assert!(o.status.success(), "start: {}", err(&o));
    // The init's maps as the host sees them.
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let rows: Vec<Vec<String>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(
        rows,
        [["0", "23790", "1"], ["1", "2000000", "65536"]],
        "{uid_map}"
    );
    // Wait for the script to reach the sleep, then look inside with exec.
    let f = bundle.join("rootfs/tmp/f");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&f).map(|m| m.uid()).ok() != Some(SUBID + 999) {
        assert!(
            Instant::now() < deadline,
            "file of uid 1000 not seen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::metadata(&f).unwrap().gid(), SUBID + 1000);
    let o = b(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; ps -o pid,comm | tail -n +2",
    ]);
    assert!(o.status.success(), "exec: {}", err(&o));
    let out = text(&o);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert!(lines.contains(&"1 sleep"), "{out}");
    let st: Value = serde_json::from_slice(&b(&["state", &id]).stdout).unwrap();
    assert_eq!(st["status"], "running");
    let o = b(&["kill", &id, "KILL"]);
    assert!(o.status.success(), "kill: {}", err(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: Value = serde_json::from_slice(&b(&["state", &id]).stdout).unwrap();
        if st["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "not stopped after kill: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = b(&["delete", &id]);
    assert!(o.status.success(), "delete: {}", err(&o));
    assert!(!run_dir.join("berth-oci").join(&id).exists());
    let o = b(&["state", &id]);
    assert!(!o.status.success());

    // runc rootless, same bundle and mappings: the same maps inside.
    let _ = std::fs::remove_file(&f);
    let mut v = read_config(&bundle);
    v["process"]["args"] = json!(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map"]);
    write_config(&bundle, &v).unwrap();
    let mut outs = Vec::new();
    for rt in [berth.clone(), require_cmd("runc")] {
        let o = as_user(&rt)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(unique_id("rl-multi-run"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", rt.display(), err(&o));
        outs.push(text(&o));
    }
    assert_eq!(outs[0], outs[1], "berth-oci (left) and runc (right)");
    leak.assert_clean();
}

// ---- podman rootless on berth-oci ----

const IMAGE: &str = "docker.io/library/busybox:latest";

/// Writes the busybox fixture image as a docker-archive `busybox.tar` in `d`, makes the
/// subdirectories `dirs`, and gives all of `d` to the test user; returns the archive.
fn busybox_archive_for_test_user(d: &Path, dirs: &[&str]) -> PathBuf {
    let store = berth_image::Store::open(&d.join("layout")).unwrap();
    berth_image::fixtures::busybox_image(&store, IMAGE).unwrap();
    let archive = d.join("busybox.tar");
    let f = std::fs::File::create(&archive).unwrap();
    berth_image::archive::save(&store, &[IMAGE.to_owned()], f).unwrap();
    for sub in dirs {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let o = Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    archive
}

/// podman run by the test user with its own storage, run root and tmp dir under a
/// temp dir, berth-oci as the runtime (state under the default
/// $XDG_RUNTIME_DIR/berth-oci, which podman's cleanup also uses), and busybox loaded
/// from a local docker-archive.
struct RootlessPodman {
    dir: tempfile::TempDir,
}

impl RootlessPodman {
    fn new() -> RootlessPodman {
        rootless_user();
        require_cmd("conmon");
        require_cmd("slirp4netns");
        let tun = std::fs::metadata("/dev/net/tun").map(|m| m.mode() & 0o777);
        assert_eq!(
            tun.ok(),
            Some(0o666),
            "prerequisite missing: /dev/net/tun usable by users (run `cargo xtask install`)"
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-rl-podman-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/storage\"\nrunroot = \"{0}/runroot\"\n",
                d.display()
            ),
        )
        .unwrap();
        let archive = busybox_archive_for_test_user(d, &[]);
        let p = RootlessPodman { dir };
        let o = p.run(&["load", "-q", "-i", archive.to_str().unwrap()]);
        assert!(o.status.success(), "podman load: {}", err(&o));
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        as_user(&require_cmd("podman"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--runtime")
            .arg(bin_path("berth-oci"))
            .args(args)
            .output()
            .unwrap()
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }
}

impl Drop for RootlessPodman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        // podman keeps the user namespace alive with a pause process (catatonit).
        let pause = self.dir.path().join("tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(pause)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: sending a signal to the pause process of this test's podman.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// podman as an unprivileged user runs its containers on berth-oci: run --rm with the
/// exit code, the subordinate ranges as mappings and slirp4netns networking; a
/// detached container's logs, exec into it, rm. The state podman's cleanup removes
/// lives under $XDG_RUNTIME_DIR/berth-oci.
#[test]
fn podman_rootless_run_exec_logs_on_berth_oci() {
    let p = RootlessPodman::new();
    let mut leak = LeakCheck::new(&[p.marker()]);
    let o = p.run(&[
        "run",
        "--rm",
        "--pull=never",
        IMAGE,
        "sh",
        "-c",
        "cat /proc/self/uid_map; ip -4 addr show tap0 | grep -o 'inet [0-9.]*'; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", err(&o), text(&o));
    let out = text(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["0", "23790", "1"], "{out}");
    assert_eq!(rows[1], ["1", "2000000", "65536"], "{out}");
    assert_eq!(
        rows[2],
        ["inet", "10.0.2.100"],
        "slirp4netns address: {out}"
    );
    let o = p.run(&[
        "run",
        "--rm",
        "--pull=never",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    assert!(o.status.success(), "run true: {}", err(&o));

    let name = unique_id("rl-podman");
    leak.add_marker(name.clone());
    let o = p.run(&[
        "run",
        "-d",
        "--pull=never",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "echo hello-log; exec sleep 60",
    ]);
    assert!(o.status.success(), "run -d: {}", err(&o));
    let id = text(&o).trim().to_string();
    leak.add_marker(id.clone());
    let state = PathBuf::from(format!("/run/user/{UID}/berth-oci/{id}"));
    assert!(state.is_dir(), "no berth-oci state at {}", state.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = p.run(&["logs", &name]);
        if text(&o).contains("hello-log") {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {}{}", text(&o), err(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = p.run(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo in-exec; id -u; cat /proc/1/comm",
    ]);
    assert!(o.status.success(), "exec: {}", err(&o));
    assert_eq!(text(&o), "in-exec\n0\nsleep\n");
    let o = p.run(&["rm", "-f", "-t", "0", &name]);
    assert!(o.status.success(), "rm: {}", err(&o));
    assert_eq!(text(&p.run(&["ps", "-a", "-q"])).trim(), "");
    assert!(
        !state.exists(),
        "berth-oci state left at {}",
        state.display()
    );
    drop(p);
    leak.assert_clean();
}

// ---- berth run as an unprivileged user ----

/// `berth` run by the test user: its root defaults to $XDG_DATA_HOME/berth and its
/// state to $XDG_RUNTIME_DIR/berth (both in a temp dir here), it enters a user and
/// mount namespace of its own held by a pause process, loads busybox into its own
/// root and runs containers with overlayfs inside that namespace: `--network none`,
/// and the default network through slirp4netns with a published port; modes that
/// need host root are refused with an error saying so.
#[test]
fn berth_run_rootless() {
    rootless_user();
    let dir = tempfile::Builder::new()
        .prefix("berth-rl-run-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let mut leak = LeakCheck::new(&[d.display().to_string()]);
    busybox_archive_for_test_user(d, &["data", "run"]);
    let berth = |args: &[&str]| -> Output {
        as_user(&bin_path("berth"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .args(args)
            .output()
            .unwrap()
    };
    struct Pause(PathBuf);
    impl Drop for Pause {
        fn drop(&mut self) {
            if let Some(pid) = std::fs::read_to_string(&self.0)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok())
            {
                // SAFETY: signalling the pause process this test's berth started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _pause = Pause(d.join("run/berth/userns/pause.pid"));
    // A failed assertion must not leave containers running (dropped before the
    // pause process, whose namespaces `rm -f` needs).
    struct RmAll(PathBuf, Vec<String>);
    impl Drop for RmAll {
        fn drop(&mut self) {
            let _ = as_user(&bin_path("berth"))
                .env("XDG_DATA_HOME", self.0.join("data"))
                .env("XDG_RUNTIME_DIR", self.0.join("run"))
                .args(["rm", "-f"])
                .args(&self.1)
                .output();
        }
    }
    let names = [unique_id("rl-berth"), unique_id("rl-web")];
    let _rm = RmAll(d.to_path_buf(), names.to_vec());
    let o = berth(&["load", "-i", d.join("busybox.tar").to_str().unwrap()]);
    assert!(o.status.success(), "load: {}{}", err(&o), text(&o));
    assert!(
        d.join("data/berth").is_dir(),
        "root not under $XDG_DATA_HOME/berth"
    );
    let o = berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; echo written > /tmp/x; cat /tmp/x; \
         grep -c ' / / .*- overlay ' /proc/self/mountinfo",
    ]);
    assert!(o.status.success(), "run: {}{}", err(&o), text(&o));
    let out = text(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["0"], "{out}");
    assert_eq!(rows[1], ["0", "23790", "1"], "{out}");
    assert_eq!(rows[2], ["1", "2000000", "65536"], "{out}");
    assert_eq!(rows[3], ["written"], "{out}");
    assert_eq!(rows[4], ["1"], "root is not an overlay: {out}");
    assert!(
        d.join("run/berth").is_dir(),
        "state not under $XDG_RUNTIME_DIR/berth"
    );

    // Detached, exec into it, logs, rm -f.
    let name = names[0].clone();
    leak.add_marker(name.clone());
    let o = berth(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "echo hello-log; exec sleep 60",
    ]);
    assert!(o.status.success(), "run -d: {}{}", err(&o), text(&o));
    let o = berth(&["exec", &name, "sh", "-c", "echo in-exec; cat /proc/1/comm"]);
    assert!(o.status.success(), "exec: {}{}", err(&o), text(&o));
    assert_eq!(text(&o), "in-exec\nsleep\n");
    let o = berth(&["logs", &name]);
    assert_eq!(text(&o), "hello-log\n", "logs: {}", err(&o));
    let o = berth(&["rm", "-f", &name]);
    assert!(o.status.success(), "rm -f: {}{}", err(&o), text(&o));

    // The default network is slirp4netns: a published port answers on the host.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web = names[1].clone();
    leak.add_marker(web.clone());
    let o = berth(&[
        "run",
        "-d",
        "--name",
        &web,
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www; echo rootless-page > /www/index.html; exec httpd -f -p 80 -h /www",
    ]);
    assert!(o.status.success(), "run -d -p: {}{}", err(&o), text(&o));
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let got = (|| -> std::io::Result<String> {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })();
        match got {
            Ok(s) if s.contains("rootless-page") => break s,
            _ if Instant::now() > deadline => panic!("published port {port}: {got:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let o = berth(&["exec", &web, "sh", "-c", "ip -4 addr show tap0"]);
    assert!(
        text(&o).contains("inet 10.0.2.100/24"),
        "{}{}",
        text(&o),
        err(&o)
    );
    let o = berth(&["rm", "-f", &web]);
    assert!(o.status.success(), "rm -f: {}", err(&o));

    let o = berth(&["run", "--rm", "--network", "host", IMAGE, "true"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("needs host root"), "{}", err(&o));
    let o = berth(&["ps", "-a", "-q"]);
    assert!(o.status.success(), "ps: {}", err(&o));
    assert_eq!(text(&o).trim(), "");
    drop(_rm);
    drop(_pause);
    leak.add_marker("berth-pause");
    leak.assert_clean();
}
