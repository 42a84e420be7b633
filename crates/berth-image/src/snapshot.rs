//! Snapshots (one unpacked directory per layer, keyed by chain ID) and overlay rootfs.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::unpack::{Whiteouts, decompress, unpack_layer};
use crate::{Digest, Error, Image, Result, Store, desc_digest};

impl Store {
    /// The directory holding a snapshot's files (`snapshots/<chainid>/fs`).
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex()).join("fs")
    }

    /// Whether the snapshot is complete (only complete ones are ever renamed in).
    pub fn has_snapshot(&self, chain_id: &Digest) -> bool {
        self.snapshot_path(chain_id).is_dir()
    }

    /// Chain IDs of every snapshot present.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>> {
        crate::store::digests_in(&self.snapshots_dir())
    }

    /// Removes a snapshot.
    pub fn remove_snapshot(&self, chain_id: &Digest) -> Result<()> {
        let dir = self.snapshots_dir().join(chain_id.hex());
        // rename first so a half-deleted snapshot is never seen as complete
        let trash =
            self.snapshots_dir()
                .join(format!("trash-{}-{}", chain_id.short(), std::process::id()));
        match fs::rename(&dir, &trash) {
            Ok(()) => fs::remove_dir_all(&trash).map_err(Error::io("remove", &trash)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("rename", &dir)(e)),
        }
    }

    /// Unpacks one layer blob into the snapshot `chain_id` unless it exists,
    /// verifying the uncompressed digest against `diff_id`.
    pub fn unpack_snapshot(
        &self,
        layer: &oci_spec::image::Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
    ) -> Result<PathBuf> {
        let done = self.snapshot_path(chain_id);
        if done.is_dir() {
            return Ok(done);
        }
        let blob = desc_digest(layer)?;
        let tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(self.snapshots_dir())
            .map_err(Error::io(
                "create temporary directory in",
                self.snapshots_dir(),
            ))?;
        let fsdir = tmp.path().join("fs");
        fs::create_dir(&fsdir).map_err(Error::io("create directory", &fsdir))?;
        let file = self.open_blob(&blob)?;
        let reader = decompress(file, None)?;
        let stats = unpack_layer(reader, &fsdir, Whiteouts::Overlay)?;
        if &stats.diff_id != diff_id {
            return Err(Error::DigestMismatch {
                expected: diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        fs::write(tmp.path().join("diffid"), diff_id.to_string())
            .map_err(Error::io("write", tmp.path()))?;
        let final_dir = self.snapshots_dir().join(chain_id.hex());
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &final_dir) {
            Ok(()) => Ok(done),
            // someone else finished the same snapshot first: theirs is as good
            Err(_) if done.is_dir() => {
                let _ = fs::remove_dir_all(&tmp_path);
                Ok(done)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                Err(Error::io("rename snapshot into", final_dir)(e))
            }
        }
    }

    /// Makes sure every layer of `image` is unpacked; returns the snapshot
    /// directories bottom layer first. Layers unpack in parallel.
    pub fn unpack_image(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let diff_ids = image.diff_ids()?;
        let chain = crate::manifest::chain_ids(&diff_ids);
        let layers = image.manifest.layers();
        let missing = chain
            .iter()
            .filter(|c| !self.snapshot_path(c).is_dir())
            .count();
        if missing <= 1 {
            // nothing (or one layer) to unpack: no thread (a spawn costs tens of ms on
            // a loaded machine, on every container create)
            for ((layer, diff_id), chain_id) in layers.iter().zip(&diff_ids).zip(&chain) {
                self.unpack_snapshot(layer, diff_id, chain_id)?;
            }
            return Ok(chain.iter().map(|c| self.snapshot_path(c)).collect());
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.min(layers.len().max(1)))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if i >= layers.len() {
                                return Ok(());
                            }
                            self.unpack_snapshot(&layers[i], &diff_ids[i], &chain[i])?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("unpack thread panicked"))
                .collect()
        });
        for r in results {
            r?;
        }
        Ok(chain.iter().map(|c| self.snapshot_path(c)).collect())
    }

    /// Unpacks the image if needed and lays out `container_dir` (`upper/`, `work/`,
    /// `rootfs/`); returns the overlay lowerdirs, top layer first.
    pub fn prepare_rootfs(&self, image: &Image, container_dir: &Path) -> Result<Vec<PathBuf>> {
        let mut lowers = self.unpack_image(image)?;
        lowers.reverse();
        for d in ["upper", "work", "rootfs"] {
            let p = container_dir.join(d);
            fs::create_dir_all(&p).map_err(Error::io("create directory", &p))?;
        }
        if lowers.is_empty() {
            // overlay needs one lower: an image without layers gets an empty one
            let p = container_dir.join("empty");
            fs::create_dir_all(&p).map_err(Error::io("create directory", &p))?;
            lowers.push(p);
        }
        Ok(lowers)
    }
}

/// Mounts overlayfs at `container_dir/rootfs` over `lowerdirs` (top first) with
/// `container_dir/upper` and `work`. Uses the new mount API (one `lowerdir+` per
/// layer, so no length limit on deep images); on kernels without it, mount(2) with the
/// options in one page, and when they do not fit, short relative names: symlinks
/// `container_dir/l/<n>` and a forked child that mounts from inside that directory.
pub fn mount_overlay(lowerdirs: &[PathBuf], container_dir: &Path) -> Result<PathBuf> {
    mount_overlay_opts(lowerdirs, container_dir, false)
}

/// [`mount_overlay`] with overlayfs's `volatile` option, for containers whose writes
/// are thrown away (`--rm`): no sync of the upper layer, whose unmount otherwise
/// syncs the whole filesystem under it. The kernel refuses to mount over the marker
/// a volatile mount leaves in the work directory, so a stale one is removed first.
pub fn mount_overlay_volatile(lowerdirs: &[PathBuf], container_dir: &Path) -> Result<PathBuf> {
    let _ = fs::remove_dir_all(container_dir.join("work/work/incompat"));
    mount_overlay_opts(lowerdirs, container_dir, true)
}

fn mount_overlay_opts(
    lowerdirs: &[PathBuf],
    container_dir: &Path,
    volatile: bool,
) -> Result<PathBuf> {
    let target = container_dir.join("rootfs");
    let upper = container_dir.join("upper");
    let work = container_dir.join("work");
    let new_api = || -> io::Result<()> {
        let ctx = sys::FsContext::open("overlay")?;
        for l in lowerdirs {
            ctx.set_string("lowerdir+", l.as_os_str())?;
        }
        ctx.set_string("upperdir", upper.as_os_str())?;
        ctx.set_string("workdir", work.as_os_str())?;
        if volatile {
            ctx.set_flag("volatile")?;
        }
        let t = sys::cstr(target.as_os_str())?;
        ctx.mount_at(&t)
    };
    match new_api() {
        Ok(()) => return Ok(target),
        Err(e) => tracing::debug!(error = %e, "overlay through fsopen failed, trying mount(2)"),
    }
    // the fallback mounts without volatile: slower to unmount, same contents
    mount_overlay_legacy(lowerdirs, container_dir)
}

const PAGE: usize = 4096;

/// The mount(2) path [`mount_overlay`] falls back to on kernels before 6.8: absolute
/// options when they fit in a page, else short names. Public so tests can force it.
pub fn mount_overlay_legacy(lowerdirs: &[PathBuf], container_dir: &Path) -> Result<PathBuf> {
    let target = container_dir.join("rootfs");
    let lower: Vec<String> = lowerdirs.iter().map(|p| escape_overlay(p)).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape_overlay(&container_dir.join("upper")),
        escape_overlay(&container_dir.join("work"))
    );
    let mount_err = |e: io::Error| Error::Mount {
        op: "mount overlay",
        path: target.clone(),
        source: e,
    };
    if data.len() < PAGE {
        return nix::mount::mount(
            Some(OsStr::new("overlay")),
            &target,
            Some(OsStr::new("overlay")),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map(|()| target.clone())
        .map_err(|e| mount_err(e.into()));
    }
    // short names: l/0, l/1, ... relative to a child's working directory, so the
    // options stay small however deep the image is (the parent's cwd is untouched)
    let links = container_dir.join("l");
    let _ = fs::remove_dir_all(&links);
    fs::create_dir_all(&links).map_err(Error::io("create directory", &links))?;
    let mut names = Vec::with_capacity(lowerdirs.len());
    for (i, l) in lowerdirs.iter().enumerate() {
        let link = links.join(i.to_string());
        std::os::unix::fs::symlink(l, &link).map_err(Error::io("symlink", &link))?;
        names.push(i.to_string());
    }
    let data = format!(
        "lowerdir={},upperdir=../upper,workdir=../work",
        names.join(":")
    );
    if data.len() >= PAGE {
        return Err(mount_err(io::Error::other(format!(
            "{} layers need {} bytes of mount options even with short names (limit {PAGE})",
            lowerdirs.len(),
            data.len()
        ))));
    }
    let dir_c = sys::cstr(links.as_os_str()).map_err(mount_err)?;
    let target_c = sys::cstr(target.as_os_str()).map_err(mount_err)?;
    let data_c = std::ffi::CString::new(data).expect("no nul in names");
    sys::fork_mount_in(&dir_c, &target_c, &data_c).map_err(mount_err)?;
    Ok(target)
}

fn escape_overlay(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Unmounts `container_dir/rootfs` (lazily if busy). Not mounted is not an error.
pub fn unmount_overlay(container_dir: &Path) -> Result<()> {
    let target = container_dir.join("rootfs");
    match nix::mount::umount2(&target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                Error::Mount {
                    op: "unmount",
                    path: target.clone(),
                    source: e.into(),
                }
            })
        }
        Err(e) => Err(Error::Mount {
            op: "unmount",
            path: target,
            source: e.into(),
        }),
    }
}
