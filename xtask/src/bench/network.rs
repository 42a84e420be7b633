//! Container networking: the plumbing of one container (pinned namespace, veth on a
//! bridge, address, route, one published port, then all of it removed) with berth-net
//! against the same steps done with `ip`/`nft` commands (how shell-based plugins do
//! it); and the time from `run -d -p 127.0.0.1:PORT:80 busybox httpd` to PORT
//! answering over HTTP, berth against podman (runc, its default bridge).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Report;
use crate::util;

const CYCLES: u32 = 20;

pub fn run(r: &mut Report) -> Result<()> {
    util::cargo(&[
        "build",
        "--release",
        "-p",
        "berth-net",
        "--example",
        "attach_cycle",
    ])?;
    let cycle = util::target_dir().join("release/examples/attach_cycle");
    let out = Command::new(&cycle)
        .arg(CYCLES.to_string())
        .output()
        .context("running attach_cycle")?;
    if !out.status.success() {
        bail!("attach_cycle: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ours: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let theirs = ip_commands_cycle(CYCLES)?;
    r.metric(
        "net: one container's plumbing (netns, veth, address, route, 1 port; removed)",
        "ms",
        ours,
        &[("ip+nft commands", theirs)],
    );
    match run_to_answer(r) {
        Ok(()) => {}
        Err(e) => r.note(format!("net: run -d httpd to answer not measured: {e:#}")),
    }
    Ok(())
}

/// Mean ms per cycle of the same plumbing done with `ip`, `nsenter` and `nft`.
fn ip_commands_cycle(n: u32) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let id = std::process::id() & 0xfffff;
    let br = format!("bipc{id:x}");
    let table = format!("berth_{br}");
    let net = format!("10.252.{}", id % 256);
    let pin = dir.path().join("ns");
    let setup = format!(
        "set -e
ip link add {br} type bridge; ip addr add {net}.1/24 dev {br}; ip link set {br} up
nft 'add table ip {table}; add map ip {table} m {{ type inet_service : ipv4_addr . inet_service; }}'"
    );
    let cycle = format!(
        "set -e
for i in $(seq {n}); do
  touch {pin}; unshare --net={pin} true
  ip link add vipc{id:x}x$i type veth peer name eth0 netns {pin}
  ip link set vipc{id:x}x$i master {br} up
  nsenter --net={pin} ip link set lo up
  nsenter --net={pin} ip addr add {net}.2/24 dev eth0
  nsenter --net={pin} ip link set eth0 up
  nsenter --net={pin} ip route add default via {net}.1
  nft 'add element ip {table} m {{ 8080 : {net}.2 . 80 }}'
  nft 'delete element ip {table} m {{ 8080 }}'
  umount {pin}; rm {pin}
done",
        pin = pin.display()
    );
    let cleanup = format!("nft delete table ip {table}; ip link del {br}");
    util::run(Command::new("sh").args(["-c", &setup]))?;
    let start = Instant::now();
    let res = util::run(Command::new("sh").args(["-c", &cycle]));
    let took = start.elapsed();
    // the pairs go with their namespaces in the background; then drop the bridge
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("sh").args(["-c", &cleanup]).status();
    res?;
    Ok(took.as_secs_f64() * 1000.0 / f64::from(n))
}

/// Milliseconds until an HTTP answer on 127.0.0.1:`port`, at most 10 s.
fn wait_http(port: u16, start: Instant) -> Result<f64> {
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                let mut buf = [0u8; 16];
                if matches!(s.read(&mut buf), Ok(n) if n >= 5 && buf.starts_with(b"HTTP/")) {
                    return Ok(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no HTTP answer on 127.0.0.1:{port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Median of `runs` timings of `run -d` .. answer, removing the container after each.
fn median_of(
    runs: usize,
    mut start: impl FnMut(u16) -> Result<()>,
    mut stop: impl FnMut(),
) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let port = free_port()?;
        let t = Instant::now();
        let res = start(port).and_then(|()| wait_http(port, t));
        stop();
        times.push(res?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn run_to_answer(r: &mut Report) -> Result<()> {
    let pair = super::PodmanPair::paths("network")?.prepare()?;
    let super::PodmanPair {
        berth,
        oci,
        root,
        state,
        proot,
        prun,
        conf,
        ..
    } = pair;

    let berth_cmd = |root: &Path, state: &Path| {
        let mut c = Command::new(&berth);
        c.env("BERTH_RUNTIME", &oci)
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state);
        c
    };
    let ours = median_of(
        5,
        |port| {
            let out = berth_cmd(&root, &state)
                .args(["run", "-d", "--name", "bench-net-httpd", "-p"])
                .arg(format!("127.0.0.1:{port}:80"))
                .args(["localhost/busybox", "httpd", "-f", "-p", "80", "-h", "/"])
                .output()?;
            if !out.status.success() {
                bail!(
                    "berth run -d: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        },
        || {
            let _ = berth_cmd(&root, &state)
                .args(["rm", "-f", "bench-net-httpd"])
                .output();
        },
    )?;
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(&proot)
            .arg("--runroot")
            .arg(&prun)
            .args(["--storage-driver", "overlay"])
            .args(args);
        c
    };
    let theirs = median_of(
        5,
        |port| {
            let out = podman(&["run", "-d", "--name", "bench-net-httpd", "-p"])
                .arg(format!("127.0.0.1:{port}:80"))
                .args([
                    "localhost/busybox:latest",
                    "httpd",
                    "-f",
                    "-p",
                    "80",
                    "-h",
                    "/",
                ])
                .output()?;
            if !out.status.success() {
                bail!(
                    "podman run -d: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        },
        || {
            let _ = podman(&["rm", "-f", "-t", "0", "bench-net-httpd"]).output();
        },
    )?;
    r.metric(
        "net: run -d -p busybox httpd until the port answers (median of 5)",
        "ms",
        ours,
        &[("podman+runc", theirs)],
    );
    super::remove_bridge(&berth, &root, &state);
    Ok(())
}
