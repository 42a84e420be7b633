//! `berth attach` end to end: stdin of a `run -d -i` container held open by its
//! monitor and reached by `echo x | berth attach`, output and exit code through
//! attach, signals proxied, a terminal with the detach keys, and `exec -t` getting
//! a pty. Private roots, the busybox fixture image, and a leak check each.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{LeakCheck, TestRoots};

fn setup() -> (TestRoots, LeakCheck) {
    TestRoots::with_busybox()
}

fn berth(roots: &TestRoots, args: &[&str]) -> Output {
    roots.output(args)
}

fn ok(roots: &TestRoots, args: &[&str]) -> String {
    roots.ok(args)
}

/// Collects what `r` yields on a thread.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

fn wait_text(seen: &Mutex<Vec<u8>>, what: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if text.contains(what) {
            return;
        }
        assert!(
            Instant::now() < end,
            "no {what:?} within {timeout:?}: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("berth attach did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_reaches_stdin_output_exit_code_and_proxies_signals() {
    let (roots, leaks) = setup();
    ok(
        &roots,
        &[
            "run",
            "-d",
            "-i",
            "--name",
            "in",
            "busybox",
            "sh",
            "-c",
            "read l; echo got:$l; echo oops >&2; exit 3",
        ],
    );
    // the monitor keeps stdin open: the container still waits for its line
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ok(&roots, &["inspect", "-f", "{{.State.Status}}", "in"]).trim(),
        "running"
    );
    let mut child = roots
        .berth()
        .args(["attach", "in"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap(); // and closed: echo hi |
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    wait_text(&out, "got:hi", Duration::from_secs(2));
    wait_text(&err, "oops", Duration::from_secs(2));
    assert_eq!(status.code(), Some(3));

    // signals berth attach receives reach the container (--sig-proxy, the default)
    ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "sig",
            "busybox",
            "sh",
            "-c",
            "trap 'echo trapped; exit 9' TERM; while true; do echo tick; sleep 0.2; done",
        ],
    );
    let mut child = roots
        .berth()
        .args(["attach", "sig"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    wait_text(&out, "tick", Duration::from_secs(10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    wait_text(&out, "trapped", Duration::from_secs(2));
    assert_eq!(status.code(), Some(9));

    let stopped = berth(&roots, &["attach", "in"]);
    assert_ne!(stopped.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&stopped.stderr).contains("start it first"),
        "{stopped:?}"
    );
    ok(&roots, &["rm", "-f", "in", "sig"]);
    ok(&roots, &["network", "rm", "bridge"]);
    leaks.assert_clean();
}

#[test]
fn attach_terminal_detach_keys_and_exec_tty() {
    let (roots, leaks) = setup();
    ok(
        &roots,
        &[
            "run",
            "-d",
            "-i",
            "-t",
            "--network",
            "none",
            "--name",
            "tt",
            "busybox",
            "sh",
        ],
    );
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut cmd = roots.berth();
    cmd.args(["attach", "tt"])
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; the pty becomes the
    // child's terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let seen = collect(master.try_clone().unwrap());
    // typed until the shell answers (the client may still be connecting)
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        master.write_all(b"echo a-$((40+2))\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if String::from_utf8_lossy(&seen.lock().unwrap()).contains("a-42") {
            break;
        }
        assert!(Instant::now() < end, "no echo through attach");
    }
    master.write_all(&[0x10, 0x11]).unwrap(); // ctrl-p ctrl-q
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        ok(&roots, &["inspect", "-f", "{{.State.Status}}", "tt"]).trim(),
        "running",
        "detaching stopped the container"
    );
    let _ = master.as_raw_fd();
    // exec -t gets a terminal of its own
    let tty = ok(&roots, &["exec", "-t", "tt", "tty"]);
    assert!(tty.trim().starts_with("/dev/pts/"), "{tty:?}");
    let notty = berth(&roots, &["exec", "tt", "tty"]);
    assert!(
        String::from_utf8_lossy(&notty.stdout).contains("not a tty"),
        "{notty:?}"
    );
    ok(&roots, &["rm", "-f", "tt"]);
    drop(master);
    leaks.assert_clean();
}
