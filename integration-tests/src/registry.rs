//! A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) on a
//! free 127.0.0.1 port with temporary storage, optionally behind htpasswd basic auth or
//! bearer-token auth served by a small token server of our own. Stopped on drop.
//!
//! The token server signs ES256 JWTs with a key generated per fixture (openssl CLI) whose
//! self-signed certificate is the registry's `rootcertbundle`; tokens carry a `kid` header
//! equal to the key's libtrust fingerprint, which is how distribution 2.8 finds the key.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// How the registry authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anonymous pull and push.
    None,
    /// HTTP basic auth against an htpasswd file (bcrypt).
    Basic { user: String, pass: String },
    /// Bearer tokens from our token server, which checks these basic credentials.
    Bearer { user: String, pass: String },
}

impl Auth {
    /// Basic auth with the given credentials.
    pub fn basic(user: &str, pass: &str) -> Auth {
        Auth::Basic {
            user: user.into(),
            pass: pass.into(),
        }
    }

    /// Bearer-token auth with the given credentials.
    pub fn bearer(user: &str, pass: &str) -> Auth {
        Auth::Bearer {
            user: user.into(),
            pass: pass.into(),
        }
    }
}

/// The service name the registry and the token server agree on.
pub const TOKEN_SERVICE: &str = "berth-test-registry";
const TOKEN_ISSUER: &str = "berth-test-token-issuer";

/// A running `docker-registry`; killed and reaped on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    auth: Auth,
    dir: tempfile::TempDir,
    token_server: Option<TokenServer>,
}

impl Registry {
    /// Starts a registry with the given auth and waits until `/v2/` answers.
    pub fn start(auth: Auth) -> Result<Registry> {
        crate::require_cmd("docker-registry");
        if matches!(auth, Auth::Basic { .. }) {
            crate::require_cmd("htpasswd");
        }
        if matches!(auth, Auth::Bearer { .. }) {
            crate::require_cmd("openssl");
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()?;
        let storage = dir.path().join("storage");
        fs::create_dir(&storage)?;

        let (auth_yaml, token_server) = match &auth {
            Auth::None => (String::new(), None),
            Auth::Basic { user, pass } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .context("running htpasswd")?;
                if !out.status.success() {
                    bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                let path = dir.path().join("htpasswd");
                fs::write(&path, &out.stdout)?;
                let yaml = format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    path.display()
                );
                (yaml, None)
            }
            Auth::Bearer { user, pass } => {
                let key = SigningKey::generate(dir.path())?;
                let cert = dir.path().join("token-cert.pem");
                let server = TokenServer::start(key, user.clone(), pass.clone())?;
                let yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.addr,
                    cert.display()
                );
                (yaml, Some(server))
            }
        };

        // A free port can be taken by someone else between our probe and the registry's
        // bind: try a few ports before giving up.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: berth-test-secret\n{auth_yaml}",
                    storage.display()
                ),
            )?;
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path)?;
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawning docker-registry")?;
            match wait_ready(&mut child, &addr, &log_path, Duration::from_secs(15)) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        addr,
                        auth,
                        dir,
                        token_server,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("docker-registry did not start")))
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The auth mode the registry was started with.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Credentials (user, pass) if the registry needs any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic { user, pass } | Auth::Bearer { user, pass } => Some((user, pass)),
        }
    }

    /// Where the registry keeps its data.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log so far (for error messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Token requests the token server answered so far, as `(user or "", scopes)`.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        match &self.token_server {
            Some(t) => t.requests.lock().map(|r| r.clone()).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// A bearer token for the given scopes (e.g. `repository:x:pull,push`), fetched from
    /// our token server with the fixture's credentials; `None` without bearer auth.
    pub fn token(&self, scopes: &[&str]) -> Result<Option<String>> {
        let Some(server) = &self.token_server else {
            return Ok(None);
        };
        let mut path = format!("/token?service={TOKEN_SERVICE}");
        for s in scopes {
            path.push_str("&scope=");
            path.push_str(&percent_encode(s));
        }
        let cred = STANDARD.encode(format!("{}:{}", server.user, server.pass));
        let (status, body) = http_get(
            &server.addr,
            &path,
            &[("Authorization", &format!("Basic {cred}"))],
        )?;
        if status != 200 {
            bail!("token server answered {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["token"].as_str().map(str::to_owned))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the token server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The authenticated user, empty for anonymous requests.
    pub user: String,
    /// The `scope` parameters, in order.
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// An ES256 key with its self-signed certificate and libtrust key id.
struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// Generates a P-256 key and a self-signed cert in `dir` (token-key.pem,
    /// token-cert.pem) with the openssl CLI.
    fn generate(dir: &Path) -> Result<SigningKey> {
        let key_pem = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let key_der = dir.join("token-key.p8");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=berth-test-token"])
            .arg("-keyout")
            .arg(&key_pem)
            .arg("-out")
            .arg(&cert))?;
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key_pem)
            .arg("-out")
            .arg(&key_der))?;
        let der = fs::read(&key_der)?;
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| anyhow::anyhow!("loading token key {}: {e}", key_der.display()))?;
        // SubjectPublicKeyInfo of an uncompressed P-256 point: fixed prefix + 65 bytes
        let mut spki = hex_decode("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(pair.public_key().as_ref());
        let kid = libtrust_key_id(&spki);
        Ok(SigningKey { pair, kid })
    }

    fn sign_jwt(&self, claims: &serde_json::Value) -> Result<String> {
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .pair
            .sign(&rng, signing_input.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing token: {e}"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }
}

/// libtrust's key id: base32 of the first 240 bits of SHA-256(SPKI DER), in groups of
/// four joined by ':'.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let b32 = base32(&digest.as_ref()[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u64, 0u32);
    for &b in data {
        buf = (buf << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Our token server: answers `GET /token?service=..&scope=..` on its own thread.
struct TokenServer {
    addr: String,
    user: String,
    pass: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TokenServer {
    fn start(key: SigningKey, user: String, pass: String) -> Result<TokenServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests, user, pass) =
                (stop.clone(), requests.clone(), user.clone(), pass.clone());
            std::thread::Builder::new()
                .name("token-server".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let _ = serve_token(stream, &key, &user, &pass, &requests);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })?
        };
        Ok(TokenServer {
            addr,
            user,
            pass,
            stop,
            requests,
            thread: Some(thread),
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(
    stream: TcpStream,
    key: &SigningKey,
    user: &str,
    pass: &str,
    requests: &Mutex<Vec<TokenRequest>>,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_owned());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
            "service" => service = v,
            _ => {}
        }
    }
    let presented = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (status, body, who) = if path != "/token" {
        (
            404,
            r#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_owned(),
            String::new(),
        )
    } else if authorization.is_some() && presented.as_deref() != Some(&format!("{user}:{pass}")) {
        (
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_owned(),
            String::new(),
        )
    } else {
        // anonymous requests get a token that grants nothing, like Docker Hub for
        // private repositories; the registry then answers 401 insufficient_scope
        let authenticated = authorization.is_some();
        let access: Vec<serde_json::Value> = if authenticated {
            scopes
                .iter()
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (t, n, a) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({
                        "type": t, "name": n,
                        "actions": a.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect()
        } else {
            Vec::new()
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": if authenticated { user } else { "" },
            "aud": if service.is_empty() { TOKEN_SERVICE } else { service.as_str() },
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", requests.lock().map(|r| r.len()).unwrap_or(0)),
            "access": access,
        });
        let token = key.sign_jwt(&claims)?;
        let body = serde_json::json!({
            "token": token, "access_token": token, "expires_in": 600,
        })
        .to_string();
        (
            200,
            body,
            if authenticated {
                user.to_owned()
            } else {
                String::new()
            },
        )
    };
    if let Ok(mut r) = requests.lock() {
        r.push(TokenRequest {
            user: who,
            scopes,
            status,
        });
    }
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()?;
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(h, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn wait_ready(child: &mut Child, addr: &str, log: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait()? {
            bail!(
                "docker-registry exited early ({status}): {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        // 401 is an answer too: the registry is up and asks for credentials
        if let Ok(200 | 401) = http_status(addr, "/v2/") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "docker-registry did not answer on {addr} within {limit:?}: {}",
        fs::read_to_string(log).unwrap_or_default()
    )
}

/// A free TCP port on 127.0.0.1 (probe: bind port 0 and release it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_status(addr: &str, path: &str) -> Result<u16> {
    Ok(http_get(addr, path, &[])?.0)
}

/// A minimal blocking HTTP/1.0 GET (no dependency on the client under test).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.take(64 << 20).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn key_id_has_twelve_groups() {
        let kid = libtrust_key_id(b"anything");
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.split(':').all(|g| g.len() == 4));
    }

    #[test]
    fn percent_round_trip() {
        let s = "repository:a/b:pull,push";
        assert_eq!(percent_decode(&percent_encode(s)), s);
    }
}
