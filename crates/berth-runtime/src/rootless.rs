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

/// The subordinate range of `/etc/subuid` or `/etc/subgid` (`file`) for the user
/// `name` or uid `id`: the first matching line, as newuidmap reads it.
pub fn subordinate_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subordinate(&text, name, id)
}

fn parse_subordinate(text: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || (f[0] != name && f[0] != id.to_string()) {
            return None;
        }
        Some((f[1].parse().ok()?, f[2].parse().ok()?))
    })
}

/// Mappings for a rootless user namespace: our own id as 0, then the subordinate
/// range (if any) from 1.
fn id_maps(own: u32, sub: Option<(u32, u32)>) -> Vec<LinuxIdMapping> {
    let mut v = vec![map(0, own, 1)];
    if let Some((start, count)) = sub {
        v.push(map(1, start, count));
    }
    v
}

fn map(container: u32, host: u32, size: u32) -> LinuxIdMapping {
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(container)
        .host_id(host)
        .size(size)
        .build()
        .expect("all fields set")
}

fn sys_err(what: String) -> Error {
    crate::error::sys(what)
}

/// Enter the user and mount namespaces of the user's pause process, creating it first
/// if it is not running (its pid is kept in `dir/pause.pid`), and become root there.
/// This is how an unprivileged `berth` gets overlay mounts, image unpacking with
/// other owners and containers: every invocation joins the same namespaces, so
/// mounts made by one are seen by the next (podman does the same). Must be called
/// while the process is single-threaded.
pub fn join_user_namespace(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(crate::error::io(format!("create {}", dir.display())))?;
    let lock = std::fs::File::create(dir.join("pause.lock")).map_err(crate::error::io(format!(
        "create {}/pause.lock",
        dir.display()
    )))?;
    // SAFETY: flock on an open file.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(sys_err(format!("lock {}/pause.lock", dir.display())));
    }
    let pidfile = dir.join("pause.pid");
    let running = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace();
            Some((
                it.next()?.parse::<i32>().ok()?,
                it.next()?.parse::<u64>().ok()?,
            ))
        })
        .filter(|(pid, start)| crate::sys::proc_start_time(*pid) == Some(*start))
        .map(|(pid, _)| pid);
    let pid = match running {
        Some(pid) => pid,
        None => {
            let pid = spawn_pause()?;
            let start = crate::sys::proc_start_time(pid).unwrap_or(0);
            std::fs::write(&pidfile, format!("{pid} {start}\n"))
                .map_err(crate::error::io(format!("write {}", pidfile.display())))?;
            pid
        }
    };
    for (ns, flag) in [("user", libc::CLONE_NEWUSER), ("mnt", libc::CLONE_NEWNS)] {
        let p = format!("/proc/{pid}/ns/{ns}");
        let f = std::fs::File::open(&p).map_err(crate::error::io(format!("open {p}")))?;
        // SAFETY: setns on an open namespace fd; the caller is single-threaded.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), flag) } != 0 {
            return Err(sys_err(format!("join the rootless {ns} namespace of {p}")));
        }
    }
    // SAFETY: plain id arguments.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 || unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(sys_err("become root of the rootless user namespace".into()));
    }
    Ok(())
}

/// Fork the pause process: it unshares a user and a mount namespace, waits for its
/// mappings (own id as 0, the subordinate range from 1, through newuidmap and
/// newgidmap) and then sleeps forever, holding both namespaces.
fn spawn_pause() -> Result<i32> {
    let (ours, theirs) = crate::sys::seqpacket_pair()?;
    // SAFETY: fork of a single-threaded process; the child only makes syscalls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys_err("fork the rootless pause process".into()));
    }
    if pid == 0 {
        drop(ours);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
        // SAFETY: syscalls with plain arguments in the forked child; it never returns.
        unsafe {
            libc::setsid();
            libc::prctl(libc::PR_SET_NAME, c"berth-pause".as_ptr());
            let ok = libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0;
            let _ = crate::sys::send(fd, if ok { b"U" } else { b"E" });
            if !ok || crate::sys::recv(fd).ok().as_deref() != Some(&b"M"[..]) {
                libc::_exit(1);
            }
            libc::close(fd);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for i in 0..3 {
                libc::dup2(null, i);
            }
            // Nothing of the caller's stays open here (its lock above all).
            libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
            let _ = libc::chdir(c"/".as_ptr());
            loop {
                libc::pause();
            }
        }
    }
    drop(theirs);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ours);
    let fail = |e: Error| {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        e
    };
    if crate::sys::recv(fd).map_err(fail)?.first() != Some(&b'U') {
        return Err(fail(Error::Init(
            "the rootless pause process could not unshare a user namespace".into(),
        )));
    }
    let name = owner_name();
    let uids = id_maps(euid(), subordinate_range("/etc/subuid", &name, euid()));
    let gids = id_maps(egid(), subordinate_range("/etc/subgid", &name, euid()));
    let r = if uids.len() == 1 {
        // No subordinate ids: only our own id, written directly.
        crate::sys::write_file(
            std::path::Path::new(&format!("/proc/{pid}/uid_map")),
            &format!("0 {} 1", euid()),
        )
        .and_then(|()| {
            crate::sys::write_file(
                std::path::Path::new(&format!("/proc/{pid}/setgroups")),
                "deny",
            )
        })
        .and_then(|()| {
            crate::sys::write_file(
                std::path::Path::new(&format!("/proc/{pid}/gid_map")),
                &format!("0 {} 1", egid()),
            )
        })
    } else {
        newidmap("newuidmap", "/etc/subuid", pid, &uids)
            .and_then(|()| newidmap("newgidmap", "/etc/subgid", pid, &gids))
    };
    r.map_err(fail)?;
    crate::sys::send(fd, b"M").map_err(fail)?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::parse_subordinate;

    #[test]
    fn subordinate_ranges() {
        let t = "alice:100000:65536\n1001:200000:1000\nbad line\n";
        assert_eq!(parse_subordinate(t, "alice", 1000), Some((100000, 65536)));
        assert_eq!(parse_subordinate(t, "bob", 1001), Some((200000, 1000)));
        assert_eq!(parse_subordinate(t, "carol", 1002), None);
    }
}
