//! OCI seccomp profiles turned into kernel filters.
//!
//! Compiles a runtime-spec `LinuxSeccomp` into a BPF filter (through libseccomp),
//! carries berth's default profile, and hands out the notify fd for
//! `SCMP_ACT_NOTIFY`. It does not install anything by itself before the runtime asks.
