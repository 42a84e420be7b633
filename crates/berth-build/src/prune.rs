//! `berth builder prune`: removes step-cache entries (`root/build/cache`), the layers
//! and snapshots only they kept, RUN cache mounts (`root/build/mounts`) and what killed
//! builds left in `root/build/tmp`, and says how much space that freed.
//!
//! Without `all`, entries whose layer a tagged image still uses are kept (docker's
//! "dangling" cache is what goes); cache mounts go either way, as with BuildKit's
//! prune. `until` keeps what was used more recently than that (entries are touched
//! on every cache hit, mounts on every RUN that mounts them).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_image::{Digest, Store};
use serde_json::Value;

use crate::executor::BuildError;

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also entries whose layers tagged images use.
    pub all: bool,
    /// Only what was last used longer ago than this.
    pub until: Option<Duration>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Removed cache entries (their keys) and cache mounts (`mount:<id>`).
    pub removed: Vec<String>,
    /// Bytes freed: layer blobs, snapshots, cache mounts, leftovers.
    pub bytes: u64,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { op, path, source }
}

/// Bytes under `p` (not following symlinks; hard links counted once per name).
fn disk_usage(p: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = md.len();
    if md.is_dir()
        && let Ok(rd) = fs::read_dir(p)
    {
        for e in rd.flatten() {
            n += disk_usage(&e.path());
        }
    }
    n
}

fn old_enough(p: &Path, until: Option<Duration>, now: SystemTime) -> bool {
    let Some(until) = until else { return true };
    fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .map(|t| now.duration_since(t).unwrap_or_default() >= until)
        .unwrap_or(true)
}

/// Prunes the build cache of the berth root `root` whose images are in `store`.
pub fn prune(store: &Store, root: &Path, opts: &PruneOptions) -> Result<PruneReport, BuildError> {
    let now = SystemTime::now();
    let mut report = PruneReport::default();
    let build = root.join("build");
    let (image_blobs, image_chains) = berth_image::gc::reachable(store)?;

    // step-cache entries: key file -> (layer blob, diff id)
    let cache_dir = build.join("cache");
    let mut entries: HashMap<String, (Digest, Digest)> = HashMap::new();
    if let Ok(rd) = fs::read_dir(&cache_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let parsed = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| {
                    let blob = v.get("layer")?.get("digest")?.as_str()?.parse().ok()?;
                    let diff = v.get("diff_id")?.as_str()?.parse().ok()?;
                    Some((blob, diff))
                });
            match parsed {
                Some(p) => {
                    entries.insert(name, p);
                }
                // temporary files of a write, or damage: nothing uses them
                None if old_enough(&e.path(), opts.until, now) => {
                    report.bytes += disk_usage(&e.path());
                    let _ = fs::remove_file(e.path());
                }
                None => {}
            }
        }
    }
    let mut freed_layers: HashSet<(Digest, Digest)> = HashSet::new();
    let mut kept_blobs: HashSet<Digest> = HashSet::new();
    let mut names: Vec<&String> = entries.keys().collect();
    names.sort();
    for name in names {
        let (blob, diff) = &entries[name];
        let path = cache_dir.join(name);
        let in_use = image_blobs.contains(blob);
        if (in_use && !opts.all) || !old_enough(&path, opts.until, now) {
            kept_blobs.insert(blob.clone());
            continue;
        }
        report.bytes += disk_usage(&path);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        report.removed.push(name.clone());
        freed_layers.insert((blob.clone(), diff.clone()));
    }
    // the layers (and their snapshots) that only removed entries kept
    let freed_diffs: HashSet<&Digest> = freed_layers
        .iter()
        .filter(|(b, _)| !image_blobs.contains(b) && !kept_blobs.contains(b))
        .map(|(_, d)| d)
        .collect();
    for (blob, _) in &freed_layers {
        if image_blobs.contains(blob) || kept_blobs.contains(blob) || !store.has_blob(blob) {
            continue;
        }
        report.bytes += store.blob_size(blob).unwrap_or(0);
        store.remove_blob(blob)?;
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for chain in store.list_snapshots()? {
        if image_chains.contains(&chain) || mounts.contains(chain.hex()) {
            continue;
        }
        let fs_dir = store.snapshot_path(&chain);
        let Some(dir) = fs_dir.parent() else { continue };
        let diff: Option<Digest> = fs::read_to_string(dir.join("diffid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if diff.is_some_and(|d| freed_diffs.contains(&d)) {
            report.bytes += disk_usage(dir);
            store.remove_snapshot(&chain)?;
        }
    }

    // RUN cache mounts
    let mounts_dir = build.join("mounts");
    if let Ok(rd) = fs::read_dir(&mounts_dir) {
        let mut dirs: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            if !old_enough(&d, opts.until, now) {
                continue;
            }
            report.bytes += disk_usage(&d);
            fs::remove_dir_all(&d).map_err(io_err("remove", &d))?;
            let id = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            report.removed.push(format!("mount:{id}"));
        }
    }

    // leftovers of builds killed outright (live builds' directories are kept)
    let tmp = build.join("tmp");
    let before = disk_usage(&tmp);
    crate::executor::sweep(&tmp);
    report.bytes += before.saturating_sub(disk_usage(&tmp));
    Ok(report)
}
