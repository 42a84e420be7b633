//! OOM notifications of a container's memory cgroup, for `events`: cgroup v1 through
//! `cgroup.event_control` and an eventfd on `memory.oom_control`, cgroup v2 through
//! inotify on `memory.events` (its `oom_kill` counter).

use crate::error::{Error, Result, io, sys};
use crate::state::State;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Watches one container's memory cgroup for OOM kills.
#[derive(Debug)]
pub struct OomWatch {
    fd: OwnedFd,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// v1: an eventfd; the memory cgroup dir tells a removal from an OOM.
    V1 { dir: PathBuf },
    /// v2: inotify on memory.events; the last oom_kill count seen.
    V2 { events: PathBuf, seen: u64 },
}

fn oom_kills(p: &std::path::Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl OomWatch {
    /// Start watching; `None` when the container has no memory cgroup.
    pub fn new(st: &State) -> Result<Option<OomWatch>> {
        let Some(cg) = &st.cgroup else {
            return Ok(None);
        };
        if let Some(d) = cg
            .v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == "memory"))
        {
            let oc = d.path.join("memory.oom_control");
            let ocf = std::fs::File::open(&oc).map_err(io(format!("open {}", oc.display())))?;
            // SAFETY: eventfd takes integers and returns a new fd or -1.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(sys("eventfd for OOM notifications"));
            }
            // SAFETY: the kernel just gave us this fd.
            let fd = unsafe { OwnedFd::from_raw_fd(efd) };
            crate::sys::write_file(
                &d.path.join("cgroup.event_control"),
                &format!("{} {}", fd.as_raw_fd(), ocf.as_raw_fd()),
            )?;
            return Ok(Some(OomWatch {
                fd,
                kind: Kind::V1 {
                    dir: d.path.clone(),
                },
            }));
        }
        let Some(dir) = &cg.v2 else {
            return Ok(None);
        };
        let events = dir.join("memory.events");
        if !events.exists() {
            return Ok(None);
        }
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if ifd < 0 {
            return Err(sys("inotify for OOM notifications"));
        }
        // SAFETY: the kernel just gave us this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(ifd) };
        let c = crate::sys::cstr(&events)?;
        // SAFETY: valid fd and path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(sys(format!("watch {}", events.display())));
        }
        let seen = oom_kills(&events);
        Ok(Some(OomWatch {
            fd,
            kind: Kind::V2 { events, seen },
        }))
    }

    /// Wait up to `timeout_ms` for OOM kills; returns how many happened, or an error
    /// once the cgroup is gone.
    pub fn wait(&mut self, timeout_ms: i32) -> Result<u64> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n <= 0 {
            return Ok(0);
        }
        let mut buf = [0u8; 4096];
        // SAFETY: buf is valid for its length.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(sys("read OOM notification"));
        }
        match &mut self.kind {
            Kind::V1 { dir } => {
                // The eventfd also fires when the cgroup is removed.
                if !dir.exists() {
                    return Err(Error::Cgroup(format!("{} is gone", dir.display())));
                }
                Ok(if r == 8 {
                    u64::from_ne_bytes(buf[..8].try_into().unwrap_or_default())
                } else {
                    1
                })
            }
            Kind::V2 { events, seen } => {
                if !events.exists() {
                    return Err(Error::Cgroup(format!("{} is gone", events.display())));
                }
                let now = oom_kills(events);
                let d = now.saturating_sub(*seen);
                *seen = now;
                Ok(d)
            }
        }
    }
}
