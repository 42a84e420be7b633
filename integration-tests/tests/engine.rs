//! End-to-end tests of the container engine through the `berth` CLI: run/exec output
//! and exit codes, detached containers and their logs, restart policies, stop, rm,
//! volumes, cp, concurrency, a real terminal, ps/inspect, and a killed monitor.
//! Every test uses private roots, the busybox fixture image, and a leak check.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{LeakCheck, TestRoots};

/// Private roots with the busybox image tagged `busybox:latest`.
fn setup() -> (TestRoots, LeakCheck) {
    TestRoots::with_busybox()
}

fn berth(roots: &TestRoots, args: &[&str]) -> Output {
    roots.output(args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs berth, asserts success, returns trimmed stdout.
fn ok(roots: &TestRoots, args: &[&str]) -> String {
    let o = berth(roots, args);
    assert!(
        o.status.success(),
        "berth {args:?} failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout).trim().to_string()
}

fn inspect(roots: &TestRoots, c: &str, fmt: &str) -> String {
    ok(roots, &["inspect", "-f", fmt, c])
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Containers and their directories: none may remain.
fn assert_no_containers(roots: &TestRoots) {
    assert_eq!(ok(roots, &["ps", "-aq"]), "", "containers left");
    for d in [
        roots.root().join("containers"),
        roots.state().join("containers"),
    ] {
        let n = std::fs::read_dir(&d).map(|r| r.count()).unwrap_or(0);
        assert_eq!(n, 0, "{} not empty", d.display());
    }
}

#[test]
fn run_output_and_exit_codes() {
    let (roots, leak) = setup();
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
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "echo",
            "hello",
        ],
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "hello\n".to_string())
    );
    // 127: not found; 126: cannot be run
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "no-such-command",
        ],
    );
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("executable file not found"),
        "{}",
        text(&o.stderr)
    );
    let o = berth(
        &roots,
        &["run", "--rm", "--network", "none", "busybox", "/etc"],
    );
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert_no_containers(&roots);
    // 125: unknown image, bad flag value, duplicate name; nothing half-created
    let o = berth(
        &roots,
        &[
            "run",
            "--pull",
            "never",
            "--network",
            "none",
            "no-such-image",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("no-such-image"),
        "{}",
        text(&o.stderr)
    );
    let o = berth(
        &roots,
        &[
            "run",
            "--restart",
            "sometimes",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("restart policy"),
        "{}",
        text(&o.stderr)
    );
    let o = berth(
        &roots,
        &[
            "run",
            "--memory",
            "lots",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert_no_containers(&roots);
    ok(
        &roots,
        &[
            "run",
            "--name",
            "one",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    let o = berth(
        &roots,
        &[
            "run",
            "--name",
            "one",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("already in use"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(ok(&roots, &["ps", "-a", "--format", "{{.Names}}"]), "one");
    assert_eq!(
        std::fs::read_dir(roots.root().join("containers"))
            .unwrap()
            .count(),
        1
    );
    ok(&roots, &["rm", "one"]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn detached_logs_after_cli_exit_and_follow() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo one; echo two >&2; sleep 1; echo three",
        ],
    );
    assert_eq!(id.len(), 64);
    leak.add_marker(id.clone());
    wait_for("first lines", Duration::from_secs(5), || {
        text(&berth(&roots, &["logs", &id]).stdout).contains("one")
    });
    let o = berth(&roots, &["logs", &id]);
    assert_eq!(text(&o.stdout), "one\n");
    assert_eq!(text(&o.stderr), "two\n");
    // -f ends by itself when the container exits, with everything
    let start = Instant::now();
    let o = berth(&roots, &["logs", "-f", &id]);
    assert!(start.elapsed() < Duration::from_secs(8));
    assert_eq!(text(&o.stdout), "one\nthree\n");
    assert_eq!(
        inspect(&roots, &id, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    let o = berth(&roots, &["logs", "--tail", "1", &id]);
    assert_eq!(text(&o.stdout), "three\n");
    let o = berth(&roots, &["logs", "-t", &id]);
    assert!(
        text(&o.stdout)
            .lines()
            .all(|l| l.len() > 31 && l.as_bytes()[4] == b'-'),
        "{}",
        text(&o.stdout)
    );
    // the log file is docker's json-file format
    let log = roots
        .root()
        .join("containers")
        .join(&id)
        .join(format!("{id}-json.log"));
    // stdout and stderr are copied by separate threads: find the stdout line
    let first: serde_json::Value = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["log"] == "one\n")
        .expect("stdout line in the json log");
    assert!(first["stream"] == "stdout" && first["time"].as_str().unwrap().ends_with('Z'));
    ok(&roots, &["rm", &id]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn restart_on_failure_restarts_exactly_twice() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--restart",
            "on-failure:2",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo attempt; exit 4",
        ],
    );
    leak.add_marker(id.clone());
    wait_for("final exit", Duration::from_secs(15), || {
        inspect(&roots, &id, "{{.State.Status}} {{.RestartCount}}") == "exited 2"
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        inspect(
            &roots,
            &id,
            "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}"
        ),
        "exited 2 4"
    );
    assert_eq!(
        text(&berth(&roots, &["logs", &id]).stdout),
        "attempt\n".repeat(3)
    );
    assert_eq!(ok(&roots, &["wait", &id]), "4");
    ok(&roots, &["rm", &id]);
    // `always` keeps going until stopped
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--restart",
            "always",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    leak.add_marker(id.clone());
    wait_for("restarts", Duration::from_secs(10), || {
        inspect(&roots, &id, "{{.RestartCount}}")
            .parse::<u32>()
            .unwrap_or(0)
            >= 2
    });
    ok(&roots, &["stop", &id]);
    assert_eq!(inspect(&roots, &id, "{{.State.Status}}"), "exited");
    ok(&roots, &["rm", &id]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn stop_trapping_and_ignoring_term() {
    let (roots, mut leak) = setup();
    let trap = ok(
        &roots,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 5' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let ignore = ok(
        &roots,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    leak.add_marker(trap.clone());
    leak.add_marker(ignore.clone());
    for id in [&trap, &ignore] {
        wait_for("ready", Duration::from_secs(5), || {
            text(&berth(&roots, &["logs", id]).stdout).contains("ready")
        });
    }
    let t = Instant::now();
    ok(&roots, &["stop", "-t", "5", &trap]);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "trapping container took {:?}",
        t.elapsed()
    );
    assert_eq!(
        inspect(&roots, &trap, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 5"
    );
    assert!(text(&berth(&roots, &["logs", &trap]).stdout).contains("bye"));
    let t = Instant::now();
    ok(&roots, &["stop", "-t", "1", &ignore]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(
        inspect(&roots, &ignore, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    ok(&roots, &["rm", &trap, &ignore]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn rm_force_of_running_and_auto_remove() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &["run", "-d", "--network", "none", "busybox", "sleep", "100"],
    );
    leak.add_marker(id.clone());
    let o = berth(&roots, &["rm", &id]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "rm of a running container must need -f"
    );
    assert_eq!(inspect(&roots, &id, "{{.State.Running}}"), "true");
    let pid: i32 = inspect(&roots, &id, "{{.State.Pid}}").parse().unwrap();
    ok(&roots, &["rm", "-f", &id]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "container process survived rm -f"
    );
    assert_no_containers(&roots);
    // --rm removes it on its own, detached too
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "sleep 0.3",
        ],
    );
    leak.add_marker(id.clone());
    wait_for("auto removal", Duration::from_secs(10), || {
        berth(&roots, &["inspect", &id]).status.code() != Some(0)
    });
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn volumes_survive_the_container() {
    let (roots, leak) = setup();
    let host = roots.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host\n").unwrap();
    let bind = format!("{}:/h:ro", host.display());
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "data:/data",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "cat /h/in.txt; echo kept > /data/f; touch /h/x 2>/dev/null || echo ro",
        ],
    );
    assert_eq!(text(&o.stdout), "from host\nro\n", "{}", text(&o.stderr));
    assert_eq!(ok(&roots, &["volume", "ls", "-q"]), "data");
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--mount",
            "type=volume,source=data,target=/d",
            "busybox",
            "cat",
            "/d/f",
        ],
    );
    assert_eq!(text(&o.stdout), "kept\n");
    // a new volume is filled from the image (copy-up), like docker
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "etcvol:/etc",
            "busybox",
            "true",
        ],
    );
    assert!(o.status.success());
    assert!(roots.root().join("volumes/etcvol/_data/passwd").is_file());
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--tmpfs",
            "/scratch",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "echo t > /scratch/x && cat /scratch/x; touch /nope 2>/dev/null || echo rofs",
        ],
    );
    assert_eq!(text(&o.stdout), "t\nrofs\n", "{}", text(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&roots, &["volume", "inspect", "data"])).unwrap();
    assert_eq!(v[0]["Name"], "data");
    ok(&roots, &["volume", "rm", "data", "etcvol"]);
    assert_eq!(ok(&roots, &["volume", "ls", "-q"]), "");
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn cp_both_ways_stays_inside() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "cpbox",
            "--network",
            "none",
            "busybox",
            "sleep",
            "100",
        ],
    );
    leak.add_marker(id.clone());
    let outside = roots.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host secret\n").unwrap();
    // symlinks in the container pointing at host paths
    let link_dir = format!(
        "mkdir -p {o}; ln -s {o} /tmp/out; ln -s {o}/secret /tmp/sec; echo inside > /tmp/f",
        o = outside.display()
    );
    ok(&roots, &["exec", "cpbox", "sh", "-c", &link_dir]);
    let src = roots.path().join("upload.txt");
    std::fs::write(&src, "uploaded\n").unwrap();
    ok(&roots, &["cp", src.to_str().unwrap(), "cpbox:/tmp/up.txt"]);
    assert_eq!(
        ok(&roots, &["exec", "cpbox", "cat", "/tmp/up.txt"]),
        "uploaded"
    );
    // through the link: lands in the container's own path, not the host's
    ok(
        &roots,
        &["cp", src.to_str().unwrap(), "cpbox:/tmp/out/evil"],
    );
    assert!(
        !outside.join("evil").exists(),
        "cp followed a symlink out of the container"
    );
    let inside = format!("cat {}/evil", outside.display());
    assert_eq!(
        ok(&roots, &["exec", "cpbox", "sh", "-c", &inside]),
        "uploaded"
    );
    let dest = roots.path().join("down");
    std::fs::create_dir(&dest).unwrap();
    ok(&roots, &["cp", "cpbox:/tmp/f", dest.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "inside\n");
    // copying a symlink out copies the link, never the host file it names
    ok(
        &roots,
        &["cp", "cpbox:/tmp/sec", dest.join("sec").to_str().unwrap()],
    );
    assert!(
        std::fs::symlink_metadata(dest.join("sec"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let o = berth(
        &roots,
        &[
            "cp",
            "cpbox:/tmp/out/secret",
            dest.join("s2").to_str().unwrap(),
        ],
    );
    assert!(
        !o.status.success()
            || std::fs::read_to_string(dest.join("s2")).unwrap_or_default() != "host secret\n"
    );
    ok(&roots, &["rm", "-f", "cpbox"]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn exec_output_and_exit_codes() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "ex",
            "-e",
            "FOO=bar",
            "--network",
            "none",
            "busybox",
            "sleep",
            "100",
        ],
    );
    leak.add_marker(id.clone());
    assert_eq!(ok(&roots, &["exec", "ex", "sh", "-c", "echo $FOO"]), "bar");
    assert_eq!(
        ok(
            &roots,
            &[
                "exec",
                "-e",
                "FOO=baz",
                "-w",
                "/tmp",
                "ex",
                "sh",
                "-c",
                "echo $FOO $(pwd)"
            ]
        ),
        "baz /tmp"
    );
    assert_eq!(
        ok(&roots, &["exec", "-u", "nobody", "ex", "id", "-u"]),
        "65534"
    );
    let o = berth(&roots, &["exec", "ex", "sh", "-c", "exit 9"]);
    assert_eq!(o.status.code(), Some(9));
    let o = berth(&roots, &["exec", "ex", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    let top = ok(&roots, &["top", "ex"]);
    assert!(top.contains("sleep 100"), "{top}");
    ok(&roots, &["pause", "ex"]);
    assert_eq!(inspect(&roots, "ex", "{{.State.Status}}"), "paused");
    ok(&roots, &["unpause", "ex"]);
    ok(&roots, &["rename", "ex", "ex2"]);
    assert_eq!(inspect(&roots, "ex2", "{{.Name}}"), "/ex2");
    let stats = ok(&roots, &["stats", "--no-stream", "ex2"]);
    assert!(stats.contains("ex2"), "{stats}");
    ok(&roots, &["rm", "-f", "ex2"]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn twenty_concurrent_detached_runs() {
    let (roots, leak) = setup();
    let children: Vec<_> = (0..20)
        .map(|_| {
            roots
                .berth()
                .args(["run", "-d", "--network", "none", "busybox", "sleep", "100"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        ids.push(text(&o.stdout).trim().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    let names = ok(&roots, &["ps", "--format", "{{.Names}} {{.State}}"]);
    let mut lines: Vec<&str> = names.lines().collect();
    assert_eq!(lines.len(), 20, "{names}");
    assert!(lines.iter().all(|l| l.ends_with(" running")), "{names}");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 20, "names not distinct: {names}");
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    ok(&roots, &args);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn interactive_terminal_exit_code() {
    let (roots, leak) = setup();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave.as_raw_fd();
    let mut cmd = roots.berth();
    cmd.args(["run", "-it", "--rm", "--network", "none", "busybox", "sh"]);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; the child gets the pty as its terminal.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let _ = slave;
    let mut child = cmd.spawn().unwrap();
    // the command keeps its copies of the slave until dropped: EOF needs them closed
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let out = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    std::thread::sleep(Duration::from_millis(1500));
    master.write_all(b"tty; echo in-$((6*7))\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    master.write_all(b"exit 7\n").unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "berth run -it did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(master);
    let seen = text(&out.join().unwrap_or_default());
    assert_eq!(status.code(), Some(7), "output: {seen}");
    assert!(seen.contains("in-42"), "{seen}");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn ps_and_inspect_fields() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--label",
            "tier=front",
            "-e",
            "A=1",
            "--network",
            "none",
            "--memory",
            "64m",
            "--restart",
            "on-failure:3",
            "busybox",
            "sleep",
            "100",
        ],
    );
    leak.add_marker(id.clone());
    let done = ok(
        &roots,
        &[
            "create",
            "--name",
            "idle",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    leak.add_marker(done.clone());
    assert_eq!(ok(&roots, &["ps", "-q"]), &id[..12]);
    assert_eq!(
        ok(&roots, &["ps", "-a", "-q", "--filter", "status=created"]),
        &done[..12]
    );
    assert_eq!(
        ok(
            &roots,
            &[
                "ps",
                "-a",
                "--filter",
                "label=tier=front",
                "--format",
                "{{.Names}}"
            ]
        ),
        "web"
    );
    assert_eq!(
        ok(
            &roots,
            &[
                "ps",
                "-a",
                "--filter",
                "name=idl",
                "--format",
                "{{.ID}} {{.State}}"
            ]
        ),
        format!("{} created", &done[..12])
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&roots, &["ps", "--format", "json"])).unwrap();
    assert_eq!(j["Names"], "web");
    let v: serde_json::Value = serde_json::from_str(&ok(&roots, &["inspect", "web"])).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/web");
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_i64().unwrap() > 1);
    assert!(c["State"]["StartedAt"].as_str().unwrap().starts_with("20"));
    assert_eq!(c["Config"]["Labels"]["tier"], "front");
    assert!(
        c["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "A=1")
    );
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(c["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(c["HostConfig"]["NetworkMode"], "none");
    ok(&roots, &["start", "-a", "idle"]);
    assert_eq!(
        inspect(&roots, "idle", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    ok(&roots, &["rm", "-f", "web", "idle"]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn killed_monitor_then_rm_force_cleans_everything() {
    let (roots, mut leak) = setup();
    let id = ok(
        &roots,
        &["run", "-d", "--network", "none", "busybox", "sleep", "100"],
    );
    leak.add_marker(id.clone());
    let cpid: i32 = inspect(&roots, &id, "{{.State.Pid}}").parse().unwrap();
    // find the monitor: the process whose command line names the container
    let monitor = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let s = text(&c);
                    s.contains("internal-monitor") && s.contains(&id)
                })
                .unwrap_or(false)
        })
        .expect("monitor process");
    // SAFETY: plain kill(2).
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    wait_for("monitor gone", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{monitor}/cmdline")).exists()
            || std::fs::read(format!("/proc/{monitor}/cmdline"))
                .map(|c| c.is_empty())
                .unwrap_or(true)
    });
    assert!(
        Path::new(&format!("/proc/{cpid}")).exists(),
        "container died with its monitor"
    );
    ok(&roots, &["rm", "-f", &id]);
    wait_for("container gone", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{cpid}")).exists()
    });
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[allow(dead_code)]
fn unused(_: Command) {}

#[test]
fn default_bridge_published_port_and_init() {
    let (roots, mut leak) = setup();
    let www = roots.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from httpd\n").unwrap();
    let port = integration_tests::registry::free_port().unwrap();
    let publish = format!("127.0.0.1:{port}:80");
    let bind = format!("{}:/www:ro", www.display());
    let id = ok(
        &roots,
        &[
            "run", "-d", "--name", "web", "-p", &publish, "-v", &bind, "busybox", "httpd", "-f",
            "-p", "80", "-h", "/www",
        ],
    );
    leak.add_marker(id.clone());
    leak.add_marker(id[..12].to_string());
    assert_eq!(
        ok(&roots, &["port", "web", "80"]),
        format!("127.0.0.1:{port}")
    );
    let mut body = String::new();
    wait_for("httpd answering", Duration::from_secs(10), || {
        match integration_tests::registry::http_get(&format!("127.0.0.1:{port}"), "/", &[]) {
            Ok((200, b)) => {
                body = b;
                true
            }
            _ => false,
        }
    });
    assert_eq!(body, "hello from httpd\n");
    assert!(inspect(&roots, "web", "{{.NetworkSettings.IPAddress}}").contains('.'));
    // --init: a small init is pid 1 and the command runs under it
    let o = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--init",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 6",
        ],
    );
    assert_eq!(o.status.code(), Some(6), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("/sbin/berth-init"),
        "{}",
        text(&o.stdout)
    );
    ok(&roots, &["rm", "-f", "web"]);
    assert_no_containers(&roots);
    leak.assert_clean();
}

#[test]
fn relative_roots_work_from_any_directory() {
    let (roots, _leaks) = setup();
    // `--root root --state state` from the directory holding both, as a user types it
    let o = Command::new(integration_tests::bin_path("berth"))
        .current_dir(roots.path())
        .env_remove("BERTH_ROOT")
        .env_remove("BERTH_STATE")
        .args(["--root", "root", "--state", "state"])
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "echo",
            "relative ok",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "run with relative roots failed: {}\n{}",
        o.status,
        text(&o.stderr)
    );
    assert_eq!(text(&o.stdout), "relative ok\n");
}
