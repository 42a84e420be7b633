//! OCI distribution client for berth: resolve, pull, push, auth.
//!
//! Streams blobs straight into the berth-image content store while hashing, pulls
//! layers in parallel, resumes, retries, and reads docker credentials. A pull can
//! have each layer unpacked (by berth-image) as soon as its blob is stored. It does
//! not run containers.
//!
//! Media type names come from oci-client; the reference grammar is checked by hand
//! (oci-spec's regex costs more memory than a whole pull) and the HTTP side is our own
//! over reqwest (see [`client`] for why).

pub mod auth;
pub mod client;
pub mod error;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;

pub use auth::{Credentials, DockerConfig};
pub use client::{Client, ClientConfig, install_crypto_provider};
pub use error::{Error, Result};
pub use manifest::Platform;
pub use progress::{Event, Sink};
pub use pull::{PullOptions, Pulled};
pub use push::{PushOptions, Pushed};
pub use reference::ImageRef;
