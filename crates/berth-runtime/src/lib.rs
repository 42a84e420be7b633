//! The berth container runtime library ("libcontainer").
//!
//! Takes an OCI bundle (rootfs + `config.json`) and runs it as a container:
//! create/start/state/kill/delete/exec with namespaces, mounts, cgroups, seccomp and
//! capabilities, keeping per-container state in a state directory. The path is
//! synchronous: no async runtime and no thread is started before the container process
//! is cloned. It knows nothing about images, registries or networks.
//!
//! Not yet (refused with an error naming the field): joining a user namespace by
//! path, id mapping of mounts other than binds, intelRdt, apparmor and selinux.

mod cgroups;
pub mod config;
pub mod container;
pub mod error;
pub mod hooks;
mod netdev;
pub mod oom;
pub mod process;
pub mod rootfs;
pub mod rootless;
pub mod state;
pub mod sys;
mod tty;

pub use container::{CreateOpts, ExecOpts};
pub use error::{Error, Result};
pub use state::{State, Status};

/// Whether seccomp profiles can be applied by this build.
pub fn seccomp_supported() -> bool {
    true
}

/// The seccomp part of the runtime-spec features document: the actions, flags and
/// architectures this build and the running kernel support.
pub fn seccomp_features() -> serde_json::Value {
    serde_json::to_value(berth_seccomp::features()).unwrap_or_default()
}

/// What the host's cgroup file systems offer (for the features document).
pub mod cgroup_host {
    pub use berth_cgroups::{HostSupport, Layout, host_support};
}
