//! `cp` between a container's filesystem and the host, as files or as tar streams.
//!
//! Every path inside the container is resolved by the kernel with `openat2` and
//! `RESOLVE_IN_ROOT` from a descriptor of the container's root, so symlinks (absolute
//! ones, `..`) can never lead out of it, even if the container swaps them while the
//! copy runs (the CVE-2018-15664 / CVE-2019-14271 class). Below the resolved path the
//! tree is walked and written by descriptor only (`O_NOFOLLOW` at each step), and
//! extraction into the container goes through berth-image's unpacker, which creates
//! everything relative to directory descriptors.
//!
//! The root is the running container's own view (`/proc/PID/root`: its volumes and
//! binds included); for a stopped container it is its overlay root, or the volume or
//! bind source whose target holds the path. Like docker, the last component of a
//! source is not followed (a symlink is copied as a symlink), a destination directory
//! receives the source under its own name, and `-` is a tar stream on stdin/stdout.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::config::MountKind;
use crate::container::{Container, Engine};
use crate::error::{Error, Result};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstr(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// openat2 of `path` below `root` with the container's root as "/".
fn open_in_root(root: RawFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    let c = cstr(rel.as_os_str())?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid dirfd, NUL-terminated path and an open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// openat of one name in `dir`, never following a final symlink.
fn open_at(dir: RawFd, name: &OsStr, flags: i32) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and NUL-terminated name.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The target of the symlink an O_PATH descriptor refers to.
fn readlink_fd(fd: RawFd) -> std::io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid fd, empty path (the fd itself) and a buffer of the given size.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

/// A descriptor's path through procfs: reopening it there refers to the same inode,
/// never to whatever its name points at now.
fn fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

/// The filesystem a copy works in: a root descriptor and the path below it.
struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// The overlay this copy mounted (a stopped container), unmounted when done.
    mounted: Option<PathBuf>,
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(dir) = self.mounted.take() {
            let _ = berth_image::unmount_overlay(&dir);
        }
    }
}

/// `path` without `.` and `..` (lexically, for matching mount targets only).
fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn open_root(engine: &Engine, c: &Container, path: &str) -> Result<Root> {
    if !path.starts_with('/') {
        return Err(Error::invalid(
            "container path",
            format!("{path:?} is not absolute"),
        ));
    }
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if c.is_active() && c.pid > 0 {
        let proc_root = PathBuf::from(format!("/proc/{}/root", c.pid));
        // checked after the open: a recorded pid reused by a host process must never
        // make the host's root the copy's root
        if let Ok(fd) = open_path(&proc_root, dir_flags)
            && in_container_cgroup(c)
        {
            return Ok(Root {
                fd,
                path: PathBuf::from(path),
                mounted: None,
            });
        }
    }
    // stopped: a volume or bind whose target holds the path, else the overlay root
    let want = clean(path);
    let mount = c
        .mounts
        .iter()
        .filter(|m| !matches!(m.kind, MountKind::Tmpfs))
        .filter(|m| want.starts_with(clean(&m.target)))
        .max_by_key(|m| clean(&m.target).components().count());
    if let Some(m) = mount {
        let rest = want
            .strip_prefix(clean(&m.target))
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let meta = std::fs::metadata(&m.source).map_err(Error::io("stat", &m.source))?;
        if meta.is_dir() {
            let fd = open_path(&m.source, dir_flags)?;
            return Ok(Root {
                fd,
                path: Path::new("/").join(rest),
                mounted: None,
            });
        }
    }
    let was_mounted = engine.get(&c.id).map(|x| x.is_active()).unwrap_or(false);
    let rootfs = engine.mount_rootfs(c)?;
    let fd = open_path(&rootfs, dir_flags);
    let mounted = (!was_mounted).then(|| engine.container_dir(&c.id));
    let fd = match fd {
        Ok(fd) => fd,
        Err(e) => {
            if let Some(d) = mounted {
                let _ = berth_image::unmount_overlay(&d);
            }
            return Err(e);
        }
    };
    Ok(Root {
        fd,
        path: PathBuf::from(path),
        mounted,
    })
}

/// Whether the recorded pid is still the container's (it sits in its cgroup).
fn in_container_cgroup(c: &Container) -> bool {
    let mark = format!("/berth-{}", c.id);
    std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid))
        .is_ok_and(|s| s.lines().any(|l| l.contains(&mark)))
}

fn open_path(p: &Path, flags: i32) -> Result<OwnedFd> {
    let c = cstr(p.as_os_str()).map_err(Error::io("open", p))?;
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("open", p)(std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn not_found(path: &str, e: std::io::Error) -> Error {
    let detail = match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".to_string(),
        Some(libc::ENOTDIR) => "not a directory".to_string(),
        _ => e.to_string(),
    };
    Error::invalid("container path", format!("{path}: {detail}"))
}

/// The source `path` in the container: its parent resolved in the root, the last
/// component not followed. `None` as name: the path ends in `/.` (copy the contents).
fn open_source(root: &Root, shown: &str) -> Result<(OwnedFd, Option<PathBuf>)> {
    let p = &root.path;
    let contents = shown.ends_with("/.") || shown == ".";
    let (parent, name) = match p.file_name() {
        Some(n) if !contents => (p.parent().unwrap_or(Path::new("/")), Some(n)),
        _ => (p.as_path(), None),
    };
    let dir = open_in_root(
        root.fd.as_raw_fd(),
        parent,
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .map_err(|e| not_found(shown, e))?;
    match name {
        Some(n) => {
            let fd = open_at(dir.as_raw_fd(), n, libc::O_PATH).map_err(|e| not_found(shown, e))?;
            Ok((fd, Some(PathBuf::from(n))))
        }
        None => Ok((dir, None)),
    }
}

/// Writes the tree at `fd` (an O_PATH descriptor) to `b` as `name`, by descriptor.
fn append<W: Write>(b: &mut tar::Builder<W>, fd: &OwnedFd, name: &Path) -> Result<()> {
    let io = |e| Error::io("archive", name)(e);
    let st = fstat(fd.as_raw_fd()).map_err(io)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    if is(&st, libc::S_IFDIR) {
        if !name.as_os_str().is_empty() {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, name, std::io::empty()).map_err(io)?;
        }
        let dir = open_at(
            fd.as_raw_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
        .map_err(io)?;
        let mut names: Vec<_> = std::fs::read_dir(fd_path(dir.as_raw_fd()))
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io)?;
        names.sort();
        for n in names {
            let child = match open_at(dir.as_raw_fd(), &n, libc::O_PATH) {
                Ok(c) => c,
                // removed while we walked
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(io(e)),
            };
            append(b, &child, &name.join(&n))?;
        }
    } else if is(&st, libc::S_IFLNK) {
        let target = readlink_fd(fd.as_raw_fd()).map_err(io)?;
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, name, &target).map_err(io)?;
    } else if is(&st, libc::S_IFREG) {
        let f = File::open(fd_path(fd.as_raw_fd())).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(len);
        b.append_data(&mut h, name, f.take(len)).map_err(io)?;
    } else {
        let kind = if is(&st, libc::S_IFCHR) {
            tar::EntryType::Char
        } else if is(&st, libc::S_IFBLK) {
            tar::EntryType::Block
        } else if is(&st, libc::S_IFIFO) {
            tar::EntryType::Fifo
        } else {
            // sockets have no tar form
            return Ok(());
        };
        h.set_entry_type(kind);
        h.set_device_major(libc::major(st.st_rdev)).map_err(io)?;
        h.set_device_minor(libc::minor(st.st_rdev)).map_err(io)?;
        b.append_data(&mut h, name, std::io::empty()).map_err(io)?;
    }
    Ok(())
}

/// The source `path` of the container opened for archiving, its top entry named
/// `top` (the source's own name when `None`; the contents at the top for `dir/.`).
fn source(
    engine: &Engine,
    c: &Container,
    path: &str,
    top: Option<&Path>,
) -> Result<(Root, OwnedFd, PathBuf)> {
    let root = open_root(engine, c, path)?;
    let (fd, name) = open_source(&root, path)?;
    let name = match (name, top) {
        (None, _) => PathBuf::new(),
        (Some(_), Some(t)) => t.to_path_buf(),
        (Some(n), None) => n,
    };
    Ok((root, fd, name))
}

/// Writes the opened source as a tar stream to `out`.
fn archive(fd: &OwnedFd, name: &Path, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    append(&mut b, fd, name)?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(Error::io("write archive of", name))?;
    Ok(())
}

/// Writes `path` of the container to `out` as a tar stream (`berth cp CTR:PATH -`).
pub fn archive_from_container(
    engine: &Engine,
    c: &Container,
    path: &str,
    out: impl Write,
) -> Result<()> {
    let (_root, fd, name) = source(engine, c, path, None)?;
    archive(&fd, &name, out)
}

/// Copies `path` of the container to `dest` on the host: into `dest` if it is a
/// directory, else as `dest`.
pub fn from_container(engine: &Engine, c: &Container, path: &str, dest: &Path) -> Result<()> {
    let (dir, top) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(Error::invalid(
                "destination",
                format!("{}: parent directory does not exist", dest.display()),
            ));
        }
        let name = dest.file_name().map(PathBuf::from).ok_or_else(|| {
            Error::invalid("destination", format!("{}: no file name", dest.display()))
        })?;
        (parent, Some(name))
    };
    let contents = path.ends_with("/.");
    if contents && !dest.is_dir() {
        std::fs::create_dir(dest).map_err(Error::io("create directory", dest))?;
        return from_container(engine, c, path, dest);
    }
    let (_root, fd, name) = source(engine, c, path, top.as_deref())?;
    let (reader, writer) = std::io::pipe().map_err(Error::io("pipe for", dest))?;
    std::thread::scope(|s| {
        let producer = s.spawn(|| archive(&fd, &name, writer));
        let mut a = tar::Archive::new(reader);
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        let unpacked = a.unpack(&dir).map_err(Error::io("extract into", &dir));
        // a failed extraction closes the pipe, which ends the producer with EPIPE
        drop(a);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("copy", "archive writer panicked")));
        produced.and(unpacked)
    })
}

/// Extracts the tar stream `input` into the directory `path` of the container
/// (`berth cp - CTR:DIR`).
pub fn archive_to_container(
    engine: &Engine,
    c: &Container,
    input: impl Read,
    path: &str,
) -> Result<()> {
    let root = open_root(engine, c, path)?;
    let dir = open_in_root(
        root.fd.as_raw_fd(),
        &root.path,
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .map_err(|e| not_found(path, e))?;
    berth_image::unpack::unpack_layer(
        input,
        &fd_path(dir.as_raw_fd()),
        berth_image::unpack::Whiteouts::Apply,
    )?;
    Ok(())
}

/// Copies `src` on the host to `path` in the container: into `path` if it is a
/// directory there, else as `path` (whose parent must exist).
pub fn to_container(engine: &Engine, c: &Container, src: &Path, path: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(Error::io("stat", src))?;
    let root = open_root(engine, c, path)?;
    let contents = src.ends_with(".") || src.to_string_lossy().ends_with("/.");
    let (dir, name) = match open_in_root(
        root.fd.as_raw_fd(),
        &root.path,
        libc::O_PATH | libc::O_DIRECTORY,
    ) {
        Ok(d) => (d, src.file_name().map(PathBuf::from)),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            let parent = root.path.parent().unwrap_or(Path::new("/"));
            let d = open_in_root(
                root.fd.as_raw_fd(),
                parent,
                libc::O_PATH | libc::O_DIRECTORY,
            )
            .map_err(|_| {
                Error::invalid(
                    "container path",
                    format!("{path}: parent directory does not exist"),
                )
            })?;
            (d, root.path.file_name().map(PathBuf::from))
        }
        Err(e) => return Err(not_found(path, e)),
    };
    let name = if contents { None } else { name };
    if contents && !meta.is_dir() {
        return Err(Error::invalid(
            "source",
            format!("{}: not a directory", src.display()),
        ));
    }
    let (reader, writer) = std::io::pipe().map_err(Error::io("pipe for", src))?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || -> Result<()> {
            let mut b = tar::Builder::new(writer);
            b.follow_symlinks(false);
            let r = match &name {
                Some(n) if meta.is_dir() => b.append_dir_all(n, src),
                Some(n) => b.append_path_with_name(src, n),
                None => b.append_dir_all(".", src),
            };
            r.and_then(|()| b.finish())
                .map_err(Error::io("archive", src))
        });
        let unpacked = berth_image::unpack::unpack_layer(
            reader,
            &fd_path(dir.as_raw_fd()),
            berth_image::unpack::Whiteouts::Apply,
        )
        .map(|_| ())
        .map_err(Error::from);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("copy", "archive reader panicked")));
        unpacked.and(produced)
    })?;
    drop(root);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_lexical() {
        assert_eq!(clean("/a/./b/../c/"), PathBuf::from("/a/c"));
        assert_eq!(clean("/../../x"), PathBuf::from("/x"));
    }

    #[test]
    fn resolution_never_leaves_the_root() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("/inside", root.join("ok")).unwrap();
        let fd = open_path(&root, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        for p in ["/abs/secret", "/rel/secret", "/../outside/secret"] {
            let e = open_in_root(fd.as_raw_fd(), Path::new(p), libc::O_RDONLY).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{p}");
        }
        // absolute links inside the container resolve against its root
        let dir = open_in_root(fd.as_raw_fd(), Path::new("/ok"), libc::O_PATH).unwrap();
        let st = fstat(dir.as_raw_fd()).unwrap();
        let inside = std::fs::metadata(root.join("inside")).unwrap();
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&inside));
    }
}
