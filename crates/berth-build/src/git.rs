//! `ADD <git repository>`: which sources are git repositories (as BuildKit tells
//! them apart), resolving a ref to a commit without cloning (`git ls-remote`), and a
//! shallow checkout of that commit. The `git` command does the transport, so every
//! URL form git knows works (`git://`, `https://` with `SSL_CERT_FILE` passed on as
//! `GIT_SSL_CAINFO`, `ssh://` and `git@host:path` with the build's ssh agent).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A git source: `URL[#REF[:SUBDIR]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository URL, without the fragment.
    pub url: String,
    /// Branch, tag, full ref name or commit; `None` for the remote's HEAD.
    pub reference: Option<String>,
    /// Directory inside the repository to copy instead of its root.
    pub subdir: Option<String>,
}

/// Parses `src` when it names a git repository: `git@host:path`, `git://`, `ssh://`,
/// or an `http(s)://` URL whose path ends in `.git`; `None` for anything else.
pub fn parse(src: &str) -> Option<GitSource> {
    let (url, fragment) = match src.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (src, None),
    };
    let path_part = url.split('?').next().unwrap_or(url);
    let is_git = url.starts_with("git://")
        || url.starts_with("ssh://")
        || (url.starts_with("git@") && url.contains(':'))
        || ((url.starts_with("https://") || url.starts_with("http://"))
            && path_part.trim_end_matches('/').ends_with(".git"));
    if !is_git {
        return None;
    }
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(f) => {
            let (r, s) = match f.split_once(':') {
                Some((r, s)) => (r, Some(s)),
                None => (f, None),
            };
            (
                Some(r.to_string()).filter(|r| !r.is_empty()),
                s.map(|s| s.trim_matches('/').to_string())
                    .filter(|s| !s.is_empty()),
            )
        }
    };
    Some(GitSource {
        url: url.to_string(),
        reference,
        subdir,
    })
}

fn is_commit(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `git` command with no prompts and no system configuration; the CA bundle of
/// `SSL_CERT_FILE` and the agent socket are handed on.
fn git(ssh_auth_sock: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null());
    if std::env::var_os("GIT_SSL_CAINFO").is_none()
        && let Some(f) = std::env::var_os("SSL_CERT_FILE")
    {
        c.env("GIT_SSL_CAINFO", f);
    }
    if let Some(s) = ssh_auth_sock {
        c.env("SSH_AUTH_SOCK", s);
    }
    c
}

fn run(mut c: Command, what: &str) -> Result<String, String> {
    let out = c.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{what}: the git command is not installed")
        } else {
            format!("{what}: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit `src`'s ref names on the remote (a full commit id is taken as is).
pub fn resolve(src: &GitSource, ssh_auth_sock: Option<&Path>) -> Result<String, String> {
    if let Some(r) = &src.reference
        && is_commit(r)
    {
        return Ok(r.to_ascii_lowercase());
    }
    // one listing per repository and build: a Dockerfile often adds several refs or
    // subdirectories of one repository
    static LISTINGS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let known = LISTINGS.lock().ok().and_then(|m| m.get(&src.url).cloned());
    let listing = match known {
        Some(l) => l,
        None => {
            let mut c = git(ssh_auth_sock);
            c.args(["ls-remote", "--", &src.url]);
            let l = run(c, &format!("git ls-remote {}", src.url))?;
            if let Ok(mut m) = LISTINGS.lock() {
                m.insert(src.url.clone(), l.clone());
            }
            l
        }
    };
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(c, _)| *c);
    let commit = match &src.reference {
        None => find("HEAD"),
        Some(r) => find(&format!("refs/tags/{r}^{{}}"))
            .or_else(|| find(&format!("refs/tags/{r}")))
            .or_else(|| find(&format!("refs/heads/{r}")))
            .or_else(|| find(&format!("{r}^{{}}")))
            .or_else(|| find(r)),
    };
    commit.map(str::to_string).ok_or_else(|| {
        format!(
            "{}: ref {} not found on the remote",
            src.url,
            src.reference.as_deref().unwrap_or("HEAD")
        )
    })
}

/// Checks `commit` of `src` out into `dir` (made here), keeping `.git` only when
/// asked (with `origin` set to the URL, as BuildKit leaves it).
pub fn checkout(
    src: &GitSource,
    commit: &str,
    dir: &Path,
    keep_git_dir: bool,
    ssh_auth_sock: Option<&Path>,
) -> Result<(), String> {
    let what = format!("git checkout of {}", src.url);
    let d = dir.to_string_lossy().into_owned();
    let mut c = git(ssh_auth_sock);
    c.args(["init", "-q", &d]);
    run(c, &what)?;
    // the remote ref when there is one (a shallow fetch works on every server), else
    // the commit itself; a server refusing either gets a full fetch
    let want = match &src.reference {
        Some(r) if !is_commit(r) => r.clone(),
        _ if src.reference.is_none() => "HEAD".to_string(),
        _ => commit.to_string(),
    };
    let mut c = git(ssh_auth_sock);
    c.args(["-C", &d, "fetch", "-q", "--depth", "1", "--no-tags", "--"])
        .args([&src.url, &want]);
    if run(c, &what).is_err() {
        let mut c = git(ssh_auth_sock);
        c.args(["-C", &d, "fetch", "-q", "--no-tags", "--"]).args([
            &src.url,
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ]);
        run(c, &what)?;
    }
    let mut c = git(ssh_auth_sock);
    c.args([
        "-C",
        &d,
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        commit,
        "--",
    ]);
    run(c, &what).map_err(|e| format!("{e} (did {want} move during the build?)"))?;
    if keep_git_dir {
        let mut c = git(ssh_auth_sock);
        c.args(["-C", &d, "remote", "add", "origin", &src.url]);
        run(c, &what)?;
    } else {
        let g = dir.join(".git");
        std::fs::remove_dir_all(&g)
            .map_err(|e| format!("{what}: removing {}: {e}", g.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_git_sources_apart() {
        let g = parse("https://example.com/org/repo.git#v1.2:docs/").unwrap();
        assert_eq!(g.url, "https://example.com/org/repo.git");
        assert_eq!(g.reference.as_deref(), Some("v1.2"));
        assert_eq!(g.subdir.as_deref(), Some("docs"));
        let g = parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(g.reference, None);
        let g = parse("git://127.0.0.1:9418/r.git#:sub").unwrap();
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("sub")));
        assert!(parse("https://example.com/file.tar.gz").is_none());
        assert!(parse("http://example.com/x.git/file.txt").is_none());
        assert!(parse("local/dir").is_none());
        assert!(parse("ssh://git@host/r").is_some());
    }
}
