//! Tests of the harness itself, against the real peers: the busybox bundle runs under
//! runc, and the leak check notices what a test leaves behind.

use std::process::Command;

use integration_tests::{LeakCheck, busybox_bundle, require_cmd, require_root, unique_id};

#[test]
fn busybox_bundle_runs_under_runc() {
    require_root();
    let runc = require_cmd("runc");
    let dir = tempfile::tempdir().unwrap();
    let id = unique_id("harness-runc");
    let leaks = LeakCheck::new(&[dir.path().to_str().unwrap(), &id]);
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", "echo hi from $(hostname); exit 7"],
    )
    .unwrap();
    let state = dir.path().join("runc-state");
    let out = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from berth\n");
    leaks.assert_clean();
}

#[test]
fn leak_check_reports_a_left_mount_and_process() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let leaks = LeakCheck::new(&[dir.path().to_str().unwrap()]);
    assert!(leaks.leaks().is_empty());

    let status = Command::new("mount")
        .args(["-t", "tmpfs", "leaktest"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Command::new("sleep")
        .arg("30")
        .current_dir(&target)
        .spawn()
        .unwrap();

    let found = leaks.leaks();
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("mount: ") && l.contains("tmpfs")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("process: ") && l.contains("sleep 30")),
        "{found:?}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let status = Command::new("umount").arg(&target).status().unwrap();
    assert!(status.success());
    leaks.assert_clean();
}
