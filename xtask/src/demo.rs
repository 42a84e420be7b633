//! `cargo xtask demo`: berth's main job, end to end, as far as it exists today.
//!
//! 1. the runtime: berth-oci runs the busybox bundle through create/start/state/delete;
//! 2. images: the busybox base image made locally, pushed to a real docker-registry on
//!    loopback, pulled into a fresh store, and read back by skopeo;
//! 3. the builder's parser: `examples/hello-web/Dockerfile` as berth reads it.
//!
//! Everything lives in a temporary directory and the registry stops when the demo ends.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use integration_tests::registry::{Auth, Registry};

use crate::util;

pub fn run() -> Result<()> {
    crate::install::prerequisites()?;
    util::cargo(&["build", "--workspace", "--bins", "--locked"])?;
    let fixtures = crate::fixtures()?;
    let bin = util::target_dir().join("debug");
    let work = tempfile::Builder::new().prefix("berth-demo-").tempdir()?;

    runtime(
        &bin.join("berth-oci"),
        &fixtures.join("busybox-bundle"),
        work.path(),
    )?;
    images(&bin.join("berth"), work.path())?;
    build(&bin.join("berth"))?;

    println!(
        "\ndemo: done. Shown: a container run by berth-oci with its lifecycle; the busybox \
         image made locally, pushed to and pulled from a loopback registry; the hello-web \
         Dockerfile parsed. Still to come: `berth run`, `berth build`, `berth apply`."
    );
    Ok(())
}

/// Shows a command line, runs it and returns its stdout (also printed).
fn show(cmd: &mut Command) -> Result<String> {
    let args: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            // long temp and target paths say nothing to a reader
            if let Some((_, rest)) = a.rsplit_once("/berth-demo-") {
                format!("$DEMO/{}", rest.split_once('/').map_or("", |r| r.1))
            } else if a.starts_with('/') {
                a.rsplit('/').next().unwrap_or(&a).to_owned()
            } else {
                a.into_owned()
            }
        })
        .collect();
    println!("$ {}", args.join(" "));
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd.get_program(), out.status);
    }
    Ok(stdout)
}

fn runtime(berth_oci: &Path, fixture: &Path, work: &Path) -> Result<()> {
    util::banner("runtime: berth-oci runs an OCI bundle (busybox rootfs), like runc");
    let bundle = work.join("bundle");
    util::run(Command::new("cp").arg("-a").arg(fixture).arg(&bundle))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json"))?)?;
    config["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "echo \"hello from $(hostname), pid $$, as $(id -un)\"; cat /proc/self/status | grep -E '^Cap(Eff|Bnd)'"
    ]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    let root = work.join("oci-state");
    let oci = |args: &[&str]| {
        let mut cmd = Command::new(berth_oci);
        cmd.arg("--root").arg(&root).args(args);
        cmd
    };
    let bundle_arg = bundle.to_string_lossy().into_owned();
    // the created container keeps the stdio it was given until it runs: hand it ours
    // (capturing it in a pipe would wait for the container to exit)
    println!("$ berth-oci create --bundle $DEMO/bundle demo");
    util::run(&mut oci(&["create", "--bundle", &bundle_arg, "demo"]))?;
    let state = show(&mut oci(&["state", "demo"]))?;
    let status: serde_json::Value = serde_json::from_str(&state)?;
    println!(
        "-> after create the container is `{}`",
        status["status"].as_str().unwrap_or("?")
    );
    show(&mut oci(&["start", "demo"]))?;
    // start returns at once; the process prints, exits, and the state turns to stopped
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = oci(&["state", "demo"]).output()?;
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if state["status"] == "stopped" || std::time::Instant::now() > deadline {
            println!(
                "-> after start the container is `{}`",
                state["status"].as_str().unwrap_or("?")
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    show(&mut oci(&["delete", "demo"]))?;
    config["process"]["args"] = serde_json::json!(["sh", "-c", "exit 3"]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    println!("$ berth-oci run --bundle $DEMO/bundle demo2   (runs `sh -c 'exit 3'`)");
    let status = oci(&["run", "--bundle", &bundle_arg, "demo2"]).status()?;
    println!(
        "-> exit status {:?}: the container's becomes berth-oci's",
        status.code()
    );
    Ok(())
}

fn images(berth: &Path, work: &Path) -> Result<()> {
    util::banner("images: make busybox locally, push to a loopback registry, pull it back");
    let first = work.join("root-a");
    let store = berth_image::Store::open(&first.join("images"))?;
    berth_image::fixtures::busybox_image(&store, "busybox:latest")?;
    let berth_in = |root: &Path| {
        let mut cmd = Command::new(berth);
        cmd.env("BERTH_ROOT", root)
            .env("BERTH_STATE", work.join("state"));
        cmd
    };
    show(berth_in(&first).arg("images"))?;

    let registry = Registry::start(Auth::None).context("starting docker-registry on loopback")?;
    let remote = format!("{}/demo/busybox:1.0", registry.addr());
    println!("(docker-registry listening on {})", registry.addr());
    show(berth_in(&first).args(["tag", "busybox:latest", &remote]))?;
    show(berth_in(&first).args(["push", &remote]))?;

    let second = work.join("root-b");
    show(berth_in(&second).args(["pull", &remote]))?;
    show(berth_in(&second).arg("images"))?;
    println!("-> skopeo reads what berth pushed:");
    let inspect = show(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}} {{.Os}}/{{.Architecture}} layers={{len .Layers}}",
        &format!("docker://{remote}"),
    ]))?;
    if inspect.trim().is_empty() {
        bail!("skopeo printed nothing for {remote}");
    }
    Ok(())
}

fn build(berth: &Path) -> Result<()> {
    util::banner("build: examples/hello-web/Dockerfile as the parser reads it");
    let dockerfile = util::workspace_root().join("examples/hello-web/Dockerfile");
    let out = Command::new(berth)
        .args(["build", "--dump-ast", "-f"])
        .arg(&dockerfile)
        .arg(dockerfile.parent().unwrap_or(Path::new(".")))
        .output()?;
    if !out.status.success() {
        bail!(
            "berth build --dump-ast failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("$ berth build --dump-ast -f examples/hello-web/Dockerfile examples/hello-web");
    let ast: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let instructions = ast["instructions"].as_array().cloned().unwrap_or_default();
    if instructions.is_empty() {
        bail!(
            "the parser found no instructions in {}",
            dockerfile.display()
        );
    }
    println!(
        "-> {} instructions (JSON, shown one per line):",
        instructions.len()
    );
    for ins in &instructions {
        println!(
            "  line {:>2}: {:<10} {}",
            ins["start_line"],
            ins["name"].as_str().unwrap_or("?"),
            serde_json::to_string(&ins["command"]).unwrap_or_default()
        );
    }
    Ok(())
}
