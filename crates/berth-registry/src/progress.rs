//! Progress events, so a CLI can draw one bar per layer or print plain lines.

use std::sync::Arc;

/// One thing that happened during a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The manifest was resolved.
    Resolved {
        /// The reference as asked.
        reference: String,
        /// Digest of the image manifest that will be pulled or pushed.
        digest: String,
        /// Number of layers.
        layers: usize,
    },
    /// A blob transfer starts (`offset` > 0 when resuming a partial download).
    Started {
        /// Blob digest.
        digest: String,
        /// Total size.
        size: u64,
        /// Bytes already there.
        offset: u64,
    },
    /// Bytes moved.
    Progress {
        /// Blob digest.
        digest: String,
        /// Bytes done so far.
        done: u64,
        /// Total size.
        size: u64,
    },
    /// A transfer was interrupted and is tried again.
    Retrying {
        /// Blob digest.
        digest: String,
        /// Attempt number (1 = first retry).
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// Nothing to move: the destination already has the blob.
    Exists {
        /// Blob digest.
        digest: String,
        /// Size.
        size: u64,
    },
    /// The registry mounted the blob from another repository.
    Mounted {
        /// Blob digest.
        digest: String,
        /// Source repository.
        from: String,
    },
    /// A layer is unpacked into its snapshot (pulls with unpacking only).
    Unpacked {
        /// Blob digest of the layer.
        digest: String,
    },
    /// A blob is complete and verified.
    Done {
        /// Blob digest.
        digest: String,
        /// Size.
        size: u64,
    },
}

/// Where events go. Called from several tasks at once; keep it quick.
pub type Sink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops everything.
pub fn discard() -> Sink {
    Arc::new(|_| {})
}
