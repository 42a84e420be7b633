//! File system helpers of the executor: paths resolved inside a root, source
//! discovery with wildcards and `.dockerignore`, content digests and copies.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::dockerignore::Matcher;
use crate::executor::BuildError;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { op, path, source }
}

/// Resolves `path` (absolute inside the container) under `root`, following symlinks as
/// if `root` were `/` (an absolute link target restarts at `root`, `..` stops there).
/// With `follow_last` false a final symlink is not followed. Missing components are
/// kept as written.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut todo: Vec<String> = split(path).into_iter().rev().collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." | "" => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let last = todo.is_empty();
        let mut probe = root.to_path_buf();
        for p in &cur {
            probe.push(p);
        }
        probe.push(&c);
        match fs::symlink_metadata(&probe) {
            Ok(md) if md.file_type().is_symlink() && (!last || follow_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {path}"
                    )));
                }
                let target = fs::read_link(&probe)?;
                let t = target.to_string_lossy();
                if t.starts_with('/') {
                    cur.clear();
                }
                for part in split(&t).into_iter().rev() {
                    todo.push(part);
                }
            }
            _ => cur.push(c),
        }
    }
    let mut out = root.to_path_buf();
    for p in cur {
        out.push(p);
    }
    Ok(out)
}

fn split(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(str::to_string)
        .collect()
}

/// Creates `path` and missing parents inside `root` (symlinks resolved inside it),
/// new directories 0755 owned by `owner` (or root). Returns the host path.
pub fn mkdir_in_root(
    root: &Path,
    path: &str,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, BuildError> {
    let mut logical = String::new();
    let mut host = root.to_path_buf();
    for part in split(path) {
        logical.push('/');
        logical.push_str(&part);
        host = resolve_in_root(root, &logical, true).map_err(io_err("resolve", &host))?;
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(BuildError::Io {
                    op: "create directory (a file is in the way)",
                    path: host,
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                });
            }
            Err(_) => {
                fs::create_dir(&host).map_err(io_err("create directory", &host))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &host))?;
                let (u, g) = owner.unwrap_or((0, 0));
                std::os::unix::fs::lchown(&host, Some(u), Some(g))
                    .map_err(io_err("chown", &host))?;
            }
        }
    }
    Ok(host)
}

/// Go's `filepath.Match` for one path component (`*`, `?`, `[...]`, `\` escapes).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let neg = matches!(p.get(1), Some('^') | Some('!'));
                if neg {
                    i += 1;
                }
                let mut hit = false;
                let start = i;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        if p[i] <= *c && *c <= p[i + 2] {
                            hit = true;
                        }
                        i += 3;
                    } else {
                        if p[i] == *c {
                            hit = true;
                        }
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false;
                }
                hit != neg && m(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// Whether a source has wildcard characters.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a source path to one relative to its root (`..` cannot leave it).
pub fn clean_rel(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s.to_str().unwrap_or("")),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.join("/")
}

/// One thing to copy, found under a source root.
#[derive(Debug, Clone)]
pub struct Item {
    /// Path relative to the source root ("" for the root itself).
    pub rel: String,
    /// Host path.
    pub path: PathBuf,
}

/// The items a (possibly wildcard) source names under `root`, minus ignored ones.
pub fn find_sources(
    root: &Path,
    src: &str,
    ignore: Option<&Matcher>,
) -> Result<Vec<Item>, BuildError> {
    let rel = clean_rel(src);
    let ignored = |r: &str| ignore.is_some_and(|m| !r.is_empty() && m.matches(r));
    if !has_wildcard(&rel) {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        if fs::symlink_metadata(&path).is_err() || ignored(&rel) {
            return Err(BuildError::NotFound(src.to_string()));
        }
        let mut item = Item { rel, path };
        follow_top(root, &mut item)?;
        return Ok(vec![item]);
    }
    let mut found = vec![Item {
        rel: String::new(),
        path: root.to_path_buf(),
    }];
    for part in rel.split('/') {
        let mut next = Vec::new();
        for it in &found {
            if !has_wildcard(part) {
                let p = it.path.join(part);
                if fs::symlink_metadata(&p).is_ok() {
                    next.push(Item {
                        rel: join(&it.rel, part),
                        path: p,
                    });
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&it.path) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| glob_match(part, n))
                .collect();
            names.sort();
            for n in names {
                next.push(Item {
                    rel: join(&it.rel, &n),
                    path: it.path.join(&n),
                });
            }
        }
        found = next;
    }
    found.retain(|i| !ignored(&i.rel));
    if found.is_empty() {
        return Err(BuildError::NotFound(src.to_string()));
    }
    found.iter_mut().try_for_each(|i| follow_top(root, i))?;
    Ok(found)
}

/// A source named directly is followed when it is a symlink (as BuildKit does),
/// staying inside `root`; what lies below it is copied as is.
fn follow_top(root: &Path, item: &mut Item) -> Result<(), BuildError> {
    if fs::symlink_metadata(&item.path).is_ok_and(|m| m.file_type().is_symlink()) {
        let target =
            resolve_in_root(root, &item.rel, true).map_err(io_err("resolve", &item.path))?;
        if fs::symlink_metadata(&target).is_err() {
            return Err(BuildError::NotFound(item.rel.clone()));
        }
        item.path = target;
    }
    Ok(())
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink with its target.
    Symlink(String),
}

/// One entry under an item.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the item ("" for the item itself).
    pub rel: String,
    /// Host path.
    pub path: PathBuf,
    /// Its kind.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Everything under `item` in sorted order (the item first), skipping what `ignore`
/// excludes (paths relative to the context are `item.rel` + entry path).
pub fn walk(item: &Item, ignore: Option<&Matcher>) -> Result<Vec<Entry>, BuildError> {
    let mut out = Vec::new();
    walk_into(item, "", &item.path, ignore, true, &mut out)?;
    Ok(out)
}

fn walk_into(
    item: &Item,
    rel: &str,
    path: &Path,
    ignore: Option<&Matcher>,
    emit: bool,
    out: &mut Vec<Entry>,
) -> Result<(), BuildError> {
    let md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(
            fs::read_link(path)
                .map_err(io_err("read link", path))?
                .to_string_lossy()
                .into_owned(),
        )
    } else if ft.is_file() {
        Kind::File
    } else {
        // devices, fifos and sockets are not copied from a context
        return Ok(());
    };
    let is_dir = kind == Kind::Dir;
    if emit {
        out.push(Entry {
            rel: rel.to_string(),
            path: path.to_path_buf(),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        });
    }
    if !is_dir {
        return Ok(());
    }
    let mut names: Vec<String> = fs::read_dir(path)
        .map_err(io_err("read directory", path))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let child_rel = join(rel, &n);
        let ctx_rel = join(&item.rel, &child_rel);
        let child = path.join(&n);
        let mut emit = true;
        if let Some(m) = ignore
            && m.matches(&ctx_rel)
        {
            let dir = fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir());
            if !(dir && m.may_contain_reincluded(&ctx_rel)) {
                continue;
            }
            emit = false;
        }
        walk_into(item, &child_rel, &child, ignore, emit, out)?;
    }
    Ok(())
}

/// A digest of entries: names, kinds, modes, link targets and file contents.
pub fn digest_entries(entries: &[Entry], hasher: &mut Sha256) -> Result<(), BuildError> {
    let mut buf = vec![0u8; 64 * 1024];
    for e in entries {
        hasher.update(e.rel.as_bytes());
        hasher.update([0]);
        hasher.update(format!("{:o}", e.mode).as_bytes());
        match &e.kind {
            Kind::Dir => hasher.update(b"d"),
            Kind::Symlink(t) => {
                hasher.update(b"l");
                hasher.update(t.as_bytes());
            }
            Kind::File => {
                hasher.update(b"f");
                let mut f = fs::File::open(&e.path).map_err(io_err("open", &e.path))?;
                loop {
                    let n = f.read(&mut buf).map_err(io_err("read", &e.path))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
        }
        hasher.update([0]);
    }
    Ok(())
}

/// How copied entries get their owner and mode.
#[derive(Debug, Clone, Copy)]
pub struct CopyAttrs {
    /// `--chown`; `None` keeps the source owner when `keep_owner`, else root.
    pub owner: Option<(u32, u32)>,
    /// Keep the source's owner (COPY --from) when no `--chown`.
    pub keep_owner: bool,
    /// `--chmod`.
    pub mode: Option<u32>,
}

/// Copies `entries` so that the entry with rel "" lands at `dest` (a path inside
/// `root`), creating parents.
pub fn copy_entries(
    root: &Path,
    dest: &str,
    entries: &[Entry],
    attrs: CopyAttrs,
) -> Result<(), BuildError> {
    for e in entries {
        let logical = if e.rel.is_empty() {
            dest.to_string()
        } else {
            format!("{}/{}", dest.trim_end_matches('/'), e.rel)
        };
        let (parent, name) = match logical.trim_end_matches('/').rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (String::new(), logical.clone()),
        };
        let pdir = mkdir_in_root(root, &parent, attrs.owner)?;
        let target = pdir.join(&name);
        let (uid, gid) = match (attrs.owner, attrs.keep_owner) {
            (Some(o), _) => o,
            (None, true) => (e.uid, e.gid),
            (None, false) => (0, 0),
        };
        let existing = fs::symlink_metadata(&target).ok();
        match &e.kind {
            Kind::Dir => {
                match &existing {
                    Some(md) if md.is_dir() => {}
                    Some(_) => {
                        fs::remove_file(&target).map_err(io_err("remove", &target))?;
                        fs::create_dir(&target).map_err(io_err("create directory", &target))?;
                    }
                    None => fs::create_dir(&target).map_err(io_err("create directory", &target))?,
                }
                // an existing directory keeps its mode unless --chmod says otherwise;
                // a top-level item dir copies its contents only (docker semantics)
                if !(e.rel.is_empty() && existing.is_some()) || attrs.mode.is_some() {
                    fs::set_permissions(
                        &target,
                        fs::Permissions::from_mode(attrs.mode.unwrap_or(e.mode)),
                    )
                    .map_err(io_err("chmod", &target))?;
                }
                if !(e.rel.is_empty() && existing.is_some()) || attrs.owner.is_some() {
                    std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                        .map_err(io_err("chown", &target))?;
                }
            }
            Kind::File => {
                if let Some(md) = &existing {
                    if md.is_dir() {
                        fs::remove_dir_all(&target).map_err(io_err("remove", &target))?;
                    } else {
                        fs::remove_file(&target).map_err(io_err("remove", &target))?;
                    }
                }
                fs::copy(&e.path, &target).map_err(io_err("copy to", &target))?;
                fs::set_permissions(
                    &target,
                    fs::Permissions::from_mode(attrs.mode.unwrap_or(e.mode)),
                )
                .map_err(io_err("chmod", &target))?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(io_err("chown", &target))?;
            }
            Kind::Symlink(t) => {
                if let Some(md) = &existing {
                    if md.is_dir() {
                        fs::remove_dir_all(&target).map_err(io_err("remove", &target))?;
                    } else {
                        fs::remove_file(&target).map_err(io_err("remove", &target))?;
                    }
                }
                std::os::unix::fs::symlink(t, &target).map_err(io_err("symlink", &target))?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(io_err("chown", &target))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("f?le[0-9]", "file7"));
        assert!(!glob_match("[!a]x", "ax"));
    }

    #[test]
    fn resolves_links_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("real/up")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/abs/sub", true).unwrap(),
            r.join("real/sub")
        );
        assert_eq!(
            resolve_in_root(r, "/real/up/etc", true).unwrap(),
            r.join("etc")
        );
        assert_eq!(resolve_in_root(r, "/abs", false).unwrap(), r.join("abs"));
    }

    #[test]
    fn sources_honour_ignore() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("d/skip")).unwrap();
        fs::write(r.join("d/a.txt"), "a").unwrap();
        fs::write(r.join("d/b.log"), "b").unwrap();
        fs::write(r.join("d/skip/x"), "x").unwrap();
        let m = Matcher::from_dockerignore("**/*.log\nd/skip\n").unwrap();
        let items = find_sources(r, "d", Some(&m)).unwrap();
        let e = walk(&items[0], Some(&m)).unwrap();
        let rels: Vec<&str> = e.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["", "a.txt"]);
        let items = find_sources(r, "d/*.txt", Some(&m)).unwrap();
        assert_eq!(items.len(), 1);
        assert!(find_sources(r, "d/b.log", Some(&m)).is_err());
        // a named symlink is followed, inside the root only
        std::os::unix::fs::symlink("/d/a.txt", r.join("link")).unwrap();
        let items = find_sources(r, "link", None).unwrap();
        assert_eq!(items[0].path, r.join("d/a.txt"));
        assert_eq!(items[0].rel, "link");
    }
}
