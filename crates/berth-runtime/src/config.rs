//! Loading `config.json` and refusing what this runtime cannot honour.

use crate::error::{Error, Result, io};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::Path;

/// Read and parse `config.json`; parse errors name the JSON path of the bad field.
pub fn load(path: &Path) -> Result<Spec> {
    let data = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    parse(path, &data)
}

/// Parse config bytes (the `path` is only used in messages).
pub fn parse(path: &Path, data: &[u8]) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        field: e.path().to_string(),
        msg: e.inner().to_string(),
    })?;
    check(path, &spec)?;
    Ok(spec)
}

fn bad(path: &Path, field: &str, msg: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        field: field.into(),
        msg: msg.into(),
    }
}

fn unsupported(field: &str, why: impl Into<String>) -> Error {
    Error::Unsupported {
        field: field.into(),
        why: why.into(),
    }
}

/// Validate semantics serde cannot, and reject fields we do not implement.
pub fn check(path: &Path, spec: &Spec) -> Result<()> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| bad(path, "root", "missing"))?;
    if root.path().as_os_str().is_empty() {
        return Err(bad(path, "root.path", "empty"));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| bad(path, "process", "missing"))?;
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return Err(bad(path, "process.args", "must hold at least the program")),
    }
    if !process.cwd().is_absolute() {
        return Err(bad(
            path,
            "process.cwd",
            format!("{:?} is not an absolute path", process.cwd()),
        ));
    }
    if process.command_line().is_some() {
        return Err(unsupported("process.commandLine", "windows only"));
    }
    if process
        .apparmor_profile()
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported(
            "process.apparmorProfile",
            "apparmor is not supported",
        ));
    }
    if process
        .selinux_label()
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported(
            "process.selinuxLabel",
            "selinux is not supported",
        ));
    }
    if let Some(a) = process.exec_cpu_affinity() {
        for (f, v) in [
            ("process.execCPUAffinity.initial", a.initial()),
            ("process.execCPUAffinity.final", a.cpu_affinity_final()),
        ] {
            if let Some(v) = v.as_deref() {
                crate::process::parse_id_list(f, v)?;
            }
        }
    }
    if process
        .user()
        .username()
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported("process.user.username", "windows only"));
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(bad(
                path,
                "mounts[].destination",
                format!("{:?} is not absolute", m.destination()),
            ));
        }
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        let idmapped = m.uid_mappings().is_some()
            || m.gid_mappings().is_some()
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "idmap" || o == "ridmap");
        if idmapped && !bind {
            return Err(unsupported(
                "mounts[].uidMappings",
                format!(
                    "id mapping is supported on bind mounts only ({:?})",
                    m.destination()
                ),
            ));
        }
        for o in m.options().iter().flatten() {
            if matches!(o.as_str(), "tmpcopyup") {
                return Err(unsupported(
                    "mounts[].options",
                    format!("option {o:?} on {:?}", m.destination()),
                ));
            }
        }
    }
    let Some(linux) = spec.linux() else {
        return Err(bad(
            path,
            "linux",
            "missing (only linux containers are supported)",
        ));
    };
    if linux.intel_rdt().is_some() {
        return Err(unsupported("linux.intelRdt", "not implemented"));
    }
    if let Some(n) = linux
        .memory_policy()
        .as_ref()
        .and_then(|m| m.nodes().as_deref())
        .filter(|n| !n.trim().is_empty())
    {
        crate::process::parse_id_list("linux.memoryPolicy.nodes", n)?;
    }
    let nss = linux.namespaces().as_deref().unwrap_or_default();
    let has_ns = |t: LinuxNamespaceType, new: bool| {
        nss.iter()
            .any(|n| n.typ() == t && (!new || n.path().is_none()))
    };
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty())
        && !has_ns(LinuxNamespaceType::Network, false)
    {
        return Err(bad(
            path,
            "linux.netDevices",
            "moving a network device needs a network namespace",
        ));
    }
    if let Some(offs) = linux.time_offsets().as_ref().filter(|d| !d.is_empty()) {
        if !has_ns(LinuxNamespaceType::Time, true) {
            return Err(bad(
                path,
                "linux.timeOffsets",
                "time offsets need a new time namespace",
            ));
        }
        for k in offs.keys() {
            if k != "monotonic" && k != "boottime" {
                return Err(bad(
                    path,
                    "linux.timeOffsets",
                    format!("unknown clock {k:?} (monotonic or boottime)"),
                ));
            }
        }
    }
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported("linux.mountLabel", "selinux is not supported"));
    }
    if let Some(p) = linux.personality()
        && p.flags().as_ref().is_some_and(|f| !f.is_empty())
    {
        return Err(unsupported("linux.personality.flags", "not implemented"));
    }
    if let Some(p) = linux.rootfs_propagation()
        && !p.is_empty()
        && crate::rootfs::propagation_flag(p).is_none()
    {
        return Err(bad(
            path,
            "linux.rootfsPropagation",
            format!("unknown value {p:?}"),
        ));
    }
    let nss = linux.namespaces().as_deref().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for ns in nss {
        if !seen.insert(ns.typ()) {
            return Err(bad(
                path,
                "linux.namespaces",
                format!("duplicate namespace {:?}", ns.typ()),
            ));
        }
    }
    if !nss
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
    {
        return Err(unsupported(
            "linux.namespaces",
            "a new mount namespace is required",
        ));
    }
    // A user namespace joined by path keeps its own mappings (any in the config are
    // not written again, as with runc).
    let user_new = nss
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if user_new {
        if nss.iter().any(|n| n.path().is_some()) {
            return Err(unsupported(
                "linux.namespaces",
                "joining a namespace by path together with a new user namespace",
            ));
        }
        if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
            || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty())
        {
            return Err(bad(
                path,
                "linux.uidMappings",
                "a new user namespace needs uidMappings and gidMappings",
            ));
        }
    }
    if linux.seccomp().is_some() && !crate::seccomp_supported() {
        return Err(unsupported(
            "linux.seccomp",
            "berth-seccomp is not integrated yet",
        ));
    }
    if let Some(r) = linux.resources() {
        crate::cgroups::check_resources(r)?;
    }
    for (k, _) in linux.sysctl().iter().flatten() {
        if k.contains('/') || k.contains("..") {
            return Err(bad(path, "linux.sysctl", format!("invalid key {k:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_bad_field() {
        let j = br#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":"notalist","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;
        let e = parse(Path::new("config.json"), j).unwrap_err().to_string();
        assert!(e.contains("process.args"), "{e}");
    }

    #[test]
    fn relative_cwd_is_refused() {
        let j = br#"{"ociVersion":"1.0.2","process":{"cwd":"rel","args":["true"],"user":{"uid":0,"gid":0}},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"mount"}]}}"#;
        let e = parse(Path::new("config.json"), j).unwrap_err().to_string();
        assert!(e.contains("process.cwd"), "{e}");
    }
}
