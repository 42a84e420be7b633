//! Registry: the generated 6-layer ~360 MiB image through a loopback docker-registry.
//! `berth push` vs `skopeo copy` into an empty registry; `berth pull --no-unpack` vs
//! `skopeo copy docker://... oci:...` (download into a store only); `berth pull`
//! (downloaded and unpacked, ready to run) vs `podman pull`. Plus peak RSS of the pulls
//! (download only vs skopeo, unpacked vs podman).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Report, peak_rss_mib};
use crate::util;

/// A docker-registry on a free loopback port with its storage under `dir`.
struct LocalRegistry {
    child: Child,
    addr: String,
}

impl LocalRegistry {
    fn start(dir: &Path) -> Result<LocalRegistry> {
        let storage = dir.join("storage");
        fs::create_dir_all(&storage)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("registry.log"))?)
            .spawn()
            .context("starting docker-registry")?;
        let mut reg = LocalRegistry { child, addr };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if reg.child.try_wait()?.is_some() {
                bail!(
                    "docker-registry exited; see {}",
                    dir.join("registry.log").display()
                );
            }
            if answers(&reg.addr) {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = reg.child.kill();
        bail!("docker-registry did not answer on {}", reg.addr)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
}

fn sh(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    c
}

pub fn run(r: &mut Report) -> Result<()> {
    let berth = util::target_dir().join("release/berth");
    let work = Report::dir().join("registry");
    let src_root = work.join("src");
    let store = berth_image::Store::open(&src_root.join("images"))?;
    let local = "gen:latest";
    if store.resolve(local).is_err() {
        util::banner("bench registry: generating the 6-layer ~360 MiB image");
        berth_image::fixtures::generated_image(&store, local, 1, 6, 360 << 20)?;
    }
    let reg_dir = work.join("registry");
    let _ = fs::remove_dir_all(&reg_dir);
    fs::create_dir_all(&reg_dir)?;
    let reg = LocalRegistry::start(&reg_dir)?;
    let name = format!("{}/bench/gen:latest", reg.addr);
    store.tag(&name, store.resolve(local)?)?;
    let storage = reg_dir.join("storage");

    // push into an empty registry (the storage is wiped before every run)
    let empty = format!("rm -rf {}/docker", storage.display());
    r.hyperfine(
        "registry push 360 MiB / 6 layers to an empty loopback registry",
        &[
            (
                "berth",
                format!(
                    "{} --root {} push -q {name}",
                    berth.display(),
                    src_root.display()
                ),
            ),
            (
                "skopeo",
                format!(
                    "skopeo copy -q --dest-tls-verify=false oci:{}:{local} docker://{name}",
                    src_root.join("images").display()
                ),
            ),
        ],
        &["--prepare", &empty, "--prepare", &empty, "--runs", "5"],
    )?;
    // leave the image in the registry for the pulls
    util::run(&mut sh(&format!(
        "{} --root {} push -q {name}",
        berth.display(),
        src_root.display()
    )))?;

    let dst = work.join("dst");
    let sko = work.join("skopeo-oci");
    let pod = work.join("podman");
    let clean_dst = format!("rm -rf {} && sync", dst.display());
    let clean_sko = format!("rm -rf {} && sync", sko.display());
    r.hyperfine(
        "registry pull 360 MiB / 6 layers into the store (download only)",
        &[
            (
                "berth",
                format!(
                    "{} --root {} pull -q --no-unpack {name}",
                    berth.display(),
                    dst.display()
                ),
            ),
            (
                "skopeo",
                format!(
                    "skopeo copy -q --src-tls-verify=false docker://{name} oci:{}:gen",
                    sko.display()
                ),
            ),
        ],
        &[
            "--prepare",
            &clean_dst,
            "--prepare",
            &clean_sko,
            "--runs",
            "5",
        ],
    )?;

    let podman = format!(
        "podman --root {0}/root --runroot {0}/run --storage-driver overlay",
        pod.display()
    );
    let clean_pod = format!("{podman} rmi -af >/dev/null 2>&1; sync");
    let pulled = r.hyperfine(
        "registry pull 360 MiB / 6 layers, unpacked and ready to run",
        &[
            (
                "berth",
                format!(
                    "{} --root {} pull -q {name}",
                    berth.display(),
                    dst.display()
                ),
            ),
            (
                "podman",
                format!("{podman} pull -q --tls-verify=false docker://{name}"),
            ),
        ],
        &[
            "--prepare",
            &clean_dst,
            "--prepare",
            &clean_pod,
            "--runs",
            "3",
        ],
    );
    if let Err(e) = pulled {
        r.note(format!("registry: podman pull case failed: {e:#}"));
    }
    let _ = util::run(&mut sh(&clean_pod));

    // peak RSS of one download-only pull each
    util::run(&mut sh(&clean_dst))?;
    let ours = peak_rss_mib(&format!(
        "{} --root {} pull -q --no-unpack {name}",
        berth.display(),
        dst.display()
    ))?;
    util::run(&mut sh(&clean_sko))?;
    let skopeo = peak_rss_mib(&format!(
        "skopeo copy -q --src-tls-verify=false docker://{name} oci:{}:gen",
        sko.display()
    ))?;
    r.metric(
        "registry pull peak RSS (download only)",
        "MiB",
        ours,
        &[("skopeo", skopeo)],
    );
    // and of the whole pull, layers unpacked while the others download
    util::run(&mut sh(&clean_dst))?;
    let ours_full = peak_rss_mib(&format!(
        "{} --root {} pull -q {name}",
        berth.display(),
        dst.display()
    ))?;
    let _ = util::run(&mut sh(&clean_pod));
    match peak_rss_mib(&format!(
        "{podman} pull -q --tls-verify=false docker://{name}"
    )) {
        Ok(podman_full) => r.metric(
            "registry pull peak RSS (unpacked)",
            "MiB",
            ours_full,
            &[("podman", podman_full)],
        ),
        Err(e) => r.note(format!("registry: podman pull RSS failed: {e:#}")),
    }
    let _ = util::run(&mut sh(&clean_pod));
    drop(reg);
    Ok(())
}
