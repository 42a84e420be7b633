//! Deferred removal of a container's directories. Freeing a directory's block can
//! wait for the disk: on ext4 with online discard every `rmdir` waits for a discard
//! request (1-4 ms each on the project's VM, a dozen per `run --rm`). So while a user
//! waits, a container's directories are only renamed into `<base>/.trash` (one cheap
//! rename, same filesystem); the monitor empties the trash after it has reported the
//! exit, and the CLI's own removals empty it before they return.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Name of the trash directory under the persistent root and under the state root.
pub const DIR: &str = ".trash";

/// The trash directory under `base`.
pub fn dir(base: &Path) -> PathBuf {
    base.join(DIR)
}

/// Moves `path` into the trash of `base` under a name of its own; when that fails
/// (another filesystem, say) removes it in place. A missing `path` is fine.
pub fn discard(base: &Path, path: &Path) -> std::io::Result<()> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let trash = dir(base);
    let name = format!(
        "{}.{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let moved = match std::fs::rename(path, trash.join(&name)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&trash).is_ok()
                && std::fs::rename(path, trash.join(&name)).is_ok()
        }
        Err(_) => false,
    };
    if moved {
        return Ok(());
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes everything in the trash of `base` (best effort: entries other processes
/// remove at the same time, or that cannot go, are left to the next call).
pub fn empty(base: &Path) {
    let Ok(entries) = std::fs::read_dir(dir(base)) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_moves_and_empty_removes() {
        let base = tempfile::tempdir().unwrap();
        let c = base.path().join("containers/abc");
        std::fs::create_dir_all(c.join("upper/x")).unwrap();
        std::fs::write(c.join("spec.json"), "{}").unwrap();
        discard(base.path(), &c).unwrap();
        assert!(!c.exists());
        // the same name again (a restarted container's directory) gets its own entry
        std::fs::create_dir_all(&c).unwrap();
        discard(base.path(), &c).unwrap();
        assert_eq!(std::fs::read_dir(dir(base.path())).unwrap().count(), 2);
        // missing is fine
        discard(base.path(), &base.path().join("nope")).unwrap();
        empty(base.path());
        assert_eq!(std::fs::read_dir(dir(base.path())).unwrap().count(), 0);
        assert!(base.path().join("containers").is_dir());
    }
}
