//! Push: blobs the registry lacks (HEAD first, cross-repository mount when asked),
//! uploaded POST then PUT, in PATCH chunks when large; then the manifest.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use berth_image::{Digest, Store};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};

use crate::client::{Client, Retry, pull_scope, push_scope, status_error};
use crate::error::{Error, Result};
use crate::manifest::{Desc, Parsed};
use crate::progress::{Event, Sink};
use crate::reference::ImageRef;

/// Options of a push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// A repository on the same registry that may already hold the blobs: they are
    /// mounted from it instead of uploaded (one token covers both repositories).
    pub mount_from: Option<String>,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the manifest pushed.
    pub digest: String,
    /// Bytes uploaded (blobs the registry had or mounted are not counted).
    pub uploaded: u64,
}

/// Upload body reads go in pieces of this size.
const READ_PIECE: usize = 1 << 20;

impl Client {
    /// Pushes the image `local_name` of `store` to `dest`.
    pub async fn push(
        &self,
        store: &Store,
        local_name: &str,
        dest: &ImageRef,
        opts: &PushOptions,
        progress: Sink,
    ) -> Result<Pushed> {
        let desc = store.resolve(local_name)?;
        let digest = berth_image::desc_digest(&desc)?;
        let bytes = store.read_blob(&digest)?;
        let media_type = desc.media_type().to_string();
        let parsed = Parsed::parse(&bytes, Some(&media_type), local_name)?;
        let uploaded = match &parsed {
            Parsed::Image { config, layers, .. } => {
                progress(Event::Resolved {
                    reference: dest.to_string(),
                    digest: digest.to_string(),
                    layers: layers.len(),
                });
                let mut blobs = vec![config.clone()];
                blobs.extend(layers.iter().cloned());
                self.push_blobs(store, dest, &blobs, opts, &progress)
                    .await?
            }
            Parsed::Index { manifests, .. } => {
                // every child manifest with its blobs first, then the index
                let mut total = 0;
                for m in manifests {
                    let d: Digest = m.digest.parse().map_err(|e| Error::Manifest {
                        reference: local_name.to_owned(),
                        reason: format!("{e}"),
                    })?;
                    let child = store.read_blob(&d)?;
                    if let Parsed::Image { config, layers, .. } =
                        Parsed::parse(&child, Some(&m.media_type), local_name)?
                    {
                        let mut blobs = vec![config.clone()];
                        blobs.extend(layers.iter().cloned());
                        total += self
                            .push_blobs(store, dest, &blobs, opts, &progress)
                            .await?;
                    }
                    self.push_manifest(dest, &m.digest, &m.media_type, Bytes::from(child))
                        .await?;
                }
                total
            }
        };
        let reference = dest.tag.clone().unwrap_or_else(|| digest.to_string());
        let pushed = self
            .push_manifest(dest, &reference, &media_type, Bytes::from(bytes))
            .await?;
        Ok(Pushed {
            digest: pushed,
            uploaded,
        })
    }

    async fn push_blobs(
        &self,
        store: &Store,
        dest: &ImageRef,
        blobs: &[Desc],
        opts: &PushOptions,
        progress: &Sink,
    ) -> Result<u64> {
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_concurrent_uploads.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for desc in blobs {
            let (client, store, dest, desc, sem, progress, opts) = (
                self.clone(),
                store.clone(),
                dest.clone(),
                desc.clone(),
                sem.clone(),
                progress.clone(),
                opts.clone(),
            );
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.ok();
                client
                    .push_blob(&store, &dest, &desc, &opts, &progress)
                    .await
            });
        }
        let mut total = 0;
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    tasks.abort_all();
                    return Err(Error::Blob {
                        digest: String::new(),
                        reason: format!("upload task failed: {e}"),
                    });
                }
            }
        }
        Ok(total)
    }

    fn push_scopes(&self, dest: &ImageRef, opts: &PushOptions) -> Vec<String> {
        let mut scopes = vec![push_scope(dest)];
        if let Some(from) = &opts.mount_from
            && from != &dest.repository
        {
            scopes.push(pull_scope(&dest.with_reference(None, None).in_repo(from)));
        }
        scopes
    }

    /// Whether the repository already has a blob.
    pub async fn blob_exists(&self, r: &ImageRef, digest: &str, scopes: &[String]) -> Result<bool> {
        let url = self.repo_url(r, &format!("blobs/{digest}"));
        let resp = self
            .send(&r.registry, scopes, Retry::Idempotent, |h| h.head(&url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error("HEAD", &url, resp).await),
        }
    }

    /// Uploads one blob from the store unless the registry has it; returns bytes sent.
    pub async fn push_blob(
        &self,
        store: &Store,
        dest: &ImageRef,
        desc: &Desc,
        opts: &PushOptions,
        progress: &Sink,
    ) -> Result<u64> {
        let scopes = self.push_scopes(dest, opts);
        if self.blob_exists(dest, &desc.digest, &scopes).await? {
            progress(Event::Exists {
                digest: desc.digest.clone(),
                size: desc.size,
            });
            return Ok(0);
        }
        let digest: Digest = desc.digest.parse().map_err(|e| Error::Blob {
            digest: desc.digest.clone(),
            reason: format!("{e}"),
        })?;
        let path = store.blob_path(&digest);
        if !store.has_blob(&digest) {
            return Err(Error::Blob {
                digest: desc.digest.clone(),
                reason: "not in the local store".into(),
            });
        }
        let mut attempt = 0;
        loop {
            match self
                .upload_once(dest, desc, &path, &scopes, opts, progress)
                .await
            {
                Ok(n) => {
                    progress(Event::Done {
                        digest: desc.digest.clone(),
                        size: desc.size,
                    });
                    return Ok(n);
                }
                Err(e) if attempt < self.config.retries && retryable_upload(&e) => {
                    attempt += 1;
                    progress(Event::Retrying {
                        digest: desc.digest.clone(),
                        attempt,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_once(
        &self,
        dest: &ImageRef,
        desc: &Desc,
        path: &std::path::Path,
        scopes: &[String],
        opts: &PushOptions,
        progress: &Sink,
    ) -> Result<u64> {
        let mut url = self.repo_url(dest, "blobs/uploads/");
        if let Some(from) = opts.mount_from.as_deref().filter(|f| *f != dest.repository) {
            url.push_str(&format!("?mount={}&from={from}", desc.digest));
        }
        let resp = self
            .send(&dest.registry, scopes, Retry::Idempotent, |h| {
                h.post(&url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if resp.status() == StatusCode::CREATED
            && let Some(from) = &opts.mount_from
        {
            progress(Event::Mounted {
                digest: desc.digest.clone(),
                from: from.clone(),
            });
            return Ok(0);
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error("POST", &url, resp).await);
        }
        let mut location = self.location(dest, &resp, &url)?;
        progress(Event::Started {
            digest: desc.digest.clone(),
            size: desc.size,
            offset: 0,
        });
        let chunk = self.config.chunk_size.max(1);
        let mut sent = 0u64;
        if desc.size > chunk {
            // PATCH chunks with Content-Range, then a PUT without body closes the upload
            while sent < desc.size {
                let len = chunk.min(desc.size - sent);
                let loc = location.clone();
                let (p, start) = (path.to_owned(), sent);
                let resp = self
                    .send(&dest.registry, scopes, Retry::Never, |h| {
                        h.patch(&loc)
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, len)
                            .header(CONTENT_RANGE, format!("{start}-{}", start + len - 1))
                            .body(file_body(&p, start, len))
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error("PATCH", &location, resp).await);
                }
                location = self.location(dest, &resp, &location)?;
                sent += len;
                progress(Event::Progress {
                    digest: desc.digest.clone(),
                    done: sent,
                    size: desc.size,
                });
            }
            let put = with_digest(&location, &desc.digest);
            let resp = self
                .send(&dest.registry, scopes, Retry::Never, |h| {
                    h.put(&put).header(CONTENT_LENGTH, 0)
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error("PUT", &location, resp).await);
            }
        } else {
            let put = with_digest(&location, &desc.digest);
            let size = desc.size;
            let resp = self
                .send(&dest.registry, scopes, Retry::Never, |h| {
                    h.put(&put)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, size)
                        .body(file_body(path, 0, size))
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error("PUT", &location, resp).await);
            }
            sent = size;
        }
        Ok(sent)
    }

    /// The absolute upload URL from a `Location` header.
    fn location(&self, dest: &ImageRef, resp: &reqwest::Response, url: &str) -> Result<String> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Status {
                method: "POST".into(),
                url: url.to_owned(),
                status: resp.status().as_u16(),
                message: "no Location header in the upload answer".into(),
            })?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc.to_owned())
        } else {
            Ok(format!("{}{loc}", self.base_url(&dest.registry)))
        }
    }

    /// PUTs a manifest; returns the digest the registry reports.
    pub async fn push_manifest(
        &self,
        dest: &ImageRef,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<String> {
        let url = self.repo_url(dest, &format!("manifests/{reference}"));
        let scopes = [push_scope(dest)];
        let resp = self
            .send(&dest.registry, &scopes, Retry::Idempotent, |h| {
                h.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(status_error("PUT", &url, resp).await);
        }
        let ours = Digest::of(&body).to_string();
        if let Some(theirs) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && theirs != ours
        {
            return Err(Error::Manifest {
                reference: dest.to_string(),
                reason: format!("registry stored digest {theirs}, we sent {ours}"),
            });
        }
        Ok(ours)
    }
}

impl ImageRef {
    /// The same registry, another repository.
    pub fn in_repo(&self, repository: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: repository.to_owned(),
            tag: None,
            digest: None,
        }
    }
}

fn retryable_upload(e: &Error) -> bool {
    match e {
        Error::Http { source, .. } => crate::client::is_transient(source),
        Error::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// `len` bytes of a file from `start` as a streamed body (never the whole blob in
/// memory). Reads are small and hit the page cache, so they stay on the runtime thread.
fn file_body(path: &std::path::Path, start: u64, len: u64) -> reqwest::Body {
    let file =
        std::fs::File::open(path).and_then(|mut f| f.seek(SeekFrom::Start(start)).map(|_| f));
    let stream = futures_util::stream::unfold((file, len), |(file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut f = match file {
            Ok(f) => f,
            Err(e) => return Some((Err(e), (Err(std::io::Error::other("already failed")), 0))),
        };
        let n = (left as usize).min(READ_PIECE);
        let mut buf = vec![0u8; n];
        match f.read_exact(&mut buf) {
            Ok(()) => Some((Ok(Bytes::from(buf)), (Ok(f), left - n as u64))),
            Err(e) => Some((Err(e), (Ok(f), 0))),
        }
    });
    reqwest::Body::wrap_stream(stream)
}
