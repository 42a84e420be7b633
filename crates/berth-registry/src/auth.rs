//! Credentials: the docker config file (`auths`, `credsStore`, `credHelpers`) and
//! `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // never print secrets in logs
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// New credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization: Basic` value.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to ask the token for.
        service: Option<String>,
        /// The scope the registry wanted, if it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value; `None` for unknown schemes.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `k="v", k2=v2` (quoted values may hold commas).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The docker client config file: where `berth login` keeps credentials.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    json: serde_json::Value,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return PathBuf::from(dir).join("config.json");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".docker").join("config.json")
    }

    /// Loads the default config file (an absent file is an empty config).
    pub fn load() -> Result<DockerConfig> {
        DockerConfig::load_from(&DockerConfig::default_path())
    }

    /// Loads a config file (an absent file is an empty config).
    pub fn load_from(path: &Path) -> Result<DockerConfig> {
        let json = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::json!({}),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Config {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        if !json.is_object() {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: "not a JSON object".into(),
            });
        }
        Ok(DockerConfig {
            path: path.to_owned(),
            json,
        })
    }

    /// The file this config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential helper responsible for a registry, if any.
    fn helper_for(&self, registry: &str) -> Option<String> {
        for key in keys_for(registry) {
            if let Some(h) = self.json["credHelpers"][&key].as_str() {
                return Some(h.to_owned());
            }
        }
        self.json["credsStore"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// Credentials for a registry: a credential helper, else `auths`.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(helper) = self.helper_for(registry)
            && let Some(c) = helper_get(&helper, &server_url(registry))?
        {
            return Ok(Some(c));
        }
        for key in keys_for(registry) {
            let entry = &self.json["auths"][&key];
            if entry.is_null() {
                continue;
            }
            if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                let decoded = STANDARD.decode(auth.trim()).map_err(|e| Error::Config {
                    path: self.path.clone(),
                    reason: format!("auths.{key}.auth: {e}"),
                })?;
                let decoded = String::from_utf8_lossy(&decoded);
                let (u, p) = decoded.split_once(':').ok_or_else(|| Error::Config {
                    path: self.path.clone(),
                    reason: format!("auths.{key}.auth is not user:password"),
                })?;
                return Ok(Some(Credentials::new(u, p)));
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Ok(Some(Credentials::new(u, p)));
            }
        }
        Ok(None)
    }

    /// Records credentials (through the credential store if one is configured) and
    /// writes the file.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<()> {
        let key = server_url(registry);
        if let Some(helper) = self.helper_for(registry) {
            helper_store(&helper, &key, creds)?;
            self.json["auths"][&key] = serde_json::json!({});
        } else {
            if !self.json["auths"].is_object() {
                self.json["auths"] = serde_json::json!({});
            }
            self.json["auths"][&key] = serde_json::json!({
                "auth": STANDARD.encode(format!("{}:{}", creds.username, creds.password)),
            });
        }
        self.save()
    }

    /// Forgets a registry's credentials; false if there were none.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let mut found = false;
        if let Some(helper) = self.helper_for(registry) {
            found |= helper_erase(&helper, &server_url(registry))?;
        }
        if let Some(auths) = self.json["auths"].as_object_mut() {
            for key in keys_for(registry) {
                found |= auths.remove(&key).is_some();
            }
        }
        self.save()?;
        Ok(found)
    }

    /// Writes the file atomically, mode 0600 (it holds secrets).
    fn save(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let tmp = dir.join(format!(".config.json.{}", std::process::id()));
        let ctx = |e| Error::io(format!("writing {}", self.path.display()), e);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(ctx)?;
        let body = serde_json::to_vec_pretty(&self.json).unwrap_or_default();
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(ctx)?;
        std::fs::rename(&tmp, &self.path).map_err(ctx)
    }
}

/// The key docker uses in `auths` for a registry.
fn server_url(registry: &str) -> String {
    if registry == crate::reference::DEFAULT_REGISTRY || registry == "index.docker.io" {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

/// Every spelling of a registry seen in config files.
fn keys_for(registry: &str) -> Vec<String> {
    let main = server_url(registry);
    let mut keys = vec![main.clone()];
    for k in [
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ] {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

fn run_helper(helper: &str, verb: &str, input: &str) -> Result<(bool, String, String)> {
    let program = format!("docker-credential-{helper}");
    let err = |reason: String| Error::CredentialHelper {
        helper: helper.to_owned(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("running {program} {verb}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| err(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for {program}: {e}")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let (ok, stdout, stderr) = run_helper(helper, "get", server)?;
    if !ok {
        // helpers say "credentials not found in native keychain" for unknown servers
        if stdout.contains("not found") || stderr.contains("not found") {
            return Ok(None);
        }
        return Err(Error::CredentialHelper {
            helper: helper.to_owned(),
            reason: format!("get {server}: {}{}", stdout.trim(), stderr.trim()),
        });
    }
    let v: serde_json::Value =
        serde_json::from_str(&stdout).map_err(|e| Error::CredentialHelper {
            helper: helper.to_owned(),
            reason: format!("get {server}: bad answer: {e}"),
        })?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) if !s.is_empty() => Ok(Some(Credentials::new(u, s))),
        _ => Ok(None),
    }
}

fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<()> {
    let input = serde_json::json!({
        "ServerURL": server, "Username": creds.username, "Secret": creds.password,
    })
    .to_string();
    let (ok, stdout, stderr) = run_helper(helper, "store", &input)?;
    if !ok {
        return Err(Error::CredentialHelper {
            helper: helper.to_owned(),
            reason: format!("store {server}: {}{}", stdout.trim(), stderr.trim()),
        });
    }
    Ok(())
}

fn helper_erase(helper: &str, server: &str) -> Result<bool> {
    let (ok, _, _) = run_helper(helper, "erase", server)?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn config_round_trip_and_hub_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        let mut cfg = DockerConfig::load_from(&path).unwrap();
        assert_eq!(cfg.credentials("127.0.0.1:5000").unwrap(), None);
        cfg.store("127.0.0.1:5000", &Credentials::new("u", "p:w"))
            .unwrap();
        cfg.store("docker.io", &Credentials::new("hub", "x"))
            .unwrap();
        let cfg = DockerConfig::load_from(&path).unwrap();
        assert_eq!(
            cfg.credentials("127.0.0.1:5000").unwrap(),
            Some(Credentials::new("u", "p:w"))
        );
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(raw["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut cfg = cfg;
        assert!(cfg.erase("127.0.0.1:5000").unwrap());
        assert!(!cfg.erase("127.0.0.1:5000").unwrap());
        assert_eq!(cfg.credentials("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn credential_helper_is_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = reg.example ] && echo '{\"Username\":\"hu\",\"Secret\":\"hs\"}' && exit 0\necho 'credentials not found in native keychain'; exit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example":"fake"}}"#).unwrap();
        // PATH is process-wide; prepend our dir for the helper lookup
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.path().to_owned()];
        paths.extend(std::env::split_paths(&old));
        // SAFETY: unit tests in this module do not read PATH concurrently except this one
        unsafe { std::env::set_var("PATH", std::env::join_paths(paths).unwrap()) };
        let cfg = DockerConfig::load_from(&path).unwrap();
        assert_eq!(
            cfg.credentials("reg.example").unwrap(),
            Some(Credentials::new("hu", "hs"))
        );
        assert_eq!(cfg.credentials("other.example").unwrap(), None);
    }
}
