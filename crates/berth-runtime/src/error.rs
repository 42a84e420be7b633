//! Errors of the runtime library.

use std::path::PathBuf;

/// Everything that can go wrong while creating or managing a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` could not be read or parsed; `field` is the JSON path of the culprit.
    #[error("invalid {path}: {field}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// JSON path of the offending field (e.g. `process.args`).
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A config field this runtime does not implement (never silently ignored).
    #[error("config field {field} is not supported by berth-oci: {why}")]
    Unsupported {
        /// JSON path of the field.
        field: String,
        /// Why, or what value.
        why: String,
    },
    /// The container id is malformed.
    #[error(
        "invalid container id {0:?}: only [A-Za-z0-9_+.-] allowed, 1..1024 chars, no leading '.'"
    )]
    InvalidId(String),
    /// A container with this id exists already.
    #[error("container with id exists: {0}")]
    Exists(String),
    /// No container with this id.
    #[error("container does not exist: {0}")]
    NotFound(String),
    /// The verb is not valid in the container's current status.
    #[error("container {id} is {status}: {msg}")]
    BadState {
        /// Container id.
        id: String,
        /// Current status.
        status: String,
        /// What was attempted.
        msg: String,
    },
    /// A system call failed.
    #[error("{what}: {}", errno_text(err))]
    Sys {
        /// What we were doing (with the path or value involved).
        what: String,
        /// The OS error (shown in the message, so not chained as a source).
        err: std::io::Error,
    },
    /// The container init reported a failure during setup or exec.
    #[error("{0}")]
    Init(String),
    /// A hook failed or timed out.
    #[error("{0}")]
    Hook(String),
    /// The cgroup layer failed.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// The seccomp layer failed.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wrap the last OS error with a description.
pub(crate) fn sys(what: impl Into<String>) -> Error {
    Error::Sys {
        what: what.into(),
        err: std::io::Error::last_os_error(),
    }
}

/// Attach a description to an io::Error.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    move |err| Error::Sys {
        what: what.into(),
        err,
    }
}

/// Go-style lowercase errno text, as runc prints it ("no such file or directory");
/// engines match on these words.
pub fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let s = std::io::Error::from_raw_os_error(n).to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
        None => e.to_string(),
    }
}
