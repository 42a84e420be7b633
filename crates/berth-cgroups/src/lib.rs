//! Cgroup management for berth containers: v1, v2 and hybrid hosts.
//!
//! Creates and removes a container's cgroup, applies OCI `LinuxResources`, reads
//! stats, freezes/thaws and kills every process in it. It does not decide cgroup paths
//! for engines (the caller passes them) and has no systemd driver yet.
