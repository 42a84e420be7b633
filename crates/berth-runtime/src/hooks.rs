//! Running OCI hooks: state JSON on stdin, optional timeout, failure is an error.

use crate::error::{Error, Result};
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

/// Run `hooks` in order; `point` names the hook point in messages.
pub fn run(point: &str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for h in hooks {
        run_one(point, h, state_json)?;
    }
    Ok(())
}

fn run_one(point: &str, h: &Hook, state_json: &[u8]) -> Result<()> {
    let path = h.path();
    let what = |m: String| Error::Hook(format!("{point} hook {}: {m}", path.display()));
    let mut cmd = Command::new(path);
    if let Some(args) = h.args()
        && !args.is_empty()
    {
        cmd.arg0(&args[0]).args(&args[1..]);
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| what(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may ignore its stdin and exit early: EPIPE is not an error.
        let _ = stdin.write_all(state_json);
    }
    let status = match h.timeout() {
        Some(t) if t > 0 => wait_timeout(&mut child, t as u64)
            .map_err(|e| what(e.to_string()))?
            .ok_or_else(|| what(format!("timed out after {t}s")))?,
        Some(t) => return Err(what(format!("timeout {t} must be positive"))),
        None => child.wait().map_err(|e| what(e.to_string()))?,
    };
    if !status.success() {
        return Err(what(match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => format!("killed by signal {}", status.signal().unwrap_or(0)),
        }));
    }
    Ok(())
}

/// Wait up to `secs` seconds (pidfd + poll, no threads); on timeout kill and reap.
fn wait_timeout(
    child: &mut std::process::Child,
    secs: u64,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    // SAFETY: pidfd_open has no memory arguments.
    let pfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
    if pfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let res = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd {
            fd: pfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: p is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r > 0 {
            break child.wait().map(Some);
        }
        if r == 0 {
            let _ = child.kill();
            let _ = child.wait();
            break Ok(None);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            break Err(e);
        }
    };
    // SAFETY: pfd is ours.
    unsafe { libc::close(pfd) };
    res
}
