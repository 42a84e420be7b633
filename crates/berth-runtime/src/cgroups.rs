//! Glue to berth-cgroups: what needs a cgroup manager and cannot work without one.

use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;

/// Resources are applied (and validated) by berth-cgroups at create time.
pub(crate) fn check_resources(_r: &LinuxResources) -> Result<()> {
    Ok(())
}

/// A verb that needs the container's cgroup, for a container created without one.
pub(crate) fn unavailable(what: &str) -> Error {
    Error::Cgroup(format!(
        "{what}: the container has no cgroup recorded in its state"
    ))
}
