//! The engine's error type.

use std::path::PathBuf;

/// Errors of the container engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metadata database could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A metadata query failed.
    #[error("container metadata: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// Networking failed.
    #[error(transparent)]
    Network(#[from] crate::network::Error),
    /// A file operation failed.
    #[error("{op} {path}: {err}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why (in the message, not a separate source, so it is printed once).
        err: std::io::Error,
    },
    /// No container with that id, id prefix or name.
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// No volume with that name.
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    /// The name is taken.
    #[error("the container name {name:?} is already in use by container {id}")]
    NameInUse {
        /// The name.
        name: String,
        /// Who has it.
        id: String,
    },
    /// A flag value is invalid.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which flag or field.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The operation does not fit the container's state.
    #[error("container {id}: {detail}")]
    Conflict {
        /// Container id.
        id: String,
        /// What is wrong.
        detail: String,
    },
    /// The runtime (berth-oci or runc) failed; `code` is the docker-style exit code
    /// (126 cannot invoke, 127 not found, 125 otherwise).
    #[error("{msg}")]
    Runtime {
        /// Its message.
        msg: String,
        /// Exit code to report.
        code: u8,
    },
    /// The monitor could not be started or talked to.
    #[error("monitor of container {id}: {detail}")]
    Monitor {
        /// Container id.
        id: String,
        /// What failed.
        detail: String,
    },
}

impl Error {
    /// Wraps an io error with what was done and on what.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |err| Error::Io { op, path, err }
    }

    /// An invalid flag value.
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// The exit code docker would give for this error (125 unless the runtime said the
    /// command cannot be run or was not found).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Runtime { code, .. } => *code,
            _ => 125,
        }
    }
}

/// Result of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
