//! The HTTP side: one client per process, auth per registry, retries with backoff.
//!
//! oci-client's own transport cannot stream a blob into our store with a Range resume,
//! nor ask one token for several scopes (cross-repository mounts), nor hand its token
//! to another request, so requests are made here over reqwest; oci-client supplies the
//! media type names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

use crate::auth::{Challenge, Credentials, DockerConfig};
use crate::error::{Error, Result};
use crate::reference::{ImageRef, is_loopback};

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Registries (host[:port]) spoken to over plain HTTP although not on loopback.
    pub insecure_registries: Vec<String>,
    /// Use TLS even for loopback registries.
    pub tls_for_loopback: bool,
    /// Layers downloaded at the same time.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at the same time.
    pub max_concurrent_uploads: usize,
    /// Attempts after the first for a failed request or an interrupted blob.
    pub retries: u32,
    /// First backoff delay (doubled per attempt, capped at 5 s).
    pub backoff: Duration,
    /// A transfer that moves no byte for this long is aborted (and retried).
    pub idle_timeout: Duration,
    /// Blobs larger than this are uploaded in PATCH chunks of this size.
    pub chunk_size: u64,
    /// Explicit credentials per registry; they win over the docker config file.
    pub credentials: HashMap<String, Credentials>,
    /// Docker config file to read credentials from (`None`: the default place);
    /// `Some("")` disables it.
    pub docker_config: Option<std::path::PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            insecure_registries: Vec::new(),
            tls_for_loopback: false,
            max_concurrent_downloads: 6,
            max_concurrent_uploads: 4,
            retries: 5,
            backoff: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(30),
            chunk_size: 64 << 20,
            credentials: HashMap::new(),
            docker_config: None,
        }
    }
}

/// Auth state of one registry.
#[derive(Debug, Default)]
struct RegistryAuth {
    /// What the registry asked for last (None: nothing yet, or anonymous access).
    challenge: Option<Challenge>,
    /// Credentials, once looked up.
    creds: Option<Option<Credentials>>,
    /// Bearer tokens by scope set.
    tokens: HashMap<String, (String, Instant)>,
}

/// A registry client. Cheap to clone; clones share connections and tokens.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) config: Arc<ClientConfig>,
    auth: Arc<Mutex<HashMap<String, Arc<Mutex<RegistryAuth>>>>>,
}

/// What to do with a response status inside [`Client::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Retry transport errors and 5xx/429 (idempotent requests).
    Idempotent,
    /// Never resend (a PATCH that may have been applied).
    Never,
}

impl Client {
    /// A client with the given configuration.
    pub fn new(config: ClientConfig) -> Result<Client> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(config.idle_timeout)
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| Error::Http {
                method: "build".into(),
                url: "client".into(),
                source: e,
            })?;
        Ok(Client {
            http,
            config: Arc::new(config),
            auth: Arc::default(),
        })
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `http://host` or `https://host` for a registry (loopback: plain HTTP, like docker).
    pub fn base_url(&self, registry: &str) -> String {
        let host = crate::reference::api_host(registry);
        let plain = (is_loopback(host) && !self.config.tls_for_loopback)
            || self
                .config
                .insecure_registries
                .iter()
                .any(|r| r == registry || r == host);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    /// `base/v2/<repository>/<rest>`.
    pub(crate) fn repo_url(&self, r: &ImageRef, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base_url(&r.registry), r.repository)
    }

    async fn registry_auth(&self, registry: &str) -> Arc<Mutex<RegistryAuth>> {
        self.auth
            .lock()
            .await
            .entry(registry.to_owned())
            .or_default()
            .clone()
    }

    fn lookup_credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = self.config.credentials.get(registry) {
            return Ok(Some(c.clone()));
        }
        let cfg = match &self.config.docker_config {
            Some(p) if p.as_os_str().is_empty() => return Ok(None),
            Some(p) => DockerConfig::load_from(p)?,
            None => DockerConfig::load()?,
        };
        cfg.credentials(registry)
    }

    /// The Authorization header for a request to `registry` needing `scopes`, fetching
    /// a token if the registry is known to want one.
    async fn authorization(&self, registry: &str, scopes: &[String]) -> Result<Option<String>> {
        let state = self.registry_auth(registry).await;
        let mut st = state.lock().await;
        match st.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => {
                let creds = self.creds(&mut st, registry)?;
                Ok(creds.map(|c| c.basic_header()))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scope_key(scopes);
                if let Some((tok, exp)) = st.tokens.get(&key)
                    && *exp > Instant::now()
                {
                    return Ok(Some(format!("Bearer {tok}")));
                }
                let creds = self.creds(&mut st, registry)?;
                let (tok, ttl) = self
                    .fetch_token(registry, &realm, service.as_deref(), scopes, creds.as_ref())
                    .await?;
                st.tokens.insert(key, (tok.clone(), Instant::now() + ttl));
                Ok(Some(format!("Bearer {tok}")))
            }
        }
    }

    fn creds(&self, st: &mut RegistryAuth, registry: &str) -> Result<Option<Credentials>> {
        if st.creds.is_none() {
            st.creds = Some(self.lookup_credentials(registry)?);
        }
        Ok(st.creds.clone().flatten())
    }

    /// Records a 401's challenge; returns false if nothing new can be tried.
    async fn on_unauthorized(
        &self,
        registry: &str,
        headers: &HeaderMap,
        scopes: &mut Vec<String>,
    ) -> bool {
        let Some(challenge) = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .next()
        else {
            return false;
        };
        if let Challenge::Bearer {
            scope: Some(wanted),
            ..
        } = &challenge
        {
            for s in wanted.split(' ') {
                if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_owned());
                }
            }
        }
        let state = self.registry_auth(registry).await;
        let mut st = state.lock().await;
        // a token that was refused is stale: drop it so the next attempt fetches anew
        st.tokens.remove(&scope_key(scopes));
        st.challenge = Some(challenge);
        true
    }

    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration)> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scopes {
            query.push(("scope", s));
        }
        let token_err = |reason: String| Error::Token {
            realm: realm.to_owned(),
            reason,
        };
        let mut attempt = 0;
        let resp = loop {
            let mut rb = self.http.get(realm).query(&query);
            if let Some(c) = creds {
                rb = rb.header(reqwest::header::AUTHORIZATION, c.basic_header());
            }
            match rb.send().await {
                Ok(r) if r.status().is_server_error() && attempt < self.config.retries => {}
                Ok(r) => break r,
                Err(e) if attempt < self.config.retries && is_transient(&e) => {}
                Err(e) => return Err(token_err(e.to_string())),
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt)).await;
        };
        let status = resp.status();
        let body = resp.text().await.map_err(|e| token_err(e.to_string()))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: registry.to_owned(),
                message: format!(
                    "token server refused the credentials ({})",
                    error_message(&body)
                ),
            });
        }
        if !status.is_success() {
            return Err(token_err(format!(
                "status {status}: {}",
                error_message(&body)
            )));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| token_err(format!("bad answer: {e}")))?;
        let tok = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("answer has no token".into()))?;
        // refresh a little early; the spec's default lifetime is 60 s
        let ttl = v["expires_in"].as_u64().unwrap_or(60).max(10);
        Ok((tok.to_owned(), Duration::from_secs(ttl - 5)))
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let d = self.config.backoff * 2u32.saturating_pow(attempt.saturating_sub(1));
        d.min(Duration::from_secs(5))
    }

    /// Sends a request built by `build` (called again for each attempt), with auth for
    /// `scopes` on `registry`, retrying transport errors and 5xx per `retry`. Returns
    /// the response whatever its status, except 401 after auth was tried.
    pub(crate) async fn send(
        &self,
        registry: &str,
        scopes: &[String],
        retry: Retry,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let mut scopes = scopes.to_vec();
        let mut attempt = 0u32;
        let mut auth_tries = 0u32;
        loop {
            let mut rb = build(&self.http);
            if let Some(h) = self.authorization(registry, &scopes).await? {
                rb = rb.header(reqwest::header::AUTHORIZATION, h);
            }
            let req = rb.build().map_err(|e| Error::Http {
                method: "build".into(),
                url: registry.into(),
                source: e,
            })?;
            let (method, url) = (req.method().to_string(), redact(req.url()));
            match self.http.execute(req).await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    if auth_tries < 2
                        && self
                            .on_unauthorized(registry, resp.headers(), &mut scopes)
                            .await
                    {
                        auth_tries += 1;
                        continue;
                    }
                    let body = resp.text().await.unwrap_or_default();
                    return Err(Error::Unauthorized {
                        registry: registry.to_owned(),
                        message: error_message(&body),
                    });
                }
                Ok(resp)
                    if retry == Retry::Idempotent
                        && (resp.status().is_server_error()
                            || resp.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < self.config.retries =>
                {
                    attempt += 1;
                    tracing::debug!(%method, %url, status = %resp.status(), attempt, "retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e)
                    if retry == Retry::Idempotent
                        && is_transient(&e)
                        && attempt < self.config.retries =>
                {
                    attempt += 1;
                    tracing::debug!(%method, %url, error = %e, attempt, "retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => {
                    return Err(Error::Http {
                        method,
                        url,
                        source: e,
                    });
                }
            }
        }
    }

    /// Checks the credentials against a registry (what `berth login` does before
    /// saving them).
    pub async fn login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let url = format!("{}/v2/", self.base_url(registry));
        let resp = self.http.get(&url).send().await.map_err(|e| Error::Http {
            method: "GET".into(),
            url: url.clone(),
            source: e,
        })?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(status_error("GET", &url, resp).await);
        }
        match resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        {
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.fetch_token(registry, &realm, service.as_deref(), &[], Some(creds))
                    .await?;
                Ok(())
            }
            _ => {
                let resp = self
                    .http
                    .get(&url)
                    .header(reqwest::header::AUTHORIZATION, creds.basic_header())
                    .send()
                    .await
                    .map_err(|e| Error::Http {
                        method: "GET".into(),
                        url: url.clone(),
                        source: e,
                    })?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    StatusCode::UNAUTHORIZED => Err(Error::Unauthorized {
                        registry: registry.to_owned(),
                        message: "wrong user name or password".into(),
                    }),
                    _ => Err(status_error("GET", &url, resp).await),
                }
            }
        }
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn list_tags(&self, r: &ImageRef, page_size: Option<usize>) -> Result<Vec<String>> {
        let scopes = [pull_scope(r)];
        let mut url = self.repo_url(r, "tags/list");
        if let Some(n) = page_size {
            url.push_str(&format!("?n={n}"));
        }
        let mut tags = Vec::new();
        // bounded: a registry that keeps linking to more pages cannot loop us forever
        for _ in 0..10_000 {
            let u = url.clone();
            let resp = self
                .send(&r.registry, &scopes, Retry::Idempotent, |h| h.get(&u))
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(Error::ManifestUnknown {
                    reference: format!("{}/{}", r.registry, r.repository),
                });
            }
            if !resp.status().is_success() {
                return Err(status_error("GET", &url, resp).await);
            }
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let v: serde_json::Value = resp.json().await.map_err(|e| Error::Http {
                method: "GET".into(),
                url: url.clone(),
                source: e,
            })?;
            if let Some(list) = v["tags"].as_array() {
                tags.extend(list.iter().filter_map(|t| t.as_str().map(str::to_owned)));
            }
            match next {
                Some(n) if n.starts_with("http://") || n.starts_with("https://") => url = n,
                Some(n) => url = format!("{}{n}", self.base_url(&r.registry)),
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }
}

/// `repository:<name>:pull`.
pub(crate) fn pull_scope(r: &ImageRef) -> String {
    format!("repository:{}:pull", r.repository)
}

/// `repository:<name>:pull,push`.
pub(crate) fn push_scope(r: &ImageRef) -> String {
    format!("repository:{}:pull,push", r.repository)
}

fn scope_key(scopes: &[String]) -> String {
    let mut s = scopes.to_vec();
    s.sort();
    s.join(" ")
}

/// The URL of `rel="next"` in a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// Worth retrying: connection refused/reset, timeouts, a body cut short.
pub(crate) fn is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// The registry's own error text from a JSON error body (or the body's start).
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(errs) = v["errors"].as_array()
    {
        let msgs: Vec<String> = errs
            .iter()
            .map(|e| {
                let code = e["code"].as_str().unwrap_or("");
                let msg = e["message"].as_str().unwrap_or("");
                format!("{code} {msg}").trim().to_lowercase()
            })
            .collect();
        return msgs.join("; ");
    }
    body.chars().take(200).collect::<String>().trim().to_owned()
}

/// An error from an unexpected response.
pub(crate) async fn status_error(method: &str, url: &str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Error::Status {
        method: method.to_owned(),
        url: url.to_owned(),
        status,
        message: error_message(&body),
    }
}

/// A URL for messages, without upload state query strings.
fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Accept header for manifests: every kind we can use.
pub(crate) fn manifest_accept() -> HeaderValue {
    HeaderValue::from_static(concat!(
        "application/vnd.oci.image.manifest.v1+json, ",
        "application/vnd.oci.image.index.v1+json, ",
        "application/vnd.docker.distribution.manifest.v2+json, ",
        "application/vnd.docker.distribution.manifest.list.v2+json"
    ))
}

/// rustls is built without a default provider: install ring's once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        assert_eq!(
            next_link(r#"</v2/x/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/x/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"<http://a/b>; rel="prev""#), None);
    }

    #[test]
    fn loopback_is_plain_http_others_tls() {
        let c = Client::new(ClientConfig {
            insecure_registries: vec!["reg.lan:5000".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("localhost"), "http://localhost");
        assert_eq!(c.base_url("quay.io"), "https://quay.io");
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("reg.lan:5000"), "http://reg.lan:5000");
    }

    #[test]
    fn registry_error_bodies_are_summarised() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(error_message(body), "manifest_unknown manifest unknown");
        assert_eq!(error_message("plain"), "plain");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = Client::new(ClientConfig::default()).unwrap();
        assert_eq!(c.backoff(1), Duration::from_millis(200));
        assert_eq!(c.backoff(2), Duration::from_millis(400));
        assert_eq!(c.backoff(30), Duration::from_secs(5));
    }
}
