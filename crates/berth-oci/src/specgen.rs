//! `spec` (a default config.json) and `features` (what this build supports).

use serde_json::{Value, json};

const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// A default config like `runc spec` writes.
pub fn default_spec(rootless: bool) -> Value {
    let mut namespaces = vec![
        json!({"type":"pid"}),
        json!({"type":"ipc"}),
        json!({"type":"uts"}),
        json!({"type":"mount"}),
    ];
    if !rootless {
        namespaces.insert(1, json!({"type":"network"}));
    }
    let mut v = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS, "ambient": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid","noexec","nodev","mode=1777","size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid","noexec","nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid","noexec","nodev","ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid","noexec","nodev","relatime","ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],
            "readonlyPaths": ["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]
        }
    });
    if rootless {
        if let Some(a) = v["linux"]["namespaces"].as_array_mut() {
            a.push(json!({"type":"user"}));
        }
        // SAFETY: getuid/getgid cannot fail.
        let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": u, "size": 1}]);
        v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": g, "size": 1}]);
        if let Some(o) = v["linux"].as_object_mut() {
            o.remove("resources");
        }
        // Without a network namespace of its own, sysfs cannot be mounted fresh: bind
        // the host's read-only. uid=/gid= options may name unmapped ids: drop them.
        for m in v["mounts"].as_array_mut().into_iter().flatten() {
            if m["destination"] == "/sys" {
                *m = json!({"destination": "/sys", "type": "none", "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            } else if let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut) {
                opts.retain(|o| {
                    o.as_str()
                        .is_none_or(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
                });
            }
        }
    }
    v
}

/// The runtime-spec features document, from what this build and host support.
pub fn features() -> Value {
    let mut caps: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    caps.sort();
    let ns = [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ]
    .into_iter()
    .filter(|n| {
        let f = if *n == "network" {
            "net"
        } else if *n == "mount" {
            "mnt"
        } else {
            n
        };
        std::path::Path::new(&format!("/proc/self/ns/{f}")).exists()
    })
    .collect::<Vec<_>>();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async","atime","bind","defaults","dev","diratime","dirsync","exec","idmap","mand","noatime","nodev","nodiratime","noexec","nomand","norelatime","nostrictatime","nosuid","private","rbind","relatime","remount","ridmap","ro","rprivate","rshared","rslave","runbindable","rw","shared","slave","strictatime","suid","sync","unbindable"],
        "linux": {
            "namespaces": ns,
            "capabilities": caps,
            "cgroup": cgroup_features(),
            "seccomp": berth_runtime::seccomp_features(),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}}
        },
        "annotations": {"io.github.berth.oci.version": env!("CARGO_PKG_VERSION")}
    })
}

/// The cgroup part of the features document, from the cgroup layout of this host.
fn cgroup_features() -> Value {
    use berth_runtime::cgroup_host::Layout;
    let host = berth_runtime::cgroup_host::host_support().ok();
    let layout = host.as_ref().map(|h| h.layout);
    json!({
        "v1": matches!(layout, Some(Layout::V1 | Layout::Hybrid)),
        "v2": matches!(layout, Some(Layout::V2 | Layout::Hybrid)),
        "systemd": false,
        "systemdUser": false,
        "rdma": host.as_ref().is_some_and(|h| h.has("rdma")),
    })
}
