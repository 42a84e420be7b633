//! Network namespaces pinned at a path (a bind mount of the namespace file), so they
//! outlive the process that made them and a runtime can join them by path.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::Error;
use crate::netlink::Netlink;

/// Creates a new network namespace pinned at `pin` (the file is created), brings its
/// loopback up, and returns a netlink socket bound to it for further configuration.
///
/// The calling thread enters the new namespace (unshare affects only it) and returns
/// to its own before this returns: no thread to start, whose scheduling cost tens of
/// milliseconds per container on a loaded machine.
pub fn create(pin: &Path) -> Result<Netlink, Error> {
    let err = |source: io::Error| Error::Netns {
        path: pin.to_path_buf(),
        source,
    };
    if let Some(parent) = pin.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    fs::File::create(pin).map_err(err)?;
    let made = on_this_thread(|| -> io::Result<Netlink> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            pin,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        let mut nl = Netlink::open()?;
        nl.set_up(1)?; // lo is always index 1 in a fresh namespace
        Ok(nl)
    });
    match made {
        Ok(nl) => Ok(nl),
        Err(e) => {
            let _ = remove(pin);
            Err(err(e))
        }
    }
}

/// Runs `f` (which may change the calling thread's network namespace), then puts the
/// thread back into the namespace it was in. Sockets opened by `f` stay in the
/// namespace they were made in.
fn on_this_thread<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let own = fs::File::open("/proc/thread-self/ns/net")?;
    let res = f();
    if let Err(e) = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET) {
        // staying in a container's namespace would misroute everything after: a
        // thread that cannot go back must not go on
        panic!("cannot return to the original network namespace: {e}");
    }
    res
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

/// Runs `f` inside the namespace at `pin` (e.g. to open a socket there), on the
/// calling thread, which then returns to its own namespace.
pub fn within<T>(pin: &Path, f: impl FnOnce() -> io::Result<T>) -> Result<T, Error> {
    let fd = open(pin)?;
    on_this_thread(|| {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .map_err(|source| Error::Netns {
        path: pin.to_path_buf(),
        source,
    })
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
