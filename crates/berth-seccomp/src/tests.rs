//! Unit tests: profile checking and compilation (no filter is loaded here; that needs
//! a child process and lives in integration-tests/tests/seccomp.rs).

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag as F, LinuxSeccompOperator as Op, LinuxSyscall,
};

use crate::*;

fn sc(names: &[&str], action: A, errno: Option<u32>, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
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

fn invalid_field(err: Error) -> String {
    match err {
        Error::InvalidProfile { field, .. } => field,
        other => panic!("expected InvalidProfile, got {other}"),
    }
}

#[test]
fn default_profile_compiles_to_a_loadable_size() {
    let f = Filter::compile(&default_profile()).expect("default profile compiles");
    assert!(
        f.program().len() > 50,
        "program of {} insns",
        f.program().len()
    );
    assert!(f.program().len() <= 4096);
    assert!(!f.has_notify());
    assert_eq!(f.kernel_flags(), 0);
    // Names this libseccomp does not know were left out of the profile itself.
    assert_eq!(f.unknown_syscalls(), &[] as &[String]);
}

#[test]
fn default_profile_blocks_the_dangerous_classes() {
    let p = default_profile();
    assert_eq!(p.default_action(), A::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
    let unconditional: Vec<&String> = p
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.action() == A::ScmpActAllow && r.args().is_none())
        .flat_map(|r| r.names())
        .collect();
    for blocked in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "clone3",
        "add_key",
        "request_key",
        "keyctl",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "clock_settime",
        "settimeofday",
        "adjtimex",
        "clock_adjtime",
        "reboot",
        "swapon",
        "swapoff",
        "quotactl",
        "personality",
        "clone",
        "io_uring_setup",
        "iopl",
        "ioperm",
        "acct",
        "pivot_root",
        "open_by_handle_at",
    ] {
        assert!(
            !unconditional.iter().any(|n| *n == blocked),
            "{blocked} is allowed unconditionally"
        );
    }
    for allowed in [
        "read", "write", "getpid", "openat", "execve", "chroot", "futex",
    ] {
        assert!(
            unconditional.iter().any(|n| *n == allowed),
            "{allowed} missing"
        );
    }
    let personalities: Vec<u64> = p
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.names() == &["personality".to_string()])
        .map(|r| r.args().as_ref().unwrap()[0].value())
        .collect();
    assert_eq!(personalities, SAFE_PERSONALITIES);
}

#[test]
fn capabilities_open_what_they_govern() {
    let p = default_profile_for(&["CAP_SYS_ADMIN".into(), "sys_time".into()]);
    let names: Vec<&String> = p
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|r| r.names())
        .collect();
    for n in [
        "mount",
        "setns",
        "unshare",
        "clone3",
        "settimeofday",
        "clock_settime",
    ] {
        assert!(names.iter().any(|x| *x == n), "{n} missing with caps");
    }
    assert!(
        !names.iter().any(|x| *x == "keyctl"),
        "keyring is never opened"
    );
    assert!(
        !names.iter().any(|x| *x == "chroot"),
        "chroot needs CAP_SYS_CHROOT"
    );
    // With CAP_SYS_ADMIN clone is unconditional: no masked clone rule remains.
    assert!(
        p.syscalls()
            .iter()
            .flatten()
            .all(|r| r.args().is_none() || r.names() == &["personality".to_string()])
    );
    Filter::compile(&p).expect("compiles");
}

#[test]
fn every_action_compiles() {
    let actions = [
        (A::ScmpActKill, None, Action::KillThread),
        (A::ScmpActKillThread, None, Action::KillThread),
        (A::ScmpActKillProcess, None, Action::KillProcess),
        (A::ScmpActTrap, None, Action::Trap),
        (A::ScmpActErrno, None, Action::Errno(libc::EPERM as u16)),
        (A::ScmpActErrno, Some(38), Action::Errno(38)),
        (A::ScmpActTrace, None, Action::Trace(libc::EPERM as u16)),
        (A::ScmpActTrace, Some(7), Action::Trace(7)),
        (A::ScmpActLog, None, Action::Log),
    ];
    for (a, errno, want) in actions {
        let p = profile(A::ScmpActAllow, vec![sc(&["getppid"], a, errno, vec![])]);
        assert_eq!(Profile::from_oci(&p).unwrap().rules[0].action, want);
        let f = Filter::compile(&p).unwrap_or_else(|e| panic!("{a:?}: {e}"));
        assert!(!f.program().is_empty());
    }
    // ALLOW as a rule needs a different default.
    let p = profile(
        A::ScmpActKillProcess,
        vec![sc(&["read"], A::ScmpActAllow, None, vec![])],
    );
    Filter::compile(&p).unwrap();
    // Default actions with errnoRet.
    let mut p = profile(
        A::ScmpActErrno,
        vec![sc(&["read"], A::ScmpActAllow, None, vec![])],
    );
    p.set_default_errno_ret(Some(38));
    assert_eq!(
        Profile::from_oci(&p).unwrap().default_action,
        Action::Errno(38)
    );
    Filter::compile(&p).unwrap();
}

#[test]
fn notify_yields_a_listener_flag_and_needs_a_listener_path() {
    let mut p = profile(
        A::ScmpActAllow,
        vec![sc(&["getppid"], A::ScmpActNotify, None, vec![])],
    );
    let err = Filter::compile(&p).unwrap_err();
    assert_eq!(invalid_field(err), "linux.seccomp.listenerPath");
    p.set_listener_path(Some("/run/agent.sock".into()));
    p.set_flags(Some(vec![
        F::SeccompFilterFlagWaitKillableRecv,
        F::SeccompFilterFlagTsync,
    ]));
    let f = Filter::compile(&p).unwrap();
    assert!(f.has_notify());
    // NEW_LISTENER | WAIT_KILLABLE_RECV | TSYNC | TSYNC_ESRCH
    assert_eq!(f.kernel_flags(), 8 | 32 | 1 | 16);

    let mut p = profile(A::ScmpActNotify, vec![]);
    p.set_listener_path(Some("/run/agent.sock".into()));
    let err = Filter::compile(&p).unwrap_err();
    assert_eq!(invalid_field(err), "linux.seccomp.defaultAction");
}

#[test]
fn flags_map_to_kernel_bits() {
    let mut p = profile(
        A::ScmpActAllow,
        vec![sc(&["getppid"], A::ScmpActLog, None, vec![])],
    );
    p.set_flags(Some(vec![
        F::SeccompFilterFlagTsync,
        F::SeccompFilterFlagLog,
        F::SeccompFilterFlagSpecAllow,
        // Dropped: no notify rule, and the kernel refuses it without a listener.
        F::SeccompFilterFlagWaitKillableRecv,
    ]));
    assert_eq!(Filter::compile(&p).unwrap().kernel_flags(), 1 | 2 | 4);
}

#[test]
fn every_operator_compiles() {
    for (op, two) in [
        (Op::ScmpCmpNe, None),
        (Op::ScmpCmpLt, None),
        (Op::ScmpCmpLe, None),
        (Op::ScmpCmpEq, None),
        (Op::ScmpCmpGe, None),
        (Op::ScmpCmpGt, None),
        (Op::ScmpCmpMaskedEq, Some(0x10)),
    ] {
        let p = profile(
            A::ScmpActAllow,
            vec![sc(
                &["getppid"],
                A::ScmpActErrno,
                Some(11),
                vec![arg(2, op, 0x30, two)],
            )],
        );
        let f = Filter::compile(&p).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        assert!(!f.program().is_empty());
    }
    let p = profile(
        A::ScmpActAllow,
        vec![sc(
            &["getppid"],
            A::ScmpActErrno,
            None,
            vec![arg(0, Op::ScmpCmpMaskedEq, 0xf0, Some(0x30))],
        )],
    );
    let r = &Profile::from_oci(&p).unwrap().rules[0];
    assert_eq!(r.args[0].op, CmpOp::MaskedEq { mask: 0xf0 });
    assert_eq!(r.args[0].value, 0x30);
}

#[test]
fn repeated_argument_index_means_or() {
    let p = profile(
        A::ScmpActAllow,
        vec![sc(
            &["getppid"],
            A::ScmpActErrno,
            None,
            vec![
                arg(0, Op::ScmpCmpEq, 1, None),
                arg(0, Op::ScmpCmpEq, 2, None),
            ],
        )],
    );
    let prof = Profile::from_oci(&p).unwrap();
    assert_eq!(prof.rules[0].condition_groups().len(), 2);
    Filter::compile(&p).unwrap();
    let p = profile(
        A::ScmpActAllow,
        vec![sc(
            &["getppid"],
            A::ScmpActErrno,
            None,
            vec![
                arg(0, Op::ScmpCmpEq, 1, None),
                arg(1, Op::ScmpCmpEq, 2, None),
            ],
        )],
    );
    assert_eq!(
        Profile::from_oci(&p).unwrap().rules[0]
            .condition_groups()
            .len(),
        1
    );
    Filter::compile(&p).unwrap();
}

#[test]
fn bad_values_name_their_field() {
    let p = profile(
        A::ScmpActAllow,
        vec![
            sc(&["read"], A::ScmpActLog, None, vec![]),
            sc(
                &["getppid"],
                A::ScmpActErrno,
                None,
                vec![arg(6, Op::ScmpCmpEq, 0, None)],
            ),
        ],
    );
    let err = Filter::compile(&p).unwrap_err();
    assert!(
        err.to_string()
            .contains("linux.seccomp.syscalls[1].args[0].index = 6"),
        "{err}"
    );

    let p = profile(
        A::ScmpActAllow,
        vec![sc(&["getppid"], A::ScmpActErrno, Some(70000), vec![])],
    );
    assert_eq!(
        invalid_field(Filter::compile(&p).unwrap_err()),
        "linux.seccomp.syscalls[0].errnoRet"
    );

    let p = profile(
        A::ScmpActAllow,
        vec![sc(&["getppid"], A::ScmpActLog, Some(1), vec![])],
    );
    let err = Filter::compile(&p).unwrap_err();
    assert!(err.to_string().contains("SCMP_ACT_LOG"), "{err}");

    let p = profile(A::ScmpActAllow, vec![sc(&[], A::ScmpActLog, None, vec![])]);
    assert_eq!(
        invalid_field(Filter::compile(&p).unwrap_err()),
        "linux.seccomp.syscalls[0].names"
    );

    let mut p = profile(A::ScmpActErrno, vec![]);
    p.set_default_errno_ret(Some(1 << 20));
    assert_eq!(
        invalid_field(Filter::compile(&p).unwrap_err()),
        "linux.seccomp.defaultErrnoRet"
    );
}

#[test]
fn json_errors_name_field_and_value() {
    let bad_action = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_BOGUS"}]}"#;
    let err = profile_from_json(bad_action).unwrap_err().to_string();
    assert!(err.contains("linux.seccomp.syscalls[0].action"), "{err}");
    assert!(err.contains("SCMP_ACT_BOGUS"), "{err}");

    let bad_op = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_LOG","args":[{"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}]}]}"#;
    let err = profile_from_json(bad_op).unwrap_err().to_string();
    assert!(
        err.contains("linux.seccomp.syscalls[0].args[0].op"),
        "{err}"
    );
    assert!(err.contains("SCMP_CMP_SOMETIMES"), "{err}");

    let bad_default = br#"{"defaultAction":"SCMP_ACT_MAYBE"}"#;
    let err = profile_from_json(bad_default).unwrap_err().to_string();
    assert!(err.contains("linux.seccomp.defaultAction"), "{err}");

    let good = br#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_AARCH64"],"flags":["SECCOMP_FILTER_FLAG_LOG"],"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#;
    let spec = profile_from_json(good).unwrap();
    let f = Filter::compile(&spec).unwrap();
    assert_eq!(f.kernel_flags(), 2);
}

#[test]
fn unknown_syscalls_are_skipped() {
    let p = profile(
        A::ScmpActAllow,
        vec![sc(
            &["getppid", "no_such_syscall_berth"],
            A::ScmpActErrno,
            None,
            vec![],
        )],
    );
    let f = Filter::compile(&p).unwrap();
    assert_eq!(f.unknown_syscalls(), ["no_such_syscall_berth".to_string()]);
}

#[test]
fn architectures_are_added_and_rules_with_default_action_dropped() {
    let mut one = profile(
        A::ScmpActErrno,
        vec![sc(&["read", "socketcall"], A::ScmpActAllow, None, vec![])],
    );
    let native = Filter::compile(&one).unwrap().program().len();
    one.set_architectures(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchX32,
        Arch::ScmpArchAarch64,
    ]));
    let multi = Filter::compile(&one).unwrap().program().len();
    assert!(multi > native, "{multi} <= {native}");

    let p = profile(
        A::ScmpActAllow,
        vec![
            sc(&["read"], A::ScmpActAllow, None, vec![]),
            sc(&["getppid"], A::ScmpActLog, None, vec![]),
        ],
    );
    assert_eq!(Profile::from_oci(&p).unwrap().rules.len(), 1);
}

#[test]
fn enosys_stub_only_when_the_default_blocks() {
    let block = profile(
        A::ScmpActErrno,
        vec![sc(&["read"], A::ScmpActAllow, None, vec![])],
    );
    let allow = profile(
        A::ScmpActAllow,
        vec![sc(&["read"], A::ScmpActErrno, None, vec![])],
    );
    let ret_enosys = |f: &Filter| {
        f.program()
            .iter()
            .take(6)
            .any(|i| i.code == 0x06 && i.k == 0x0005_0000 | libc::ENOSYS as u32)
    };
    assert!(ret_enosys(&Filter::compile(&block).unwrap()));
    assert!(!ret_enosys(&Filter::compile(&allow).unwrap()));
}
