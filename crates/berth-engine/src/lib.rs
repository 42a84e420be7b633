//! Containers as a user sees them: run, names, detached monitors, logs, volumes,
//! restart policies, with metadata in SQLite.
//!
//! Builds on berth-runtime (through the runc-compatible `berth-oci` binary), berth-image
//! and berth-net. It does not pull images (the caller does, with berth-registry) and
//! does not orchestrate sets of containers (that is berth-orchestrator).

pub mod network;
pub mod store;
