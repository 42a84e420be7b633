//! Root filesystem set-up inside the container's mount namespace: mounts from the
//! config, devices, /dev links, pivot_root, masked and read-only paths.

use crate::error::{Error, Result, io, sys};
use crate::sys::{cstr, mount, umount};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxIdMapping, Mount, Spec};
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::{Component, Path, PathBuf};

/// Resolve `unsafe_path` inside `root` the way the container will see it: symlinks are
/// followed but never lead outside `root` (absolute targets are re-rooted, `..` stops at
/// the root). Missing components are kept as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut rest: Vec<PathBuf> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = rest.pop() {
        if c.as_os_str() == ".." {
            cur.pop();
            continue;
        }
        let cand = root.join(&cur).join(&c);
        match std::fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::Sys {
                        what: format!("resolve {} in {}", unsafe_path.display(), root.display()),
                        err: std::io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                let target = std::fs::read_link(&cand)
                    .map_err(io(format!("readlink {}", cand.display())))?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(s) => rest.push(PathBuf::from(s)),
                        Component::ParentDir => rest.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => cur.push(c),
        }
    }
    Ok(root.join(cur))
}

/// The mount target `dst` (from [`secure_join`], so below `root` with every symlink
/// already resolved) opened again by the kernel inside `root` (openat2
/// RESOLVE_IN_ROOT) with no symlink allowed: one the container swaps in after
/// `secure_join` (say, in a volume it shares with another container) fails the open
/// instead of sending the mount out of the root (CVE-2021-30465). Mount on
/// [`fd_path`] of the result.
pub fn pin_in_root(root: &Path, dst: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let what = || format!("open mount target {} in {}", dst.display(), root.display());
    let rel = dst.strip_prefix(root).unwrap_or(dst);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let root_fd = std::fs::File::open(root).map_err(io(what()))?;
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid dirfd, NUL-terminated path and an open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let what = match err.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "{} (a symlink appeared in the path after it was resolved)",
                what()
            ),
            _ => what(),
        };
        return Err(Error::Sys { what, err });
    }
    // SAFETY: the kernel returned a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Creates the mount target `dst` (below `root`, from [`secure_join`]) and its missing
/// parents one component at a time from a descriptor of `root`, never following a
/// symlink (O_NOFOLLOW at each step): a symlink swapped in by the container cannot
/// make the runtime create files or directories on the host (CVE-2024-45310 class).
fn create_in_root(root: &Path, dst: &Path, dir: bool) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let what = || format!("create mount target {}", dst.display());
    let rel = dst.strip_prefix(root).unwrap_or(dst);
    let comps: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut cur: OwnedFd = std::fs::File::open(root).map_err(io(what()))?.into();
    let open_dir = |at: &OwnedFd, name: &std::ffi::CStr| -> Result<OwnedFd> {
        // SAFETY: valid dirfd and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                at.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::Sys {
                what: what(),
                err: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    for (i, c) in comps.iter().enumerate() {
        let name = cstr(Path::new(c))?;
        let last = i + 1 == comps.len();
        if last && !dir {
            // SAFETY: stat is plain data filled by the kernel.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid dirfd, name and buffer; the last link is not followed.
            let r = unsafe {
                libc::fstatat(
                    cur.as_raw_fd(),
                    name.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r == 0 {
                // whatever exists (file, directory, device) is a target, a symlink not
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    return Err(Error::Sys {
                        what: what(),
                        err: std::io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                return Ok(());
            }
            // SAFETY: valid dirfd and name; O_EXCL|O_NOFOLLOW never opens what exists.
            let fd = unsafe {
                libc::openat(
                    cur.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd < 0 {
                return Err(Error::Sys {
                    what: what(),
                    err: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: a new descriptor we own, closed at once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            return Ok(());
        }
        // SAFETY: valid dirfd and name.
        if unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::Sys { what: what(), err });
            }
        }
        if !last {
            cur = open_dir(&cur, &name)?;
        }
    }
    Ok(())
}

/// `/proc/self/fd/N`: mounting there acts on the pinned inode, never re-resolving.
pub fn fd_path(fd: &std::os::fd::OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// (mount id, dev, ino) of a descriptor, to check a re-opened target is the new mount.
fn mount_identity(fd: &std::os::fd::OwnedFd) -> Result<(u64, u64, u64)> {
    use std::os::fd::AsRawFd;
    const STATX_MNT_ID: u32 = 0x1000;
    // SAFETY: statx is plain data filled by the kernel.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, valid buffer.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_MNT_ID | libc::STATX_INO,
            &mut st,
        )
    };
    if r != 0 {
        return Err(Error::Sys {
            what: "statx mount target".into(),
            err: std::io::Error::last_os_error(),
        });
    }
    let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
    Ok((st.stx_mnt_id, dev, st.stx_ino))
}

/// A user namespace holding `uids`/`gids` (for MOUNT_ATTR_IDMAP): a child cloned into
/// a new user namespace, its maps written, its namespace opened, the child killed.
fn mapping_userns(
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
) -> Result<std::os::fd::OwnedFd> {
    let text = |m: &[LinuxIdMapping]| -> String {
        m.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    // The init may already be in the container's pid namespace while /proc is still
    // the host's: the child tells its pid as that /proc sees it (/proc/self).
    let mut pipe = [0; 2];
    // SAFETY: pipe is a valid 2-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("id-mapped mount: pipe"));
    }
    // SAFETY: a fork-like clone; the child only waits to be killed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64,
            0,
            0,
            0,
            0,
        )
    };
    if pid < 0 {
        return Err(sys("id-mapped mount: clone a user namespace"));
    }
    if pid == 0 {
        let mut buf = [0u8; 32];
        // SAFETY: readlink and write on valid buffers, then waiting for SIGKILL.
        unsafe {
            let n = libc::readlink(c"/proc/self".as_ptr(), buf.as_mut_ptr().cast(), buf.len());
            libc::write(pipe[1], buf.as_ptr().cast(), n.max(0) as usize);
            libc::close(pipe[1]);
            loop {
                libc::pause();
            }
        }
    }
    let pid = pid as i32;
    let mut buf = [0u8; 32];
    // SAFETY: closing our write end, reading into a valid buffer.
    let n = unsafe {
        libc::close(pipe[1]);
        let n = libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len());
        libc::close(pipe[0]);
        n
    };
    let proc_pid = std::str::from_utf8(&buf[..n.max(0) as usize])
        .unwrap_or_default()
        .to_string();
    let r = (|| {
        if proc_pid.is_empty() {
            return Err(Error::Init(
                "id-mapped mount: the mapping helper did not start".into(),
            ));
        }
        let pid = &proc_pid;
        crate::sys::write_file(Path::new(&format!("/proc/{pid}/uid_map")), &text(uids))?;
        crate::sys::write_file(Path::new(&format!("/proc/{pid}/gid_map")), &text(gids))?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(io("id-mapped mount: open the mapping user namespace"))?;
        Ok(std::os::fd::OwnedFd::from(f))
    })();
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    r
}

/// Bind `src` on `dst` through an id-mapped detached mount (open_tree +
/// mount_setattr(MOUNT_ATTR_IDMAP) + move_mount).
fn idmapped_bind(
    src: &Path,
    dst: &Path,
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
    recursive: bool,
) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    const MOVE_MOUNT_T_SYMLINKS: libc::c_uint = 0x10;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let ns = mapping_userns(uids, gids)?;
    let c = cstr(src)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid path; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(sys(format!("id-mapped mount: open_tree {}", src.display())));
    }
    // SAFETY: the kernel just gave us this fd.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let mut at = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        at |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: attr is a valid mount_attr of the given size.
    if unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    } != 0
    {
        return Err(sys(format!(
            "id-mapped mount of {} (does its file system support id mapping?)",
            src.display()
        )));
    }
    let d = cstr(dst)?;
    // SAFETY: valid fd and paths.
    if unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            // T_SYMLINKS: dst may be a pinned /proc/self/fd/N target
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS,
        )
    } != 0
    {
        return Err(sys(format!(
            "id-mapped mount: move_mount to {}",
            dst.display()
        )));
    }
    Ok(())
}

/// Propagation option name to mount flags.
pub fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// Parsed mount options: flags to set, propagation changes, and fs-specific data.
#[derive(Debug, Default, PartialEq)]
pub struct MountOpts {
    /// MS_* flags.
    pub flags: libc::c_ulong,
    /// Propagation flags applied after mounting.
    pub propagation: Vec<libc::c_ulong>,
    /// Comma-joined filesystem data.
    pub data: String,
}

/// Parse OCI/fstab mount options.
pub fn parse_options(opts: &[String]) -> MountOpts {
    let mut m = MountOpts::default();
    let mut data = Vec::new();
    for o in opts {
        let (clear, flag) = match o.as_str() {
            "defaults" => (false, 0),
            "ro" => (false, libc::MS_RDONLY),
            "rw" => (true, libc::MS_RDONLY),
            "suid" => (true, libc::MS_NOSUID),
            "nosuid" => (false, libc::MS_NOSUID),
            "dev" => (true, libc::MS_NODEV),
            "nodev" => (false, libc::MS_NODEV),
            "exec" => (true, libc::MS_NOEXEC),
            "noexec" => (false, libc::MS_NOEXEC),
            "sync" => (false, libc::MS_SYNCHRONOUS),
            "async" => (true, libc::MS_SYNCHRONOUS),
            "dirsync" => (false, libc::MS_DIRSYNC),
            "remount" => (false, libc::MS_REMOUNT),
            "mand" => (false, libc::MS_MANDLOCK),
            "nomand" => (true, libc::MS_MANDLOCK),
            "atime" => (true, libc::MS_NOATIME),
            "noatime" => (false, libc::MS_NOATIME),
            "diratime" => (true, libc::MS_NODIRATIME),
            "nodiratime" => (false, libc::MS_NODIRATIME),
            "relatime" => (false, libc::MS_RELATIME),
            "norelatime" => (true, libc::MS_RELATIME),
            "strictatime" => (false, libc::MS_STRICTATIME),
            "nostrictatime" => (true, libc::MS_STRICTATIME),
            "bind" => (false, libc::MS_BIND),
            "rbind" => (false, libc::MS_BIND | libc::MS_REC),
            other => {
                if let Some(p) = propagation_flag(other) {
                    m.propagation.push(p);
                } else {
                    data.push(other);
                }
                continue;
            }
        };
        if clear {
            m.flags &= !flag;
        } else {
            m.flags |= flag;
        }
    }
    m.data = data.join(",");
    m
}

/// Flags of the mount holding `p` that a user namespace locks (they must be repeated
/// on a remount or it fails with EPERM).
fn locked_flags(p: &Path) -> libc::c_ulong {
    let Ok(c) = cstr(p) else { return 0 };
    // SAFETY: statvfs is plain data.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is valid, s is writable.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    let mut f = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if s.f_flag & st != 0 {
            f |= ms;
        }
    }
    f
}

/// Remount a bind mount with `flags`, retrying with the locked flags on EPERM.
fn bind_remount(dst: &Path, flags: libc::c_ulong) -> Result<()> {
    let f = libc::MS_BIND | libc::MS_REMOUNT | flags;
    mount(None, dst, None, f, None)
        .or_else(|e| mount(None, dst, None, f | locked_flags(dst), None).map_err(|_| e))
}

fn mkdir_all(p: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(io(format!("mkdir {}", p.display())))
}

fn touch(p: &Path) -> Result<()> {
    if let Some(d) = p.parent() {
        mkdir_all(d)?;
    }
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
    {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(()),
        Err(e) => Err(io(format!("create {}", p.display()))(e)),
    }
}

/// Context of the rootfs set-up.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The spec.
    pub spec: &'a Spec,
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// Absolute bundle path (relative bind sources are resolved against it).
    pub bundle: &'a Path,
    /// A new user namespace (devices are bind-mounted, not created).
    pub userns: bool,
    /// A new cgroup namespace.
    pub cgroupns: bool,
    /// A new network namespace (sysfs can be mounted fresh).
    pub netns: bool,
    /// `--no-pivot`.
    pub no_pivot: bool,
}

impl Setup<'_> {
    /// Everything before pivot_root: propagation, the rootfs bind, config mounts,
    /// devices and links.
    pub fn prepare(&self) -> Result<()> {
        let linux = self.spec.linux().as_ref();
        let prop = linux
            .and_then(|l| l.rootfs_propagation().as_deref())
            .and_then(propagation_flag)
            .unwrap_or(libc::MS_SLAVE | libc::MS_REC);
        // As runc: the flag as given ("slave" is not recursive, "rslave" is).
        mount(None, Path::new("/"), None, prop, None)?;
        // pivot_root refuses a new root whose parent mount is shared.
        self.make_parent_private()?;
        mount(
            Some(self.rootfs),
            self.rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
        let mut dev_bound = false;
        for m in self.spec.mounts().iter().flatten() {
            if m.destination() == Path::new("/dev")
                && m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind")
            {
                dev_bound = true;
            }
            self.mount_one(m)?;
        }
        if !dev_bound {
            self.devices()?;
            self.dev_links()?;
        }
        Ok(())
    }

    fn make_parent_private(&self) -> Result<()> {
        // Find the mount point holding the rootfs and make it private.
        let mi = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io("read /proc/self/mountinfo"))?;
        let mut best: Option<(&str, bool)> = None;
        for line in mi.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 7 {
                continue;
            }
            let mp = f[4];
            if self.rootfs.starts_with(mp) && best.is_none_or(|(b, _)| mp.len() >= b.len()) {
                let shared = f[6..]
                    .iter()
                    .take_while(|x| **x != "-")
                    .any(|x| x.starts_with("shared:"));
                best = Some((mp, shared));
            }
        }
        if let Some((mp, true)) = best {
            mount(None, Path::new(mp), None, libc::MS_PRIVATE, None)?;
        }
        Ok(())
    }

    /// The id mappings of an id-mapped bind mount: its own, or with just the
    /// `idmap`/`ridmap` option those of the container's user namespace.
    fn idmap_of(&self, m: &Mount) -> Result<Option<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>)>> {
        let opt = m
            .options()
            .iter()
            .flatten()
            .any(|o| o == "idmap" || o == "ridmap");
        let own = (m.uid_mappings().clone(), m.gid_mappings().clone());
        let linux = self.spec.linux().as_ref();
        let (u, g) = match own {
            (Some(u), Some(g)) => (u, g),
            (None, None) if opt => (
                linux
                    .and_then(|l| l.uid_mappings().clone())
                    .unwrap_or_default(),
                linux
                    .and_then(|l| l.gid_mappings().clone())
                    .unwrap_or_default(),
            ),
            (None, None) => return Ok(None),
            _ => {
                return Err(Error::Config {
                    path: "config.json".into(),
                    field: "mounts[].uidMappings".into(),
                    msg: format!(
                        "id-mapped mount on {:?} needs both uidMappings and gidMappings",
                        m.destination()
                    ),
                });
            }
        };
        if u.is_empty() || g.is_empty() {
            return Err(Error::Config {
                path: "config.json".into(),
                field: "mounts[].uidMappings".into(),
                msg: format!(
                    "id-mapped mount on {:?} has no mappings (and the container no user namespace mappings)",
                    m.destination()
                ),
            });
        }
        Ok(Some((u, g)))
    }

    fn mount_one(&self, m: &Mount) -> Result<()> {
        let dst = secure_join(self.rootfs, m.destination())?;
        let typ = m.typ().as_deref().unwrap_or("");
        let opts = parse_options(m.options().as_deref().unwrap_or_default());
        let is_bind = typ == "bind" || opts.flags & libc::MS_BIND != 0;
        if is_bind {
            let src = m.source().as_deref().ok_or_else(|| Error::Config {
                path: "config.json".into(),
                field: "mounts[].source".into(),
                msg: format!("bind mount on {:?} has no source", m.destination()),
            })?;
            let src = if src.is_absolute() {
                src.to_path_buf()
            } else {
                self.bundle.join(src)
            };
            let meta = std::fs::metadata(&src)
                .map_err(io(format!("stat bind source {}", src.display())))?;
            create_in_root(self.rootfs, &dst, meta.is_dir())?;
            let pin = pin_in_root(self.rootfs, &dst)?;
            let at = fd_path(&pin);
            let rec = opts.flags & libc::MS_REC;
            match self.idmap_of(m)? {
                Some((uids, gids)) => {
                    let recursive = rec != 0 || m.options().iter().flatten().any(|o| o == "ridmap");
                    idmapped_bind(&src, &at, &uids, &gids, recursive)?;
                }
                None => mount(Some(&src), &at, None, libc::MS_BIND | rec, None)?,
            }
            // the pinned fd stays below the new mount: re-open the target and make sure
            // it is the bind just made (a new mount showing the source's inode)
            let top = pin_in_root(self.rootfs, &dst)?;
            let (below, (mnt, dev, ino)) = (mount_identity(&pin)?, mount_identity(&top)?);
            use std::os::unix::fs::MetadataExt;
            if mnt == below.0 || (dev, ino) != (meta.dev(), meta.ino()) {
                return Err(Error::Config {
                    path: "config.json".into(),
                    field: "mounts[].destination".into(),
                    msg: format!(
                        "mount target {:?} changed while it was mounted (a symlink swapped in the container)",
                        m.destination()
                    ),
                });
            }
            let rest = opts.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
            if rest != 0 {
                bind_remount(&fd_path(&top), rest)?;
            }
            for p in &opts.propagation {
                mount(None, &fd_path(&top), None, *p, None)?;
            }
            return Ok(());
        } else if typ == "cgroup" || typ == "cgroup2" {
            mkdir_all(&dst)?;
            self.mount_cgroup(&dst, &opts)?;
        } else {
            create_in_root(self.rootfs, &dst, true)?;
            let pin = pin_in_root(self.rootfs, &dst)?;
            let at = fd_path(&pin);
            let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
            let r = mount(Some(&src), &at, Some(typ), opts.flags, Some(&opts.data));
            match r {
                Err(Error::Sys {
                    err: ref source, ..
                }) if typ == "sysfs" && source.raw_os_error() == Some(libc::EPERM) => {
                    // No own network namespace: the kernel refuses a fresh sysfs; bind
                    // the host's like runc does.
                    mount(
                        Some(Path::new("/sys")),
                        &at,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )?;
                    bind_remount(&fd_path(&pin_in_root(self.rootfs, &dst)?), opts.flags)?;
                }
                Err(Error::Sys {
                    err: ref source, ..
                }) if typ == "mqueue" && source.raw_os_error() == Some(libc::EPERM) => {
                    mount(
                        Some(Path::new("/dev/mqueue")),
                        &at,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )?;
                }
                r => r?,
            }
        }
        if !opts.propagation.is_empty() {
            let top = pin_in_root(self.rootfs, &dst)?;
            for p in &opts.propagation {
                mount(None, &fd_path(&top), None, *p, None)?;
            }
        }
        Ok(())
    }

    /// `cgroup` mount: a fresh cgroup2 on pure-v2 hosts with a cgroup namespace;
    /// otherwise a tmpfs holding binds of this process's cgroup in every hierarchy
    /// (what runc does on v1 and hybrid hosts).
    fn mount_cgroup(&self, dst: &Path, opts: &MountOpts) -> Result<()> {
        let flags = opts.flags
            & (libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_RDONLY
                | libc::MS_RELATIME);
        let mi = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io("read /proc/self/mountinfo"))?;
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(io("read /proc/self/cgroup"))?;
        let cg_mounts: Vec<(String, String, String, String)> = mi
            .lines()
            .filter_map(|l| {
                let (a, b) = l.split_once(" - ")?;
                let f: Vec<&str> = a.split(' ').collect();
                let g: Vec<&str> = b.split(' ').collect();
                if f.len() < 5 || g.len() < 3 || !g[0].starts_with("cgroup") {
                    return None;
                }
                // (fstype, mount root, mount point, super options)
                Some((g[0].into(), f[3].into(), f[4].into(), g[2].into()))
            })
            .filter(|(_, _, mp, _): &(String, String, String, String)| {
                mp.starts_with("/sys/fs/cgroup")
            })
            .collect();
        if cg_mounts.len() == 1 && cg_mounts[0].0 == "cgroup2" && cg_mounts[0].2 == "/sys/fs/cgroup"
        {
            if self.cgroupns {
                return mount(
                    Some(Path::new("cgroup2")),
                    dst,
                    Some("cgroup2"),
                    flags,
                    None,
                );
            }
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            let src = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            mount(Some(&src), dst, None, libc::MS_BIND | libc::MS_REC, None)?;
            return bind_remount(dst, flags);
        }
        mount(
            Some(Path::new("tmpfs")),
            dst,
            Some("tmpfs"),
            flags & !libc::MS_RDONLY,
            Some("mode=755"),
        )?;
        for (fstype, mroot, mp, sopts) in &cg_mounts {
            let name = Path::new(mp)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default();
            if name.as_os_str().is_empty() {
                continue;
            }
            // Our path in this hierarchy from /proc/self/cgroup.
            let key = if fstype == "cgroup2" {
                String::new()
            } else {
                sopts
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro")
                            && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "xattr"
                            && *o != "noprefix"
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let path = own
                .lines()
                .find_map(|l| {
                    let mut it = l.splitn(3, ':');
                    let _ = it.next();
                    let ctl = it.next()?;
                    let p = it.next()?;
                    let ctl = ctl
                        .strip_prefix("name=")
                        .map_or(ctl.to_string(), |n| format!("name={n}"));
                    let want = key.split(',').collect::<std::collections::BTreeSet<_>>();
                    let have = ctl.split(',').collect::<std::collections::BTreeSet<_>>();
                    (want == have).then(|| p.to_string())
                })
                .unwrap_or_else(|| "/".into());
            let rel = Path::new(&path)
                .strip_prefix(mroot.as_str())
                .unwrap_or(Path::new(""));
            let src = Path::new(mp).join(rel);
            let d = dst.join(&name);
            mkdir_all(&d)?;
            mount(Some(&src), &d, None, libc::MS_BIND | libc::MS_REC, None)?;
            bind_remount(&d, flags)?;
        }
        // Comount links such as cpu -> cpu,cpuacct.
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_symlink())
                    && let Ok(t) = std::fs::read_link(e.path())
                {
                    let _ = symlink(t, dst.join(e.file_name()));
                }
            }
        }
        if flags & libc::MS_RDONLY != 0 {
            mount(None, dst, None, libc::MS_REMOUNT | flags, Some("mode=755"))?;
        }
        Ok(())
    }

    fn devices(&self) -> Result<()> {
        let defaults: [(&str, u64, u64, LinuxDeviceType); 6] = [
            ("/dev/null", 1, 3, LinuxDeviceType::C),
            ("/dev/zero", 1, 5, LinuxDeviceType::C),
            ("/dev/full", 1, 7, LinuxDeviceType::C),
            ("/dev/random", 1, 8, LinuxDeviceType::C),
            ("/dev/urandom", 1, 9, LinuxDeviceType::C),
            ("/dev/tty", 5, 0, LinuxDeviceType::C),
        ];
        let cfg: &[LinuxDevice] = self
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        let dev = secure_join(self.rootfs, Path::new("/dev"))?;
        mkdir_all(&dev)?;
        // SAFETY: umask only changes this process's mask.
        let old = unsafe { libc::umask(0) };
        let r = (|| {
            for (p, maj, min, t) in defaults {
                if cfg.iter().any(|d| d.path() == Path::new(p)) {
                    continue;
                }
                self.make_dev(Path::new(p), t, maj, min, 0o666, 0, 0)?;
            }
            for d in cfg {
                self.make_dev(
                    d.path(),
                    d.typ(),
                    d.major() as u64,
                    d.minor() as u64,
                    d.file_mode().unwrap_or(0o666),
                    d.uid().unwrap_or(0),
                    d.gid().unwrap_or(0),
                )?;
            }
            Ok(())
        })();
        // SAFETY: restoring the mask.
        unsafe { libc::umask(old) };
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn make_dev(
        &self,
        p: &Path,
        t: LinuxDeviceType,
        maj: u64,
        min: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let dst = secure_join(self.rootfs, p)?;
        if let Some(d) = dst.parent() {
            mkdir_all(d)?;
        }
        if self.userns {
            // mknod is not allowed in a user namespace: bind the host node.
            touch(&dst)?;
            return mount(Some(p), &dst, None, libc::MS_BIND, None);
        }
        let kind = match t {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Config {
                    path: "config.json".into(),
                    field: "linux.devices[].type".into(),
                    msg: format!("type 'a' is not a device node ({})", p.display()),
                });
            }
        };
        let c = cstr(&dst)?;
        let _ = std::fs::remove_file(&dst);
        // SAFETY: c is a valid path.
        if unsafe {
            libc::mknod(
                c.as_ptr(),
                kind | (mode & 0o7777),
                libc::makedev(maj as u32, min as u32),
            )
        } != 0
        {
            return Err(sys(format!("mknod {}", dst.display())));
        }
        // SAFETY: c is a valid path.
        if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
            return Err(sys(format!("chown {}", dst.display())));
        }
        Ok(())
    }

    fn dev_links(&self) -> Result<()> {
        let dev = self.rootfs.join("dev");
        let mut links = vec![
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ];
        if Path::new("/proc/kcore").exists() {
            links.push(("/proc/kcore", "core"));
        }
        if dev.join("pts").is_dir() {
            links.push(("pts/ptmx", "ptmx"));
        }
        for (t, n) in links {
            let p = dev.join(n);
            if n == "ptmx" {
                let _ = std::fs::remove_file(&p);
            }
            match symlink(t, &p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(format!("symlink {}", p.display()))(e)),
            }
        }
        Ok(())
    }

    /// Switch root: pivot_root (or move + chroot with `--no-pivot`).
    pub fn switch_root(&self) -> Result<()> {
        let c = cstr(self.rootfs)?;
        // SAFETY: valid path.
        if unsafe { libc::chdir(c.as_ptr()) } != 0 {
            return Err(sys(format!("chdir {}", self.rootfs.display())));
        }
        if self.no_pivot {
            mount(Some(self.rootfs), Path::new("/"), None, libc::MS_MOVE, None)?;
            let dot = cstr(".")?;
            // SAFETY: valid path.
            if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
                return Err(sys("chroot"));
            }
        } else {
            // SAFETY: opening "/" read-only as a directory.
            let old = unsafe {
                libc::open(
                    c"/".as_ptr(),
                    libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if old < 0 {
                return Err(sys("open /"));
            }
            // SAFETY: pivot_root(".", ".") stacks the old root under the new one.
            if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
                return Err(sys(format!("pivot_root {}", self.rootfs.display())));
            }
            // SAFETY: old is a valid fd.
            unsafe { libc::fchdir(old) };
            // Keep the unmount from propagating to the host.
            mount(
                None,
                Path::new("."),
                None,
                libc::MS_SLAVE | libc::MS_REC,
                None,
            )?;
            umount(Path::new("."), libc::MNT_DETACH)?;
            // SAFETY: old is ours.
            unsafe { libc::close(old) };
        }
        // SAFETY: valid path.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(sys("chdir /"));
        }
        Ok(())
    }

    /// After the switch: masked and read-only paths, read-only root, propagation.
    pub fn finish(&self) -> Result<()> {
        let Some(linux) = self.spec.linux() else {
            return Ok(());
        };
        for p in linux.masked_paths().iter().flatten() {
            let path = Path::new(p);
            match std::fs::metadata(path) {
                Err(_) => continue,
                Ok(m) if m.is_dir() => mount(
                    Some(Path::new("tmpfs")),
                    path,
                    Some("tmpfs"),
                    libc::MS_RDONLY,
                    None,
                )?,
                Ok(_) => mount(
                    Some(Path::new("/dev/null")),
                    path,
                    None,
                    libc::MS_BIND,
                    None,
                )?,
            }
        }
        for p in linux.readonly_paths().iter().flatten() {
            let path = Path::new(p);
            if std::fs::symlink_metadata(path).is_err() {
                continue;
            }
            mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)?;
            bind_remount(path, libc::MS_RDONLY | libc::MS_REC)?;
        }
        if self
            .spec
            .root()
            .as_ref()
            .is_some_and(|r| r.readonly() == Some(true))
        {
            bind_remount(Path::new("/"), libc::MS_RDONLY)?;
        }
        if let Some(p) = linux
            .rootfs_propagation()
            .as_deref()
            .and_then(propagation_flag)
        {
            mount(None, Path::new("/"), None, p, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "rw".into(),
            "mode=755".into(),
            "size=1m".into(),
            "rprivate".into(),
        ]);
        assert_eq!(o.flags, libc::MS_NOSUID);
        assert_eq!(o.data, "mode=755,size=1m");
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
    }

    #[test]
    fn join_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        symlink("/etc", d.path().join("a/abs")).unwrap();
        symlink("../../../..", d.path().join("a/up")).unwrap();
        assert_eq!(
            secure_join(d.path(), Path::new("/a/abs/passwd")).unwrap(),
            d.path().join("etc/passwd")
        );
        assert_eq!(
            secure_join(d.path(), Path::new("/a/up/x")).unwrap(),
            d.path().join("x")
        );
        assert_eq!(
            secure_join(d.path(), Path::new("/../../x")).unwrap(),
            d.path().join("x")
        );
    }
}
