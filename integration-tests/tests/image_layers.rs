//! Layer contents against the real peers: device nodes, fifos, xattrs, ownership,
//! modes, mtimes and hardlinks unpacked the way umoci unpacks them; zstd layers written
//! by skopeo read from a layout and pulled from a registry.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_image::{Platform, Store, fixtures};
use integration_tests::{TestRoots, bin_path, require_cmd, require_root, run_ok};

const MTIME: u64 = 1_600_000_000;

fn header(kind: tar::EntryType, path: &str, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

/// A layer with every kind of entry an image may carry.
fn special_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, mut h: tar::Header, data: &[u8]| {
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    use tar::EntryType as T;
    add(&mut b, header(T::Directory, "dev/", 0o755, 0, 0), b"");
    let mut null = header(T::Char, "dev/null", 0o666, 0, 0);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    add(&mut b, null, b"");
    let mut loop0 = header(T::Block, "dev/loop0", 0o660, 0, 6);
    loop0.set_device_major(7).unwrap();
    loop0.set_device_minor(0).unwrap();
    add(&mut b, loop0, b"");
    add(&mut b, header(T::Fifo, "dev/fifo", 0o600, 0, 0), b"");
    add(&mut b, header(T::Directory, "home/", 0o755, 0, 0), b"");
    add(
        &mut b,
        header(T::Directory, "home/user/", 0o750, 1000, 1001),
        b"",
    );
    add(
        &mut b,
        header(T::Regular, "home/user/notes", 0o640, 1000, 1001),
        b"notes\n",
    );
    add(&mut b, header(T::Directory, "usr/", 0o755, 0, 0), b"");
    add(&mut b, header(T::Directory, "usr/bin/", 0o755, 0, 0), b"");
    add(
        &mut b,
        header(T::Regular, "usr/bin/suid", 0o4755, 0, 0),
        b"#!/bin/sh\n",
    );
    add(
        &mut b,
        header(T::Regular, "usr/bin/sgid", 0o2711, 0, 50),
        b"#!/bin/sh\n",
    );
    let mut link = header(T::Link, "usr/bin/suid-again", 0o4755, 0, 0);
    link.set_link_name("usr/bin/suid").unwrap();
    add(&mut b, link, b"");
    let mut sym = header(T::Symlink, "usr/bin/sl", 0o777, 1000, 1001);
    sym.set_link_name("suid").unwrap();
    add(&mut b, sym, b"");
    add(&mut b, header(T::Directory, "tmp/", 0o1777, 0, 0), b"");
    // a file carrying extended attributes, as PAX records (what docker and buildah write)
    b.append_pax_extensions([
        ("SCHILY.xattr.user.berth", b"hello".as_slice()),
        ("SCHILY.xattr.trusted.berth", b"trusted".as_slice()),
    ])
    .unwrap();
    add(
        &mut b,
        header(T::Regular, "usr/bin/attrs", 0o755, 0, 0),
        b"x",
    );
    b.into_inner().unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are nul-terminated and outlive the call; buf is writable for
    // its length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// What a user sees of one entry: type, permission bits, owner, device, mtime, xattrs.
fn describe(root: &Path, rel: &str) -> String {
    let p = root.join(rel);
    let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "file"
    };
    let target = if ft.is_symlink() {
        fs::read_link(&p).unwrap().display().to_string()
    } else {
        String::new()
    };
    let dev = if ft.is_char_device() || ft.is_block_device() {
        format!(
            "{}:{}",
            libc::major(m.rdev() as libc::dev_t),
            libc::minor(m.rdev() as libc::dev_t)
        )
    } else {
        String::new()
    };
    let attrs: Vec<String> = ["user.berth", "trusted.berth"]
        .iter()
        .filter_map(|n| xattr(&p, n).map(|v| format!("{n}={}", String::from_utf8_lossy(&v))))
        .collect();
    // symlink permission bits and times are not portable (umoci leaves them alone)
    let (mode, mtime) = if ft.is_symlink() {
        (0, 0)
    } else {
        (m.mode() & 0o7777, m.mtime())
    };
    format!(
        "{rel}: {kind} {mode:o} {}:{} {dev} {target} mtime={mtime} nlink={} {}",
        m.uid(),
        m.gid(),
        if ft.is_dir() { 0 } else { m.nlink() },
        attrs.join(",")
    )
}

const ENTRIES: &[&str] = &[
    "dev/null",
    "dev/loop0",
    "dev/fifo",
    "home/user",
    "home/user/notes",
    "usr/bin/suid",
    "usr/bin/sgid",
    "usr/bin/suid-again",
    "usr/bin/sl",
    "usr/bin/attrs",
    "tmp",
];

#[test]
fn device_nodes_xattrs_owners_modes_and_links_unpack_like_umoci() {
    require_root();
    let umoci = require_cmd("umoci");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let store = Store::open(&layout).unwrap();
    fixtures::image_from_layers(&store, "special", &[special_layer()], &["sh"]).unwrap();
    let image = store.image("special", &Platform::default()).unwrap();
    let ours = store.unpack_image(&image).unwrap().remove(0);
    let bundle = dir.path().join("bundle");
    run_ok(
        &umoci,
        [
            "unpack",
            "--image",
            &format!("{}:special", layout.display()),
            bundle.to_str().unwrap(),
        ],
    )
    .unwrap();
    let theirs = bundle.join("rootfs");
    for rel in ENTRIES {
        assert_eq!(
            describe(&ours, rel),
            describe(&theirs, rel),
            "berth (left) and umoci (right) differ"
        );
    }
    // and what the layer said, spelled out
    let d = |rel| describe(&ours, rel);
    assert!(
        d("dev/null").contains("char 666 0:0 1:3"),
        "{}",
        d("dev/null")
    );
    assert!(
        d("dev/loop0").contains("block 660 0:6 7:0"),
        "{}",
        d("dev/loop0")
    );
    assert!(d("dev/fifo").contains("fifo 600"), "{}", d("dev/fifo"));
    assert!(
        d("home/user/notes").starts_with("home/user/notes: file 640 1000:1001 ")
            && d("home/user/notes").contains(&format!("mtime={MTIME}")),
        "{}",
        d("home/user/notes")
    );
    assert!(d("usr/bin/suid").contains("file 4755") && d("usr/bin/suid").contains("nlink=2"));
    assert!(d("usr/bin/sgid").contains("file 2711 0:50"));
    assert!(d("tmp").contains("dir 1777"));
    assert!(
        d("usr/bin/attrs").contains("user.berth=hello,trusted.berth=trusted"),
        "{}",
        d("usr/bin/attrs")
    );
    assert!(
        d("usr/bin/sl").contains("symlink 0 1000:1001  suid"),
        "{}",
        d("usr/bin/sl")
    );
}

#[test]
fn zstd_layers_written_by_skopeo_are_read_and_unpacked() {
    let skopeo = require_cmd("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let store = Store::open(&ours).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let zst = dir.path().join("zstd");
    run_ok(
        &skopeo,
        [
            "copy",
            "--dest-compress-format",
            "zstd",
            &format!("oci:{}:busybox:latest", ours.display()),
            &format!("oci:{}:bb", zst.display()),
        ],
    )
    .unwrap();
    let theirs = Store::open(&zst).unwrap();
    let img = theirs.image("bb", &Platform::default()).unwrap();
    let layer = &img.manifest.layers()[0];
    assert!(
        layer.media_type().to_string().contains("zstd"),
        "skopeo did not write a zstd layer: {}",
        layer.media_type()
    );
    let orig = store.image("busybox:latest", &Platform::default()).unwrap();
    assert_eq!(img.diff_ids().unwrap(), orig.diff_ids().unwrap());
    let snap = theirs.unpack_image(&img).unwrap().remove(0);
    assert!(snap.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(snap.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
}

#[test]
fn zstd_image_pushed_by_skopeo_is_pulled_and_unpacked() {
    let skopeo = require_cmd("skopeo");
    let _ = bin_path("berth");
    let reg = integration_tests::registry::Registry::start(integration_tests::registry::Auth::None)
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    let store = Store::open(&src.path().join("images")).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let name = format!("{}/zstd/busybox:1", reg.addr());
    run_ok(
        &skopeo,
        [
            "copy",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd",
            &format!("oci:{}:busybox:latest", src.path().join("images").display()),
            &format!("docker://{name}"),
        ],
    )
    .unwrap();
    let roots = TestRoots::new().unwrap();
    let out = roots.berth().args(["pull", &name]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = Store::open(&roots.root().join("images")).unwrap();
    let img = dst.image(&name, &Platform::default()).unwrap();
    assert!(
        img.manifest.layers()[0]
            .media_type()
            .to_string()
            .contains("zstd")
    );
    let chain = img.chain_ids().unwrap();
    assert!(
        dst.snapshot_path(&chain[0]).join("bin/busybox").is_file(),
        "zstd layer not unpacked by the pull"
    );
}
