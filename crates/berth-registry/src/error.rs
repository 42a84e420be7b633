//! Errors of the registry client.

use std::path::PathBuf;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The request could not be sent or its body not read.
    #[error("{method} {url}: {source}")]
    Http {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: registry answered {status}{}", fmt_message(.message))]
    Status {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    /// Credentials are missing or were refused.
    #[error("{registry}: unauthorized{}; run `berth login {registry}`", fmt_message(.message))]
    Unauthorized { registry: String, message: String },
    /// The token server refused or answered nonsense.
    #[error("token request to {realm}: {reason}")]
    Token { realm: String, reason: String },
    /// The manifest or tag does not exist.
    #[error("{reference}: manifest unknown to the registry")]
    ManifestUnknown { reference: String },
    /// A manifest that cannot be used.
    #[error("manifest of {reference}: {reason}")]
    Manifest { reference: String, reason: String },
    /// An index without the requested platform.
    #[error("{reference}: no manifest for platform {platform} (available: {available})")]
    Platform {
        reference: String,
        platform: String,
        available: String,
    },
    /// A blob download or upload failed for good.
    #[error("blob {digest}: {reason}")]
    Blob { digest: String, reason: String },
    /// No bytes arrived for too long.
    #[error("{what}: no progress for {secs} s")]
    Stalled { what: String, secs: u64 },
    /// A downloaded layer could not be unpacked into its snapshot.
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        digest: String,
        #[source]
        source: berth_image::Error,
    },
    /// The content store failed.
    #[error("image store: {0}")]
    Store(#[from] berth_image::Error),
    /// The docker config file is unreadable or malformed.
    #[error("docker config {}: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },
    /// A `docker-credential-*` helper failed.
    #[error("credential helper docker-credential-{helper}: {reason}")]
    CredentialHelper { helper: String, reason: String },
    /// A local I/O error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn fmt_message(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
