//! Backends turn a checked [`Profile`] into a classic-BPF seccomp program.
//!
//! The program is all the kernel needs: loading it in the container init is a single
//! seccomp(2) call with no library state, so a backend only has to emit instructions.
//! [`Libseccomp`] is the one shipped today; a pure-Rust generator can implement
//! [`Backend`] later without touching the runtime.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::Arch;

use crate::Error;
use crate::profile::{Action, CmpOp, Profile};

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Compiles a profile into a seccomp BPF program.
pub trait Backend: std::fmt::Debug {
    /// Emits the program. Syscall names the backend does not know are skipped with a
    /// `tracing` warning (as runc does); they are returned in `Compiled::unknown`.
    fn compile(&self, profile: &Profile) -> Result<Compiled, Error>;
}

/// A backend's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The BPF program.
    pub program: Vec<Insn>,
    /// Names that were skipped because the backend does not know them.
    pub unknown: Vec<String>,
}

/// The libseccomp backend (Debian's libseccomp 2.5 or newer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Libseccomp;

fn scmp_action(a: Action) -> ScmpAction {
    match a {
        Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Errno(e) => ScmpAction::Errno(i32::from(e)),
        Action::Trace(m) => ScmpAction::Trace(m),
        Action::Allow => ScmpAction::Allow,
        Action::Log => ScmpAction::Log,
        Action::Notify => ScmpAction::Notify,
    }
}

/// libseccomp's token for an OCI architecture.
pub fn scmp_arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn scmp_cmp(c: &crate::profile::ArgCond) -> ScmpArgCompare {
    let op = match c.op {
        CmpOp::Ne => ScmpCompareOp::NotEqual,
        CmpOp::Lt => ScmpCompareOp::Less,
        CmpOp::Le => ScmpCompareOp::LessOrEqual,
        CmpOp::Eq => ScmpCompareOp::Equal,
        CmpOp::Ge => ScmpCompareOp::GreaterEqual,
        CmpOp::Gt => ScmpCompareOp::Greater,
        CmpOp::MaskedEq { mask } => ScmpCompareOp::MaskedEqual(mask),
    };
    ScmpArgCompare::new(u32::from(c.index), op, c.value)
}

fn lib(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    let what = what.into();
    move |source| Error::Libseccomp { what, source }
}

impl Backend for Libseccomp {
    fn compile(&self, profile: &Profile) -> Result<Compiled, Error> {
        let native = ScmpArch::native();
        let mut arches = vec![native];
        for arch in &profile.architectures {
            let a = scmp_arch(*arch);
            if a != ScmpArch::Native && !arches.contains(&a) {
                arches.push(a);
            }
        }
        let mut unknown: Vec<String> = Vec::new();
        // libseccomp's code generation grows much faster than linearly with the number
        // of architectures in one context (the default profile: ~45 ms for x86_64, x86
        // and x32 together, ~7 ms one by one), so each architecture is compiled alone
        // and the programs are joined behind an architecture dispatch.
        let mut program = if arches.len() == 1 {
            build(profile, &arches, &mut unknown)?
        } else {
            let mut parts = Vec::new();
            for (i, a) in arches.iter().enumerate() {
                let mut u = Vec::new();
                parts.push((*a, build(profile, &[*a], &mut u)?));
                if i == 0 {
                    unknown = u;
                }
            }
            match stitch(&parts) {
                Some(p) => p,
                None => build(profile, &arches, &mut Vec::new())?,
            }
        };
        if !unknown.is_empty() {
            tracing::warn!(
                syscalls = %unknown.join(","),
                "seccomp profile names syscalls libseccomp does not know, ignored"
            );
        }
        if !matches!(profile.default_action, Action::Allow | Action::Log) {
            program = with_enosys_stub(program);
        }
        Ok(Compiled { program, unknown })
    }
}

/// Compiles `profile` for exactly `arches` with one libseccomp context.
fn build(
    profile: &Profile,
    arches: &[ScmpArch],
    unknown: &mut Vec<String>,
) -> Result<Vec<Insn>, Error> {
    let mut ctx = ScmpFilterContext::new(scmp_action(profile.default_action))
        .map_err(lib("creating filter context"))?;
    // The runtime decides about no_new_privs itself (the spec's noNewPrivileges).
    ctx.set_ctl_nnp(false)
        .map_err(lib("clearing the nnp attribute"))?;
    // Binary-tree dispatch: fewer instructions run per syscall on big allow-lists.
    if let Err(e) = ctx.set_ctl_optimize(2) {
        tracing::debug!(error = %e, "libseccomp cannot build a binary tree filter, using the linear one");
    }
    let native = ScmpArch::native();
    for a in arches {
        if !ctx
            .is_arch_present(*a)
            .map_err(lib(format!("checking architecture {a:?}")))?
        {
            ctx.add_arch(*a)
                .map_err(lib(format!("adding architecture {a:?}")))?;
        }
    }
    if !arches.contains(&native) {
        ctx.remove_arch(native)
            .map_err(lib(format!("removing architecture {native:?}")))?;
    }

    for (i, rule) in profile.rules.iter().enumerate() {
        let action = scmp_action(rule.action);
        let groups = rule.condition_groups();
        for name in &rule.names {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                if !unknown.contains(name) {
                    unknown.push(name.clone());
                }
                continue;
            };
            for conds in &groups {
                let cmps: Vec<ScmpArgCompare> = conds.iter().map(scmp_cmp).collect();
                let res = if cmps.is_empty() {
                    ctx.add_rule(action, nr)
                } else {
                    ctx.add_rule_conditional(action, nr, &cmps)
                };
                res.map_err(lib(format!(
                    "adding rule linux.seccomp.syscalls[{i}] for {name} ({:?}) on {arches:?}",
                    rule.action
                )))?;
            }
        }
    }
    export(&ctx)
}

const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const RET: u16 = 0x06; // BPF_RET | BPF_K
const X32_BIT: u32 = 0x4000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Joins single-architecture programs behind a dispatch on `seccomp_data.arch` (and, for
/// x86_64 and x32, which share one audit arch, on the x32 syscall bit). Each program
/// still checks its own architecture first, so the join adds no trust in the dispatch.
/// Returns None if a program does not start the way libseccomp's do.
fn stitch(parts: &[(ScmpArch, Vec<Insn>)]) -> Option<Vec<Insn>> {
    // libseccomp starts every program with `ld [4]; jeq AUDIT_ARCH`.
    let audit = |p: &[Insn]| -> Option<u32> {
        (p.len() > 2 && p[0] == insn(LD_ABS, 0, 0, 4) && p[1].code == JEQ).then(|| p[1].k)
    };
    // (audit arch, program index for plain or x86_64 calls, program index for x32 calls)
    let mut groups: Vec<(u32, Option<usize>, Option<usize>)> = Vec::new();
    for (i, (arch, prog)) in parts.iter().enumerate() {
        let a = audit(prog)?;
        let slot = match groups.iter_mut().find(|g| g.0 == a) {
            Some(g) => g,
            None => {
                groups.push((a, None, None));
                groups.last_mut()?
            }
        };
        let target = if *arch == ScmpArch::X32 {
            &mut slot.2
        } else {
            &mut slot.1
        };
        if target.replace(i).is_some() {
            return None;
        }
    }
    let header_len: usize = 1
        + groups
            .iter()
            .map(|g| if g.1.is_some() && g.2.is_some() { 5 } else { 2 })
            .sum::<usize>()
        + 1;
    let mut starts = Vec::with_capacity(parts.len());
    let mut at = header_len;
    for (_, p) in parts {
        starts.push(at);
        at += p.len();
    }
    let mut out = vec![insn(LD_ABS, 0, 0, 4)];
    let ja = |out: &Vec<Insn>, target: usize| insn(JA, 0, 0, (target - (out.len() + 1)) as u32);
    for (a, plain, x32) in &groups {
        match (plain, x32) {
            (Some(p), Some(x)) => {
                out.push(insn(JEQ, 0, 4, *a));
                out.push(insn(LD_ABS, 0, 0, 0));
                out.push(insn(JGE, 0, 1, X32_BIT));
                let j = ja(&out, starts[*x]);
                out.push(j);
                let j = ja(&out, starts[*p]);
                out.push(j);
            }
            (Some(i), None) | (None, Some(i)) => {
                out.push(insn(JEQ, 0, 1, *a));
                let j = ja(&out, starts[*i]);
                out.push(j);
            }
            (None, None) => return None,
        }
    }
    // Unknown architecture: what libseccomp does by default (SCMP_ACT_KILL).
    out.push(insn(RET, 0, 0, 0));
    debug_assert_eq!(out.len(), header_len);
    for (_, p) in parts {
        out.extend_from_slice(p);
    }
    Some(out)
}

/// Reads the generated program through a memfd (libseccomp 2.5 only exports to an fd).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<Insn>, Error> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; we check the result.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Export(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created by us and is owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(lib("exporting the bpf program"))?;
    file.seek(SeekFrom::Start(0)).map_err(Error::Export)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(Error::Export)?;
    if bytes.len() % 8 != 0 {
        return Err(Error::Export(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "bpf program of {} bytes is not whole instructions",
                bytes.len()
            ),
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// AUDIT_ARCH value of the native architecture, for the architectures berth builds on.
fn native_audit_arch() -> Option<u32> {
    match ScmpArch::native() {
        ScmpArch::X8664 => Some(0xc000_003e),
        ScmpArch::Aarch64 => Some(0xc000_00b7),
        ScmpArch::X86 => Some(0x4000_0003),
        ScmpArch::Arm => Some(0x4000_0028),
        ScmpArch::Riscv64 => Some(0xc000_00f3),
        ScmpArch::Ppc64Le => Some(0xc000_0015),
        ScmpArch::S390X => Some(0x8000_0016),
        _ => None,
    }
}

/// Highest native syscall number libseccomp has a name for.
fn max_known_syscall() -> Option<u32> {
    (0..1024u32).rev().find(|nr| {
        ScmpSyscall::from_raw_syscall(*nr as i32)
            .get_name_by_arch(ScmpArch::Native)
            .is_ok()
    })
}

/// Prepends a check that answers ENOSYS, instead of the profile's default action, to
/// native syscalls newer than libseccomp knows, as runc does: libc falls back to an
/// older syscall on ENOSYS, but takes EPERM as a real failure, so a container's newer
/// libc would break on a block meant for something else. The stub falls through to the
/// program (BPF jumps are relative, so libseccomp's code needs no change).
fn with_enosys_stub(program: Vec<Insn>) -> Vec<Insn> {
    const RET_ERRNO: u32 = 0x0005_0000;
    let (Some(arch), Some(max)) = (native_audit_arch(), max_known_syscall()) else {
        return program;
    };
    let is_x86_64 = arch == 0xc000_003e;
    let mut stub = vec![
        // seccomp_data: nr at offset 0, arch at offset 4.
        insn(LD_ABS, 0, 0, 4),
        insn(JEQ, 0, if is_x86_64 { 4 } else { 3 }, arch),
        insn(LD_ABS, 0, 0, 0),
    ];
    if is_x86_64 {
        // x32 calls share the x86_64 audit arch; libseccomp's code sorts them out.
        stub.push(insn(JGE, 2, 0, X32_BIT));
    }
    stub.push(insn(JGT, 0, 1, max));
    stub.push(insn(RET, 0, 0, RET_ERRNO | libc::ENOSYS as u32));
    stub.extend(program);
    stub
}
