//! Driving the OCI runtime through its runc-compatible command line (`berth-oci` by
//! default, runc works too): the binary stays the one place that touches namespaces,
//! which keeps its CVE-2019-5736 protection and lets users swap it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Name of the default runtime binary.
pub const DEFAULT_RUNTIME: &str = "berth-oci";

/// A runc-compatible runtime with its state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The binary.
    pub bin: PathBuf,
    /// `--root` for every call.
    pub root: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Finds the runtime binary: `explicit` (a path or a name on PATH), else
/// `BERTH_RUNTIME`, else `berth-oci` next to the current executable, else on PATH.
pub fn find(explicit: Option<&str>) -> Result<PathBuf> {
    let want = explicit.map(str::to_string).or_else(|| {
        std::env::var("BERTH_RUNTIME")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if let Some(w) = want {
        let p = PathBuf::from(&w);
        if w.contains('/') {
            return if p.is_file() {
                Ok(p)
            } else {
                Err(Error::invalid("runtime", format!("{w}: no such file")))
            };
        }
        if let Some(exe) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(&w)))
            && exe.is_file()
        {
            return Ok(exe);
        }
        return on_path(&w)
            .ok_or_else(|| Error::invalid("runtime", format!("{w}: not found on PATH")));
    }
    if let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(DEFAULT_RUNTIME)))
        && exe.is_file()
    {
        return Ok(exe);
    }
    on_path(DEFAULT_RUNTIME).ok_or_else(|| {
        Error::invalid(
            "runtime",
            format!("{DEFAULT_RUNTIME} not found next to berth or on PATH"),
        )
    })
}

/// Maps a runtime error message to docker's exit code: 127 when the command does not
/// exist, 126 when it cannot be run, 125 otherwise (the wording is runc's, which
/// berth-oci keeps).
pub fn exit_code_for(msg: &str) -> u8 {
    let m = msg.to_ascii_lowercase();
    if m.contains("executable file not found")
        || (m.contains("exec:") || m.contains("stat ")) && m.contains("no such file or directory")
    {
        127
    } else if m.contains("permission denied")
        || m.contains("is a directory")
        || m.contains("exec format error")
    {
        126
    } else {
        125
    }
}

impl Runtime {
    /// The runtime `bin` with state under `root`.
    pub fn new(bin: PathBuf, root: PathBuf) -> Runtime {
        Runtime { bin, root }
    }

    /// A command with the global flags; `log` receives JSON error lines.
    pub fn command(&self, log: Option<&Path>) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        if let Some(l) = log {
            c.arg("--log").arg(l).arg("--log-format").arg("json");
        }
        c
    }

    /// Runs a command whose stdio the caller does not need; errors carry the runtime's
    /// message (last JSON log line, else stderr).
    pub fn run<I, S>(&self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(None);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = c.output().map_err(Error::io("run runtime", &self.bin))?;
        if out.status.success() {
            return Ok(());
        }
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let msg = msg.strip_prefix("berth-oci: ").unwrap_or(&msg).to_string();
        Err(Error::Runtime {
            code: exit_code_for(&msg),
            msg: if msg.is_empty() {
                format!("{} failed: {}", self.bin.display(), out.status)
            } else {
                msg
            },
        })
    }

    /// The message of the last line of a `--log` file.
    pub fn last_log_message(log: &Path) -> Option<String> {
        let text = std::fs::read_to_string(log).ok()?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v["msg"].as_str().map(str::to_string),
            Err(_) => Some(line.to_string()),
        }
    }

    /// `kill ID SIG` (`all` sends to every process).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args: Vec<&str> = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.run(args)
    }

    /// `delete --force ID`: a container that is already gone is fine.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.run(["delete", "--force", id])
    }

    /// Starts `delete --force ID` without waiting, so the caller can do other
    /// teardown meanwhile; wait for the child before reusing the id.
    pub fn spawn_delete(&self, id: &str) -> Result<std::process::Child> {
        let mut c = self.command(None);
        c.args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().map_err(Error::io("run runtime", &self.bin))
    }

    /// Whether the runtime still knows the container.
    pub fn exists(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_like_docker() {
        assert_eq!(
            exit_code_for(
                "exec: \"nope\": executable file not found in $PATH: no such file or directory"
            ),
            127
        );
        assert_eq!(
            exit_code_for("exec: \"/bin/x\": stat /bin/x: no such file or directory"),
            127
        );
        assert_eq!(exit_code_for("exec: \"/etc\": permission denied"), 126);
        assert_eq!(exit_code_for("cgroup: something"), 125);
    }
}
