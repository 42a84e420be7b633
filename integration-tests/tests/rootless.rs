//! User namespaces and rootless containers: berth-oci joining a user namespace given
//! by path, compared with runc.

use integration_tests::{
    LeakCheck, bin_path, busybox_bundle, require_cmd, require_root, unique_id, write_config,
};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_config(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

/// A user namespace kept alive by a bind mount of its nsfs file (no process holds
/// it), with `0 100000 65536` as both mappings; unmounted when dropped.
struct PinnedUserns {
    file: PathBuf,
}

impl PinnedUserns {
    fn new(file: PathBuf) -> PinnedUserns {
        std::fs::write(&file, "").unwrap();
        let mut child = Command::new(require_cmd("unshare"))
            .args(["--user", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/user")).ok() == Some(ours.clone()) {
            assert!(Instant::now() < deadline, "unshare --user did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{f}"), "0 100000 65536\n").unwrap();
        }
        let o = Command::new(require_cmd("mount"))
            .arg("--bind")
            .arg(format!("/proc/{pid}/ns/user"))
            .arg(&file)
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(o.status.success(), "pin the user namespace: {}", err(&o));
        PinnedUserns { file }
    }

    /// What `readlink /proc/self/ns/user` shows inside the namespace.
    fn link(&self) -> String {
        format!("user:[{}]", std::fs::metadata(&self.file).unwrap().ino())
    }
}

impl Drop for PinnedUserns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.file).status();
    }
}

/// A user namespace given by path is joined before the others, its mappings are not
/// written again (the config repeats them, as podman does), and the container's new
/// namespaces belong to it: the same as runc.
#[test]
fn join_user_namespace_by_path_like_runc() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-rl-join-")
        .tempdir()
        .unwrap();
    let leak = LeakCheck::new(&[dir.path().display().to_string()]);
    let pin = PinnedUserns::new(dir.path().join("userns"));
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/user; cat /proc/self/uid_map /proc/self/gid_map; \
             id -u; touch /tmp/f; stat -c '%u %g' /tmp/f /bin/busybox; \
             cat /proc/self/status | grep CapEff",
        ],
    )
    .unwrap();
    let mut v = read_config(&bundle);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user", "path": pin.file}));
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    v["linux"]["uidMappings"] = map.clone();
    v["linux"]["gidMappings"] = map;
    write_config(&bundle, &v).unwrap();

    let mut outs = Vec::new();
    for (tag, rt) in [
        ("berth", bin_path("berth-oci")),
        ("runc", require_cmd("runc")),
    ] {
        let o = Command::new(&rt)
            .arg("--root")
            .arg(dir.path().join(format!("root-{tag}")))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(unique_id(tag))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{tag}: {}", err(&o));
        outs.push(text(&o));
        let _ = std::fs::remove_file(bundle.join("rootfs/tmp/f"));
    }
    assert_eq!(
        outs[0], outs[1],
        "berth-oci (left) and runc (right) disagree"
    );
    let lines: Vec<&str> = outs[0].lines().collect();
    assert_eq!(lines[0], pin.link(), "{}", outs[0]);
    for l in &lines[1..3] {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f, ["0", "100000", "65536"], "{}", outs[0]);
    }
    // Root inside is host uid 100000; the host-root-owned rootfs shows as nobody.
    assert_eq!(&lines[3..6], ["0", "0 0", "65534 65534"], "{}", outs[0]);
    drop(pin);
    leak.assert_clean();
}
