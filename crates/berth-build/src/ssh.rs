//! ssh agent forwarding for `RUN --mount=type=ssh`: a socket of the step's own, with
//! the mount's owner and mode, whose connections are relayed to the agent given with
//! `--ssh`. The agent's own socket (and its path) never enters the container, and the
//! relay ends with the step.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A running relay; stopped and its socket removed when dropped.
#[derive(Debug)]
pub struct AgentRelay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentRelay {
    /// Listens on `path` (owned by `uid`:`gid`, permissions `mode`) and relays each
    /// connection to the agent socket `upstream`.
    pub fn start(
        upstream: &Path,
        path: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> io::Result<AgentRelay> {
        // fail now, with the agent's path, rather than inside the RUN
        UnixStream::connect(upstream).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("ssh agent {} does not answer: {e}", upstream.display()),
            )
        })?;
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let upstream = upstream.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ssh-relay".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let Ok(agent) = UnixStream::connect(&upstream) else {
                        continue;
                    };
                    relay(client, agent);
                }
            })?;
        Ok(AgentRelay {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

/// Copies both ways between the two streams on two threads; each direction shuts the
/// other side's write half when it ends, so both threads finish.
fn relay(client: UnixStream, agent: UnixStream) {
    let pair = client.try_clone().and_then(|c| Ok((c, agent.try_clone()?)));
    let Ok((client2, agent2)) = pair else { return };
    let pipe = |mut from: UnixStream, mut to: UnixStream| {
        let _ = std::thread::Builder::new()
            .name("ssh-relay-conn".into())
            .spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
    };
    pipe(client, agent);
    pipe(agent2, client2);
}

impl Drop for AgentRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so it sees the flag
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_with_its_own_mode() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&up).unwrap();
        let echo = std::thread::spawn(move || {
            // the relay's probe connection, then the real one
            let _ = agent.accept().unwrap();
            let (mut s, _) = agent.accept().unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let p = dir.path().join("relay.sock");
        let r = AgentRelay::start(&up, &p, nix_uid(), nix_gid(), 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        echo.join().unwrap();
        drop(r);
        assert!(!p.exists());
    }

    fn nix_uid() -> u32 {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    }

    fn nix_gid() -> u32 {
        // SAFETY: getgid cannot fail.
        unsafe { libc::getgid() }
    }
}
