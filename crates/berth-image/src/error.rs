//! The crate's error type.

use std::path::PathBuf;

use crate::Digest;
use crate::DigestError;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A digest string did not parse.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Content did not hash to what was expected.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Announced digest.
        expected: Digest,
        /// Digest of what was received.
        actual: Digest,
    },
    /// Content length differs from what was expected.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Announced digest.
        digest: Digest,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// A blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobNotFound(Digest),
    /// No image by that name or id.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// A name matches more than one image.
    #[error("image id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    /// A JSON document could not be parsed or written.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A manifest or config is not usable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which document.
        what: String,
        /// Why.
        reason: String,
    },
    /// No manifest for the wanted platform.
    #[error("no manifest for platform {platform} in {digest}")]
    NoPlatform {
        /// Wanted platform.
        platform: String,
        /// The index searched.
        digest: Digest,
    },
    /// A layer entry would write outside the target or is otherwise refused.
    #[error("layer entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// Path of the entry in the archive.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A layer entry could not be applied.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Entry {
        /// Path of the entry in the archive.
        entry: String,
        /// What was attempted.
        op: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A mount or unmount failed.
    #[error("{op} {path}: {source}")]
    Mount {
        /// What was attempted.
        op: &'static str,
        /// Mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A user or group named by the image does not exist in it.
    #[error("user {0:?} not found in the image's /etc/passwd or /etc/group")]
    UnknownUser(String),
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Error {
        let what = what.into();
        move |source| Error::Json { what, source }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
