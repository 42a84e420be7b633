//! Running as an unprivileged user: who we are, where state lives, and the setuid
//! helpers that map subordinate id ranges.

use crate::error::{Error, Result};
use oci_spec::runtime::LinuxIdMapping;
use std::path::PathBuf;

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective gid.
pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Whether we run without root on the host (then user namespaces, newuidmap and
/// delegated cgroups are what we have).
pub fn is_rootless() -> bool {
    euid() != 0
}

/// Whether we run inside a user namespace other than the host's (as the runtime of
/// a rootless engine does: podman runs it as root of the user's namespace).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// Whether a missing cgroup is a warning rather than an error: without host root
/// only a delegated cgroup is writable.
pub fn cgroups_optional() -> bool {
    is_rootless() || in_user_namespace()
}

/// The owner recorded in the state as `list` shows it: empty for root (as runc's
/// state), else the user name from /etc/passwd, or the uid.
pub fn owner_name() -> String {
    if !is_rootless() {
        return String::new();
    }
    let uid = euid().to_string();
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
        .unwrap_or(uid)
}

/// The default state root of a runtime named `name`: `/run/NAME` for root,
/// `$XDG_RUNTIME_DIR/NAME` for anyone else (as runc uses `$XDG_RUNTIME_DIR/runc`),
/// also for root of a user namespace whose $USER is not root (a rootless engine such
/// as podman runs us so), and `/tmp/NAME-UID` when XDG_RUNTIME_DIR is not set.
pub fn default_state_root(name: &str) -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
    let engine_userns = in_user_namespace() && std::env::var("USER").map_or(true, |u| u != "root");
    match xdg {
        Some(d) if is_rootless() || engine_userns => PathBuf::from(d).join(name),
        None if is_rootless() => std::env::temp_dir().join(format!("{name}-{}", euid())),
        _ => PathBuf::from("/run").join(name),
    }
}

/// Write the mappings of `pid` through the setuid helper `prog` (newuidmap or
/// newgidmap), which allows the caller's own id and its /etc/subuid (subgid) ranges.
pub fn newidmap(prog: &str, field: &str, pid: i32, maps: &[LinuxIdMapping]) -> Result<()> {
    let mut cmd = std::process::Command::new(prog);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output();
    let fail = |msg: String| Error::Config {
        path: "config.json".into(),
        field: field.into(),
        msg,
    };
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(fail(format!(
            "{prog} refused the mappings (are they in /etc/sub{}id for uid {}?): {}",
            if prog == "newuidmap" { "u" } else { "g" },
            euid(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(fail(format!(
            "a rootless container with more than its own id mapped needs {prog} (Debian package uidmap): {e}"
        ))),
    }
}
