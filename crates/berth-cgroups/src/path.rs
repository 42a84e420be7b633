//! OCI `linux.cgroupsPath` -> where the container's cgroup goes in each hierarchy.

use crate::Error;

/// The parent used when a config gives no `cgroupsPath`.
pub const DEFAULT_PARENT: &str = "berth";

/// A cleaned cgroups path: no empty, `.` or `..` components, never the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupPath {
    /// Below each hierarchy's root (the OCI absolute form).
    Absolute(String),
    /// Below the runtime's own cgroup in each hierarchy (the OCI relative form).
    Relative(String),
}

impl CgroupPath {
    /// The path without a leading slash, to join under a directory.
    pub fn rel(&self) -> &str {
        match self {
            CgroupPath::Absolute(p) | CgroupPath::Relative(p) => p,
        }
    }
}

/// Lexically clean `p` (`..` never climbs above the start, as runc's CleanPath does) and
/// return it without leading or trailing slashes.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Resolve the OCI `cgroupsPath` for container `id`.
pub(crate) fn parse(cgroups_path: Option<&str>, id: &str) -> Result<CgroupPath, Error> {
    let raw = match cgroups_path {
        Some(p) if !p.is_empty() => p,
        _ => {
            if id.is_empty() || id.contains('/') || id == "." || id == ".." {
                return Err(Error::Path {
                    path: id.to_string(),
                    reason: "container id cannot name a cgroup".into(),
                });
            }
            return Ok(CgroupPath::Absolute(format!("{DEFAULT_PARENT}/{id}")));
        }
    };
    if !raw.starts_with('/') && !raw.contains('/') && raw.matches(':').count() == 2 {
        return Err(Error::Path {
            path: raw.to_string(),
            reason: "the systemd \"slice:prefix:name\" form needs the systemd cgroup driver, \
                     which berth does not have (no systemd on this host); use a path such as \
                     /berth/<id>"
                .into(),
        });
    }
    if raw.contains('\0') || raw.contains('\n') {
        return Err(Error::Path {
            path: raw.escape_debug().to_string(),
            reason: "contains a NUL or newline".into(),
        });
    }
    let cleaned = clean(raw);
    if cleaned.is_empty() {
        return Err(Error::Path {
            path: raw.to_string(),
            reason: "resolves to the root cgroup, which a container must not own".into(),
        });
    }
    Ok(if raw.starts_with('/') {
        CgroupPath::Absolute(cleaned)
    } else {
        CgroupPath::Relative(cleaned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path() {
        assert_eq!(
            parse(None, "c1").unwrap(),
            CgroupPath::Absolute("berth/c1".into())
        );
        assert_eq!(
            parse(Some(""), "c1").unwrap(),
            CgroupPath::Absolute("berth/c1".into())
        );
        assert!(parse(None, "a/b").is_err());
        assert!(parse(None, "..").is_err());
    }

    #[test]
    fn absolute_and_relative() {
        assert_eq!(
            parse(Some("/machine/c1"), "x").unwrap(),
            CgroupPath::Absolute("machine/c1".into())
        );
        assert_eq!(
            parse(Some("kube/pod1/c1/"), "x").unwrap(),
            CgroupPath::Relative("kube/pod1/c1".into())
        );
    }

    #[test]
    fn dotdot_cannot_escape() {
        assert_eq!(
            parse(Some("/../../etc/x"), "x").unwrap(),
            CgroupPath::Absolute("etc/x".into())
        );
        assert_eq!(
            parse(Some("a/../../b"), "x").unwrap(),
            CgroupPath::Relative("b".into())
        );
        let e = parse(Some("/a/.."), "x").unwrap_err().to_string();
        assert!(e.contains("root cgroup"), "{e}");
    }

    #[test]
    fn systemd_form_is_a_clear_error() {
        let e = parse(Some("system.slice:berth:c1"), "c1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd"), "{e}");
        assert!(e.contains("system.slice:berth:c1"), "{e}");
    }
}
