//! `berth save` / `berth load` against podman: podman loads what berth saves (two
//! images in one archive), and berth loads the docker-archive and oci-archive that
//! `podman save` writes.

use std::path::Path;

use berth_image::{Platform, Store, fixtures};
use integration_tests::{TestRoots, bin_path, require_cmd, run_ok};

fn berth_ok(roots: &TestRoots, args: &[&str]) -> String {
    let out = roots.berth().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with private storage under `dir`.
fn podman(dir: &Path, args: &[&str]) -> String {
    let podman = require_cmd("podman");
    let root = dir.join("podman-root");
    let run = dir.join("podman-run");
    let mut all = vec![
        "--root",
        root.to_str().unwrap(),
        "--runroot",
        run.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    all.extend_from_slice(args);
    run_ok(&podman, &all).unwrap()
}

#[test]
fn podman_loads_berth_save_and_berth_loads_podman_save_in_both_formats() {
    let _ = bin_path("berth");
    let a = TestRoots::new().unwrap();
    let store = Store::open(&a.root().join("images")).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let tar = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let mut extra = tar::Builder::new(Vec::new());
    tar(&mut extra, "hello.txt", b"hello from a second image\n");
    let base = store.image("busybox:latest", &Platform::default()).unwrap();
    fixtures::image_from_layers(
        &store,
        "two/layers:v1",
        &[extra.into_inner().unwrap()],
        &["sh"],
    )
    .unwrap();
    let two = store.image("two/layers:v1", &Platform::default()).unwrap();

    // one archive, two images: podman loads both
    let archive = a.path().join("both.tar");
    berth_ok(
        &a,
        &[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "busybox:latest",
            "two/layers:v1",
        ],
    );
    let loaded = podman(a.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert!(
        loaded.contains("busybox:latest") && loaded.contains("two/layers:v1"),
        "{loaded}"
    );
    let listed = podman(
        a.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert!(
        listed.contains("busybox:latest") && listed.contains("two/layers:v1"),
        "{listed}"
    );

    // podman writes both archive formats; berth loads each
    for (format, file) in [
        ("docker-archive", "podman-docker.tar"),
        ("oci-archive", "podman-oci.tar"),
    ] {
        let out = a.path().join(file);
        podman(
            a.path(),
            &[
                "save",
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
                "localhost/busybox:latest",
            ],
        );
        let b = TestRoots::new().unwrap();
        let said = berth_ok(&b, &["load", "-i", out.to_str().unwrap()]);
        assert!(said.contains("Loaded image"), "{format}: {said}");
        let bs = Store::open(&b.root().join("images")).unwrap();
        let names = bs.list().unwrap();
        assert_eq!(names.len(), 1, "{format}: {names:?}");
        let img = bs.image(&names[0].0, &Platform::default()).unwrap();
        assert_eq!(
            img.diff_ids().unwrap(),
            base.diff_ids().unwrap(),
            "{format}: layer content changed"
        );
        let snap = bs.unpack_image(&img).unwrap().remove(0);
        assert!(snap.join("bin/busybox").is_file(), "{format}");
        let check = berth_ok(&b, &["system", "check"]);
        assert!(check.contains(": 0 problem(s)"), "{format}: {check}");
    }
    assert_eq!(two.manifest.layers().len(), 1);
}
