//! The foreground terminal of `run` without `--console-socket`: as runc, the pty is
//! made inside the container, its master comes back to the runtime, and the runtime
//! copies between its own stdio and the master until the container exits, with the
//! caller's terminal in raw mode and window size changes passed on.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The caller's terminal settings, restored when dropped.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Put `fd` in raw mode if it is a terminal (the container's pty does the line
    /// discipline: echo, ^C to SIGINT, and so on).
    fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd number and pointer.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: t is a valid termios.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the settings read in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The size of the caller's terminal (stdin), if it is one, as `process.consoleSize`:
/// the container's pty gets it when made, before the process can ask for it.
pub(crate) fn caller_size() -> Option<oci_spec::runtime::Box> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a winsize.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } != 0 || ws.ws_row == 0 {
        return None;
    }
    oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(ws.ws_row))
        .width(u64::from(ws.ws_col))
        .build()
        .ok()
}

/// Copy the window size of terminal `from` to the pty master `to`.
fn copy_size(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a winsize for both ioctls.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if e == Some(libc::EINTR) {
                continue;
            }
            if e == Some(libc::EAGAIN) {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Read what is available on `from` and copy it to `to`. False at end of input.
fn pump(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        return matches!(e, Some(libc::EINTR) | Some(libc::EAGAIN));
    }
    if n == 0 {
        return false;
    }
    write_all(to, &buf[..n as usize]);
    true
}

/// Exit code of `pid` if it has exited (128+n for a signal).
fn reap(pid: i32) -> Option<i32> {
    let mut st = 0;
    // SAFETY: reaping our own child without blocking.
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
    if r == pid {
        if libc::WIFEXITED(st) {
            return Some(libc::WEXITSTATUS(st));
        }
        if libc::WIFSIGNALED(st) {
            return Some(128 + libc::WTERMSIG(st));
        }
    }
    if r < 0 {
        return Some(255);
    }
    None
}

/// Proxy stdio to the pty `master` until `pid` exits; `set` holds the signals blocked
/// by the caller (read here through a signalfd): SIGCHLD ends the wait, SIGWINCH
/// resizes the pty, every other one goes to the container. Returns the exit code.
pub(crate) fn proxy(pid: i32, master: OwnedFd, set: &libc::sigset_t) -> i32 {
    let m = master.as_raw_fd();
    let raw = RawMode::enter(0);
    if raw.is_some() {
        copy_size(0, m);
    }
    // SAFETY: set is a valid sigset; a new signalfd is returned or -1.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    // SAFETY: fcntl on our own fd.
    unsafe {
        let fl = libc::fcntl(m, libc::F_GETFL);
        libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut buf = vec![0u8; 16384];
    let mut stdin_open = true;
    let mut master_open = true;
    let code = loop {
        let mut fds = [
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open { m } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Without a signalfd (never expected), poll with a timeout and check the child.
        let timeout = if sfd < 0 { 100 } else { -1 };
        // SAFETY: fds is a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break reap_blocking(pid);
        }
        // Signals first: a resize that came before the input is applied before it.
        if sfd < 0 {
            if let Some(c) = reap(pid) {
                break c;
            }
        } else if fds[0].revents & libc::POLLIN != 0 {
            let mut exited = None;
            loop {
                // SAFETY: signalfd_siginfo is plain data.
                let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let sz = std::mem::size_of::<libc::signalfd_siginfo>();
                // SAFETY: reading one signalfd_siginfo into a buffer of its size.
                if unsafe { libc::read(sfd, (&mut si as *mut libc::signalfd_siginfo).cast(), sz) }
                    != sz as isize
                {
                    break;
                }
                match si.ssi_signo as i32 {
                    libc::SIGCHLD => exited = exited.or_else(|| reap(pid)),
                    libc::SIGWINCH => copy_size(0, m),
                    // SAFETY: forwarding a signal to our child.
                    s => unsafe {
                        libc::kill(pid, s);
                    },
                }
            }
            if let Some(c) = exited {
                break c;
            }
        }
        if master_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            master_open = pump(m, 1, &mut buf);
        }
        if stdin_open && fds[2].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            stdin_open = pump(0, m, &mut buf);
        }
    };
    // What the container wrote before it exited is still in the pty.
    while master_open && pump_nonempty(m, &mut buf) {}
    if sfd >= 0 {
        // SAFETY: closing our signalfd.
        unsafe { libc::close(sfd) };
    }
    drop(raw);
    code
}

/// Like `pump` to stdout, but false once nothing is left.
fn pump_nonempty(m: RawFd, buf: &mut [u8]) -> bool {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return false;
    }
    write_all(1, &buf[..n as usize])
}

fn reap_blocking(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    }
}
