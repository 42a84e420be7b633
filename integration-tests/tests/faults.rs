//! Faults a user meets, through the `berth` CLI: a registry that is slow, answers 5xx,
//! resets connections mid-blob or serves bytes that do not match their digest (through
//! a fault-injecting loopback proxy in front of the real docker-registry), and a berth
//! root that runs out of space during a pull or a build (a small tmpfs). Each ends in a
//! retry that succeeds or in a clear error naming what failed, never in a corrupt
//! store, and the same command succeeds once the fault is gone.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use anyhow::{Context, Result};
use berth_image::{Store, fixtures};
use integration_tests::fault_proxy::{Fault, FaultProxy};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{LeakCheck, TestRoots, bin_path, figure, require_root, text};

/// `system check` passes, and every file visible in blobs/ is named like a blob (and
/// the check verified each one's content against its name).
fn assert_store_clean(roots: &TestRoots) {
    let o = roots.output(&["system", "check"]);
    let t = text(&o);
    assert!(
        o.status.success() && !t.contains("problem:"),
        "system check:\n{t}"
    );
    let blobs = roots.root().join("images/blobs/sha256");
    if let Ok(rd) = std::fs::read_dir(&blobs) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()),
                "a half-written file is visible in blobs/: {n}"
            );
        }
    }
}

/// A registry holding busybox under `repo`; returns (registry, name, manifest digest,
/// layer digest).
fn registry_with_busybox(repo: &str) -> Result<(Registry, String, String, String)> {
    let reg = Registry::start(Auth::None)?;
    let src = TestRoots::new()?.with_own_config();
    let store = Store::open(&src.root().join("images"))?;
    let name = format!("{}/{repo}:1", reg.addr());
    let digest = fixtures::busybox_image(&store, &name)?.digest().to_string();
    let layer = store.image(&name, &Default::default())?.manifest.layers()[0]
        .digest()
        .to_string();
    src.ok(&["push", &name]);
    Ok((reg, name, digest, layer))
}

/// Pulls `name` through a proxy injecting `fault`; returns the pull's output, the
/// proxy's request log and the roots.
fn pull_through(fault: Fault, repo: &str) -> Result<(Output, Vec<String>, TestRoots, Ctx)> {
    let _ = bin_path("berth");
    let (reg, name, digest, layer) = registry_with_busybox(repo)?;
    let proxy = FaultProxy::start(reg.addr(), fault)?;
    let via = name.replace(reg.addr(), &proxy.addr);
    let roots = TestRoots::new()?.with_own_config();
    let t = Instant::now();
    let out = roots.output(&["pull", &via]);
    figure(
        &format!("faults.pull.{repo}.seconds"),
        t.elapsed().as_secs_f64(),
        "s",
    );
    let requests = proxy.requests();
    Ok((
        out,
        requests,
        roots,
        Ctx {
            reg,
            name,
            digest,
            layer,
            _proxy: proxy,
        },
    ))
}

struct Ctx {
    reg: Registry,
    name: String,
    digest: String,
    layer: String,
    _proxy: FaultProxy,
}

/// The pull succeeded with the right image, and the store is clean.
fn assert_pulled(out: &Output, roots: &TestRoots, ctx: &Ctx) {
    assert!(out.status.success(), "pull failed:\n{}", text(out));
    assert!(text(out).contains(&ctx.digest), "{}", text(out));
    assert_store_clean(roots);
}

#[test]
fn slow_registry_is_waited_for() -> Result<()> {
    // 1 MiB/s: the ~1 MiB layer takes about a second
    let (out, _, roots, ctx) = pull_through(Fault::Throttle(1 << 20), "slow")?;
    assert_pulled(&out, &roots, &ctx);
    Ok(())
}

#[test]
fn server_errors_are_retried() -> Result<()> {
    let (out, reqs, roots, ctx) = pull_through(Fault::ServerErrors(3), "errors")?;
    assert_pulled(&out, &roots, &ctx);
    let blob_gets = reqs.iter().filter(|r| r.contains("/blobs/")).count();
    assert!(blob_gets >= 5, "the 503s were not retried: {reqs:?}");
    Ok(())
}

#[test]
fn endless_server_errors_name_the_blob() -> Result<()> {
    let (out, _, roots, ctx) = pull_through(Fault::ServerErrors(10_000), "errors-forever")?;
    assert!(!out.status.success(), "pull succeeded:\n{}", text(&out));
    let t = text(&out);
    assert!(t.contains("503"), "error does not name the status:\n{t}");
    assert!(
        t.contains("sha256:"),
        "error does not name the blob that failed:\n{t}"
    );
    assert_store_clean(&roots);
    // with the fault gone, the same pull succeeds
    let out = roots.output(&["pull", &ctx.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert_store_clean(&roots);
    let _ = &ctx.reg;
    Ok(())
}

#[test]
fn truncated_blobs_are_resumed() -> Result<()> {
    let (out, reqs, roots, ctx) = pull_through(Fault::Truncate(2), "truncated")?;
    assert_pulled(&out, &roots, &ctx);
    assert!(
        reqs.iter().any(|r| r.ends_with("[range]")),
        "no Range request after a cut body: {reqs:?}"
    );
    Ok(())
}

#[test]
fn connection_resets_mid_blob_are_retried() -> Result<()> {
    let (out, reqs, roots, ctx) = pull_through(Fault::Reset(2), "reset")?;
    assert_pulled(&out, &roots, &ctx);
    let layer_gets = reqs.iter().filter(|r| r.contains(&ctx.layer)).count();
    assert!(
        layer_gets >= 2,
        "the reset layer was not fetched again: {reqs:?}"
    );
    Ok(())
}

#[test]
fn wrong_digest_is_refused_and_names_the_blob() -> Result<()> {
    let (out, _, roots, ctx) = pull_through(Fault::WrongDigest, "digest")?;
    assert!(
        !out.status.success(),
        "corrupt content was accepted:\n{}",
        text(&out)
    );
    let t = text(&out);
    assert!(
        t.contains("digest") && (t.contains(&ctx.layer) || t.contains("sha256:")),
        "error does not name the digest:\n{t}"
    );
    assert_store_clean(&roots);
    let store = Store::open(&roots.root().join("images"))?;
    assert!(store.list()?.is_empty(), "a tag was recorded");
    assert!(
        !store.has_blob(&ctx.layer.parse()?),
        "the corrupt layer became visible"
    );
    let out = roots.output(&["pull", &ctx.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert_store_clean(&roots);
    Ok(())
}

// ---------------------------------------------------------------------------------
// disk full

/// A tmpfs of `mib` MiB mounted at `dir` for the test's life.
struct SmallFs {
    dir: std::path::PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, mib: u64) -> Result<SmallFs> {
        std::fs::create_dir_all(dir)?;
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m,mode=0755").as_str()),
        )
        .with_context(|| format!("mount tmpfs at {}", dir.display()))?;
        Ok(SmallFs {
            dir: dir.to_path_buf(),
        })
    }

    /// Frees space the way a user would: more room on the same filesystem.
    fn grow(&self, mib: u64) -> Result<()> {
        nix::mount::mount(
            None::<&str>,
            &self.dir,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT,
            Some(format!("size={mib}m").as_str()),
        )
        .context("remount tmpfs bigger")?;
        Ok(())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The error a user sees when the root fills up: names the cause and where.
fn assert_names_enospc(t: &str, root: &Path) {
    assert!(
        t.contains("No space left on device") || t.contains("ENOSPC"),
        "the error does not say the disk is full:\n{t}"
    );
    assert!(
        t.contains(&root.display().to_string()),
        "the error does not name the root {}:\n{t}",
        root.display()
    );
}

#[test]
fn pull_into_a_full_root_fails_clearly_and_succeeds_after_space_is_freed() -> Result<()> {
    require_root();
    let _ = bin_path("berth");
    let reg = Registry::start(Auth::None)?;
    let src = TestRoots::new()?.with_own_config();
    let store = Store::open(&src.root().join("images"))?;
    let name = format!("{}/full/pull:1", reg.addr());
    // ~12 MiB of mostly random layers into an 8 MiB root
    let digest = fixtures::generated_image(&store, &name, 21, 4, 12 << 20)?
        .digest()
        .to_string();
    src.ok(&["push", &name]);
    let roots = TestRoots::new()?.with_own_config();
    let leaks = LeakCheck::new(&[roots.path().display().to_string()]);
    let fs = SmallFs::mount(&roots.root(), 8)?;
    let out = roots.output(&["pull", &name]);
    assert!(
        !out.status.success(),
        "pull into 8 MiB succeeded:\n{}",
        text(&out)
    );
    assert_names_enospc(&text(&out), &roots.root());
    assert_store_clean(&roots);
    fs.grow(64)?;
    let out = roots.ok(&["pull", &name]);
    assert!(out.contains(&digest), "{out}");
    assert_store_clean(&roots);
    let o = roots.ok(&["system", "check", "--repair"]);
    assert!(!o.contains("problem:"), "{o}");
    drop(fs);
    leaks.assert_clean();
    Ok(())
}

#[test]
fn build_into_a_full_root_fails_clearly_and_succeeds_after_space_is_freed() -> Result<()> {
    require_root();
    let _ = bin_path("berth");
    let roots = TestRoots::new()?.with_own_config();
    let leaks = LeakCheck::new(&[roots.path().display().to_string()]);
    let fs = SmallFs::mount(&roots.root(), 8)?;
    let store = Store::open(&roots.root().join("images"))?;
    fixtures::busybox_image(&store, "busybox:latest")?;
    let ctx = roots.path().join("ctx");
    std::fs::create_dir_all(&ctx)?;
    // 12 MiB that does not compress
    let mut data = vec![0u8; 12 << 20];
    let mut rng = integration_tests::SeededRng::new(7);
    for chunk in data.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(ctx.join("big"), &data)?;
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nCOPY big /big\nRUN wc -c /big > /size\n",
    )?;
    let ctx = ctx.to_str().expect("utf-8 temp path");
    let build = |roots: &TestRoots| roots.output(&["build", "-t", "big:1", ctx]);
    let out = build(&roots);
    assert!(
        !out.status.success(),
        "build into 8 MiB succeeded:\n{}",
        text(&out)
    );
    assert_names_enospc(&text(&out), &roots.root());
    assert_store_clean(&roots);
    fs.grow(96)?;
    let out = build(&roots);
    assert!(out.status.success(), "{}", text(&out));
    let size = roots.ok(&["run", "--rm", "--network", "none", "big:1", "cat", "/size"]);
    assert!(size.starts_with("12582912 "), "{size}");
    assert_store_clean(&roots);
    drop(fs);
    leaks.assert_clean();
    Ok(())
}
