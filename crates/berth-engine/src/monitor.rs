//! The per-container monitor: a small process (no central daemon) that owns the
//! container's stdio, writes its log, reaps it, records its exit and applies the
//! restart policy. Programs start it by re-executing themselves with a hidden verb
//! that calls [`run`]; [`spawn`] does that and returns a [`Handle`] that reports the
//! start and the exit.
//!
//! The monitor talks to its starter over a SOCK_SEQPACKET socket on fd 3 (named by
//! `BERTH_MONITOR_FD`): `started PID`, `failed CODE MSG`, `exited CODE`, and for `-t`
//! a `pty` message carrying the pty master (so the starter can resize it).

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::attach::Hub;
use crate::config::RestartPolicy;
use crate::container::{Container, Engine, Launcher, state};
use crate::error::{Error, Result};
use crate::logs;
use crate::runtime::{Runtime, exit_code_for};

/// Name of the environment variable telling the monitor its status socket fd.
pub const FD_ENV: &str = "BERTH_MONITOR_FD";

/// Set to 1 when the monitor's stdin is the caller's (a foreground `run -i`).
const STDIN_ENV: &str = "BERTH_MONITOR_STDIN";

/// What a foreground starter shares with the monitor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attach {
    /// The container reads the caller's stdin (`-i`).
    pub stdin: bool,
    /// The container's output also goes to the caller's stdout/stderr.
    pub output: bool,
}

/// What the monitor reports.
#[derive(Debug)]
pub enum Event {
    /// The pty master of a `-t` container.
    Pty(OwnedFd),
    /// The container runs with this host pid.
    Started(i32),
    /// It could not start: docker exit code and message.
    Failed(u8, String),
    /// It exited with this code (128+n for signal n); output is flushed.
    Exited(i32),
}

/// The starter's side of a monitor.
#[derive(Debug)]
pub struct Handle {
    sock: OwnedFd,
    id: String,
}

fn send(sock: RawFd, msg: &str, fd: Option<RawFd>) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        hdr.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = space;
        // SAFETY: the control buffer has room for one header with one fd.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
    }
    // SAFETY: hdr points to live buffers for the duration of the call.
    let r = unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv(sock: RawFd) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = space;
    let n = loop {
        // SAFETY: hdr points to live buffers.
        let n = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break n as usize;
    };
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; the macros walk it within controllen.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
    }
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), fd))
}

impl Handle {
    /// The next report; an error when the monitor went away without one.
    pub fn next(&self) -> Result<Event> {
        let err = |detail: String| Error::Monitor {
            id: self.id.clone(),
            detail,
        };
        let (msg, fd) =
            recv(self.sock.as_raw_fd()).map_err(|e| err(format!("read status: {e}")))?;
        if msg.is_empty() {
            return Err(err("exited without reporting".into()));
        }
        let (verb, rest) = msg.split_once(' ').unwrap_or((&msg, ""));
        match verb {
            "pty" => fd
                .map(Event::Pty)
                .ok_or_else(|| err("pty message without fd".into())),
            "started" => Ok(Event::Started(rest.parse().unwrap_or(0))),
            "exited" => Ok(Event::Exited(rest.parse().unwrap_or(255))),
            "failed" => {
                let (code, m) = rest.split_once(' ').unwrap_or((rest, ""));
                Ok(Event::Failed(code.parse().unwrap_or(125), m.to_string()))
            }
            _ => Err(err(format!("unexpected report {msg:?}"))),
        }
    }

    /// Waits for the start: the pty master (for `-t`) and the pid, or the failure.
    pub fn started(&self) -> Result<(Option<OwnedFd>, i32)> {
        let mut pty = None;
        loop {
            match self.next()? {
                Event::Pty(fd) => pty = Some(fd),
                Event::Started(pid) => return Ok((pty, pid)),
                Event::Failed(code, msg) => return Err(Error::Runtime { msg, code }),
                Event::Exited(code) => {
                    return Err(Error::Monitor {
                        id: self.id.clone(),
                        detail: format!("exited with {code} before starting"),
                    });
                }
            }
        }
    }

    /// Waits for the exit code.
    pub fn exited(&self) -> Result<i32> {
        loop {
            match self.next()? {
                Event::Exited(code) => return Ok(code),
                Event::Failed(code, msg) => return Err(Error::Runtime { msg, code }),
                _ => {}
            }
        }
    }
}

/// Starts the monitor of `c` with `launcher`; it detaches (new session, reparented
/// away from the caller) before it starts the container.
pub fn spawn(
    engine: &Engine,
    c: &Container,
    launcher: &Launcher,
    attach: Option<Attach>,
) -> Result<Handle> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(Error::io("socketpair", "monitor")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: socketpair returned two fresh descriptors we now own.
    let (mine, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let a = attach.unwrap_or_default();
    let mut cmd = Command::new(&launcher.program);
    cmd.args(&launcher.args)
        .arg(&c.id)
        .env(FD_ENV, "3")
        .env(STDIN_ENV, if a.stdin { "1" } else { "0" })
        .stdin(if a.stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(if a.output {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(if a.output {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let raw = theirs.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::Monitor {
        id: c.id.clone(),
        detail: format!("start {}: {e}", launcher.program.display()),
    })?;
    drop(theirs);
    // the monitor forks and its first process exits at once
    let _ = child.wait();
    let _ = engine;
    Ok(Handle {
        sock: mine,
        id: c.id.clone(),
    })
}

/// The monitor's entry point (a hidden verb of the program calls it with the roots and
/// the container id). Returns the process exit code.
pub fn run(root: &Path, state_dir: &Path, id: &str) -> i32 {
    crate::trace::mark("monitor: entry");
    let status: Option<OwnedFd> = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        // SAFETY: F_GETFD only checks the descriptor exists.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        // SAFETY: the starter passed this descriptor to us alone.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    if let Some(s) = &status {
        // SAFETY: setting CLOEXEC on our own descriptor.
        unsafe { libc::fcntl(s.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: single-threaded here (nothing started a thread yet); the parent only exits.
    match unsafe { libc::fork() } {
        -1 => return 125,
        0 => {}
        _ => {
            // SAFETY: leaving without running destructors the child still needs.
            unsafe { libc::_exit(0) }
        }
    }
    // SAFETY: plain syscalls on our own process.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let status_fd = status.as_ref().map(|s| s.as_raw_fd());
    let report = |msg: &str, fd: Option<RawFd>| {
        if let Some(s) = status_fd {
            let _ = send(s, msg, fd);
        }
    };
    crate::trace::mark("monitor: forked");
    let engine = match Engine::open(root, state_dir) {
        Ok(e) => e,
        Err(e) => {
            report(&format!("failed 125 {e}"), None);
            return 125;
        }
    };
    crate::trace::mark("monitor: engine open");
    let rc = match supervise(&engine, id, &report) {
        Ok(code) => {
            crate::trace::mark("monitor: report exit");
            report(&format!("exited {code}"), None);
            0
        }
        Err(e) => {
            report(&format!("failed {} {e}", e.exit_code()), None);
            1
        }
    };
    // The starter has its answer; what follows only tidies up. Let go of the caller's
    // stdio first, so a caller reading our output to its end does not wait for it.
    drop(status);
    release_stdio();
    engine.empty_trash();
    crate::store::checkpoint(&engine.conn);
    crate::trace::mark("monitor: tidied");
    rc
}

/// Points stdin, stdout and stderr at /dev/null.
fn release_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto our own standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// One run of the container: its pid and the threads copying its output.
struct Running {
    pid: i32,
    pumps: Vec<std::thread::JoinHandle<()>>,
    /// The embedded DNS server in the container's namespace, while it runs.
    dns: Option<berth_net::dns::Server>,
}

fn supervise(engine: &Engine, id: &str, report: &dyn Fn(&str, Option<RawFd>)) -> Result<i32> {
    let c = engine.get(id)?;
    let me = std::process::id() as i64;
    engine.update(&c.id, "monitor_pid = ?2", &[&me])?;
    let rt = engine.runtime(&c)?;
    let policy = RestartPolicy::parse(&c.config.restart)?;
    let log = Arc::new(Mutex::new(
        logs::Writer::open(&engine.log_path(&c.id), logs::DEFAULT_MAX_SIZE)
            .map_err(Error::io("open log", engine.log_path(&c.id)))?,
    ));
    // clients of `berth attach` (best effort: without it the container still runs)
    let hub = Arc::new(Hub::default());
    let attach_sock = crate::attach::socket_path(engine, &c.id);
    if let Err(e) = crate::attach::listen(&attach_sock, hub.clone()) {
        tracing::warn!(container = id, error = %e, "attach socket");
    }
    crate::trace::mark("monitor: log and attach socket ready");
    let mut first = true;
    let code = loop {
        let c = engine.get(id)?;
        let running = match start_once(engine, &c, &rt, &log, &hub, report) {
            Ok(r) => r,
            Err(e) => {
                let code = i64::from(e.exit_code());
                let _ = rt.delete(&c.id);
                let _ = engine.update(&c.id, "error = ?2", &[&e.to_string()]);
                let _ = engine.record_exit(&c.id, code, state::EXITED);
                engine.release(&c.id);
                if first {
                    let _ = std::fs::remove_file(&attach_sock);
                    if c.config.auto_remove {
                        let _ = engine.remove(&c.id, true, true);
                    }
                    return Err(e);
                }
                break code as i32;
            }
        };
        if first {
            report(&format!("started {}", running.pid), None);
            first = false;
        }
        let code = reap(running.pid);
        crate::trace::mark("monitor: reaped");
        // the runtime's delete runs while the output drains and the exit is recorded
        let mut deleting = rt.spawn_delete(&c.id).ok();
        let mut deleted = || {
            match deleting.take() {
                Some(mut child) => {
                    if !child.wait().is_ok_and(|s| s.success()) {
                        let _ = rt.delete(&c.id);
                    }
                }
                None => {
                    let _ = rt.delete(&c.id);
                }
            };
        };
        for p in running.pumps {
            let _ = p.join();
        }
        drop(running.dns);
        hub.finish(code);
        crate::trace::mark("monitor: output drained");
        let now = match engine.get(id) {
            Ok(c) => c,
            Err(_) => {
                deleted();
                break code; // removed under us
            }
        };
        let stopped = now.stop_requested || now.state == state::REMOVING;
        if policy.should_restart(code, now.restart_count as u32, stopped) {
            engine.record_exit(&c.id, i64::from(code), state::RESTARTING)?;
            engine.release(&c.id);
            deleted();
            // back-off: 100 ms doubling, at most 10 s; a stop ends it
            let delay = Duration::from_millis(100u64 << now.restart_count.clamp(0, 7));
            let end = std::time::Instant::now() + delay.min(Duration::from_secs(10));
            let mut cancelled = false;
            while std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
                match engine.get(id) {
                    Ok(x) if !x.stop_requested && x.state != state::REMOVING => {}
                    _ => {
                        cancelled = true;
                        break;
                    }
                }
            }
            if cancelled {
                let _ = engine.update(
                    &c.id,
                    "state = CASE WHEN state = 'removing' THEN state ELSE 'exited' END",
                    &[],
                );
                break code;
            }
            engine.update(&c.id, "restart_count = restart_count + 1", &[])?;
            continue;
        }
        engine.record_exit(&c.id, i64::from(code), state::EXITED)?;
        crate::trace::mark("monitor: exit recorded");
        engine.release(id);
        crate::trace::mark("monitor: released");
        deleted();
        crate::trace::mark("monitor: runtime delete done");
        break code;
    };
    let _ = std::fs::remove_file(&attach_sock);
    let _ = crate::trash::discard(&engine.state, &engine.run_dir(id).join("bundle"));
    if let Ok(c) = engine.get(id)
        && c.config.auto_remove
        && c.state != state::REMOVING
    {
        let _ = engine.remove(id, true, true);
        crate::trace::mark("monitor: removed");
    }
    Ok(code)
}

/// Waits for `pid` (we are its subreaper), reaping any other orphan on the way.
fn reap(pid: i32) -> i32 {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // not our child (should not happen): poll until it is gone
            // SAFETY: signal 0 only checks existence.
            while unsafe { libc::kill(pid, 0) } == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            return 255;
        }
        if r == pid {
            if libc::WIFEXITED(st) {
                return libc::WEXITSTATUS(st);
            }
            if libc::WIFSIGNALED(st) {
                return 128 + libc::WTERMSIG(st);
            }
        }
    }
}

pub(crate) fn write_all_fd(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a live buffer.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

/// Copies `from` to the log (as `stream`), to `to` and to attached clients, until
/// EOF (or EIO of a pty).
fn pump(
    from: OwnedFd,
    stream: &'static str,
    to: RawFd,
    log: Arc<Mutex<logs::Writer>>,
    hub: Arc<Hub>,
) -> std::thread::JoinHandle<()> {
    let kind = if stream == "stderr" {
        crate::attach::STDERR
    } else {
        crate::attach::STDOUT
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            // SAFETY: reading into a live buffer.
            let n = unsafe {
                libc::read(
                    from.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if n <= 0 {
                return;
            }
            let data = &buf[..n as usize];
            if let Ok(mut l) = log.lock() {
                let _ = l.write(stream, data);
            }
            write_all_fd(to, data);
            hub.broadcast(kind, data);
        }
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe", "monitor")(e.into()))
}

fn start_once(
    engine: &Engine,
    c: &Container,
    rt: &Runtime,
    log: &Arc<Mutex<logs::Writer>>,
    hub: &Arc<Hub>,
    report: &dyn Fn(&str, Option<RawFd>),
) -> Result<Running> {
    let rundir = engine.run_dir(&c.id);
    let bundle = rundir.join("bundle");
    std::fs::create_dir_all(&bundle).map_err(Error::io("create directory", &bundle))?;
    engine.mount_rootfs(c)?;
    crate::trace::mark("monitor: rootfs mounted");
    let req = c.network_request();
    let att = crate::sandbox::setup_for(engine, c)?;
    crate::trace::mark("monitor: network set up");
    // bound before the container runs, so its first query finds the server
    let dns = match (&att.dns, &att.netns) {
        (Some(net), crate::network::Netns::Path(ns)) => {
            match crate::dns::serve(&engine.root, ns, net) {
                Ok(s) => Some(s),
                Err(e) => {
                    if !req.mode().is_joined() {
                        let _ = crate::network::teardown(
                            &engine.conn,
                            &engine.root,
                            &engine.state,
                            &c.id,
                        );
                    }
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    engine.update(
        &c.id,
        "attachment = ?2",
        &[&serde_json::to_string(&att).unwrap_or_default()],
    )?;
    let tmpl_path = engine.container_dir(&c.id).join("spec.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tmpl_path).map_err(Error::io("read", &tmpl_path))?)
            .map_err(|e| Error::invalid("container spec", e.to_string()))?;
    let hostname_file = if matches!(att.netns, crate::network::Netns::Host) {
        None
    } else {
        let p = rundir.join("hostname");
        std::fs::write(&p, format!("{}\n", req.hostname)).map_err(Error::io("write", &p))?;
        Some(p)
    };
    crate::spec::apply_network(&mut spec, &att, hostname_file.as_deref());
    if c.config.tty
        && let Some(ws) = caller_winsize()
    {
        spec["process"]["consoleSize"] =
            serde_json::json!({ "height": ws.ws_row, "width": ws.ws_col });
    }
    let cfgp = bundle.join("config.json");
    std::fs::write(&cfgp, serde_json::to_vec(&spec).unwrap_or_default())
        .map_err(Error::io("write", &cfgp))?;
    let pid_file = rundir.join("pid");
    let _ = std::fs::remove_file(&pid_file);
    let rlog = rundir.join("runtime.log");
    let _ = std::fs::remove_file(&rlog);
    let mut cmd = rt.command(Some(&rlog));
    // create and start in one runtime call (one exec less than create + start; a
    // command that cannot run still fails before anything of it runs)
    cmd.arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--pid-file")
        .arg(&pid_file);
    let mut pumps = Vec::new();
    let tty = c.config.tty;
    let mut console = None;
    let mut out_pipes = None;
    if tty {
        // sun_path holds 108 bytes: a short name next to the state, else in /tmp
        let mut sock = engine.state.join(format!("cs-{}.sock", &c.id[..12]));
        if sock.as_os_str().len() > 100 {
            sock = std::env::temp_dir().join(format!("berth-cs-{}.sock", &c.id[..16]));
        }
        let _ = std::fs::remove_file(&sock);
        let l =
            std::os::unix::net::UnixListener::bind(&sock).map_err(Error::io("listen on", &sock))?;
        cmd.arg("--console-socket").arg(&sock);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        console = Some((l, sock));
    } else {
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        let foreground_stdin = std::env::var(STDIN_ENV).is_ok_and(|v| v == "1");
        cmd.stdin(if !c.config.interactive {
            Stdio::null()
        } else if foreground_stdin {
            Stdio::inherit()
        } else {
            // -d -i: the monitor holds stdin open; `berth attach` writes into it
            let (ir, iw) = pipe()?;
            if let Ok(mut slot) = hub.input.lock() {
                *slot = Some(iw);
            }
            Stdio::from(ir)
        })
        .stdout(Stdio::from(ow))
        .stderr(Stdio::from(ew));
        out_pipes = Some((or, er));
    }
    cmd.arg(&c.id);
    crate::trace::mark("monitor: runtime run");
    let out = cmd.output().map_err(Error::io("run runtime", &rt.bin))?;
    crate::trace::mark("monitor: runtime run returned");
    if !out.status.success() {
        // berth-oci's own error went to the container's stderr pipe too: dropped
        // with it
        let msg = Runtime::last_log_message(&rlog)
            .or_else(|| {
                Some(String::from_utf8_lossy(&out.stderr).trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("{} create failed: {}", rt.bin.display(), out.status));
        let _ = crate::network::teardown(&engine.conn, &engine.root, &engine.state, &c.id);
        return Err(Error::Runtime {
            code: exit_code_for(&msg),
            msg,
        });
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Runtime {
            msg: format!("runtime wrote no pid to {}", pid_file.display()),
            code: 125,
        })?;
    if let Some((l, sock)) = console {
        let master = recv_console(&l).map_err(|e| Error::Runtime {
            msg: format!("console socket {}: {e}", sock.display()),
            code: 125,
        })?;
        let _ = std::fs::remove_file(&sock);
        // the size of the caller's terminal when there is one
        if let Some(ws) = caller_winsize() {
            // SAFETY: TIOCSWINSZ reads ws.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
        report("pty", Some(master.as_raw_fd()));
        if let (Ok(mut slot), Ok(m)) = (hub.pty.lock(), master.try_clone()) {
            *slot = Some(m);
        }
        if c.config.interactive {
            let m = master.try_clone().map_err(Error::io("dup", "pty master"))?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    // SAFETY: reading into a live buffer.
                    let n =
                        unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                    if n <= 0 {
                        return;
                    }
                    write_all_fd(m.as_raw_fd(), &buf[..n as usize]);
                }
            });
        }
        pumps.push(pump(master, "stdout", 1, log.clone(), hub.clone()));
    }
    if let Some((or, er)) = out_pipes {
        pumps.push(pump(or, "stdout", 1, log.clone(), hub.clone()));
        pumps.push(pump(er, "stderr", 2, log.clone(), hub.clone()));
    }
    let _ = std::io::stdout().flush();
    let now = crate::timefmt::now();
    engine.update(
        &c.id,
        "state = CASE WHEN state = 'removing' THEN state ELSE 'running' END, pid = ?2, started_at = ?3, finished_at = ''",
        &[&i64::from(pid), &now],
    )?;
    crate::trace::mark("monitor: running recorded");
    Ok(Running { pid, pumps, dns })
}

/// The window size of the terminal on our stdin or stdout (the caller's), if any.
fn caller_winsize() -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ writes into ws.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(ws);
        }
    }
    None
}

/// Accepts the runtime's connection on the console socket and takes the pty master.
fn recv_console(l: &std::os::unix::net::UnixListener) -> std::io::Result<OwnedFd> {
    l.set_nonblocking(true)?;
    let (conn, _) = l.accept()?;
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (_, fd) = recv(conn.as_raw_fd())?;
    fd.ok_or_else(|| std::io::Error::other("no pty master received"))
}

/// Convenience for hidden verbs: the launcher re-executing the current program with
/// `args` before the id.
pub fn self_launcher<I, S>(args: I) -> Result<Launcher>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program =
        std::env::current_exe().map_err(Error::io("find current executable", "/proc/self/exe"))?;
    Ok(Launcher {
        program,
        args: args
            .into_iter()
            .map(|s| s.as_ref().to_os_string())
            .collect(),
    })
}
