//! Platform selection from real multi-platform images: an OCI index and a Docker
//! schema 2 manifest list, both pushed by skopeo (`copy --all`) to docker-registry on
//! loopback, pulled with `berth pull [--platform]`.

use anyhow::{Context, Result};
use berth_image::oci_spec::image::MediaType;
use berth_image::{Platform, Store, fixtures};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{TestRoots, bin_path, require_cmd, run_ok};
use serde_json::{Value, json};

/// An OCI layout at `dir` whose tag `multi` is an index of two images: the busybox
/// fixture as linux/amd64 and the same layer with an arm64/v8 config. Returns the two
/// manifest digests (amd64, arm64).
fn multi_platform_layout(dir: &std::path::Path) -> Result<(String, String)> {
    let store = Store::open(dir)?;
    let amd = fixtures::busybox_image(&store, "amd64-only")?;
    let image = store.image("amd64-only", &Platform::default())?;
    let mut config: Value = serde_json::from_slice(&store.read_blob(&image.config_digest)?)?;
    config["architecture"] = json!("arm64");
    config["variant"] = json!("v8");
    let config_desc = store.put_json(MediaType::ImageConfig, &config)?;
    let mut manifest: Value =
        serde_json::from_slice(&store.read_blob(&image.digest())?).context("manifest")?;
    manifest["config"] = serde_json::to_value(&config_desc)?;
    let arm = store.put_json(MediaType::ImageManifest, &manifest)?;
    let entry = |d: &berth_image::oci_spec::image::Descriptor, platform: Value| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.digest().to_string(),
            "size": d.size(),
            "platform": platform,
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(&amd, json!({"architecture": "amd64", "os": "linux"})),
            entry(&arm, json!({"architecture": "arm64", "os": "linux", "variant": "v8"})),
        ],
    });
    let index_desc = store.put_json(MediaType::ImageIndex, &index)?;
    store.tag("multi", index_desc)?;
    Ok((amd.digest().to_string(), arm.digest().to_string()))
}

fn pull(roots: &TestRoots, args: &[&str]) -> (bool, String, String) {
    let out = roots.berth().arg("pull").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Architecture and variant of the image `name` in the store under `roots`.
fn pulled_platform(roots: &TestRoots, name: &str) -> Result<String> {
    let store = Store::open(&roots.root().join("images"))?;
    let img = store.image(name, &Platform::default())?;
    let cfg: Value = serde_json::from_slice(&store.read_blob(&img.config_digest)?)?;
    // unpacked too: the snapshot of its one layer holds busybox
    let chain = img.chain_ids()?;
    assert!(store.snapshot_path(&chain[0]).join("bin/busybox").is_file());
    Ok(format!(
        "{}/{}{}",
        cfg["os"].as_str().unwrap_or(""),
        cfg["architecture"].as_str().unwrap_or(""),
        cfg["variant"]
            .as_str()
            .map(|v| format!("/{v}"))
            .unwrap_or_default()
    ))
}

fn platform_selection(format: Option<&str>, list_type: &str) -> Result<()> {
    let skopeo = require_cmd("skopeo");
    let _ = bin_path("berth");
    let reg = Registry::start(Auth::None)?;
    let dir = tempfile::tempdir()?;
    let (amd_oci, arm_oci) = multi_platform_layout(dir.path())?;
    let name = format!("{}/multi/img:1", reg.addr());
    let mut args = vec!["copy", "--all", "--dest-tls-verify=false"];
    if let Some(f) = format {
        args.extend(["--format", f]);
    }
    let src = format!("oci:{}:multi", dir.path().display());
    let dst = format!("docker://{name}");
    args.extend([src.as_str(), dst.as_str()]);
    run_ok(&skopeo, &args)?;
    let raw: Value = serde_json::from_str(&run_ok(
        &skopeo,
        ["inspect", "--raw", "--tls-verify=false", &dst],
    )?)?;
    assert_eq!(raw["mediaType"], list_type, "{raw}");
    // what the registry lists per platform (skopeo may have rewritten the manifests)
    let listed = |arch: &str| -> String {
        raw["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (amd, arm) = (listed("amd64"), listed("arm64"));
    if format.is_none() {
        assert_eq!(
            (amd.as_str(), arm.as_str()),
            (amd_oci.as_str(), arm_oci.as_str())
        );
    }

    // default: linux/amd64
    let roots = TestRoots::new()?;
    let (ok, out, err) = pull(&roots, &[&name]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&amd),
        "default pull took another manifest:\n{out}"
    );
    assert_eq!(pulled_platform(&roots, &name)?, "linux/amd64");

    // --platform, with and without the variant
    for p in ["linux/arm64", "linux/arm64/v8"] {
        let roots = TestRoots::new()?;
        let (ok, out, err) = pull(&roots, &["--platform", p, &name]);
        assert!(ok, "{p}: {err}");
        assert!(out.contains(&arm), "{p}: {out}");
        assert_eq!(pulled_platform(&roots, &name)?, "linux/arm64/v8");
    }

    // a platform the image lacks: a clear error naming what there is, nothing stored
    let roots = TestRoots::new()?;
    let (ok, _, err) = pull(&roots, &["--platform", "linux/s390x", &name]);
    assert!(!ok);
    assert!(
        err.contains("no manifest for platform linux/s390x")
            && err.contains("linux/amd64")
            && err.contains("linux/arm64/v8"),
        "{err}"
    );
    let store = Store::open(&roots.root().join("images"))?;
    assert!(store.list()?.is_empty());
    Ok(())
}

#[test]
fn platform_from_an_oci_index_pushed_by_skopeo() -> Result<()> {
    platform_selection(None, "application/vnd.oci.image.index.v1+json")
}

#[test]
fn platform_from_a_docker_manifest_list_pushed_by_skopeo() -> Result<()> {
    platform_selection(
        Some("v2s2"),
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
}
