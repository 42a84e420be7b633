//! The `linux.seccomp` part of the runtime-spec features document (`berth-oci features`),
//! probed from this kernel rather than assumed.

use oci_spec::runtime::{Arch, LinuxSeccompAction, Seccomp};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;

/// Flags this crate knows, with their kernel bit and the bits the probe adds
/// (WAIT_KILLABLE_RECV is only accepted together with NEW_LISTENER).
const FLAGS: &[(&str, u32, u32)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", 1, 0),
    ("SECCOMP_FILTER_FLAG_LOG", 2, 0),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4, 0),
    ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", 32, 8),
];

const ACTIONS: &[(LinuxSeccompAction, u32)] = &[
    (LinuxSeccompAction::ScmpActKill, 0),
    (LinuxSeccompAction::ScmpActKillThread, 0),
    (LinuxSeccompAction::ScmpActKillProcess, 0x8000_0000),
    (LinuxSeccompAction::ScmpActTrap, 0x0003_0000),
    (LinuxSeccompAction::ScmpActErrno, 0x0005_0000),
    (LinuxSeccompAction::ScmpActNotify, 0x7fc0_0000),
    (LinuxSeccompAction::ScmpActTrace, 0x7ff0_0000),
    (LinuxSeccompAction::ScmpActLog, 0x7ffc_0000),
    (LinuxSeccompAction::ScmpActAllow, 0x7fff_0000),
];

/// Architectures libseccomp 2.5 can build filters for.
const ARCHS: &[Arch] = &[
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
];

const OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

fn seccomp(op: libc::c_ulong, flags: libc::c_ulong, arg: *const libc::c_void) -> i32 {
    // SAFETY: callers pass either a pointer to a live u32 (GET_ACTION_AVAIL) or NULL
    // (SET_MODE_FILTER probe, which fails with EFAULT before installing anything).
    let r = unsafe { libc::syscall(libc::SYS_seccomp, op, flags, arg) };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

fn action_available(raw: u32) -> bool {
    seccomp(
        SECCOMP_GET_ACTION_AVAIL,
        0,
        (&raw as *const u32).cast::<libc::c_void>(),
    ) == 0
}

/// Whether the kernel accepts a filter flag: a NULL program is refused with EFAULT once
/// the flags passed validation, EINVAL if they did not.
fn flag_supported(bits: u32) -> bool {
    seccomp(
        SECCOMP_SET_MODE_FILTER,
        libc::c_ulong::from(bits),
        std::ptr::null(),
    ) == libc::EFAULT
}

/// What this build and this kernel support, for the features document.
pub fn features() -> Seccomp {
    let mut s = Seccomp::default();
    s.set_enabled(Some(true));
    s.set_actions(Some(
        ACTIONS
            .iter()
            .filter(|(_, raw)| action_available(*raw))
            .map(|(a, _)| *a)
            .collect(),
    ));
    s.set_operators(Some(OPERATORS.iter().map(|o| o.to_string()).collect()));
    s.set_archs(Some(ARCHS.to_vec()));
    s.set_known_flags(Some(FLAGS.iter().map(|(n, _, _)| n.to_string()).collect()));
    s.set_supported_flags(Some(
        FLAGS
            .iter()
            .filter(|(_, bit, with)| flag_supported(bit | with))
            .map(|(n, _, _)| n.to_string())
            .collect(),
    ));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_supports_everything_berth_uses() {
        // The CI kernel (6.x) has every action and flag; an older one would list fewer.
        let f = super::features();
        assert_eq!(f.actions().as_ref().unwrap().len(), super::ACTIONS.len());
        assert_eq!(
            f.supported_flags().as_ref().unwrap(),
            f.known_flags().as_ref().unwrap()
        );
        let json = serde_json::to_value(&f).unwrap();
        assert!(
            json["actions"]
                .as_array()
                .unwrap()
                .contains(&"SCMP_ACT_NOTIFY".into())
        );
        assert!(
            json["archs"]
                .as_array()
                .unwrap()
                .contains(&"SCMP_ARCH_X86_64".into())
        );
    }
}
