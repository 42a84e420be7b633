//! Image config -> runtime spec.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, UserBuilder};

use crate::{Error, Result, sys};

/// The default PATH when an image sets none (docker's).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an engine needs from an image config, resolved against the image's files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRuntimeConfig {
    /// Entrypoint followed by Cmd.
    pub args: Vec<String>,
    /// Environment (`KEY=value`), PATH always present.
    pub env: Vec<String>,
    /// Working directory (`/` when unset).
    pub cwd: String,
    /// Resolved user id.
    pub uid: u32,
    /// Resolved group id.
    pub gid: u32,
    /// Supplementary groups of the user from the image's /etc/group.
    pub additional_gids: Vec<u32>,
    /// `ExposedPorts` keys, e.g. `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// `Volumes` keys, sorted.
    pub volumes: Vec<String>,
    /// `StopSignal`, e.g. `SIGTERM`.
    pub stop_signal: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Reads a small file under `rootfs` without following symlinks (an image's
/// /etc/passwd must not be a way to read the host's).
fn read_in_rootfs(rootfs: &Path, rel: &[&str]) -> Option<String> {
    let root = std::fs::File::open(rootfs).ok()?;
    let mut cur: std::os::fd::OwnedFd = root.into();
    let (last, dirs) = rel.split_last()?;
    for d in dirs {
        let c = CString::new(*d).ok()?;
        cur = sys::open_dir_at(cur.as_raw_fd(), &c).ok()?;
    }
    let c = CString::new(*last).ok()?;
    let fd = sys::openat(cur.as_raw_fd(), &c, libc::O_RDONLY | libc::O_NOFOLLOW, 0).ok()?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

fn parse_colon_file(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .collect()
}

/// Resolves a `user[:group]` string against the image's /etc/passwd and /etc/group.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_rootfs(rootfs, &["etc", "passwd"]).unwrap_or_default();
    let group = read_in_rootfs(rootfs, &["etc", "group"]).unwrap_or_default();
    let pw = parse_colon_file(&passwd);
    let gr = parse_colon_file(&group);
    let entry = pw.iter().find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let (uid, mut gid, name) = match (u.parse::<u32>(), entry) {
        (_, Some(f)) => (
            f[2].parse::<u32>()
                .map_err(|_| Error::UnknownUser(user.into()))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0]),
        ),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => return Err(Error::UnknownUser(user.into())),
    };
    if let Some(g) = g {
        gid = match (
            g.parse::<u32>(),
            gr.iter().find(|f| f.len() >= 3 && f[0] == g),
        ) {
            (Ok(n), _) => n,
            (_, Some(f)) => f[2].parse().map_err(|_| Error::UnknownUser(user.into()))?,
            (Err(_), None) => return Err(Error::UnknownUser(user.into())),
        };
    }
    let mut extra: Vec<u32> = Vec::new();
    if let (Some(name), None) = (name, g) {
        for f in &gr {
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(id) = f[2].parse::<u32>()
                && id != gid
                && !extra.contains(&id)
            {
                extra.push(id);
            }
        }
    }
    Ok((uid, gid, extra))
}

/// Resolves an image config against its root filesystem.
pub fn runtime_config(config: &ImageConfiguration, rootfs: &Path) -> Result<ImageRuntimeConfig> {
    let c = config.config().clone().unwrap_or_default();
    let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
    args.extend(c.cmd().clone().unwrap_or_default());
    let mut env = c.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let (uid, gid, additional_gids) = resolve_user(c.user().as_deref().unwrap_or(""), rootfs)?;
    let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
    exposed_ports.sort();
    let mut volumes = c.volumes().clone().unwrap_or_default();
    volumes.sort();
    Ok(ImageRuntimeConfig {
        args,
        env,
        cwd: c
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        uid,
        gid,
        additional_gids,
        exposed_ports,
        volumes,
        stop_signal: c.stop_signal().clone(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
    })
}

/// A runtime spec (defaults like `runc spec`) running the image's command as its user
/// in `rootfs`.
pub fn to_runtime_spec(config: &ImageConfiguration, rootfs: &Path) -> Result<Spec> {
    let rc = runtime_config(config, rootfs)?;
    spec_from(&rc, rootfs)
}

/// The spec for an already resolved config.
pub fn spec_from(rc: &ImageRuntimeConfig, rootfs: &Path) -> Result<Spec> {
    let bad = |e: oci_spec::OciSpecError| Error::invalid("runtime spec", e.to_string());
    let mut user = UserBuilder::default().uid(rc.uid).gid(rc.gid);
    if !rc.additional_gids.is_empty() {
        user = user.additional_gids(rc.additional_gids.clone());
    }
    let base = Spec::default();
    let mut process = base.process().clone().unwrap_or_default();
    let mut pb = ProcessBuilder::default()
        .terminal(false)
        .args(rc.args.clone())
        .env(rc.env.clone())
        .cwd(rc.cwd.clone())
        .user(user.build().map_err(bad)?);
    if let Some(caps) = process.capabilities().clone() {
        pb = pb.capabilities(caps);
    }
    if let Some(r) = process.rlimits().clone() {
        pb = pb.rlimits(r);
    }
    pb = pb.no_new_privileges(process.no_new_privileges().unwrap_or(true));
    process = pb.build().map_err(bad)?;
    let mut spec = base;
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()
            .map_err(bad)?,
    ));
    if !rc.labels.is_empty() {
        spec.set_annotations(Some(rc.labels.clone().into_iter().collect()));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_to_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:34:\nextra:x:50:www,bob\n",
        )
        .unwrap();
        let cfg: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
               "config":{"User":"www","Entrypoint":["/bin/app"],"Cmd":["--flag"],"Env":["A=1"],
               "WorkingDir":"/srv","ExposedPorts":{"80/tcp":{},"53/udp":{}},"Volumes":{"/data":{}},
               "StopSignal":"SIGQUIT","Labels":{"k":"v"}}}"#,
        )
        .unwrap();
        let rc = runtime_config(&cfg, dir.path()).unwrap();
        assert_eq!(rc.args, vec!["/bin/app", "--flag"]);
        assert_eq!(
            (rc.uid, rc.gid, rc.additional_gids.clone()),
            (33, 34, vec![50])
        );
        assert_eq!(rc.exposed_ports, vec!["53/udp", "80/tcp"]);
        assert_eq!(rc.volumes, vec!["/data"]);
        assert_eq!(rc.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(rc.env[0], DEFAULT_PATH);
        let spec = to_runtime_spec(&cfg, dir.path()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!(p.user().uid(), 33);
        assert_eq!(
            resolve_user("1000:www", dir.path()).unwrap(),
            (1000, 34, vec![])
        );
        assert_eq!(
            resolve_user("root:50", dir.path()).unwrap(),
            (0, 50, vec![])
        );
        assert!(resolve_user("nobody", dir.path()).is_err());
    }

    #[test]
    fn passwd_symlink_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/passwd")).unwrap();
        assert!(resolve_user("root", dir.path()).is_err());
    }
}
