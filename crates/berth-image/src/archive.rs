//! Import and export: docker-archive (what `docker save`/`docker load` use) and
//! oci-archive (a tarred OCI layout).
//!
//! `save` writes both at once: an OCI layout (`oci-layout`, `index.json`, `blobs/`)
//! plus docker's `manifest.json` and `repositories`, as docker 25 does, so `docker
//! load`, `skopeo copy docker-archive:` and `skopeo copy oci-archive:` all read it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde_json::json;

use crate::manifest::{Compression, Platform};
use crate::{Digest, Error, Image, REF_NAME_ANNOTATION, Result, Store, desc_digest, ref_name};

const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, path, data)
}

/// Writes `names` (tags or ids resolvable in `store`) as one archive to `out`.
pub fn save<W: Write>(store: &Store, names: &[String], out: W) -> Result<W> {
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    for name in names {
        let img = store.image(name, &Platform::default())?;
        let tag = store.resolve(name).ok().map(|_| name.clone());
        match images.iter_mut().find(|(i, _)| i.digest() == img.digest()) {
            Some((_, tags)) => tags.extend(tag),
            None => images.push((img, tag.into_iter().collect())),
        }
    }
    let map_err = |e: io::Error| Error::io("write archive", "<output>")(e);
    let mut b = tar::Builder::new(out);
    append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(map_err)?;
    let mut written: std::collections::HashSet<Digest> = Default::default();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index_entries = Vec::new();
    for (img, tags) in &images {
        let mut blobs = vec![img.digest(), img.config_digest.clone()];
        for l in img.manifest.layers() {
            blobs.push(desc_digest(l)?);
        }
        for d in &blobs {
            if !written.insert(d.clone()) {
                continue;
            }
            let mut f = store.open_blob(d)?;
            let size = f
                .metadata()
                .map_err(Error::io("stat", store.blob_path(d)))?
                .len();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(size);
            h.set_mtime(0);
            b.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)
                .map_err(map_err)?;
        }
        let layers: Vec<String> = img
            .manifest
            .layers()
            .iter()
            .map(|l| format!("blobs/sha256/{}", l.as_digest_sha256().unwrap_or_default()))
            .collect();
        docker_manifest.push(json!({
            "Config": format!("blobs/sha256/{}", img.config_digest.hex()),
            "RepoTags": tags,
            "Layers": layers,
        }));
        let top = img
            .diff_ids()?
            .last()
            .map(|d| d.hex().to_string())
            .unwrap_or_default();
        for t in tags {
            if let Some((repo, tag)) = split_tag(t) {
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag.to_string(), top.clone());
            }
        }
        if tags.is_empty() {
            index_entries.push(img.manifest_desc.clone());
        }
        for t in tags {
            let mut d = img.manifest_desc.clone();
            let mut ann = HashMap::new();
            ann.insert(REF_NAME_ANNOTATION.to_string(), t.clone());
            ann.insert(CONTAINERD_NAME.to_string(), t.clone());
            d.set_annotations(Some(ann));
            index_entries.push(d);
        }
    }
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(index_entries);
    append_bytes(&mut b, "index.json", &to_json(&index)?).map_err(map_err)?;
    append_bytes(&mut b, "manifest.json", &to_json(&docker_manifest)?).map_err(map_err)?;
    append_bytes(&mut b, "repositories", &to_json(&repositories)?).map_err(map_err)?;
    b.into_inner().map_err(map_err)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(Error::json("serialize archive metadata"))
}

/// `repo:tag` split at the tag's colon (not a registry port's).
fn split_tag(name: &str) -> Option<(&str, &str)> {
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let colon = name[slash..].rfind(':')? + slash;
    Some((&name[..colon], &name[colon + 1..]))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads a docker-archive or oci-archive from `input` into the store; returns the
/// names tagged (and the digests of untagged images).
pub fn load<R: Read>(store: &Store, input: R) -> Result<Vec<String>> {
    let mut archive = tar::Archive::new(input);
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
    let rd = |e: io::Error| Error::io("read archive", "<input>")(e);
    for entry in archive.entries().map_err(rd)? {
        let mut entry = entry.map_err(rd)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        let size = entry.size();
        if matches!(
            path.as_str(),
            "manifest.json" | "index.json" | "repositories" | "oci-layout"
        ) {
            if size > 64 << 20 {
                return Err(Error::invalid(
                    format!("archive member {path}"),
                    "too large",
                ));
            }
            let mut v = Vec::new();
            entry.read_to_end(&mut v).map_err(rd)?;
            meta.insert(path, v);
            continue;
        }
        let expected = path
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::from_hex(h).ok());
        let wanted = expected.is_some()
            || path.ends_with(".tar")
            || (path.ends_with(".json") && !path.contains('/'));
        if !wanted {
            continue;
        }
        if let Some(d) = &expected
            && store.has_blob(d)
        {
            files.insert(path, (d.clone(), size));
            continue;
        }
        let mut w = store.blob_writer(expected.as_ref().map(|d| (d, size)))?;
        io::copy(&mut entry, &mut w).map_err(rd)?;
        let d = w.commit()?;
        files.insert(path, (d, size));
    }
    let mut loaded = Vec::new();
    let blob_desc = |path: &str, mt: MediaType| -> Result<Descriptor> {
        let (d, size) = files.get(path.trim_start_matches("./")).ok_or_else(|| {
            Error::invalid("archive", format!("member {path} listed but missing"))
        })?;
        Ok(Descriptor::new(mt, *size, d.to_oci()))
    };
    let oci_index: Option<ImageIndex> = match meta.get("index.json") {
        Some(b) => {
            Some(serde_json::from_slice(b).map_err(Error::json("parse archive index.json"))?)
        }
        None => None,
    };
    if let Some(m) = meta.get("manifest.json") {
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(m).map_err(Error::json("parse archive manifest.json"))?;
        for e in entries {
            let config = blob_desc(&e.config, MediaType::ImageConfig)?;
            // keep the archive's own manifest when it has one for this config
            let original = oci_index.as_ref().and_then(|idx| {
                idx.manifests().iter().find(|d| {
                    store
                        .image_from_desc(d, &Platform::default())
                        .is_ok_and(|img| img.config_digest.to_oci() == *config.digest())
                })
            });
            let desc = match original {
                Some(d) => {
                    let mut d = d.clone();
                    d.set_annotations(None);
                    d
                }
                None => {
                    let mut layers = Vec::new();
                    for l in &e.layers {
                        let (d, _) = files.get(l.trim_start_matches("./")).ok_or_else(|| {
                            Error::invalid("archive", format!("layer {l} listed but missing"))
                        })?;
                        let mut head = [0u8; 4];
                        let n = store.open_blob(d)?.read(&mut head).map_err(rd)?;
                        let mt = match Compression::sniff(&head[..n]) {
                            Compression::Gzip => MediaType::ImageLayerGzip,
                            Compression::Zstd => MediaType::ImageLayerZstd,
                            Compression::None => MediaType::ImageLayer,
                        };
                        layers.push(blob_desc(l, mt)?);
                    }
                    let manifest = json!({
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": config,
                        "layers": layers,
                    });
                    store.put_json(MediaType::ImageManifest, &manifest)?
                }
            };
            let img = store.image_from_desc(&desc, &Platform::default())?;
            let tags = e.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                keep_untagged(store, &desc)?;
                loaded.push(img.digest().to_string());
            }
            for t in tags {
                store.tag(&t, desc.clone())?;
                loaded.push(t);
            }
        }
        return Ok(loaded);
    }
    let Some(index) = oci_index else {
        return Err(Error::invalid(
            "archive",
            "neither manifest.json nor index.json found",
        ));
    };
    for d in index.manifests() {
        // fails when a referenced blob is missing from the archive
        store.image_from_desc(d, &Platform::default())?;
        let name = d
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINERD_NAME))
            .cloned()
            .or_else(|| ref_name(d).map(str::to_string));
        let mut clean = d.clone();
        clean.set_annotations(None);
        match name {
            Some(n) => {
                store.tag(&n, clean)?;
                loaded.push(n);
            }
            None => {
                keep_untagged(store, &clean)?;
                loaded.push(d.digest().to_string());
            }
        }
    }
    Ok(loaded)
}

/// Records an unnamed image in index.json so garbage collection keeps it.
fn keep_untagged(store: &Store, desc: &Descriptor) -> Result<()> {
    store.update_index(|idx| {
        if !idx
            .manifests()
            .iter()
            .any(|d| d.digest() == desc.digest() && ref_name(d).is_none())
        {
            let mut m = idx.manifests().clone();
            m.push(desc.clone());
            idx.set_manifests(m);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tags() {
        assert_eq!(split_tag("busybox:latest"), Some(("busybox", "latest")));
        assert_eq!(
            split_tag("localhost:5000/a/b:v1"),
            Some(("localhost:5000/a/b", "v1"))
        );
        assert_eq!(split_tag("localhost:5000/a"), None);
    }

    #[test]
    fn save_load_roundtrip() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = Store::open(a.path()).unwrap();
        let desc = crate::fixtures::busybox_image(&sa, "busybox:latest").unwrap();
        let bytes = save(&sa, &["busybox:latest".to_string()], Vec::new()).unwrap();
        let sb = Store::open(b.path()).unwrap();
        let names = load(&sb, &bytes[..]).unwrap();
        assert_eq!(names, vec!["busybox:latest"]);
        assert_eq!(
            sb.resolve("busybox:latest").unwrap().digest(),
            desc.digest()
        );
    }
}
