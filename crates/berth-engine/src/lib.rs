//! Containers as a user sees them: run, names, detached monitors, logs, volumes,
//! restart policies, with metadata in SQLite.
//!
//! Builds on berth-runtime (through the runc-compatible `berth-oci` binary), berth-image
//! and berth-net. It does not pull images (the caller does, with berth-registry) and
//! does not orchestrate sets of containers (that is berth-orchestrator).
//!
//! Each container has a small monitor process (see [`monitor`]) instead of a central
//! daemon; any program can start one by re-executing itself with a hidden verb.

pub mod attach;
pub mod check;
pub mod config;
pub mod container;
pub mod cp;
pub mod dns;
pub mod error;
pub mod logs;
pub mod monitor;
pub mod names;
pub mod network;
pub mod runtime;
pub mod sandbox;
pub mod slirp;
pub mod spec;
pub mod store;
pub mod timefmt;
pub mod trace;
pub mod trash;
pub mod volume;

pub use config::CreateConfig;
pub use container::{Container, Engine, Launcher};
pub use error::{Error, Result};
