//! `berth info` and `berth system prune` as a docker user would use them.

use berth_image::{Store, fixtures};
use integration_tests::{LeakCheck, TestRoots, require_root};

fn berth(roots: &TestRoots, args: &[&str]) -> String {
    let out = roots.berth().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn info_shows_defaults_and_prune_removes_only_what_is_unused() {
    require_root();
    let roots = TestRoots::new().unwrap();
    let leaks = LeakCheck::new(&[roots.path().display().to_string()]);
    let store = Store::open(&roots.root().join("images")).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    berth(&roots, &["run", "--name", "done", "busybox", "true"]);
    berth(
        &roots,
        &["run", "-d", "--name", "busy", "busybox", "sleep", "60"],
    );
    let info = berth(&roots, &["info"]);
    for want in [
        "containers: 2 (running 1, paused 0, stopped 1)",
        "images: 1",
        "capabilities: CAP_CHOWN",
        "seccomp: berth's default profile",
    ] {
        assert!(info.contains(want), "{want:?} not in:\n{info}");
    }
    assert!(!info.contains("CAP_SYS_ADMIN"), "{info}");
    let out = berth(&roots, &["system", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    let names = berth(&roots, &["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(names.trim(), "busy", "prune keeps running containers only");
    berth(&roots, &["rm", "-f", "busy"]);
    berth(&roots, &["system", "prune"]);
    assert!(berth(&roots, &["ps", "-aq"]).trim().is_empty());
    leaks.assert_clean();
}
