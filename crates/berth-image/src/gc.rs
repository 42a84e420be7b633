//! Garbage collection (`image prune`) and integrity checks (`system check`).

use std::collections::HashSet;
use std::fs;
use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::manifest::{chain_ids, is_index, parse_index, parse_manifest, sniff_manifest_type};
use crate::{Digest, Error, Platform, Result, Store, desc_digest};

/// What a prune removed.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs: Vec<Digest>,
    /// Bytes freed by removed blobs.
    pub bytes: u64,
    /// Snapshots removed.
    pub snapshots: Vec<Digest>,
}

/// One finding of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob's content does not hash to its name.
    CorruptBlob(Digest),
    /// An image references a blob that is not present.
    MissingBlob {
        /// Tag or digest of the image.
        image: String,
        /// The missing blob.
        blob: Digest,
    },
    /// A snapshot directory is incomplete.
    BrokenSnapshot(Digest),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptBlob(d) => {
                write!(f, "blob {d} is corrupt (content does not match its digest)")
            }
            Problem::MissingBlob { image, blob } => {
                write!(
                    f,
                    "image {image} references missing blob {blob} (pull or load it again)"
                )
            }
            Problem::BrokenSnapshot(d) => write!(f, "snapshot {d} is incomplete"),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Blobs verified.
    pub blobs_checked: usize,
    /// Snapshots verified.
    pub snapshots_checked: usize,
    /// Problems (with `repair`, the ones that could be were fixed).
    pub problems: Vec<Problem>,
    /// Problems fixed by `repair`.
    pub repaired: usize,
    /// Leftover temporary files of interrupted writes (removed by `repair`); not a problem.
    pub leftovers: usize,
}

/// Blobs reachable from `index.json`, and the chain IDs of those images' layers.
pub fn reachable(store: &Store) -> Result<(HashSet<Digest>, HashSet<Digest>)> {
    let mut blobs = HashSet::new();
    let mut chains = HashSet::new();
    let mut todo: Vec<oci_spec::image::Descriptor> = store.read_index()?.manifests().clone();
    while let Some(desc) = todo.pop() {
        let d = desc_digest(&desc)?;
        if !blobs.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = store.read_blob(&d) else {
            continue;
        };
        let mt = sniff_manifest_type(&bytes).unwrap_or(desc.media_type().clone());
        if is_index(&mt) {
            if let Ok(idx) = parse_index(&bytes, &d) {
                todo.extend(idx.manifests().iter().cloned());
            }
        } else if let Ok(m) = parse_manifest(&bytes, &d) {
            blobs.insert(desc_digest(m.config())?);
            for l in m.layers() {
                blobs.insert(desc_digest(l)?);
            }
            if let Ok(cfg) = store.read_blob(&desc_digest(m.config())?)
                && let Ok(cfg) = serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&cfg)
            {
                let diffs: Vec<Digest> = cfg
                    .rootfs()
                    .diff_ids()
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                chains.extend(chain_ids(&diffs));
            }
        }
    }
    Ok((blobs, chains))
}

fn mounted_text() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// Removes blobs and snapshots no tagged image references (snapshots still mounted
/// are kept).
pub fn prune(store: &Store) -> Result<PruneReport> {
    let (blobs, chains) = reachable(store)?;
    let mut report = PruneReport::default();
    for d in store.list_blobs()? {
        if !blobs.contains(&d) {
            report.bytes += store.blob_size(&d).unwrap_or(0);
            store.remove_blob(&d)?;
            report.blobs.push(d);
        }
    }
    // by full path: other roots on the host mount snapshots with the same chain id
    let mounts = mounted_text();
    let snapshots = store.snapshots_dir();
    for c in store.list_snapshots()? {
        let in_use = mounts.contains(&*snapshots.join(c.hex()).to_string_lossy());
        if !chains.contains(&c) && !in_use {
            store.remove_snapshot(&c)?;
            report.snapshots.push(c);
        }
    }
    Ok(report)
}

fn hash_file(path: &std::path::Path) -> std::io::Result<Digest> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256(h.finalize().into()))
}

/// Verifies every blob's digest, every tagged image's references and every
/// snapshot's completeness; with `repair`, removes corrupt blobs, broken snapshots and
/// leftovers of interrupted writes.
pub fn check(store: &Store, repair: bool) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    for d in store.list_blobs()? {
        let path = store.blob_path(&d);
        let actual = hash_file(&path).map_err(Error::io("read blob", &path))?;
        r.blobs_checked += 1;
        if actual != d {
            r.problems.push(Problem::CorruptBlob(d.clone()));
            if repair {
                store.remove_blob(&d)?;
                r.repaired += 1;
            }
        }
    }
    for (name, desc) in store.list()? {
        if let Err(Error::BlobNotFound(blob)) = store
            .image_from_desc(&desc, &Platform::default())
            .and_then(|img| {
                for l in img.manifest.layers() {
                    let d = desc_digest(l)?;
                    if !store.has_blob(&d) {
                        return Err(Error::BlobNotFound(d));
                    }
                }
                Ok(())
            })
        {
            r.problems.push(Problem::MissingBlob { image: name, blob });
        }
    }
    let mounts = mounted_text();
    for c in store.list_snapshots()? {
        r.snapshots_checked += 1;
        let dir = store.snapshots_dir().join(c.hex());
        if !dir.join("fs").is_dir() || !dir.join("diffid").is_file() {
            r.problems.push(Problem::BrokenSnapshot(c.clone()));
            if repair && !mounts.contains(&*dir.to_string_lossy()) {
                store.remove_snapshot(&c)?;
                r.repaired += 1;
            }
        }
    }
    // leftovers: temp files in ingest/ (a .partial still locked is a live download),
    // temp and trash directories in snapshots/
    for dir in [store.ingest_dir(), store.snapshots_dir()] {
        for e in fs::read_dir(&dir)
            .map_err(Error::io("read directory", &dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_snapshot = Digest::from_hex(&name).is_ok();
            if is_snapshot {
                continue;
            }
            if name.ends_with(".partial")
                && let Ok(f) = fs::File::open(e.path())
                && f.try_lock().is_err()
            {
                continue;
            }
            r.leftovers += 1;
            if repair {
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_finds_corruption_and_prune_collects() {
        let a = tempfile::tempdir().unwrap();
        let store = Store::open(a.path()).unwrap();
        crate::fixtures::busybox_image(&store, "busybox:latest").unwrap();
        let orphan = store.put_blob(b"orphan").unwrap();
        let r = check(&store, false).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let img = store.image("busybox:latest", &Platform::default()).unwrap();
        let layer = desc_digest(&img.manifest.layers()[0]).unwrap();
        // corrupt a blob in place
        let p = store.blob_path(&layer);
        let mut bytes = fs::read(&p).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&p, bytes).unwrap();
        let r = check(&store, false).unwrap();
        assert!(r.problems.contains(&Problem::CorruptBlob(layer.clone())));
        let r = check(&store, true).unwrap();
        assert_eq!(r.repaired, 1);
        let r = check(&store, false).unwrap();
        assert!(
            matches!(r.problems.as_slice(), [Problem::MissingBlob { .. }]),
            "{:?}",
            r.problems
        );
        let p = prune(&store).unwrap();
        assert_eq!(p.blobs, vec![orphan]);
    }
}
