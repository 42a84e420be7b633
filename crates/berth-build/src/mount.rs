//! `RUN --mount=type=...,key=value` parsing, following BuildKit's rules.
//!
//! Values that may hold `$` references (target, source, id, from, env) are kept as
//! written for the executor to expand; numeric fields are checked here.

use serde::Serialize;

/// Mount kinds of `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// Read-only view of the context or another stage (the default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file or environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// Concurrency of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Several writers at once.
    Shared,
    /// Each concurrent build gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `from=` stage or image.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// Effective read-only flag (bind and secret and ssh default to read-only).
    pub readonly: bool,
    /// `id=` (cache id, secret id, ssh id).
    pub id: Option<String>,
    /// `sharing=` (cache only).
    pub sharing: Option<Sharing>,
    /// `size=` in bytes (tmpfs only).
    pub size: Option<u64>,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `required` (secret and ssh only).
    pub required: bool,
    /// `env=` (secret only: expose the secret as this variable).
    pub env: Option<String>,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Splits one CSV record (Go's `encoding/csv` rules: `"` quotes, `""` escapes a quote).
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "failed to parse csv mounts: unterminated quote in {s:?}"
                        ));
                    }
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => {}
                Some(c) => {
                    return Err(format!(
                        "failed to parse csv mounts: unexpected {c:?} after quoted field in {s:?}"
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!(
                            "failed to parse csv mounts: bare \" in non-quoted field in {s:?}"
                        ));
                    }
                    Some(c) => field.push(c),
                }
            }
        }
        out.push(field);
    }
}

/// docker's `units.RAMInBytes`: `64m`, `1g`, `512k`, `1.5GiB`, plain bytes.
pub(crate) fn ram_in_bytes(v: &str) -> Option<u64> {
    let num_len = v
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_digit() || *c == '.')
        .count();
    let (num, unit) = v.split_at(num_len);
    if num.is_empty() || num.starts_with('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mul: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    let bytes = n * mul as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses the value of one `--mount` flag.
pub fn parse_mount(val: &str) -> Result<Mount, String> {
    let fields = csv_fields(val)?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        readonly: false,
        id: None,
        sharing: None,
        size: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        m.required = true;
                    } else {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            type_name(m.kind)
                        ));
                    }
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let bad = || format!("invalid value for {key}: {value}");
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type {value:?}")),
                }
            }
            "from" => m.from = Some(value.to_string()),
            "source" | "src" => m.source = Some(value.to_string()),
            "target" | "dst" | "destination" => m.target = Some(value.to_string()),
            "readonly" | "ro" => {
                m.readonly = parse_bool(value).ok_or_else(bad)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(value).ok_or_else(bad)?;
                ro_auto = false;
            }
            "required" => {
                if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    m.required = parse_bool(value).ok_or_else(bad)?;
                } else {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        type_name(m.kind)
                    ));
                }
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        type_name(m.kind)
                    ));
                }
                m.size = Some(ram_in_bytes(value).ok_or_else(bad)?);
            }
            "id" => m.id = Some(value.to_string()),
            "sharing" => {
                if m.kind != MountType::Cache {
                    return Err(format!(
                        "invalid cache sharing set for {} mount",
                        type_name(m.kind)
                    ));
                }
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value {value:?}")),
                });
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                );
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                );
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                );
            }
            "env" => m.env = Some(value.to_string()),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    let t = type_name(m.kind);
    if !matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    ) {
        if m.mode.is_some() {
            return Err(format!("mode not allowed for {t:?} type mounts"));
        }
        if m.uid.is_some() {
            return Err(format!("uid not allowed for {t:?} type mounts"));
        }
        if m.gid.is_some() {
            return Err(format!("gid not allowed for {t:?} type mounts"));
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
                return Err("one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
        }
        MountType::Ssh => {}
        _ => {
            if m.target.is_none() {
                return Err(format!("mount target is required for {t:?} type mounts"));
            }
        }
    }
    if m.env.is_some() && m.kind != MountType::Secret {
        return Err(format!("unexpected key 'env' for mount type '{t}'"));
    }
    Ok(m)
}

fn type_name(t: MountType) -> &'static str {
    match t {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_defaults_readonly() {
        let m = parse_mount("target=/src").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly);
        let m = parse_mount("type=bind,source=.,target=/src,rw").unwrap();
        assert!(!m.readonly);
        assert_eq!(m.source.as_deref(), Some("."));
        let m = parse_mount("type=bind,from=builder,src=/out,dst=/in,readonly=false").unwrap();
        assert_eq!(m.from.as_deref(), Some("builder"));
        assert!(!m.readonly);
    }

    #[test]
    fn cache_mount() {
        let m = parse_mount(
            "type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1000,gid=1000",
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.readonly);
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert_eq!(m.gid, Some(1000));
        assert_eq!(m.id.as_deref(), Some("pip"));
        let m = parse_mount("TYPE=CACHE,TARGET=/x").unwrap();
        assert_eq!(m.kind, MountType::Cache);
    }

    #[test]
    fn tmpfs_secret_ssh() {
        let m = parse_mount("type=tmpfs,target=/tmp,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = parse_mount("type=secret,id=aws,target=/root/.aws/credentials,required").unwrap();
        assert!(m.required);
        assert!(m.readonly);
        let m = parse_mount("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        let m = parse_mount("type=ssh").unwrap();
        assert_eq!(m.kind, MountType::Ssh);
        let m = parse_mount("type=ssh,id=default,required=true").unwrap();
        assert!(m.required);
        let m = parse_mount("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str)] = &[
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            (
                "type=bind,target=/x,mode=0644",
                "mode not allowed for \"bind\" type mounts",
            ),
            (
                "type=tmpfs,target=/x,uid=1",
                "uid not allowed for \"tmpfs\" type mounts",
            ),
            (
                "type=bind,target=/x,size=1m",
                "unexpected key 'size' for mount type 'bind'",
            ),
            (
                "type=bind,target=/x,sharing=locked",
                "invalid cache sharing set for bind mount",
            ),
            (
                "type=cache,target=/x,sharing=sometimes",
                "unsupported sharing value \"sometimes\"",
            ),
            (
                "type=cache,target=/x,mode=999",
                "invalid value 999 for mode",
            ),
            ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
            (
                "type=bind,target=/x,bogus=1",
                "unexpected key 'bogus' in 'bogus=1'",
            ),
            (
                "type=bind,target=/x,bogus",
                "invalid field 'bogus' must be a key=value pair",
            ),
            (
                "type=bind,target=/x,required",
                "unexpected key 'required' for mount type 'bind'",
            ),
            ("type=secret", "one of source, target required"),
            (
                "type=secret,id=a,source=b",
                "both source and id can't be set",
            ),
            (
                "type=secret,id=a,from=b",
                "secret mount should not have a from",
            ),
            (
                "type=cache",
                "mount target is required for \"cache\" type mounts",
            ),
            (
                "type=bind,target=/x,ro=maybe",
                "invalid value for ro: maybe",
            ),
            (
                "type=tmpfs,target=/x,size=lots",
                "invalid value for size: lots",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_mount(input).unwrap_err(), *want, "{input}");
        }
    }

    #[test]
    fn ram() {
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1KiB"), Some(1024));
        assert_eq!(ram_in_bytes("1.5g"), Some(3 << 29));
        assert_eq!(ram_in_bytes("2 MB"), Some(2 << 20));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1x"), None);
    }
}
