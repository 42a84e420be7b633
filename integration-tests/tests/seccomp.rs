//! berth-seccomp end to end: filters compiled by berth are loaded into a forked child,
//! which then makes real syscalls; the parent checks what the child saw (errno values,
//! death by SIGSYS, answers from a seccomp agent).
//!
//! The filter is compiled in the parent before fork, as the runtime does. Syscalls are
//! made through `libc::syscall` with explicit numbers so libc cannot pick another one.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use berth_seccomp::{Filter, default_profile, recv_listener_fd, send_listener_fd};
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator as Op, LinuxSyscall,
};

/// What a forked child did: its wait status and the lines it wrote to the report pipe.
#[derive(Debug)]
struct Outcome {
    status: libc::c_int,
    report: String,
}

impl Outcome {
    fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }
    fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }
    fn assert_ok(&self) {
        assert_eq!(self.exit_code(), Some(0), "child failed: {self:?}");
    }
    /// The value the child reported for `key` (lines are `key value`).
    fn get(&self, key: &str) -> String {
        self.report
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("child did not report {key}: {self:?}"))
            .to_string()
    }
}

/// Forks; the child runs `f` with a writer to the report pipe and exits with its code.
/// Rust's allocator is glibc malloc, which is fork-safe, so the child may allocate.
fn in_child(f: impl FnOnce(&mut std::fs::File) -> i32) -> Outcome {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned here only.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `f` and then _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(r);
        let mut w = std::fs::File::from(w);
        let code = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut w))).unwrap_or(101);
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(w);
    let mut report = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut report)
        .expect("reading child report");
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    Outcome { status, report }
}

/// A raw syscall: Ok(return value) or Err(errno).
fn sys(nr: libc::c_long, args: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: every call site passes arguments the kernel validates (no pointers the
    // kernel would write through except to buffers owned by the caller).
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn errno_of(r: Result<i64, i32>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e,
    }
}

fn rule(names: &[&str], action: A, errno: Option<u32>, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.iter().map(|s| s.to_string()).collect());
    r.set_action(action);
    r.set_errno_ret(errno);
    if !args.is_empty() {
        r.set_args(Some(args));
    }
    r
}

fn arg(index: usize, op: Op, value: u64, value_two: Option<u64>) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    match value_two {
        Some(v) => b.value_two(v),
        None => b,
    }
    .build()
    .expect("all fields set")
}

fn profile(default: A, rules: Vec<LinuxSyscall>) -> LinuxSeccomp {
    let mut p = LinuxSeccomp::default();
    p.set_default_action(default);
    p.set_syscalls(Some(rules));
    p
}

/// getppid ignores its arguments, but the filter sees them: a harmless probe for
/// argument conditions.
fn getppid_with(arg0: u64) -> Result<i64, i32> {
    sys(libc::SYS_getppid, [arg0, 0, 0, 0, 0, 0])
}

fn load(filter: &Filter) -> Option<OwnedFd> {
    filter.load().expect("loading filter in child")
}

#[test]
fn errno_action_returns_the_chosen_errno() {
    integration_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let target =
        std::ffi::CString::new(dir.path().join("made").as_os_str().as_encoded_bytes()).unwrap();
    let filter = Filter::compile(&profile(
        A::ScmpActAllow,
        vec![
            rule(&["mkdirat", "mkdir"], A::ScmpActErrno, None, vec![]),
            rule(&["getppid"], A::ScmpActErrno, Some(38), vec![]),
        ],
    ))
    .unwrap();
    let out = in_child(|w| {
        load(&filter);
        let mk = sys(
            libc::SYS_mkdirat,
            [
                libc::AT_FDCWD as u64,
                target.as_ptr() as u64,
                0o700,
                0,
                0,
                0,
            ],
        );
        writeln!(w, "mkdirat {}", errno_of(mk)).unwrap();
        writeln!(w, "getppid {}", errno_of(getppid_with(0))).unwrap();
        writeln!(w, "getpid {}", errno_of(sys(libc::SYS_getpid, [0; 6]))).unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("mkdirat"), libc::EPERM.to_string());
    assert_eq!(out.get("getppid"), "38");
    assert_eq!(out.get("getpid"), "0");
    assert!(!dir.path().join("made").exists(), "mkdirat was not blocked");
}

#[test]
fn default_errno_ret_applies_to_unlisted_syscalls() {
    integration_tests::require_root();
    let mut p = profile(
        A::ScmpActErrno,
        vec![rule(
            &[
                "write",
                "exit",
                "exit_group",
                "getpid",
                "rt_sigreturn",
                "munmap",
                "close",
            ],
            A::ScmpActAllow,
            None,
            vec![],
        )],
    );
    p.set_default_errno_ret(Some(99));
    let filter = Filter::compile(&p).unwrap();
    let out = in_child(|w| {
        load(&filter);
        let ppid = errno_of(getppid_with(0));
        let pid = errno_of(sys(libc::SYS_getpid, [0; 6]));
        writeln!(w, "getppid {ppid}\ngetpid {pid}").unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("getppid"), "99");
    assert_eq!(out.get("getpid"), "0");
}

#[test]
fn kill_actions_end_the_child_with_sigsys() {
    integration_tests::require_root();
    for action in [A::ScmpActKill, A::ScmpActKillThread, A::ScmpActKillProcess] {
        let filter = Filter::compile(&profile(
            A::ScmpActAllow,
            vec![rule(&["getppid"], action, None, vec![])],
        ))
        .unwrap();
        let out = in_child(|_| {
            load(&filter);
            let _ = getppid_with(0);
            0
        });
        assert_eq!(out.signal(), Some(libc::SIGSYS), "{action:?}: {out:?}");
    }
}

static TRAPPED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigsys(_: libc::c_int) {
    TRAPPED.store(true, Ordering::SeqCst);
}

#[test]
fn trap_delivers_a_catchable_sigsys() {
    integration_tests::require_root();
    let filter = Filter::compile(&profile(
        A::ScmpActAllow,
        vec![rule(&["getppid"], A::ScmpActTrap, None, vec![])],
    ))
    .unwrap();
    let out = in_child(|w| {
        // SAFETY: installing a handler that only stores to an atomic.
        unsafe { libc::signal(libc::SIGSYS, on_sigsys as *const () as libc::sighandler_t) };
        load(&filter);
        let _ = getppid_with(0);
        writeln!(w, "trapped {}", TRAPPED.load(Ordering::SeqCst)).unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("trapped"), "true");
}

#[test]
fn trace_without_tracer_fails_with_enosys_and_log_allows() {
    integration_tests::require_root();
    let filter = Filter::compile(&profile(
        A::ScmpActAllow,
        vec![
            rule(&["getppid"], A::ScmpActTrace, Some(5), vec![]),
            rule(&["getpid"], A::ScmpActLog, None, vec![]),
        ],
    ))
    .unwrap();
    let parent = std::process::id();
    let out = in_child(|w| {
        load(&filter);
        writeln!(w, "trace {}", errno_of(getppid_with(0))).unwrap();
        writeln!(w, "log {:?}", sys(libc::SYS_getpid, [0; 6])).unwrap();
        // SAFETY: getppid cannot fail; the filter logs and allows getpid only.
        writeln!(w, "real_pid {}", std::process::id()).unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("trace"), libc::ENOSYS.to_string());
    assert_eq!(out.get("log"), format!("Ok({})", out.get("real_pid")));
    assert_ne!(out.get("real_pid"), parent.to_string());
}

#[test]
fn every_argument_operator_filters_as_specified() {
    integration_tests::require_root();
    // (op, value, valueTwo, an arg that matches, an arg that does not)
    let cases = [
        (Op::ScmpCmpNe, 5, None, 6, 5),
        (Op::ScmpCmpLt, 5, None, 4, 5),
        (Op::ScmpCmpLe, 5, None, 5, 6),
        (Op::ScmpCmpEq, 5, None, 5, 4),
        (Op::ScmpCmpGe, 5, None, 5, 4),
        (Op::ScmpCmpGt, 5, None, 6, 5),
        (Op::ScmpCmpMaskedEq, 0xf0, Some(0x30), 0x3f, 0x4f),
    ];
    for (op, value, two, hit, miss) in cases {
        let filter = Filter::compile(&profile(
            A::ScmpActAllow,
            vec![rule(
                &["getppid"],
                A::ScmpActErrno,
                Some(77),
                vec![arg(0, op, value, two)],
            )],
        ))
        .unwrap();
        let out = in_child(|w| {
            load(&filter);
            writeln!(w, "hit {}", errno_of(getppid_with(hit))).unwrap();
            writeln!(w, "miss {}", errno_of(getppid_with(miss))).unwrap();
            0
        });
        out.assert_ok();
        assert_eq!(out.get("hit"), "77", "{op:?} {value} with {hit}");
        assert_eq!(out.get("miss"), "0", "{op:?} {value} with {miss}");
    }
}

#[test]
fn personality_allowed_only_for_zero() {
    integration_tests::require_root();
    let filter = Filter::compile(&profile(
        A::ScmpActAllow,
        vec![rule(
            &["personality"],
            A::ScmpActErrno,
            None,
            vec![arg(0, Op::ScmpCmpNe, 0, None)],
        )],
    ))
    .unwrap();
    let out = in_child(|w| {
        load(&filter);
        let zero = sys(libc::SYS_personality, [0, 0, 0, 0, 0, 0]);
        let other = sys(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]);
        writeln!(w, "zero {}\nother {}", errno_of(zero), errno_of(other)).unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("zero"), "0");
    assert_eq!(out.get("other"), libc::EPERM.to_string());
}

/// Waits until `fd` is readable, failing the test after 10 s instead of hanging.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, what: &str) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert!(n == 1, "timed out waiting for {what}");
}

#[test]
fn notify_sends_listener_fd_and_agent_answers() {
    integration_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut p = profile(
        A::ScmpActAllow,
        vec![rule(&["getppid"], A::ScmpActNotify, None, vec![])],
    );
    p.set_listener_path(Some(sock.clone()));
    p.set_listener_metadata(Some("berth-test-meta".into()));
    let filter = Filter::compile(&p).unwrap();
    assert!(filter.has_notify());

    // The child runs in the background while this thread plays the agent, so its
    // report is collected by a helper thread of the parent (the child is a process).
    let child = std::thread::spawn({
        let sock = sock.clone();
        move || {
            in_child(|w| {
                let fd = load(&filter).expect("notify profile yields a listener fd");
                let state = serde_json::json!({
                    "ociVersion": "1.2.0",
                    "fds": ["seccompFd"],
                    "pid": std::process::id(),
                    "metadata": "berth-test-meta",
                    "state": {"ociVersion": "1.2.0", "id": "seccomp-test", "status": "creating",
                              "pid": std::process::id(), "bundle": "/nonexistent"},
                });
                send_listener_fd(&sock, fd.as_fd(), state.to_string().as_bytes()).unwrap();
                drop(fd);
                writeln!(w, "first {:?}", getppid_with(1)).unwrap();
                writeln!(w, "second {}", errno_of(getppid_with(2))).unwrap();
                0
            })
        }
    });

    wait_readable(listener.as_fd(), "the runtime to connect to listenerPath");
    let (stream, _) = listener.accept().unwrap();
    let (notify_fd, state) = recv_listener_fd(&stream).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["metadata"], "berth-test-meta");
    assert_eq!(state["fds"][0], "seccompFd");

    let getppid = ScmpSyscall::from_name("getppid").unwrap();
    wait_readable(notify_fd.as_fd(), "the first notification");
    let req = ScmpNotifReq::receive(notify_fd.as_raw_fd()).unwrap();
    assert_eq!(req.data.syscall, getppid);
    assert_eq!(req.data.args[0], 1);
    assert_eq!(i64::from(req.pid), state["pid"].as_i64().unwrap());
    ScmpNotifResp::new_val(req.id, 4242, ScmpNotifRespFlags::empty())
        .respond(notify_fd.as_raw_fd())
        .unwrap();

    wait_readable(notify_fd.as_fd(), "the second notification");
    let req = ScmpNotifReq::receive(notify_fd.as_raw_fd()).unwrap();
    assert_eq!(req.data.args[0], 2);
    ScmpNotifResp::new_error(req.id, -libc::EACCES, ScmpNotifRespFlags::empty())
        .respond(notify_fd.as_raw_fd())
        .unwrap();

    let out = child.join().unwrap();
    out.assert_ok();
    assert_eq!(out.get("first"), "Ok(4242)");
    assert_eq!(out.get("second"), libc::EACCES.to_string());
}

#[test]
fn default_profile_blocks_privileged_classes_and_allows_the_rest() {
    integration_tests::require_root();
    let filter = Filter::compile(&default_profile()).unwrap();
    let null = c"".as_ptr() as u64;
    let out = in_child(|w| {
        load(&filter);
        let mut check = |name: &str, r: Result<i64, i32>| {
            writeln!(w, "{name} {}", errno_of(r)).unwrap();
        };
        // Blocked classes. Every argument is also invalid, so a filter that failed to
        // block would get EINVAL/EFAULT/ENOENT, never a change to the host.
        check("keyctl", sys(libc::SYS_keyctl, [u64::MAX, 0, 0, 0, 0, 0]));
        check("add_key", sys(libc::SYS_add_key, [0; 6]));
        check("request_key", sys(libc::SYS_request_key, [0; 6]));
        check(
            "unshare_user",
            sys(
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            ),
        );
        check(
            "unshare_ns",
            sys(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
        );
        check(
            "unshare_net",
            sys(
                libc::SYS_unshare,
                [libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0],
            ),
        );
        check("setns", sys(libc::SYS_setns, [u64::MAX, 0, 0, 0, 0, 0]));
        check("mount", sys(libc::SYS_mount, [0; 6]));
        check("umount2", sys(libc::SYS_umount2, [null, 0, 0, 0, 0, 0]));
        check("pivot_root", sys(libc::SYS_pivot_root, [0; 6]));
        check(
            "kexec_load",
            sys(libc::SYS_kexec_load, [0, 0, 0, u64::MAX, 0, 0]),
        );
        check("init_module", sys(libc::SYS_init_module, [0; 6]));
        check(
            "finit_module",
            sys(libc::SYS_finit_module, [u64::MAX, 0, 0, 0, 0, 0]),
        );
        check("delete_module", sys(libc::SYS_delete_module, [0; 6]));
        check("bpf", sys(libc::SYS_bpf, [u64::MAX, 0, 0, 0, 0, 0]));
        check("perf_event_open", sys(libc::SYS_perf_event_open, [0; 6]));
        check(
            "userfaultfd",
            sys(libc::SYS_userfaultfd, [u64::MAX, 0, 0, 0, 0, 0]),
        );
        check(
            "clock_settime",
            sys(libc::SYS_clock_settime, [u64::MAX, 0, 0, 0, 0, 0]),
        );
        check("settimeofday", sys(libc::SYS_settimeofday, [0; 6]));
        check("adjtimex", sys(libc::SYS_adjtimex, [0; 6]));
        check("reboot", sys(libc::SYS_reboot, [0; 6]));
        check("swapon", sys(libc::SYS_swapon, [null, 0, 0, 0, 0, 0]));
        check("quotactl", sys(libc::SYS_quotactl, [0; 6]));
        check("io_uring_setup", sys(libc::SYS_io_uring_setup, [0; 6]));
        check(
            "personality_bad",
            sys(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]),
        );
        check("clone3", sys(libc::SYS_clone3, [0; 6]));
        // Newer than this libseccomp knows: ENOSYS, so libc would fall back.
        check("future_syscall", sys(1000, [0; 6]));
        // Allowed.
        check(
            "personality_query",
            sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
        );
        check(
            "unshare_files",
            sys(libc::SYS_unshare, [libc::CLONE_FILES as u64, 0, 0, 0, 0, 0]),
        );
        check("getpid", sys(libc::SYS_getpid, [0; 6]));
        let mut fds = [0i32; 2];
        check(
            "pipe2",
            sys(libc::SYS_pipe2, [fds.as_mut_ptr() as u64, 0, 0, 0, 0, 0]),
        );
        let msg = b"hi";
        check(
            "write",
            sys(
                libc::SYS_write,
                [fds[1] as u64, msg.as_ptr() as u64, 2, 0, 0, 0],
            ),
        );
        let mut buf = [0u8; 2];
        check(
            "read",
            sys(
                libc::SYS_read,
                [fds[0] as u64, buf.as_mut_ptr() as u64, 2, 0, 0, 0],
            ),
        );
        writeln!(w, "read_back {}", String::from_utf8_lossy(&buf)).unwrap();
        // fork (clone without namespace flags) still works.
        // SAFETY: the grandchild exits immediately.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain exit of the grandchild.
            unsafe { libc::_exit(7) };
        }
        let mut st = 0;
        // SAFETY: pid is our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        writeln!(w, "fork_exit {}", libc::WEXITSTATUS(st)).unwrap();
        0
    });
    out.assert_ok();
    let eperm = libc::EPERM.to_string();
    for blocked in [
        "keyctl",
        "add_key",
        "request_key",
        "unshare_user",
        "unshare_ns",
        "unshare_net",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "clock_settime",
        "settimeofday",
        "adjtimex",
        "reboot",
        "swapon",
        "quotactl",
        "io_uring_setup",
        "personality_bad",
    ] {
        assert_eq!(
            out.get(blocked),
            eperm,
            "{blocked} not blocked: {}",
            out.report
        );
    }
    assert_eq!(
        out.get("clone3"),
        libc::ENOSYS.to_string(),
        "clone3 must fall back to clone"
    );
    for allowed in [
        "personality_query",
        "unshare_files",
        "getpid",
        "pipe2",
        "write",
        "read",
    ] {
        assert_eq!(out.get(allowed), "0", "{allowed} blocked: {}", out.report);
    }
    assert_eq!(out.get("read_back"), "hi");
    assert_eq!(out.get("fork_exit"), "7");
}

#[test]
fn default_profile_compiles_and_loads_fast() {
    integration_tests::require_root();
    let spec = default_profile();
    // Warm up once (libseccomp probes the kernel API level on first use).
    Filter::compile(&spec).unwrap();
    let runs: u32 = 50;
    let t = Instant::now();
    for _ in 0..runs {
        Filter::compile(&spec).unwrap();
    }
    let compile = t.elapsed() / runs;
    let cache = tempfile::tempdir().unwrap();
    Filter::compile_cached(&spec, cache.path()).unwrap();
    let t = Instant::now();
    for _ in 0..runs {
        Filter::compile_cached(&spec, cache.path()).unwrap();
    }
    let cached = t.elapsed() / runs;
    let filter = Filter::compile(&spec).unwrap();
    let out = in_child(|w| {
        // One load, as a container init does (filters stack, so no loop here).
        let t = Instant::now();
        filter.load().unwrap();
        let load = t.elapsed();
        writeln!(w, "load_us {}", load.as_micros()).unwrap();
        0
    });
    out.assert_ok();
    let load: u128 = out.get("load_us").parse().unwrap();
    eprintln!(
        "default profile: {} bpf insns, compile {} us, cached compile {} us (means of {runs}), load {load} us",
        filter.program().len(),
        compile.as_micros(),
        cached.as_micros()
    );
    // Generous bounds for a loaded 2-core CI machine; the report quotes real figures.
    assert!(compile.as_micros() < 500_000, "compile took {compile:?}");
    assert!(cached.as_micros() < 5_000, "cached compile took {cached:?}");
    assert!(load < 5_000, "load took {load} us");
}

/// The default profile in a real container (runc from Debian as the loader): a busybox
/// shell works normally, while namespace creation and mounting are refused.
#[test]
fn default_profile_runs_a_busybox_shell_under_runc() {
    integration_tests::require_root();
    let runc = integration_tests::require_cmd("runc");
    let dir = tempfile::tempdir().unwrap();
    let bundle = integration_tests::busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "echo hello; ls / >/dev/null && echo ls=$?; \
             unshare -U true; echo unshare=$?; \
             mount -t tmpfs none /tmp; echo mount=$?",
        ],
    )
    .unwrap();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["linux"]["seccomp"] = serde_json::to_value(default_profile()).unwrap();
    integration_tests::write_config(&bundle, &config).unwrap();
    let id = integration_tests::unique_id("seccomp-default");
    let leaks = integration_tests::LeakCheck::new(&[id.as_str()]);
    let out = std::process::Command::new(runc)
        .arg("--root")
        .arg(dir.path().join("runc-root"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runc failed: {stdout}\n{stderr}");
    assert!(stdout.contains("hello\nls=0\n"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("unshare=1"),
        "unshare not refused: {stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("mount=1") || stdout.contains("mount=255"),
        "mount not refused: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    leaks.assert_clean();
}

#[test]
fn load_needs_no_new_privs_or_cap_sys_admin() {
    integration_tests::require_root();
    let filter = Filter::compile(&profile(
        A::ScmpActAllow,
        vec![rule(&["getppid"], A::ScmpActErrno, Some(42), vec![])],
    ))
    .unwrap();
    let out = in_child(|w| {
        // Becoming an unprivileged user drops every effective capability.
        // SAFETY: plain id changes in a single-threaded child.
        let gid = unsafe { libc::setresgid(65534, 65534, 65534) };
        // SAFETY: as above.
        let uid = unsafe { libc::setresuid(65534, 65534, 65534) };
        if gid != 0 || uid != 0 {
            return 3;
        }
        let first = filter.load().map(|_| ()).map_err(|e| e.to_string());
        writeln!(w, "without {first:?}").unwrap();
        // SAFETY: PR_SET_NO_NEW_PRIVS with the documented arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let second = filter.load().map(|_| ()).map_err(|e| e.to_string());
        writeln!(w, "with {second:?}").unwrap();
        writeln!(w, "getppid {}", errno_of(getppid_with(0))).unwrap();
        0
    });
    out.assert_ok();
    let without = out.get("without");
    assert!(
        without.contains("no_new_privs or CAP_SYS_ADMIN"),
        "{without}"
    );
    assert_eq!(out.get("with"), "Ok(())");
    assert_eq!(out.get("getppid"), "42");
}

#[test]
fn cap_sys_admin_profile_opens_mount_and_namespaces_but_not_the_keyring() {
    integration_tests::require_root();
    let mut caps: Vec<String> = berth_seccomp::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    caps.push("CAP_SYS_ADMIN".into());
    let filter = Filter::compile(&berth_seccomp::default_profile_for(&caps)).unwrap();
    let out = in_child(|w| {
        load(&filter);
        // A private mount namespace for this child only; harmless to the host.
        let ns = sys(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]);
        writeln!(w, "unshare_ns {}", errno_of(ns)).unwrap();
        // NULL arguments: the kernel refuses with EFAULT once seccomp lets it through.
        writeln!(w, "mount {}", errno_of(sys(libc::SYS_mount, [0; 6]))).unwrap();
        let key = sys(libc::SYS_keyctl, [u64::MAX, 0, 0, 0, 0, 0]);
        writeln!(w, "keyctl {}", errno_of(key)).unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("unshare_ns"), "0");
    assert_ne!(out.get("mount"), libc::EPERM.to_string());
    assert_eq!(out.get("keyctl"), libc::EPERM.to_string());
}

/// A 32-bit syscall through `int 0x80`, the way an i386 binary in a container makes it.
#[cfg(target_arch = "x86_64")]
fn sys_i386(nr: u32, a0: u32, a1: u32, a2: u32) -> Result<i64, i32> {
    let ret: i64;
    // SAFETY: int 0x80 takes its arguments in eax, ebx, ecx, edx; rbx is saved and
    // restored around it because the compiler reserves it. No memory is passed.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov ebx, {a0:e}",
            "int 0x80",
            "pop rbx",
            a0 = in(reg) a0,
            inlateout("rax") i64::from(nr) => ret,
            in("rcx") a1,
            in("rdx") a2,
        );
    }
    // The 32-bit ABI returns -errno in eax.
    let ret = i64::from(ret as i32);
    if ret < 0 { Err(-ret as i32) } else { Ok(ret) }
}

/// The default profile covers the x86 compat ABI too (the program is compiled per
/// architecture and joined; this checks the join routes i386 calls to the x86 part).
#[cfg(target_arch = "x86_64")]
#[test]
fn default_profile_filters_i386_syscalls() {
    integration_tests::require_root();
    // i386 numbers: getpid 20, keyctl 288, unshare 310, personality 136.
    let before = in_child(|w| {
        writeln!(w, "getpid {:?}", sys_i386(20, 0, 0, 0)).unwrap();
        0
    });
    before.assert_ok();
    assert!(
        before.get("getpid").starts_with("Ok("),
        "int 0x80 does not work on this kernel (ia32 emulation off?): {before:?}"
    );
    let filter = Filter::compile(&default_profile()).unwrap();
    let out = in_child(|w| {
        load(&filter);
        writeln!(w, "getpid {:?}", sys_i386(20, 0, 0, 0)).unwrap();
        writeln!(w, "real_pid {}", std::process::id()).unwrap();
        writeln!(w, "keyctl {}", errno_of(sys_i386(288, u32::MAX, 0, 0))).unwrap();
        let userns = sys_i386(310, libc::CLONE_NEWUSER as u32, 0, 0);
        writeln!(w, "unshare_user {}", errno_of(userns)).unwrap();
        writeln!(
            w,
            "personality_bad {}",
            errno_of(sys_i386(136, 0x0040_0000, 0, 0))
        )
        .unwrap();
        0
    });
    out.assert_ok();
    assert_eq!(out.get("getpid"), format!("Ok({})", out.get("real_pid")));
    let eperm = libc::EPERM.to_string();
    assert_eq!(out.get("keyctl"), eperm);
    assert_eq!(out.get("unshare_user"), eperm);
    assert_eq!(out.get("personality_bad"), eperm);
}
