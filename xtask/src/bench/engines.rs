//! Real engines on berth-oci against the same engines on runc (and crun): what a user of
//! podman or containerd sees when they switch the runtime.
//!
//! - `podman run --rm --network none busybox true` with `--runtime` berth-oci vs runc,
//!   paired in one hyperfine, on the host as it is (hybrid cgroups);
//! - the same with crun as well, all three inside a private mount namespace whose
//!   cgroup2 mount (/sys/fs/cgroup/unified) is unmounted: crun 1.8 refuses hybrid hosts;
//! - `ctr run --rm` with `--runc-binary` berth-oci vs runc on a private containerd.
//!
//! podman and containerd get private roots, run roots and sockets under
//! `/tmp/berth-bench-engines-PID` (podman wants a runroot under 50 characters), removed
//! at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Report;
use crate::util;

const IMAGE: &str = "docker.io/library/busybox:latest";

/// Scratch dir, containerd and cgroup parents: all removed on drop.
struct Work {
    dir: PathBuf,
    containerd: Option<Child>,
    cgroups: Vec<String>,
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(c) = &mut self.containerd {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for name in &self.cgroups {
            remove_cgroup_tree(name);
        }
        // containers/storage may leave its overlay home bind-mounted after an error
        let _ = Command::new("umount")
            .arg(self.dir.join("podman-root/overlay"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// rmdir of a cgroup and its children in every hierarchy (engines leave parents).
fn remove_cgroup_tree(name: &str) {
    fn rm(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    if let Ok(hs) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hs.flatten() {
            let d = h.path().join(name);
            if d.is_dir() {
                rm(&d);
            }
        }
    }
}

fn check(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn run(r: &mut Report) -> Result<()> {
    let ours = util::target_dir().join("release/berth-oci");
    if !ours.is_file() {
        bail!(
            "{} missing (cargo build --release -p berth-oci)",
            ours.display()
        );
    }
    let runc = integration_tests::require_cmd("runc");
    let crun = integration_tests::require_cmd("crun");
    let podman = integration_tests::require_cmd("podman");
    let skopeo = integration_tests::require_cmd("skopeo");
    let containerd = integration_tests::require_cmd("containerd");
    let ctr = integration_tests::require_cmd("ctr");

    // podman refuses a runroot longer than 50 characters: a short path under /tmp
    let dir = PathBuf::from(format!("/tmp/berth-bench-engines-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cg_podman = format!("berth-bench-podman-{}", std::process::id());
    let ns = format!("berth-bench-{}", std::process::id());
    let mut work = Work {
        dir: dir.clone(),
        containerd: None,
        cgroups: vec![cg_podman.clone(), ns.clone()],
    };

    // The busybox image, as an OCI layout and as an archive.
    let store = berth_image::Store::open(&dir.join("layout"))?;
    berth_image::fixtures::busybox_image(&store, IMAGE)?;
    let archive = dir.join("busybox.tar");
    berth_image::archive::save(
        &store,
        &[IMAGE.to_owned()],
        std::fs::File::create(&archive)?,
    )?;

    // --- podman ---
    let root = dir.join("podman-root");
    let runroot = dir.join("podman-runroot");
    let conf = dir.join("containers.conf");
    // default_ulimits = []: podman's default nofile exceeds this host's hard limit
    std::fs::create_dir_all(dir.join("podman-netconf"))?;
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\n[network]\nnetwork_config_dir = \"{}\"\n",
            dir.join("podman-netconf").display()
        ),
    )?;
    check(
        Command::new(&skopeo).args([
            "copy",
            "--quiet",
            &format!("oci:{}:{IMAGE}", dir.join("layout").display()),
            &format!(
                "containers-storage:[overlay@{}+{}]{IMAGE}",
                root.display(),
                runroot.display()
            ),
        ]),
        "skopeo copy into podman's storage",
    )?;
    // hyperfine runs the commands without a shell (-N); CONTAINERS_CONF through env(1)
    let podman_cmd = |rt: &Path| {
        format!(
            "env CONTAINERS_CONF={conf} {podman} --root {root} --runroot {runroot} --tmpdir {tmp} \
             --storage-driver overlay --cgroup-manager cgroupfs --runtime {rt} \
             run --rm --network none --cgroup-parent /{cg_podman} {IMAGE} true",
            conf = conf.display(),
            podman = podman.display(),
            root = root.display(),
            runroot = runroot.display(),
            tmp = dir.join("podman-tmp").display(),
            rt = rt.display(),
        )
    };
    let hf = ["-N", "--warmup", "3", "--runs", "30"];
    r.hyperfine(
        "engines: podman run --rm --network none busybox true",
        &[
            ("podman + berth-oci", podman_cmd(&ours)),
            ("podman + runc", podman_cmd(&runc)),
        ],
        &hf,
    )?;
    r.hyperfine_via(
        "engines: podman run --rm busybox true (no cgroup2 mount, for crun)",
        &[
            ("podman + berth-oci", podman_cmd(&ours)),
            ("podman + runc", podman_cmd(&runc)),
            ("podman + crun", podman_cmd(&crun)),
        ],
        &hf,
        |argv| {
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                "mount --make-rprivate / && umount /sys/fs/cgroup/unified && exec \"$@\"",
                "no-unified",
            ])
            .args(argv);
            c
        },
    )?;
    r.note(
        "engines: crun 1.8 refuses this hybrid host under podman (\"cgroups in hybrid mode \
         not supported\"), so a second podman case runs all three runtimes in a private mount \
         namespace without the cgroup2 mount",
    );

    // --- containerd ---
    let sock = dir.join("containerd.sock");
    let config = dir.join("containerd.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
            dir.join("containerd-root").display(),
            dir.join("containerd-state").display(),
            sock.display(),
            sock.display()
        ),
    )?;
    let log = std::fs::File::create(dir.join("containerd.log"))?;
    work.containerd = Some(
        Command::new(&containerd)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start containerd")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            bail!("containerd did not serve {} in 30 s", sock.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ctr_base = format!(
        "{} --address {} --namespace {ns}",
        ctr.display(),
        sock.display()
    );
    check(
        Command::new(&ctr)
            .arg("--address")
            .arg(&sock)
            .args(["--namespace", &ns, "images", "import"])
            .arg(&archive),
        "ctr images import",
    )?;
    let ctr_cmd = |label: &str, rt: &Path| {
        format!(
            "{ctr_base} run --rm --runc-binary {} --runc-root {} --fifo-dir {} {IMAGE} bench-{label} true",
            rt.display(),
            dir.join(format!("oci-{label}")).display(),
            dir.join("fifo").display(),
        )
    };
    r.hyperfine(
        "engines: ctr run --rm busybox true",
        &[
            ("ctr + berth-oci", ctr_cmd("berth", &ours)),
            ("ctr + runc", ctr_cmd("runc", &runc)),
        ],
        &hf,
    )?;
    r.note(
        "engines: podman 4.3 + conmon and containerd 1.6 (runc v2 shim) from Debian, each with \
         private roots; the engine's own work dominates these figures (bare runtime run is \
         20-30 ms of them)",
    );
    drop(work);
    Ok(())
}
