//! `ADD http://...` and `ADD https://...`: a small, bounded HTTP/1.0 GET, redirects
//! followed up to five times, the body written to a file while hashed.
//!
//! HTTPS goes through rustls and always verifies the server: roots come from the
//! system store, or from `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (as OpenSSL-based
//! clients do). A body cut short (connection closed before `Content-Length` bytes, or
//! a TLS stream ended without close_notify and no length to check) is an error.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// The TLS client configuration, built once per process.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no trusted root certificates found (system store or SSL_CERT_FILE){}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", why.join("; "))
                    }
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls setup: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
}

/// A plain or TLS connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Downloads `url` into `dest`; returns the body's sha256 as `sha256:<hex>`.
pub fn fetch(url: &str, dest: &Path) -> Result<String, String> {
    let mut url = url.to_string();
    for _ in 0..5 {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r.to_string())
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r.to_string())
        } else {
            return Err(format!("{url}: unsupported url scheme"));
        };
        let rest = rest.split('#').next().unwrap_or("").to_string();
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest.as_str(), "/"),
        };
        let (host, addr) = split_host(hostport, if tls { 443 } else { 80 });
        let err = |e: io::Error| format!("{url}: {e}");
        let tcp = TcpStream::connect(&addr).map_err(err)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(err)?;
        tcp.set_write_timeout(Some(Duration::from_secs(60)))
            .map_err(err)?;
        let mut conn = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{url}: invalid server name {host:?}: {e}"))?;
            let c = rustls::ClientConnection::new(tls_config()?, name)
                .map_err(|e| format!("{url}: tls: {e}"))?;
            Conn::Tls(Box::new(rustls::StreamOwned::new(c, tcp)))
        } else {
            Conn::Plain(tcp)
        };
        write!(
            conn,
            "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: berth-build\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        .and_then(|()| conn.flush())
        .map_err(|e| format!("{url}: {}", tls_reason(&e)))?;
        let mut r = BufReader::new(conn);
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("{url}: {}", tls_reason(&e)))?;
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{url}: not an http response: {:?}", line.trim()))?;
        let mut location = None;
        let mut length: Option<u64> = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).map_err(err)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim();
                if k.eq_ignore_ascii_case("location") {
                    location = Some(v.trim().to_string());
                } else if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().ok();
                }
            }
        }
        if (300..400).contains(&code) {
            let loc = location.ok_or_else(|| format!("{url}: redirect without location"))?;
            url = if loc.starts_with('/') {
                format!("{}://{hostport}{loc}", if tls { "https" } else { "http" })
            } else {
                loc
            };
            continue;
        }
        if code != 200 {
            return Err(format!("{url}: server answered {code}"));
        }
        let mut f = std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got: u64 = 0;
        loop {
            let n = match r.read(&mut buf) {
                Ok(n) => n,
                // a TLS peer that closes without close_notify: complete only when the
                // announced length arrived
                Err(e)
                    if tls
                        && e.kind() == io::ErrorKind::UnexpectedEof
                        && length.is_some_and(|l| l == got) =>
                {
                    0
                }
                Err(e) => return Err(format!("{url}: {}", tls_reason(&e))),
            };
            if n == 0 {
                break;
            }
            got += n as u64;
            h.update(&buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        if let Some(l) = length
            && l != got
        {
            return Err(format!(
                "{url}: body cut short: {got} of {l} bytes received"
            ));
        }
        return Ok(format!("sha256:{}", hex_of(&h.finalize())));
    }
    Err(format!("{url}: too many redirects"))
}

/// A readable reason for an error a TLS stream gave (certificate problems say so).
fn tls_reason(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!("tls: server certificate not trusted: {c:?}")
        }
        Some(t) => format!("tls: {t}"),
        None => e.to_string(),
    }
}

/// Host name (brackets removed) and `host:port` address of a URL's authority.
fn split_host(hostport: &str, default_port: u16) -> (String, String) {
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    if let Some(rest) = hostport.strip_prefix('[') {
        // [v6]:port
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').unwrap_or("");
        let port = if port.is_empty() {
            default_port.to_string()
        } else {
            port.to_string()
        };
        return (h.to_string(), format!("[{h}]:{port}"));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), format!("{h}:{p}")),
        None => (hostport.to_string(), format!("{hostport}:{default_port}")),
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The file name a URL's content gets when ADD copies it into a directory.
pub fn file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = no_query.split_once("://").map_or(no_query, |(_, r)| r);
    match after_scheme.split_once('/') {
        Some((_, p)) => p
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("index.html")
            .to_string(),
        None => "index.html".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name("http://h/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(file_name("http://h:8/"), "index.html");
        assert_eq!(file_name("http://h"), "index.html");
    }

    #[test]
    fn hosts() {
        assert_eq!(
            split_host("example.com", 443),
            ("example.com".into(), "example.com:443".into())
        );
        assert_eq!(
            split_host("127.0.0.1:8443", 443),
            ("127.0.0.1".into(), "127.0.0.1:8443".into())
        );
        assert_eq!(
            split_host("[::1]:8443", 443),
            ("::1".into(), "[::1]:8443".into())
        );
        assert_eq!(split_host("[::1]", 80), ("::1".into(), "[::1]:80".into()));
    }
}
