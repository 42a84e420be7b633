//! berth-image end to end: hostile layers, whiteouts through overlayfs, interop with
//! skopeo and umoci, the CLI (images, tag, rmi, save, load, system check).

use std::fs;
use std::path::Path;
use std::process::Command;

use berth_image::{Platform, Store, fixtures, mount_overlay, unmount_overlay};
use integration_tests::{LeakCheck, TestRoots, require_cmd, require_root, run_ok};

fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

/// A raw header so hostile names are written as given (the tar crate's path setters
/// refuse `..` and absolute paths).
fn raw(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_000_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    raw(b, tar::EntryType::Regular, path, "", data);
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn hostile_layers_are_refused_and_nothing_is_written_outside() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("../x", tar_of(|b| file(b, "../x", b"evil"))),
        ("/etc/x", tar_of(|b| file(b, "/etc/x", b"evil"))),
        (
            "a/etc/passwd",
            tar_of(|b| {
                raw(b, tar::EntryType::Symlink, "a", "/", b"");
                file(b, "a/etc/passwd", b"evil");
            }),
        ),
        (
            "up/sentinel/x",
            tar_of(|b| {
                raw(b, tar::EntryType::Symlink, "up", "../../../..", b"");
                file(b, "up/sentinel/x", b"evil");
            }),
        ),
        (
            "h",
            tar_of(|b| raw(b, tar::EntryType::Link, "h", "../../outside", b"")),
        ),
    ];
    for (entry, layer) in cases {
        let dir = tempfile::tempdir().unwrap();
        let sentinel = dir.path().join("sentinel");
        fs::create_dir(&sentinel).unwrap();
        fs::write(dir.path().join("outside"), b"keep").unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        fixtures::image_from_layers(&store, "evil", &[layer], &["sh"]).unwrap();
        let img = store.image("evil", &Platform::default()).unwrap();
        let err = store.unpack_image(&img).expect_err(entry);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{entry:?}")),
            "error {msg:?} should name {entry:?}"
        );
        assert!(
            listing(&sentinel).is_empty(),
            "{entry}: wrote into the sentinel dir"
        );
        assert_eq!(fs::read(dir.path().join("outside")).unwrap(), b"keep");
        assert!(!Path::new("/etc/x").exists() || entry != "/etc/x");
        // no snapshot became visible
        assert!(
            store.list_snapshots().unwrap().is_empty(),
            "{entry}: snapshot published"
        );
        let top: Vec<String> = listing(dir.path())
            .into_iter()
            .filter(|p| !p.starts_with("store"))
            .collect();
        assert_eq!(
            top,
            vec!["outside", "sentinel"],
            "{entry}: something appeared beside the store"
        );
    }
}

fn two_layer_image(store: &Store, tag: &str) {
    let lower = tar_of(|b| {
        raw(b, tar::EntryType::Directory, "d/", "", b"");
        file(b, "d/old", b"old");
        file(b, "keep", b"keep");
        file(b, "gone", b"gone");
        raw(b, tar::EntryType::Directory, "e/", "", b"");
        file(b, "e/stay", b"stay");
    });
    let upper = tar_of(|b| {
        file(b, ".wh.gone", b"");
        raw(b, tar::EntryType::Directory, "d/", "", b"");
        file(b, "d/.wh..wh..opq", b"");
        file(b, "d/new", b"new");
        file(b, "e/added", b"added");
        raw(b, tar::EntryType::Link, "e/added2", "e/added", b"");
        raw(b, tar::EntryType::Symlink, "sl", "keep", b"");
    });
    fixtures::image_from_layers(store, tag, &[lower, upper], &["sh"]).unwrap();
}

#[test]
fn whiteouts_and_opaque_dirs_through_overlay() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let leaks = LeakCheck::new(&[dir.path().display().to_string()]);
    let store = Store::open(&dir.path().join("store")).unwrap();
    two_layer_image(&store, "wh");
    let img = store.image("wh", &Platform::default()).unwrap();
    let cdir = dir.path().join("c1");
    let lowers = store.prepare_rootfs(&img, &cdir).unwrap();
    assert_eq!(lowers.len(), 2);
    let rootfs = mount_overlay(&lowers, &cdir).unwrap();
    let seen = listing(&rootfs);
    unmount_overlay(&cdir).unwrap();
    assert_eq!(
        seen,
        vec![
            "d", "d/new", "e", "e/added", "e/added2", "e/stay", "keep", "sl"
        ]
    );
    // snapshots are reused, not unpacked again
    let before = store.list_snapshots().unwrap();
    store.unpack_image(&img).unwrap();
    assert_eq!(store.list_snapshots().unwrap(), before);
    leaks.assert_clean();
}

#[test]
fn overlay_of_busybox_runs_busybox_true() {
    require_root();
    let chroot = require_cmd("chroot");
    let dir = tempfile::tempdir().unwrap();
    let leaks = LeakCheck::new(&[dir.path().display().to_string()]);
    let store = Store::open(&dir.path().join("store")).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let img = store.image("busybox:latest", &Platform::default()).unwrap();
    let cdir = dir.path().join("c");
    let lowers = store.prepare_rootfs(&img, &cdir).unwrap();
    let rootfs = mount_overlay(&lowers, &cdir).unwrap();
    // prune and rmi rely on mountinfo naming the snapshots in use
    let chain = img.chain_ids().unwrap();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let in_use = mountinfo.contains(chain[0].hex());
    // an image removed while a container uses it keeps its snapshot until unmounted
    let spec = berth_image::to_runtime_spec(&img.config, &lowers[0]).unwrap();
    store.untag("busybox:latest").unwrap();
    let pruned = berth_image::gc::prune(&store).unwrap();
    let kept = store.has_snapshot(&chain[0]);
    let status = Command::new(&chroot)
        .arg(&rootfs)
        .args(["/bin/busybox", "true"])
        .status();
    let sh = Command::new(&chroot)
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo hi > /tmp/f && cat /tmp/f"])
        .output();
    unmount_overlay(&cdir).unwrap();
    assert!(
        in_use,
        "mountinfo does not show the snapshot of a mounted rootfs"
    );
    assert!(status.unwrap().success());
    assert_eq!(String::from_utf8_lossy(&sh.unwrap().stdout), "hi\n");
    // the write went to the container's upper dir, not to the shared snapshot
    assert!(cdir.join("upper/tmp/f").is_file());
    assert!(!lowers[0].join("tmp/f").exists());
    assert!(kept, "prune removed a mounted snapshot");
    assert_eq!(pruned.blobs.len(), 3);
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &vec!["sh".to_string()]
    );
    leaks.assert_clean();
}

#[test]
fn deep_image_mounts_past_the_option_length_limit() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let leaks = LeakCheck::new(&[dir.path().display().to_string()]);
    let store = Store::open(&dir.path().join("store")).unwrap();
    // 60 layers: about 6 KiB of lowerdir paths, more than one page
    let layers: Vec<Vec<u8>> = (0..60)
        .map(|i| tar_of(|b| file(b, &format!("f{i:02}"), b"x")))
        .collect();
    fixtures::image_from_layers(&store, "deep", &layers, &["sh"]).unwrap();
    let img = store.image("deep", &Platform::default()).unwrap();
    let cdir = dir.path().join("c");
    let lowers = store.prepare_rootfs(&img, &cdir).unwrap();
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        total > 4096,
        "test image is not deep enough ({total} bytes)"
    );
    let rootfs = mount_overlay(&lowers, &cdir).unwrap();
    let n = fs::read_dir(&rootfs).unwrap().count();
    unmount_overlay(&cdir).unwrap();
    assert_eq!(n, 60);
    // the mount(2) fallback for kernels without lowerdir+: short relative names
    let rootfs = berth_image::mount_overlay_legacy(&lowers, &cdir).unwrap();
    let n = fs::read_dir(&rootfs).unwrap().count();
    let top = fs::read(rootfs.join("f59"));
    unmount_overlay(&cdir).unwrap();
    assert_eq!(n, 60);
    assert_eq!(top.unwrap(), b"x");
    leaks.assert_clean();
}

#[test]
fn skopeo_reads_our_layout_and_we_read_its_copy() {
    let skopeo = require_cmd("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let store = Store::open(&ours).unwrap();
    let desc = fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let inspect = run_ok(
        &skopeo,
        ["inspect", &format!("oci:{}:busybox:latest", ours.display())],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["Digest"].as_str().unwrap(), desc.digest().to_string());
    let other = dir.path().join("other");
    run_ok(
        &skopeo,
        [
            "copy",
            &format!("oci:{}:busybox:latest", ours.display()),
            &format!("oci:{}:copy", other.display()),
        ],
    )
    .unwrap();
    let theirs = Store::open(&other).unwrap();
    let a = store.image("busybox:latest", &Platform::default()).unwrap();
    let b = theirs.image("copy", &Platform::default()).unwrap();
    assert_eq!(a.config_digest, b.config_digest);
    assert_eq!(a.diff_ids().unwrap(), b.diff_ids().unwrap());
    theirs.unpack_image(&b).unwrap();
}

#[test]
fn umoci_unpacks_ours_and_we_read_what_umoci_repacked() {
    require_root();
    let umoci = require_cmd("umoci");
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let store = Store::open(&ours).unwrap();
    fixtures::busybox_image(&store, "base").unwrap();
    let bundle = dir.path().join("bundle");
    run_ok(
        &umoci,
        [
            "unpack",
            "--image",
            &format!("{}:base", ours.display()),
            bundle.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
        Path::new("busybox"),
        "applet symlinks survive"
    );
    // umoci writes a new layer and tag into our layout
    fs::write(bundle.join("rootfs/hello"), b"from umoci").unwrap();
    fs::remove_file(bundle.join("rootfs/etc/group")).unwrap();
    run_ok(
        &umoci,
        [
            "repack",
            "--image",
            &format!("{}:v2", ours.display()),
            bundle.to_str().unwrap(),
        ],
    )
    .unwrap();
    let store = Store::open(&ours).unwrap();
    let img = store.image("v2", &Platform::default()).unwrap();
    assert_eq!(img.manifest.layers().len(), 2);
    assert!(
        store.resolve("base").is_ok(),
        "our tag survives umoci's index rewrite"
    );
    let cdir = dir.path().join("c");
    let lowers = store.prepare_rootfs(&img, &cdir).unwrap();
    let rootfs = mount_overlay(&lowers, &cdir).unwrap();
    let hello = fs::read(rootfs.join("hello"));
    let group_gone = !rootfs.join("etc/group").exists();
    let passwd = rootfs.join("etc/passwd").is_file();
    unmount_overlay(&cdir).unwrap();
    assert_eq!(hello.unwrap(), b"from umoci");
    assert!(group_gone, "umoci's whiteout hides /etc/group");
    assert!(passwd);
}

fn berth(roots: &TestRoots, args: &[&str]) -> std::process::Output {
    roots.berth().args(args).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "berth failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_images_tag_rmi_inspect() {
    let roots = TestRoots::new().unwrap();
    let store = Store::open(&roots.root().join("images")).unwrap();
    let desc = fixtures::busybox_image(&store, "busybox:latest").unwrap();
    ok(berth(&roots, &["tag", "busybox", "mine:v1"]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(berth(&roots, &["images", "--format", "json"]))).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["busybox:latest", "mine:v1"]);
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|r| r["Digest"] == desc.digest().to_string())
    );
    let table = ok(berth(&roots, &["image", "ls"]));
    assert!(
        table.contains("REPOSITORY") && table.contains("mine"),
        "{table}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(berth(&roots, &["image", "inspect", "mine:v1"]))).unwrap();
    assert_eq!(inspect[0]["Os"], "linux");
    assert_eq!(inspect[0]["RepoTags"].as_array().unwrap().len(), 2);
    // removing one name keeps the content; removing the last deletes it
    ok(berth(&roots, &["rmi", "mine:v1"]));
    assert_eq!(store.list_blobs().unwrap().len(), 3);
    let out = ok(berth(&roots, &["rmi", "busybox"]));
    assert!(out.contains("Deleted"), "{out}");
    assert!(store.list_blobs().unwrap().is_empty());
    let out = berth(&roots, &["rmi", "busybox"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn cli_save_load_roundtrip_and_skopeo_archives() {
    let skopeo = require_cmd("skopeo");
    let a = TestRoots::new().unwrap();
    let store = Store::open(&a.root().join("images")).unwrap();
    let desc = fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let archive = a.path().join("bb.tar");
    ok(berth(
        &a,
        &["save", "-o", archive.to_str().unwrap(), "busybox"],
    ));
    // skopeo reads it both as docker-archive and as oci-archive
    let v: serde_json::Value = serde_json::from_str(
        &run_ok(
            &skopeo,
            ["inspect", &format!("docker-archive:{}", archive.display())],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    run_ok(
        &skopeo,
        [
            "inspect",
            &format!("oci-archive:{}:busybox:latest", archive.display()),
        ],
    )
    .unwrap();
    // and podman loads it (docker-archive path of containers/image), in private storage
    let podman = require_cmd("podman");
    let proot = a.path().join("podman-root");
    let prun = a.path().join("podman-run");
    let storage = [
        "--root",
        proot.to_str().unwrap(),
        "--runroot",
        prun.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    let loaded = run_ok(
        &podman,
        storage
            .iter()
            .copied()
            .chain(["load", "-i", archive.to_str().unwrap()]),
    )
    .unwrap();
    assert!(loaded.contains("busybox:latest"), "{loaded}");

    let b = TestRoots::new().unwrap();
    let out = ok(berth(&b, &["load", "-i", archive.to_str().unwrap()]));
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(berth(&b, &["images", "--format", "json"]))).unwrap();
    assert_eq!(json[0]["Digest"], desc.digest().to_string());

    // archives skopeo wrote: docker-archive (uncompressed layers) and oci-archive
    let dock = a.path().join("skopeo-docker.tar");
    let oci = a.path().join("skopeo-oci.tar");
    let src = format!("oci:{}:busybox:latest", a.root().join("images").display());
    run_ok(
        &skopeo,
        [
            "copy",
            &src,
            &format!("docker-archive:{}:sk/docker:1", dock.display()),
        ],
    )
    .unwrap();
    run_ok(
        &skopeo,
        [
            "copy",
            &src,
            &format!("oci-archive:{}:sk-oci", oci.display()),
        ],
    )
    .unwrap();
    let c = TestRoots::new().unwrap();
    let out = ok(berth(&c, &["load", "-i", dock.to_str().unwrap()]));
    // skopeo's docker-archive writer qualifies the name
    assert!(out.contains("Loaded image: docker.io/sk/docker:1"), "{out}");
    ok(berth(&c, &["load", "-i", oci.to_str().unwrap()]));
    let cs = Store::open(&c.root().join("images")).unwrap();
    let i1 = cs
        .image("docker.io/sk/docker:1", &Platform::default())
        .unwrap();
    let i2 = cs.image("sk-oci", &Platform::default()).unwrap();
    let orig = store.image("busybox:latest", &Platform::default()).unwrap();
    assert_eq!(i1.diff_ids().unwrap(), orig.diff_ids().unwrap());
    assert_eq!(i2.config_digest, orig.config_digest);
    cs.unpack_image(&i1).unwrap();
    let check = ok(berth(&c, &["system", "check"]));
    assert!(check.contains("0 problem(s)"), "{check}");
}

#[test]
fn cli_system_check_detects_a_corrupted_blob() {
    let roots = TestRoots::new().unwrap();
    let store = Store::open(&roots.root().join("images")).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let img = store.image("busybox:latest", &Platform::default()).unwrap();
    let out = ok(berth(&roots, &["system", "check"]));
    assert!(out.contains("0 problem(s)"), "{out}");
    let layer = berth_image::desc_digest(&img.manifest.layers()[0]).unwrap();
    let path = store.blob_path(&layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    let out = berth(&roots, &["system", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&layer.to_string()) && text.contains("corrupt"),
        "{text}"
    );
    // repair drops the corrupt blob; the image then lacks it (pull it again)
    let out = berth(&roots, &["system", "check", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 repaired") && text.contains("missing blob"),
        "{text}"
    );
    assert!(!store.has_blob(&layer));
}

#[test]
fn wrong_digest_stores_nothing_and_concurrent_writers_agree() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = vec![7u8; 5 << 20];
    let wrong = berth_image::Digest::of(b"not this");
    let mut w = store
        .blob_writer(Some((&wrong, data.len() as u64)))
        .unwrap();
    w.write_all(&data).unwrap();
    assert!(w.commit().is_err());
    assert!(store.list_blobs().unwrap().is_empty());
    let right = berth_image::Digest::of(&data);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                let mut w = store
                    .blob_writer(Some((&right, data.len() as u64)))
                    .unwrap();
                for c in data.chunks(100_000) {
                    w.write_all(c).unwrap();
                }
                w.commit().unwrap();
            });
        }
    });
    assert_eq!(store.list_blobs().unwrap(), vec![right.clone()]);
    assert_eq!(store.read_blob(&right).unwrap(), data);
    assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}

#[test]
fn cli_image_prune_removes_what_nothing_references() {
    let roots = TestRoots::new().unwrap();
    let store = Store::open(&roots.root().join("images")).unwrap();
    fixtures::busybox_image(&store, "app:v1").unwrap();
    let old = store.image("app:v1", &Platform::default()).unwrap();
    ok(berth(&roots, &["image", "unpack", "app:v1"]));
    let old_layer = old.manifest.layers()[0].digest().to_string();
    let old_chain = old.chain_ids().unwrap().remove(0);
    assert!(store.has_snapshot(&old_chain));
    // the tag moves to a new image: the old one's blobs and snapshot are now orphans
    let tar = tar_of(|b| file(b, "new", b"new"));
    fixtures::image_from_layers(&store, "app:v1", &[tar], &["sh"]).unwrap();
    let new = store.image("app:v1", &Platform::default()).unwrap();
    ok(berth(&roots, &["image", "unpack", "app:v1"]));
    let out = ok(berth(&roots, &["image", "prune"]));
    assert!(out.contains(&format!("deleted: {old_layer}")), "{out}");
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert!(!store.has_snapshot(&old_chain), "orphan snapshot kept");
    for c in new.chain_ids().unwrap() {
        assert!(store.has_snapshot(&c), "prune removed a used snapshot");
    }
    for l in new.manifest.layers() {
        assert!(store.has_blob(&l.digest().to_string().parse().unwrap()));
    }
    // nothing left to prune; the store is whole
    let out = ok(berth(&roots, &["image", "prune"]));
    assert!(!out.contains("deleted:"), "{out}");
    let check = ok(berth(&roots, &["system", "check"]));
    assert!(check.contains(": 0 problem(s)"), "{check}");
}
