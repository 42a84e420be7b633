//! End-to-end tests of the registry fixture and of berth's registry client against
//! Debian's docker-registry on loopback.

use std::process::Command;

use anyhow::{Result, bail};
use integration_tests::registry::{Auth, Registry};

/// `curl` a URL; returns (status, body).
fn curl(args: &[&str]) -> Result<(u16, String)> {
    integration_tests::require_cmd("curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse()?, body.to_owned()))
}

#[test]
fn fixture_anonymous_registry_answers() -> Result<()> {
    let reg = Registry::start(Auth::None)?;
    let (status, body) = curl(&[&format!("{}/v2/", reg.url())])?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(&[&format!("{}/v2/x/tags/list", reg.url())])?;
    assert_eq!(status, 404);
    Ok(())
}

#[test]
fn fixture_basic_auth_checks_credentials() -> Result<()> {
    let reg = Registry::start(Auth::basic("alice", "s3cret"))?;
    let url = format!("{}/v2/", reg.url());
    assert_eq!(curl(&[&url])?.0, 401);
    assert_eq!(curl(&["-u", "alice:wrong", &url])?.0, 401);
    assert_eq!(curl(&["-u", "alice:s3cret", &url])?.0, 200);
    Ok(())
}

#[test]
fn fixture_bearer_tokens_are_accepted() -> Result<()> {
    let reg = Registry::start(Auth::bearer("bob", "pw"))?;
    let url = format!("{}/v2/", reg.url());
    let (status, _) = curl(&["-D", "-", &url])?;
    assert_eq!(status, 401);
    // a token for two scopes in one request, then an upload with it
    let token = reg
        .token(&["repository:a/b:pull,push", "repository:c:pull"])?
        .expect("bearer fixture gives tokens");
    let bearer = format!("Authorization: Bearer {token}");
    let (status, body) = curl(&["-H", &bearer, &url])?;
    assert_eq!(status, 200, "{body}\n{}", reg.log());
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &format!("{}/v2/a/b/blobs/uploads/", reg.url()),
    ])?;
    assert_eq!(status, 202, "{body}\n{}", reg.log());
    // the token does not grant push on c
    let (status, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &format!("{}/v2/c/blobs/uploads/", reg.url()),
    ])?;
    assert_eq!(status, 401);
    let reqs = reg.token_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].scopes,
        ["repository:a/b:pull,push", "repository:c:pull"]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// berth's registry client against the fixture

mod client {
    use std::path::Path;
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use berth_image::Store;
    use berth_registry::{
        Client, ClientConfig, Credentials, Event, ImageRef, PullOptions, PushOptions,
    };
    use integration_tests::fault_proxy::{Fault, FaultProxy};
    use integration_tests::registry::{Auth, Registry};
    use integration_tests::{TestRoots, bin_path, require_cmd};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// A client that reads no docker config and retries fast.
    fn client_for(reg: &Registry) -> Client {
        let mut config = ClientConfig {
            docker_config: Some("".into()),
            backoff: Duration::from_millis(20),
            retries: 4,
            idle_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        if let Some((u, p)) = reg.credentials() {
            config
                .credentials
                .insert(reg.addr().to_owned(), Credentials::new(u, p));
        }
        Client::new(config).expect("client")
    }

    fn events() -> (berth_registry::Sink, Arc<Mutex<Vec<Event>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (Arc::new(move |e| s.lock().unwrap().push(e)), seen)
    }

    /// A store holding the busybox fixture image under `name`.
    fn store_with_busybox(dir: &Path, name: &str) -> Result<(Store, String)> {
        let store = Store::open(&dir.join("images"))?;
        let desc = berth_image::fixtures::busybox_image(&store, name)?;
        Ok((store, desc.digest().to_string()))
    }

    /// `berth` with private roots and a private docker config dir.
    fn berth(
        roots: &TestRoots,
        docker_config: &Path,
        args: &[&str],
    ) -> Result<(bool, String, String)> {
        let out = roots
            .berth()
            .env("DOCKER_CONFIG", docker_config)
            .args(args)
            .output()
            .with_context(|| format!("running berth {args:?}"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn berth_ok(roots: &TestRoots, docker_config: &Path, args: &[&str]) -> Result<String> {
        let (ok, out, err) = berth(roots, docker_config, args)?;
        if !ok {
            bail!("berth {args:?} failed:\n{out}\n{err}");
        }
        Ok(out)
    }

    /// Push from one berth root, pull into another, through the CLI.
    fn cli_round_trip(auth: Auth) -> Result<()> {
        let _ = bin_path("berth");
        let reg = Registry::start(auth)?;
        let (src, dst) = (TestRoots::new()?, TestRoots::new()?);
        let docker_config = src.path().join("docker");
        let name = format!("{}/test/busybox:v1", reg.addr());
        let (_, digest) = store_with_busybox(&src.root(), &name)?;

        if let Some((user, pass)) = reg.credentials() {
            // without credentials the registry refuses, and berth says how to fix it
            let (ok, _, err) = berth(&src, &docker_config, &["push", &name])?;
            assert!(!ok);
            assert!(
                err.contains("unauthorized") && err.contains("berth login"),
                "{err}"
            );
            let (ok, _, err) = berth(
                &src,
                &docker_config,
                &["login", "-u", user, "-p", "wrong", reg.addr()],
            )?;
            assert!(!ok, "login with a wrong password succeeded");
            assert!(err.contains("unauthorized"), "{err}");
            let out = berth_ok(
                &src,
                &docker_config,
                &["login", "-u", user, "-p", pass, reg.addr()],
            )?;
            assert!(out.contains("Login succeeded"), "{out}");
            let cfg = std::fs::read_to_string(docker_config.join("config.json"))?;
            assert!(cfg.contains(reg.addr()), "{cfg}");
        }
        let out = berth_ok(&src, &docker_config, &["push", &name])?;
        assert!(
            out.contains(&digest),
            "push output lacks the digest {digest}: {out}"
        );

        let out = berth_ok(&dst, &docker_config, &["pull", &name])?;
        assert!(out.contains(&digest), "{out}");
        let store = Store::open(&dst.root().join("images"))?;
        assert_eq!(store.resolve(&name)?.digest().to_string(), digest);
        // unpacked too: the snapshot of the one layer holds busybox
        let image = store.image(&name, &Default::default())?;
        let chain = image.chain_ids()?;
        assert!(
            store.snapshot_path(&chain[0]).join("bin/busybox").exists(),
            "layer not unpacked after pull"
        );
        // pulling again transfers nothing
        let out = berth_ok(&dst, &docker_config, &["pull", &name])?;
        assert!(out.contains("0 B downloaded"), "{out}");

        if reg.credentials().is_some() {
            let out = berth_ok(&src, &docker_config, &["logout", reg.addr()])?;
            assert!(out.contains("Removed"), "{out}");
            let (ok, _, err) = berth(&TestRoots::new()?, &docker_config, &["pull", &name])?;
            assert!(!ok && err.contains("unauthorized"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn cli_push_pull_anonymous() -> Result<()> {
        cli_round_trip(Auth::None)
    }

    #[test]
    fn cli_push_pull_basic_auth() -> Result<()> {
        cli_round_trip(Auth::basic("alice", "wonderland"))
    }

    #[test]
    fn cli_push_pull_bearer_token() -> Result<()> {
        cli_round_trip(Auth::bearer("bob", "builder"))
    }

    #[test]
    fn cross_repo_mount_asks_one_token_for_both_repos() -> Result<()> {
        let reg = Registry::start(Auth::bearer("bob", "builder"))?;
        let dir = tempfile::tempdir()?;
        let name = format!("{}/origin/img:1", reg.addr());
        let (store, _) = store_with_busybox(dir.path(), &name)?;
        let client = client_for(&reg);
        let rt = rt();
        rt.block_on(client.push(
            &store,
            &name,
            &ImageRef::parse(&name)?,
            &PushOptions::default(),
            berth_registry::progress::discard(),
        ))?;
        let (sink, seen) = events();
        let dest = ImageRef::parse(&format!("{}/copy/img:1", reg.addr()))?;
        let opts = PushOptions {
            mount_from: Some("origin/img".into()),
        };
        let pushed = rt.block_on(client.push(&store, &name, &dest, &opts, sink))?;
        assert_eq!(pushed.uploaded, 0, "blobs were uploaded instead of mounted");
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().any(|e| matches!(e, Event::Mounted { .. })),
            "{seen:?}"
        );
        let reqs = reg.token_requests();
        assert!(
            reqs.iter().any(|r| r
                .scopes
                .contains(&"repository:copy/img:pull,push".to_string())
                && r.scopes.contains(&"repository:origin/img:pull".to_string())),
            "{reqs:?}"
        );
        Ok(())
    }

    #[test]
    fn tags_are_listed_across_pages() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let dir = tempfile::tempdir()?;
        let base = format!("{}/many/tags", reg.addr());
        let (store, _) = store_with_busybox(dir.path(), &format!("{base}:t0"))?;
        let client = client_for(&reg);
        let rt = rt();
        for i in 0..5 {
            let dest = ImageRef::parse(&format!("{base}:t{i}"))?;
            rt.block_on(client.push(
                &store,
                &format!("{base}:t0"),
                &dest,
                &PushOptions::default(),
                berth_registry::progress::discard(),
            ))?;
        }
        let mut tags = rt.block_on(client.list_tags(&ImageRef::parse(&base)?, Some(2)))?;
        tags.sort();
        assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4"]);
        Ok(())
    }

    #[test]
    fn skopeo_pushes_berth_pulls() -> Result<()> {
        require_cmd("skopeo");
        let _ = bin_path("berth");
        let reg = Registry::start(Auth::None)?;
        let src = tempfile::tempdir()?;
        // berth's store is an OCI layout: skopeo reads it directly
        let (_, digest) = store_with_busybox(src.path(), "fixture:1")?;
        let dest = format!("{}/from/skopeo:1", reg.addr());
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!(
                "oci:{}:fixture:1",
                src.path().join("images").display()
            ))
            .arg(format!("docker://{dest}"))
            .output()?;
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let roots = TestRoots::new()?;
        let out = berth_ok(&roots, &roots.path().join("docker"), &["pull", &dest])?;
        assert!(
            out.contains(&digest),
            "skopeo kept the manifest, so the digest must match: {out}"
        );
        Ok(())
    }

    #[test]
    fn berth_pushes_skopeo_inspects() -> Result<()> {
        require_cmd("skopeo");
        let _ = bin_path("berth");
        let reg = Registry::start(Auth::None)?;
        let roots = TestRoots::new()?;
        let name = format!("{}/to/skopeo:2", reg.addr());
        let (_, digest) = store_with_busybox(&roots.root(), &name)?;
        berth_ok(&roots, &roots.path().join("docker"), &["push", &name])?;
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{name}"))
            .output()?;
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(v["Digest"], digest);
        assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["Os"], "linux");
        Ok(())
    }

    #[test]
    fn pull_leaves_nothing_behind() -> Result<()> {
        let _ = bin_path("berth");
        let reg = Registry::start(Auth::None)?;
        let roots = TestRoots::new()?;
        let name = format!("{}/leak/check:1", reg.addr());
        store_with_busybox(&roots.path().join("src"), &name)?;
        let src = Store::open(&roots.path().join("src/images"))?;
        rt().block_on(client_for(&reg).push(
            &src,
            &name,
            &ImageRef::parse(&name)?,
            &PushOptions::default(),
            berth_registry::progress::discard(),
        ))?;
        let leaks = integration_tests::LeakCheck::new(&[roots.path().to_string_lossy()]);
        berth_ok(&roots, &roots.path().join("docker"), &["pull", "-q", &name])?;
        leaks.assert_clean();
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // faults, injected by a proxy in front of the registry

    /// Pushes the busybox fixture to `reg` and returns (store dir, name via proxy).
    fn pushed_fixture(
        reg: &Registry,
        proxy: &FaultProxy,
        repo: &str,
    ) -> Result<(tempfile::TempDir, String, String)> {
        let dir = tempfile::tempdir()?;
        let name = format!("{}/{repo}:1", reg.addr());
        let (store, digest) = store_with_busybox(dir.path(), &name)?;
        rt().block_on(client_for(reg).push(
            &store,
            &name,
            &ImageRef::parse(&name)?,
            &PushOptions::default(),
            berth_registry::progress::discard(),
        ))?;
        Ok((dir, format!("{}/{repo}:1", proxy.addr), digest))
    }

    #[test]
    fn wrong_digest_stores_nothing() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let proxy = FaultProxy::start(reg.addr(), Fault::WrongDigest)?;
        let (_src, via_proxy, _) = pushed_fixture(&reg, &proxy, "fault/digest")?;
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        let err = rt()
            .block_on(client_for(&reg).pull(
                &store,
                &ImageRef::parse(&via_proxy)?,
                &PullOptions::default(),
                berth_registry::progress::discard(),
            ))
            .expect_err("a corrupted blob was accepted");
        let msg = err.to_string();
        assert!(
            msg.contains("digest") && msg.contains("nothing stored"),
            "{msg}"
        );
        assert!(store.list()?.is_empty(), "a tag was recorded");
        // no blob became visible (downloads cut short by the failure may leave
        // resumable partial files in ingest/, which are never visible)
        assert!(
            store.list_blobs()?.is_empty(),
            "blobs stored: {:?}",
            store.list_blobs()?
        );
        Ok(())
    }

    #[test]
    fn truncated_body_is_resumed_with_range() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let proxy = FaultProxy::start(reg.addr(), Fault::Truncate(2))?;
        let (_src, via_proxy, digest) = pushed_fixture(&reg, &proxy, "fault/truncate")?;
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        let (sink, seen) = events();
        let pulled = rt().block_on(client_for(&reg).pull(
            &store,
            &ImageRef::parse(&via_proxy)?,
            &PullOptions::default(),
            sink,
        ))?;
        assert_eq!(pulled.manifest.digest().to_string(), digest);
        let reqs = proxy.requests();
        assert!(
            reqs.iter()
                .any(|r| r.contains("/blobs/") && r.ends_with("[range]")),
            "no Range request: {reqs:?}"
        );
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, Event::Retrying { .. }))
        );
        for l in &pulled.layers {
            assert!(store.has_blob(&l.digest.parse()?));
        }
        Ok(())
    }

    #[test]
    fn server_error_bursts_are_retried() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let proxy = FaultProxy::start(reg.addr(), Fault::ServerErrors(3))?;
        let (_src, via_proxy, digest) = pushed_fixture(&reg, &proxy, "fault/5xx")?;
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        let pulled = rt().block_on(client_for(&reg).pull(
            &store,
            &ImageRef::parse(&via_proxy)?,
            &PullOptions::default(),
            berth_registry::progress::discard(),
        ))?;
        assert_eq!(pulled.manifest.digest().to_string(), digest);
        let blob_gets = proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
            .count();
        // config + layer, plus the three refused attempts
        assert_eq!(blob_gets, 2 + 3, "{:?}", proxy.requests());
        Ok(())
    }

    #[test]
    fn endless_server_errors_fail_cleanly() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let proxy = FaultProxy::start(reg.addr(), Fault::ServerErrors(1000))?;
        let (_src, via_proxy, _) = pushed_fixture(&reg, &proxy, "fault/5xx-forever")?;
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        let err = rt()
            .block_on(client_for(&reg).pull(
                &store,
                &ImageRef::parse(&via_proxy)?,
                &PullOptions::default(),
                berth_registry::progress::discard(),
            ))
            .expect_err("pull through a broken registry succeeded");
        assert!(err.to_string().contains("503"), "{err}");
        assert!(store.list()?.is_empty());
        Ok(())
    }

    #[test]
    fn interrupted_pull_resumes_from_partial_file() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let proxy = FaultProxy::start(reg.addr(), Fault::Truncate(100))?;
        let (_src, via_proxy, digest) = pushed_fixture(&reg, &proxy, "fault/resume")?;
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        // no retries: the first pull dies with half the layer on disk
        let no_retry = Client::new(ClientConfig {
            docker_config: Some("".into()),
            retries: 0,
            ..Default::default()
        })?;
        let err = rt()
            .block_on(no_retry.pull(
                &store,
                &ImageRef::parse(&via_proxy)?,
                &PullOptions::default(),
                berth_registry::progress::discard(),
            ))
            .expect_err("a truncated body was accepted");
        assert!(store.list()?.is_empty(), "{err}");
        // the next pull (straight to the registry) continues where the first stopped
        let direct = via_proxy.replace(&proxy.addr, reg.addr());
        let (sink, seen) = events();
        let pulled = rt().block_on(client_for(&reg).pull(
            &store,
            &ImageRef::parse(&direct)?,
            &PullOptions::default(),
            sink,
        ))?;
        assert_eq!(pulled.manifest.digest().to_string(), digest);
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Started { offset, .. } if *offset > 0)),
            "nothing was resumed: {seen:?}"
        );
        Ok(())
    }

    #[test]
    fn large_blobs_go_up_in_patch_chunks() -> Result<()> {
        let reg = Registry::start(Auth::basic("carol", "chunky"))?;
        let dir = tempfile::tempdir()?;
        let name = format!("{}/chunked/img:1", reg.addr());
        let (store, digest) = store_with_busybox(dir.path(), &name)?;
        let mut config = ClientConfig {
            docker_config: Some("".into()),
            chunk_size: 100 << 10,
            ..Default::default()
        };
        config
            .credentials
            .insert(reg.addr().to_owned(), Credentials::new("carol", "chunky"));
        let chunked = Client::new(config)?;
        let (sink, seen) = events();
        let rt = rt();
        let pushed = rt.block_on(chunked.push(
            &store,
            &name,
            &ImageRef::parse(&name)?,
            &PushOptions::default(),
            sink,
        ))?;
        assert_eq!(pushed.digest, digest);
        // the busybox layer is ~1 MiB: several PATCH chunks, each reported
        let progress = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Progress { .. }))
            .count();
        assert!(
            progress >= 5,
            "expected several chunks, saw {progress} progress events"
        );
        let dst = tempfile::tempdir()?;
        let dst_store = Store::open(&dst.path().join("images"))?;
        let pulled = rt.block_on(client_for(&reg).pull(
            &dst_store,
            &ImageRef::parse(&name)?,
            &PullOptions::default(),
            berth_registry::progress::discard(),
        ))?;
        assert_eq!(pulled.manifest.digest().to_string(), digest);
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // unpacking during the pull, and kill -9

    /// Pushes a generated image (`layers` layers, about `mib` MiB compressed) to `reg`;
    /// returns (source dir, name on the registry, manifest digest, layer digests).
    fn pushed_generated(
        reg: &Registry,
        repo: &str,
        layers: usize,
        mib: u64,
    ) -> Result<(tempfile::TempDir, String, String, Vec<String>)> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("images"))?;
        let name = format!("{}/{repo}:1", reg.addr());
        let desc = berth_image::fixtures::generated_image(&store, &name, 7, layers, mib << 20)?;
        let image = store.image(&name, &Default::default())?;
        let layer_digests = image
            .manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect();
        rt().block_on(client_for(reg).push(
            &store,
            &name,
            &ImageRef::parse(&name)?,
            &PushOptions::default(),
            berth_registry::progress::discard(),
        ))?;
        Ok((dir, name, desc.digest().to_string(), layer_digests))
    }

    #[test]
    fn pull_unpacks_each_layer_as_it_arrives() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let (_src, name, digest, layers) = pushed_generated(&reg, "unpack/early", 3, 3)?;
        // the top layer's blob is held back two seconds: the others must be unpacked
        // while it is still on its way
        let last = layers.last().context("no layers")?.clone();
        let proxy = FaultProxy::start(
            reg.addr(),
            Fault::Delay(last.clone(), Duration::from_secs(2)),
        )?;
        let via = name.replace(reg.addr(), &proxy.addr);
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        let (sink, seen) = events();
        let opts = PullOptions {
            unpack: true,
            ..Default::default()
        };
        let pulled =
            rt().block_on(client_for(&reg).pull(&store, &ImageRef::parse(&via)?, &opts, sink))?;
        assert_eq!(pulled.manifest.digest().to_string(), digest);
        let seen = seen.lock().unwrap();
        let unpacked_at = |d: &str| {
            seen.iter()
                .position(|e| matches!(e, Event::Unpacked { digest } if digest == d))
        };
        let last_done = seen
            .iter()
            .position(|e| matches!(e, Event::Done { digest, .. } if *digest == last))
            .context("no Done event for the top layer")?;
        for l in &layers[..layers.len() - 1] {
            let at = unpacked_at(l).with_context(|| format!("layer {l} never unpacked"))?;
            assert!(
                at < last_done,
                "layer {l} was unpacked only after the last download ended: {seen:?}"
            );
        }
        assert!(unpacked_at(&last).is_some(), "top layer not unpacked");
        let image = store.image(&pulled.name, &Default::default())?;
        for c in image.chain_ids()? {
            assert!(store.has_snapshot(&c), "snapshot {c} missing");
        }
        let check = berth_image::gc::check(&store, false)?;
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        Ok(())
    }

    #[test]
    fn kill_9_mid_pull_leaves_a_clean_store_and_the_next_pull_resumes() -> Result<()> {
        let _ = bin_path("berth");
        let reg = Registry::start(Auth::None)?;
        let (_src, name, digest, layers) = pushed_generated(&reg, "kill/nine", 4, 24)?;
        // 4 MiB/s per connection: each ~6 MiB layer takes about 1.5 s, so the kills
        // land in downloads, in unpacks, or between them
        let proxy = FaultProxy::start(reg.addr(), Fault::Throttle(4 << 20))?;
        let via = name.replace(reg.addr(), &proxy.addr);
        let roots = TestRoots::new()?;
        let docker = roots.path().join("docker");
        let seed: u64 = std::env::var("BERTH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_0004);
        eprintln!("kill -9 points from seed {seed} (BERTH_TEST_SEED={seed} replays them)");
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let blobs_dir = roots.root().join("images/blobs/sha256");
        let mut logs = String::new();
        for round in 0..5 {
            let wait = Duration::from_millis(150 + next() % 1000);
            let log = roots.path().join(format!("pull-{round}.log"));
            let mut child = roots
                .berth()
                .env("DOCKER_CONFIG", &docker)
                .args(["pull", &via])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?;
            std::thread::sleep(wait);
            let finished = child.try_wait()?.is_some();
            child.kill()?; // SIGKILL
            child.wait()?;
            let text = std::fs::read_to_string(&log)?;
            eprintln!("round {round}: killed after {wait:?} (finished: {finished})\n{text}");
            logs.push_str(&text);
            // whatever the moment, the store is consistent: every visible blob has the
            // content its name says, tags point at complete images, snapshots are whole
            let (ok, out, err) = berth(&roots, &docker, &["system", "check"])?;
            assert!(
                ok && out.contains(": 0 problem(s)"),
                "round {round}, killed after {wait:?}:\n{out}\n{err}"
            );
            if blobs_dir.exists() {
                for e in std::fs::read_dir(&blobs_dir)? {
                    let n = e?.file_name().to_string_lossy().into_owned();
                    assert!(
                        n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()),
                        "a non-blob file is visible in blobs/: {n}"
                    );
                }
            }
            if finished {
                break;
            }
        }
        let (ok, out, err) = berth(&roots, &docker, &["pull", &via])?;
        assert!(ok, "pull after the kills failed:\n{out}\n{err}");
        assert!(out.contains(&digest), "{out}");
        logs.push_str(&err);
        assert!(
            logs.contains("resuming at"),
            "no pull resumed a partial download:\n{logs}"
        );
        let out = berth_ok(&roots, &docker, &["system", "check", "--repair"])?;
        assert!(out.contains(": 0 problem(s)"), "{out}");
        let out = berth_ok(&roots, &docker, &["system", "check"])?;
        assert!(
            out.contains(": 0 problem(s)") && !out.contains("leftover"),
            "{out}"
        );
        let store = Store::open(&roots.root().join("images"))?;
        let image = store.image(&via, &Default::default())?;
        assert_eq!(image.manifest.layers().len(), layers.len());
        for c in image.chain_ids()? {
            assert!(store.has_snapshot(&c), "snapshot {c} missing");
        }
        Ok(())
    }

    #[test]
    fn a_silent_server_times_out_and_the_blob_is_resumed() -> Result<()> {
        let reg = Registry::start(Auth::None)?;
        let proxy = FaultProxy::start(reg.addr(), Fault::Stall(1))?;
        let (_src, via_proxy, digest) = pushed_fixture(&reg, &proxy, "fault/stall")?;
        let dst = tempfile::tempdir()?;
        let store = Store::open(&dst.path().join("images"))?;
        let client = Client::new(ClientConfig {
            docker_config: Some("".into()),
            backoff: Duration::from_millis(20),
            idle_timeout: Duration::from_secs(1),
            ..Default::default()
        })?;
        let (sink, seen) = events();
        let started = std::time::Instant::now();
        let pulled = rt().block_on(client.pull(
            &store,
            &ImageRef::parse(&via_proxy)?,
            &PullOptions::default(),
            sink,
        ))?;
        assert_eq!(pulled.manifest.digest().to_string(), digest);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stall was not cut short: {:?}",
            started.elapsed()
        );
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().any(|e| matches!(e, Event::Retrying { reason, .. }
                if reason.contains("no progress") || reason.contains("timed out") || reason.contains("error decoding"))),
            "no retry after the stall: {seen:?}"
        );
        assert!(
            proxy
                .requests()
                .iter()
                .any(|r| r.contains("/blobs/") && r.ends_with("[range]")),
            "the retry did not resume with Range: {:?}",
            proxy.requests()
        );
        Ok(())
    }

    #[test]
    fn push_skips_blobs_the_registry_has() -> Result<()> {
        let _ = bin_path("berth");
        let reg = Registry::start(Auth::None)?;
        let roots = TestRoots::new()?;
        let docker = roots.path().join("docker");
        let name = format!("{}/skip/img:1", reg.addr());
        let (_, digest) = store_with_busybox(&roots.root(), &name)?;
        let (ok, out, first) = berth(&roots, &docker, &["push", &name])?;
        assert!(ok, "{out}\n{first}");
        assert!(!first.contains("already exists"), "{first}");
        // the same image under another tag: nothing to upload but the manifest
        let again = format!("{}/skip/img:2", reg.addr());
        berth_ok(&roots, &docker, &["tag", &name, &again])?;
        let (ok, out, err) = berth(&roots, &docker, &["push", &again])?;
        assert!(ok, "{out}\n{err}");
        assert!(
            out.contains(&digest) && out.contains("0 B uploaded"),
            "{out}"
        );
        assert_eq!(err.matches("already exists").count(), 2, "{err}");
        Ok(())
    }

    #[test]
    fn concurrent_cli_pulls_of_one_image_into_one_store() -> Result<()> {
        let _ = bin_path("berth");
        let reg = Registry::start(Auth::None)?;
        let (_src, name, digest, _) = pushed_generated(&reg, "concurrent/pull", 3, 12)?;
        // slow enough that the two pulls overlap on every blob
        let proxy = FaultProxy::start(reg.addr(), Fault::Throttle(8 << 20))?;
        let via = name.replace(reg.addr(), &proxy.addr);
        let roots = TestRoots::new()?;
        let docker = roots.path().join("docker");
        let spawn = || {
            roots
                .berth()
                .env("DOCKER_CONFIG", &docker)
                .args(["pull", "-q", &via])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        };
        let (a, b) = (spawn()?, spawn()?);
        for child in [a, b] {
            let out = child.wait_with_output()?;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = berth_ok(&roots, &docker, &["system", "check"])?;
        assert!(
            out.contains(": 0 problem(s)") && !out.contains("leftover"),
            "{out}"
        );
        let store = Store::open(&roots.root().join("images"))?;
        assert_eq!(store.resolve(&via)?.digest().to_string(), digest);
        let image = store.image(&via, &Default::default())?;
        for c in image.chain_ids()? {
            assert!(store.has_snapshot(&c));
        }
        Ok(())
    }
}
