//! Manifests and indexes (OCI and Docker schema 2), platform selection, image configs.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::{Digest, Error, Result, Store, desc_digest};

/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer media type (seen in some archives).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Every manifest media type we read, for `Accept` headers.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// Whether a media type names an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(s) => s == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

/// Whether a media type names an image manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageManifest => true,
        MediaType::Other(s) => s == DOCKER_MANIFEST,
        _ => false,
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From a layer media type; `None` when the type says nothing (then sniff magic).
    pub fn from_media_type(media_type: &MediaType) -> Option<Compression> {
        let s = media_type.to_string();
        if s.ends_with("+gzip") || s.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if s.ends_with("+zstd") || s.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if s.ends_with(".tar") || s.ends_with("diff.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// An OS/architecture pair with optional variant, e.g. `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`.
    pub architecture: String,
    /// `v8`, `v7`.
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(Error::invalid(
                "platform",
                format!("{s:?} is not os/arch[/variant]"),
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

/// A resolved single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Descriptor of the image manifest (not of an index above it).
    pub manifest_desc: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Digest of the config blob (docker's image ID).
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfiguration,
}

impl Image {
    /// Digest of the manifest.
    pub fn digest(&self) -> Digest {
        desc_digest(&self.manifest_desc).expect("manifest digest was parsed when loading")
    }

    /// Uncompressed layer digests from the config, bottom first.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|s| s.parse::<Digest>().map_err(Error::from))
            .collect()
    }

    /// Chain IDs of the layers, bottom first.
    pub fn chain_ids(&self) -> Result<Vec<Digest>> {
        Ok(chain_ids(&self.diff_ids()?))
    }
}

/// Chain IDs from diff IDs: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Parses a manifest blob.
pub fn parse_manifest(bytes: &[u8], digest: &Digest) -> Result<ImageManifest> {
    serde_json::from_slice(bytes).map_err(Error::json(format!("parse manifest {digest}")))
}

/// Parses an index / manifest list blob.
pub fn parse_index(bytes: &[u8], digest: &Digest) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(Error::json(format!("parse index {digest}")))
}

/// Guesses the media type of a manifest-like document from its own `mediaType` field
/// or its shape (`manifests` vs `layers`).
pub fn sniff_manifest_type(bytes: &[u8]) -> Option<MediaType> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(MediaType::from(mt));
    }
    if v.get("manifests").is_some() {
        Some(MediaType::ImageIndex)
    } else if v.get("layers").is_some() {
        Some(MediaType::ImageManifest)
    } else {
        None
    }
}

impl Store {
    /// Finds a descriptor by tag, full digest (`sha256:...`), or a unique hex prefix
    /// of a tagged manifest or config digest (at least 4 characters).
    pub fn lookup(&self, reference: &str) -> Result<Descriptor> {
        if let Ok(desc) = self.resolve(reference) {
            return Ok(desc);
        }
        if let Ok(d) = reference.parse::<Digest>() {
            let bytes = self
                .read_blob(&d)
                .map_err(|_| Error::ImageNotFound(reference.into()))?;
            let mt = sniff_manifest_type(&bytes).ok_or_else(|| {
                Error::invalid(format!("manifest {d}"), "not a manifest or index")
            })?;
            return Ok(Descriptor::new(mt, bytes.len() as u64, d.to_oci()));
        }
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found: Vec<Descriptor> = Vec::new();
            for (_, desc) in self.list()? {
                let m = desc_digest(&desc)?;
                let mut hit = m.hex().starts_with(prefix);
                if !hit && let Ok(img) = self.image_from_desc(&desc, &Platform::default()) {
                    hit = img.config_digest.hex().starts_with(prefix);
                }
                if hit && !found.iter().any(|f| f.digest() == desc.digest()) {
                    found.push(desc);
                }
            }
            match found.len() {
                0 => {}
                1 => return Ok(found.remove(0)),
                _ => return Err(Error::Ambiguous(reference.into())),
            }
        }
        Err(Error::ImageNotFound(reference.into()))
    }

    /// Resolves `reference` (see [`Store::lookup`]) to a single-platform image.
    pub fn image(&self, reference: &str, platform: &Platform) -> Result<Image> {
        let desc = self.lookup(reference)?;
        self.image_from_desc(&desc, platform)
    }

    /// Loads the image a descriptor points at, choosing `platform` in an index.
    pub fn image_from_desc(&self, desc: &Descriptor, platform: &Platform) -> Result<Image> {
        let mut desc = desc.clone();
        // an index may point at another index; bound the depth
        for _ in 0..4 {
            let digest = desc_digest(&desc)?;
            let bytes = self.read_blob(&digest)?;
            let mt = if is_index(desc.media_type()) || is_manifest(desc.media_type()) {
                desc.media_type().clone()
            } else {
                sniff_manifest_type(&bytes).unwrap_or(desc.media_type().clone())
            };
            if is_index(&mt) {
                let index = parse_index(&bytes, &digest)?;
                desc = select_platform(&index, platform)
                    .ok_or_else(|| Error::NoPlatform {
                        platform: platform.to_string(),
                        digest: digest.clone(),
                    })?
                    .clone();
                continue;
            }
            let manifest = parse_manifest(&bytes, &digest)?;
            let config_digest = desc_digest(manifest.config())?;
            let config_bytes = self.read_blob(&config_digest)?;
            let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
                .map_err(Error::json(format!("parse image config {config_digest}")))?;
            if config.rootfs().diff_ids().len() != manifest.layers().len() {
                return Err(Error::invalid(
                    format!("image {digest}"),
                    format!(
                        "config lists {} diff ids for {} layers",
                        config.rootfs().diff_ids().len(),
                        manifest.layers().len()
                    ),
                ));
            }
            let mut manifest_desc = Descriptor::new(mt, bytes.len() as u64, digest.to_oci());
            manifest_desc.set_platform(desc.platform().clone());
            return Ok(Image {
                manifest_desc,
                manifest,
                config_digest,
                config,
            });
        }
        Err(Error::invalid("index", "nested more than 4 levels"))
    }
}

/// The manifest in `index` for `platform`: an exact match (variant included when
/// asked), else the only manifest without a platform.
pub fn select_platform<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    let manifests = index.manifests();
    manifests
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
        .or_else(|| {
            let untyped: Vec<&Descriptor> = manifests
                .iter()
                .filter(|d| d.platform().is_none())
                .collect();
            if untyped.len() == 1 {
                Some(untyped[0])
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_selection() {
        let json = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
          {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
          {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let d = Digest::of(json.as_bytes());
        let idx = parse_index(json.as_bytes(), &d).unwrap();
        let amd = select_platform(&idx, &Platform::default()).unwrap();
        assert!(amd.digest().to_string().contains("2222"));
        let arm = select_platform(&idx, &"linux/arm64/v8".parse().unwrap()).unwrap();
        assert!(arm.digest().to_string().contains("1111"));
        assert!(select_platform(&idx, &"linux/s390x".parse().unwrap()).is_none());
        assert!(is_index(&sniff_manifest_type(json.as_bytes()).unwrap()));
    }

    #[test]
    fn chain_ids_follow_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn compression() {
        assert_eq!(
            Compression::from_media_type(&MediaType::ImageLayerGzip),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::Other(DOCKER_LAYER_GZIP.into())),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::ImageLayerZstd),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::ImageLayer),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
    }
}
