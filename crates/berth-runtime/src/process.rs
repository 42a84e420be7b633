//! The last steps before `execve`, shared by the container init and `exec`: rlimits,
//! console, credentials, capabilities, no_new_privs, seccomp, fds, the program lookup.

use crate::error::{Error, Result, sys};
use crate::sys::cstr;
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Apply `process.rlimits`; a limit above what the host allows is a clear error.
pub fn set_rlimits(p: &Process) -> Result<()> {
    for r in p.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } != 0 {
            return Err(sys(format!(
                "process.rlimits: set {:?} to soft {} hard {} (the host may allow less)",
                r.typ(),
                r.soft(),
                r.hard()
            )));
        }
    }
    Ok(())
}

/// `process.ioPriority` through ioprio_set.
pub fn set_io_priority(p: &Process) -> Result<()> {
    if let Some(io) = p.io_priority() {
        use oci_spec::runtime::IOPriorityClass as C;
        let class = match io.class() {
            C::IoprioClassRt => 1,
            C::IoprioClassBe => 2,
            C::IoprioClassIdle => 3,
        };
        let v = (class << 13) | (io.priority() & 0x1fff);
        // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, self, value) takes no pointers.
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, v) } != 0 {
            return Err(sys(format!("process.ioPriority: set {v:#x}")));
        }
    }
    Ok(())
}

/// Create a pty inside the container, send its master over `console` and make the
/// slave our controlling terminal and stdio.
pub fn setup_console(console: RawFd, size: Option<(u64, u64)>) -> Result<()> {
    // SAFETY: opening a device path.
    let master = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Err(sys("open /dev/ptmx for process.terminal"));
    }
    let zero: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int.
    if unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &zero) } != 0 {
        return Err(sys("unlock pty"));
    }
    // SAFETY: TIOCGPTPEER returns a new fd for the slave.
    let slave = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        return Err(sys("open pty slave"));
    }
    if let Some((h, w)) = size {
        let ws = libc::winsize {
            ws_row: h as u16,
            ws_col: w as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: ws is a valid winsize.
        unsafe { libc::ioctl(slave, libc::TIOCSWINSZ, &ws) };
    }
    crate::sys::send_fd(console, master, b"/dev/ptmx")?;
    // SAFETY: closing fds we own; setsid/TIOCSCTTY/dup2 on valid fds.
    unsafe {
        libc::close(master);
        libc::close(console);
        libc::setsid();
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(sys("set controlling terminal"));
        }
        for fd in 0..3 {
            if libc::dup2(slave, fd) < 0 {
                return Err(sys("dup2 pty slave"));
            }
        }
        if slave > 2 {
            libc::close(slave);
        }
    }
    Ok(())
}

/// The `PATH` of the process environment (or the default one).
fn env_path(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

fn is_executable(p: &Path) -> std::io::Result<()> {
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let m = std::fs::metadata(p)?;
    if m.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EACCES));
    }
    // SAFETY: c is a valid path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

use crate::error::errno_text;

/// Find the program as runc does, with runc's error texts.
pub fn lookup(arg0: &str, env: &[String]) -> Result<PathBuf> {
    if arg0.contains('/') {
        return match is_executable(Path::new(arg0)) {
            Ok(()) => Ok(PathBuf::from(arg0)),
            Err(e) => Err(Error::Init(format!(
                "exec: {arg0:?}: stat {arg0}: {}",
                errno_text(&e)
            ))),
        };
    }
    for dir in env_path(env).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if is_executable(&cand).is_ok() {
            return Ok(cand);
        }
    }
    Err(Error::Init(format!(
        "exec: {arg0:?}: executable file not found in $PATH: no such file or directory"
    )))
}

/// chdir to `cwd` and make sure we did not land outside the container root.
pub fn chdir(cwd: &Path) -> Result<()> {
    let c = cstr(cwd)?;
    // SAFETY: valid path.
    if unsafe { libc::chdir(c.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Init(format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            cwd,
            errno_text(&e)
        )));
    }
    // getcwd reports "(unreachable)" for a directory outside our root (the
    // CVE-2024-21626 symptom); refuse to exec there.
    match std::env::current_dir() {
        Ok(p) if p.is_absolute() => Ok(()),
        _ => Err(Error::Init(format!(
            "cwd {cwd:?} is outside the container root"
        ))),
    }
}

fn cap_mask(set: Option<&oci_spec::runtime::Capabilities>) -> Result<u64> {
    let mut m = 0u64;
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        let cap: caps::Capability = name.parse().map_err(|_| Error::Unsupported {
            field: "process.capabilities".into(),
            why: format!("unknown capability {name}"),
        })?;
        m |= cap.bitmask();
    }
    Ok(m)
}

/// Last-known capability number of the running kernel.
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Switch to `process.user` and set the five capability sets.
pub fn set_user_and_caps(p: &Process) -> Result<()> {
    let caps_cfg: Option<&LinuxCapabilities> = p.capabilities().as_ref();
    let bounding = cap_mask(caps_cfg.and_then(|c| c.bounding().as_ref()))?;
    let effective = cap_mask(caps_cfg.and_then(|c| c.effective().as_ref()))?;
    let permitted = cap_mask(caps_cfg.and_then(|c| c.permitted().as_ref()))?;
    let inheritable = cap_mask(caps_cfg.and_then(|c| c.inheritable().as_ref()))?;
    let ambient = cap_mask(caps_cfg.and_then(|c| c.ambient().as_ref()))?;
    let user = p.user();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    for c in 0..=last_cap() {
        if bounding & (1u64 << c) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(sys(format!("drop capability {c} from the bounding set")));
            }
        }
    }
    let mut groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    groups.dedup();
    // In a user namespace whose setgroups is denied (a rootless single mapping, or
    // `unshare --map-root-user`), setgroups always fails: like runc, skip it when no
    // additional gids are asked for.
    let denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
    if denied && !groups.is_empty() {
        return Err(Error::Init(format!(
            "process.user.additionalGids: cannot set {groups:?}: setgroups is denied in this user namespace"
        )));
    }
    // SAFETY: groups is a valid array of its length.
    if !denied && unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(sys(format!(
            "process.user.additionalGids: setgroups {groups:?}"
        )));
    }
    // SAFETY: plain id arguments.
    if unsafe { libc::setresgid(user.gid(), user.gid(), user.gid()) } != 0 {
        return Err(sys(format!("process.user.gid: setresgid {}", user.gid())));
    }
    // SAFETY: plain id arguments.
    if unsafe { libc::setresuid(user.uid(), user.uid(), user.uid()) } != 0 {
        return Err(sys(format!("process.user.uid: setresuid {}", user.uid())));
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let d = [
        Data {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        Data {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset with a v3 header and two data elements, as the kernel expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } != 0 {
        return Err(sys("process.capabilities: capset"));
    }
    // The kernel only keeps ambient capabilities that are permitted and inheritable;
    // like runc, the others in the ambient list are skipped.
    let ambient = ambient & permitted & inheritable;
    for c in 0..64u8 {
        if ambient & (1u64 << c) != 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    c as libc::c_ulong,
                    0,
                    0,
                )
            } != 0
            {
                return Err(sys(format!(
                    "process.capabilities.ambient: raise capability {c}"
                )));
            }
        }
    }
    Ok(())
}

/// `noNewPrivileges`.
pub fn set_no_new_privs(p: &Process) -> Result<()> {
    if p.no_new_privileges() == Some(true) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(sys("process.noNewPrivileges"));
        }
    }
    Ok(())
}

/// Reset every signal disposition and the mask (Rust ignores SIGPIPE; an ignored signal
/// would survive execve into the container process).
pub fn reset_signals() {
    for s in 1..libc::SIGRTMAX() {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting a default disposition.
        unsafe { libc::signal(s, libc::SIG_DFL) };
    }
    // SAFETY: empty mask is valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Prepared argv/envp for execve, built before the last privileged step.
#[derive(Debug)]
pub struct ExecArgs {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecArgs {
    /// Build from a resolved program path and the process.
    pub fn new(path: &Path, p: &Process) -> Result<Self> {
        let argv = p
            .args()
            .iter()
            .flatten()
            .map(cstr)
            .collect::<Result<Vec<_>>>()?;
        let envp = p
            .env()
            .iter()
            .flatten()
            .map(cstr)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            path: cstr(path)?,
            argv,
            envp,
        })
    }

    /// execve; returns only on failure.
    pub fn exec(&self) -> Error {
        let mut a: Vec<*const libc::c_char> = self.argv.iter().map(|c| c.as_ptr()).collect();
        a.push(std::ptr::null());
        let mut e: Vec<*const libc::c_char> = self.envp.iter().map(|c| c.as_ptr()).collect();
        e.push(std::ptr::null());
        // SAFETY: null-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(self.path.as_ptr(), a.as_ptr(), e.as_ptr()) };
        let err = std::io::Error::last_os_error();
        Error::Init(format!(
            "exec: {:?}: {}",
            self.path.to_string_lossy(),
            errno_text(&err)
        ))
    }
}

/// Parse a Linux list of ids ("0-3,7") into a bitmask of 64-bit words.
pub fn parse_id_list(field: &str, s: &str) -> Result<Vec<u64>> {
    let bad = || Error::Unsupported {
        field: field.into(),
        why: format!("invalid list {s:?} (expected e.g. \"0-3,7\")"),
    };
    let mut words: Vec<u64> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= 4096 {
            return Err(bad());
        }
        for i in a..=b {
            if words.len() <= i / 64 {
                words.resize(i / 64 + 1, 0);
            }
            words[i / 64] |= 1 << (i % 64);
        }
    }
    if words.is_empty() {
        return Err(bad());
    }
    Ok(words)
}

/// `process.scheduler` through sched_setattr (before capabilities are dropped: a
/// real-time policy or a lower nice value needs CAP_SYS_NICE).
pub fn set_scheduler(p: &Process) -> Result<()> {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let Some(s) = p.scheduler() else {
        return Ok(());
    };
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0).max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        util_min: 0,
        util_max: 1024,
    };
    // SAFETY: sched_setattr(0 = self, attr, flags 0) reads `size` bytes of attr.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) } != 0 {
        return Err(sys(format!(
            "process.scheduler: sched_setattr policy {:?} nice {} priority {}",
            s.policy(),
            attr.nice,
            attr.priority
        )));
    }
    Ok(())
}

/// Pin the calling process to the CPUs of `list` (`field` names the config field).
pub fn set_cpu_affinity(field: &str, list: &str) -> Result<()> {
    let words = parse_id_list(field, list)?;
    // SAFETY: the mask is `words.len() * 8` bytes long.
    if unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            words.len() * 8,
            words.as_ptr(),
        )
    } != 0
    {
        return Err(sys(format!("{field}: sched_setaffinity {list:?}")));
    }
    Ok(())
}

/// `linux.memoryPolicy` through set_mempolicy (kept across execve).
pub fn set_memory_policy(mp: &oci_spec::runtime::LinuxMemoryPolicy) -> Result<()> {
    use oci_spec::runtime::{MemoryPolicyFlagType as F, MemoryPolicyModeType as M};
    let mut mode: i32 = match mp.mode() {
        M::MpolDefault => 0,
        M::MpolPreferred => 1,
        M::MpolBind => 2,
        M::MpolInterleave => 3,
        M::MpolLocal => 4,
        M::MpolPreferredMany => 5,
        M::MpolWeightedInterleave => 6,
    };
    for f in mp.flags().iter().flatten() {
        mode |= match f {
            F::MpolFStaticNodes => 1 << 15,
            F::MpolFRelativeNodes => 1 << 14,
            F::MpolFNumaBalancing => 1 << 13,
        };
    }
    let words = match mp.nodes().as_deref().filter(|n| !n.trim().is_empty()) {
        Some(n) => parse_id_list("linux.memoryPolicy.nodes", n)?,
        None => Vec::new(),
    };
    let (ptr, maxnode) = if words.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (words.as_ptr(), words.len() * 64 + 1)
    };
    // SAFETY: nodemask is null or `maxnode - 1` bits long.
    if unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) } != 0 {
        return Err(sys(format!(
            "linux.memoryPolicy: set_mempolicy mode {:?} nodes {:?}",
            mp.mode(),
            mp.nodes().as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_id_list;

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list("f", "0").unwrap(), vec![1]);
        assert_eq!(parse_id_list("f", "0-3,7").unwrap(), vec![0b1000_1111]);
        assert_eq!(parse_id_list("f", "64").unwrap(), vec![0, 1]);
        for bad in ["", "3-1", "x", "1-", "5000"] {
            let e = parse_id_list("process.execCPUAffinity.final", bad).unwrap_err();
            assert!(e.to_string().contains("execCPUAffinity"), "{bad}: {e}");
        }
    }
}
