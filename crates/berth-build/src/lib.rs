//! The berth Dockerfile builder.
//!
//! A pure parser for the Dockerfile language (no I/O) and a build executor that runs
//! each step as a container through berth-runtime on berth-image snapshots. It does not
//! push images (that is berth-registry).
