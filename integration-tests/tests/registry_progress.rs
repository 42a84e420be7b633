//! What `berth pull` prints: progress bars per layer on a terminal (run under
//! `script`, which gives it a pty), plain lines when stderr is a file or pipe, nothing
//! but the name with `--quiet`.

use std::process::Command;

use berth_image::{Store, fixtures};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{TestRoots, bin_path, require_cmd};

/// A registry holding the busybox fixture; returns (registry, name, layer digest).
fn registry_with_busybox() -> (Registry, String, String) {
    let reg = Registry::start(Auth::None).unwrap();
    let src = tempfile::tempdir().unwrap();
    let store = Store::open(&src.path().join("images")).unwrap();
    let name = format!("{}/progress/busybox:1", reg.addr());
    fixtures::busybox_image(&store, &name).unwrap();
    let layer = store
        .image(&name, &Default::default())
        .unwrap()
        .manifest
        .layers()[0]
        .digest()
        .to_string();
    let client = berth_registry::Client::new(berth_registry::ClientConfig {
        docker_config: Some("".into()),
        ..Default::default()
    })
    .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.push(
            &store,
            &name,
            &berth_registry::ImageRef::parse(&name).unwrap(),
            &Default::default(),
            berth_registry::progress::discard(),
        ))
        .unwrap();
    (reg, name, layer)
}

fn short(digest: &str) -> &str {
    &digest["sha256:".len()..][..12]
}

#[test]
fn pull_draws_bars_on_a_terminal_and_plain_lines_otherwise() {
    let script = require_cmd("script");
    let berth = bin_path("berth");
    let (_reg, name, layer) = registry_with_busybox();

    // a terminal: bars (drawn with block characters, redrawn in place)
    let roots = TestRoots::new().unwrap();
    let out = Command::new(&script)
        .args(["-qfec"])
        .arg(format!(
            "{} --root {} pull {name}",
            berth.display(),
            roots.root().display()
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains(short(&layer)), "{tty}");
    assert!(
        tty.contains('█') || tty.contains('░'),
        "no progress bar drawn: {tty}"
    );
    assert!(tty.contains("\x1b["), "bars are redrawn in place: {tty}");
    assert!(tty.contains("Pulled "), "{tty}");

    // not a terminal: one plain line per step, no escape sequences
    let roots = TestRoots::new().unwrap();
    let out = roots.berth().args(["pull", &name]).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let s = short(&layer);
    for want in [
        "resolved to sha256:".to_owned(),
        format!("{s}: transferring"),
        format!("{s}: done"),
        format!("{s}: unpacked"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains('\x1b'), "escape sequences in a log: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Digest: sha256:"), "{stdout}");

    // a second pull: every blob already there
    let out = roots.berth().args(["pull", &name]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{s}: already exists")), "{err}");

    // --quiet: the name alone
    let roots = TestRoots::new().unwrap();
    let out = roots.berth().args(["pull", "-q", &name]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
