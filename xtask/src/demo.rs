//! `cargo xtask demo`: berth's main job, end to end, as far as it exists today.
//!
//! 1. the runtime: berth-oci runs the busybox bundle through create/start/state/delete;
//! 2. images: the busybox base image made locally, pushed to a real docker-registry on
//!    loopback, pulled into a fresh store, and read back by skopeo;
//! 3. containers: `berth run` in the foreground and detached;
//! 4. the builder: `examples/hello-web` built into an image and run with a published port;
//! 5. the orchestrator: `berth serve` + `berth apply -f examples/hello-web/deploy.yaml`,
//!    three replicas behind a Service answering on its virtual IP, then deleted.
//!
//! Everything lives in a temporary directory; the registry, the containers and
//! `berth serve` stop when the demo ends.

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
    // the store pulled into root-b holds busybox from here on
    let root = work.path().join("root-b");
    let state = work.path().join("state");
    let berth = |args: &[&str]| {
        let mut cmd = Command::new(bin.join("berth"));
        cmd.env("BERTH_ROOT", &root)
            .env("BERTH_STATE", &state)
            .env("BERTH_RUNTIME", bin.join("berth-oci"))
            .args(args);
        cmd
    };
    containers(&berth)?;
    build(&berth)?;
    let applied = apply(&berth, &state);
    // whatever happened, leave no container behind
    if let Ok(out) = berth(&["ps", "-aq"]).output() {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = berth(&["rm", "-f", id]).output();
        }
    }
    // the default bridge outlives its containers, like docker0; the demo's root goes
    let _ = berth(&["network", "rm", "bridge"]).output();
    applied?;

    println!(
        "\ndemo: done. Shown: a container run by berth-oci with its lifecycle; the busybox \
         image made locally, pushed to and pulled from a loopback registry; `berth run` \
         with exit codes; hello-web built by `berth build` and served on a published port; \
         the same image as a 3-replica Deployment behind a Service with `berth apply`."
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
    show(berth_in(&second).args(["tag", &remote, "busybox:latest"]))?;
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

fn containers(berth: &dyn Fn(&[&str]) -> Command) -> Result<()> {
    util::banner("containers: berth run, foreground and detached");
    show(&mut berth(&[
        "run",
        "--rm",
        "busybox",
        "echo",
        "hello from berth run",
    ]))?;
    let status = berth(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]).status()?;
    println!(
        "$ berth run --rm busybox sh -c 'exit 3'   -> exit status {}",
        status.code().unwrap_or(-1)
    );
    if status.code() != Some(3) {
        bail!("berth run did not return the container's exit status 3: {status}");
    }
    show(&mut berth(&[
        "run",
        "-d",
        "--name",
        "demo-sleeper",
        "busybox",
        "sleep",
        "60",
    ]))?;
    show(&mut berth(&["ps"]))?;
    show(&mut berth(&["rm", "-f", "demo-sleeper"]))?;
    Ok(())
}

/// One bounded HTTP GET against a loopback or demo-made address.
fn http_get(addr: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.")
        .then(|| out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn wait_http(addr: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(body) = http_get(addr) {
            return Ok(body);
        }
        if std::time::Instant::now() > deadline {
            bail!("nothing answered on {addr} within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn build(berth: &dyn Fn(&[&str]) -> Command) -> Result<()> {
    util::banner("build: examples/hello-web into an image, run with a published port");
    let ctx = util::workspace_root().join("examples/hello-web");
    let ctx = ctx.to_string_lossy();
    show(&mut berth(&["build", "-t", "hello-web:latest", &ctx]))?;
    show(&mut berth(&["images"]))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let publish = format!("127.0.0.1:{port}:8080");
    show(&mut berth(&[
        "run",
        "-d",
        "--name",
        "demo-web",
        "-p",
        &publish,
        "hello-web",
    ]))?;
    let body = wait_http(&format!("127.0.0.1:{port}"))?;
    println!("$ curl http://127.0.0.1:{port}/\n{}", body.trim_end());
    if !body.contains("built by berth") {
        bail!("the page served by hello-web lacks what its RUN step wrote: {body:?}");
    }
    show(&mut berth(&["rm", "-f", "demo-web"]))?;
    Ok(())
}

fn apply(berth: &dyn Fn(&[&str]) -> Command, state: &std::path::Path) -> Result<()> {
    util::banner("apply: examples/hello-web/deploy.yaml, 3 replicas behind a Service");
    println!("$ berth serve &");
    let serve = integration_tests::Serve::start(berth(&["serve"]), state)?;
    let result = (|| -> Result<()> {
        let manifest = util::workspace_root().join("examples/hello-web/deploy.yaml");
        let manifest = manifest.to_string_lossy();
        show(&mut berth(&["apply", "-f", &manifest]))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = berth(&["get", "deployment", "hello-web"]).output()?;
            if String::from_utf8_lossy(&out.stdout).contains(" 3/3 ") {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("hello-web did not become 3/3 ready within 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        show(&mut berth(&["get", "deployments"]))?;
        show(&mut berth(&["get", "pods", "-o", "wide"]))?;
        show(&mut berth(&["get", "services"]))?;
        let svc = berth(&["get", "service", "hello-web", "-o", "json"]).output()?;
        let svc: serde_json::Value = serde_json::from_slice(&svc.stdout)?;
        let ip = svc["status"]["clusterIP"]
            .as_str()
            .context("the Service has no virtual IP")?;
        let body = wait_http(&format!("{ip}:80"))?;
        println!(
            "$ curl http://{ip}/   (the Service's virtual IP)\n{}",
            body.trim_end()
        );
        show(&mut berth(&["delete", "-f", &manifest]))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !berth(&["ps", "-q"]).output()?.stdout.is_empty() {
            if std::time::Instant::now() > deadline {
                bail!("containers still running 60 s after delete");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        println!("-> deleted: no container left");
        Ok(())
    })();
    drop(serve);
    result
}
