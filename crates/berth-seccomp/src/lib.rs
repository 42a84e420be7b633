//! OCI seccomp profiles turned into kernel filters.
//!
//! Compiles a runtime-spec `LinuxSeccomp` into a BPF filter (through libseccomp),
//! carries berth's default profile, and hands out the notify fd for
//! `SCMP_ACT_NOTIFY`. It does not install anything by itself before the runtime asks.
//!
//! # How the runtime uses it
//!
//! ```no_run
//! # fn main() -> Result<(), berth_seccomp::Error> {
//! # let spec = berth_seccomp::default_profile();
//! # let state = serde_json::json!({});
//! # let cache_dir = std::path::Path::new("/run/berth/seccomp-cache");
//! // In the parent, before fork (allocates, talks to libseccomp; the cache turns the
//! // milliseconds libseccomp needs for a multi-arch profile into a file read):
//! let filter = berth_seccomp::Filter::compile_cached(&spec, cache_dir)?;
//! // In the container init, after no_new_privs (when the spec asks for it) and right
//! // before execve: one seccomp(2) call, no allocation.
//! if let Some(listener) = filter.load()? {
//!     use std::os::fd::AsFd;
//!     // Best done by the parent, which the filter does not confine: the init passes
//!     // `listener` up its existing sync socket (sendmsg must then be allowed) or the
//!     // parent takes it with pidfd_getfd. Sending from the init works only when the
//!     // profile allows socket/connect/sendmsg.
//!     let path = spec.listener_path().as_ref().expect("checked by compile");
//!     let pid = std::process::id() as i32;
//!     let meta = spec.listener_metadata().as_deref();
//!     let state_json = berth_seccomp::process_state_json(&state, pid, meta);
//!     berth_seccomp::send_listener_fd(path, listener.as_fd(), &state_json)?;
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Filter::compile`]`(&LinuxSeccomp) -> Result<Filter, Error>`: every action
//!   (`SCMP_ACT_KILL`, `KILL_THREAD`, `KILL_PROCESS`, `TRAP`, `ERRNO` with `errnoRet`
//!   defaulting to EPERM, `TRACE` likewise, `ALLOW`, `LOG`, `NOTIFY`),
//!   `defaultErrnoRet`, `architectures`, argument filters with every operator and
//!   `valueTwo`, and the flags `TSYNC`, `LOG`, `SPEC_ALLOW`, `WAIT_KILLABLE_RECV` (passed
//!   to the kernel directly, so they work whatever libseccomp's version; the last is
//!   dropped when no rule uses `NOTIFY`, since the kernel only accepts it with a
//!   listener). Syscall names libseccomp does not know are skipped with a `tracing`
//!   warning, as runc does; [`Filter::unknown_syscalls`] lists them. Values the spec
//!   forbids give [`Error::InvalidProfile`] naming the field and value.
//! - [`Filter::load`]`(&self) -> Result<Option<OwnedFd>, Error>`: installs the filter on
//!   the calling thread; the fd is the notify listener when the profile uses `NOTIFY`.
//!   The caller must have no_new_privs set or hold CAP_SYS_ADMIN.
//! - [`Filter::compile_cached`]`(&LinuxSeccomp, cache_dir)`: the same, reusing the
//!   program compiled earlier for an identical profile (libseccomp takes milliseconds
//!   on the multi-arch default profile; a cache hit is a file read).
//! - [`send_listener_fd`]`(listener_path, fd, state_json)`: connects to `listenerPath` and
//!   sends the fd (SCM_RIGHTS) with the container process state JSON, which the caller
//!   builds (including `listenerMetadata` as `metadata`; [`process_state_json`] makes
//!   it from the container state). [`recv_listener_fd`] is the agent side.
//! - [`features`]`() -> oci_spec::runtime::Seccomp`: the seccomp part of the features
//!   document, actions and flags probed from the running kernel.
//! - [`default_profile`]`() -> LinuxSeccomp` and [`default_profile_for`]`(caps)`:
//!   berth's own allow-list (default action ERRNO(EPERM)), written from the kernel's
//!   syscall tables; names the host's libseccomp cannot compile are left out.
//! - [`profile_from_json`]: parses a `linux.seccomp` object, naming the field of an
//!   unknown action, operator, architecture or flag.
//!
//! Backends: [`Backend`] compiles a checked [`Profile`] into BPF; [`Libseccomp`] is the
//! one shipped; it compiles each architecture in its own context and joins the programs
//! behind an architecture dispatch (libseccomp's multi-architecture generation is
//! superlinear). Loading never goes through the backend, so another one (pure Rust)
//! can be added without touching the runtime.
//!
//! When the default action blocks, native syscalls numbered above the newest one
//! libseccomp knows get ENOSYS instead (as runc does), so a newer libc in the container
//! falls back instead of failing.
//!
//! Not done here: setting no_new_privs, running a seccomp agent, ENOSYS for new
//! syscalls of the compat architectures (x86, x32, arm: they get the default action).

mod backend;
mod cache;
mod default_profile;
mod error;
mod features;
mod filter;
mod notify;
mod profile;

pub use backend::{Backend, Compiled, Insn, Libseccomp, scmp_arch};
pub use default_profile::{
    DEFAULT_CAPABILITIES, SAFE_PERSONALITIES, default_profile, default_profile_for,
};
pub use error::Error;
pub use features::features;
pub use filter::Filter;
pub use notify::{process_state_json, recv_listener_fd, send_listener_fd};
pub use profile::{Action, ArgCond, CmpOp, Flags, Profile, Rule, check_enums, profile_from_json};

#[cfg(test)]
mod tests;
