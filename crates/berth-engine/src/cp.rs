//! `cp` between a container's filesystem and the host. Paths inside the container are
//! resolved like the container would (symlinks followed but never out of its root).

use std::path::{Path, PathBuf};

use crate::container::{Container, Engine};
use crate::error::{Error, Result};
use crate::volume::copy_tree;

fn resolve(rootfs: &Path, p: &str) -> Result<PathBuf> {
    berth_runtime::rootfs::secure_join(rootfs, Path::new(p))
        .map_err(|e| Error::invalid("container path", format!("{p}: {e}")))
}

fn copy_any(src: &Path, dst: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(src).map_err(Error::io("stat", src))?;
    let dst = if dst.is_dir() {
        dst.join(src.file_name().unwrap_or_default())
    } else {
        dst.to_path_buf()
    };
    if m.is_dir() {
        match std::fs::create_dir(&dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create directory", &dst)(e)),
        }
        copy_tree(src, &dst)
    } else if m.file_type().is_symlink() {
        let t = std::fs::read_link(src).map_err(Error::io("readlink", src))?;
        let _ = std::fs::remove_file(&dst);
        std::os::unix::fs::symlink(t, &dst).map_err(Error::io("symlink", &dst))
    } else {
        // never write through a symlink at the destination
        if std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&dst).map_err(Error::io("remove", &dst))?;
        }
        std::fs::copy(src, &dst).map_err(Error::io("copy to", &dst))?;
        Ok(())
    }
}

fn with_rootfs<T>(engine: &Engine, c: &Container, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let was_active = c.is_active();
    let rootfs = engine.mount_rootfs(c)?;
    let r = f(&rootfs);
    if !was_active && !engine.get(&c.id).map(|x| x.is_active()).unwrap_or(false) {
        let _ = berth_image::unmount_overlay(&engine.container_dir(&c.id));
    }
    r
}

/// Copies `path` of the container to `dest` on the host.
pub fn from_container(engine: &Engine, c: &Container, path: &str, dest: &Path) -> Result<()> {
    with_rootfs(engine, c, |rootfs| {
        // the last component is copied as is (a symlink stays a symlink)
        let p = Path::new(path);
        let parent = resolve(
            rootfs,
            &p.parent().unwrap_or(Path::new("/")).to_string_lossy(),
        )?;
        let src = match p.file_name() {
            Some(n) => parent.join(n),
            None => parent,
        };
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(Error::invalid(
                "container path",
                format!("{path}: no such file or directory"),
            ));
        }
        copy_any(&src, dest)
    })
}

/// Copies `src` on the host to `path` in the container.
pub fn to_container(engine: &Engine, c: &Container, src: &Path, path: &str) -> Result<()> {
    with_rootfs(engine, c, |rootfs| {
        let dst = resolve(rootfs, path)?;
        if !dst.starts_with(rootfs) {
            return Err(Error::invalid(
                "container path",
                format!("{path} leaves the container"),
            ));
        }
        if !dst.parent().is_some_and(Path::exists) {
            return Err(Error::invalid(
                "container path",
                format!("{path}: parent directory does not exist"),
            ));
        }
        copy_any(src, &dst)
    })
}
