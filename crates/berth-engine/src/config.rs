//! What `berth run`/`create` asks for, and the parsing of its flag values.
//!
//! Everything is checked when the container is created, so a bad value fails before
//! anything exists on disk.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The full create request, stored with the container (docker's Config + HostConfig).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateConfig {
    /// Image reference as typed.
    pub image: String,
    /// Command (replaces the image's CMD when not empty).
    pub cmd: Vec<String>,
    /// `--entrypoint` (`Some("")` clears the image's).
    pub entrypoint: Option<String>,
    /// `-e` and `--env-file` values (`KEY=value`; a bare `KEY` takes the caller's value).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--name`.
    pub name: Option<String>,
    /// Network request (network, ports, exposed).
    pub network: crate::network::Request,
    /// `-v` values.
    pub volumes: Vec<String>,
    /// `--mount` values.
    pub mounts: Vec<String>,
    /// `--tmpfs` values (`/path[:opts]`).
    pub tmpfs: Vec<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--memory` (`512m`).
    pub memory: Option<String>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--security-opt`.
    pub security_opt: Vec<String>,
    /// `--restart`.
    pub restart: String,
    /// `--init`.
    pub init: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--runtime` (path or name of a runc-compatible binary).
    pub runtime: Option<String>,
    /// `--stop-signal` (else the image's, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds (default 10).
    pub stop_timeout: Option<u32>,
}

/// `--restart` parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Never.
    No,
    /// On a non-zero exit, at most `max` times (0 = unlimited).
    OnFailure {
        /// Maximum retries (0 = unlimited).
        max: u32,
    },
    /// Always (also after the monitor restarts... i.e. until stopped).
    Always,
    /// Always, unless stopped by the user.
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let bad = || {
            Error::invalid(
                "restart policy",
                format!("{s:?} (no, on-failure[:N], always, unless-stopped)"),
            )
        };
        Ok(match s.split_once(':') {
            None => match s {
                "" | "no" => RestartPolicy::No,
                "on-failure" => RestartPolicy::OnFailure { max: 0 },
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                _ => return Err(bad()),
            },
            Some(("on-failure", n)) => RestartPolicy::OnFailure {
                max: n.parse().map_err(|_| bad())?,
            },
            Some(_) => return Err(bad()),
        })
    }

    /// Docker's name of the policy.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a container that exited with `code` after `restarts` restarts should be
    /// started again (a user stop never restarts).
    pub fn should_restart(&self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match *self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => code != 0 && (max == 0 || restarts < max),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// Kind of a container mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named (or anonymous) volume.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

/// One mount asked for by `-v`, `--mount` or `--tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Kind.
    pub kind: MountKind,
    /// Host path (bind), volume name (volume, empty = anonymous), unused for tmpfs.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Extra options (tmpfs size/mode, bind propagation).
    pub options: Vec<String>,
}

fn check_target(t: &str) -> Result<()> {
    if !t.starts_with('/') {
        return Err(Error::invalid(
            "mount",
            format!("destination {t:?} is not an absolute path"),
        ));
    }
    if t == "/" {
        return Err(Error::invalid("mount", "destination can't be '/'"));
    }
    Ok(())
}

/// Parses a `-v` value: `host:ctr[:ro|rw]`, `name:ctr[:ro]` or `ctr` (anonymous volume).
pub fn parse_volume(v: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => {
            return Err(Error::invalid(
                "volume",
                format!("{v:?} (host:container[:ro])"),
            ));
        }
    };
    check_target(dst)?;
    let mut readonly = false;
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" | "nocopy" => {}
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                options.push(o.to_string())
            }
            _ => {
                return Err(Error::invalid(
                    "volume",
                    format!("{v:?}: unknown option {o:?}"),
                ));
            }
        }
    }
    let kind = if src.starts_with('/') || src.starts_with('.') {
        MountKind::Bind
    } else {
        if !src.is_empty() && !crate::names::valid_name(src) {
            return Err(Error::invalid(
                "volume",
                format!("{src:?} is not a valid volume name"),
            ));
        }
        MountKind::Volume
    };
    let source = if kind == MountKind::Bind {
        absolute(src)?
    } else {
        src.to_string()
    };
    Ok(MountSpec {
        kind,
        source,
        target: dst.to_string(),
        readonly,
        options,
    })
}

fn absolute(p: &str) -> Result<String> {
    let path = std::path::Path::new(p);
    if path.is_absolute() {
        return Ok(p.to_string());
    }
    let cwd = std::env::current_dir().map_err(Error::io("read current directory", "."))?;
    Ok(cwd.join(path).to_string_lossy().into_owned())
}

/// Parses a `--mount` value: `type=bind|volume|tmpfs,source=..,target=..,readonly,...`.
pub fn parse_mount(v: &str) -> Result<MountSpec> {
    let mut kind = MountKind::Volume;
    let (mut source, mut target, mut readonly) = (String::new(), String::new(), false);
    let mut options = Vec::new();
    for field in v.split(',') {
        let (k, val) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => {
                kind = match val {
                    "bind" => MountKind::Bind,
                    "volume" => MountKind::Volume,
                    "tmpfs" => MountKind::Tmpfs,
                    _ => {
                        return Err(Error::invalid(
                            "mount",
                            format!("{v:?}: unknown type {val:?}"),
                        ));
                    }
                }
            }
            "source" | "src" => source = val.to_string(),
            "target" | "destination" | "dst" => target = val.to_string(),
            "readonly" | "ro" => readonly = val.is_empty() || val == "true" || val == "1",
            "tmpfs-size" => options.push(format!("size={val}")),
            "tmpfs-mode" => options.push(format!("mode={val}")),
            "bind-propagation" => options.push(val.to_string()),
            "volume-nocopy" | "consistency" => {}
            _ => {
                return Err(Error::invalid(
                    "mount",
                    format!("{v:?}: unknown field {k:?}"),
                ));
            }
        }
    }
    if target.is_empty() {
        return Err(Error::invalid(
            "mount",
            format!("{v:?}: target is required"),
        ));
    }
    check_target(&target)?;
    match kind {
        MountKind::Bind => {
            if source.is_empty() {
                return Err(Error::invalid(
                    "mount",
                    format!("{v:?}: source is required for a bind mount"),
                ));
            }
            source = absolute(&source)?;
            if !std::path::Path::new(&source).exists() {
                return Err(Error::invalid(
                    "mount",
                    format!("bind source path does not exist: {source}"),
                ));
            }
        }
        MountKind::Volume if !source.is_empty() && !crate::names::valid_name(&source) => {
            return Err(Error::invalid(
                "mount",
                format!("{source:?} is not a valid volume name"),
            ));
        }
        MountKind::Tmpfs if !source.is_empty() => {
            return Err(Error::invalid("mount", "a tmpfs mount takes no source"));
        }
        _ => {}
    }
    Ok(MountSpec {
        kind,
        source,
        target,
        readonly,
        options,
    })
}

/// Parses a `--tmpfs` value: `/path[:opt,opt]`.
pub fn parse_tmpfs(v: &str) -> Result<MountSpec> {
    let (target, opts) = v.split_once(':').unwrap_or((v, ""));
    check_target(target)?;
    let mut readonly = false;
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        if o == "ro" {
            readonly = true;
        } else {
            options.push(o.to_string());
        }
    }
    Ok(MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: target.to_string(),
        readonly,
        options,
    })
}

/// Parses a size like `512m`, `1g`, `100000` (bytes).
pub fn parse_size(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| Error::invalid("size", format!("{s:?} (like 512m or 1g)")))?;
    if v < 0.0 {
        return Err(Error::invalid("size", format!("{s:?} is negative")));
    }
    Ok((v * mult as f64) as i64)
}

/// The mounts asked for, in flag order (`-v`, then `--mount`, then `--tmpfs`).
pub fn mounts_of(cfg: &CreateConfig) -> Result<Vec<MountSpec>> {
    let mut out = Vec::new();
    for v in &cfg.volumes {
        out.push(parse_volume(v)?);
    }
    for m in &cfg.mounts {
        out.push(parse_mount(m)?);
    }
    for t in &cfg.tmpfs {
        out.push(parse_tmpfs(t)?);
    }
    let mut seen = std::collections::HashSet::new();
    for m in &out {
        if !seen.insert(m.target.trim_end_matches('/').to_string()) {
            return Err(Error::invalid(
                "mount",
                format!("duplicate mount point: {}", m.target),
            ));
        }
    }
    Ok(out)
}

/// Parsed `--security-opt` values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOpts {
    /// `seccomp=unconfined`.
    pub seccomp_unconfined: bool,
    /// `seccomp=FILE`.
    pub seccomp_file: Option<String>,
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
}

/// Parses `--security-opt` values.
pub fn parse_security_opts(opts: &[String]) -> Result<SecurityOpts> {
    let mut s = SecurityOpts::default();
    for o in opts {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o, ""));
        match k {
            "seccomp" if v == "unconfined" => s.seccomp_unconfined = true,
            "seccomp" if !v.is_empty() => s.seccomp_file = Some(v.to_string()),
            "no-new-privileges" if v.is_empty() || v == "true" => s.no_new_privileges = true,
            "no-new-privileges" if v == "false" => s.no_new_privileges = false,
            "label" | "apparmor" => {}
            _ => {
                return Err(Error::invalid(
                    "security-opt",
                    format!("{o:?} (seccomp=FILE|unconfined, no-new-privileges)"),
                ));
            }
        }
    }
    Ok(s)
}

/// Normalizes a capability name (`net_admin` -> `CAP_NET_ADMIN`, `ALL` stays).
pub fn cap_name(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Every capability the kernel knows (for `--privileged` and `--cap-add ALL`).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability set: docker's default, plus `add`, minus `drop` (`ALL` allowed in both).
pub fn capabilities(add: &[String], drop: &[String], privileged: bool) -> Result<Vec<String>> {
    let known = |c: &str| c == "ALL" || ALL_CAPABILITIES.contains(&c);
    for c in add.iter().chain(drop) {
        let n = cap_name(c);
        if !known(&n) {
            return Err(Error::invalid(
                "capability",
                format!("unknown capability: {c:?}"),
            ));
        }
    }
    if privileged {
        return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    let drop: Vec<String> = drop.iter().map(|c| cap_name(c)).collect();
    let add: Vec<String> = add.iter().map(|c| cap_name(c)).collect();
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        berth_seccomp::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    if add.iter().any(|c| c == "ALL") {
        caps = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    for c in add {
        if c != "ALL" && !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// Reads an `--env-file`: `KEY=value` lines, `#` comments, blank lines ignored.
pub fn read_env_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("read env file", path))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `-e` values with bare `KEY` resolved from the caller's environment (dropped when
/// unset, like docker).
pub fn resolve_env(vals: &[String]) -> Vec<String> {
    vals.iter()
        .filter_map(|v| {
            if v.contains('=') {
                Some(v.clone())
            } else {
                std::env::var(v).ok().map(|x| format!("{v}={x}"))
            }
        })
        .collect()
}

/// Checks every value of `cfg` that can be checked without the image.
pub fn validate(cfg: &CreateConfig) -> Result<()> {
    RestartPolicy::parse(&cfg.restart)?;
    if cfg.auto_remove && !matches!(RestartPolicy::parse(&cfg.restart)?, RestartPolicy::No) {
        return Err(Error::invalid(
            "restart policy",
            "--restart and --rm conflict",
        ));
    }
    mounts_of(cfg)?;
    if let Some(m) = &cfg.memory {
        let v = parse_size(m)?;
        if v > 0 && v < 6 << 20 {
            return Err(Error::invalid(
                "memory",
                "minimum memory limit allowed is 6MB",
            ));
        }
    }
    if let Some(c) = cfg.cpus
        && !(c > 0.0 && c.is_finite())
    {
        return Err(Error::invalid(
            "cpus",
            format!("{c} (must be a positive number)"),
        ));
    }
    parse_security_opts(&cfg.security_opt)?;
    capabilities(&cfg.cap_add, &cfg.cap_drop, cfg.privileged)?;
    if let Some(n) = &cfg.name
        && !crate::names::valid_name(n)
    {
        return Err(Error::invalid(
            "container name",
            format!("{n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ));
    }
    if let Some(s) = &cfg.stop_signal {
        signal_number(s)?;
    }
    Ok(())
}

/// A signal by name (`TERM`, `SIGTERM`) or number; the runtime's table, so `berth kill`
/// and `berth-oci kill` accept the same names.
pub fn signal_number(s: &str) -> Result<i32> {
    berth_runtime::container::parse_signal(s)
        .map_err(|_| Error::invalid("signal", format!("{s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert_eq!(
            RestartPolicy::parse("on-failure:2").unwrap(),
            RestartPolicy::OnFailure { max: 2 }
        );
        let p = RestartPolicy::OnFailure { max: 2 };
        assert!(p.should_restart(1, 0, false) && p.should_restart(1, 1, false));
        assert!(!p.should_restart(1, 2, false) && !p.should_restart(0, 0, false));
        assert!(!RestartPolicy::Always.should_restart(0, 9, true));
        assert!(RestartPolicy::parse("sometimes").is_err());
    }

    #[test]
    fn volumes_and_mounts() {
        let v = parse_volume("/a:/b:ro").unwrap();
        assert_eq!(
            (v.kind, v.readonly, v.target.as_str()),
            (MountKind::Bind, true, "/b")
        );
        let v = parse_volume("data:/d").unwrap();
        assert_eq!((v.kind, v.source.as_str()), (MountKind::Volume, "data"));
        assert_eq!(parse_volume("/anon").unwrap().source, "");
        assert!(parse_volume("x:rel").is_err());
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap();
        assert_eq!(
            (m.kind, m.options),
            (MountKind::Tmpfs, vec!["size=1m".to_string()])
        );
        assert!(parse_mount("type=bind,source=/nonexistent-xyz,target=/x").is_err());
        assert!(parse_tmpfs("/run:size=10m,ro").unwrap().readonly);
    }

    #[test]
    fn sizes_caps_signals() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
        let c = capabilities(&["net_admin".into()], &["CHOWN".into()], false).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        assert!(capabilities(&["bogus".into()], &[], false).is_err());
        assert_eq!(
            capabilities(&[], &["ALL".into()], false).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(signal_number("SIGKILL").unwrap(), 9);
        assert_eq!(signal_number("term").unwrap(), 15);
        assert!(signal_number("NOPE").is_err());
    }
}
