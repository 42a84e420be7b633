//! Manifests as the registry serves them: OCI manifest and index, Docker schema 2
//! manifest and manifest list. Parsed leniently (only the fields a pull needs).

use serde::Deserialize;

use crate::error::{Error, Result};

pub use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE as DOCKER_MANIFEST_LIST,
    IMAGE_MANIFEST_MEDIA_TYPE as DOCKER_MANIFEST, OCI_IMAGE_INDEX_MEDIA_TYPE as OCI_INDEX,
    OCI_IMAGE_MEDIA_TYPE as OCI_MANIFEST,
};

/// A blob or manifest reference inside a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Desc {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform, for index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An OS/architecture pair with optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `v8`.
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let mut parts = s.split('/');
        let (os, arch) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let variant = parts.next().map(str::to_owned);
        if os.is_empty() || arch.is_empty() || parts.next().is_some() {
            return Err(Error::InvalidReference {
                reference: s.to_owned(),
                reason: "platform must be os/arch[/variant]".into(),
            });
        }
        Ok(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant,
        })
    }

    /// What docker defaults to on this machine kind.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// Whether an index entry's platform satisfies this request.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match &self.variant {
                Some(v) => other.variant.as_deref() == Some(v.as_str()),
                None => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Desc>,
    layers: Option<Vec<Desc>>,
    manifests: Option<Vec<Desc>>,
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An image: one config and its layers, bottom first.
    Image {
        /// Media type of the manifest itself.
        media_type: String,
        /// The config blob.
        config: Desc,
        /// Layer blobs.
        layers: Vec<Desc>,
    },
    /// An index or manifest list.
    Index {
        /// Media type of the index itself.
        media_type: String,
        /// Entries.
        manifests: Vec<Desc>,
    },
}

impl Parsed {
    /// Parses `bytes`; `content_type` is the HTTP header (used when the body lacks one).
    pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<Parsed> {
        let bad = |reason: String| Error::Manifest {
            reference: what.to_owned(),
            reason,
        };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if raw.schema_version != 2 {
            return Err(bad(format!(
                "schema version {} is not supported (only 2)",
                raw.schema_version
            )));
        }
        let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_owned());
        let media_type = raw.media_type.or(ct).unwrap_or_default();
        if let Some(manifests) = raw.manifests {
            let media_type = if media_type.is_empty() {
                OCI_INDEX.to_owned()
            } else {
                media_type
            };
            return Ok(Parsed::Index {
                media_type,
                manifests,
            });
        }
        match (raw.config, raw.layers) {
            (Some(config), Some(layers)) => {
                let media_type = if media_type.is_empty() {
                    OCI_MANIFEST.to_owned()
                } else {
                    media_type
                };
                Ok(Parsed::Image {
                    media_type,
                    config,
                    layers,
                })
            }
            _ => Err(bad("neither an image manifest nor an index".into())),
        }
    }

    /// The media type of the document.
    pub fn media_type(&self) -> &str {
        match self {
            Parsed::Image { media_type, .. } | Parsed::Index { media_type, .. } => media_type,
        }
    }
}

/// Picks the entry for `want` from an index.
pub fn select_platform<'a>(manifests: &'a [Desc], want: &Platform, what: &str) -> Result<&'a Desc> {
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .ok_or_else(|| Error::Platform {
            reference: what.to_owned(),
            platform: want.to_string(),
            available: manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn docker_list_selects_platform() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":11,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Parsed::Index {
            manifests,
            media_type,
        } = Parsed::parse(doc.as_bytes(), None, "x").unwrap()
        else {
            panic!("not an index")
        };
        assert_eq!(media_type, DOCKER_MANIFEST_LIST);
        assert_eq!(
            select_platform(&manifests, &Platform::linux_amd64(), "x")
                .unwrap()
                .digest,
            D2
        );
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(select_platform(&manifests, &arm, "x").unwrap().digest, D1);
        let err = select_platform(&manifests, &Platform::parse("linux/s390x").unwrap(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    }

    #[test]
    fn oci_manifest_without_media_type_uses_header() {
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D1}","size":2}},"layers":[{{"mediaType":"l","digest":"{D2}","size":3}}]}}"#
        );
        let p = Parsed::parse(
            doc.as_bytes(),
            Some(&format!("{OCI_MANIFEST}; charset=utf-8")),
            "x",
        )
        .unwrap();
        assert_eq!(p.media_type(), OCI_MANIFEST);
        let Parsed::Image { layers, .. } = p else {
            panic!()
        };
        assert_eq!(layers[0].size, 3);
    }

    #[test]
    fn schema1_is_refused() {
        let err = Parsed::parse(br#"{"schemaVersion":1}"#, None, "x").unwrap_err();
        assert!(err.to_string().contains("schema version 1"));
    }
}
