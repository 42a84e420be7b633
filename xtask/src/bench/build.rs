//! Dockerfile builds: a ten-step multi-stage Dockerfile (ARG before FROM, ENV,
//! WORKDIR, COPY, RUN, COPY --from, .dockerignore) built by `berth build` and by
//! `buildah bud` from the same local busybox base, first build (no cache) and a fully
//! cached rebuild.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::Report;
use crate::util;

const DOCKERFILE: &str = r#"ARG BASE=localhost/busybox:latest
FROM ${BASE} AS build
ENV APP=/app
WORKDIR /app
COPY src/ ./src/
RUN cat src/*.txt > all.txt && echo built > built.txt
RUN mkdir -p out && cp all.txt built.txt out/ && wc -c out/all.txt

FROM ${BASE}
ENV MODE=prod
WORKDIR /srv
COPY --from=build /app/out/ ./
COPY config.txt ./
RUN ls -l > listing.txt
CMD ["cat", "/srv/all.txt"]
"#;

fn context(dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE)?;
    std::fs::write(dir.join(".dockerignore"), "*.log\ntmp/\n")?;
    std::fs::write(dir.join("config.txt"), "mode=prod\n")?;
    for i in 0..50 {
        let mut s = String::new();
        for j in 0..40 {
            let _ = writeln!(s, "file {i} line {j}: the quick brown fox");
        }
        std::fs::write(dir.join(format!("src/f{i:02}.txt")), s)?;
    }
    // one bigger file, and things .dockerignore keeps out
    std::fs::write(dir.join("src/big.bin"), vec![7u8; 1 << 20])?;
    std::fs::write(dir.join("debug.log"), vec![b'x'; 4 << 20])?;
    std::fs::write(dir.join("tmp/scratch.bin"), vec![b'y'; 4 << 20])?;
    Ok(())
}

pub fn run(r: &mut Report) -> Result<()> {
    let release = util::target_dir().join("release");
    let berth = release.join("berth");
    let oci = release.join("berth-oci");
    if !berth.is_file() || !oci.is_file() {
        bail!("bench build needs release builds of berth and berth-oci");
    }
    let work = Report::dir().join("build");
    let root = work.join("berth-root");
    let state = work.join("berth-state");
    let ctx = work.join("ctx");
    let broot = work.join("buildah-root");
    let brun = work.join("buildah-run");
    let conf = work.join("containers.conf");
    unmount_under(&work);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    context(&ctx)?;
    // podman/buildah fail here with the default nofile ulimit (ENVIRONMENT.md)
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
    )?;
    let store = berth_image::Store::open(&root.join("images"))?;
    berth_image::fixtures::busybox_image(&store, "localhost/busybox:latest")?;
    let storage = format!(
        "--root {} --runroot {} --storage-driver overlay",
        broot.display(),
        brun.display()
    );
    util::run(
        std::process::Command::new("skopeo")
            .arg("copy")
            .arg(format!(
                "oci:{}:localhost/busybox:latest",
                root.join("images").display()
            ))
            .arg(format!(
                "containers-storage:[overlay@{}+{}]localhost/busybox:latest",
                broot.display(),
                brun.display()
            )),
    )
    .context("importing busybox into buildah's storage")?;
    let ours = |extra: &str| {
        format!(
            "BERTH_RUNTIME={} {} --root {} --state {} build -q {extra} -t bench:latest {}",
            oci.display(),
            berth.display(),
            root.display(),
            state.display(),
            ctx.display()
        )
    };
    let theirs = |extra: &str| {
        format!(
            "CONTAINERS_CONF={} buildah {storage} bud --quiet --layers --pull=never --network none {extra} -t bench:latest {}",
            conf.display(),
            ctx.display()
        )
    };
    r.hyperfine(
        "build: 10-step multi-stage Dockerfile, first build (--no-cache)",
        &[
            ("berth", ours("--no-cache")),
            ("buildah", theirs("--no-cache")),
        ],
        &["--runs", "5", "--warmup", "1"],
    )?;
    r.hyperfine(
        "build: same Dockerfile, fully cached rebuild",
        &[("berth", ours("")), ("buildah", theirs(""))],
        &["--runs", "10", "--warmup", "2"],
    )?;
    r.note(
        "build: both from the same busybox image (berth's store; imported into a private \
         buildah overlay storage with skopeo); buildah with --layers, --network none; \
         berth RUN steps through release berth-oci, loopback-only network namespace",
    );
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "export CONTAINERS_CONF={}; buildah {storage} rm -a >/dev/null 2>&1; buildah {storage} rmi -a -f >/dev/null 2>&1",
            conf.display()
        ))
        .status();
    // containers/storage keeps its overlay directory (and any leftover container)
    // mounted; nothing of the bench stays mounted
    unmount_under(&work);
    Ok(())
}

/// Lazily unmounts every mount point below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = std::process::Command::new("umount")
            .args(["-l", p])
            .status();
    }
}
