//! Thin, checked wrappers over the system calls the runtime needs.

use crate::error::{Result, sys};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Path to a NUL-terminated C string (paths never contain NUL when they come from JSON
/// or the command line; a NUL is reported as an error).
pub(crate) fn cstr(p: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| crate::Error::Sys {
        what: format!("path {:?} contains a NUL byte", p.as_ref()),
        err: std::io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// `mount(2)`; `src`/`fstype`/`data` may be absent.
pub(crate) fn mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let s = src.map(cstr).transpose()?;
    let d = cstr(dst)?;
    let t = fstype.map(cstr).transpose()?;
    let da = data.filter(|x| !x.is_empty()).map(cstr).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null for the call's duration.
    let r = unsafe {
        libc::mount(
            s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            d.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            da.as_ref()
                .map_or(std::ptr::null(), |c| c.as_ptr().cast::<libc::c_void>()),
        )
    };
    if r != 0 {
        return Err(sys(format!(
            "mount {} on {} (type {}, flags {:#x}, data {:?})",
            src.map_or("none".into(), |p| p.display().to_string()),
            dst.display(),
            fstype.unwrap_or("none"),
            flags,
            data.unwrap_or("")
        )));
    }
    Ok(())
}

/// `umount2(2)`.
pub(crate) fn umount(p: &Path, flags: i32) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        return Err(sys(format!("umount {}", p.display())));
    }
    Ok(())
}

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub(crate) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(sys("socketpair"));
    }
    // SAFETY: the kernel just returned these two fds, we own them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send one message (no partial sends on SEQPACKET).
pub(crate) fn send(fd: RawFd, msg: &[u8]) -> Result<()> {
    // SAFETY: msg is a valid buffer.
    let r = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(sys("send on sync socket"));
    }
    Ok(())
}

/// Receive one message; an empty vector means the peer closed.
pub(crate) fn recv(fd: RawFd) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is valid for its length.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(sys("recv on sync socket"));
        }
        buf.truncate(r as usize);
        return Ok(buf);
    }
}

/// Send `fd` over a unix socket with SCM_RIGHTS (how the pty master reaches the engine).
pub(crate) fn send_fd(sock: RawFd, fd: RawFd, name: &[u8]) -> Result<()> {
    let mut cbuf = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut iov = libc::iovec {
        iov_base: name.as_ptr() as *mut libc::c_void,
        iov_len: name.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points to a buffer of at least `space` bytes, so the first
    // header and its data fit.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
    // SAFETY: msg is fully initialised above.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(sys("send pty master over the console socket"));
    }
    Ok(())
}

/// Receive one fd sent with SCM_RIGHTS (the pty master from the container init).
pub(crate) fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    let mut cbuf = [0u64; 8];
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg points to valid buffers of the given sizes.
    if unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(sys("receive the pty master"));
    }
    // SAFETY: the kernel filled msg_control; CMSG_* walk inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(crate::error::Error::Init(
                "the container init sent no pty master".into(),
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Connect a `SOCK_STREAM` unix socket to `path` (long paths go through /proc/self/fd).
pub(crate) fn unix_connect(path: &Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path).or_else(|e| {
        if path.as_os_str().len() < 100 {
            return Err(e);
        }
        let dir = std::fs::File::open(path.parent().unwrap_or(Path::new("/")))?;
        let short = format!(
            "/proc/self/fd/{}/{}",
            dir.as_raw_fd(),
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        std::os::unix::net::UnixStream::connect(short)
    });
    s.map(OwnedFd::from)
        .map_err(crate::error::io(format!("connect to {}", path.display())))
}

/// Mark every fd >= `from` close-on-exec (`close_range` with CLOSE_RANGE_CLOEXEC).
pub(crate) fn cloexec_from(from: RawFd) -> Result<()> {
    // SAFETY: close_range only changes fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Fallback for old kernels: walk /proc/self/fd.
    for e in std::fs::read_dir("/proc/self/fd").map_err(crate::error::io("read /proc/self/fd"))? {
        let Ok(e) = e else { continue };
        if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok())
            && n >= from
        {
            // SAFETY: setting FD_CLOEXEC on a possibly stale fd is harmless.
            unsafe { libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Write a small file (procfs, cgroupfs) in one `write`.
pub(crate) fn write_file(p: &Path, data: &str) -> Result<()> {
    std::fs::write(p, data).map_err(crate::error::io(format!(
        "write {:?} to {}",
        data,
        p.display()
    )))
}

/// Start time of a process (field 22 of /proc/PID/stat), to tell a live init from a
/// recycled pid; `None` if the process is gone or a zombie.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // rest starts at field 3; field 22 is index 19 from here.
    it.nth(18)?.parse().ok()
}
