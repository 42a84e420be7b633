//! berth-oci end to end, with runc from Debian as the oracle: real busybox bundles,
//! lifecycle, exit codes, what a process inside observes, errors, and leaks.

use integration_tests::{
    LeakCheck, bin_path, busybox_bundle, default_config, require_cmd, require_root, unique_id,
    write_config,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
    bundle: PathBuf,
}

impl Env {
    fn new(args: &[&str]) -> Env {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .unwrap();
        let bundle = busybox_bundle(&dir.path().join("bundle"), args).unwrap();
        Env { dir, bundle }
    }

    fn root(&self, rt: &str) -> PathBuf {
        self.dir.path().join(format!("root-{rt}"))
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn config(&self, f: impl FnOnce(&mut Value)) {
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(self.bundle.join("config.json")).unwrap())
                .unwrap();
        f(&mut v);
        write_config(&self.bundle, &v).unwrap();
    }
}

fn berth() -> PathBuf {
    bin_path("berth-oci")
}

fn cmd(rt: &Path, root: &Path, args: &[&str]) -> Output {
    Command::new(rt)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn oci(env: &Env, args: &[&str]) -> Output {
    cmd(&berth(), &env.root("berth"), args)
}

/// Like `oci` for verbs leaving a container process behind (create, run -d): that
/// process inherits stdout/stderr, so they go to files, not pipes.
fn oci_bg(env: &Env, args: &[&str]) -> (bool, String) {
    let errf = env.dir.path().join(format!("stderr-{}", unique_id("e")));
    let st = Command::new(berth())
        .arg("--root")
        .arg(env.root("berth"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&errf).unwrap())
        .status()
        .unwrap();
    (
        st.success(),
        std::fs::read_to_string(&errf).unwrap_or_default(),
    )
}

/// A detached container keeps the stdio it inherits: give it none, or `output()` would
/// wait for the container to exit.
fn detached(env: &Env, bundle: &str, id: &str) {
    let st = Command::new(berth())
        .arg("--root")
        .arg(env.root("berth"))
        .args(["run", "-d", "--bundle", bundle, id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "run -d {id}");
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run_both(env: &Env) -> (Output, Output) {
    let b = env.bundle.to_str().unwrap();
    let ours = oci(env, &["run", "--bundle", b, &unique_id("rtb")]);
    let runc = cmd(
        &require_cmd("runc"),
        &env.root("runc"),
        &["run", "--bundle", b, &unique_id("rtr")],
    );
    (ours, runc)
}

#[test]
fn exit_codes_are_the_containers() {
    let env = Env::new(&["/bin/true"]);
    let leak = LeakCheck::new(&[env.marker()]);
    let b = env.bundle.to_str().unwrap();
    let o = oci(&env, &["run", "--bundle", b, &unique_id("true")]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    env.config(|v| v["process"]["args"] = serde_json::json!(["sh", "-c", "echo out; exit 3"]));
    let o = oci(&env, &["run", "--bundle", b, &unique_id("exit3")]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert_eq!(text(&o), "out\n");
    // A signal that kills the init becomes 128+n (the init ignores its own SIGKILL
    // inside a pid namespace, so share the host's pid namespace here).
    env.config(|v| {
        v["process"]["args"] = serde_json::json!(["sh", "-c", "kill -TERM $$"]);
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
    });
    let o = oci(&env, &["run", "--bundle", b, &unique_id("sig")]);
    assert_eq!(o.status.code(), Some(128 + 15), "{}", err(&o));
    assert!(
        std::fs::read_dir(env.root("berth"))
            .unwrap()
            .next()
            .is_none(),
        "run leaves no state behind"
    );
    leak.assert_clean();
}

#[test]
fn lifecycle_states_and_state_json() {
    let env = Env::new(&["sleep", "1000"]);
    let id = unique_id("life");
    let mut leak = LeakCheck::new(&[env.marker()]);
    leak.add_marker(id.clone());
    let b = env.bundle.to_str().unwrap();
    env.config(|v| v["annotations"] = serde_json::json!({"org.example.k": "v"}));
    let pidfile = env.dir.path().join("pid");
    let (ok, e) = oci_bg(
        &env,
        &[
            "create",
            "--bundle",
            b,
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
        ],
    );
    assert!(ok, "{e}");
    let st: Value = serde_json::from_str(&text(&oci(&env, &["state", &id]))).unwrap();
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], b);
    assert_eq!(st["annotations"]["org.example.k"], "v");
    assert!(st["ociVersion"].is_string());
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid.to_string()
    );
    // The waiting init is not dumpable (no ptrace, no /proc/PID/exe games).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Name:")), "{status}");

    let (ok, e) = oci_bg(&env, &["create", "--bundle", b, &id]);
    assert!(!ok);
    assert!(e.contains("exists"), "{e}");

    let o = oci(&env, &["start", &id]);
    assert!(o.status.success(), "{}", err(&o));
    let st: Value = serde_json::from_str(&text(&oci(&env, &["state", &id]))).unwrap();
    assert_eq!(st["status"], "running");
    let ps: Vec<i64> =
        serde_json::from_str(&text(&oci(&env, &["ps", "--format", "json", &id]))).unwrap();
    assert_eq!(ps, vec![pid]);
    let list = text(&oci(&env, &["list", "-q"]));
    assert_eq!(list.trim(), id);

    let o = oci(&env, &["delete", &id]);
    assert!(
        !o.status.success(),
        "delete of a running container needs --force"
    );
    let o = oci(&env, &["kill", &id, "KILL"]);
    assert!(o.status.success(), "{}", err(&o));
    for _ in 0..200 {
        let st: Value = serde_json::from_str(&text(&oci(&env, &["state", &id]))).unwrap();
        if st["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let st: Value = serde_json::from_str(&text(&oci(&env, &["state", &id]))).unwrap();
    assert_eq!(st["status"], "stopped");
    let o = oci(&env, &["delete", &id]);
    assert!(o.status.success(), "{}", err(&o));
    let o = oci(&env, &["state", &id]);
    assert!(!o.status.success());
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    leak.assert_clean();
}

#[test]
fn kill_accepts_names_and_numbers_and_delete_force() {
    let env = Env::new(&["sleep", "1000"]);
    let b = env.bundle.to_str().unwrap();
    let leak = LeakCheck::new(&[env.marker()]);
    for sig in ["TERM", "SIGKILL", "9"] {
        let id = unique_id("kill");
        detached(&env, b, &id);
        // TERM is ignored by a pid-namespace init without a handler; KILL always works.
        let o = oci(&env, &["kill", &id, sig]);
        assert!(o.status.success(), "kill {sig}: {}", err(&o));
        let o = oci(&env, &["delete", "--force", &id]);
        assert!(o.status.success(), "{}", err(&o));
    }
    let o = oci(&env, &["kill", "nosuch", "KILL"]);
    assert!(!o.status.success());
    let o = oci(&env, &["kill", &unique_id("x"), "NOTASIGNAL"]);
    assert!(!o.status.success());
    leak.assert_clean();
}

#[test]
fn delete_unknown_id() {
    let env = Env::new(&["true"]);
    let o = oci(&env, &["delete", "no-such-container"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    let o = oci(&env, &["delete", "--force", "no-such-container"]);
    assert!(o.status.success(), "{}", err(&o));
}

#[test]
fn bad_config_names_the_field() {
    let env = Env::new(&["true"]);
    let b = env.bundle.to_str().unwrap();
    env.config(|v| v["process"]["args"] = serde_json::json!("not-a-list"));
    let log = env.dir.path().join("log.json");
    let o = Command::new(berth())
        .args([
            "--root",
            env.root("berth").to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "create",
            "--bundle",
            b,
            "badcfg",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(err(&o).contains("process.args"), "{}", err(&o));
    // Engines read the msg of the last JSON line of --log.
    let last = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("process.args"));
    assert!(line["time"].is_string());
    assert!(!env.root("berth").join("badcfg").exists());

    env.config(|v| {
        v["process"]["args"] = serde_json::json!(["true"]);
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
    });
    let o = oci(&env, &["create", "--bundle", b, "rdt"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("linux.intelRdt"), "{}", err(&o));
}

#[test]
fn missing_executable_uses_runcs_words() {
    let env = Env::new(&["/no/such/binary"]);
    let b = env.bundle.to_str().unwrap();
    let leak = LeakCheck::new(&[env.marker()]);
    let o = oci(&env, &["create", "--bundle", b, &unique_id("noexe")]);
    assert!(!o.status.success());
    assert!(err(&o).contains("no such file or directory"), "{}", err(&o));
    env.config(|v| v["process"]["args"] = serde_json::json!(["nosuchcommand"]));
    let o = oci(&env, &["run", "--bundle", b, &unique_id("noexe")]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("executable file not found in $PATH"),
        "{}",
        err(&o)
    );
    assert!(
        std::fs::read_dir(env.root("berth"))
            .unwrap()
            .next()
            .is_none(),
        "failed create leaves no state"
    );
    leak.assert_clean();
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let env = Env::new(&["true"]);
    let b = env.bundle.to_str().unwrap();
    let leak = LeakCheck::new(&[env.marker()]);
    // The mount fails late in the set-up, after several mounts were made.
    env.config(|v| {
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/data", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]}))
    });
    let o = oci(&env, &["create", "--bundle", b, "failing"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("/no/such/dir"), "{}", err(&o));
    assert!(!env.root("berth").join("failing").exists());
    leak.assert_clean();
}

/// What a checker inside sees must match runc on the same config.
#[test]
fn observed_like_runc() {
    let env = Env::new(&["true"]);
    let leak = LeakCheck::new(&[env.marker()]);
    let script = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)|^NoNewPrivs' /proc/self/status; cat /proc/self/limits; \
                  ls /proc/self/fd | tr '\\n' ' '; echo; hostname; \
                  touch /rofile 2>/dev/null && echo rw || echo ro; \
                  awk '{print $2, $3}' /proc/self/mounts | sort; \
                  ls -l /dev | awk '{print $1, $NF}' | sort; id; umask; pwd";
    env.config(|v| {
        v["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        v["process"]["cwd"] = serde_json::json!("/tmp");
        v["hostname"] = serde_json::json!("checker-host");
        v["root"]["readonly"] = serde_json::json!(true);
        v["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1000},
            {"type": "RLIMIT_NPROC", "hard": 500, "soft": 400},
            {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}
        ]);
        v["process"]["capabilities"]["inheritable"] = serde_json::json!(["CAP_KILL"]);
    });
    let (ours, runc) = run_both(&env);
    assert!(runc.status.success(), "runc: {}", err(&runc));
    assert!(ours.status.success(), "berth-oci: {}", err(&ours));
    let (a, b) = (text(&ours), text(&runc));
    assert!(a.contains("checker-host"), "{a}");
    assert!(a.contains("\nro\n"), "{a}");
    assert!(
        a.contains("0 1 2 3 \n"),
        "only stdio (+ ls's dir fd) reach the container: {a}"
    );
    assert_eq!(a, b, "berth-oci (left) and runc (right) disagree");
    leak.assert_clean();
}

#[test]
fn user_and_groups_like_runc() {
    let env = Env::new(&["true"]);
    let leak = LeakCheck::new(&[env.marker()]);
    env.config(|v| {
        v["process"]["args"] =
            serde_json::json!(["sh", "-c", "id; grep -E '^Cap' /proc/self/status; umask"]);
        v["process"]["user"] =
            serde_json::json!({"uid": 65534, "gid": 65534, "additionalGids": [5, 7], "umask": 63});
    });
    let (ours, runc) = run_both(&env);
    assert!(runc.status.success(), "runc: {}", err(&runc));
    assert!(ours.status.success(), "berth-oci: {}", err(&ours));
    assert_eq!(text(&ours), text(&runc));
    leak.assert_clean();
}

#[test]
fn hooks_get_the_state() {
    let env = Env::new(&["true"]);
    let b = env.bundle.to_str().unwrap();
    let out = env.dir.path().join("hooks.log");
    let leak = LeakCheck::new(&[env.marker()]);
    let hook = |name: &str| serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read s; echo {name} \"$s\" >> {}", out.display())]});
    env.config(|v| {
        v["hooks"] = serde_json::json!({
            "prestart": [hook("prestart")], "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")], "poststop": [hook("poststop")]
        });
    });
    let id = unique_id("hooks");
    let o = oci(&env, &["run", "--bundle", b, &id]);
    assert!(o.status.success(), "{}", err(&o));
    let log = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{log}"
    );
    for l in log.lines() {
        let st: Value = serde_json::from_str(l.split_once(' ').unwrap().1).unwrap();
        assert_eq!(st["id"], id.as_str());
    }
    // A failing createRuntime hook fails create and leaves nothing.
    env.config(|v| v["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]}));
    let o = oci(&env, &["create", "--bundle", b, "hookfail"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("createRuntime"), "{}", err(&o));
    assert!(!env.root("berth").join("hookfail").exists());
    // A hook that hangs is killed at its timeout.
    env.config(|v| v["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}));
    let t = std::time::Instant::now();
    let o = oci(&env, &["create", "--bundle", b, "hooktimeout"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("timed out"), "{}", err(&o));
    assert!(t.elapsed().as_secs() < 10);
    leak.assert_clean();
}

#[test]
fn exec_into_running_container() {
    let env = Env::new(&["sleep", "1000"]);
    let b = env.bundle.to_str().unwrap();
    let id = unique_id("exec");
    let leak = LeakCheck::new(&[env.marker()]);
    detached(&env, b, &id);
    let o = oci(
        &env,
        &[
            "exec",
            "--env",
            "FOO=bar",
            "--cwd",
            "/tmp",
            &id,
            "sh",
            "-c",
            "echo $FOO; pwd; hostname; exit 4",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert_eq!(text(&o), "bar\n/tmp\nberth\n");
    let o = oci(&env, &["exec", &id, "nosuchcmd"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("executable file not found"), "{}", err(&o));
    assert!(oci(&env, &["delete", "--force", &id]).status.success());
    leak.assert_clean();
}

#[test]
fn spec_and_features() {
    let env = Env::new(&["true"]);
    let d = env.dir.path().join("spec");
    std::fs::create_dir(&d).unwrap();
    let o = oci(&env, &["spec", "--bundle", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    let v: Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["root"]["path"], "rootfs");
    let f: Value = serde_json::from_str(&text(&oci(&env, &["features"]))).unwrap();
    assert!(
        f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "pid")
    );
    assert!(f["hooks"].as_array().unwrap().len() == 6);
    let o = Command::new(berth())
        .args(["--systemd-cgroup", "state", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(err(&o).contains("systemd"), "{}", err(&o));
    let _ = default_config(&["true"]);
}

#[test]
fn cgroups_limits_pause_update() {
    let env = Env::new(&["sleep", "1000"]);
    let b = env.bundle.to_str().unwrap();
    let id = unique_id("cgrt");
    let mut leak = LeakCheck::new(&[env.marker()]);
    leak.add_marker(id.clone());
    env.config(|v| {
        v["linux"]["cgroupsPath"] = serde_json::json!(format!("/{id}"));
        v["linux"]["resources"]["pids"] = serde_json::json!({"limit": 50});
        v["linux"]["resources"]["memory"] = serde_json::json!({"limit": 104857600});
    });
    detached(&env, b, &id);
    let dir = |ctl: &str| PathBuf::from(format!("/sys/fs/cgroup/{ctl}/{id}"));
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(read(dir("pids").join("pids.max")).trim(), "50");
    assert_eq!(
        read(dir("memory").join("memory.limit_in_bytes")).trim(),
        "104857600"
    );
    assert!(oci(&env, &["pause", &id]).status.success());
    let st: Value = serde_json::from_str(&text(&oci(&env, &["state", &id]))).unwrap();
    assert_eq!(st["status"], "paused");
    assert!(oci(&env, &["resume", &id]).status.success());
    let st: Value = serde_json::from_str(&text(&oci(&env, &["state", &id]))).unwrap();
    assert_eq!(st["status"], "running");
    let res = env.dir.path().join("res.json");
    std::fs::write(&res, r#"{"pids":{"limit":60}}"#).unwrap();
    let o = oci(&env, &["update", "--resources", res.to_str().unwrap(), &id]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(read(dir("pids").join("pids.max")).trim(), "60");
    let o = oci(&env, &["events", "--stats", &id]);
    let ev: Value = serde_json::from_str(text(&o).lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "stats");
    let o = oci(&env, &["kill", "--all", &id, "KILL"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = oci(&env, &["delete", "--force", &id]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!dir("pids").exists());
    leak.assert_clean();
}

#[test]
fn seccomp_like_runc() {
    let env = Env::new(&["true"]);
    let leak = LeakCheck::new(&[env.marker()]);
    env.config(|v| {
        v["process"]["args"] = serde_json::json!([
            "sh",
            "-c",
            "mkdir /tmp/x 2>&1; echo rc=$?; grep Seccomp: /proc/self/status"
        ]);
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let (ours, runc) = run_both(&env);
    assert!(runc.status.success(), "runc: {}", err(&runc));
    assert!(ours.status.success(), "berth-oci: {}", err(&ours));
    assert!(text(&ours).contains("rc=1"), "{}", text(&ours));
    assert_eq!(text(&ours), text(&runc));
    leak.assert_clean();
}

/// `events | head -1`: when the reader goes away the runtime exits quietly, no panic.
#[test]
fn events_exits_quietly_when_stdout_closes() {
    use std::io::BufRead;
    let env = Env::new(&["sleep", "1000"]);
    let b = env.bundle.to_str().unwrap();
    let id = unique_id("evrt");
    let mut leak = LeakCheck::new(&[env.marker()]);
    leak.add_marker(id.clone());
    env.config(|v| {
        v["linux"]["cgroupsPath"] = serde_json::json!(format!("/{id}"));
    });
    detached(&env, b, &id);
    let mut child = Command::new(berth())
        .arg("--root")
        .arg(env.root("berth"))
        .args(["events", "--interval", "1s", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "stats");
    // The reader is dropped: the next write (a second later) meets a closed pipe.
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "events: {:?} {}", o.status, err(&o));
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
    let o = oci(&env, &["delete", "--force", &id]);
    assert!(o.status.success(), "{}", err(&o));
    leak.assert_clean();
}

/// Receive the pty master that `create --console-socket` sends over SCM_RIGHTS.
fn recv_master(l: &std::os::unix::net::UnixListener) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    // Bounded wait: a runtime that never connects fails the test instead of hanging it.
    l.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nothing connected to the console socket in 20 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("accept on the console socket: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this fd in our table; we own it.
            return unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd in the console socket message");
}

/// Read the pty until the slave side is closed (EIO) or 20 s pass.
fn read_pty(master: &std::os::fd::OwnedFd) -> String {
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, 500u16).unwrap() == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `create --console-socket` with `process.terminal`: the engine gets the pty master,
/// and the process sees a /dev/pts terminal as stdio, as with runc.
fn terminal_run(env: &Env, rt: &Path, tag: &str) -> String {
    let sock = env.dir.path().join(format!("console-{tag}.sock"));
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let id = unique_id(tag);
    let receiver = std::thread::spawn(move || recv_master(&l));
    let errf = env.dir.path().join(format!("stderr-{tag}"));
    let st = Command::new(rt)
        .arg("--root")
        .arg(env.root(tag))
        .args(["create", "--console-socket", sock.to_str().unwrap()])
        .args(["--bundle", env.bundle.to_str().unwrap(), &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&errf).unwrap())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "{tag} create: {}",
        std::fs::read_to_string(&errf).unwrap_or_default()
    );
    let master = receiver.join().unwrap();
    let o = cmd(rt, &env.root(tag), &["start", &id]);
    assert!(o.status.success(), "{tag} start: {}", err(&o));
    let out = read_pty(&master);
    let o = cmd(rt, &env.root(tag), &["delete", "--force", &id]);
    assert!(o.status.success(), "{tag} delete: {}", err(&o));
    out
}

#[test]
fn terminal_over_console_socket_like_runc() {
    let env = Env::new(&["sh", "-c", "tty; echo ok"]);
    let leak = LeakCheck::new(&[env.marker()]);
    env.config(|v| v["process"]["terminal"] = serde_json::json!(true));
    let ours = terminal_run(&env, &berth(), "berth");
    let runc = terminal_run(&env, &require_cmd("runc"), "runc");
    assert!(
        ours.contains("/dev/pts/0"),
        "berth-oci pty output: {ours:?}"
    );
    assert!(ours.contains("ok"), "berth-oci pty output: {ours:?}");
    assert_eq!(ours, runc);
    leak.assert_clean();
}

#[test]
fn user_namespace_mappings_like_runc() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&[
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; ls -ld /; touch /tmp/w && echo wrote",
    ]);
    let leak = LeakCheck::new(&[env.marker()]);
    // The mapped root is an unprivileged host uid: it must be able to reach and own
    // the rootfs.
    for p in [env.dir.path(), env.bundle.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rootfs = env.bundle.join("rootfs");
    let st = Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success());
    env.config(|v| {
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map;
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
    });
    let (ours, runc) = run_both(&env);
    assert!(runc.status.success(), "runc: {}", err(&runc));
    assert!(ours.status.success(), "berth-oci: {}", err(&ours));
    let t = text(&ours);
    let mut lines = t.lines();
    assert_eq!(lines.next(), Some("0"), "{t}");
    assert_eq!(lines.next(), Some("0"), "{t}");
    let map: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{t}");
    assert!(t.contains("wrote"), "{t}");
    assert_eq!(t, text(&runc));
    leak.assert_clean();
}

/// `exec -d --tty --console-socket` into a running container, as engines call it: the
/// pty path of exec. (runc without -d ignores the socket and copies its own stdio.)
fn exec_tty(env: &Env, rt: &Path, tag: &str) -> String {
    let id = unique_id(tag);
    let st = Command::new(rt)
        .arg("--root")
        .arg(env.root(tag))
        .args(["run", "-d", "--bundle", env.bundle.to_str().unwrap(), &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{tag} run -d");
    let sock = env.dir.path().join(format!("exec-console-{tag}.sock"));
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || recv_master(&l));
    let child = Command::new(rt)
        .arg("--root")
        .arg(env.root(tag))
        .args([
            "exec",
            "-d",
            "--tty",
            "--console-socket",
            sock.to_str().unwrap(),
        ])
        .args([&id, "sh", "-c", "tty; echo exec-ok"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let master = receiver.join().unwrap();
    let out = read_pty(&master);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{tag} exec: {}", err(&o));
    let o = cmd(rt, &env.root(tag), &["delete", "--force", &id]);
    assert!(o.status.success(), "{tag} delete: {}", err(&o));
    out
}

#[test]
fn exec_tty_over_console_socket_like_runc() {
    let env = Env::new(&["sleep", "1000"]);
    let leak = LeakCheck::new(&[env.marker()]);
    let ours = exec_tty(&env, &berth(), "berth");
    let runc = exec_tty(&env, &require_cmd("runc"), "runc");
    assert!(ours.contains("/dev/pts/"), "berth-oci pty output: {ours:?}");
    assert!(ours.contains("exec-ok"), "berth-oci pty output: {ours:?}");
    assert_eq!(ours, runc);
    leak.assert_clean();
}

/// Exec joins the container's user namespace: the new process is mapped root too.
#[test]
fn exec_into_user_namespace_like_runc() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&["sleep", "1000"]);
    let leak = LeakCheck::new(&[env.marker()]);
    for p in [env.dir.path(), env.bundle.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let st = Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(env.bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(st.success());
    env.config(|v| {
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map;
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
    });
    let b = env.bundle.to_str().unwrap();
    let mut outs = Vec::new();
    for (tag, rt) in [("berth", berth()), ("runc", require_cmd("runc"))] {
        let id = unique_id(tag);
        let st = Command::new(&rt)
            .arg("--root")
            .arg(env.root(tag))
            .args(["run", "-d", "--bundle", b, &id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{tag} run -d");
        let script = "id -u; cat /proc/self/uid_map";
        let o = cmd(&rt, &env.root(tag), &["exec", &id, "sh", "-c", script]);
        assert!(o.status.success(), "{tag} exec: {}", err(&o));
        let same_ns = cmd(
            &rt,
            &env.root(tag),
            &[
                "exec",
                &id,
                "sh",
                "-c",
                "[ $(readlink /proc/self/ns/user) = $(readlink /proc/1/ns/user) ] && echo same",
            ],
        );
        outs.push(text(&o) + &text(&same_ns));
        let o = cmd(&rt, &env.root(tag), &["delete", "--force", &id]);
        assert!(o.status.success(), "{tag} delete: {}", err(&o));
    }
    let t = &outs[0];
    assert!(t.starts_with("0\n"), "{t}");
    assert!(t.contains("same"), "{t}");
    let map: Vec<_> = t.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{t}");
    assert_eq!(outs[0], outs[1]);
    leak.assert_clean();
}
