//! Protection against CVE-2019-5736 (overwriting the host runtime binary through
//! /proc/self/exe from inside the container).
//!
//! Choice: the verbs that execve into a container (create, run, exec) first re-execute
//! berth-oci from a sealed memfd copy of itself. A container that makes its process
//! exec /proc/self/exe (a `#!/proc/self/exe` script, a PT_INTERP pointing there) then
//! reaches only the sealed, write-protected copy. The init is also non-dumpable until
//! execve. Cost: one copy of the binary into memory (in-kernel copy of the page-cached
//! file) and one extra execve, measured at about 1 ms on the project machine; the other
//! verbs (start, state, kill, delete, ...) never run container code and skip it.

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
            dst.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
    Err(io::Error::last_os_error())
}
