//! New layers from directories and images committed from them.
//!
//! [`write_dir_layer`] turns a directory (typically an overlayfs upper directory) into
//! a reproducible gzip OCI layer: entries sorted by name, numeric owners only, mtimes
//! clamped to an epoch, no atime/ctime or user names, extended attributes such as
//! `security.capability` as PAX `SCHILY.xattr.*` records, and overlay whiteouts (0:0
//! character devices, the `trusted.overlay.opaque` xattr) written as OCI `.wh.`
//! entries. [`Store::adopt_snapshot`] keeps such a directory as the layer's snapshot
//! so it need not be unpacked again, and [`commit_image`] stores config + manifest.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest as _, Sha256};

use crate::{Digest, Error, Result, Store};

/// A layer just written to the store.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// Descriptor of the compressed blob.
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (the diff ID).
    pub diff_id: Digest,
}

struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `dir` as a gzip layer into `store`; mtimes later than `epoch` become `epoch`.
pub fn write_dir_layer(store: &Store, dir: &Path, epoch: u64) -> Result<NewLayer> {
    let writer = store.blob_writer(None)?;
    let buffered = io::BufWriter::with_capacity(1 << 20, writer);
    // fixed gzip header (no name, mtime 0) and level: the same bytes every run
    let gz = flate2::GzBuilder::new().write(buffered, flate2::Compression::new(6));
    let mut hw = HashWriter {
        inner: gz,
        hasher: Sha256::new(),
    };
    {
        let mut b = tar::Builder::new(&mut hw);
        b.mode(tar::HeaderMode::Deterministic);
        let mut w = TreeWriter {
            builder: &mut b,
            epoch,
            links: HashMap::new(),
        };
        w.dir(dir, "")?;
        b.finish().map_err(Error::io("write layer of", dir))?;
    }
    let diff_id = Digest::from_sha256(hw.hasher.finalize().into());
    let buffered = hw
        .inner
        .finish()
        .map_err(Error::io("compress layer of", dir))?;
    let writer = buffered
        .into_inner()
        .map_err(|e| Error::io("write layer of", dir)(e.into_error()))?;
    let size = writer.written();
    let digest = writer.commit()?;
    Ok(NewLayer {
        descriptor: Descriptor::new(MediaType::ImageLayerGzip, size, digest.to_oci()),
        diff_id,
    })
}

struct TreeWriter<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    epoch: u64,
    links: HashMap<(u64, u64), String>,
}

fn header(kind: tar::EntryType, md: &fs::Metadata, epoch: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid().into());
    h.set_gid(md.gid().into());
    h.set_mtime((md.mtime().max(0) as u64).min(epoch));
    h.set_size(0);
    h
}

fn is_opaque(path: &Path) -> bool {
    matches!(
        xattr_get(path, "trusted.overlay.opaque"),
        Some(v) if v == b"y"
    )
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and buf is valid for buf.len() bytes.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// Extended attributes worth keeping in a layer (overlayfs' bookkeeping and SELinux
/// labels left out), sorted by name.
fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(p) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return Vec::new();
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: p is NUL-terminated and names is valid for names.len() bytes.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        // SELinux labels belong to the host, not to the image
        if name.starts_with("trusted.overlay.")
            || name.starts_with("user.overlay.")
            || name == "security.selinux"
        {
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name.as_str()) else {
            continue;
        };
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: both strings are NUL-terminated and buf is valid for buf.len() bytes.
        let r = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r >= 0 {
            buf.truncate(r as usize);
            out.push((name, buf));
        }
    }
    out.sort();
    out
}

impl<W: Write> TreeWriter<'_, W> {
    fn pax_xattrs(&mut self, path: &Path) -> Result<()> {
        let x = xattrs(path);
        if x.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, &[u8])> = x
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        self.builder
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(Error::io("write layer entry", path))
    }

    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
            .map_err(Error::io("read directory", dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(Error::io("read directory", dir))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let path = dir.join(&name);
            let name = name.to_string_lossy();
            let rel = format!("{prefix}{name}");
            self.entry(&path, &rel, prefix, &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &str, prefix: &str, name: &str) -> Result<()> {
        let md = fs::symlink_metadata(path).map_err(Error::io("stat", path))?;
        let ft = md.file_type();
        let werr = |e| Error::io("write layer entry", path)(e);
        let whiteout = ft.is_char_device() && md.rdev() == 0;
        if !whiteout && !ft.is_socket() {
            self.pax_xattrs(path)?;
        }
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, &md, self.epoch);
            self.builder
                .append_data(&mut h, format!("{rel}/"), io::empty())
                .map_err(werr)?;
            if is_opaque(path) {
                let mut h = header(tar::EntryType::Regular, &md, self.epoch);
                h.set_mode(0o644);
                self.builder
                    .append_data(&mut h, format!("{rel}/.wh..wh..opq"), io::empty())
                    .map_err(werr)?;
            }
            return self.dir(path, &format!("{rel}/"));
        }
        if ft.is_char_device() && md.rdev() == 0 {
            // overlayfs whiteout -> OCI whiteout file
            let mut h = header(tar::EntryType::Regular, &md, self.epoch);
            h.set_mode(0o644);
            return self
                .builder
                .append_data(&mut h, format!("{prefix}.wh.{name}"), io::empty())
                .map_err(werr);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(Error::io("read link", path))?;
            let mut h = header(tar::EntryType::Symlink, &md, self.epoch);
            return self.builder.append_link(&mut h, rel, &target).map_err(werr);
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut h = header(tar::EntryType::Link, &md, self.epoch);
                    return self.builder.append_link(&mut h, rel, first).map_err(werr);
                }
                self.links.insert(key, rel.to_string());
            }
            let mut h = header(tar::EntryType::Regular, &md, self.epoch);
            h.set_size(md.len());
            let f = fs::File::open(path).map_err(Error::io("open", path))?;
            return self.builder.append_data(&mut h, rel, f).map_err(werr);
        }
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            // sockets do not belong in layers
            return Ok(());
        };
        let mut h = header(kind, &md, self.epoch);
        let rdev = md.rdev();
        h.set_device_major(libc::major(rdev)).map_err(werr)?;
        h.set_device_minor(libc::minor(rdev)).map_err(werr)?;
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(werr)
    }
}

impl Store {
    /// Moves `dir` (whiteouts in overlay form) into the store as the snapshot of
    /// `chain_id`, so the layer need not be unpacked again. When that snapshot exists
    /// already, `dir` is removed instead. Returns the snapshot path.
    pub fn adopt_snapshot(
        &self,
        dir: &Path,
        diff_id: &Digest,
        chain_id: &Digest,
    ) -> Result<PathBuf> {
        let done = self.snapshot_path(chain_id);
        if done.is_dir() {
            let _ = fs::remove_dir_all(dir);
            return Ok(done);
        }
        let tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(self.snapshots_dir())
            .map_err(Error::io(
                "create temporary directory in",
                self.snapshots_dir(),
            ))?;
        let fsdir = tmp.path().join("fs");
        fs::rename(dir, &fsdir).map_err(Error::io("move snapshot", dir))?;
        fs::write(tmp.path().join("diffid"), diff_id.to_string())
            .map_err(Error::io("write", tmp.path()))?;
        let final_dir = self.snapshots_dir().join(chain_id.hex());
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &final_dir) {
            Ok(()) => Ok(done),
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
}

/// Stores `config` (an image config document) and a manifest over `layers`; returns
/// the manifest's descriptor. Nothing is tagged.
pub fn commit_image(
    store: &Store,
    config: &serde_json::Value,
    layers: &[Descriptor],
) -> Result<Descriptor> {
    let config_desc = store.put_json(MediaType::ImageConfig, config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers,
    });
    store.put_json(MediaType::ImageManifest, &manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_is_sorted_clamped_and_reproducible() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("b/c")).unwrap();
        fs::write(d.join("z"), "z").unwrap();
        fs::write(d.join("a"), "a").unwrap();
        fs::write(d.join("b/c/f"), "f").unwrap();
        std::os::unix::fs::symlink("a", d.join("l")).unwrap();
        let one = write_dir_layer(&store, &d, 0).unwrap();
        let two = write_dir_layer(&store, &d, 0).unwrap();
        assert_eq!(one.diff_id, two.diff_id);
        assert_eq!(one.descriptor.digest(), two.descriptor.digest());
        let blob = store
            .read_blob(&crate::desc_digest(&one.descriptor).unwrap())
            .unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        let names: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        let paths: Vec<&str> = names.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a", "b/", "b/c/", "b/c/f", "l", "z"]);
        assert!(names.iter().all(|(_, m)| *m == 0));
    }

    #[test]
    fn user_xattrs_are_kept() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(&d).unwrap();
        let f = d.join("f");
        fs::write(&f, "f").unwrap();
        let p = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a valid value buffer.
        let r = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                c"user.test".as_ptr(),
                b"v1".as_ptr().cast(),
                2,
                0,
            )
        };
        if r != 0 {
            // the file system refuses user xattrs: nothing to check here
            return;
        }
        let l = write_dir_layer(&store, &d, 0).unwrap();
        let blob = store
            .read_blob(&crate::desc_digest(&l.descriptor).unwrap())
            .unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let ext: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(
            ext,
            [("SCHILY.xattr.user.test".to_string(), b"v1".to_vec())]
        );
    }
}
