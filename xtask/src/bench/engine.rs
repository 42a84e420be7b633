//! Container engine: `berth run --rm busybox true` against `podman run --rm` of the
//! same image (copied into podman's storage with skopeo; podman with runc), with
//! `--network none` and with each engine's default bridge; and the time from
//! `run -d` of busybox httpd with a published port to that port answering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::Report;

pub fn run(r: &mut Report) -> Result<()> {
    let pair = super::PodmanPair::paths("engine")?;
    let _ = Command::new(&pair.berth)
        .arg("--root")
        .arg(&pair.root)
        .arg("--state")
        .arg(&pair.state)
        .args(["rm", "-f", "bench-httpd"])
        .output();
    let pair = pair.prepare()?;
    let (berth, oci, root, state) = (&pair.berth, &pair.oci, &pair.root, &pair.state);
    let ours = |net: &str| {
        format!(
            "BERTH_RUNTIME={} {} --root {} --state {} run --rm {net} localhost/busybox true",
            oci.display(),
            berth.display(),
            root.display(),
            state.display()
        )
    };
    let podman = |net: &str| {
        format!(
            "{} run --rm {net} localhost/busybox:latest true",
            pair.podman_shell()
        )
    };
    r.hyperfine(
        "engine: run --rm busybox true, --network none",
        &[
            ("berth", ours("--network none")),
            ("podman+runc", podman("--network none")),
        ],
        &["--warmup", "3", "--runs", "30"],
    )?;
    if let Err(e) = r.hyperfine(
        "engine: run --rm busybox true, default bridge",
        &[("berth", ours("")), ("podman+runc", podman(""))],
        &["--warmup", "2", "--runs", "20"],
    ) {
        r.note(format!("engine: bridge case failed: {e:#}"));
    }
    match httpd_ready(berth, oci, root, state) {
        Ok(ms) => r.metric(
            "engine: run -d httpd to published port answering",
            "ms",
            ms,
            &[],
        ),
        Err(e) => r.note(format!("engine: httpd case failed: {e:#}")),
    }
    pair.remove_bridge();
    Ok(())
}

/// Milliseconds from `run -d -p PORT:80 busybox httpd` to an HTTP answer on PORT.
fn httpd_ready(
    berth: &std::path::Path,
    oci: &std::path::Path,
    root: &std::path::Path,
    state: &std::path::Path,
) -> Result<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let www = root.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "ok\n")?;
    let start = Instant::now();
    let out = Command::new(berth)
        .env("BERTH_RUNTIME", oci)
        .args([
            "--root",
            &root.to_string_lossy(),
            "--state",
            &state.to_string_lossy(),
        ])
        .args([
            "run",
            "-d",
            "--name",
            "bench-httpd",
            "-p",
            &format!("{port}:80"),
        ])
        .args(["-v", &format!("{}:/www:ro", www.display())])
        .args(["localhost/busybox", "httpd", "-f", "-p", "80", "-h", "/www"])
        .output()?;
    if !out.status.success() {
        bail!(
            "berth run -d httpd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answered = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    break start.elapsed();
                }
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            break Duration::ZERO;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = Command::new(berth)
        .args([
            "--root",
            &root.to_string_lossy(),
            "--state",
            &state.to_string_lossy(),
            "rm",
            "-f",
            "bench-httpd",
        ])
        .output();
    if answered.is_zero() {
        bail!("httpd did not answer on port {port} within 10 s");
    }
    Ok(answered.as_secs_f64() * 1000.0)
}
