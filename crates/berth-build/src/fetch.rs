//! `ADD http://...`: a small, bounded HTTP/1.0 GET (plain HTTP only; HTTPS sources are
//! refused with a clear error until a TLS client is wired in), redirects followed up to
//! five times, the body written to a file while hashed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Downloads `url` into `dest`; returns the body's sha256 as `sha256:<hex>`.
pub fn fetch(url: &str, dest: &Path) -> Result<String, String> {
    let mut url = url.to_string();
    for _ in 0..5 {
        let rest = match url.strip_prefix("http://") {
            Some(r) => r.to_string(),
            None if url.starts_with("https://") => {
                return Err(format!(
                    "{url}: https sources are not supported yet (plain http only)"
                ));
            }
            None => return Err(format!("{url}: unsupported url scheme")),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest.as_str(), "/"),
        };
        let addr = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let host = hostport.split(':').next().unwrap_or(hostport);
        let err = |e: io::Error| format!("{url}: {e}");
        let mut s = TcpStream::connect(&addr).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(err)?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: berth-build\r\nAccept: */*\r\n\r\n"
        )
        .map_err(err)?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).map_err(err)?;
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{url}: not an http response: {:?}", line.trim()))?;
        let mut location = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).map_err(err)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.trim().eq_ignore_ascii_case("location")
            {
                location = Some(v.trim().to_string());
            }
        }
        if (300..400).contains(&code) {
            let loc = location.ok_or_else(|| format!("{url}: redirect without location"))?;
            url = if loc.starts_with('/') {
                format!("http://{hostport}{loc}")
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
        loop {
            let n = r.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        return Ok(format!("sha256:{}", hex_of(&h.finalize())));
    }
    Err(format!("{url}: too many redirects"))
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
}
