//! The berth container runtime library ("libcontainer").
//!
//! Takes an OCI bundle (rootfs + `config.json`) and runs it as a container:
//! create/start/state/kill/delete/exec with namespaces, mounts, cgroups, seccomp and
//! capabilities, keeping per-container state in a state directory. The path is
//! synchronous: no async runtime and no thread is started before the container process
//! is cloned. It knows nothing about images, registries or networks.
