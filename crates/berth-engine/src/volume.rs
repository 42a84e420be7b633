//! Named volumes with the local driver: `<root>/volumes/<name>/_data`, filled from the
//! image on first use like docker.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};

/// Table of volumes.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0
);
";

/// A volume as `volume inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Always `local`.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// Host directory with the data.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    /// Creation time.
    #[serde(rename = "CreatedAt")]
    pub created: String,
    /// Labels.
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    /// Always `local`.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// Made for one container (`-v /path`): removed with `rm -v`.
    #[serde(skip)]
    pub anonymous: bool,
}

/// Directory of a volume's data.
pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    root.join("volumes").join(name).join("_data")
}

fn row(root: &Path, r: &rusqlite::Row<'_>) -> rusqlite::Result<Volume> {
    let name: String = r.get(0)?;
    let labels: String = r.get(2)?;
    Ok(Volume {
        mountpoint: data_dir(root, &name),
        name,
        driver: "local".into(),
        created: r.get(1)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        scope: "local".into(),
        anonymous: r.get::<_, i64>(3)? != 0,
    })
}

/// Creates a volume (existing is fine); returns it and whether it was new.
pub fn create(
    conn: &rusqlite::Connection,
    root: &Path,
    name: &str,
    labels: &BTreeMap<String, String>,
    anonymous: bool,
) -> Result<(Volume, bool)> {
    if !crate::names::valid_name(name) {
        return Err(Error::invalid("volume name", format!("{name:?}")));
    }
    let dir = data_dir(root, name);
    let n = conn.execute(
        "INSERT OR IGNORE INTO volumes (name, created, labels, anonymous) VALUES (?1, ?2, ?3, ?4)",
        params![
            name,
            crate::timefmt::now(),
            serde_json::to_string(labels).unwrap_or_default(),
            anonymous as i64
        ],
    )?;
    std::fs::create_dir_all(&dir).map_err(Error::io("create volume directory", &dir))?;
    Ok((get(conn, root, name)?, n == 1))
}

/// A volume by name.
pub fn get(conn: &rusqlite::Connection, root: &Path, name: &str) -> Result<Volume> {
    conn.query_row(
        "SELECT name, created, labels, anonymous FROM volumes WHERE name = ?1",
        [name],
        |r| row(root, r),
    )
    .optional()?
    .ok_or_else(|| Error::NoSuchVolume(name.to_string()))
}

/// Every volume, by name.
pub fn list(conn: &rusqlite::Connection, root: &Path) -> Result<Vec<Volume>> {
    let mut st =
        conn.prepare("SELECT name, created, labels, anonymous FROM volumes ORDER BY name")?;
    let v = st
        .query_map([], |r| row(root, r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

/// Names of volumes some container uses.
pub fn in_use(conn: &rusqlite::Connection) -> Result<Vec<(String, String)>> {
    let mut st = conn.prepare("SELECT id, mounts FROM containers")?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (id, mounts) in rows {
        let ms: Vec<crate::spec::ResolvedMount> = serde_json::from_str(&mounts).unwrap_or_default();
        for m in ms {
            if let Some(n) = m.name {
                out.push((n, id.clone()));
            }
        }
    }
    Ok(out)
}

/// Removes a volume; refuses one in use unless `force`.
pub fn remove(conn: &rusqlite::Connection, root: &Path, name: &str, force: bool) -> Result<()> {
    get(conn, root, name)?;
    if !force && let Some((_, id)) = in_use(conn)?.into_iter().find(|(n, _)| n == name) {
        return Err(Error::Conflict {
            id: id[..12.min(id.len())].to_string(),
            detail: format!("volume {name} is in use"),
        });
    }
    let dir = root.join("volumes").join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove volume", dir)(e)),
    }
    conn.execute("DELETE FROM volumes WHERE name = ?1", [name])?;
    Ok(())
}

/// Removes every volume no container uses; returns their names.
pub fn prune(conn: &rusqlite::Connection, root: &Path, all: bool) -> Result<Vec<String>> {
    let used: Vec<String> = in_use(conn)?.into_iter().map(|(n, _)| n).collect();
    let mut removed = Vec::new();
    for v in list(conn, root)? {
        if !used.contains(&v.name) && (all || v.anonymous) {
            remove(conn, root, &v.name, false)?;
            removed.push(v.name);
        }
    }
    Ok(removed)
}

/// Copies the tree at `src` into the empty directory `dst`, keeping modes, owners and
/// symlinks (never following them).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(Error::io("stat", src))?;
    if !meta.is_dir() {
        return Ok(());
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(Error::io("chmod", dst))?;
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    for entry in std::fs::read_dir(src).map_err(Error::io("read directory", src))? {
        let entry = entry.map_err(Error::io("read directory", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let m = std::fs::symlink_metadata(&from).map_err(Error::io("stat", &from))?;
        let ft = m.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(Error::io("create directory", &to))?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(Error::io("readlink", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(Error::io("symlink", &to))?;
            let _ = std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()));
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(Error::io("copy", &from))?;
            let _ = std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()));
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(Error::io("chmod", &to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("l")).unwrap();
        let dst = d.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "x");
        assert!(
            std::fs::symlink_metadata(dst.join("l"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
