//! Real engines run their containers on berth-oci: podman 4.3 (+ conmon), containerd
//! 1.6 (runc v2 shim, driven by ctr) and dockerd 20.10, all from Debian's packages.
//!
//! Every test starts its engine with private roots, state directories and sockets in a
//! temp dir (never the host's defaults), stops it, and checks with [`LeakCheck`] that
//! nothing stayed behind. The command lines the engines send are recorded in
//! `fixtures/engine-calls/*.txt` (set `BERTH_RECORD_ENGINE_CALLS=1` and run with
//! `--test-threads=1` to record them again) and `replay_recorded_engine_calls` runs each
//! recorded shape against berth-oci on a real bundle.
//!
//! Host-wide leftovers the engines make whatever the test does, and which are not
//! removed because other users share them: podman's `/libpod_parent/conmon` cgroup
//! (only `kube play`, pods ignore `--cgroup-parent`), and the empty directories
//! `/run/containerd/s` (shim sockets, a compiled-in path in containerd 1.6) and
//! `/run/docker/plugins`.

use anyhow::{Context, Result, bail};
use integration_tests::{
    LeakCheck, bin_path, busybox_bundle, require_cmd, require_root, unique_id, write_config,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image every engine runs, as the berth image store names it.
const IMAGE: &str = "docker.io/library/busybox:latest";

/// What a finished command printed.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// A command line of an engine's client with its fixed leading arguments and env.
#[derive(Debug, Clone)]
struct Tool {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    /// Where stdout/stderr files go: a process the command leaves behind (conmon, a
    /// shim) must not hold a pipe we wait on.
    scratch: PathBuf,
}

impl Tool {
    fn new(program: PathBuf, scratch: &Path) -> Tool {
        Tool {
            program,
            args: Vec::new(),
            env: Vec::new(),
            scratch: scratch.to_path_buf(),
        }
    }

    fn arg(mut self, a: impl Into<OsString>) -> Tool {
        self.args.push(a.into());
        self
    }

    fn env(mut self, k: &str, v: impl Into<OsString>) -> Tool {
        self.env.push((k.to_owned(), v.into()));
        self
    }

    /// Runs with `args`, stdin from `stdin`, bounded to 120 s (`timeout -k 10`).
    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let tag = unique_id("out");
        let out_path = self.scratch.join(format!("{tag}.stdout"));
        let err_path = self.scratch.join(format!("{tag}.stderr"));
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "10", "120"])
            .arg(&self.program)
            .args(&self.args)
            .args(args)
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let status = match stdin {
            Some(text) => {
                let in_path = self.scratch.join(format!("{tag}.stdin"));
                fs::write(&in_path, text).unwrap();
                cmd.stdin(fs::File::open(&in_path).unwrap()).status()
            }
            None => cmd.stdin(Stdio::null()).status(),
        }
        .unwrap_or_else(|e| panic!("running {}: {e}", self.program.display()));
        let out = Out {
            code: status.code(),
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        };
        let _ = fs::remove_file(out_path);
        let _ = fs::remove_file(err_path);
        out
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None)
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.ok(),
            "{} {} failed ({:?}):\nstdout: {}\nstderr: {}",
            self.program.display(),
            args.join(" "),
            o.code,
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// The shell command line (for `script -c`, which needs one string).
    fn shell_line(&self, args: &[&str]) -> String {
        // through env(1): script(1) starts the line in a shell that has not our env
        let mut parts = vec!["env".to_owned()];
        parts.extend(
            self.env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_string_lossy())),
        );
        parts.push(self.program.display().to_string());
        parts.extend(self.args.iter().map(|a| a.to_string_lossy().into_owned()));
        parts.extend(args.iter().map(|a| a.to_string()));
        parts
            .iter()
            .map(|p| format!("'{}'", p.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Polls `f` until it returns true or `secs` pass.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test's scratch directory; its path is the leak marker.
fn temp_dir(prefix: &str) -> tempfile::TempDir {
    require_root();
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// Whether this run records the engines' command lines into the fixtures.
fn recording() -> bool {
    std::env::var_os("BERTH_RECORD_ENGINE_CALLS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The runtime path an engine gets: berth-oci itself, or, when recording, a wrapper
/// that appends its argv (tab-separated) to `dir/calls.log` and execs berth-oci.
fn runtime_path(dir: &Path) -> PathBuf {
    let berth = bin_path("berth-oci");
    if !recording() {
        return berth;
    }
    let wrapper = dir.join("berth-oci-recorder");
    let log = dir.join("calls.log");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nline=''\nfor a in \"$@\"; do line=\"$line$a\t\"; done\nprintf '%s\\n' \"$line\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            berth.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Flags (global or per verb) whose value is the next argument.
const VALUE_FLAGS: &[&str] = &[
    "--root",
    "--log",
    "--log-format",
    "--criu",
    "--bundle",
    "-b",
    "--pid-file",
    "--console-socket",
    "--process",
    "-p",
    "--format",
    "-f",
    "--resources",
    "-r",
    "--preserve-fds",
    "--cwd",
    "--env",
    "-e",
    "--user",
    "-u",
    "--interval",
];

/// Placeholder for the value of a path-valued flag in a fixture.
fn placeholder(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--root" => "<root>",
        "--log" => "<log>",
        "--bundle" | "-b" => "<bundle>",
        "--pid-file" => "<pid-file>",
        "--console-socket" => "<console-socket>",
        "--process" | "-p" => "<process>",
        _ => return None,
    })
}

/// One recorded argv with paths and ids replaced by placeholders: the shape of a call.
fn normalize(argv: &[String]) -> String {
    let mut out = Vec::new();
    let mut verb_seen = false;
    let mut positional = 0;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if let Some((flag, _)) = a.split_once('=').filter(|(f, _)| f.starts_with("--")) {
            match placeholder(flag) {
                Some(p) => out.push(format!("{flag}={p}")),
                None => out.push(a.clone()),
            }
        } else if a.starts_with('-') && a != "-" {
            out.push(a.clone());
            if VALUE_FLAGS.contains(&a.as_str()) && i + 1 < argv.len() {
                i += 1;
                out.push(placeholder(a).map_or_else(|| argv[i].clone(), str::to_owned));
            }
        } else if !verb_seen {
            verb_seen = true;
            out.push(a.clone());
        } else {
            // first positional after the verb is the container id; others (a signal,
            // an exec command) stay as recorded
            positional += 1;
            out.push(if positional == 1 {
                "<id>".into()
            } else {
                a.clone()
            });
        }
        i += 1;
    }
    out.join(" ")
}

fn fixture_path(engine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/engine-calls")
        .join(format!("{engine}.txt"))
}

/// When recording: merges the shapes in `dir/calls.log` into the engine's fixture
/// (existing lines first, new shapes appended in the order first seen).
fn save_calls(engine: &str, dir: &Path) {
    if !recording() {
        return;
    }
    let log = fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    let path = fixture_path(engine);
    let existing = fs::read_to_string(&path).unwrap_or_else(|_| {
        format!(
            "# Command lines {engine} sent to berth-oci (recorded by integration-tests/tests/engines.rs\n\
             # with BERTH_RECORD_ENGINE_CALLS=1); paths and ids normalized, one shape per line.\n"
        )
    });
    let mut lines: Vec<String> = existing.lines().map(str::to_owned).collect();
    for l in log.lines() {
        let argv: Vec<String> = l
            .split('\t')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let shape = normalize(&argv);
        if !lines.contains(&shape) {
            lines.push(shape);
        }
    }
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// The busybox image in an OCI layout at `dir/layout` (tagged [`IMAGE`]) and as a
/// docker-archive + oci-archive at `dir/busybox.tar`.
fn busybox_image(dir: &Path) -> (PathBuf, PathBuf) {
    let layout = dir.join("layout");
    let store = berth_image::Store::open(&layout).unwrap();
    berth_image::fixtures::busybox_image(&store, IMAGE).unwrap();
    let archive = dir.join("busybox.tar");
    let f = fs::File::create(&archive).unwrap();
    berth_image::archive::save(&store, &[IMAGE.to_owned()], f).unwrap();
    (layout, archive)
}

/// Removes the cgroup `name` (a top-level parent an engine was told to use) and
/// everything under it, in every hierarchy; engines leave such parents behind.
fn remove_cgroup_tree(name: &str) {
    fn rm(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(name);
        if dir.is_dir() {
            rm(&dir);
        }
    }
}

/// Stops a daemon we started: SIGTERM, up to 30 s, then SIGKILL.
fn stop_daemon(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a unix socket to accept connections (a daemon is up), or fails with its log.
fn wait_for_socket(sock: &Path, child: &mut Child, log: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "{what} exited ({st}) before serving {}:\n{}",
                sock.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not serve {} in 60 s:\n{}",
            sock.display(),
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------

/// podman with private storage, run root, tmp dir, network config and cgroup parent;
/// every container runs on berth-oci with its state under the temp dir.
struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    tool: Tool,
    /// Top-level cgroup of the test's containers and their conmons (name, path).
    cgroup_parent: String,
    cgroup_parent_path: String,
}

impl Podman {
    fn new() -> Podman {
        let podman = require_cmd("podman");
        require_cmd("conmon");
        let skopeo = require_cmd("skopeo");
        let dir = temp_dir("berth-eng-podman-");
        let d = dir.path();
        let runtime = runtime_path(d);
        let conf = d.join("containers.conf");
        // default_ulimits = []: podman's default nofile exceeds this host's hard limit
        fs::write(
            &conf,
            format!(
                "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\n[network]\nnetwork_config_dir = \"{}\"\n",
                d.join("netconf").display()
            ),
        )
        .unwrap();
        fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        fs::create_dir_all(d.join("netconf")).unwrap();
        let root = d.join("storage");
        let runroot = d.join("runroot");
        let tool = Tool::new(podman, d)
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--storage-driver")
            .arg("overlay")
            .arg("--runtime")
            .arg(&runtime)
            // conmon passes it on as berth-oci's --root: state stays in the temp dir
            .arg("--runtime-flag")
            .arg(format!("root={}", d.join("oci-state").display()))
            .arg("--cgroup-manager")
            .arg("cgroupfs")
            .env("CONTAINERS_CONF", &conf)
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"));
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.display(),
                runroot.display()
            ),
        )
        .unwrap();
        let (layout, _) = busybox_image(d);
        let dest = format!(
            "containers-storage:[overlay@{}+{}]{IMAGE}",
            root.display(),
            runroot.display()
        );
        Tool::new(skopeo, d)
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .ok(&[
                "copy",
                "--quiet",
                &format!("oci:{}:{IMAGE}", layout.display()),
                &dest,
            ]);
        let cgroup_parent = format!("berth-eng-{}", unique_id("podman"));
        Podman {
            dir,
            runtime,
            tool,
            cgroup_parent_path: format!("/{cgroup_parent}"),
            cgroup_parent,
        }
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// `podman run` options every test container gets.
    fn run_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run", "--network", "none", "--cgroup-parent"];
        v.push(&self.cgroup_parent_path);
        v.extend_from_slice(extra);
        v
    }

    fn teardown(&self) {
        self.clean();
        save_calls("podman", self.dir.path());
    }

    fn clean(&self) {
        let _ = self
            .tool
            .run(&["pod", "rm", "--all", "--force", "--time", "0"]);
        let _ = self.tool.run(&["rm", "--all", "--force", "--time", "0"]);
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.clean();
    }
}

#[test]
fn podman_run_attached_exit_code_and_rm() {
    let p = Podman::new();
    let mut leak = LeakCheck::new(&[p.marker()]);
    leak.add_marker(p.cgroup_parent.clone());
    let o = p.tool.run(&p.run_args(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out-line; echo err-line >&2; exit 3",
    ]));
    assert_eq!(o.code, Some(3), "exit code of the container: {o:?}");
    assert_eq!(o.stdout, "out-line\n");
    assert!(o.stderr.contains("err-line"), "{o:?}");
    // --rm: nothing listed afterwards
    assert_eq!(p.tool.ok(&["ps", "-a", "-q"]).trim(), "");
    // run -t under a pty: the container's stdio is a terminal (create --console-socket)
    let line = p
        .tool
        .shell_line(&p.run_args(&["--rm", "-t", IMAGE, "tty"]));
    let o = Tool::new(require_cmd("script"), p.dir.path()).run(&["-qec", &line, "/dev/null"]);
    assert!(o.ok() && o.stdout.contains("/dev/pts/0"), "run -t: {o:?}");

    // a missing executable: podman's 127 comes from runc's wording in berth-oci's error
    let o = p.tool.run(&p.run_args(&["--rm", IMAGE, "/no/such/binary"]));
    assert_eq!(o.code, Some(127), "missing binary must be 127: {o:?}");
    assert!(o.stderr.contains("no such file or directory"), "{o:?}");
    p.teardown();
    leak.assert_clean();
}

#[test]
fn podman_detached_logs_exec_pause_inspect_stop_kill_rm() {
    let p = Podman::new();
    let mut leak = LeakCheck::new(&[p.marker()]);
    leak.add_marker(p.cgroup_parent.clone());
    let name = unique_id("berth-eng-d");
    let id = p
        .tool
        .ok(&p.run_args(&[
            "-d",
            "--name",
            &name,
            IMAGE,
            "sh",
            "-c",
            "echo started; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.2; done",
        ]))
        .trim()
        .to_owned();
    leak.add_marker(id.clone());
    wait_until(20, "logs show 'started'", || {
        p.tool.ok(&["logs", &name]).contains("started")
    });

    // ps and inspect: running, on berth-oci
    let ps = p.tool.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains(&name) && ps.contains("Up"), "ps: {ps}");
    let runtime = p
        .tool
        .ok(&["inspect", "--format", "{{.OCIRuntime}}", &name]);
    assert_eq!(runtime.trim(), p.runtime.display().to_string());

    // exec without a tty: output and exit code
    let o = p
        .tool
        .run(&["exec", &name, "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!((o.code, o.stdout.as_str()), (Some(4), "in-exec\n"), "{o:?}");
    // exec -i: stdin reaches the process
    let o = p
        .tool
        .run_with(&["exec", "-i", &name, "cat"], Some("from-stdin\n"));
    assert_eq!(o.stdout, "from-stdin\n", "{o:?}");
    // exec -t under a pty (script gives podman a terminal): the process has a tty
    let line = p.tool.shell_line(&["exec", "-t", &name, "tty"]);
    let o = Tool::new(require_cmd("script"), p.dir.path()).run(&["-qec", &line, "/dev/null"]);
    assert!(o.ok(), "exec -t: {o:?}");
    assert!(o.stdout.contains("/dev/pts/"), "exec -t tty: {o:?}");

    // pause / unpause
    p.tool.ok(&["pause", &name]);
    let st = p
        .tool
        .ok(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(st.trim(), "paused");
    p.tool.ok(&["unpause", &name]);
    let st = p
        .tool
        .ok(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(st.trim(), "running");

    // stop: SIGTERM reaches the trap
    p.tool.ok(&["stop", "--time", "10", &name]);
    let st = p.tool.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(st.trim(), "exited 0");
    assert!(p.tool.ok(&["logs", &name]).contains("got-term"));
    p.tool.ok(&["rm", &name]);

    // kill: SIGKILL, exit 137
    let name2 = unique_id("berth-eng-k");
    let id2 = p
        .tool
        .ok(&p.run_args(&["-d", "--name", &name2, IMAGE, "sleep", "1000"]))
        .trim()
        .to_owned();
    leak.add_marker(id2);
    p.tool.ok(&["kill", &name2]);
    wait_until(20, "killed container exited", || {
        p.tool
            .ok(&["inspect", "--format", "{{.State.Status}}", &name2])
            .trim()
            == "exited"
    });
    let code = p
        .tool
        .ok(&["inspect", "--format", "{{.State.ExitCode}}", &name2]);
    assert_eq!(code.trim(), "137");
    p.tool.ok(&["rm", &name2]);

    // rm -f of a paused container: its frozen processes must die too (berth-oci
    // `delete --force` thaws after the SIGKILL, as runc does)
    let name3 = unique_id("berth-eng-pz");
    let id3 = p
        .tool
        .ok(&p.run_args(&["-d", "--name", &name3, IMAGE, "sleep", "1000"]))
        .trim()
        .to_owned();
    leak.add_marker(id3);
    p.tool.ok(&["pause", &name3]);
    p.tool.ok(&["rm", "--force", &name3]);
    assert_eq!(p.tool.ok(&["ps", "-a", "-q"]).trim(), "");
    p.teardown();
    leak.assert_clean();
}

#[test]
fn podman_kube_play_and_down() {
    let p = Podman::new();
    let mut leak = LeakCheck::new(&[p.marker()]);
    let app = unique_id("berth-sleeper");
    let kube = p.dir.path().join("deployment.yaml");
    fs::write(
        &kube,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\nspec:\n  replicas: 1\n  \
             selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n      labels:\n        \
             app: {app}\n    spec:\n      containers:\n      - name: sleeper\n        image: {IMAGE}\n        \
             command: [\"sleep\", \"1000\"]\n"
        ),
    )
    .unwrap();
    let kube = kube.to_str().unwrap();
    let out = p.tool.ok(&["kube", "play", "--network", "none", kube]);
    for id in out.lines().filter(|l| l.len() == 64) {
        leak.add_marker(id.to_owned());
    }
    let ps = p.tool.ok(&[
        "ps",
        "--format",
        "{{.ID}} {{.Names}} {{.Status}} {{.PodName}}",
        "--no-trunc",
    ]);
    for l in ps.lines() {
        if let Some(id) = l.split_whitespace().next() {
            leak.add_marker(id.to_owned());
        }
    }
    assert!(
        ps.lines()
            .any(|l| l.contains(&format!("{app}-pod-0-sleeper")) && l.contains("Up")),
        "the Deployment's container runs: {ps}"
    );
    // both the infra and the app container run on berth-oci
    let runtimes = p
        .tool
        .ok(&["ps", "-a", "--format", "{{.ID}}", "--no-trunc"]);
    for id in runtimes.lines() {
        let rt = p.tool.ok(&["inspect", "--format", "{{.OCIRuntime}}", id]);
        assert_eq!(rt.trim(), p.runtime.display().to_string());
    }
    let top = p
        .tool
        .ok(&["exec", &format!("{app}-pod-0-sleeper"), "ps", "-o", "args"]);
    assert!(top.contains("sleep 1000"), "{top}");
    let pods: Vec<String> = p
        .tool
        .ok(&["pod", "ps", "-q", "--no-trunc"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(pods.len(), 1, "one pod: {pods:?}");
    let out = p.tool.ok(&["kube", "down", kube]);
    assert!(out.contains("Pods removed"), "{out}");
    // podman 4.3 on a hybrid host removes the pod's cgroup from the v1 controllers only
    // and leaves it in name=systemd and the cgroup2 mount (with runc too); not ours
    for pod in &pods {
        remove_cgroup_tree(&format!("libpod_parent/{pod}"));
    }
    assert_eq!(p.tool.ok(&["ps", "-a", "-q"]).trim(), "");
    assert_eq!(p.tool.ok(&["pod", "ps", "-q"]).trim(), "");
    p.teardown();
    leak.assert_clean();
}

// ---------------------------------------------------------------------------------
// containerd + ctr
// ---------------------------------------------------------------------------------

/// containerd with its own config (root, state, grpc and ttrpc sockets in the temp
/// dir), the CRI plugin's `berth` runtime set to berth-oci through `BinaryName`.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    ctr: Tool,
    /// ctr's flags that make a container run on berth-oci with private state.
    run_flags: Vec<String>,
    namespace: String,
}

impl Containerd {
    fn start() -> Containerd {
        let containerd = require_cmd("containerd");
        require_cmd("containerd-shim-runc-v2");
        let ctr = require_cmd("ctr");
        let dir = temp_dir("berth-eng-containerd-");
        let d = dir.path();
        let runtime = runtime_path(d);
        let sock = d.join("containerd.sock");
        let config = d.join("config.toml");
        fs::write(&config, containerd_config(d, &runtime)).unwrap();
        let log = d.join("containerd.log");
        let mut child = Command::new(containerd)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_socket(&sock, &mut child, &log, "containerd");
        // cgroups land at /<namespace>/<id>: unique per test, removed at teardown
        let namespace = format!("berth-eng-{}", unique_id("ns"));
        let ctr = Tool::new(ctr, d)
            .arg("--address")
            .arg(&sock)
            .arg("--namespace")
            .arg(&namespace);
        let run_flags = vec![
            "--runc-binary".into(),
            runtime.display().to_string(),
            "--runc-root".into(),
            d.join("oci-state").display().to_string(),
            "--fifo-dir".into(),
            d.join("fifo").display().to_string(),
        ];
        Containerd {
            dir,
            child,
            log,
            ctr,
            run_flags,
            namespace,
        }
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// `ctr run` with the berth-oci flags, then `args`.
    fn run(&self, args: &[&str]) -> Out {
        let mut v: Vec<&str> = vec!["run"];
        v.extend(self.run_flags.iter().map(String::as_str));
        v.extend_from_slice(args);
        self.ctr.run(&v)
    }

    fn teardown(&mut self) {
        stop_daemon(&mut self.child);
        remove_cgroup_tree(&self.namespace);
        save_calls("containerd", self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop_daemon(&mut self.child);
        remove_cgroup_tree(&self.namespace);
    }
}

/// The config.toml the test (and the README) uses: private paths, and a CRI runtime
/// `berth` on the runc v2 shim with `BinaryName` = berth-oci beside the default runc.
fn containerd_config(d: &Path, runtime: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth.options]
  BinaryName = "{runtime}"
"#,
        root = d.join("root").display(),
        state = d.join("state").display(),
        sock = d.join("containerd.sock").display(),
        runtime = runtime.display(),
    )
}

#[test]
fn containerd_ctr_run_exec_kill_delete_metrics() {
    let mut c = Containerd::start();
    let mut leak = LeakCheck::new(&[c.marker()]);
    leak.add_marker(c.namespace.clone());

    // the CRI plugin loaded the berth runtime with BinaryName (what kubelet would use)
    let log = fs::read_to_string(&c.log).unwrap();
    assert!(
        log.contains("Start cri plugin") && log.contains("BinaryName:"),
        "CRI plugin with the berth runtime: {log}"
    );
    assert!(!log.contains("failed to load plugin io.containerd.grpc.v1.cri"));

    let (_, archive) = busybox_image(c.dir.path());
    let out = c.ctr.ok(&["images", "import", archive.to_str().unwrap()]);
    assert!(out.contains("busybox"), "{out}");
    let images = c.ctr.ok(&["images", "ls", "-q"]);
    assert!(images.lines().any(|l| l == IMAGE), "images: {images}");

    // attached: output and exit code
    let id = unique_id("att");
    let o = c.run(&[
        "--rm",
        IMAGE,
        &id,
        "sh",
        "-c",
        "echo hello-from-ctr; exit 5",
    ]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(5), "hello-from-ctr\n"),
        "{o:?}"
    );

    // with a terminal (ctr needs one itself: script gives it a pty)
    let id = unique_id("tty");
    let mut v: Vec<&str> = vec!["run"];
    v.extend(c.run_flags.iter().map(String::as_str));
    v.extend(["--rm", "-t", IMAGE, &id, "tty"]);
    let line = c.ctr.shell_line(&v);
    let o = Tool::new(require_cmd("script"), c.dir.path()).run(&["-qec", &line, "/dev/null"]);
    assert!(
        o.ok() && o.stdout.contains("/dev/pts/0"),
        "ctr run -t: {o:?}"
    );

    // detached
    let id = unique_id("det");
    c.run(&["-d", IMAGE, &id, "sleep", "1000"]);
    let tasks = c.ctr.ok(&["task", "ls"]);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING")),
        "{tasks}"
    );
    // exec: output and exit code
    let fifo = c.dir.path().join("fifo").display().to_string();
    let o = c.ctr.run(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        // else ctr makes its FIFOs under /run/containerd/fifo
        "--fifo-dir",
        &fifo,
        &id,
        "sh",
        "-c",
        "echo in-exec; exit 6",
    ]);
    assert_eq!((o.code, o.stdout.as_str()), (Some(6), "in-exec\n"), "{o:?}");
    // metrics: the cgroup figures through the shim
    let m = c.ctr.ok(&["task", "metrics", &id]);
    assert!(
        m.contains("memory.usage_in_bytes") && m.contains("pids.current"),
        "{m}"
    );
    // ps: the shim calls `ps --format json`
    let ps = c.ctr.ok(&["task", "ps", &id]);
    assert!(ps.lines().count() >= 2, "task ps: {ps}");
    c.ctr.ok(&["task", "pause", &id]);
    assert!(c.ctr.ok(&["task", "ls"]).contains("PAUSED"));
    c.ctr.ok(&["task", "resume", &id]);
    // kill: sleep as pid 1 ignores SIGTERM, so SIGKILL, to every process (--all)
    c.ctr
        .ok(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
    wait_until(20, "task stopped after SIGKILL", || {
        c.ctr
            .ok(&["task", "ls"])
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("STOPPED"))
    });
    c.ctr.ok(&["task", "delete", &id]);
    c.ctr.ok(&["containers", "rm", &id]);
    assert_eq!(c.ctr.ok(&["containers", "ls", "-q"]).trim(), "");
    c.teardown();
    leak.assert_clean();
}

// ---------------------------------------------------------------------------------
// dockerd
// ---------------------------------------------------------------------------------

/// dockerd 20.10 with private data root, exec root, pid file and socket, no bridge,
/// no iptables, a cgroup parent of its own and runtime `berth` from daemon.json.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    docker: Tool,
    cgroup_parent: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dockerd = require_cmd("dockerd");
        // Debian's client, matching the daemon (a newer one may shadow it on PATH)
        let docker = if Path::new("/usr/bin/docker").is_file() {
            PathBuf::from("/usr/bin/docker")
        } else {
            require_cmd("docker")
        };
        let dir = temp_dir("berth-eng-dockerd-");
        let d = dir.path();
        let runtime = runtime_path(d);
        let cgroup_parent = format!("berth-eng-{}", unique_id("docker"));
        let daemon_json = d.join("daemon.json");
        fs::write(
            &daemon_json,
            serde_json::to_string_pretty(&json!({
                "runtimes": {"berth": {"path": runtime}},
                "cgroup-parent": format!("/{cgroup_parent}"),
                "storage-driver": "overlay2",
            }))
            .unwrap(),
        )
        .unwrap();
        let sock = d.join("docker.sock");
        let log = d.join("dockerd.log");
        let mut child = Command::new(dockerd)
            .arg("--config-file")
            .arg(&daemon_json)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_socket(&sock, &mut child, &log, "dockerd");
        let docker = Tool::new(docker, d)
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .env("DOCKER_CONFIG", d.join("client"));
        // the socket accepts before the API is ready
        wait_until(60, "dockerd answers `docker version`", || {
            docker.run(&["version"]).ok()
        });
        Dockerd {
            dir,
            child,
            docker,
            cgroup_parent,
        }
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn teardown(&mut self) {
        let _ = self.docker.run(&["rm", "--force", "--volumes", "--all"]);
        let ids = self.docker.run(&["ps", "-a", "-q"]).stdout;
        for id in ids.split_whitespace() {
            let _ = self.docker.run(&["rm", "--force", id]);
        }
        stop_daemon(&mut self.child);
        remove_cgroup_tree(&self.cgroup_parent);
        save_calls("dockerd", self.dir.path());
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        stop_daemon(&mut self.child);
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

#[test]
fn dockerd_run_exec_logs_update_stop_rm() {
    let mut d = Dockerd::start();
    let mut leak = LeakCheck::new(&[d.marker()]);
    leak.add_marker(d.cgroup_parent.clone());
    let info = d.docker.ok(&["info", "--format", "{{json .Runtimes}}"]);
    assert!(info.contains("\"berth\""), "runtimes: {info}");

    let (_, archive) = busybox_image(d.dir.path());
    let out = d.docker.ok(&["load", "--input", archive.to_str().unwrap()]);
    assert!(out.contains("busybox:latest"), "{out}");

    // attached: output and exit code
    let o = d.docker.run(&[
        "run",
        "--rm",
        "--runtime",
        "berth",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo hello-from-docker; exit 7",
    ]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(7), "hello-from-docker\n"),
        "{o:?}"
    );
    // a missing executable is docker's 127, decided from berth-oci's error text
    let o = d.docker.run(&[
        "run",
        "--rm",
        "--runtime",
        "berth",
        "--network",
        "none",
        "busybox",
        "/no/such/binary",
    ]);
    assert_eq!(o.code, Some(127), "{o:?}");
    assert!(o.stderr.contains("no such file or directory"), "{o:?}");

    // detached, logs, exec, top, update, stop, rm
    let name = unique_id("berth-eng-dd");
    let id = d
        .docker
        .ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--runtime",
            "berth",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo started; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.2; done",
        ])
        .trim()
        .to_owned();
    leak.add_marker(id.clone());
    let rt = d
        .docker
        .ok(&["inspect", "--format", "{{.HostConfig.Runtime}}", &name]);
    assert_eq!(rt.trim(), "berth");
    wait_until(20, "docker logs show 'started'", || {
        d.docker.ok(&["logs", &name]).contains("started")
    });
    let o = d
        .docker
        .run(&["exec", &name, "sh", "-c", "echo in-exec; exit 8"]);
    assert_eq!((o.code, o.stdout.as_str()), (Some(8), "in-exec\n"), "{o:?}");
    let line = d.docker.shell_line(&["exec", "-t", &name, "tty"]);
    let o = Tool::new(require_cmd("script"), d.dir.path()).run(&["-qec", &line, "/dev/null"]);
    assert!(o.ok() && o.stdout.contains("/dev/pts/"), "exec -t: {o:?}");
    let top = d.docker.ok(&["top", &name]);
    assert!(top.contains("while true"), "docker top: {top}");
    // update: dockerd sends `update --resources -`; the limit reaches the cgroup
    d.docker
        .ok(&["update", "--memory", "64m", "--memory-swap", "128m", &name]);
    let limit = fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
        d.cgroup_parent
    ))
    .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    d.docker.ok(&["pause", &name]);
    let st = d
        .docker
        .ok(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(st.trim(), "paused");
    d.docker.ok(&["unpause", &name]);
    d.docker.ok(&["stop", "--time", "10", &name]);
    let st = d.docker.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(st.trim(), "exited 0");
    assert!(d.docker.ok(&["logs", &name]).contains("got-term"));
    d.docker.ok(&["rm", &name]);

    // run -t under a pty, then kill (SIGKILL: exit 137)
    let line = d.docker.shell_line(&[
        "run",
        "--rm",
        "-t",
        "--runtime",
        "berth",
        "--network",
        "none",
        "busybox",
        "tty",
    ]);
    let o = Tool::new(require_cmd("script"), d.dir.path()).run(&["-qec", &line, "/dev/null"]);
    assert!(
        o.ok() && o.stdout.contains("/dev/pts/0"),
        "docker run -t: {o:?}"
    );
    let name2 = unique_id("berth-eng-dk");
    let id2 = d
        .docker
        .ok(&[
            "run",
            "-d",
            "--name",
            &name2,
            "--runtime",
            "berth",
            "--network",
            "none",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_owned();
    leak.add_marker(id2);
    d.docker.ok(&["kill", &name2]);
    wait_until(20, "killed container exited", || {
        d.docker
            .ok(&["inspect", "--format", "{{.State.Status}}", &name2])
            .trim()
            == "exited"
    });
    let code = d
        .docker
        .ok(&["inspect", "--format", "{{.State.ExitCode}}", &name2]);
    assert_eq!(code.trim(), "137");
    d.docker.ok(&["rm", &name2]);
    assert_eq!(d.docker.ok(&["ps", "-a", "-q"]).trim(), "");
    d.teardown();
    leak.assert_clean();
}

// ---------------------------------------------------------------------------------
// replay of the recorded command lines
// ---------------------------------------------------------------------------------

/// One recorded shape, split into tokens.
#[derive(Debug, Clone)]
struct Shape {
    engine: String,
    line: String,
    tokens: Vec<String>,
}

impl Shape {
    /// The verb: the first token that is neither a flag nor a global flag's value.
    fn verb(&self) -> &str {
        let mut i = 0;
        while i < self.tokens.len() {
            let t = &self.tokens[i];
            if t.starts_with('-') {
                if !t.contains('=') && VALUE_FLAGS.contains(&t.as_str()) {
                    i += 1;
                }
            } else {
                return t;
            }
            i += 1;
        }
        ""
    }

    fn has(&self, flag: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t == flag || t.starts_with(&format!("{flag}=")))
    }
}

fn load_shapes() -> Vec<Shape> {
    let mut shapes = Vec::new();
    for engine in ["podman", "containerd", "dockerd"] {
        let path = fixture_path(engine);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixture {} missing: {e}", path.display()));
        for l in text.lines().map(str::trim) {
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            shapes.push(Shape {
                engine: engine.to_owned(),
                line: l.to_owned(),
                tokens: l.split(' ').map(str::to_owned).collect(),
            });
        }
    }
    shapes
}

/// A scratch area for the replay: one berth-oci state root, bundles, sockets.
struct Replay {
    dir: tempfile::TempDir,
    berth: PathBuf,
    root: PathBuf,
}

impl Replay {
    /// `shape` with its placeholders bound to real paths for container `id`.
    fn argv(
        &self,
        shape: &Shape,
        id: &str,
        bundle: &Path,
        extra: &BTreeMap<&str, PathBuf>,
    ) -> Vec<String> {
        let d = self.dir.path();
        let bind = |p: &str| -> String {
            match p {
                "<root>" => self.root.display().to_string(),
                "<log>" => d.join(format!("{id}.log.json")).display().to_string(),
                "<bundle>" => bundle.display().to_string(),
                "<pid-file>" => d
                    .join(format!("{id}.{}.pid", unique_id("p")))
                    .display()
                    .to_string(),
                "<id>" => id.to_owned(),
                other => extra
                    .get(other)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| other.to_owned()),
            }
        };
        shape
            .tokens
            .iter()
            .map(|t| match t.split_once('=') {
                Some((flag, p)) if flag.starts_with("--") && p.starts_with('<') => {
                    format!("{flag}={}", bind(p))
                }
                _ => bind(t),
            })
            .collect()
    }

    /// Runs berth-oci with `argv` (stdin from `stdin`); stdio to files, bounded.
    fn oci(&self, argv: &[String], stdin: Option<&str>) -> Out {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        Tool::new(self.berth.clone(), self.dir.path()).run_with(&a, stdin)
    }

    /// berth-oci with the plain runc flags (setup steps that are not under test).
    fn plain(&self, args: &[&str]) -> Out {
        Tool::new(self.berth.clone(), self.dir.path())
            .arg("--root")
            .arg(&self.root)
            .run(args)
    }

    fn status(&self, id: &str) -> String {
        let o = self.plain(&["state", id]);
        if !o.ok() {
            return "gone".into();
        }
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    fn bundle(&self, id: &str, args: &[&str], terminal: bool) -> PathBuf {
        let b = busybox_bundle(&self.dir.path().join(format!("bundle-{id}")), args).unwrap();
        if terminal {
            let mut v: Value =
                serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
            v["process"]["terminal"] = json!(true);
            write_config(&b, &v).unwrap();
        }
        b
    }

    /// A running `sleep` container made with plain flags.
    fn running(&self, id: &str) -> PathBuf {
        let b = self.bundle(id, &["sleep", "1000"], false);
        let o = self.plain(&["create", "--bundle", b.to_str().unwrap(), id]);
        assert!(o.ok(), "setup create {id}: {o:?}");
        let o = self.plain(&["start", id]);
        assert!(o.ok(), "setup start {id}: {o:?}");
        b
    }
}

/// A console socket that accepts one connection and returns the pty master it
/// receives; the caller keeps it open, as an engine does, while the container runs.
fn console_socket(path: &Path) -> std::thread::JoinHandle<Option<std::os::fd::OwnedFd>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return None,
            }
        };
        s.set_nonblocking(false).ok()?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg =
            recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).ok()?;
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed this fd in our table; we own it.
                return Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
            }
        }
        None
    })
}

/// Runs one recorded shape against berth-oci in the state its verb needs and checks
/// the outcome an engine relies on. Returns a failure description or `Ok`.
fn replay_one(r: &Replay, shape: &Shape) -> Result<()> {
    let id = unique_id("replay");
    let console = r.dir.path().join(format!("{id}.console"));
    let mut extra = BTreeMap::new();
    extra.insert("<console-socket>", console.clone());
    let verb = shape.verb().to_owned();
    // shown with a failure (leaked cgroups carry the id)
    println!("replay {id}: {}: {}", shape.engine, shape.line);
    let cleanup = |id: &str| {
        let _ = r.plain(&["delete", "--force", id]);
    };
    let check = |o: &Out| -> Result<()> {
        if o.ok() {
            Ok(())
        } else {
            bail!("exit {:?}: {}{}", o.code, o.stdout, o.stderr)
        }
    };
    let result = (|| -> Result<()> {
        match verb.as_str() {
            "create" => {
                let tty = shape.has("--console-socket");
                let b = r.bundle(&id, &["sleep", "1000"], tty);
                let recv = tty.then(|| console_socket(&console));
                let o = r.oci(&r.argv(shape, &id, &b, &extra), None);
                check(&o)?;
                let _master = match recv {
                    Some(h) => Some(
                        h.join()
                            .unwrap()
                            .context("no pty master on the console socket")?,
                    ),
                    None => None,
                };
                let st = r.status(&id);
                if st != "created" {
                    bail!("status after create is {st}");
                }
            }
            "start" => {
                let b = r.bundle(&id, &["sleep", "1000"], false);
                check(&r.plain(&["create", "--bundle", b.to_str().unwrap(), &id]))?;
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
                let st = r.status(&id);
                if st != "running" {
                    bail!("status after start is {st}");
                }
            }
            "exec" => {
                let b = r.running(&id);
                let tty = shape.has("--console-socket") || shape.has("--tty");
                let marker = format!("/tmp/{id}");
                let process = json!({
                    "terminal": tty,
                    "user": {"uid": 0, "gid": 0},
                    "args": ["sh", "-c", format!("echo done > {marker}")],
                    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                    "cwd": "/",
                });
                let pf = r.dir.path().join(format!("{id}.process.json"));
                fs::write(&pf, process.to_string())?;
                extra.insert("<process>", pf);
                let recv = tty.then(|| console_socket(&console));
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
                let _master = match recv {
                    Some(h) => Some(
                        h.join()
                            .unwrap()
                            .context("no pty master on the console socket")?,
                    ),
                    None => None,
                };
                // the exec'd process wrote its marker inside the container
                let ok = (0..100).any(|_| {
                    let o = r.plain(&["exec", &id, "cat", &marker]);
                    if o.ok() && o.stdout.trim() == "done" {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    false
                });
                if !ok {
                    bail!("the exec'd process did not run");
                }
            }
            "kill" => {
                let b = r.running(&id);
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
                let sig = shape.tokens.last().cloned().unwrap_or_default();
                // sleep as pid 1 ignores SIGTERM (no handler), like under runc
                if sig == "9" || sig == "KILL" || sig == "SIGKILL" {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while r.status(&id) != "stopped" {
                        if Instant::now() > deadline {
                            bail!("still {} 10 s after kill {sig}", r.status(&id));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            "pause" => {
                let b = r.running(&id);
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
                let st = r.status(&id);
                if st != "paused" {
                    bail!("status after pause is {st}");
                }
            }
            "resume" => {
                let b = r.running(&id);
                check(&r.plain(&["pause", &id]))?;
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
                let st = r.status(&id);
                if st != "running" {
                    bail!("status after resume is {st}");
                }
            }
            "ps" => {
                let b = r.running(&id);
                let o = r.oci(&r.argv(shape, &id, &b, &extra), None);
                check(&o)?;
                let pids: Vec<i32> = serde_json::from_str(o.stdout.trim())
                    .with_context(|| format!("ps output is not a JSON pid list: {}", o.stdout))?;
                if pids.is_empty() {
                    bail!("ps listed no pids");
                }
            }
            "update" => {
                let b = r.running(&id);
                // what dockerd sends on stdin for `docker update --memory 64m`
                let resources =
                    r#"{"memory":{"limit":67108864,"swap":134217728},"cpu":{"shares":0}}"#;
                check(&r.oci(&r.argv(shape, &id, &b, &extra), Some(resources)))?;
            }
            "delete" if !shape.has("--root") => {
                // recorded from podman's exit command, which does not pass the runtime
                // flags: it hit an empty default root; deleting what is not there must
                // succeed (with --force)
                let gone = unique_id("never-created");
                check(&r.oci(&r.argv(shape, &gone, r.dir.path(), &extra), None))?;
            }
            "delete" => {
                // a stopped container: deleted; then the same shape again on a container
                // that is gone must succeed with --force (engines delete twice)
                let b = r.running(&id);
                check(&r.plain(&["kill", &id, "9"]))?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while r.status(&id) != "stopped" {
                    if Instant::now() > deadline {
                        bail!("setup: container did not stop");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
                if r.status(&id) != "gone" {
                    bail!("still there after delete");
                }
                if shape.has("--force") {
                    check(&r.oci(&r.argv(shape, &id, &b, &extra), None))
                        .context("delete --force of a container already gone")?;
                }
            }
            "state" => {
                let b = r.running(&id);
                check(&r.oci(&r.argv(shape, &id, &b, &extra), None))?;
            }
            other => bail!("the replay does not know verb {other:?}"),
        }
        Ok(())
    })();
    cleanup(&id);
    result
}

#[test]
fn replay_recorded_engine_calls() {
    let dir = temp_dir("berth-eng-replay-");
    // replayed containers' cgroups are /<id>, ids from unique_id("replay")
    let leak = LeakCheck::new(&[
        dir.path().display().to_string(),
        format!("replay-{}-", std::process::id()),
    ]);
    let r = Replay {
        berth: bin_path("berth-oci"),
        root: dir.path().join("state"),
        dir,
    };
    let shapes = load_shapes();
    for engine in ["podman", "containerd", "dockerd"] {
        assert!(
            shapes.iter().any(|s| s.engine == engine),
            "no recorded calls for {engine}"
        );
    }
    let mut failures = Vec::new();
    for s in &shapes {
        if let Err(e) = replay_one(&r, s) {
            failures.push(format!("{}: `{}`: {e:#}", s.engine, s.line));
        }
    }
    assert!(
        failures.is_empty(),
        "recorded engine calls berth-oci does not handle like runc:\n  {}",
        failures.join("\n  ")
    );
    // cgroups of the replayed containers sit at /<id>; none may remain
    drop(r);
    leak.assert_clean();
}

#[test]
fn normalize_replaces_paths_and_ids() {
    let argv: Vec<String> = [
        "--root",
        "/run/x/moby",
        "--log",
        "/a/log.json",
        "--log-format",
        "json",
        "exec",
        "--process",
        "/tmp/p.json",
        "--detach",
        "--pid-file",
        "/a/pid",
        "abc123",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        normalize(&argv),
        "--root <root> --log <log> --log-format json exec --process <process> --detach --pid-file <pid-file> <id>"
    );
    let argv: Vec<String> = ["--root=/x", "kill", "0123abcd", "9"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(normalize(&argv), "--root=<root> kill <id> 9");
}
