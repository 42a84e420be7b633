//! Containers as a user sees them: run, names, detached monitors, logs, volumes,
//! restart policies, with metadata in SQLite.
//!
//! Builds on berth-runtime, berth-image and berth-net. It does not orchestrate sets of
//! containers (that is berth-orchestrator).
