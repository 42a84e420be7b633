//! An on-disk cache of compiled programs.
//!
//! libseccomp needs milliseconds to build a large multi-architecture filter such as the
//! default profile, several times a whole crun `run`. The program only depends on the
//! profile, the library and the kernel's seccomp API level, so it is cached by the
//! SHA-256 of those (a collision-resistant key: a crafted profile cannot take the place
//! of another one's program).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

use crate::backend::{Compiled, Insn, Libseccomp};
use crate::profile::Profile;
use crate::{Error, Filter};

/// Bump when what a backend emits for the same profile changes (the ENOSYS stub did),
/// so stale entries are not reused.
const MAGIC: &[u8; 8] = b"BSECBPF2";

fn key(spec: &LinuxSeccomp) -> Result<String, Error> {
    let mut h = Sha256::new();
    h.update(b"berth-seccomp ");
    h.update(MAGIC);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let v = libseccomp::ScmpVersion::current().map_err(|source| Error::Libseccomp {
        what: "reading the library version".into(),
        source,
    })?;
    h.update(format!(
        " libseccomp {}.{}.{} api {}\n",
        v.major,
        v.minor,
        v.micro,
        libseccomp::get_api()
    ));
    h.update(serde_json::to_vec(spec).map_err(Error::Json)?);
    Ok(hex::encode(h.finalize()))
}

fn encode(c: &Compiled) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + c.program.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(c.program.len() as u32).to_le_bytes());
    for i in &c.program {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out.extend_from_slice(c.unknown.join("\n").as_bytes());
    out
}

fn decode(b: &[u8]) -> Option<Compiled> {
    let rest = b.strip_prefix(MAGIC)?;
    let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let body = rest.get(4..4 + n.checked_mul(8)?)?;
    let program = body
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let names = std::str::from_utf8(&rest[4 + n * 8..]).ok()?;
    let unknown = names
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Some(Compiled { program, unknown })
}

fn cache_err(path: &Path, source: io::Error) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads an entry only if this user owns it and nobody else may write it: a program
/// someone else could have planted would decide what the container may do.
fn read_trusted(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut f = fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid || meta.mode() & 0o022 != 0 {
        tracing::warn!(path = %path.display(), "seccomp cache entry not owned by us or writable by others, ignored");
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

impl Filter {
    /// Like [`Filter::compile`], reusing a program compiled earlier for the same profile
    /// from `cache_dir` (created 0700 if missing; keep it root-owned, e.g. under the
    /// runtime's state root). A damaged entry is recompiled and replaced.
    pub fn compile_cached(spec: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter, Error> {
        let profile = Profile::from_oci(spec)?;
        let path: PathBuf = cache_dir.join(key(spec)?);
        if let Some(bytes) = read_trusted(&path) {
            match decode(&bytes) {
                Some(compiled) => return Filter::from_compiled(&profile, compiled),
                None => {
                    tracing::warn!(path = %path.display(), "damaged seccomp cache entry, recompiling")
                }
            }
        }
        let compiled = crate::Backend::compile(&Libseccomp, &profile)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)
            .map_err(|e| cache_err(cache_dir, e))?;
        // Write then rename: a concurrent reader sees the old state or the whole entry.
        let tmp = cache_dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id()
        ));
        let write = || -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&encode(&compiled))?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(cache_err(&path, e));
        }
        Filter::from_compiled(&profile, compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_filter_equals_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::default_profile();
        let fresh = Filter::compile(&spec).unwrap();
        let first = Filter::compile_cached(&spec, dir.path()).unwrap();
        let second = Filter::compile_cached(&spec, dir.path()).unwrap();
        assert_eq!(fresh, first);
        assert_eq!(fresh, second);
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temp files left");

        // A damaged entry is replaced.
        let entry = entries[0].as_ref().unwrap().path();
        fs::write(&entry, b"garbage").unwrap();
        assert_eq!(Filter::compile_cached(&spec, dir.path()).unwrap(), fresh);
        assert!(fs::read(&entry).unwrap().starts_with(MAGIC));

        // An entry others could have written is not trusted (a planted program would
        // otherwise be loaded): it is recompiled and replaced with a private one.
        use std::os::unix::fs::PermissionsExt;
        fs::write(
            &entry,
            encode(&Compiled {
                program: vec![],
                unknown: vec![],
            }),
        )
        .unwrap();
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(Filter::compile_cached(&spec, dir.path()).unwrap(), fresh);
        assert_eq!(
            fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn different_profiles_get_different_entries() {
        let dir = tempfile::tempdir().unwrap();
        let a = crate::default_profile();
        let b = crate::default_profile_for(&["CAP_SYS_ADMIN".into()]);
        let fa = Filter::compile_cached(&a, dir.path()).unwrap();
        let fb = Filter::compile_cached(&b, dir.path()).unwrap();
        assert_ne!(fa, fb);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
