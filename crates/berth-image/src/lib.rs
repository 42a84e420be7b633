//! The berth image store: OCI image layout on disk, layers and snapshots.
//!
//! Stores blobs content-addressed (verified before they become visible), keeps tags as
//! `org.opencontainers.image.ref.name` annotations so skopeo/umoci/podman read the same
//! directory, unpacks layers safely into snapshots keyed by chain ID, builds overlay
//! rootfs for containers, turns image configs into runtime specs and imports/exports
//! archives. It does not talk to registries (that is berth-registry).

pub mod archive;
mod digest;
mod error;
pub mod fixtures;
pub mod gc;
pub mod layer;
pub mod manifest;
pub mod snapshot;
pub mod spec;
mod store;
mod sys;
pub mod unpack;

pub use digest::{Digest, DigestError};
pub use error::{Error, Result};
pub use manifest::{Compression, Image, Platform};
pub use snapshot::{mount_overlay, mount_overlay_legacy, mount_overlay_volatile, unmount_overlay};
pub use spec::{ImageRuntimeConfig, runtime_config, to_runtime_spec};
pub use store::{BlobWriter, REF_NAME_ANNOTATION, Store, desc_digest, ref_name};

/// Re-exported so users name the same descriptor types as the store.
pub use oci_spec;
