//! Image references: `[registry/]name[:tag][@digest]` with docker's defaults.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The registry short names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Where Docker Hub's API actually lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host[:port], `docker.io` for short names.
    pub registry: String,
    /// Repository path, `library/x` for official Docker Hub images.
    pub repository: String,
    /// Tag, `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Pinned digest (`sha256:...`).
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference with docker's rules (a first component with a `.` or `:` or
    /// `localhost` names a registry, else Docker Hub; single names get `library/`).
    pub fn parse(s: &str) -> Result<ImageRef> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("empty".into()));
        }
        // the distribution reference grammar, checked by hand: oci-spec's parser builds
        // a Unicode regex that costs ~15 MiB of memory, more than a whole pull
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                if !is_sha256_digest(d) {
                    return Err(invalid(format!("unsupported digest {d}")));
                }
                (rest, Some(d.to_owned()))
            }
            None => (s, None),
        };
        // a tag follows the last ':' that comes after the last '/' (a ':' before it
        // is a registry port)
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, mut tag) = match rest[slash..].rfind(':') {
            Some(i) => {
                let t = &rest[slash + i + 1..];
                if !valid_tag(t) {
                    return Err(invalid(format!("invalid tag {t:?}")));
                }
                (&rest[..slash + i], Some(t.to_owned()))
            }
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                if !valid_domain(first) {
                    return Err(invalid(format!("invalid registry {first:?}")));
                }
                (first.to_owned(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        if let Some(bad) = repository.split('/').find(|c| !valid_component(c)) {
            return Err(invalid(format!(
                "invalid repository path component {bad:?} (lowercase letters, digits and . _ - only)"
            )));
        }
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
            _ => registry,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        // the limit holds for the normalised name (docker checks `docker.io/library/x`),
        // else a short name near it would print as a reference that does not parse
        if registry.len() + 1 + repository.len() > 255 {
            return Err(invalid("name longer than 255 characters".into()));
        }
        if tag.is_none() && digest.is_none() {
            tag = Some("latest".into());
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The same repository with another tag or digest.
    pub fn with_reference(&self, tag: Option<&str>, digest: Option<&str>) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        }
    }

    /// What goes after `/manifests/`: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host[:port] the HTTP API is served from.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// `registry/repository[:tag]`, the name berth records in its store.
    pub fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}", self.registry, self.repository),
            None => format!("{}/{}", self.registry, self.repository),
        }
    }
}

/// The API host of a registry name (`docker.io` is served elsewhere).
pub fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY || registry == "index.docker.io" {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageRef> {
        ImageRef::parse(s)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: one path component of a repository.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or any number of "-"
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// A registry host (DNS labels or a bracketed IPv6 address) with an optional port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit()))
    {
        return false;
    }
    host.is_empty() && d.starts_with('[')
        || host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether a registry host is on loopback (plain HTTP by default, like docker).
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                registry
            }
        }),
    };
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_go_to_docker_hub_library() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.name(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("someone/tool:1.2").unwrap();
        assert_eq!(r.repository, "someone/tool");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = ImageRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert!(is_loopback(&r.registry));
        let r = ImageRef::parse("localhost/x").unwrap();
        assert_eq!(r.registry, "localhost");
        assert!(is_loopback(&r.registry));
        let r = ImageRef::parse("localhost:5000/x").unwrap();
        assert!(is_loopback(&r.registry));
        assert!(!is_loopback("quay.io"));
        assert!(!is_loopback("example.com:5000"));
        assert!(is_loopback("[::1]:5000"));
    }

    #[test]
    fn digests_are_pinned() {
        let r = ImageRef::parse(&format!("quay.io/x/y@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), D);
        let r = ImageRef::parse(&format!("quay.io/x/y:t@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("quay.io/x/y:t@{D}"));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "x/UPPER",
            "x:tag with space",
            "a@sha256:short",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "host:port/x",
            "reg.io/x:",
            "reg.io/x:.tag",
            "a/b:c:d",
            "[::1/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_limit_counts_the_normalised_name() {
        // 240 characters alone, 258 as docker.io/library/...: docker refuses it too
        let long = "a".repeat(240);
        assert!(ImageRef::parse(&long).is_err());
        let ok = "a".repeat(255 - "docker.io/library/".len());
        let r = ImageRef::parse(&ok).unwrap();
        assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn grammar_accepts_what_docker_accepts() {
        for (input, registry, repository, tag) in [
            ("a__b/c-d/e.f_g", "docker.io", "a__b/c-d/e.f_g", "latest"),
            ("a---b", "docker.io", "library/a---b", "latest"),
            ("index.docker.io/x", "docker.io", "library/x", "latest"),
            ("Reg.IO/x:V_1.0-rc", "Reg.IO", "x", "V_1.0-rc"),
            ("[::1]:5000/x:t", "[::1]:5000", "x", "t"),
            (
                "my-reg.example.com/a/b/c",
                "my-reg.example.com",
                "a/b/c",
                "latest",
            ),
        ] {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
                (registry, repository, Some(tag)),
                "{input}"
            );
        }
    }
}
