//! Integration point with berth-cgroups.
//!
//! INTEGRATION POINT: berth-cgroups is being written in parallel. Until it lands, a
//! config asking for cgroup resources is refused (never silently ignored), except the
//! device rules, which every `runc spec` config carries and which are reported as not
//! enforced in the crate docs and the report. `pause`, `resume`, `update`, `events`
//! and cgroup-based `ps`/`kill --all` say so clearly.

use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;

/// Refuse resources we cannot apply yet.
pub(crate) fn check_resources(r: &LinuxResources) -> Result<()> {
    let fields = [
        ("linux.resources.memory", r.memory().is_some()),
        ("linux.resources.cpu", r.cpu().is_some()),
        ("linux.resources.pids", r.pids().is_some()),
        ("linux.resources.blockIO", r.block_io().is_some()),
        (
            "linux.resources.hugepageLimits",
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        ("linux.resources.network", r.network().is_some()),
        (
            "linux.resources.rdma",
            r.rdma().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        (
            "linux.resources.unified",
            r.unified().as_ref().is_some_and(|h| !h.is_empty()),
        ),
    ];
    for (f, set) in fields {
        if set {
            return Err(Error::Unsupported {
                field: f.into(),
                why: "cgroup resources need berth-cgroups, not integrated yet".into(),
            });
        }
    }
    Ok(())
}

/// What needs the cgroup manager and cannot work without it.
pub(crate) fn unavailable(what: &str) -> Error {
    Error::Cgroup(format!("{what}: berth-cgroups is not integrated yet"))
}
