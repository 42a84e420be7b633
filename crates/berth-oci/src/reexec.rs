//! Protection against CVE-2019-5736 (overwriting the host runtime binary through
//! /proc/self/exe from inside the container).
//!
//! Choice: the verbs that execve into a container (create, run, exec) first re-execute
//! berth-oci from a detached read-only bind mount of its own binary (open_tree +
//! mount_setattr: no copy), or, without CAP_SYS_ADMIN, from a sealed memfd copy. A container that makes its process
//! exec /proc/self/exe (a `#!/proc/self/exe` script, a PT_INTERP pointing there) then
//! reaches only a read-only mount (EROFS) or the sealed copy. The init is also non-dumpable until
//! execve. Cost: one extra execve (~1 ms start-up on the project machine); the memfd
//! fallback also copies the 3.7 MiB binary and faults it in, measured at ~4-7 ms more
//! per `run`, which is why it is only the fallback. The other verbs
//! (start, state, kill, delete, ...) never run container code and skip it. A binary
//! installed on a read-only mount is already safe and skips the copy too.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Re-exec from a sealed memfd unless we already run from one; returns only if we do.
pub fn ensure_sealed() -> io::Result<()> {
    let exe = std::fs::File::open("/proc/self/exe")?;
    // SAFETY: fcntl on a valid fd.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return Ok(());
    }
    // A binary on a read-only mount cannot be opened for writing through
    // /proc/PID/exe (EROFS; the container cannot remount a mount of the host's
    // namespace), so installing berth-oci on a read-only mount (or a read-only bind
    // mount of the file) skips the copy and the second execve.
    // SAFETY: statvfs is plain data; fstatvfs fills it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and buffer.
    if unsafe { libc::fstatvfs(exe.as_raw_fd(), &mut st) } == 0 && st.f_flag & libc::ST_RDONLY != 0
    {
        return Ok(());
    }
    // Preferred: a detached read-only bind mount of our own binary (open_tree +
    // mount_setattr, no copy), executed through its fd. Needs CAP_SYS_ADMIN; rootless
    // callers fall back to the sealed memfd copy.
    if let Some(fd) = ro_detached_mount() {
        exec_fd(fd.as_raw_fd());
    }
    let name = c"berth-oci";
    // MFD_EXEC (0x10) is needed where vm.memfd_noexec is set; older kernels reject it.
    // SAFETY: memfd_create with a valid name.
    let mut fd = unsafe {
        libc::memfd_create(
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | 0x10,
        )
    };
    if fd < 0 {
        // SAFETY: as above.
        fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is ours.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut dst = std::fs::File::from(mem);
    let mut src = exe;
    io::copy(&mut src, &mut dst)?;
    // SAFETY: fcntl on a valid fd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    exec_fd(dst.as_raw_fd());
    Err(io::Error::last_os_error())
}

/// A detached, read-only bind mount of /proc/self/exe, as an O_PATH fd.
fn ro_detached_mount() -> Option<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 1;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    // SAFETY: open_tree with a valid path; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: attr is a valid mount_attr of the given size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    (r == 0).then_some(fd)
}

/// execveat(fd) with our argv and environment; returns only on failure.
fn exec_fd(fd: libc::c_int) {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| {
            CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())).unwrap_or_default()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: argv is NULL-terminated and outlives the call; environ is the process env.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            argv.as_ptr(),
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
}
