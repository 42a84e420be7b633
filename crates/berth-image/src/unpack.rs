//! Safe layer extraction.
//!
//! Every entry is created relative to a directory fd opened under the target, walking
//! parent components one at a time with `O_NOFOLLOW`: a symlink met on the way is
//! followed only when it stays inside the target (relative, never above the root), so
//! no entry can write outside. `..`, absolute paths and hardlinks leaving the target are
//! refused with an error naming the entry.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::sys;
use crate::{Compression, Digest, Error, Result};

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs does: `.wh.x` becomes a 0/0 character device `x`,
    /// `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. For
    /// unpacking one layer into its own snapshot.
    Overlay,
    /// Apply them: delete what they hide from the target. For flattening layers into
    /// one directory.
    Apply,
}

/// What an unpack did.
#[derive(Debug, Clone)]
pub struct UnpackStats {
    /// Digest of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: Digest,
    /// Entries applied.
    pub entries: u64,
    /// Uncompressed bytes read.
    pub bytes: u64,
}

/// Wraps `reader` in the right decompressor; with `compression` `None` the first bytes
/// are sniffed.
pub fn decompress<'a, R: Read + 'a>(
    reader: R,
    compression: Option<Compression>,
) -> Result<Box<dyn Read + 'a>> {
    let mut reader = io::BufReader::with_capacity(1 << 20, reader);
    let c = match compression {
        Some(c) => c,
        None => {
            let head =
                io::BufRead::fill_buf(&mut reader).map_err(Error::io("read layer", "<stream>"))?;
            Compression::sniff(head)
        }
    };
    Ok(match c {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(Error::io("start zstd decoder", "<stream>"))?,
        ),
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks an uncompressed tar stream into `target` (which must exist).
pub fn unpack_layer<R: Read>(
    reader: R,
    target: &Path,
    whiteouts: Whiteouts,
) -> Result<UnpackStats> {
    let root = File::open(target).map_err(Error::io("open unpack target", target))?;
    let mut u = Unpacker {
        root: root.into(),
        whiteouts,
        cache: None,
        dirs: Vec::new(),
        written: HashSet::new(),
        is_root: sys::is_root(),
        buf: vec![0u8; 256 * 1024],
    };
    let hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut archive = tar::Archive::new(hashing);
    let mut entries = 0u64;
    {
        let iter = archive.entries().map_err(Error::io("read layer", target))?;
        for entry in iter {
            let mut entry = entry.map_err(|e| Error::Entry {
                entry: "<tar header>".into(),
                op: "read",
                source: e,
            })?;
            u.apply(&mut entry)?;
            entries += 1;
        }
    }
    // directory times last: creating children changes them
    for (comps, mtime) in std::mem::take(&mut u.dirs).into_iter().rev() {
        let name = comps.join(OsStr::new("/"));
        let entry = name.to_string_lossy().into_owned();
        if let Some((last, parent)) = comps.split_last() {
            let pfd = u.open_parent(parent, &entry, false)?;
            let c = sys::cstr(last).map_err(entry_err(&entry, "name"))?;
            sys::set_times_at(pfd.as_raw_fd(), &c, mtime)
                .map_err(entry_err(&entry, "set times"))?;
        }
    }
    let mut hashing = archive.into_inner();
    // the tail (end-of-archive blocks, padding) belongs to the diff ID too
    io::copy(&mut hashing, &mut io::sink()).map_err(Error::io("read layer", target))?;
    Ok(UnpackStats {
        diff_id: Digest::from_sha256(hashing.hasher.finalize().into()),
        entries,
        bytes: hashing.count,
    })
}

fn entry_err(entry: &str, op: &'static str) -> impl FnOnce(io::Error) -> Error {
    let entry = entry.to_string();
    move |source| Error::Entry { entry, op, source }
}

fn refuse(entry: &str, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Splits an archive path into components, refusing absolute paths and `..`.
fn components(raw: &[u8], entry: &str, what: &str) -> Result<Vec<OsString>> {
    if raw.starts_with(b"/") {
        return Err(refuse(entry, format!("{what} is an absolute path")));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse(entry, format!("{what} contains \"..\""))),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

struct Unpacker {
    root: OwnedFd,
    whiteouts: Whiteouts,
    /// Last resolved parent directory: tar lists siblings together.
    cache: Option<(Vec<OsString>, OwnedFd)>,
    dirs: Vec<(Vec<OsString>, i64)>,
    written: HashSet<Vec<OsString>>,
    is_root: bool,
    buf: Vec<u8>,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker {
    fn reopen(&self, stack: &[OsString], entry: &str) -> Result<OwnedFd> {
        let mut cur = self
            .root
            .try_clone()
            .map_err(entry_err(entry, "dup root fd"))?;
        for c in stack {
            let name = sys::cstr(c).map_err(entry_err(entry, "name"))?;
            cur = sys::open_dir_at(cur.as_raw_fd(), &name)
                .map_err(entry_err(entry, "open parent directory"))?;
        }
        Ok(cur)
    }

    /// Opens the directory `comps` under the root, creating missing directories when
    /// `create`, following only symlinks that stay inside the root.
    fn open_parent(&mut self, comps: &[OsString], entry: &str, create: bool) -> Result<OwnedFd> {
        if let Some((p, fd)) = &self.cache
            && p.as_slice() == comps
        {
            return fd.try_clone().map_err(entry_err(entry, "dup fd"));
        }
        let mut stack: Vec<OsString> = Vec::new();
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut cur = self
            .root
            .try_clone()
            .map_err(entry_err(entry, "dup root fd"))?;
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c.as_bytes() == b"." || c.is_empty() {
                continue;
            }
            if c.as_bytes() == b".." {
                if stack.pop().is_none() {
                    return Err(refuse(
                        entry,
                        "a symlink in its path leads outside the root",
                    ));
                }
                cur = self.reopen(&stack, entry)?;
                continue;
            }
            let name = sys::cstr(&c).map_err(entry_err(entry, "name"))?;
            match sys::lstatat(cur.as_raw_fd(), &name).map_err(entry_err(entry, "stat parent"))? {
                None if create => {
                    sys::mkdirat(cur.as_raw_fd(), &name, 0o755)
                        .map_err(entry_err(entry, "create parent directory"))?;
                }
                None => {
                    return Err(Error::Entry {
                        entry: entry.to_string(),
                        op: "resolve",
                        source: io::Error::from_raw_os_error(libc::ENOENT),
                    });
                }
                Some(st) if sys::is_type(&st, libc::S_IFDIR) => {}
                Some(st) if sys::is_type(&st, libc::S_IFLNK) => {
                    links += 1;
                    if links > 40 {
                        return Err(refuse(entry, "too many symlinks in its path"));
                    }
                    let target = sys::readlinkat(cur.as_raw_fd(), &name)
                        .map_err(entry_err(entry, "read symlink"))?;
                    if target.starts_with(b"/") {
                        return Err(refuse(
                            entry,
                            format!(
                                "its path goes through symlink {:?} -> {:?} which leaves the root",
                                c,
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        queue.push_front(OsStr::from_bytes(t).to_os_string());
                    }
                    continue;
                }
                Some(_) => {
                    return Err(Error::Entry {
                        entry: entry.to_string(),
                        op: "resolve",
                        source: io::Error::from_raw_os_error(libc::ENOTDIR),
                    });
                }
            }
            cur = sys::open_dir_at(cur.as_raw_fd(), &name)
                .map_err(entry_err(entry, "open parent directory"))?;
            stack.push(c);
        }
        if create {
            let dup = cur.try_clone().map_err(entry_err(entry, "dup fd"))?;
            self.cache = Some((comps.to_vec(), dup));
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `dir` (a directory recursively).
    fn remove_existing(&mut self, dir: RawFd, name: &CStr, entry: &str) -> Result<bool> {
        let Some(st) = sys::lstatat(dir, name).map_err(entry_err(entry, "stat"))? else {
            return Ok(false);
        };
        if sys::is_type(&st, libc::S_IFDIR) {
            // std's remove_dir_all never follows symlinks inside the tree
            let path = format!("/proc/self/fd/{dir}/{}", name.to_string_lossy());
            std::fs::remove_dir_all(&path)
                .map_err(entry_err(entry, "remove existing directory"))?;
            self.cache = None;
        } else {
            sys::unlinkat(dir, name, 0).map_err(entry_err(entry, "remove existing entry"))?;
        }
        Ok(true)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let name_str = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = components(&raw_path, &name_str, "path")?;
        let mut meta = Meta {
            mode: entry.header().mode().unwrap_or(0o644) & 0o7777,
            uid: entry.header().uid().unwrap_or(0) as u32,
            gid: entry.header().gid().unwrap_or(0) as u32,
            mtime: entry.header().mtime().unwrap_or(0) as i64,
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(entry_err(&name_str, "read pax header"))?
        {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                let num = || {
                    ext.value()
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    "uid" => meta.uid = num().unwrap_or(meta.uid as i64) as u32,
                    "gid" => meta.gid = num().unwrap_or(meta.gid as i64) as u32,
                    "mtime" => meta.mtime = num().unwrap_or(meta.mtime),
                    k if k.starts_with("SCHILY.xattr.") => {
                        let xname = &k["SCHILY.xattr.".len()..];
                        // overlay's own attributes in a layer would change what the
                        // mount shows; they are never legitimate layer content
                        if xname.starts_with("trusted.overlay.") {
                            continue;
                        }
                        if let Ok(c) = CString::new(xname) {
                            meta.xattrs.push((c, ext.value_bytes().to_vec()));
                        }
                    }
                    _ => {}
                }
            }
        }
        let Some((last, parent)) = comps.split_last() else {
            // the root itself ("./"): its metadata is the snapshot's business
            return Ok(());
        };
        let kind = entry.header().entry_type();
        let pfd = self.open_parent(parent, &name_str, true)?;
        let dir = pfd.as_raw_fd();
        let last_bytes = last.as_bytes();

        if last_bytes == b".wh..wh..opq" {
            match self.whiteouts {
                Whiteouts::Overlay => sys::fsetxattr(dir, c"trusted.overlay.opaque", b"y")
                    .map_err(entry_err(&name_str, "mark opaque"))?,
                Whiteouts::Apply => self.clear_dir(&pfd, parent, &name_str)?,
            }
            return Ok(());
        }
        if let Some(hidden) = last_bytes.strip_prefix(b".wh.") {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(refuse(&name_str, "whiteout of \".\" or \"..\""));
            }
            let hidden = CString::new(hidden).map_err(|_| refuse(&name_str, "nul in name"))?;
            self.remove_existing(dir, &hidden, &name_str)?;
            if self.whiteouts == Whiteouts::Overlay {
                sys::mknodat(dir, &hidden, libc::S_IFCHR, 0)
                    .map_err(entry_err(&name_str, "create whiteout"))?;
            }
            return Ok(());
        }

        let name = sys::cstr(last).map_err(entry_err(&name_str, "name"))?;
        self.written.insert(comps.clone());
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let existing = sys::lstatat(dir, &name).map_err(entry_err(&name_str, "stat"))?;
                if !existing
                    .as_ref()
                    .is_some_and(|st| sys::is_type(st, libc::S_IFDIR))
                {
                    self.remove_existing(dir, &name, &name_str)?;
                    sys::mkdirat(dir, &name, 0o700)
                        .map_err(entry_err(&name_str, "create directory"))?;
                }
                let fd =
                    sys::open_dir_at(dir, &name).map_err(entry_err(&name_str, "open directory"))?;
                self.set_meta_fd(&fd, &meta, &name_str)?;
                self.dirs.push((comps, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.remove_existing(dir, &name, &name_str)?;
                let fd = sys::openat(
                    dir,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(entry_err(&name_str, "create file"))?;
                let mut file = File::from(fd);
                loop {
                    let n = entry
                        .read(&mut self.buf)
                        .map_err(entry_err(&name_str, "read data"))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n])
                        .map_err(entry_err(&name_str, "write data"))?;
                }
                let fd = OwnedFd::from(file);
                self.set_meta_fd(&fd, &meta, &name_str)?;
                sys::futimes(&fd, meta.mtime).map_err(entry_err(&name_str, "set times"))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name_str, "symlink without target"))?;
                let target = CString::new(target.into_owned())
                    .map_err(|_| refuse(&name_str, "nul in target"))?;
                self.remove_existing(dir, &name, &name_str)?;
                sys::symlinkat(&target, dir, &name)
                    .map_err(entry_err(&name_str, "create symlink"))?;
                self.chown_at(dir, &name, &meta, &name_str)?;
                sys::set_times_at(dir, &name, meta.mtime)
                    .map_err(entry_err(&name_str, "set times"))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name_str, "hardlink without target"))?;
                let tcomps = components(&target, &name_str, "hardlink target")?;
                let Some((tlast, tparent)) = tcomps.split_last() else {
                    return Err(refuse(&name_str, "hardlink to the root"));
                };
                let tfd = self.open_parent(tparent, &name_str, false)?;
                let tname = sys::cstr(tlast).map_err(entry_err(&name_str, "name"))?;
                self.remove_existing(dir, &name, &name_str)?;
                // the parent fd may have been replaced by remove_existing's cache reset,
                // but dir is still the directory we resolved
                sys::linkat(tfd.as_raw_fd(), &tname, dir, &name)
                    .map_err(entry_err(&name_str, "create hardlink"))?;
            }
            T::Char | T::Block | T::Fifo => {
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                self.remove_existing(dir, &name, &name_str)?;
                sys::mknodat(dir, &name, fmt | meta.mode, libc::makedev(major, minor))
                    .map_err(entry_err(&name_str, "create device node"))?;
                self.chown_at(dir, &name, &meta, &name_str)?;
                sys::fchmodat(dir, &name, meta.mode).map_err(entry_err(&name_str, "chmod"))?;
                sys::set_times_at(dir, &name, meta.mtime)
                    .map_err(entry_err(&name_str, "set times"))?;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                tracing::warn!(entry = %name_str, kind = ?other, "skipping unsupported tar entry type");
            }
        }
        Ok(())
    }

    fn chown_at(&self, dir: RawFd, name: &CStr, meta: &Meta, entry: &str) -> Result<()> {
        match sys::fchownat(dir, name, meta.uid, meta.gid) {
            Ok(()) => Ok(()),
            Err(_) if !self.is_root => Ok(()),
            Err(e) => Err(entry_err(entry, "chown")(e)),
        }
    }

    fn set_meta_fd(&self, fd: &OwnedFd, meta: &Meta, entry: &str) -> Result<()> {
        match sys::fchown(fd, meta.uid, meta.gid) {
            Ok(()) => {}
            // unprivileged unpack (tests, rootless): keep our own ownership
            Err(_) if !self.is_root => {}
            Err(e) => return Err(entry_err(entry, "chown")(e)),
        }
        // after chown: chown clears setuid/setgid bits
        sys::fchmod(fd, meta.mode).map_err(entry_err(entry, "chmod"))?;
        for (k, v) in &meta.xattrs {
            if let Err(e) = sys::fsetxattr(fd.as_raw_fd(), k, v) {
                tracing::warn!(entry, xattr = ?k, error = %e, "cannot set xattr");
            }
        }
        Ok(())
    }

    /// Opaque directory when applying: drop what lower layers put there.
    fn clear_dir(&mut self, pfd: &OwnedFd, parent: &[OsString], entry: &str) -> Result<()> {
        let path = format!("/proc/self/fd/{}", pfd.as_raw_fd());
        let rd = std::fs::read_dir(&path).map_err(entry_err(entry, "list opaque directory"))?;
        for child in rd {
            let child = child.map_err(entry_err(entry, "list opaque directory"))?;
            let mut key = parent.to_vec();
            key.push(child.file_name());
            if self.written.contains(&key) {
                continue;
            }
            let c = sys::cstr(&child.file_name()).map_err(entry_err(entry, "name"))?;
            self.remove_existing(pfd.as_raw_fd(), &c, entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &[u8], data: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &[u8], target: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    fn hostile(build: impl FnOnce(&mut tar::Builder<Vec<u8>>), needle: &str) {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("a/b/target");
        std::fs::create_dir_all(&target).unwrap();
        let tar = tar_with(build);
        let err = unpack_layer(&tar[..], &target, Whiteouts::Overlay).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        assert!(
            err.to_string().contains(needle),
            "{err} should name {needle}"
        );
        // nothing outside the target
        let mut seen = Vec::new();
        for e in walk(base.path()) {
            if !e.starts_with(&target) {
                seen.push(e);
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![base.path().join("a"), base.path().join("a/b")],
            "something was written outside the target"
        );
    }

    fn walk(p: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }

    #[test]
    fn refuses_dotdot() {
        hostile(|b| file(b, b"../x", b"evil"), "../x");
        hostile(|b| file(b, b"ok/../../x", b"evil"), "ok/../../x");
    }

    #[test]
    fn refuses_absolute() {
        hostile(|b| file(b, b"/etc/x", b"evil"), "/etc/x");
    }

    #[test]
    fn refuses_symlink_escape() {
        hostile(
            |b| {
                link(b, tar::EntryType::Symlink, b"a", b"/");
                file(b, b"a/etc/passwd", b"evil");
            },
            "a/etc/passwd",
        );
        hostile(
            |b| {
                link(b, tar::EntryType::Symlink, b"up", b"../..");
                file(b, b"up/x", b"evil");
            },
            "up/x",
        );
    }

    #[test]
    fn refuses_dot_whiteouts() {
        hostile(|b| file(b, b"x/.wh...", b""), ".wh...");
        hostile(|b| file(b, b".wh..", b""), ".wh..");
    }

    #[test]
    fn refuses_hardlink_escape() {
        hostile(
            |b| link(b, tar::EntryType::Link, b"h", b"../../outside"),
            "h",
        );
    }

    #[test]
    fn follows_inner_symlinks_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(|b| {
            file(b, b"usr/lib/f", b"one");
            link(b, tar::EntryType::Symlink, b"lib", b"usr/lib");
            file(b, b"lib/g", b"two");
            link(b, tar::EntryType::Link, b"usr/h", b"usr/lib/f");
            link(b, tar::EntryType::Symlink, b"abs", b"/etc/passwd");
        });
        let stats = unpack_layer(&tar[..], dir.path(), Whiteouts::Overlay).unwrap();
        assert_eq!(stats.diff_id, Digest::of(&tar));
        assert_eq!(std::fs::read(dir.path().join("usr/lib/g")).unwrap(), b"two");
        assert_eq!(std::fs::read(dir.path().join("usr/h")).unwrap(), b"one");
        assert_eq!(
            std::fs::read_link(dir.path().join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn apply_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let lower = tar_with(|b| {
            file(b, b"keep", b"k");
            file(b, b"gone", b"g");
            file(b, b"d/old", b"o");
        });
        let upper = tar_with(|b| {
            file(b, b".wh.gone", b"");
            file(b, b"d/.wh..wh..opq", b"");
            file(b, b"d/new", b"n");
        });
        unpack_layer(&lower[..], dir.path(), Whiteouts::Apply).unwrap();
        unpack_layer(&upper[..], dir.path(), Whiteouts::Apply).unwrap();
        assert!(dir.path().join("keep").exists());
        assert!(!dir.path().join("gone").exists());
        assert!(!dir.path().join("d/old").exists());
        assert!(dir.path().join("d/new").exists());
    }
}
