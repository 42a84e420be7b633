//! Pull: resolve, select the platform, download blobs in parallel straight into the
//! store (hashed on the way, resumable with Range), unpack each layer into its snapshot
//! as soon as its blob is complete (while the others still download), then record the
//! tag.

use std::io::Write as _;
use std::sync::Arc;

use berth_image::oci_spec::image::{Descriptor, MediaType};
use berth_image::{BlobWriter, Digest, Store};
use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};

use crate::client::{Client, Retry, manifest_accept, pull_scope, status_error};
use crate::error::{Error, Result};
use crate::manifest::{Desc, Parsed, Platform, select_platform};
use crate::progress::{Event, Sink};
use crate::reference::ImageRef;

/// Manifests larger than this are refused (the spec suggests 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;
/// Progress events at most every this many bytes per blob.
const PROGRESS_STEP: u64 = 512 << 10;

/// Options of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Which platform to take from an index.
    pub platform: Platform,
    /// Name to record in the store; default `registry/repo:tag` (or `@digest`).
    pub name: Option<String>,
    /// Also unpack every layer into its snapshot (each one as soon as its blob is
    /// stored, overlapping the other downloads), so the image is ready to run.
    pub unpack: bool,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            platform: Platform::linux_amd64(),
            name: None,
            unpack: false,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Name recorded in the store (`registry/repo:tag` or `registry/repo@digest`).
    pub name: String,
    /// Descriptor of the image manifest (what the name points to).
    pub manifest: Descriptor,
    /// The config blob.
    pub config: Desc,
    /// The layers, bottom first.
    pub layers: Vec<Desc>,
    /// Bytes downloaded (not counting blobs already present).
    pub downloaded: u64,
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Its digest (computed from the bytes).
    pub digest: String,
    /// The raw bytes.
    pub bytes: Bytes,
    /// Parsed content.
    pub parsed: Parsed,
}

impl Client {
    /// GETs a manifest by tag or digest, with the full Accept list; verifies the digest
    /// when pinned.
    pub async fn fetch_manifest(&self, r: &ImageRef, reference: &str) -> Result<FetchedManifest> {
        let url = self.repo_url(r, &format!("manifests/{reference}"));
        let scopes = [pull_scope(r)];
        let resp = self
            .send(&r.registry, &scopes, Retry::Idempotent, |h| {
                h.get(&url).header(ACCEPT, manifest_accept())
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ManifestUnknown {
                reference: r.with_reference(None, None).to_string() + &sep(reference),
            });
        }
        if !resp.status().is_success() {
            return Err(status_error("GET", &url, resp).await);
        }
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST as u64)
        {
            return Err(Error::Manifest {
                reference: r.to_string(),
                reason: "larger than 4 MiB".into(),
            });
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| Error::Http {
            method: "GET".into(),
            url: url.clone(),
            source: e,
        })?;
        let digest = Digest::of(&bytes).to_string();
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::Manifest {
                reference: r.to_string(),
                reason: format!(
                    "registry sent content with digest {digest}, asked for {reference}"
                ),
            });
        }
        let parsed = Parsed::parse(&bytes, ct.as_deref(), &r.to_string())?;
        Ok(FetchedManifest {
            digest,
            bytes,
            parsed,
        })
    }

    /// Resolves `r` to an image manifest for the platform (following an index).
    pub async fn resolve(&self, r: &ImageRef, platform: &Platform) -> Result<FetchedManifest> {
        let top = self.fetch_manifest(r, r.manifest_reference()).await?;
        match &top.parsed {
            Parsed::Image { .. } => Ok(top),
            Parsed::Index { manifests, .. } => {
                let entry = select_platform(manifests, platform, &r.to_string())?;
                let child = self.fetch_manifest(r, &entry.digest).await?;
                match child.parsed {
                    Parsed::Image { .. } => Ok(child),
                    Parsed::Index { .. } => Err(Error::Manifest {
                        reference: r.to_string(),
                        reason: "an index inside an index is not supported".into(),
                    }),
                }
            }
        }
    }

    /// Pulls `r` into `store`: blobs in parallel, verified, then the name recorded.
    pub async fn pull(
        &self,
        store: &Store,
        r: &ImageRef,
        opts: &PullOptions,
        progress: Sink,
    ) -> Result<Pulled> {
        let m = self.resolve(r, &opts.platform).await?;
        let Parsed::Image {
            media_type,
            config,
            layers,
        } = &m.parsed
        else {
            unreachable!("resolve returns image manifests")
        };
        progress(Event::Resolved {
            reference: r.to_string(),
            digest: m.digest.clone(),
            layers: layers.len(),
        });
        let downloads = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_concurrent_downloads.max(1),
        ));
        // unpacking is CPU-bound (decompression, hashing): one per core at most
        let unpacks = Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 4),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        // index 0 is the config, k + 1 the layer k
        for (i, desc) in std::iter::once(config).chain(layers.iter()).enumerate() {
            let (client, store, r, desc, sem, progress) = (
                self.clone(),
                store.clone(),
                r.clone(),
                desc.clone(),
                downloads.clone(),
                progress.clone(),
            );
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.ok();
                let n = client.download_blob(&store, &r, &desc, &progress).await?;
                Ok(Step::Downloaded(i, n))
            });
        }
        let mut downloaded = 0;
        let mut first_err = None;
        // chain IDs (from the config's diff IDs) and the layers waiting for them
        let mut chain: Option<Vec<(Digest, Digest)>> = None;
        let mut waiting: Vec<usize> = Vec::new();
        while let Some(res) = tasks.join_next().await {
            let step = match res {
                Ok(Ok(step)) => step,
                Ok(Err(e)) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                        // the others are pointless now; their partial files stay resumable
                        tasks.abort_all();
                    }
                    continue;
                }
                Err(e) if e.is_cancelled() => continue,
                Err(e) => {
                    first_err.get_or_insert(Error::Blob {
                        digest: String::new(),
                        reason: format!("pull task failed: {e}"),
                    });
                    tasks.abort_all();
                    continue;
                }
            };
            if first_err.is_some() {
                continue;
            }
            let ready: Vec<usize> = match step {
                Step::Downloaded(i, n) => {
                    downloaded += n;
                    match (opts.unpack, i) {
                        (false, _) => Vec::new(),
                        (true, 0) => match layer_chain(store, config, layers.len()) {
                            Ok(c) => {
                                chain = Some(c);
                                std::mem::take(&mut waiting)
                            }
                            Err(e) => {
                                first_err = Some(e);
                                tasks.abort_all();
                                continue;
                            }
                        },
                        (true, i) if chain.is_some() => vec![i - 1],
                        (true, i) => {
                            waiting.push(i - 1);
                            Vec::new()
                        }
                    }
                }
                Step::Unpacked(k) => {
                    progress(Event::Unpacked {
                        digest: layers[k].digest.clone(),
                    });
                    Vec::new()
                }
            };
            let Some(chain) = &chain else { continue };
            for k in ready {
                let (diff_id, chain_id) = chain[k].clone();
                if store.has_snapshot(&chain_id) {
                    continue;
                }
                let (store, sem, desc) = (store.clone(), unpacks.clone(), layers[k].clone());
                tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await.ok();
                    let layer = oci_desc(&desc)?;
                    tokio::task::spawn_blocking(move || {
                        store.unpack_snapshot(&layer, &diff_id, &chain_id)
                    })
                    .await
                    .map_err(|e| blob_err(&desc.digest, format!("unpack task: {e}")))?
                    .map_err(|e| Error::Unpack {
                        digest: desc.digest.clone(),
                        source: e,
                    })?;
                    Ok(Step::Unpacked(k))
                });
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let stored = store.put_blob(&m.bytes)?;
        debug_assert_eq!(stored.to_string(), m.digest);
        let desc = Descriptor::new(
            MediaType::from(media_type.as_str()),
            m.bytes.len() as u64,
            stored.to_oci(),
        );
        let name = match (&opts.name, &r.tag) {
            (Some(n), _) => n.clone(),
            (None, Some(_)) => r.name(),
            (None, None) => format!("{}/{}@{}", r.registry, r.repository, m.digest),
        };
        store.tag(&name, desc.clone())?;
        Ok(Pulled {
            name,
            manifest: desc,
            config: config.clone(),
            layers: layers.clone(),
            downloaded,
        })
    }

    /// Downloads one blob into the store unless present; returns the bytes fetched.
    /// Interrupted transfers continue with Range from what was received (also across
    /// processes, through the store's resumable partial files).
    pub async fn download_blob(
        &self,
        store: &Store,
        r: &ImageRef,
        desc: &Desc,
        progress: &Sink,
    ) -> Result<u64> {
        let digest: Digest = desc.digest.parse().map_err(|e| Error::Blob {
            digest: desc.digest.clone(),
            reason: format!("{e}"),
        })?;
        if store.has_blob(&digest) {
            progress(Event::Exists {
                digest: desc.digest.clone(),
                size: desc.size,
            });
            return Ok(0);
        }
        match self.download_once(store, r, desc, &digest, progress).await {
            // a partial left by an earlier run may itself be bad (its content came from
            // a broken server, or the disk): the failed commit removed it, start over
            Err(Resumed(true, Error::Blob { .. })) => {
                tracing::info!(digest = %desc.digest, "resumed partial failed verification, downloading again");
                self.download_once(store, r, desc, &digest, progress)
                    .await
                    .map_err(|Resumed(_, e)| e)
            }
            other => other.map_err(|Resumed(_, e)| e),
        }
    }

    async fn download_once(
        &self,
        store: &Store,
        r: &ImageRef,
        desc: &Desc,
        digest: &Digest,
        progress: &Sink,
    ) -> Result<u64, Resumed> {
        let size = desc.size;
        let writer = {
            let (store, digest) = (store.clone(), digest.clone());
            tokio::task::spawn_blocking(move || store.resume_writer((&digest, size)))
                .await
                .map_err(|e| Resumed(false, blob_err(&desc.digest, format!("writer task: {e}"))))?
                .map_err(|e| Resumed(false, e.into()))?
        };
        let start = writer.written();
        let resumed = start > 0;
        let fail = |e: Error| Resumed(resumed, e);
        progress(Event::Started {
            digest: desc.digest.clone(),
            size,
            offset: start,
        });
        // each chunk is hashed and written (into the page cache: well under a
        // millisecond) before the next is read, so hyper reuses one read buffer per
        // connection instead of allocating while chunks queue up for a writer thread;
        // that keeps a pull's memory near a few hundred KiB per layer
        let mut writer = writer;
        let got = self
            .fetch_into(r, desc, start, &mut writer, progress)
            .await
            .map_err(fail)?;
        let committed = tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| fail(blob_err(&desc.digest, format!("commit task: {e}"))))?;
        match committed {
            Ok(_) => {}
            Err(berth_image::Error::DigestMismatch { actual, .. }) => {
                return Err(fail(blob_err(
                    &desc.digest,
                    format!("content from the registry has digest {actual}; nothing stored"),
                )));
            }
            Err(e) => return Err(fail(e.into())),
        }
        progress(Event::Done {
            digest: desc.digest.clone(),
            size,
        });
        Ok(got)
    }

    /// Streams the blob from `offset` into `tx`, resuming after interruptions.
    async fn fetch_into(
        &self,
        r: &ImageRef,
        desc: &Desc,
        mut offset: u64,
        writer: &mut BlobWriter,
        progress: &Sink,
    ) -> Result<u64> {
        let url = self.repo_url(r, &format!("blobs/{}", desc.digest));
        let scopes = [pull_scope(r)];
        let idle = self.config.idle_timeout;
        let first = offset;
        let mut attempt = 0u32;
        let mut last_report = offset;
        loop {
            if offset == desc.size && desc.size > 0 {
                return Ok(offset - first);
            }
            let from = offset;
            let resp = self
                .send(&r.registry, &scopes, Retry::Idempotent, |h| {
                    let rb = h.get(&url);
                    if from > 0 {
                        rb.header(RANGE, format!("bytes={from}-"))
                    } else {
                        rb
                    }
                })
                .await;
            let failure = match resp {
                Err(e) => e,
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::NOT_FOUND {
                        return Err(blob_err(&desc.digest, "unknown to the registry".into()));
                    }
                    // 200 to a Range request: the server sends it all; skip what we have
                    let mut skip = 0u64;
                    if status == StatusCode::PARTIAL_CONTENT {
                        let start = resp
                            .headers()
                            .get(CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(content_range_start);
                        if start != Some(from) {
                            return Err(blob_err(
                                &desc.digest,
                                format!(
                                    "registry answered a range request for byte {from} with {start:?}"
                                ),
                            ));
                        }
                    } else if status.is_success() {
                        skip = from;
                    } else {
                        return Err(status_error("GET", &url, resp).await);
                    }
                    let into = writer.path().display().to_string();
                    let mut stream = resp.bytes_stream();
                    let mut err = None;
                    loop {
                        match tokio::time::timeout(idle, stream.next()).await {
                            Err(_) => {
                                err = Some(Error::Stalled {
                                    what: format!("blob {}", desc.digest),
                                    secs: idle.as_secs(),
                                });
                                break;
                            }
                            Ok(None) => break,
                            Ok(Some(Err(e))) => {
                                err = Some(Error::Http {
                                    method: "GET".into(),
                                    url: url.clone(),
                                    source: e,
                                });
                                break;
                            }
                            Ok(Some(Ok(mut chunk))) => {
                                if skip > 0 {
                                    let n = skip.min(chunk.len() as u64);
                                    skip -= n;
                                    chunk = chunk.slice(n as usize..);
                                    if chunk.is_empty() {
                                        continue;
                                    }
                                }
                                offset += chunk.len() as u64;
                                if offset > desc.size {
                                    return Err(blob_err(
                                        &desc.digest,
                                        format!(
                                            "registry sent more than the {} bytes announced; nothing stored",
                                            desc.size
                                        ),
                                    ));
                                }
                                writer.write_all(&chunk).map_err(|e| {
                                    blob_err(&desc.digest, format!("writing {into}: {e}"))
                                })?;
                                if offset - last_report >= PROGRESS_STEP || offset == desc.size {
                                    last_report = offset;
                                    progress(Event::Progress {
                                        digest: desc.digest.clone(),
                                        done: offset,
                                        size: desc.size,
                                    });
                                }
                            }
                        }
                    }
                    match err {
                        None if offset == desc.size => return Ok(offset - first),
                        None => blob_err(
                            &desc.digest,
                            format!("body ended after {offset} of {} bytes", desc.size),
                        ),
                        Some(e) => e,
                    }
                }
            };
            let retryable = match &failure {
                Error::Http { source, .. } => crate::client::is_transient(source),
                Error::Stalled { .. } | Error::Blob { .. } | Error::Status { .. } => true,
                _ => false,
            };
            if !retryable || attempt >= self.config.retries {
                return Err(failure);
            }
            attempt += 1;
            progress(Event::Retrying {
                digest: desc.digest.clone(),
                attempt,
                reason: failure.to_string(),
            });
            tracing::info!(digest = %desc.digest, offset, attempt, error = %failure, "resuming blob download");
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }
}

/// An error, and whether the attempt had resumed an earlier partial download.
struct Resumed(bool, Error);

/// What one task of a pull finished.
enum Step {
    /// Blob `i` (0 the config, k + 1 the layer k) is in the store; bytes fetched.
    Downloaded(usize, u64),
    /// Layer k is unpacked into its snapshot.
    Unpacked(usize),
}

/// (diff ID, chain ID) of each layer, from the stored config.
fn layer_chain(store: &Store, config: &Desc, layers: usize) -> Result<Vec<(Digest, Digest)>> {
    let bad = |reason: String| blob_err(&config.digest, reason);
    let digest: Digest = config.digest.parse().map_err(|e| bad(format!("{e}")))?;
    let bytes = store.read_blob(&digest)?;
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    let cfg: Config =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("image config: {e}")))?;
    if cfg.rootfs.diff_ids.len() != layers {
        return Err(bad(format!(
            "image config lists {} diff IDs for {layers} layers",
            cfg.rootfs.diff_ids.len()
        )));
    }
    let diff_ids = cfg
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.parse::<Digest>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("image config diff ID: {e}")))?;
    let chain = berth_image::manifest::chain_ids(&diff_ids);
    Ok(diff_ids.into_iter().zip(chain).collect())
}

/// The store's descriptor type for a manifest entry.
fn oci_desc(d: &Desc) -> Result<Descriptor> {
    let digest: Digest = d
        .digest
        .parse()
        .map_err(|e| blob_err(&d.digest, format!("{e}")))?;
    Ok(Descriptor::new(
        MediaType::from(d.media_type.as_str()),
        d.size,
        digest.to_oci(),
    ))
}

/// Start offset of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn blob_err(digest: &str, reason: String) -> Error {
    Error::Blob {
        digest: digest.to_owned(),
        reason,
    }
}

fn sep(reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("@{reference}")
    } else {
        format!(":{reference}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("items 1-2"), None);
    }
}
