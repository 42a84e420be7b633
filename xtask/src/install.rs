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
];

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
        return Ok(());
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
    Ok(())
}
