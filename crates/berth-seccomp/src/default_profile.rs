//! berth's default seccomp profile.
//!
//! Written from the kernel's syscall tables (`arch/x86/entry/syscalls/syscall_64.tbl`,
//! `syscall_32.tbl` and the asm-generic table used by arm64), not copied from another
//! engine. It is an allow-list: anything not listed fails with EPERM. What it leaves out,
//! unless a capability that governs it is granted, are the classes a container must not
//! reach: mount and namespace creation, the keyring, kexec and module loading, bpf,
//! perf, userfaultfd, clock and time changes, reboot, swap, quota, io_uring, raw port
//! I/O, NUMA policy, accounting, obsolete interfaces, and personalities other than
//! the few safe ones.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Syscalls every container may make: process life, memory, files, sockets, signals,
/// time reading, scheduling of itself, and their 32-bit variants.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // process and threads
    "arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork",
    "vfork", "get_robust_list", "set_robust_list", "get_thread_area", "set_thread_area",
    "set_tid_address", "getcpu", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getsid", "gettid", "getrusage", "getrlimit", "setrlimit", "prlimit64", "ugetrlimit",
    "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
    "process_mrelease", "prctl", "ptrace", "process_vm_readv", "process_vm_writev",
    "rseq", "seccomp", "setpgid", "setpriority", "setsid", "wait4", "waitid", "waitpid",
    "membarrier", "restart_syscall", "modify_ldt", "nice", "uname", "sysinfo", "times",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules", "map_shadow_stack",
    "uretprobe",
    // credentials (governed by CAP_SETUID/CAP_SETGID and the user namespace)
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "getuid32", "geteuid32", "getgid32", "getegid32",
    "getresuid32", "getresgid32", "getgroups32", "setuid32", "setgid32", "setreuid32",
    "setregid32", "setresuid32", "setresgid32", "setgroups32", "setfsuid32", "setfsgid32",
    // scheduling of the container's own tasks
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr",
    "sched_setattr", "sched_getparam", "sched_setparam", "sched_getscheduler",
    "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "ioprio_get", "ioprio_set",
    // memory
    "brk", "mmap", "mmap2", "munmap", "mprotect", "mremap", "msync", "mincore", "madvise",
    "process_madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
    "remap_file_pages", "memfd_create", "memfd_secret", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "mseal", "cachestat",
    // futexes and waiting
    "futex", "futex_time64", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
    "nanosleep", "clock_nanosleep", "clock_nanosleep_time64", "pause",
    // signals
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sigaction", "sigaltstack", "signal", "signalfd", "signalfd4", "sigpending",
    "sigprocmask", "sigreturn", "sigsuspend",
    // time (reading only; setting the clock is CAP_SYS_TIME's)
    "alarm", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "getitimer", "setitimer", "gettimeofday", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64",
    // files and directories
    "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "chmod", "fchmod",
    "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "chown32",
    "fchown32", "lchown32", "close", "close_range", "creat", "open", "openat", "openat2",
    "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "fsync", "fdatasync", "sync",
    "syncfs", "sync_file_range", "sync_file_range2", "arm_sync_file_range", "fallocate",
    "fadvise64", "fadvise64_64", "arm_fadvise64_64", "readahead", "getdents",
    "getdents64", "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat",
    "readlink", "readlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
    "rmdir", "mknod", "mknodat", "stat", "fstat", "lstat", "newfstatat", "stat64",
    "fstat64", "lstat64", "fstatat64", "statx", "statfs", "fstatfs", "statfs64",
    "fstatfs64", "truncate", "ftruncate", "truncate64", "ftruncate64", "umask", "utime",
    "utimes", "futimesat", "utimensat", "utimensat_time64", "file_getattr",
    "file_setattr", "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr",
    "lsetxattr", "fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr",
    "listxattrat", "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "statmount", "listmount",
    // reading and writing
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "lseek", "_llseek", "sendfile", "sendfile64", "splice", "tee",
    "vmsplice", "copy_file_range", "ioctl", "pipe", "pipe2",
    // polling and events
    "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6",
    "pselect6_time64", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    // asynchronous I/O (io_uring stays out: its own attack surface)
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64",
    // sockets
    "socket", "socketpair", "socketcall", "bind", "connect", "listen", "accept",
    "accept4", "getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown",
    "send", "recv", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
    "recvmmsg_time64",
    // System V and POSIX IPC (namespaced by the ipc namespace)
    "ipc", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semctl",
    "semtimedop", "semtimedop_time64", "shmget", "shmat", "shmdt", "shmctl", "mq_open",
    "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
    // arm's own
    "breakpoint", "cacheflush", "set_tls",
];

/// Syscalls allowed only with a capability, in the spelling of `process.capabilities`.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "mount", "umount", "umount2", "mount_setattr", "fsopen", "fsconfig", "fsmount",
            "fspick", "move_mount", "open_tree", "open_tree_attr", "pivot_root", "setns",
            "unshare", "clone", "clone3", "fanotify_init", "fanotify_mark", "lookup_dcookie",
            "name_to_handle_at", "quotactl", "quotactl_fd", "sethostname", "setdomainname",
            "bpf", "perf_event_open", "syslog",
        ],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "userfaultfd"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex",
            "clock_adjtime", "clock_adjtime64",
        ],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind",
            "move_pages", "migrate_pages",
        ],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The capabilities docker grants by default; [`default_profile`] assumes them.
#[rustfmt::skip]
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

/// personality(2) values a container may set: PER_LINUX, PER_LINUX_32BIT (0x8),
/// UNAME26 (0x20000), UNAME26|PER_LINUX32 (0x20008), and 0xffffffff (query only).
pub const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NEW_MASK: u64 = 0x7e02_0000;
/// The same plus CLONE_NEWTIME (0x80), which only unshare and clone3 accept
/// (for clone the low byte is the exit signal).
const UNSHARE_NEW_MASK: u64 = CLONE_NEW_MASK | 0x80;

/// berth's default profile for a container with docker's default capabilities.
pub fn default_profile() -> LinuxSeccomp {
    let caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    default_profile_for(&caps)
}

fn has_cap(caps: &[String], want: &str) -> bool {
    let want = want.trim_start_matches("CAP_");
    caps.iter().any(|c| {
        let c = c.trim();
        let c = c
            .strip_prefix("CAP_")
            .or_else(|| c.strip_prefix("cap_"))
            .unwrap_or(c);
        c.eq_ignore_ascii_case(want)
    })
}

fn rule(names: Vec<String>, action: LinuxSeccompAction) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names);
    r.set_action(action);
    r
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
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

/// The architectures a filter for this build's target covers (its compat modes too).
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// berth's default profile for a container granted `caps` (names like `CAP_SYS_ADMIN`,
/// as in `process.capabilities.bounding`): each capability that governs a blocked class
/// opens the syscalls it already guards (CAP_SYS_ADMIN: mount, namespaces, ...).
pub fn default_profile_for(caps: &[String]) -> LinuxSeccomp {
    let mut names: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    for (cap, calls) in BY_CAPABILITY {
        if has_cap(caps, cap) {
            for c in *calls {
                if !names.iter().any(|n| n == c) {
                    names.push(c.to_string());
                }
            }
        }
    }
    // Names newer than the host's libseccomp (mseal, statmount, ...) cannot be put in
    // a filter; leaving them out keeps every compile of the default profile free of
    // "unknown syscall" warnings. A newer libseccomp picks them up.
    names.retain(|n| {
        let known = libseccomp::ScmpSyscall::from_name(n).is_ok();
        if !known {
            tracing::debug!(syscall = %n, "not known to this libseccomp, left out of the default profile");
        }
        known
    });
    let sys_admin = has_cap(caps, "CAP_SYS_ADMIN");

    let mut rules = vec![rule(names, LinuxSeccompAction::ScmpActAllow)];
    for p in SAFE_PERSONALITIES {
        let mut r = rule(vec!["personality".into()], LinuxSeccompAction::ScmpActAllow);
        r.set_args(Some(vec![arg(
            0,
            LinuxSeccompOperator::ScmpCmpEq,
            *p,
            None,
        )]));
        rules.push(r);
    }
    if !sys_admin {
        // Threads and processes, but no new namespaces.
        let mut clone = rule(vec!["clone".into()], LinuxSeccompAction::ScmpActAllow);
        let clone_flags_arg = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        clone.set_args(Some(vec![arg(
            clone_flags_arg,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            CLONE_NEW_MASK,
            Some(0),
        )]));
        rules.push(clone);
        let mut unshare = rule(vec!["unshare".into()], LinuxSeccompAction::ScmpActAllow);
        unshare.set_args(Some(vec![arg(
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            UNSHARE_NEW_MASK,
            Some(0),
        )]));
        rules.push(unshare);
        // clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes
        // libc fall back to clone, whose flags the rule above can see.
        let mut clone3 = rule(vec!["clone3".into()], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        rules.push(clone3);
    }

    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActErrno);
    p.set_default_errno_ret(Some(libc::EPERM as u32));
    p.set_architectures(Some(architectures()));
    p.set_syscalls(Some(rules));
    p
}
