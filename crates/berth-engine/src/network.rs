//! Networks as the engine sees them (owned by the networking work; see berth-net).
//!
//! Placeholder seam: the tables and the setup/teardown calls the container lifecycle
//! makes. Filled in by the networking change.

/// Tables of networks and endpoints.
pub const SCHEMA: &str = "";
