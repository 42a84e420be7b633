//! Running one RUN step in a container through the runc-compatible `berth-oci`.
//!
//! The bundle's rootfs is already mounted by the caller; this writes `config.json`,
//! runs `berth-oci run` attached, streams its output with BuildKit's `#N time line`
//! prefix, and on interruption kills and deletes the container.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use crate::executor::BuildError;

/// Set by the SIGINT/SIGTERM handler; checked between and during steps.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set [`INTERRUPTED`] instead of killing the process, so a
/// build can remove its containers, mounts and temporary directories before exiting.
/// Blocking reads are interrupted (no `SA_RESTART`).
pub fn install_interrupt_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// The runtime binary: `$BERTH_RUNTIME`, else `berth-oci` next to the current
/// executable, else from `PATH`.
pub fn default_runtime() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("berth-oci");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("berth-oci")
}

/// Docker's default capability set for build containers.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// What one RUN container runs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// argv.
    pub args: Vec<String>,
    /// `K=V` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User and groups.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// `--network=host`.
    pub host_network: bool,
    /// `--security=insecure`.
    pub privileged: bool,
    /// Extra OCI mounts (secrets, caches, binds, tmpfs).
    pub mounts: Vec<Value>,
}

fn config_json(spec: &RunSpec, rootfs: &Path) -> Value {
    let mut ns = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !spec.host_network {
        ns.push(json!({"type": "network"}));
    }
    let caps: Vec<&str> = if spec.privileged {
        caps_all()
    } else {
        CAPS.to_vec()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    mounts.extend(spec.mounts.iter().cloned());
    let mut linux = json!({
        "namespaces": ns,
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
            "/proc/sysrq-trigger"],
    });
    if spec.privileged {
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids},
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": !spec.privileged,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "berth-build",
        "mounts": mounts,
        "linux": linux,
    })
}

fn caps_all() -> Vec<&'static str> {
    let mut v = CAPS.to_vec();
    v.extend([
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_DAC_READ_SEARCH",
        "CAP_LINUX_IMMUTABLE",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_NICE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_LEASE",
        "CAP_AUDIT_CONTROL",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
        "CAP_NET_BROADCAST",
        "CAP_SYS_BOOT",
        "CAP_SYS_PACCT",
        "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE",
    ]);
    v
}

/// Where the runtime keeps state and which binary it is.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The runc-compatible binary.
    pub binary: PathBuf,
    /// Its `--root`.
    pub state_root: PathBuf,
}

impl Runtime {
    /// `delete --force`: kills and removes a container, quietly.
    pub fn delete_force(&self, id: &str) {
        let _ = self
            .cmd()
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.state_root);
        c
    }

    /// Runs `spec` in `bundle` (whose `rootfs` is mounted); streams output to `out`
    /// prefixed with `#step elapsed`; returns the exit code.
    pub fn run(
        &self,
        bundle: &Path,
        id: &str,
        spec: &RunSpec,
        out: &mut dyn Write,
        step: usize,
        started: Instant,
    ) -> Result<i32, BuildError> {
        let cfg = config_json(spec, &bundle.join("rootfs"));
        let cfg_path = bundle.join("config.json");
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap_or_default()).map_err(
            |source| BuildError::Io {
                op: "write",
                path: cfg_path.clone(),
                source,
            },
        )?;
        std::fs::create_dir_all(&self.state_root).map_err(|source| BuildError::Io {
            op: "create directory",
            path: self.state_root.clone(),
            source,
        })?;
        let (r, w) = nix::unistd::pipe().map_err(|e| BuildError::Io {
            op: "create pipe for",
            path: bundle.to_path_buf(),
            source: e.into(),
        })?;
        let w2: OwnedFd = w.try_clone().map_err(|source| BuildError::Io {
            op: "dup pipe for",
            path: bundle.to_path_buf(),
            source,
        })?;
        let mut child = self
            .cmd()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2))
            .spawn()
            .map_err(|source| BuildError::Io {
                op: "start runtime",
                path: self.binary.clone(),
                source,
            })?;
        let mut reader = std::fs::File::from(r);
        let mut buf = [0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        let mut killed = false;
        let mut kill_error = String::new();
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) && !killed {
                // the container may not exist yet: try again on the next wake-up
                match self.cmd().args(["kill", "--all", id, "KILL"]).output() {
                    Ok(o) if o.status.success() => killed = true,
                    Ok(o) => kill_error = String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => kill_error = e.to_string(),
                }
            }
            // wake up every 100 ms so an interruption is seen even when the signal
            // went to another thread or arrived between checks
            {
                use std::os::fd::AsFd;
                let mut fds = [nix::poll::PollFd::new(
                    reader.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, 100u16) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        return Err(BuildError::Io {
                            op: "poll output of",
                            path: bundle.to_path_buf(),
                            source: e.into(),
                        });
                    }
                }
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            emit(out, step, started, &line);
                            line.clear();
                        } else {
                            line.push(b);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BuildError::Io {
                        op: "read output of",
                        path: bundle.to_path_buf(),
                        source: e,
                    });
                }
            }
        }
        if !line.is_empty() {
            emit(out, step, started, &line);
        }
        let status = loop {
            match child.wait() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BuildError::Io {
                        op: "wait for runtime",
                        path: self.binary.clone(),
                        source: e,
                    });
                }
            }
        };
        if !killed && !kill_error.is_empty() {
            tracing::warn!(container = id, error = %kill_error, "could not kill the step container");
        }
        if killed || INTERRUPTED.load(Ordering::SeqCst) {
            let _ = self
                .cmd()
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            return Err(BuildError::Interrupted);
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

fn emit(out: &mut dyn Write, step: usize, started: Instant, line: &[u8]) {
    let _ = writeln!(
        out,
        "#{step} {:.3} {}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(line)
    );
}
