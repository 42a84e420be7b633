//! A compiled filter and its installation into the calling process.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use oci_spec::runtime::LinuxSeccomp;

use crate::Error;
use crate::backend::{Backend, Compiled, Insn, Libseccomp};
use crate::profile::Profile;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 1 << 1;
const FLAG_SPEC_ALLOW: u32 = 1 << 2;
const FLAG_NEW_LISTENER: u32 = 1 << 3;
const FLAG_TSYNC_ESRCH: u32 = 1 << 4;
const FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;
/// The kernel's BPF_MAXINSNS.
const MAX_INSNS: usize = 4096;

/// A seccomp filter compiled from an OCI profile, ready to load.
///
/// Compile it in the runtime's parent before forking; [`Filter::load`] in the child is
/// then one seccomp(2) call that neither allocates nor touches libseccomp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    program: Vec<Insn>,
    flags: u32,
    notify: bool,
    unknown: Vec<String>,
}

impl Filter {
    /// Compiles `spec` with the libseccomp backend.
    pub fn compile(spec: &LinuxSeccomp) -> Result<Filter, Error> {
        Self::compile_with(&Libseccomp, spec)
    }

    /// Compiles `spec` with the given backend.
    pub fn compile_with(backend: &dyn Backend, spec: &LinuxSeccomp) -> Result<Filter, Error> {
        Self::from_profile(backend, &Profile::from_oci(spec)?)
    }

    /// Compiles an already checked profile.
    pub fn from_profile(backend: &dyn Backend, profile: &Profile) -> Result<Filter, Error> {
        Self::from_compiled(profile, backend.compile(profile)?)
    }

    /// Wraps a program compiled (or cached) for `profile`.
    pub(crate) fn from_compiled(profile: &Profile, compiled: Compiled) -> Result<Filter, Error> {
        if compiled.program.len() > MAX_INSNS {
            return Err(Error::ProgramTooLong {
                len: compiled.program.len(),
                max: MAX_INSNS,
            });
        }
        let notify = profile.uses_notify();
        let f = profile.flags;
        let mut flags = 0;
        if f.tsync {
            flags |= FLAG_TSYNC;
        }
        if f.log {
            flags |= FLAG_LOG;
        }
        if f.spec_allow {
            flags |= FLAG_SPEC_ALLOW;
        }
        if notify {
            flags |= FLAG_NEW_LISTENER;
            // TSYNC reports a failing thread id in the return value, which is also where
            // the listener fd comes back: the kernel wants TSYNC_ESRCH with both.
            if f.tsync {
                flags |= FLAG_TSYNC_ESRCH;
            }
        }
        if f.wait_killable_recv {
            if notify {
                flags |= FLAG_WAIT_KILLABLE_RECV;
            } else {
                // The kernel only accepts it with a listener; libseccomp also applies it
                // "when possible", so a profile without notify rules just drops it.
                tracing::debug!(
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV without SCMP_ACT_NOTIFY rules, ignored"
                );
            }
        }
        Ok(Filter {
            program: compiled.program,
            flags,
            notify,
            unknown: compiled.unknown,
        })
    }

    /// The BPF program (for inspection, caching, or another loader).
    pub fn program(&self) -> &[Insn] {
        &self.program
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits [`Filter::load`] passes to the kernel.
    pub fn kernel_flags(&self) -> u32 {
        self.flags
    }

    /// Whether loading returns a notify listener fd.
    pub fn has_notify(&self) -> bool {
        self.notify
    }

    /// Syscall names of the profile that were skipped as unknown to the backend.
    pub fn unknown_syscalls(&self) -> &[String] {
        &self.unknown
    }

    /// Installs the filter on the calling thread (and, with TSYNC, all its threads).
    ///
    /// The kernel requires no_new_privs or CAP_SYS_ADMIN in the caller's user namespace:
    /// the runtime sets no_new_privs first when the spec asks for it, otherwise loads
    /// while it still holds its capabilities. Returns the listener fd when the profile
    /// has `SCMP_ACT_NOTIFY` rules. Does not allocate on success (safe after fork).
    pub fn load(&self) -> Result<Option<OwnedFd>, Error> {
        let prog = libc::sock_fprog {
            // from_profile rejected programs longer than MAX_INSNS, so this fits.
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: Insn is repr(C) with the exact layout of struct sock_filter; `prog`
        // points into self.program, which outlives the call; the kernel copies it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                libc::c_ulong::from(self.flags),
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            let hint = match err.raw_os_error() {
                Some(libc::EACCES) => "the caller needs no_new_privs or CAP_SYS_ADMIN: ",
                Some(libc::EINVAL) if self.flags & FLAG_WAIT_KILLABLE_RECV != 0 => {
                    "this kernel may not support SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (linux 5.19+): "
                }
                Some(libc::EINVAL) if self.flags & FLAG_SPEC_ALLOW != 0 => {
                    "this kernel may not support SECCOMP_FILTER_FLAG_SPEC_ALLOW (linux 4.17+): "
                }
                Some(libc::ESRCH) => "another thread of the process cannot be synchronized: ",
                Some(libc::EBUSY) => "a notify listener is already installed on this process: ",
                _ => "",
            };
            return Err(Error::Load {
                flags: self.flags,
                hint,
                source: err,
            });
        }
        if self.notify {
            let fd = i32::try_from(ret).map_err(|_| Error::Load {
                flags: self.flags,
                hint: "the kernel returned an impossible listener fd: ",
                source: io::Error::from(io::ErrorKind::InvalidData),
            })?;
            // SAFETY: with NEW_LISTENER the kernel returns a fresh fd we now own.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        if ret > 0 {
            // Plain TSYNC returns the id of a thread that could not be synchronized.
            return Err(Error::Load {
                flags: self.flags,
                hint: "another thread of the process cannot be synchronized: ",
                source: io::Error::other(format!("thread {ret}")),
            });
        }
        Ok(None)
    }
}
