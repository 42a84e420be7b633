//! Installs what the tests and benchmarks need, idempotently: `apt-get update` runs
//! only when a package is missing.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Debian packages the tests use, with the reason each is here.
const PACKAGES: &[(&str, &str)] = &[
    ("runc", "oracle runtime and benchmark peer"),
    ("crun", "benchmark peer"),
    ("busybox-static", "every rootfs and base image"),
    ("docker-registry", "real registry server on loopback"),
    ("apache2-utils", "htpasswd for the registry's basic auth"),
    ("openssl", "keys for the registry's token auth"),
    ("skopeo", "image interop and pull/push peer"),
    ("umoci", "image interop peer"),
    ("podman", "engine peer"),
    ("buildah", "oracle for the Dockerfile parser"),
    ("containerd", "engine peer"),
    (
        "docker.io",
        "dockerd, an engine that runs containers on berth-oci in tests",
    ),
    ("conmon", "podman's container monitor (engine tests)"),
    ("libseccomp-dev", "libseccomp for berth-seccomp"),
    ("pkg-config", "finding libseccomp at build time"),
    ("hyperfine", "benchmarks"),
    ("jq", "scripts and demo"),
    ("iproute2", "network namespaces and links"),
    ("nftables", "NAT and port publishing"),
    ("time", "peak RSS in benchmarks"),
    ("curl", "demo and fetch checks"),
    ("util-linux", "unshare, nsenter, mount"),
    ("procps", "ps in tests"),
    ("gcc", "static attacker probes compiled by the escape tests"),
    ("libc6-dev", "static libc for those probes (gcc -static)"),
    (
        "git",
        "ADD of git repositories in berth build, and git daemon serving them in tests",
    ),
    (
        "openssh-client",
        "ssh-agent for RUN --mount=type=ssh tests of berth build",
    ),
    (
        "uidmap",
        "newuidmap/newgidmap for rootless containers (rootless tests)",
    ),
    ("slirp4netns", "rootless networking (rootless podman tests)"),
    ("g++", "libFuzzer's C++ runtime (cargo xtask fuzz)"),
];

/// The unprivileged user the rootless tests drop to, with fixed ids and a subordinate
/// range of 65536 ids in /etc/subuid and /etc/subgid (integration-tests/tests/rootless.rs
/// uses the same values).
pub const ROOTLESS_USER: &str = "berth-rootless";
/// Its uid and gid.
pub const ROOTLESS_UID: u32 = 23790;
/// First id of its subordinate ranges.
pub const ROOTLESS_SUBID_START: u32 = 2_000_000;

/// Create the rootless test user and its subordinate id ranges if missing.
pub fn rootless_user() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let exists = Command::new("getent")
        .args(["passwd", ROOTLESS_USER])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        if !root {
            bail!("install: user {ROOTLESS_USER} is missing and we are not root");
        }
        let id = ROOTLESS_UID.to_string();
        if !Command::new("getent")
            .args(["group", ROOTLESS_USER])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            util::run(Command::new("groupadd").args(["--gid", &id, ROOTLESS_USER]))
                .context("groupadd")?;
        }
        util::run(Command::new("useradd").args([
            "--uid",
            &id,
            "--gid",
            &id,
            "--create-home",
            "--home-dir",
            &format!("/home/{ROOTLESS_USER}"),
            "--shell",
            "/bin/sh",
            ROOTLESS_USER,
        ]))
        .context("useradd")?;
    }
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let line = format!("{ROOTLESS_USER}:{ROOTLESS_SUBID_START}:65536");
        if text.lines().any(|l| l == line) {
            continue;
        }
        if !root {
            bail!("install: {f} lacks {line:?} and we are not root");
        }
        // Drop any other range useradd may have given the user, then add ours.
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{ROOTLESS_USER}:")))
            .collect();
        kept.push(&line);
        std::fs::write(f, kept.join("\n") + "\n").with_context(|| format!("write {f}"))?;
    }
    // Rootless networking (slirp4netns) opens /dev/net/tun as the user: udev makes it
    // 0666 on a usual Debian host, this VM boots it 0600.
    let tun = std::path::Path::new("/dev/net/tun");
    if root
        && let Ok(m) = std::fs::metadata(tun)
        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777 != 0o666
    {
        std::fs::set_permissions(tun, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .context("chmod 0666 /dev/net/tun")?;
    }
    println!("install: rootless test user {ROOTLESS_USER} (uid {ROOTLESS_UID}) ready");
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn prerequisites() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!("install: all {} packages present", PACKAGES.len());
        return rootless_user();
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("install: missing packages {missing:?} and not root: install them with apt-get");
    }
    println!("install: missing {missing:?}");
    util::run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update")?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install")?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("install: still missing after apt-get: {still:?}");
    }
    rootless_user()
}
