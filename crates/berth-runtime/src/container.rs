//! The lifecycle verbs: create, start, run, state, kill, delete, exec, ps, list.

use crate::error::{Error, Result, io, sys};
use crate::process::{self as proc_, ExecArgs};
use crate::rootfs::Setup;
use crate::state::{State, Status, now_rfc3339, validate_id};
use crate::sys::{recv, send};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Options of `create` / `run`.
#[derive(Debug, Default, Clone)]
pub struct CreateOpts {
    /// State root (`--root`).
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds` (fds 3..3+N reach the container), plus LISTEN_FDS.
    pub preserve_fds: u32,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
}

// Sync protocol between the runtime and the init (one SEQPACKET message each):
// runtime -> init: b'G' + state json (go on), b'h' (hooks done), b'S' + state json (start).
// init -> runtime: b'H' (run createRuntime/prestart hooks), b'R' (ready), b'E' + text (error).

struct Cleanup<'a> {
    dir: &'a Path,
    pid: i32,
    cgroup: Option<Box<dyn berth_cgroups::CgroupManager>>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.pid > 0 {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork-like clone with namespace flags: clone3, falling back to clone.
fn clone_child(flags: u64) -> Result<i32> {
    // With CLONE_PARENT the child inherits our exit signal; clone3 wants 0 here.
    let parent = flags & libc::CLONE_PARENT as u64 != 0;
    let args = CloneArgs {
        flags,
        exit_signal: if parent { 0 } else { libc::SIGCHLD as u64 },
        ..Default::default()
    };
    // SAFETY: no stack is given, so the child continues on a copy of ours like fork; the
    // process is single-threaded.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args, std::mem::size_of::<CloneArgs>()) };
    if r >= 0 {
        return Ok(r as i32);
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
        return Err(sys(format!("clone3 with flags {flags:#x}")));
    }
    // SAFETY: as above, with the classic clone argument order of x86_64/aarch64.
    let r = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) };
    if r < 0 {
        return Err(sys(format!("clone with flags {flags:#x}")));
    }
    Ok(r as i32)
}

/// The pids of our own children (one thread: the process is single-threaded here).
fn own_children() -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Clone a child inside a user namespace (and the pid/time namespaces that only
/// apply to children): a first child joins `joins` in order, user first, and clones
/// with `flags` as our sibling (CLONE_PARENT), so the new process is our child and
/// its new namespaces belong to the joined user namespace. This is how a container
/// init enters a user namespace given by path, and how `exec` enters a container
/// whose pid namespace only its user namespace's owner may join (rootless). Returns
/// 0 in the new process and its pid in the caller.
fn clone_in_userns(joins: &[(RawFd, i32, &str)], flags: u64) -> Result<i32> {
    let before = own_children();
    let (ours, theirs) = crate::sys::seqpacket_pair()?;
    let mid = clone_child(0)?;
    if mid == 0 {
        drop(ours);
        let r = joins
            .iter()
            .try_for_each(|(fd, f, what)| setns(*fd, *f, what))
            .and_then(|()| clone_child(flags | libc::CLONE_PARENT as u64));
        match r {
            Ok(0) => {
                drop(theirs);
                return Ok(0);
            }
            Ok(_) => {
                let _ = send(theirs.as_raw_fd(), b"P");
                // SAFETY: leaving the intermediate child.
                unsafe { libc::_exit(0) }
            }
            Err(e) => {
                let mut m = vec![b'E'];
                m.extend(e.to_string().as_bytes());
                let _ = send(theirs.as_raw_fd(), &m);
                // SAFETY: leaving the intermediate child.
                unsafe { libc::_exit(1) }
            }
        }
    }
    drop(theirs);
    let reply = recv(ours.as_raw_fd());
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(mid, std::ptr::null_mut(), 0) };
    let reply = reply?;
    if reply.first() == Some(&b'E') {
        return Err(Error::Init(
            String::from_utf8_lossy(&reply[1..]).into_owned(),
        ));
    }
    // The pid the intermediate child saw is in its own pid namespace view (a pid
    // namespace joined by path differs from ours): find the new child in ours.
    match own_children()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect::<Vec<_>>()[..]
    {
        [pid] => Ok(pid),
        _ => Err(Error::Init(format!(
            "cannot find the process cloned in user namespace {}",
            joins.first().map_or("", |j| j.2)
        ))),
    }
}

fn ns_flag(t: LinuxNamespaceType) -> i32 {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

fn setns(fd: RawFd, flag: i32, what: &str) -> Result<()> {
    // SAFETY: fd is an open namespace fd.
    if unsafe { libc::setns(fd, flag) } != 0 {
        return Err(sys(format!("join namespace {what}")));
    }
    Ok(())
}

fn open_ro(p: &Path) -> Result<OwnedFd> {
    let f = std::fs::File::open(p).map_err(io(format!("open {}", p.display())))?;
    Ok(OwnedFd::from(f))
}

fn state_bytes(s: &State) -> Vec<u8> {
    serde_json::to_vec(&s.to_spec_json()).unwrap_or_default()
}

fn write_pid_file(p: &Path, pid: i32) -> Result<()> {
    let tmp = p.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string())
        .map_err(io(format!("write pid file {}", tmp.display())))?;
    std::fs::rename(&tmp, p).map_err(io(format!("write pid file {}", p.display())))
}

fn bind_listener(dir: &Path) -> Result<std::os::unix::net::UnixListener> {
    let p = dir.join("start.sock");
    std::os::unix::net::UnixListener::bind(&p)
        .or_else(|e| {
            if p.as_os_str().len() < 100 {
                return Err(e);
            }
            let d = std::fs::File::open(dir)?;
            std::os::unix::net::UnixListener::bind(format!(
                "/proc/self/fd/{}/start.sock",
                d.as_raw_fd()
            ))
        })
        .map_err(io(format!("listen on {}", p.display())))
}

/// A container created and waiting (create) or ready to be started in-process (run).
#[derive(Debug)]
pub struct Created {
    /// The saved state.
    pub state: State,
    sync: OwnedFd,
    /// The pty master of a foreground terminal.
    pty: Option<OwnedFd>,
}

/// `create`: clone the init with every isolation applied, leave it waiting for `start`.
pub fn create(o: &CreateOpts) -> Result<State> {
    create_inner(o, true, false).map(|c| c.state)
}

/// `foreground`: `run` without --detach, which may give the container a terminal of
/// its own without a console socket (the pty master comes back to us).
fn create_inner(o: &CreateOpts, listen: bool, foreground: bool) -> Result<Created> {
    validate_id(&o.id)?;
    let bundle =
        std::fs::canonicalize(&o.bundle).map_err(io(format!("bundle {}", o.bundle.display())))?;
    let spec = crate::config::load(&bundle.join("config.json"))?;
    let root_cfg = spec.root().as_ref().expect("checked by config::check");
    let rootfs = std::fs::canonicalize(bundle.join(root_cfg.path())).map_err(io(format!(
        "root.path {}",
        bundle.join(root_cfg.path()).display()
    )))?;
    let mut process = spec.process().clone().expect("checked by config::check");
    let fg_tty = process.terminal() == Some(true) && o.console_socket.is_none();
    if fg_tty && let Some(size) = crate::tty::caller_size() {
        process.set_console_size(Some(size));
    }
    if fg_tty && !foreground {
        return Err(Error::Config {
            path: bundle.join("config.json"),
            field: "process.terminal".into(),
            msg: "cannot allocate a tty for a detached container without --console-socket".into(),
        });
    }
    let linux = spec.linux().as_ref().expect("checked by config::check");
    std::fs::create_dir_all(&o.root).map_err(io(format!("create root {}", o.root.display())))?;
    let dir = State::dir(&o.root, &o.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(o.id.clone()));
        }
        Err(e) => return Err(io(format!("create {}", dir.display()))(e)),
    }
    let mut guard = Cleanup {
        dir: &dir,
        pid: 0,
        cgroup: None,
        armed: true,
    };

    // Namespaces: new ones are clone flags; joined ones are opened now (paths resolve
    // on the host) and entered by the init, except pid/time which only apply to
    // children and are entered here.
    let mut flags: i32 = 0;
    let mut join: Vec<(OwnedFd, i32, String)> = Vec::new();
    let nss = linux.namespaces().clone().unwrap_or_default();
    for ns in &nss {
        let f = ns_flag(ns.typ());
        match ns.path() {
            None => flags |= f,
            Some(p) => {
                let fd = open_ro(p)?;
                if f == libc::CLONE_NEWPID || f == libc::CLONE_NEWTIME {
                    setns(fd.as_raw_fd(), f, &p.display().to_string())?;
                } else {
                    join.push((fd, f, p.display().to_string()));
                }
            }
        }
    }
    // A user namespace given by path is entered first (as runc orders it), by an
    // intermediate child that then clones the init: the init's new namespaces are
    // then owned by the joined user namespace, and its mappings are left as they are.
    let user_join = join
        .iter()
        .position(|(_, f, _)| *f == libc::CLONE_NEWUSER)
        .map(|i| join.remove(i));
    let has = |t: LinuxNamespaceType| nss.iter().any(|n| n.typ() == t && n.path().is_none());
    let uts = nss.iter().any(|n| n.typ() == LinuxNamespaceType::Uts);
    if (spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        || spec.domainname().as_deref().is_some_and(|h| !h.is_empty()))
        && !uts
    {
        return Err(Error::Config {
            path: bundle.join("config.json"),
            field: "hostname".into(),
            msg: "setting a hostname needs a uts namespace".into(),
        });
    }
    let (console, pty) = if fg_tty {
        let (ours, theirs) = crate::sys::seqpacket_pair()?;
        (Some(theirs), Some(ours))
    } else {
        let c = o
            .console_socket
            .as_deref()
            .map(crate::sys::unix_connect)
            .transpose()?;
        (c, None)
    };
    // Seccomp is compiled here, before the clone (libseccomp allocates); the init only
    // loads it. The agent socket is connected now: its path is a host path.
    let (filter, agent) = seccomp_prepare(&o.root, linux.seccomp().as_ref())?;
    let listener = if listen {
        Some(bind_listener(&dir)?)
    } else {
        None
    };
    let (psock, csock) = crate::sys::seqpacket_pair()?;
    let mut preserve = o.preserve_fds;
    if let Some(n) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        preserve += n;
    }
    let ctx = InitCtx {
        spec: &spec,
        process: &process,
        rootfs: &rootfs,
        bundle: &bundle,
        sync: csock.as_raw_fd(),
        runtime_sync: psock.as_raw_fd(),
        listener: listener.as_ref().map(|l| l.as_raw_fd()),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        join: &join,
        userns: has(LinuxNamespaceType::User),
        in_userns: has(LinuxNamespaceType::User) || user_join.is_some(),
        cgroupns: has(LinuxNamespaceType::Cgroup),
        netns: has(LinuxNamespaceType::Network),
        uts: has(LinuxNamespaceType::Uts) || uts,
        no_pivot: o.no_pivot,
        no_new_keyring: o.no_new_keyring,
        preserve,
        parent: std::process::id() as i32,
        seccomp: filter.as_ref(),
        seccomp_agent: agent.as_ref().map(|a| a.as_raw_fd()),
        seccomp_metadata: linux
            .seccomp()
            .as_ref()
            .and_then(|s| s.listener_metadata().as_deref()),
    };
    // Time offsets can only be written before a process enters the time namespace:
    // unshare it for our children, write the offsets, clone into it, then point our
    // children back at our own time namespace (hooks run on the host clocks).
    let own_time = match linux.time_offsets().as_ref().filter(|m| !m.is_empty()) {
        Some(offs) if flags & libc::CLONE_NEWTIME != 0 => {
            let own = open_ro(Path::new("/proc/self/ns/time"))?;
            // SAFETY: unshare takes a flag; only our future children are affected.
            if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
                return Err(sys("linux.timeOffsets: unshare the time namespace"));
            }
            let text: String = offs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k} {} {}\n",
                        v.secs().unwrap_or(0),
                        v.nanosecs().unwrap_or(0)
                    )
                })
                .collect();
            let w = crate::sys::write_file(Path::new("/proc/self/timens_offsets"), &text);
            if let Err(e) = w {
                setns(own.as_raw_fd(), libc::CLONE_NEWTIME, "own time namespace")?;
                return Err(Error::Init(format!("linux.timeOffsets: {e}")));
            }
            flags &= !libc::CLONE_NEWTIME;
            Some(own)
        }
        _ => None,
    };
    let pid = match &user_join {
        Some((fd, f, path)) => clone_in_userns(&[(fd.as_raw_fd(), *f, path)], flags as u64),
        None => clone_child(flags as u64),
    };
    if matches!(pid, Ok(0)) {
        init_main(&ctx);
    }
    if let Some(own) = &own_time {
        setns(own.as_raw_fd(), libc::CLONE_NEWTIME, "own time namespace")?;
    }
    let pid = pid?;
    guard.pid = pid;
    drop(csock);
    drop(console);
    drop(listener);
    drop(agent);

    if ctx.userns {
        write_id_maps(
            pid,
            linux.uid_mappings().as_deref().unwrap_or_default(),
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )?;
    }
    // The cgroup is joined before the init does anything (it waits for our go).
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.display().to_string());
    let resources = linux
        .resources()
        .as_ref()
        .map(|r| with_default_devices(r, linux.devices().as_deref().unwrap_or_default()));
    let cg_state = match join_cgroup(cgroups_path.as_deref(), &o.id, pid, resources.as_ref()) {
        Ok(cg) => {
            let st = cg.state();
            guard.cgroup = Some(cg);
            Some(st)
        }
        // Rootless: only a delegated cgroup is writable. Without one the container
        // runs with no cgroup and no limits, as the user is told (never a failure).
        Err(e) if crate::rootless::cgroups_optional() => {
            warn_stderr(&format!(
                "rootless: no cgroup delegated to this user ({e}): the container runs without a cgroup; resource limits, pause, update and stats are unavailable"
            ));
            None
        }
        Err(e) => return Err(e),
    };

    let mut state = State {
        oci_version: spec.version().clone(),
        id: o.id.clone(),
        status: Status::Creating,
        pid,
        bundle: bundle.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        rootfs: rootfs.clone(),
        created: now_rfc3339(),
        owner: crate::rootless::owner_name(),
        init_start_time: crate::sys::proc_start_time(pid).unwrap_or(0),
        hooks: spec.hooks().clone(),
        cgroups_path: linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.display().to_string()),
        own_pid_ns: has(LinuxNamespaceType::Pid),
        process: Some(process.clone()),
        seccomp: linux.seccomp().clone(),
        cgroup: cg_state,
    };
    // on disk as "creating" from here: a create killed before it ends (kill -9, where
    // no cleanup runs) leaves an init and a cgroup that `delete --force` must find
    state.save(&o.root)?;
    for (host, dev) in linux.net_devices().iter().flatten() {
        let target = match join.iter().find(|(_, f, _)| *f == libc::CLONE_NEWNET) {
            Some((fd, _, _)) => crate::netdev::Target::Fd(fd.as_raw_fd()),
            None => crate::netdev::Target::Pid(pid),
        };
        let name = dev
            .name()
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(host);
        crate::netdev::move_link(host, target, name)?;
    }
    let mut go = vec![b'G'];
    go.extend(state_bytes(&state));
    send(psock.as_raw_fd(), &go)?;
    loop {
        let m = recv(psock.as_raw_fd())?;
        match m.first() {
            Some(b'H') => {
                let st = state_bytes(&state);
                if let Some(h) = spec.hooks() {
                    crate::hooks::run(
                        "prestart",
                        h.prestart().as_deref().unwrap_or_default(),
                        &st,
                    )?;
                    crate::hooks::run(
                        "createRuntime",
                        h.create_runtime().as_deref().unwrap_or_default(),
                        &st,
                    )?;
                }
                send(psock.as_raw_fd(), b"h")?;
            }
            Some(b'R') => break,
            Some(b'E') => return Err(Error::Init(String::from_utf8_lossy(&m[1..]).into_owned())),
            _ => return Err(init_died(pid)),
        }
    }
    state.status = Status::Created;
    state.save(&o.root)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, pid)?;
    }
    guard.armed = false;
    let pty = pty
        .map(|p| crate::sys::recv_fd(p.as_raw_fd()))
        .transpose()?;
    Ok(Created {
        state,
        sync: psock,
        pty,
    })
}

/// The device rules plus what every container needs, as runc does: mknod of any node,
/// the default devices, ptmx and ptys, and the config's `linux.devices`.
fn with_default_devices(
    r: &oci_spec::runtime::LinuxResources,
    devs: &[oci_spec::runtime::LinuxDevice],
) -> oci_spec::runtime::LinuxResources {
    let Some(rules) = r.devices() else {
        return r.clone();
    };
    let mut rules = rules.clone();
    let mut extra = vec![
        serde_json::json!({"allow": true, "type": "c", "access": "m"}),
        serde_json::json!({"allow": true, "type": "b", "access": "m"}),
    ];
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        extra.push(serde_json::json!({"allow": true, "type": "c", "major": maj, "minor": min, "access": "rwm"}));
    }
    extra.push(serde_json::json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}));
    for d in devs {
        let t = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::B => "b",
            _ => "c",
        };
        extra.push(serde_json::json!({"allow": true, "type": t, "major": d.major(), "minor": d.minor(), "access": "rwm"}));
    }
    for e in extra {
        if let Ok(rule) = serde_json::from_value(e) {
            rules.push(rule);
        }
    }
    let mut r = r.clone();
    r.set_devices(Some(rules));
    r
}

fn cg_err(e: berth_cgroups::Error) -> Error {
    Error::Cgroup(e.to_string())
}

/// The container's cgroup manager, reopened from its state.
pub fn cgroup(st: &State) -> Option<Box<dyn berth_cgroups::CgroupManager>> {
    st.cgroup.as_ref().map(berth_cgroups::from_state)
}

fn init_died(pid: i32) -> Error {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    Error::Init(format!(
        "container init exited during set-up (wait status {st:#x})"
    ))
}

/// Create the cgroup, move `pid` into it and apply the resources; a cgroup made here
/// is removed again on failure.
fn join_cgroup(
    path: Option<&str>,
    id: &str,
    pid: i32,
    resources: Option<&oci_spec::runtime::LinuxResources>,
) -> Result<Box<dyn berth_cgroups::CgroupManager>> {
    let cg = berth_cgroups::open(path, id).map_err(cg_err)?;
    cg.create().map_err(cg_err)?;
    let r = cg
        .add_process(pid)
        .and_then(|()| resources.map_or(Ok(()), |r| cg.apply(r)));
    if let Err(e) = r {
        let _ = cg.destroy();
        return Err(cg_err(e));
    }
    Ok(cg)
}

/// Write the init's uid and gid maps. Root writes them directly; a rootless caller
/// writes a single mapping of its own id directly (gid_map after denying setgroups,
/// as the kernel requires) and anything else through setuid newuidmap/newgidmap,
/// which check the ranges against /etc/subuid and /etc/subgid.
fn write_id_maps(
    pid: i32,
    uids: &[oci_spec::runtime::LinuxIdMapping],
    gids: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    if !crate::rootless::is_rootless() {
        write_id_map(pid, "uid_map", uids)?;
        return write_id_map(pid, "gid_map", gids);
    }
    let own = |m: &[oci_spec::runtime::LinuxIdMapping], id: u32| {
        m.len() == 1 && m[0].size() == 1 && m[0].host_id() == id
    };
    if own(uids, crate::rootless::euid()) {
        write_id_map(pid, "uid_map", uids)?;
    } else {
        crate::rootless::newidmap("newuidmap", "linux.uidMappings", pid, uids)?;
    }
    if own(gids, crate::rootless::egid()) {
        crate::sys::write_file(Path::new(&format!("/proc/{pid}/setgroups")), "deny")
            .map_err(|e| Error::Init(format!("deny setgroups for the gid mapping: {e}")))?;
        write_id_map(pid, "gid_map", gids)
    } else {
        crate::rootless::newidmap("newgidmap", "linux.gidMappings", pid, gids)
    }
}

fn write_id_map(pid: i32, file: &str, maps: &[oci_spec::runtime::LinuxIdMapping]) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    crate::sys::write_file(Path::new(&format!("/proc/{pid}/{file}")), &text).map_err(|e| {
        Error::Config {
            path: "config.json".into(),
            field: if file == "uid_map" {
                "linux.uidMappings"
            } else {
                "linux.gidMappings"
            }
            .into(),
            msg: e.to_string(),
        }
    })
}

struct InitCtx<'a> {
    spec: &'a Spec,
    process: &'a Process,
    rootfs: &'a Path,
    bundle: &'a Path,
    sync: RawFd,
    /// The runtime's end of the sync socket, which the clone inherits: closed first, so
    /// a runtime killed before its go ends our wait with EOF instead of never.
    runtime_sync: RawFd,
    listener: Option<RawFd>,
    console: Option<RawFd>,
    join: &'a [(OwnedFd, i32, String)],
    /// A new user namespace (its mappings are written by the runtime).
    userns: bool,
    /// A new or joined user namespace.
    in_userns: bool,
    cgroupns: bool,
    netns: bool,
    uts: bool,
    no_pivot: bool,
    no_new_keyring: bool,
    preserve: u32,
    parent: i32,
    seccomp: Option<&'a berth_seccomp::Filter>,
    seccomp_agent: Option<RawFd>,
    seccomp_metadata: Option<&'a str>,
}

/// The container init, in the cloned child. Never returns.
fn init_main(ctx: &InitCtx) -> ! {
    let mut err_fd = ctx.sync;
    let r = init_inner(ctx, &mut err_fd);
    let msg = match r {
        Ok(e) | Err(e) => e.to_string(),
    };
    let mut m = vec![b'E'];
    m.extend(msg.as_bytes());
    let _ = send(err_fd, &m);
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(127) }
}

/// Returns only with an error (Ok carries the exec failure).
fn init_inner(ctx: &InitCtx, err_fd: &mut RawFd) -> Result<Error> {
    // SAFETY: prctl with integer arguments; die with the runtime during set-up and stay
    // non-dumpable (no ptrace, no /proc/PID/exe from the container) until execve.
    // In a new user namespace that starts only after the runtime's go: /proc/PID of a
    // non-dumpable process is root's, and a rootless runtime (or newuidmap on its
    // behalf) must write our uid_map, gid_map and setgroups first (runc does the
    // same). Until then we run only runtime code.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if !ctx.userns {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        let pp = libc::getppid();
        // In a new pid namespace the parent is invisible (ppid 0).
        if pp != 0 && pp != ctx.parent {
            libc::_exit(1);
        }
        libc::close(ctx.runtime_sync);
    }
    let go = recv(ctx.sync)?;
    if go.first() != Some(&b'G') {
        // SAFETY: the runtime went away.
        unsafe { libc::_exit(1) };
    }
    if ctx.in_userns {
        // SAFETY: prctl and plain id arguments.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::setresgid(0, 0, 0);
            libc::setresuid(0, 0, 0);
        }
    }
    for (fd, f, p) in ctx.join {
        setns(fd.as_raw_fd(), *f, p)?;
    }
    if !ctx.no_new_keyring {
        // A fresh session keyring so the container cannot see the host's keys.
        // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) takes no memory from us.
        unsafe { libc::syscall(libc::SYS_keyctl, 1, 0) };
    }
    if let Some(adj) = ctx.process.oom_score_adj() {
        crate::sys::write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
            .map_err(|e| Error::Init(format!("process.oomScoreAdj: {e}")))?;
    }
    let setup = Setup {
        spec: ctx.spec,
        rootfs: ctx.rootfs,
        bundle: ctx.bundle,
        // Inside any user namespace but the host's (ours too, under a rootless
        // engine), device nodes cannot be made.
        userns: ctx.in_userns || crate::rootless::in_user_namespace(),
        cgroupns: ctx.cgroupns,
        netns: ctx.netns,
        no_pivot: ctx.no_pivot,
    };
    setup.prepare()?;
    let hooks = ctx.spec.hooks().as_ref();
    let has = |v: Option<&Vec<oci_spec::runtime::Hook>>| v.is_some_and(|v| !v.is_empty());
    if hooks.is_some_and(|h| has(h.prestart().as_ref()) || has(h.create_runtime().as_ref())) {
        send(ctx.sync, b"H")?;
        if recv(ctx.sync)?.first() != Some(&b'h') {
            // SAFETY: the runtime failed the hooks and will kill us.
            unsafe { libc::_exit(1) };
        }
    }
    if let Some(h) = hooks {
        crate::hooks::run(
            "createContainer",
            h.create_container().as_deref().unwrap_or_default(),
            &go[1..],
        )?;
    }
    setup.switch_root()?;
    if ctx.uts {
        if let Some(h) = ctx.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            // SAFETY: valid buffer and length.
            if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
                return Err(sys(format!("hostname: set {h:?}")));
            }
        }
        if let Some(h) = ctx.spec.domainname().as_deref().filter(|h| !h.is_empty()) {
            // SAFETY: valid buffer and length.
            if unsafe { libc::setdomainname(h.as_ptr().cast(), h.len()) } != 0 {
                return Err(sys(format!("domainname: set {h:?}")));
            }
        }
    }
    if let Some(l) = ctx.spec.linux() {
        for (k, v) in l.sysctl().iter().flatten() {
            let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            crate::sys::write_file(&p, v)
                .map_err(|e| Error::Init(format!("linux.sysctl {k}: {e}")))?;
        }
        if let Some(p) = l.personality() {
            use oci_spec::runtime::LinuxPersonalityDomain as D;
            let v = match p.domain() {
                D::PerLinux => 0,
                D::PerLinux32 => 8,
            };
            // SAFETY: personality takes an integer.
            if unsafe { libc::personality(v) } < 0 {
                return Err(sys("linux.personality"));
            }
        }
    }
    setup.finish()?;
    proc_::set_rlimits(ctx.process)?;
    proc_::set_io_priority(ctx.process)?;
    if let Some(c) = ctx.console {
        let size = ctx.process.console_size().map(|b| (b.height(), b.width()));
        proc_::setup_console(c, size)?;
    }
    let env = ctx.process.env().clone().unwrap_or_default();
    let args = ctx.process.args().as_deref().unwrap_or_default();
    let path = proc_::lookup(&args[0], &env)?;
    proc_::chdir(ctx.process.cwd())?;
    let exec = ExecArgs::new(&path, ctx.process)?;
    // SAFETY: prctl with integer arguments; from here on the init outlives `create`.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    if let Some(mp) = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().as_ref())
    {
        proc_::set_memory_policy(mp)?;
    }
    // Credentials, capabilities and seccomp are final before `create` returns, as with
    // runc: a seccomp agent gets its listener fd (with the "creating" state) during
    // create, and `start` only releases the exec.
    let sc = ctx.seccomp.map(|f| Seccomp {
        filter: f,
        agent: ctx.seccomp_agent,
        state: notify_state(&go[1..], ctx.seccomp_metadata),
    });
    finalize(ctx.process, 3 + ctx.preserve as RawFd, sc.as_ref())?;
    send(ctx.sync, b"R")?;

    // Wait for `start` (a connection on the listener) or, for `run`, the parent's go.
    let start_state: Vec<u8> = if let Some(l) = ctx.listener {
        loop {
            // SAFETY: accepting on our listening socket; the new fd is close-on-exec.
            let c = unsafe {
                libc::accept4(
                    l,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(sys("accept start connection"));
            }
            let m = recv(c)?;
            if m.first() == Some(&b'S') {
                *err_fd = c;
                // SAFETY: the sync socket is no longer needed.
                unsafe { libc::close(ctx.sync) };
                break m[1..].to_vec();
            }
            // SAFETY: a stray connection.
            unsafe { libc::close(c) };
        }
    } else {
        let m = recv(ctx.sync)?;
        if m.first() != Some(&b'S') {
            // SAFETY: the runtime went away before starting us.
            unsafe { libc::_exit(1) };
        }
        m[1..].to_vec()
    };
    if let Some(h) = hooks {
        crate::hooks::run(
            "startContainer",
            h.start_container().as_deref().unwrap_or_default(),
            &start_state,
        )?;
    }
    Ok(exec.exec())
}

struct Seccomp<'a> {
    filter: &'a berth_seccomp::Filter,
    agent: Option<RawFd>,
    state: Vec<u8>,
}

impl Seccomp<'_> {
    fn load(&self) -> Result<()> {
        let fd = self
            .filter
            .load()
            .map_err(|e| Error::Seccomp(e.to_string()))?;
        if let Some(fd) = fd {
            let agent = self.agent.ok_or_else(|| {
                Error::Seccomp("SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath".into())
            })?;
            crate::sys::send_fd(agent, fd.as_raw_fd(), &self.state)?;
        }
        Ok(())
    }
}

/// Compile the filter and connect to the notify agent, in the runtime before clone.
fn seccomp_prepare(
    root: &Path,
    sc: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<(Option<berth_seccomp::Filter>, Option<OwnedFd>)> {
    let Some(sc) = sc else {
        return Ok((None, None));
    };
    let f = berth_seccomp::Filter::compile_cached(sc, &root.join(".seccomp-cache"))
        .map_err(|e| Error::Seccomp(format!("linux.seccomp: {e}")))?;
    let agent = match (f.has_notify(), sc.listener_path()) {
        (true, Some(p)) => Some(crate::sys::unix_connect(p)?),
        (true, None) => {
            return Err(Error::Unsupported {
                field: "linux.seccomp.listenerPath".into(),
                why: "SCMP_ACT_NOTIFY rules need a listenerPath".into(),
            });
        }
        _ => None,
    };
    Ok((Some(f), agent))
}

/// The container process state sent to a seccomp agent with the listener fd.
fn notify_state(state: &[u8], metadata: Option<&str>) -> Vec<u8> {
    let st: serde_json::Value = serde_json::from_slice(state).unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": st["ociVersion"],
        "fds": ["seccompFd"],
        "pid": st["pid"],
        "metadata": metadata.unwrap_or_default(),
        "state": st,
    }))
    .unwrap_or_default()
}

/// Credentials, capabilities, no_new_privs, seccomp, umask, signals and fds: the last
/// steps.
fn finalize(p: &Process, keep_below: RawFd, sc: Option<&Seccomp>) -> Result<()> {
    proc_::set_scheduler(p)?;
    let nnp = p.no_new_privileges() == Some(true);
    if let Some(sc) = sc
        && !nnp
    {
        // Without no_new_privs the kernel wants CAP_SYS_ADMIN: load before dropping it.
        sc.load()?;
    }
    proc_::set_user_and_caps(p)?;
    proc_::set_no_new_privs(p)?;
    if let Some(sc) = sc
        && nnp
    {
        sc.load()?;
    }
    if let Some(m) = p.user().umask() {
        // SAFETY: umask takes an integer.
        unsafe { libc::umask(m as libc::mode_t) };
    }
    proc_::reset_signals();
    crate::sys::cloexec_from(keep_below)
}

/// `start`: release a created container's init to exec the user process.
pub fn start(root: &Path, id: &str) -> Result<State> {
    let mut st = State::load(root, id)?;
    if st.status != Status::Created {
        return Err(Error::BadState {
            id: id.into(),
            status: st.status.to_string(),
            msg: "cannot start a container that is not created".into(),
        });
    }
    let sock = crate::sys::unix_connect(&State::dir(root, id).join("start.sock"))?;
    let mut m = vec![b'S'];
    m.extend(state_bytes(&st));
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::from(sock);
    s.write_all(&m).map_err(io("send start"))?;
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let _ = std::fs::remove_file(State::dir(root, id).join("start.sock"));
    if reply.first() == Some(&b'E') {
        return Err(Error::Init(
            String::from_utf8_lossy(&reply[1..]).into_owned(),
        ));
    }
    st.status = Status::Running;
    st.save(root)?;
    poststart(&st);
    Ok(st)
}

fn poststart(st: &State) {
    if let Some(h) = &st.hooks
        && let Err(e) = crate::hooks::run(
            "poststart",
            h.poststart().as_deref().unwrap_or_default(),
            &state_bytes(st),
        )
    {
        // The spec: a failing poststart hook is a warning, the lifecycle goes on.
        tracing::warn!("{e}");
        warn_stderr(&e);
    }
}

/// A lifecycle warning for the user; `eprintln!` would panic if stderr is a closed pipe.
fn warn_stderr(e: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "warning: {e}");
}

/// `run`: create + start in one process and (unless `detach`) wait; returns the exit
/// code to use (128+n for a signal).
pub fn run(o: &CreateOpts, detach: bool) -> Result<i32> {
    let c = create_inner(o, false, !detach)?;
    let mut st = c.state;
    let pid = st.pid;
    let mut m = vec![b'S'];
    m.extend(state_bytes(&st));
    // Block the signals we forward before the init can exit, so none is lost.
    let set = forward_set();
    // SAFETY: set is a valid sigset.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    send(c.sync.as_raw_fd(), &m)?;
    let reply = recv(c.sync.as_raw_fd())?;
    if reply.first() == Some(&b'E') {
        let e = Error::Init(String::from_utf8_lossy(&reply[1..]).into_owned());
        let _ = destroy(&o.root, &st, true);
        // SAFETY: reap.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(e);
    }
    st.status = Status::Running;
    st.save(&o.root)?;
    poststart(&st);
    if detach {
        return Ok(0);
    }
    let code = match c.pty {
        Some(master) => crate::tty::proxy(pid, master, &set),
        None => wait_forwarding(pid, &set),
    };
    st.status = Status::Stopped;
    destroy(&o.root, &st, false)?;
    Ok(code)
}

fn forward_set() -> libc::sigset_t {
    // SAFETY: building a sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
            libc::SIGCONT,
            libc::SIGTSTP,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Wait for `pid`, forwarding signals to it (no threads: sigwaitinfo on a blocked set).
fn wait_forwarding(pid: i32, set: &libc::sigset_t) -> i32 {
    loop {
        let mut st = 0;
        // SAFETY: reaping our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else if libc::WIFSIGNALED(st) {
                128 + libc::WTERMSIG(st)
            } else {
                continue;
            };
        }
        if r < 0 {
            return 255;
        }
        // SAFETY: set is valid; info may be null.
        let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: forwarding a signal to our child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// `state`.
pub fn state(root: &Path, id: &str) -> Result<State> {
    State::load(root, id)
}

/// Parse a signal: names with or without SIG, or numbers.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            return Err(Error::Init(format!("invalid signal {s:?}")));
        }
    };
    Ok(n)
}

/// Pids of the container: the cgroup's when available, else every process in the
/// init's pid namespace (the container owns it).
pub fn pids(st: &State) -> Result<Vec<i32>> {
    if st.status == Status::Stopped {
        return Ok(vec![]);
    }
    if let Some(cg) = cgroup(st) {
        let mut v = cg.pids().map_err(cg_err)?;
        v.sort();
        return Ok(v);
    }
    if !st.own_pid_ns {
        return Err(crate::cgroups::unavailable(
            "listing the processes of a container sharing a pid namespace",
        ));
    }
    let target = std::fs::read_link(format!("/proc/{}/ns/pid", st.pid))
        .map_err(io("read init pid namespace"))?;
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc")
        .map_err(io("read /proc"))?
        .flatten()
    {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|t| t == target) {
            v.push(pid);
        }
    }
    v.sort();
    Ok(v)
}

/// `kill`.
pub fn kill(root: &Path, id: &str, sig: i32, all: bool) -> Result<()> {
    let st = State::load(root, id)?;
    if st.status == Status::Stopped {
        return Err(Error::BadState {
            id: id.into(),
            status: "stopped".into(),
            msg: "container not running".into(),
        });
    }
    if all && let Some(cg) = cgroup(&st) {
        let sig = berth_cgroups::Signal::try_from(sig)
            .map_err(|e| Error::Init(format!("signal {sig}: {e}")))?;
        return cg.kill_all(sig).map_err(cg_err);
    }
    let targets = if all { pids(&st)? } else { vec![st.pid] };
    for p in targets {
        // SAFETY: sending a signal.
        if unsafe { libc::kill(p, sig) } != 0 && p == st.pid {
            return Err(sys(format!(
                "kill container {id} init {p} with signal {sig}"
            )));
        }
    }
    Ok(())
}

fn wait_gone(pid: i32, start: u64) {
    // SAFETY: pidfd_open has no memory arguments.
    let pfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pfd >= 0 {
        let mut p = libc::pollfd {
            fd: pfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; pfd is ours.
        unsafe {
            libc::poll(&mut p, 1, 10_000);
            libc::close(pfd);
        }
    }
    // The process may linger as a zombie until its parent reaps it; that counts as gone.
    for _ in 0..1000 {
        if crate::sys::proc_start_time(pid) != Some(start) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn destroy(root: &Path, st: &State, kill: bool) -> Result<()> {
    if kill && st.status != Status::Stopped {
        if st.own_pid_ns {
            // SAFETY: SIGKILL to the init of its own pid namespace kills the namespace.
            unsafe { libc::kill(st.pid, libc::SIGKILL) };
        } else {
            for p in pids(st).unwrap_or_else(|_| vec![st.pid]) {
                // SAFETY: sending a signal.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        // Frozen tasks only die once thawed: `delete --force` of a paused container
        // (podman rm -f, kube down) would otherwise leave them frozen in the cgroup.
        if st.status == Status::Paused
            && let Some(cg) = cgroup(st)
        {
            let _ = cg.thaw();
        }
        wait_gone(st.pid, st.init_start_time);
    }
    if let Some(cg) = cgroup(st) {
        if kill {
            let _ = cg.kill_all(berth_cgroups::Signal::SIGKILL);
        }
        cg.destroy().map_err(cg_err)?;
    }
    if let Some(h) = &st.hooks {
        let mut s = st.clone();
        s.status = Status::Stopped;
        if let Err(e) = crate::hooks::run(
            "poststop",
            h.poststop().as_deref().unwrap_or_default(),
            &state_bytes(&s),
        ) {
            warn_stderr(&e);
        }
    }
    match std::fs::remove_dir_all(State::dir(root, &st.id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("remove {}", State::dir(root, &st.id).display()))(e)),
    }
}

/// `delete`: remove a stopped (or created) container; `force` kills a running one.
/// A missing container is fine with `force` (engines delete twice).
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let st = match State::load(root, id) {
        Ok(s) => s,
        Err(Error::NotFound(_)) if force => {
            // a create killed before it wrote any state leaves its directory (the
            // start socket); its init died with it (parent-death signal)
            let dir = State::dir(root, id);
            return match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io(format!("remove {}", dir.display()))(e))
                }
                _ => Ok(()),
            };
        }
        Err(e) => return Err(e),
    };
    match st.status {
        Status::Stopped | Status::Created => destroy(root, &st, true),
        _ if force => destroy(root, &st, true),
        s => Err(Error::BadState {
            id: id.into(),
            status: s.to_string(),
            msg: "cannot delete a container that is not stopped (use --force)".into(),
        }),
    }
}

/// All containers under `root`.
pub fn list(root: &Path) -> Result<Vec<State>> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(io(format!("read {}", root.display()))(e)),
    };
    for e in rd.flatten() {
        if let Some(id) = e.file_name().to_str()
            && let Ok(s) = State::load(root, id)
        {
            v.push(s);
        }
    }
    v.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(v)
}

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOpts {
    /// The process to run (from `--process` or built from the arguments).
    pub process: Process,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--detach`.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--preserve-fds`.
    pub preserve_fds: u32,
}

/// `exec`: run another process in a running container. Returns the exit code (0 when
/// detached).
pub fn exec(root: &Path, id: &str, o: &ExecOpts) -> Result<i32> {
    let st = State::load(root, id)?;
    if !matches!(st.status, Status::Running | Status::Created) {
        return Err(Error::BadState {
            id: id.into(),
            status: st.status.to_string(),
            msg: "cannot exec in a container that is not running".into(),
        });
    }
    // A terminal without a console socket is the caller's (relayed, as runc does);
    // detached, there would be nobody to relay it.
    let fg_tty = o.process.terminal() == Some(true) && o.console_socket.is_none();
    if fg_tty && o.detach {
        return Err(Error::Init(
            "exec --tty --detach needs --console-socket".into(),
        ));
    }
    // Namespaces of the init that differ from ours, user first, mount last.
    let order = [
        ("user", libc::CLONE_NEWUSER),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("mnt", libc::CLONE_NEWNS),
    ];
    let mut join = Vec::new();
    for (n, f) in order {
        let theirs = format!("/proc/{}/ns/{n}", st.pid);
        if std::fs::read_link(&theirs).ok() != std::fs::read_link(format!("/proc/self/ns/{n}")).ok()
        {
            join.push((open_ro(Path::new(&theirs))?, f, n.to_string()));
        }
    }
    // The pid and time namespaces apply to children only. Outside a user namespace
    // we enter them here; with one, an intermediate child enters the user namespace
    // first (a rootless caller may join the others only from inside it).
    let mut pre = Vec::new();
    if join.first().is_some_and(|j| j.1 == libc::CLONE_NEWUSER) {
        pre.push(join.remove(0));
    }
    for (n, f) in [("pid", libc::CLONE_NEWPID), ("time", libc::CLONE_NEWTIME)] {
        let theirs = format!("/proc/{}/ns/{n}", st.pid);
        if std::fs::read_link(&theirs).ok() != std::fs::read_link(format!("/proc/self/ns/{n}")).ok()
        {
            let fd = open_ro(Path::new(&theirs))?;
            if pre.is_empty() {
                setns(fd.as_raw_fd(), f, n)?;
            } else {
                pre.push((fd, f, n.to_string()));
            }
        }
    }
    let (console, pty) = if fg_tty {
        let (ours, theirs) = crate::sys::seqpacket_pair()?;
        (Some(theirs), Some(ours))
    } else {
        let c = o
            .console_socket
            .as_deref()
            .map(crate::sys::unix_connect)
            .transpose()?;
        (c, None)
    };
    let sized;
    let o = if fg_tty && let Some(size) = crate::tty::caller_size() {
        let mut c = o.clone();
        c.process.set_console_size(Some(size));
        sized = c;
        &sized
    } else {
        o
    };
    let (filter, agent) = seccomp_prepare(root, st.seccomp.as_ref())?;
    let sc = filter.as_ref().map(|f| Seccomp {
        filter: f,
        agent: agent.as_ref().map(|a| a.as_raw_fd()),
        state: notify_state(
            &state_bytes(&st),
            st.seccomp
                .as_ref()
                .and_then(|s| s.listener_metadata().as_deref()),
        ),
    });
    let (psock, csock) = crate::sys::seqpacket_pair()?;
    // execCPUAffinity.initial holds until the cgroup move (inherited from us), .final
    // is set by the child once it is in the cgroup.
    let affinity = o.process.exec_cpu_affinity().as_ref();
    if let Some(list) = affinity.and_then(|a| a.initial().as_deref()) {
        proc_::set_cpu_affinity("process.execCPUAffinity.initial", list)?;
    }
    let pid = if pre.is_empty() {
        clone_child(0)?
    } else {
        let joins: Vec<(RawFd, i32, &str)> = pre
            .iter()
            .map(|(fd, f, n)| (fd.as_raw_fd(), *f, n.as_str()))
            .collect();
        clone_in_userns(&joins, 0)?
    };
    if pid == 0 {
        let r: Result<Error> = (|| {
            // SAFETY: prctl with integer arguments; closing our inherited copy of the
            // runtime's end, so a runtime that dies before its go ends the wait (EOF).
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                libc::close(psock.as_raw_fd());
            }
            // Wait until the runtime has put us in the container's cgroup.
            if recv(csock.as_raw_fd())?.first() != Some(&b'G') {
                // SAFETY: the runtime went away.
                unsafe { libc::_exit(1) };
            }
            if let Some(list) = affinity.and_then(|a| a.cpu_affinity_final().as_deref()) {
                proc_::set_cpu_affinity("process.execCPUAffinity.final", list)?;
            }
            for (fd, f, n) in &join {
                setns(fd.as_raw_fd(), *f, n)?;
            }
            proc_::set_rlimits(&o.process)?;
            if let Some(c) = &console {
                proc_::setup_console(
                    c.as_raw_fd(),
                    o.process.console_size().map(|b| (b.height(), b.width())),
                )?;
            }
            let env = o.process.env().clone().unwrap_or_default();
            let args = o.process.args().as_deref().unwrap_or_default();
            if args.is_empty() {
                return Err(Error::Init("exec: no command given".into()));
            }
            let path = proc_::lookup(&args[0], &env)?;
            proc_::chdir(o.process.cwd())?;
            let ex = ExecArgs::new(&path, &o.process)?;
            finalize(&o.process, 3 + o.preserve_fds as RawFd, sc.as_ref())?;
            Ok(ex.exec())
        })();
        let msg = match r {
            Ok(e) | Err(e) => e.to_string(),
        };
        let mut m = vec![b'E'];
        m.extend(msg.as_bytes());
        let _ = send(csock.as_raw_fd(), &m);
        // SAFETY: leave the child.
        unsafe { libc::_exit(127) };
    }
    drop(csock);
    drop(console);
    if let Some(cg) = cgroup(&st)
        && let Err(e) = cg.add_process(pid)
    {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(cg_err(e));
    }
    send(psock.as_raw_fd(), b"G")?;
    let set = forward_set();
    // SAFETY: valid sigset.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let reply = recv(psock.as_raw_fd())?;
    if reply.first() == Some(&b'E') {
        // SAFETY: reap our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(Error::Init(
            String::from_utf8_lossy(&reply[1..]).into_owned(),
        ));
    }
    if let Some(p) = &o.pid_file {
        write_pid_file(p, pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    if let Some(p) = pty {
        let master = crate::sys::recv_fd(p.as_raw_fd())?;
        return Ok(crate::tty::proxy(pid, master, &set));
    }
    Ok(wait_forwarding(pid, &set))
}

/// Keep `OwnedFd` imports used on every target.
#[allow(dead_code)]
fn _fd_roundtrip(f: OwnedFd) -> OwnedFd {
    // SAFETY: into_raw_fd hands over ownership.
    unsafe { OwnedFd::from_raw_fd(f.into_raw_fd()) }
}

/// `pause`: freeze every process of the container.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let mut st = State::load(root, id)?;
    if st.status != Status::Running {
        return Err(Error::BadState {
            id: id.into(),
            status: st.status.to_string(),
            msg: "cannot pause a container that is not running".into(),
        });
    }
    let cg = cgroup(&st).ok_or_else(|| crate::cgroups::unavailable("pause"))?;
    cg.freeze().map_err(cg_err)?;
    st.status = Status::Paused;
    st.save(root)
}

/// `resume`: thaw a paused container.
pub fn resume(root: &Path, id: &str) -> Result<()> {
    let mut st = State::load(root, id)?;
    if st.status != Status::Paused {
        return Err(Error::BadState {
            id: id.into(),
            status: st.status.to_string(),
            msg: "cannot resume a container that is not paused".into(),
        });
    }
    let cg = cgroup(&st).ok_or_else(|| crate::cgroups::unavailable("resume"))?;
    cg.thaw().map_err(cg_err)?;
    st.status = Status::Running;
    st.save(root)
}

/// `update`: apply new resources to the container's cgroup.
pub fn update(root: &Path, id: &str, r: &oci_spec::runtime::LinuxResources) -> Result<()> {
    let st = State::load(root, id)?;
    if st.status == Status::Stopped {
        return Err(Error::BadState {
            id: id.into(),
            status: "stopped".into(),
            msg: "cannot update a stopped container".into(),
        });
    }
    let cg = cgroup(&st).ok_or_else(|| crate::cgroups::unavailable("update"))?;
    cg.apply(r).map_err(cg_err)
}

/// Resource usage of the container's cgroup, as JSON (`events --stats`).
pub fn stats(root: &Path, id: &str) -> Result<serde_json::Value> {
    let st = State::load(root, id)?;
    let cg = cgroup(&st).ok_or_else(|| crate::cgroups::unavailable("stats"))?;
    let s = cg.stats().map_err(cg_err)?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": s}))
}
