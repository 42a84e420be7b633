//! cgroup v2 device access: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`,
//! generated from the OCI rules and attached to the container's cgroup.
//!
//! Semantics follow the v1 devices cgroup: the last rule that matches a request decides;
//! no match allows (a v1 cgroup starts as "allow all"; configs start with "deny all").
//! An allow rule matches only if it covers every access bit requested, a deny rule if it
//! covers any of them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::Error;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (see linux/bpf_common.h, linux/bpf.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
// access_type = (access << 16) | type
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// A rule reduced to what the program compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    typ: Option<i32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: i32,
}

fn rule(d: &LinuxDeviceCgroup) -> Result<Rule, Error> {
    let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(DEV_BLOCK),
        LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
        LinuxDeviceType::P => {
            return Err(Error::Unsupported {
                field: "devices.type".into(),
                value: "p".into(),
                reason: "device rules cannot name fifos".into(),
            });
        }
    };
    let num = |n: Option<i64>, what: &str| match n {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| Error::Invalid {
            field: format!("devices.{what}"),
            value: n.to_string(),
            reason: "not a device number".into(),
        }),
    };
    let acc_s = d.access().clone().unwrap_or_else(|| "rwm".into());
    let mut access = 0;
    for c in acc_s.chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::Invalid {
                    field: "devices.access".into(),
                    value: acc_s.clone(),
                    reason: "must be made of r, w and m".into(),
                });
            }
        };
    }
    Ok(Rule {
        allow: d.allow(),
        typ,
        major: num(d.major(), "major")?,
        minor: num(d.minor(), "minor")?,
        access,
    })
}

/// Build the program. r2 = type, r3 = access, r4 = major, r5 = minor.
pub(crate) fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>, Error> {
    let rules: Vec<Rule> = rules.iter().map(rule).collect::<Result<_, _>>()?;
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    // Last rule first: the first match in this order is the last match in config order.
    for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each conditional jump skips to the end of this block; offsets fixed below.
        let mut jumps: Vec<usize> = Vec::new();
        if let Some(t) = r.typ {
            jumps.push(block.len());
            block.push(insn(JNE_K, 2, 0, 0, t));
        }
        if r.access != ACC_READ | ACC_WRITE | ACC_MKNOD || !r.allow {
            block.push(insn(MOV32_X, 1, 3, 0, 0));
            if r.allow {
                // every requested bit must be allowed
                block.push(insn(AND32_K, 1, 0, 0, !r.access & 7));
                jumps.push(block.len());
                block.push(insn(JNE_K, 1, 0, 0, 0));
            } else {
                // any requested bit denied
                block.push(insn(AND32_K, 1, 0, 0, r.access));
                jumps.push(block.len());
                block.push(insn(JEQ_K, 1, 0, 0, 0));
            }
        }
        if let Some(m) = r.major {
            jumps.push(block.len());
            block.push(insn(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            jumps.push(block.len());
            block.push(insn(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        let unconditional = jumps.is_empty();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
        if unconditional {
            // Matches everything: what follows could never run, and the verifier
            // rejects unreachable instructions.
            return Ok(p);
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    Ok(p)
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` is up to a few hundred bytes; every command reads a prefix and
/// requires the rest to be zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn read_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable, zero-padded bpf_attr of the size passed; the
    // pointers inside it (set by callers) point to live buffers for the call's duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: bpf returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn err(dir: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Unsupported {
        field: "devices".into(),
        value: format!("eBPF device filter for {}", dir.display()),
        reason: format!("{what}: {e}"),
    }
}

/// Load the program for `rules` and make it the only device program on `dir`
/// (programs attached earlier by us, e.g. before an `update`, are detached).
pub(crate) fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), Error> {
    let prog = program(rules)?;
    let license = c"Apache-2.0";
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_PROG_TYPE_CGROUP_DEVICE)
        .u32_at(4, prog.len() as u32)
        .u64_at(8, prog.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        // expected_attach_type sits after log_level/log_size/log_buf/kern_version/
        // prog_flags/prog_name[16]/prog_ifindex
        .u32_at(68, BPF_CGROUP_DEVICE);
    let prog_fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(r) => fd(r),
        Err(e) => {
            // Load again with the verifier log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.u32_at(24, 1)
                .u32_at(28, log.len() as u32)
                .u64_at(32, log.as_mut_ptr() as u64);
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let msg = String::from_utf8_lossy(&log[..end]);
            let last: Vec<&str> = msg.lines().rev().take(3).collect();
            return Err(err(
                dir,
                &format!("load program (verifier: {})", last.join(" / ")),
                e,
            ));
        }
    };

    let cg = std::fs::File::open(dir).map_err(|error| Error::Read {
        path: dir.to_path_buf(),
        error,
    })?;
    let cg_fd = cg.as_raw_fd() as u32;

    // What is attached now, to detach after ours is in (no window without a filter).
    let mut ids = [0u32; 64];
    let mut q = Attr::new();
    q.u32_at(0, cg_fd)
        .u32_at(4, BPF_CGROUP_DEVICE)
        .u64_at(16, ids.as_mut_ptr() as u64)
        .u32_at(24, ids.len() as u32);
    let old: Vec<u32> = match bpf(BPF_PROG_QUERY, &mut q) {
        Ok(_) => ids[..(q.read_u32(24) as usize).min(ids.len())].to_vec(),
        Err(_) => Vec::new(),
    };

    let mut a = Attr::new();
    a.u32_at(0, cg_fd)
        .u32_at(4, prog_fd.as_raw_fd() as u32)
        .u32_at(8, BPF_CGROUP_DEVICE)
        .u32_at(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut a).map_err(|e| err(dir, "attach program", e))?;

    for id in old {
        let mut g = Attr::new();
        g.u32_at(0, id);
        let Ok(old_fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut g).map(fd) else {
            continue;
        };
        let mut d = Attr::new();
        d.u32_at(0, cg_fd)
            .u32_at(4, old_fd.as_raw_fd() as u32)
            .u32_at(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut d).map_err(|e| err(dir, "detach old program", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder as B;

    /// Run the generated program in a tiny interpreter of the opcodes it uses.
    fn run(p: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | typ) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV32_X => r[dst] = r[src] as u32 as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JNE_K | JEQ_K => {}
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn default_style_rules() {
        let rules = vec![
            B::default().allow(false).access("rwm").build().unwrap(),
            B::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rwm")
                .build()
                .unwrap(),
            B::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(136)
                .access("rw")
                .build()
                .unwrap(),
            B::default()
                .allow(false)
                .typ(LinuxDeviceType::C)
                .major(136)
                .minor(2)
                .access("w")
                .build()
                .unwrap(),
        ];
        let p = program(&rules).unwrap();
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 1, "mknod null");
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 5), 0, "/dev/zero denied");
        assert_eq!(run(&p, DEV_BLOCK, rw, 1, 3), 0, "block 1:3 denied");
        assert_eq!(run(&p, DEV_CHAR, rw, 136, 7), 1, "pts");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 136, 7), 0, "pts mknod");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 136, 2), 1, "pts/2 read");
        assert_eq!(run(&p, DEV_CHAR, rw, 136, 2), 0, "pts/2 write denied");
        assert_eq!(run(&program(&[]).unwrap(), DEV_BLOCK, rw, 8, 0), 1);
        // an unconditional rule ends the program: nothing unreachable after it
        let all = B::default().allow(true).access("rwm").build().unwrap();
        let p = program(&[rules[0].clone(), all]).unwrap();
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(run(&p, DEV_BLOCK, rw, 8, 0), 1);
    }
}
