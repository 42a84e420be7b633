//! Network namespaces pinned at a path (a bind mount of the namespace file), so they
//! outlive the process that made them and a runtime can join them by path.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::netlink::Netlink;

/// Creates a new network namespace pinned at `pin` (the file is created), brings its
/// loopback up, and returns a netlink socket bound to it for further configuration.
///
/// The namespace is made in a short-lived thread (unshare affects only the calling
/// thread), so the caller's own namespace never changes.
pub fn create(pin: &Path) -> Result<Netlink, Error> {
    let err = |source: io::Error| Error::Netns {
        path: pin.to_path_buf(),
        source,
    };
    if let Some(parent) = pin.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    fs::File::create(pin).map_err(err)?;
    let target: PathBuf = pin.to_path_buf();
    let made = std::thread::spawn(move || -> io::Result<Netlink> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        let mut nl = Netlink::open()?;
        nl.set_up(1)?; // lo is always index 1 in a fresh namespace
        Ok(nl)
    })
    .join()
    .map_err(|_| err(io::Error::other("namespace thread panicked")))?;
    match made {
        Ok(nl) => Ok(nl),
        Err(e) => {
            let _ = remove(pin);
            Err(err(e))
        }
    }
}

/// Opens the namespace pinned at `pin` (for IFLA_NET_NS_FD or setns).
pub fn open(pin: &Path) -> Result<OwnedFd, Error> {
    fs::File::open(pin)
        .map(OwnedFd::from)
        .map_err(|source| Error::Netns {
            path: pin.to_path_buf(),
            source,
        })
}

/// Runs `f` in a thread that joined the namespace at `pin`: e.g. to open a netlink
/// socket inside it.
pub fn within<T: Send + 'static>(
    pin: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let fd = open(pin)?;
    let path = pin.to_path_buf();
    std::thread::spawn(move || -> io::Result<T> {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))
    .and_then(|r| r)
    .map_err(|source| Error::Netns { path, source })
}

/// Unpins and deletes the namespace file; a namespace already gone is fine. The
/// namespace itself disappears once no process is left in it.
pub fn remove(pin: &Path) -> Result<(), Error> {
    match nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::Netns {
                path: pin.to_path_buf(),
                source: e.into(),
            });
        }
    }
    match fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Netns {
            path: pin.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
