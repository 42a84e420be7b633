//! Errors of the seccomp crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong between a `linux.seccomp` profile and a loaded filter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the profile has a value the runtime spec or the kernel does not allow.
    #[error("invalid seccomp profile: {field} = {value}: {reason}")]
    InvalidProfile {
        /// JSON path of the field, e.g. `linux.seccomp.syscalls[2].args[0].index`.
        field: String,
        /// The offending value, as written in the profile.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The profile JSON could not be parsed at all.
    #[error("invalid seccomp profile json: {0}")]
    Json(#[source] serde_json::Error),
    /// libseccomp refused an operation while building the filter.
    #[error("libseccomp: {what}: {source}")]
    Libseccomp {
        /// What was being done, with the syscall name or architecture involved.
        what: String,
        /// libseccomp's own error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Reading the compiled BPF program back from libseccomp failed.
    #[error("exporting seccomp bpf program: {0}")]
    Export(#[source] io::Error),
    /// The compiled program does not fit in a kernel filter.
    #[error("seccomp program has {len} instructions, the kernel accepts at most {max}")]
    ProgramTooLong {
        /// Instructions in the program.
        len: usize,
        /// Kernel limit (BPF_MAXINSNS).
        max: usize,
    },
    /// seccomp(SECCOMP_SET_MODE_FILTER) failed.
    #[error("loading seccomp filter (flags {flags:#x}): {hint}{source}")]
    Load {
        /// Kernel filter flags that were passed.
        flags: u32,
        /// A hint for the usual causes, or empty.
        hint: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// Sending the notify fd to the seccomp agent failed.
    #[error("sending seccomp listener fd to {path}: {source}")]
    Listener {
        /// The agent's socket (`linux.seccomp.listenerPath`).
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the compiled-program cache failed.
    #[error("seccomp program cache {path}: {source}")]
    Cache {
        /// Cache entry or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Receiving a notify fd on the agent side failed.
    #[error("receiving seccomp listener fd: {0}")]
    Receive(#[source] io::Error),
}

impl Error {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidProfile {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
