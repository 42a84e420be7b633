//! Consistency check of the engine's metadata against the host (`berth system check`):
//! container rows against their monitors, processes, overlay mounts, runtime state and
//! network endpoints, network sandboxes (pods) against their namespaces, and files or
//! mounts that belong to no container or sandbox.
//!
//! Findings are of two kinds. An *interrupted* operation (a create or remove whose
//! process died, say by kill -9) leaves a row that the next `rm -f` finishes; it is
//! reported but is not corruption. Everything else is a *problem*: a state the engine
//! would not reach by itself and that a user would trip over (a container shown as
//! running with nothing behind it, an address held by a container that is gone, a
//! mount or runtime state nobody owns). `repair` fixes both kinds.
//!
//! The check assumes no other berth command changes the same root meanwhile: a
//! container half-way through `run` looks like an interrupted create.

use berth_cgroups::unescape_mountinfo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::container::{Engine, monitor_alive, state};
use crate::error::Result;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The row says the container runs, but neither its monitor nor its process exists.
    ActiveWithoutProcess {
        /// Container id.
        id: String,
        /// The state recorded.
        state: String,
    },
    /// The container's process runs but its monitor is gone: nobody records its exit.
    Unsupervised {
        /// Container id.
        id: String,
        /// The container's init.
        pid: i64,
    },
    /// A stopped container still has its root filesystem mounted.
    StoppedButMounted {
        /// Container id.
        id: String,
    },
    /// A stopped (or vanished) container still holds a network endpoint (an address).
    StaleEndpoint {
        /// Container id of the endpoint row.
        id: String,
        /// The address held.
        ip: String,
    },
    /// Two endpoints share one address on one network.
    DuplicateAddress {
        /// The network.
        network: String,
        /// The address.
        ip: String,
    },
    /// Runtime state (berth-oci's) of a container that is not running or not known.
    StaleRuntimeState {
        /// Container id.
        id: String,
    },
    /// A directory or mount under the roots that belongs to no container row.
    Orphan {
        /// What it is.
        path: PathBuf,
    },
    /// A container refers to a volume that does not exist.
    MissingVolume {
        /// Container id.
        id: String,
        /// Volume name.
        volume: String,
    },
    /// A create whose process died before it finished (no spec written).
    InterruptedCreate {
        /// Container id.
        id: String,
    },
    /// A remove whose process died before it finished.
    InterruptedRemove {
        /// Container id.
        id: String,
    },
    /// A network sandbox (a pod's namespace) whose creator died before its network
    /// was recorded: a row without its namespace, address or ports.
    InterruptedSandboxCreate {
        /// Sandbox name.
        name: String,
        /// Sandbox id.
        id: String,
    },
    /// A network sandbox whose recorded namespace pin is gone (its remover died
    /// between tearing the network down and forgetting the row): containers cannot
    /// join it.
    SandboxWithoutNetns {
        /// Sandbox name.
        name: String,
        /// The pin the row names.
        netns: PathBuf,
    },
}

impl Finding {
    /// Whether this is the trace of an interrupted operation rather than corruption.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            Finding::InterruptedCreate { .. }
                | Finding::InterruptedRemove { .. }
                | Finding::InterruptedSandboxCreate { .. }
                | Finding::SandboxWithoutNetns { .. }
        )
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::ActiveWithoutProcess { id, state } => write!(
                f,
                "container {id} is {state} but neither its monitor nor its process exists"
            ),
            Finding::Unsupervised { id, pid } => write!(
                f,
                "container {id} runs (pid {pid}) without its monitor: its exit would not be recorded"
            ),
            Finding::StoppedButMounted { id } => {
                write!(f, "container {id} is stopped but its rootfs is mounted")
            }
            Finding::StaleEndpoint { id, ip } => write!(
                f,
                "address {ip} is held by container {id}, which is not running"
            ),
            Finding::DuplicateAddress { network, ip } => {
                write!(f, "address {ip} is given twice on network {network}")
            }
            Finding::StaleRuntimeState { id } => write!(
                f,
                "runtime state of container {id} exists but the container is not running"
            ),
            Finding::Orphan { path } => write!(f, "{} belongs to no container", path.display()),
            Finding::MissingVolume { id, volume } => {
                write!(
                    f,
                    "container {id} uses volume {volume}, which does not exist"
                )
            }
            Finding::InterruptedCreate { id } => write!(
                f,
                "container {id} was never completely created (interrupted create; rm -f removes it)"
            ),
            Finding::InterruptedRemove { id } => write!(
                f,
                "container {id} was being removed when its remover stopped (rm -f finishes it)"
            ),
            Finding::InterruptedSandboxCreate { name, id } => write!(
                f,
                "network sandbox {name} ({id}) was never completely created: it has no \
                 network recorded (network prune removes it)"
            ),
            Finding::SandboxWithoutNetns { name, netns } => write!(
                f,
                "network sandbox {name} names namespace {} which is not mounted \
                 (interrupted remove; network prune removes it)",
                netns.display()
            ),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Container rows looked at.
    pub containers: usize,
    /// Network endpoints looked at.
    pub endpoints: usize,
    /// Everything found (with `repair`, before repairing).
    pub findings: Vec<Finding>,
    /// Findings fixed by `repair`.
    pub repaired: usize,
}

impl Report {
    /// Findings that are corruption, not interrupted operations.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.is_interrupted())
    }
}

/// Mount points listed in /proc/self/mountinfo (octal escapes decoded).
fn mountpoints() -> BTreeSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

/// Subdirectories of `dir` named like container ids (the runtime root also holds
/// berth-oci's own `.seccomp-cache`).
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default()
}

fn pid_alive(pid: i64) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Whether a `starting` container without a monitor is just being started (its
/// starter has spawned the monitor, which has not registered yet): waits up to 2 s for
/// the row to move on.
fn settles(engine: &Engine, c: &crate::Container) -> bool {
    if c.state != state::STARTING {
        return false;
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
        match engine.get(&c.id) {
            Ok(now) if now.state == c.state && now.monitor_pid == c.monitor_pid => {}
            _ => return true,
        }
    }
    false
}

/// Whether a sandbox row without a network is just being made (by `serve` or another
/// process): waits up to 2 s for its network to be recorded or the row to go.
fn sandbox_settles(engine: &Engine, name: &str) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
        match crate::network::sandbox_row(&engine.conn, name) {
            Ok(Some(row)) if row.attachment.is_none() => {}
            _ => return true,
        }
    }
    false
}

/// Checks the engine's rows against the host; with `repair`, fixes what it finds
/// (stopping unsupervised processes, finishing interrupted removes, unmounting and
/// removing what belongs to nobody, releasing stale addresses).
pub fn check(engine: &Engine, repair: bool) -> Result<Report> {
    let mut report = Report::default();
    let containers = engine.list()?;
    report.containers = containers.len();
    let mounts = mountpoints();
    let known: BTreeMap<&str, &crate::Container> =
        containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut fixes: Vec<Box<dyn Fn() -> Result<()> + '_>> = Vec::new();
    let mut findings = Vec::new();

    for c in &containers {
        let monitor = monitor_alive(c.monitor_pid, &c.id);
        let rootfs_mounted = mounts.contains(&engine.rootfs(&c.id));
        let id = c.id.clone();
        if c.state == state::REMOVING {
            if !monitor {
                findings.push(Finding::InterruptedRemove { id: id.clone() });
                fixes.push(Box::new(move || {
                    engine.remove(&id, true, false).map(|_| ())
                }));
            }
            continue;
        }
        if c.state == state::CREATED && !engine.container_dir(&c.id).join("spec.json").is_file() {
            findings.push(Finding::InterruptedCreate { id: id.clone() });
            fixes.push(Box::new(move || {
                engine.remove(&id, true, false).map(|_| ())
            }));
            continue;
        }
        if c.is_active() && !monitor && !settles(engine, c) {
            if pid_alive(c.pid) && c.pid > 0 {
                findings.push(Finding::Unsupervised {
                    id: id.clone(),
                    pid: c.pid,
                });
            } else {
                findings.push(Finding::ActiveWithoutProcess {
                    id: id.clone(),
                    state: c.state.clone(),
                });
            }
            // what the monitor would have recorded had it seen the end (exit 137)
            let pid = c.pid;
            fixes.push(Box::new(move || {
                if pid_alive(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if let Ok(c) = engine.get(&id)
                    && let Ok(rt) = engine.runtime(&c)
                {
                    let _ = rt.delete(&id);
                }
                engine.record_exit(&id, 137, state::EXITED)?;
                engine.release(&id);
                Ok(())
            }));
            continue;
        }
        if c.state == state::EXITED && !monitor && rootfs_mounted {
            findings.push(Finding::StoppedButMounted { id: id.clone() });
            fixes.push(Box::new(move || {
                engine.release(&id);
                Ok(())
            }));
        }
        for m in &c.mounts {
            if let Some(v) = &m.name
                && crate::volume::get(&engine.conn, &engine.root, v).is_err()
            {
                findings.push(Finding::MissingVolume {
                    id: c.id.clone(),
                    volume: v.clone(),
                });
            }
        }
    }

    // endpoints: held only by containers that run (or are being set up by their monitor)
    let endpoints: Vec<(String, String, String)> = engine
        .conn
        .prepare("SELECT container_id, network, ip FROM endpoints")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    report.endpoints = endpoints.len();
    // network sandboxes (pods) hold endpoints and network directories of their own
    let sandboxes: BTreeSet<String> = engine
        .conn
        .prepare("SELECT id FROM sandboxes")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // ... once made: a row without its network, or whose pin is gone, is half made
    // (or half removed); removing it forcibly releases whatever part exists
    for name in crate::network::sandbox_names(&engine.conn)? {
        let Some(row) = crate::network::sandbox_row(&engine.conn, &name)? else {
            continue;
        };
        let finding = match &row.attachment {
            None if sandbox_settles(engine, &name) => continue,
            None => Finding::InterruptedSandboxCreate {
                name: row.name.clone(),
                id: row.id.clone(),
            },
            Some(att) => match &att.netns {
                crate::network::Netns::Path(pin) if !mounts.contains(pin) => {
                    Finding::SandboxWithoutNetns {
                        name: row.name.clone(),
                        netns: pin.clone(),
                    }
                }
                _ => continue,
            },
        };
        findings.push(finding);
        fixes.push(Box::new(move || {
            crate::network::remove_sandbox(&engine.conn, &name, true)?;
            Ok(())
        }));
    }
    let mut seen = BTreeSet::new();
    for (cid, network, ip) in &endpoints {
        if !seen.insert((network.clone(), ip.clone())) {
            findings.push(Finding::DuplicateAddress {
                network: network.clone(),
                ip: ip.clone(),
            });
        }
        let holder_ok = sandboxes.contains(cid)
            || known
                .get(cid.as_str())
                .is_some_and(|c| c.is_active() || monitor_alive(c.monitor_pid, &c.id));
        if !holder_ok {
            findings.push(Finding::StaleEndpoint {
                id: cid.clone(),
                ip: ip.clone(),
            });
            let cid = cid.clone();
            fixes.push(Box::new(move || {
                crate::network::teardown(&engine.conn, &engine.root, &engine.state, &cid)?;
                Ok(())
            }));
        }
    }

    // runtime state of containers that are not running
    let rt_root = engine.state.join("runtime");
    for id in dir_names(&rt_root) {
        let running = known
            .get(id.as_str())
            .is_some_and(|c| c.is_active() || monitor_alive(c.monitor_pid, &c.id));
        if !running {
            findings.push(Finding::StaleRuntimeState { id: id.clone() });
            let rt_root = rt_root.clone();
            fixes.push(Box::new(move || {
                let bin = crate::runtime::find(None)?;
                crate::runtime::Runtime::new(bin, rt_root.clone()).delete(&id)
            }));
        }
    }

    // files and mounts of no container
    for base in [
        engine.root.join("containers"),
        engine.state.join("containers"),
        engine.state.join("net"),
    ] {
        for id in dir_names(&base) {
            if known.contains_key(id.as_str()) || sandboxes.contains(&id) {
                continue;
            }
            let dir = base.join(&id);
            findings.push(Finding::Orphan { path: dir.clone() });
            let is_net = base.ends_with("net");
            fixes.push(Box::new(move || {
                if is_net {
                    crate::network::teardown(&engine.conn, &engine.root, &engine.state, &id)?;
                } else {
                    let _ = berth_image::unmount_overlay(&dir);
                    match std::fs::remove_dir_all(&dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(crate::Error::io("remove", &dir)(e));
                        }
                        _ => {}
                    }
                }
                Ok(())
            }));
        }
    }
    if repair {
        for fix in &fixes {
            match fix() {
                Ok(()) => report.repaired += 1,
                Err(e) => tracing::warn!(error = %e, "repair"),
            }
        }
    }
    report.findings = findings;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    /// A container row as a crash could leave it, written directly.
    fn row(engine: &Engine, id: &str, state: &str, monitor_pid: i64) {
        engine
            .conn
            .execute(
                "INSERT INTO containers (id, name, image, image_id, config, lowerdirs, created, state, monitor_pid)
                 VALUES (?1, ?2, 'busybox', 'sha256:x', ?3, '[]', '2026-01-01T00:00:00Z', ?4, ?5)",
                rusqlite::params![
                    id,
                    format!("n{}", &id[..8]),
                    serde_json::to_string(&crate::CreateConfig::default()).unwrap(),
                    state,
                    monitor_pid
                ],
            )
            .unwrap();
    }

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    #[test]
    fn crash_traces_are_found_and_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("root"), &dir.path().join("state")).unwrap();
        // shown as running, but no monitor (pid 0 never exists as a monitor)
        row(&engine, &id(1), state::RUNNING, 0);
        // a create that never wrote its spec
        row(&engine, &id(2), state::CREATED, 0);
        // a remove whose remover died
        row(&engine, &id(3), state::REMOVING, 0);
        // an exited container holding an address
        row(&engine, &id(4), state::EXITED, 0);
        crate::network::list_networks(&engine.conn, &engine.root).unwrap();
        engine
            .conn
            .execute(
                "INSERT INTO endpoints (container_id, network, ip, mac, host_veth, netns, hosts)
                 VALUES (?1, 'bridge', '10.1.2.3', 'm', 'v', 'p', 'h')",
                [id(4)],
            )
            .unwrap();
        // files of no container
        std::fs::create_dir_all(engine.container_dir(&id(9))).unwrap();
        let r = check(&engine, false).unwrap();
        let has = |f: &Finding| r.findings.contains(f);
        assert!(has(&Finding::ActiveWithoutProcess {
            id: id(1),
            state: "running".into()
        }));
        assert!(has(&Finding::InterruptedCreate { id: id(2) }));
        assert!(has(&Finding::InterruptedRemove { id: id(3) }));
        assert!(has(&Finding::StaleEndpoint {
            id: id(4),
            ip: "10.1.2.3".into()
        }));
        assert!(has(&Finding::Orphan {
            path: engine.container_dir(&id(9))
        }));
        assert_eq!(r.findings.len(), 5, "{:?}", r.findings);
        // two are interrupted operations, three are problems
        assert_eq!(r.problems().count(), 3);
        assert_eq!(r.containers, 4);
        assert_eq!(r.endpoints, 1);
    }

    #[test]
    fn repair_removes_what_belongs_to_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("root"), &dir.path().join("state")).unwrap();
        let orphan = engine.container_dir(&id(7));
        std::fs::create_dir_all(orphan.join("upper")).unwrap();
        let r = check(&engine, true).unwrap();
        assert_eq!(r.repaired, 1, "{:?}", r.findings);
        assert!(!orphan.exists());
        assert!(check(&engine, false).unwrap().findings.is_empty());
    }

    #[test]
    fn half_made_sandboxes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("root"), &dir.path().join("state")).unwrap();
        let sandbox = |id: &str, name: &str, attachment: &str| {
            engine
                .conn
                .execute(
                    "INSERT INTO sandboxes (id, name, request, created, dir, attachment)
                     VALUES (?1, ?2, '{}', '2026-01-01T00:00:00Z', '/nonexistent', ?3)",
                    rusqlite::params![id, name, attachment],
                )
                .unwrap();
        };
        // a creator killed between the row and its network
        sandbox(&id(1), "half", "");
        // a remover killed between the teardown and the row
        let pin = dir.path().join("state/net/gone/netns");
        let att = crate::network::Attachment {
            netns: crate::network::Netns::Path(pin.clone()),
            ip: None,
            gateway: None,
            prefix: 0,
            mac: None,
            ports: Vec::new(),
            hosts: None,
            resolv_conf: None,
            dns: None,
        };
        sandbox(&id(2), "unpinned", &serde_json::to_string(&att).unwrap());
        let r = check(&engine, false).unwrap();
        assert_eq!(
            r.findings,
            vec![
                Finding::InterruptedSandboxCreate {
                    name: "half".into(),
                    id: id(1)
                },
                Finding::SandboxWithoutNetns {
                    name: "unpinned".into(),
                    netns: pin
                },
            ]
        );
        assert_eq!(r.problems().count(), 0, "both are interrupted operations");
    }

    #[test]
    fn an_empty_root_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("root"), &dir.path().join("state")).unwrap();
        let r = check(&engine, false).unwrap();
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.containers, 0);
    }
}
