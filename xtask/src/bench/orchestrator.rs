//! Orchestrator: `berth apply` of a Deployment (2 pods x 3 containers) until every
//! container runs, against `podman kube play` of the same manifest (podman with runc);
//! and two figures of our own: scaling a Deployment from 0 to 50 ready replicas, and
//! the time from a container's death to its replacement running.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Report;

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: bench}
spec:
  replicas: 2
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - {name: a, image: localhost/busybox:latest, imagePullPolicy: Never, command: [sleep, '1000']}
        - {name: b, image: localhost/busybox:latest, imagePullPolicy: Never, command: [sleep, '1000']}
        - {name: c, image: localhost/busybox:latest, imagePullPolicy: Never, command: [sleep, '1000']}
";

const SCALE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: 0
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - {name: s, image: localhost/busybox:latest, imagePullPolicy: Never, command: [sleep, '1000']}
";

pub fn run(r: &mut Report) -> Result<()> {
    let pair = super::PodmanPair::paths("orchestrator")?.prepare()?;
    let work = &pair.work;
    let manifest = work.join("deploy.yaml");
    std::fs::write(&manifest, MANIFEST)?;
    let b = pair.berth_shell();
    let mut serve = Command::new("sh");
    serve.args(["-c", &format!("exec {b} serve --interval 0.05")]);
    let serve = integration_tests::Serve::start(serve, &pair.state)?;
    // each run starts from nothing: the previous run's Deployment deleted and gone
    let wait_for =
        |n: usize| format!("until [ \"$({b} ps -q | wc -l)\" -eq {n} ]; do sleep 0.005; done");
    let ours = format!(
        "{b} apply -f {m} >/dev/null && {w}",
        m = manifest.display(),
        w = wait_for(6)
    );
    let ours_prepare = format!(
        "{b} delete deployment bench >/dev/null 2>&1; {w}",
        w = wait_for(0)
    );
    let p = pair.podman_shell();
    let theirs = format!("{p} kube play {} >/dev/null", manifest.display());
    let theirs_prepare = format!("{p} kube down {} >/dev/null 2>&1; true", manifest.display());
    // hyperfine's --prepare is per command: berth's and podman's are run one after the
    // other so each engine cleans up its own
    r.hyperfine(
        "orchestrator: apply Deployment 2 pods x 3 containers until running",
        &[("berth apply", ours), ("podman kube play", theirs)],
        &[
            "--warmup",
            "1",
            "--runs",
            "10",
            "--prepare",
            &ours_prepare,
            "--prepare",
            &theirs_prepare,
        ],
    )?;
    let _ = sh(&format!("{b} delete deployment bench; {}", wait_for(0)));
    let _ = sh(&theirs_prepare);
    match scale_figures(&b, work) {
        Ok((up, heal)) => {
            r.metric("orchestrator: scale 0 -> 50 ready replicas", "s", up, &[]);
            r.metric(
                "orchestrator: container death to replacement running",
                "ms",
                heal,
                &[],
            );
        }
        Err(e) => r.note(format!("orchestrator: scale case failed: {e:#}")),
    }
    drop(serve);
    let _ = sh(&format!("{b} ps -aq | xargs -r {b} rm -f >/dev/null"));
    let _ = sh(&format!(
        "{b} network prune -f >/dev/null; {b} network rm bridge >/dev/null"
    ));
    Ok(())
}

fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh").args(["-c", cmd]).output()?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn running(b: &str) -> Result<Vec<String>> {
    Ok(sh(&format!("{b} ps -q"))?
        .lines()
        .map(str::to_string)
        .collect())
}

/// Seconds to scale 0 -> 50 with every pod Ready, and milliseconds from `rm -f` of one
/// container to a replacement running.
fn scale_figures(b: &str, work: &Path) -> Result<(f64, f64)> {
    let m = work.join("scale.yaml");
    std::fs::write(&m, SCALE)?;
    sh(&format!("{b} apply -f {}", m.display()))?;
    let start = Instant::now();
    sh(&format!("{b} scale deployment/many --replicas 50"))?;
    loop {
        let ready = sh(&format!("{b} get pods"))?
            .lines()
            .filter(|l| l.contains(" 1/1 "))
            .count();
        if ready == 50 {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("only {ready} of 50 replicas ready after 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let up = start.elapsed().as_secs_f64();
    let before = running(b)?;
    let victim = before.first().context("no container to kill")?.clone();
    let start = Instant::now();
    sh(&format!("{b} rm -f {victim}"))?;
    loop {
        let now = running(b)?;
        if now.len() == before.len() && !now.contains(&victim) {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("no replacement within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let heal = start.elapsed().as_secs_f64() * 1000.0;
    sh(&format!("{b} delete deployment many"))?;
    let start = Instant::now();
    while !running(b)?.is_empty() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((up, heal))
}
