//! Container state as the runtime spec defines it, persisted in `<root>/<id>/state.json`.

use crate::error::{Error, Result, io};
use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Lifecycle status (runtime spec `status`, plus runc's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The container is being created.
    Creating,
    /// Created, the init waits for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The state document: the spec's fields first, then what berth needs to manage the
/// container later (kept in the same file so one atomic rename updates everything).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Runtime spec version of the state.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Lifecycle status as last recorded (see [`State::refresh`]).
    pub status: Status,
    /// Host pid of the container init (0 once stopped and never started).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Annotations from config.json.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Absolute rootfs path (runc reports it too).
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Owner (runc prints it; empty for root).
    #[serde(default)]
    pub owner: String,
    /// Start time of the init in clock ticks, to detect pid reuse.
    #[serde(default)]
    pub init_start_time: u64,
    /// Hooks still to run at start (poststart) and delete (poststop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// The cgroups path from config.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// Whether the container has its own pid namespace (kill-all and ps rely on it
    /// when no cgroup manager is available).
    #[serde(default)]
    pub own_pid_ns: bool,
    /// The process config of the init, reused as defaults by `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<oci_spec::runtime::Process>,
    /// The seccomp profile, applied to `exec` processes too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// The resolved cgroup directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<berth_cgroups::CgroupState>,
}

impl State {
    /// The spec-only view (what `state` prints): ociVersion, id, status, pid, bundle,
    /// annotations, plus runc's rootfs/created/owner.
    pub fn to_spec_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&self.annotations).unwrap_or_default();
        }
        v
    }

    /// Bring `status` up to date with the kernel: a dead (or recycled) init means stopped.
    pub fn refresh(&mut self) {
        if self.status == Status::Stopped {
            return;
        }
        let alive = self.pid > 0
            && crate::sys::proc_start_time(self.pid).is_some_and(|t| t == self.init_start_time);
        if !alive {
            self.status = Status::Stopped;
        }
        // A paused container whose freezer was thawed from outside is running again.
        if self.status == Status::Paused
            && let Some(cg) = crate::container::cgroup(self)
            && cg.is_frozen().ok() == Some(false)
        {
            self.status = Status::Running;
        }
    }

    /// State file path of container `id` under `root`.
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    /// Load and refresh the state of `id`.
    pub fn load(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let p = Self::dir(root, id).join("state.json");
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(io(format!("read {}", p.display()))(e)),
        };
        let mut s: State = serde_json::from_slice(&data).map_err(|e| Error::Config {
            path: p.clone(),
            field: "state".into(),
            msg: e.to_string(),
        })?;
        s.refresh();
        Ok(s)
    }

    /// Atomically write the state file (temp file + rename).
    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = Self::dir(root, &self.id);
        let tmp = dir.join(".state.json.tmp");
        let data = serde_json::to_vec(self).map_err(|e| Error::Init(e.to_string()))?;
        std::fs::write(&tmp, data).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join("state.json"))
            .map_err(io(format!("rename {}", tmp.display())))
    }
}

/// Check a container id: runc's rules (letters, digits, `_+.-`, no path tricks).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// Current time in RFC 3339 with nanoseconds, UTC (no date crate needed for this).
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (Howard Hinnant's algorithm, public domain arithmetic).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", "../x", ".x", "a/b", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
