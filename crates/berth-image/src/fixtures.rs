//! Deterministic test and benchmark images built with the store itself.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, MediaType};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{Digest, Error, Result, Store};

/// The mtime of every fixture entry (2000-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 946_684_800;
const FIXED_CREATED: &str = "2000-01-01T00:00:00Z";

enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
}

fn busybox_tree(busybox: &Path) -> Result<BTreeMap<String, Node>> {
    let bin = std::fs::read(busybox).map_err(Error::io("read", busybox))?;
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(Error::io("run --list of", busybox))?;
    let mut tree = BTreeMap::new();
    for d in ["bin", "dev", "etc", "proc", "root", "sys"] {
        tree.insert(d.to_string(), Node::Dir(0o755));
    }
    tree.insert("tmp".into(), Node::Dir(0o1777));
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        tree.insert(format!("bin/{applet}"), Node::Symlink("busybox".into()));
    }
    tree.insert("bin/busybox".into(), Node::File(0o755, bin));
    tree.insert(
        "etc/passwd".into(),
        Node::File(
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
    );
    tree.insert(
        "etc/group".into(),
        Node::File(0o644, b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
    );
    Ok(tree)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    h.set_size(size);
    h
}

fn tar_tree<W: Write>(tree: &BTreeMap<String, Node>, w: W) -> io::Result<W> {
    let mut b = tar::Builder::new(w);
    for (path, node) in tree {
        match node {
            Node::Dir(mode) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                b.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            Node::File(mode, data) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, path, &data[..])?;
            }
            Node::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    b.into_inner()
}

/// Writes the busybox fixture tree (the content of [`busybox_image`]'s layer) into the
/// directory `root`, for tests that need a plain rootfs rather than an image.
pub fn busybox_rootfs(root: &Path, busybox: &Path) -> Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    for (path, node) in busybox_tree(busybox)? {
        let dest = root.join(&path);
        match node {
            Node::Dir(mode) => {
                std::fs::create_dir_all(&dest).map_err(Error::io("create", &dest))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                    .map_err(Error::io("chmod", &dest))?;
            }
            Node::File(mode, data) => {
                std::fs::write(&dest, data).map_err(Error::io("write", &dest))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                    .map_err(Error::io("chmod", &dest))?;
            }
            Node::Symlink(target) => match symlink(&target, &dest) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(Error::io("symlink", &dest)(e));
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// Hashes and counts what passes through.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A gzip layer streamed into the store; returns (layer descriptor, diff id).
fn write_layer(
    store: &Store,
    level: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(Descriptor, Digest)> {
    let writer = store.blob_writer(None)?;
    let buffered = io::BufWriter::with_capacity(1 << 20, writer);
    // fixed header (mtime 0, no name, OS unknown) and level: same bytes every run
    let gz = flate2::GzBuilder::new().write(buffered, flate2::Compression::new(level));
    let mut hw = HashWriter {
        inner: gz,
        hasher: Sha256::new(),
        count: 0,
    };
    fill(&mut hw).map_err(Error::io("write layer", store.root()))?;
    let diff_id = Digest::from_sha256(hw.hasher.finalize().into());
    let buffered = hw
        .inner
        .finish()
        .map_err(Error::io("compress layer", store.root()))?;
    let writer = buffered
        .into_inner()
        .map_err(|e| Error::io("write layer", store.root())(e.into_error()))?;
    let size = writer.written();
    let digest = writer.commit()?;
    Ok((
        Descriptor::new(MediaType::ImageLayerGzip, size, digest.to_oci()),
        diff_id,
    ))
}

/// Stores config + manifest for `layers` and tags them `tag`.
fn finish_image(
    store: &Store,
    tag: &str,
    layers: &[(Descriptor, Digest)],
    cmd: &[&str],
    created_by: &str,
) -> Result<Descriptor> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.to_string()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|_| json!({"created": FIXED_CREATED, "created_by": created_by}))
        .collect();
    let config = json!({
        "created": FIXED_CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [crate::spec::DEFAULT_PATH],
            "Cmd": cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let config_desc = store.put_json(MediaType::ImageConfig, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers.iter().map(|(d, _)| d).collect::<Vec<_>>(),
    });
    let desc = store.put_json(MediaType::ImageManifest, &manifest)?;
    store.tag(tag, desc.clone())?;
    Ok(desc)
}

/// A single-layer image from Debian's `/bin/busybox` with one symlink per applet,
/// /etc/passwd, /etc/group and /tmp; the same manifest digest every run (for the same
/// busybox binary).
pub fn busybox_image(store: &Store, tag: &str) -> Result<Descriptor> {
    busybox_image_from(store, tag, Path::new("/bin/busybox"))
}

/// [`busybox_image`] from another busybox binary.
pub fn busybox_image_from(store: &Store, tag: &str, busybox: &Path) -> Result<Descriptor> {
    let tree = busybox_tree(busybox)?;
    let layer = write_layer(store, 6, |w| tar_tree(&tree, w).map(|_| ()))?;
    finish_image(store, tag, &[layer], &["sh"], "berth fixtures busybox")
}

/// An image from uncompressed tar layers (bottom first), gzip-compressed at a fixed
/// level, tagged `tag`. For tests and tools that craft layers by hand.
pub fn image_from_layers(
    store: &Store,
    tag: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
) -> Result<Descriptor> {
    let mut made = Vec::new();
    for tar in layers {
        made.push(write_layer(store, 6, |w| w.write_all(tar))?);
    }
    finish_image(store, tag, &made, cmd, "berth fixtures image_from_layers")
}

/// splitmix64: small, seedable, good enough for filler bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "container",
    "image",
    "layer",
    "manifest",
    "digest",
    "registry",
    "snapshot",
    "overlay",
    "runtime",
    "kernel",
    "namespace",
    "cgroup",
    "process",
    "signal",
    "mount",
    "network",
    "bridge",
    "volume",
    "config",
    "berth",
];

/// A multi-layer image for benchmarks: `layers` gzip layers totalling roughly
/// `total_bytes` compressed, each of 8 MiB files, three quarters random bytes and one
/// quarter text, from a seeded generator (same seed, same image).
pub fn generated_image(
    store: &Store,
    tag: &str,
    seed: u64,
    layers: usize,
    total_bytes: u64,
) -> Result<Descriptor> {
    // random bytes do not compress; this text compresses to about 48% at level 1
    let per_layer_compressed = total_bytes / layers.max(1) as u64;
    let per_layer = (per_layer_compressed as f64 / (0.75 + 0.25 * 0.48)) as u64;
    const FILE: u64 = 8 << 20;
    let make = |i: usize| -> Result<(Descriptor, Digest)> {
        write_layer(store, 1, |w| {
            let mut rng = Rng(seed ^ ((i as u64 + 1) << 32));
            let mut b = tar::Builder::new(w);
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, format!("data{i}/"), io::empty())?;
            let mut left = per_layer;
            let mut n = 0;
            let mut buf = vec![0u8; FILE as usize];
            while left > 0 {
                let size = left.min(FILE) as usize;
                let buf = &mut buf[..size];
                let random = size * 3 / 4;
                rng.fill(&mut buf[..random]);
                let mut pos = random;
                while pos < size {
                    let w = WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes();
                    let take = w.len().min(size - pos);
                    buf[pos..pos + take].copy_from_slice(&w[..take]);
                    pos += take;
                    if pos < size {
                        buf[pos] = if rng.next().is_multiple_of(12) {
                            b'\n'
                        } else {
                            b' '
                        };
                        pos += 1;
                    }
                }
                let mut h = header(tar::EntryType::Regular, 0o644, size as u64);
                b.append_data(&mut h, format!("data{i}/file{n:04}"), &buf[..])?;
                left -= size as u64;
                n += 1;
            }
            b.finish()
        })
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<Option<Result<(Descriptor, Digest)>>> = (0..layers).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut done);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= layers {
                        break;
                    }
                    let r = make(i);
                    results.lock().expect("no poisoned lock")[i] = Some(r);
                }
            });
        }
    });
    let layers: Vec<(Descriptor, Digest)> = done
        .into_iter()
        .map(|r| r.expect("every layer was made"))
        .collect::<Result<_>>()?;
    finish_image(
        store,
        tag,
        &layers,
        &["sh"],
        &format!("berth fixtures generated seed {seed}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let da = busybox_image(&Store::open(a.path()).unwrap(), "busybox:latest").unwrap();
        let db = busybox_image(&Store::open(b.path()).unwrap(), "busybox:latest").unwrap();
        assert_eq!(da.digest(), db.digest());
        let store = Store::open(a.path()).unwrap();
        let img = store
            .image("busybox:latest", &crate::Platform::default())
            .unwrap();
        assert_eq!(img.manifest.layers().len(), 1);
    }

    #[test]
    fn generated_is_deterministic_and_sized() {
        let a = tempfile::tempdir().unwrap();
        let store = Store::open(a.path()).unwrap();
        let d1 = generated_image(&store, "gen:1", 7, 3, 12 << 20).unwrap();
        let d2 = generated_image(&store, "gen:2", 7, 3, 12 << 20).unwrap();
        assert_eq!(d1.digest(), d2.digest());
        let img = store.image("gen:1", &crate::Platform::default()).unwrap();
        let total: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
        assert!(
            total > 9 << 20 && total < 15 << 20,
            "compressed size {total}"
        );
    }
}
