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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ArgCond, Flags, Rule};

    /// A classic-BPF interpreter for the instructions seccomp programs use.
    fn run(prog: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                0x20 => {
                    let k = i.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x00 => a = i.k,                  // ld #k
                0x60 => a = mem[i.k as usize],    // ld M[k]
                0x61 => x = mem[i.k as usize],    // ldx M[k]
                0x02 => mem[i.k as usize] = a,    // st M[k]
                0x03 => mem[i.k as usize] = x,    // stx M[k]
                0x54 => a &= i.k,                 // and #k
                0x07 => x = a,                    // tax
                0x87 => a = x,                    // txa
                0x05 => pc += i.k as usize,       // ja
                0x15 => pc += jump(a == i.k),     // jeq #k
                0x25 => pc += jump(a > i.k),      // jgt #k
                0x35 => pc += jump(a >= i.k),     // jge #k
                0x45 => pc += jump(a & i.k != 0), // jset #k
                0x06 => return i.k,               // ret #k
                other => panic!("opcode {other:#x} at {} not emulated", pc - 1),
            }
        }
    }

    fn profile() -> Profile {
        let rule = |names: &[&str], action, args: Vec<ArgCond>| Rule {
            names: names.iter().map(|s| s.to_string()).collect(),
            action,
            args,
        };
        Profile {
            default_action: Action::Errno(1),
            architectures: vec![
                oci_spec::runtime::Arch::ScmpArchX86_64,
                oci_spec::runtime::Arch::ScmpArchX86,
                oci_spec::runtime::Arch::ScmpArchX32,
            ],
            flags: Flags::default(),
            rules: vec![
                rule(
                    &[
                        "read",
                        "write",
                        "getpid",
                        "socketcall",
                        "socket",
                        "arch_prctl",
                    ],
                    Action::Allow,
                    vec![],
                ),
                rule(&["keyctl"], Action::Errno(38), vec![]),
                rule(
                    &["personality"],
                    Action::Allow,
                    vec![ArgCond {
                        index: 0,
                        op: CmpOp::Eq,
                        value: 8,
                    }],
                ),
                rule(
                    &["clone"],
                    Action::Allow,
                    vec![ArgCond {
                        index: 0,
                        op: CmpOp::MaskedEq { mask: 0x7e02_0000 },
                        value: 0,
                    }],
                ),
            ],
        }
    }

    #[test]
    fn joined_program_decides_like_libseccomps_merged_one() {
        let default = Profile::from_oci(&crate::default_profile()).unwrap();
        for p in [profile(), default] {
            same_decisions(&p);
        }
    }

    fn same_decisions(p: &Profile) {
        let arches = [ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32];
        let merged = build(p, &arches, &mut Vec::new()).unwrap();
        let parts: Vec<(ScmpArch, Vec<Insn>)> = arches
            .iter()
            .map(|a| (*a, build(p, &[*a], &mut Vec::new()).unwrap()))
            .collect();
        let joined = stitch(&parts).expect("libseccomp programs have the expected prologue");
        let audit = [0xc000_003e_u32, 0x4000_0003, 0xc000_00b7];
        let mut checked = 0;
        for arch in audit {
            for base in [0u32, X32_BIT] {
                for nr in 0..520u32 {
                    for arg0 in [0u64, 8, 0x1000_0000, 0x11] {
                        let args = [arg0, 0, 0, 0, 0, 0];
                        let want = run(&merged, base | nr, arch, args);
                        let got = run(&joined, base | nr, arch, args);
                        assert_eq!(
                            got,
                            want,
                            "arch {arch:#x} nr {:#x} arg0 {arg0:#x}",
                            base | nr
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
        if p.rules.len() > 4 {
            return; // the default profile: equivalence is what is checked
        }
        // And the decisions are the intended ones on x86_64.
        let read = 0;
        let keyctl = 250;
        let personality = 135;
        assert_eq!(run(&joined, read, 0xc000_003e, [0; 6]), 0x7fff_0000);
        assert_eq!(run(&joined, keyctl, 0xc000_003e, [0; 6]), 0x0005_0000 | 38);
        assert_eq!(
            run(&joined, personality, 0xc000_003e, [8, 0, 0, 0, 0, 0]),
            0x7fff_0000
        );
        assert_eq!(
            run(&joined, personality, 0xc000_003e, [9, 0, 0, 0, 0, 0]),
            0x0005_0001
        );
    }
}
