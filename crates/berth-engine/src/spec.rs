//! The runtime spec (config.json) of a container: the image's defaults, the create
//! flags, docker's default confinement, and at each start the network attachment.

use std::path::{Path, PathBuf};

use berth_image::oci_spec::image::ImageConfiguration;
use serde_json::{Value, json};

use crate::config::{self, CreateConfig, MountKind};
use crate::error::{Error, Result};
use crate::network::{Attachment, Netns};

/// Where `--init` finds its static init binary (docker's docker-init is Debian's
/// tini-static); `BERTH_INIT` overrides it.
pub fn init_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_INIT") {
        return PathBuf::from(p);
    }
    for p in [
        "/usr/bin/tini-static",
        "/usr/bin/docker-init",
        "/usr/local/bin/tini-static",
    ] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("/usr/bin/tini-static")
}

/// Path of the init inside the container.
pub const INIT_PATH: &str = "/sbin/berth-init";

/// A mount resolved to host paths, for config.json and `inspect`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResolvedMount {
    /// bind, volume or tmpfs.
    pub kind: MountKind,
    /// Host path (bind, volume), empty for tmpfs.
    pub source: PathBuf,
    /// Volume name for volumes.
    pub name: Option<String>,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Extra options.
    pub options: Vec<String>,
}

/// The process args docker would run: `--entrypoint` replaces the image's entrypoint
/// and drops its CMD; a command replaces CMD.
pub fn process_args(cfg: &CreateConfig, image: &ImageConfiguration) -> Vec<String> {
    let c = image.config().clone().unwrap_or_default();
    let (entry, img_cmd) = match &cfg.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            c.entrypoint().clone().unwrap_or_default(),
            c.cmd().clone().unwrap_or_default(),
        ),
    };
    let mut args = entry;
    if cfg.cmd.is_empty() {
        args.extend(img_cmd);
    } else {
        args.extend(cfg.cmd.iter().cloned());
    }
    args
}

fn merge_env(base: &mut Vec<String>, extra: &[String]) {
    for e in extra {
        let k = e.split('=').next().unwrap_or_default();
        base.retain(|x| x.split('=').next() != Some(k));
        base.push(e.clone());
    }
}

/// Builds the config.json template of a new container (everything but networking).
/// `rootfs` must be mounted (users and groups are resolved from its /etc files).
pub fn build(
    id: &str,
    cfg: &CreateConfig,
    image: &ImageConfiguration,
    rootfs: &Path,
    mounts: &[ResolvedMount],
) -> Result<Value> {
    let rc = berth_image::spec::runtime_config(image, rootfs)?;
    let spec = berth_image::spec::spec_from(&rc, rootfs)?;
    let mut v =
        serde_json::to_value(&spec).map_err(|e| Error::invalid("runtime spec", e.to_string()))?;
    let args = process_args(cfg, image);
    if args.is_empty() {
        return Err(Error::invalid("command", "no command specified"));
    }
    let mut args = args;
    if cfg.init {
        let mut a = vec![INIT_PATH.to_string(), "--".to_string()];
        a.append(&mut args);
        args = a;
    }
    let mut env = rc.env.clone();
    let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    merge_env(&mut env, &[format!("HOSTNAME={hostname}")]);
    if cfg.tty {
        merge_env(&mut env, &["TERM=xterm".to_string()]);
    }
    merge_env(&mut env, &config::resolve_env(&cfg.env));
    let (uid, gid, extra_gids) = match &cfg.user {
        Some(u) if !u.is_empty() => berth_image::spec::resolve_user(u, rootfs)?,
        _ => (rc.uid, rc.gid, rc.additional_gids.clone()),
    };
    let cwd = cfg
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or(rc.cwd.clone());
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            "working directory",
            format!("{cwd:?} is not an absolute path"),
        ));
    }
    let sec = config::parse_security_opts(&cfg.security_opt)?;
    let caps = config::capabilities(&cfg.cap_add, &cfg.cap_drop, cfg.privileged)?;
    let mut user = json!({ "uid": uid, "gid": gid });
    if !extra_gids.is_empty() {
        user["additionalGids"] = json!(extra_gids);
    }
    v["process"] = json!({
        "terminal": cfg.tty,
        "user": user,
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1048576u64.min(nofile_hard()), "soft": 1048576u64.min(nofile_hard()) }],
        "noNewPrivileges": sec.no_new_privileges,
    });
    v["hostname"] = json!(hostname);
    v["root"] = json!({ "path": rootfs, "readonly": cfg.read_only });
    // namespaces: the network entry is decided at start
    v["linux"]["namespaces"] = json!([
        { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" },
    ]);
    v["linux"]["cgroupsPath"] = json!(format!("/berth-{id}"));
    // resources
    let mut res = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if cfg.privileged {
        res["devices"] = json!([{ "allow": true, "access": "rwm" }]);
        v["linux"]["maskedPaths"] = json!([]);
        v["linux"]["readonlyPaths"] = json!([]);
    }
    if let Some(m) = &cfg.memory {
        let bytes = config::parse_size(m)?;
        if bytes > 0 {
            res["memory"] = json!({ "limit": bytes });
        }
    }
    if let Some(c) = cfg.cpus {
        res["cpu"] = json!({ "quota": (c * 100_000.0) as i64, "period": 100_000u64 });
    }
    if let Some(p) = cfg.pids_limit
        && p != 0
    {
        res["pids"] = json!({ "limit": p });
    }
    v["linux"]["resources"] = res;
    // seccomp: docker's default unless unconfined or privileged
    if cfg.privileged || sec.seccomp_unconfined {
        if let Some(l) = v["linux"].as_object_mut() {
            l.remove("seccomp");
        }
    } else if let Some(f) = &sec.seccomp_file {
        let text = std::fs::read_to_string(f).map_err(Error::io("read seccomp profile", f))?;
        let prof: Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid("seccomp profile", format!("{f}: {e}")))?;
        v["linux"]["seccomp"] = prof;
    } else {
        let prof = berth_seccomp::default_profile_for(&caps);
        v["linux"]["seccomp"] = serde_json::to_value(prof)
            .map_err(|e| Error::invalid("seccomp profile", e.to_string()))?;
    }
    // mounts: the defaults, then the user's (a user mount over a default replaces it)
    let mut all: Vec<Value> = v["mounts"].as_array().cloned().unwrap_or_default();
    let user_targets: Vec<&str> = mounts
        .iter()
        .map(|m| m.target.trim_end_matches('/'))
        .collect();
    all.retain(|m| !user_targets.contains(&m["destination"].as_str().unwrap_or_default()));
    if !cfg.privileged && cfg.read_only {
        // /sys stays read-only; /dev/shm etc. stay writable like docker
    }
    for m in mounts {
        all.push(mount_json(m));
    }
    if cfg.init {
        all.push(json!({
            "destination": INIT_PATH, "type": "bind", "source": init_binary(),
            "options": ["rbind", "ro", "nosuid", "nodev"],
        }));
    }
    v["mounts"] = json!(all);
    if !rc.labels.is_empty() || !cfg.labels.is_empty() {
        let mut ann = serde_json::Map::new();
        for (k, val) in rc.labels.iter().chain(cfg.labels.iter()) {
            ann.insert(k.clone(), json!(val));
        }
        v["annotations"] = Value::Object(ann);
    }
    Ok(v)
}

fn nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h)
        .unwrap_or(1024)
}

fn mount_json(m: &ResolvedMount) -> Value {
    match m.kind {
        MountKind::Tmpfs => {
            let mut opts = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "noexec".to_string(),
            ];
            if m.readonly {
                opts.push("ro".into());
            }
            opts.extend(m.options.iter().cloned());
            json!({ "destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts })
        }
        MountKind::Bind | MountKind::Volume => {
            let mut opts = vec!["rbind".to_string()];
            opts.push(if m.readonly { "ro" } else { "rw" }.into());
            opts.extend(m.options.iter().cloned());
            if !m
                .options
                .iter()
                .any(|o| o.contains("shared") || o.contains("slave") || o.contains("private"))
            {
                opts.push("rprivate".into());
            }
            json!({ "destination": m.target, "type": "bind", "source": m.source, "options": opts })
        }
    }
}

/// Adds what networking decided to a template: the network namespace, the hostname
/// and the hosts/resolv.conf/hostname bind mounts.
pub fn apply_network(v: &mut Value, att: &Attachment, hostname_file: Option<&Path>) {
    if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
        match &att.netns {
            Netns::Host => {}
            Netns::New => ns.push(json!({ "type": "network" })),
            Netns::Path(p) => ns.push(json!({ "type": "network", "path": p })),
        }
        if matches!(att.netns, Netns::Host) {
            // like docker with --network host: the host's name too
            ns.retain(|n| n["type"] != "uts");
            if let Some(o) = v.as_object_mut() {
                o.remove("hostname");
            }
        }
    }
    let mut extra = Vec::new();
    for (file, dest) in [
        (att.hosts.as_deref(), "/etc/hosts"),
        (att.resolv_conf.as_deref(), "/etc/resolv.conf"),
        (hostname_file, "/etc/hostname"),
    ] {
        if let Some(f) = file {
            extra.push(json!({
                "destination": dest, "type": "bind", "source": f,
                "options": ["rbind", "rprivate"],
            }));
        }
    }
    if let Some(m) = v["mounts"].as_array_mut() {
        let dests: Vec<Value> = extra.iter().map(|e| e["destination"].clone()).collect();
        m.retain(|x| !dests.contains(&x["destination"]));
        m.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: &[&str], cmd: &[&str]) -> ImageConfiguration {
        serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Entrypoint": entry, "Cmd": cmd, "Env": ["A=1"] }
        }))
        .unwrap()
    }

    #[test]
    fn args_like_docker() {
        let img = image(&["/e"], &["c1"]);
        let mut cfg = CreateConfig::default();
        assert_eq!(process_args(&cfg, &img), vec!["/e", "c1"]);
        cfg.cmd = vec!["x".into()];
        assert_eq!(process_args(&cfg, &img), vec!["/e", "x"]);
        cfg.entrypoint = Some("/n".into());
        cfg.cmd.clear();
        assert_eq!(process_args(&cfg, &img), vec!["/n"]);
    }

    #[test]
    fn template_has_defaults_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(&[], &["sh"]);
        let cfg = CreateConfig {
            env: vec!["B=2".into(), "A=3".into()],
            memory: Some("64m".into()),
            read_only: true,
            tty: true,
            ..Default::default()
        };
        let mounts = vec![ResolvedMount {
            kind: MountKind::Tmpfs,
            source: PathBuf::new(),
            name: None,
            target: "/t".into(),
            readonly: false,
            options: vec![],
        }];
        let id = "0123456789abcdef0123";
        let mut v = build(id, &cfg, &img, dir.path(), &mounts).unwrap();
        let env: Vec<String> = serde_json::from_value(v["process"]["env"].clone()).unwrap();
        assert!(env.contains(&"A=3".to_string()) && env.contains(&"B=2".to_string()));
        assert!(env.contains(&"HOSTNAME=0123456789ab".to_string()));
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], json!(64 << 20));
        assert_eq!(v["root"]["readonly"], json!(true));
        assert!(v["linux"]["seccomp"].is_object());
        assert_eq!(v["process"]["noNewPrivileges"], json!(false));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let att = Attachment {
            netns: Netns::New,
            ip: None,
            gateway: None,
            prefix: 0,
            mac: None,
            ports: vec![],
            hosts: Some("/h".into()),
            resolv_conf: None,
            dns: None,
        };
        apply_network(&mut v, &att, None);
        assert!(
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network"}))
        );
        assert!(
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/etc/hosts")
        );
    }
}
