//! The content store: an OCI image layout directory.
//!
//! Blobs live in `blobs/sha256/<hex>` and only get there by rename after their digest
//! and size were verified; partial writes live in `ingest/`. `index.json` names images
//! with `org.opencontainers.image.ref.name` annotations; updates to it are serialized
//! by an flock on `index.lock` and replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use sha2::{Digest as _, Sha256};

use crate::{Digest, Error, Result};

/// The annotation that carries a tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An image store rooted at a directory in OCI image layout.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the layout if missing.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [store.blobs_dir(), store.ingest_dir(), store.snapshots_dir()] {
            fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _lock = store.lock_index()?;
            if !index.exists() {
                store.write_index(&empty_index())?;
            }
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Whether a verified blob with this digest is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Where the blob lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Reads a whole blob (meant for small JSON documents).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|e| not_found_or(e, digest, "read blob", &path))
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| not_found_or(e, digest, "open blob", &path))
    }

    /// Size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| not_found_or(e, digest, "stat blob", &path))
    }

    /// Digests of every blob present.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        digests_in(&self.blobs_dir())
    }

    /// Removes a blob (no reference check: see [`crate::gc`]).
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove blob", path)(e)),
        }
    }

    /// A writer for a new blob. With `expected`, `commit` refuses content whose digest
    /// or size differ; without, the digest is computed. Dropping it uncommitted removes
    /// the temporary file.
    pub fn blob_writer(&self, expected: Option<(&Digest, u64)>) -> Result<BlobWriter> {
        let dir = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempfile_in(&dir)
            .map_err(Error::io("create temporary file in", &dir))?;
        let path = tmp.path().to_path_buf();
        let (file, tmp_path) = tmp.into_parts();
        Ok(BlobWriter {
            store: self.clone(),
            file,
            path,
            temp: Some(tmp_path),
            hasher: Sha256::new(),
            written: 0,
            expected: expected.map(|(d, s)| (d.clone(), s)),
        })
    }

    /// A writer that continues a partial download of `expected` left by an earlier,
    /// interrupted writer: the partial file is re-hashed and `written()` tells the
    /// offset to resume from. The partial file survives a drop without commit. When
    /// another process is writing the same blob right now, a fresh private writer is
    /// returned instead (offset 0).
    pub fn resume_writer(&self, expected: (&Digest, u64)) -> Result<BlobWriter> {
        let (digest, size) = expected;
        let path = self.ingest_dir().join(format!("{}.partial", digest.hex()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("open partial blob", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return self.blob_writer(Some(expected)),
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io("lock partial blob", &path)(e));
            }
        }
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let len = file.metadata().map_err(Error::io("stat", &path))?.len();
        if len > size {
            file.set_len(0).map_err(Error::io("truncate", &path))?;
        } else if len > 0 {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(Error::io("read", &path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                written += n as u64;
            }
        }
        file.seek(SeekFrom::Start(written))
            .map_err(Error::io("seek", &path))?;
        Ok(BlobWriter {
            store: self.clone(),
            file,
            path,
            temp: None,
            hasher,
            written,
            expected: Some((digest.clone(), size)),
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer(Some((&digest, bytes.len() as u64)))?;
        w.write_all(bytes)
            .map_err(Error::io("write", w.path.clone()))?;
        w.commit()
    }

    /// Stores a JSON document and returns a descriptor of it.
    pub fn put_json<T: serde::Serialize>(
        &self,
        media_type: MediaType,
        value: &T,
    ) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value).map_err(Error::json("serialize document"))?;
        let digest = self.put_blob(&bytes)?;
        Ok(Descriptor::new(
            media_type,
            bytes.len() as u64,
            digest.to_oci(),
        ))
    }

    /// Points tag `name` at `desc` (replacing what it named before).
    pub fn tag(&self, name: &str, desc: Descriptor) -> Result<()> {
        self.update_index(|index| {
            let mut desc = desc;
            let mut ann = desc.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
            desc.set_annotations(Some(ann));
            let mut manifests = index.manifests().clone();
            manifests.retain(|d| ref_name(d) != Some(name));
            manifests.push(desc);
            index.set_manifests(manifests);
            Ok(())
        })
    }

    /// Removes tag `name`; returns whether it existed.
    pub fn untag(&self, name: &str) -> Result<bool> {
        let mut found = false;
        self.update_index(|index| {
            let mut manifests = index.manifests().clone();
            let before = manifests.len();
            manifests.retain(|d| ref_name(d) != Some(name));
            found = manifests.len() != before;
            index.set_manifests(manifests);
            Ok(())
        })?;
        Ok(found)
    }

    /// The descriptor tag `name` points at.
    pub fn resolve(&self, name: &str) -> Result<Descriptor> {
        let index = self.read_index()?;
        index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned()
            .ok_or_else(|| Error::ImageNotFound(name.to_string()))
    }

    /// Every tag with its descriptor, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Descriptor)>> {
        let index = self.read_index()?;
        let mut out: Vec<(String, Descriptor)> = index
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| (n.to_string(), d.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The whole `index.json`, including entries without a name.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(Error::json(format!("parse {}", path.display())))
    }

    /// Applies `f` to `index.json` under the index lock and writes it back atomically.
    pub fn update_index(&self, f: impl FnOnce(&mut ImageIndex) -> Result<()>) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        f(&mut index)?;
        self.write_index(&index)
    }

    fn lock_index(&self) -> Result<File> {
        let path = self.root.join("index.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        file.lock().map_err(Error::io("lock", &path))?;
        Ok(file)
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = serde_json::to_vec(index).map_err(Error::json("serialize index.json"))?;
        write_atomic(&self.root.join("index.json"), &bytes)
    }
}

fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_manifests(Vec::new());
    index.set_media_type(Some(MediaType::ImageIndex));
    index
}

/// The tag a descriptor in `index.json` carries.
pub fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

fn not_found_or(e: io::Error, digest: &Digest, op: &'static str, path: &Path) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::BlobNotFound(digest.clone())
    } else {
        Error::io(op, path)(e)
    }
}

/// Writes `bytes` to `path` through a temporary sibling, fsync and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(Error::io("create temporary file in", dir))?;
    tmp.write_all(bytes)
        .map_err(Error::io("write", tmp.path().to_path_buf()))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::io("fsync", tmp.path().to_path_buf()))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into", path)(e.error))?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    // best effort: a failed directory fsync only weakens durability, not correctness
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes one blob, hashing as it goes. See [`Store::blob_writer`].
#[derive(Debug)]
pub struct BlobWriter {
    store: Store,
    file: File,
    path: PathBuf,
    /// Set for anonymous temp files (removed on drop); None for resumable partials.
    temp: Option<tempfile::TempPath>,
    hasher: Sha256,
    written: u64,
    expected: Option<(Digest, u64)>,
}

impl BlobWriter {
    /// Bytes written so far (for a resumed writer, including the earlier part).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The file being written (for error messages: a full disk names where).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Verifies, fsyncs and publishes the blob; returns its digest. On a mismatch the
    /// content is discarded (a resumable partial too) and nothing becomes visible.
    pub fn commit(mut self) -> Result<Digest> {
        let actual = Digest::from_sha256(self.hasher.clone().finalize().into());
        if let Some((expected, size)) = &self.expected {
            let bad = if self.written != *size {
                Some(Error::SizeMismatch {
                    digest: expected.clone(),
                    expected: *size,
                    actual: self.written,
                })
            } else if &actual != expected {
                Some(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: actual.clone(),
                })
            } else {
                None
            };
            if let Some(err) = bad {
                if self.temp.is_none() {
                    let _ = fs::remove_file(&self.path);
                }
                return Err(err);
            }
        }
        self.file
            .sync_all()
            .map_err(Error::io("fsync", self.path.clone()))?;
        let dest = self.store.blob_path(&actual);
        // renaming over an existing identical blob is harmless, so concurrent writers of
        // the same content need no coordination
        fs::rename(&self.path, &dest).map_err(Error::io("rename into", dest.clone()))?;
        if let Some(t) = self.temp.take() {
            // already renamed away: forget it rather than delete
            let _ = t.keep();
        }
        sync_dir(&self.store.blobs_dir());
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Parses a descriptor's digest.
pub fn desc_digest(desc: &Descriptor) -> Result<Digest> {
    Ok(Digest::try_from(desc.digest())?)
}

/// Sorted digests named by the entries of `dir` (hex names; anything else is skipped).
pub(crate) fn digests_in(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        if let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_blob(b"hello").unwrap();
        assert!(store.has_blob(&d));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        assert!(dir.path().join("oci-layout").is_file());
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claimed = Digest::of(b"something else");
        let mut w = store.blob_writer(Some((&claimed, 5))).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(w.commit(), Err(Error::DigestMismatch { .. })));
        let mut w = store.blob_writer(Some((&claimed, 4))).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(w.commit(), Err(Error::SizeMismatch { .. })));
        assert!(store.list_blobs().unwrap().is_empty());
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.blob_writer(None).unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        assert!(store.list_blobs().unwrap().is_empty());
    }

    #[test]
    fn resume_continues() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"0123456789abcdef".repeat(1000);
        let d = Digest::of(&data);
        let mut w = store.resume_writer((&d, data.len() as u64)).unwrap();
        w.write_all(&data[..7000]).unwrap();
        drop(w);
        let mut w = store.resume_writer((&d, data.len() as u64)).unwrap();
        assert_eq!(w.written(), 7000);
        w.write_all(&data[7000..]).unwrap();
        assert_eq!(w.commit().unwrap(), d);
        assert_eq!(store.read_blob(&d).unwrap(), data);
    }

    #[test]
    fn concurrent_writers_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let d = Digest::of(&data);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut w = store.blob_writer(Some((&d, data.len() as u64))).unwrap();
                    for chunk in data.chunks(65536) {
                        w.write_all(chunk).unwrap();
                        assert!(!store.has_blob(&d) || store.read_blob(&d).unwrap() == data);
                    }
                    assert_eq!(w.commit().unwrap(), d);
                });
            }
        });
        assert_eq!(store.read_blob(&d).unwrap(), data);
        assert_eq!(store.list_blobs().unwrap(), vec![d]);
    }

    #[test]
    fn tags_roundtrip_and_concurrent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_blob(b"{}").unwrap();
        let desc = Descriptor::new(MediaType::ImageManifest, 2, d.to_oci());
        std::thread::scope(|s| {
            for i in 0..16 {
                let store = &store;
                let desc = desc.clone();
                s.spawn(move || store.tag(&format!("img{i}:latest"), desc).unwrap());
            }
        });
        assert_eq!(store.list().unwrap().len(), 16);
        store.tag("img0:latest", desc.clone()).unwrap();
        assert_eq!(store.list().unwrap().len(), 16);
        assert_eq!(
            store.resolve("img3:latest").unwrap().digest(),
            desc.digest()
        );
        assert!(store.untag("img3:latest").unwrap());
        assert!(!store.untag("img3:latest").unwrap());
        assert!(matches!(
            store.resolve("img3:latest"),
            Err(Error::ImageNotFound(_))
        ));
    }
}
