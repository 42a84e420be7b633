//! `berth build` end to end: every instruction in a multi-stage Dockerfile, the image
//! run under berth-oci and podman, reproducibility, cache hits and misses,
//! .dockerignore, secrets kept out of layers and history, failing RUN steps.
//!
//! Each test has its own `--root` holding busybox from berth_image::fixtures, and
//! checks that nothing (mounts, containers, temporary directories) is left behind.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output};
use std::time::Instant;

use berth_image::{Platform, Store, fixtures, mount_overlay, unmount_overlay};
use integration_tests::{LeakCheck, TestRoots, bin_path, require_cmd, require_root, run_ok};

struct Env {
    roots: TestRoots,
    ctx: PathBuf,
}

impl Env {
    fn new() -> Env {
        require_root();
        let roots = TestRoots::new().unwrap();
        let store = Store::open(&roots.root().join("images")).unwrap();
        fixtures::busybox_image(&store, "busybox:latest").unwrap();
        let ctx = roots.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        Env { roots, ctx }
    }

    fn write(&self, rel: &str, data: &str) {
        let p = self.ctx.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// `berth build EXTRA CTX` under berth-oci, SOURCE_DATE_EPOCH unset.
    fn build_cmd(&self, extra: &[&str]) -> Command {
        let mut c = self.roots.berth();
        c.arg("build")
            .args(extra)
            .arg(&self.ctx)
            .env("BERTH_RUNTIME", bin_path("berth-oci"))
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn build(&self, extra: &[&str]) -> Output {
        self.build_cmd(extra).output().unwrap()
    }

    /// Starts `berth build EXTRA` and reads its log (at most 20 s) until a RUN step
    /// printed "started"; returns the build and the rest of its stderr.
    fn build_until_started(&self, extra: &[&str]) -> (Child, ChildStderr, Vec<u8>) {
        let mut child = self
            .build_cmd(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while !String::from_utf8_lossy(&seen).contains(" started\n") {
            assert!(Instant::now() < deadline, "RUN did not start");
            let n = err.read(&mut buf).unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        (child, err, seen)
    }

    fn store(&self) -> Store {
        Store::open(&self.roots.root().join("images")).unwrap()
    }

    fn leak_check(&self) -> LeakCheck {
        LeakCheck::new(&[self.roots.path().to_string_lossy().to_string()])
    }

    /// Nothing of the build's own is left: no temporary step dirs, no runtime state.
    fn assert_no_leftovers(&self) {
        let tmp = self.roots.root().join("build/tmp");
        if tmp.exists() {
            let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
            assert!(left.is_empty(), "temporary build dirs left: {left:?}");
        }
        let st = self.roots.state().join("build");
        if st.exists() {
            let left: Vec<_> = fs::read_dir(&st).unwrap().collect();
            assert!(left.is_empty(), "runtime state left: {left:?}");
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "berth build failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    stderr(&o)
}

/// A build that failed with exit code 1 and `what` in its log.
fn fails_with(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    assert!(stderr(o).contains(what), "{}", stderr(o));
}

/// Every layer of `tag` as (path, mode, content) lists, bottom first.
fn layers(store: &Store, tag: &str) -> Vec<Vec<(String, u32, Vec<u8>)>> {
    let img = store.image(tag, &Platform::default()).unwrap();
    let mut out = Vec::new();
    for l in img.manifest.layers() {
        let d = berth_image::desc_digest(l).unwrap();
        let r = berth_image::unpack::decompress(store.open_blob(&d).unwrap(), None).unwrap();
        let mut ar = tar::Archive::new(r);
        let mut v = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            v.push((p, mode, data));
        }
        out.push(v);
    }
    out
}

/// Every layer of `tag` as (path, content) lists, bottom first.
fn layer_entries(store: &Store, tag: &str) -> Vec<Vec<(String, Vec<u8>)>> {
    layers(store, tag)
        .into_iter()
        .map(|l| l.into_iter().map(|(p, _, d)| (p, d)).collect())
        .collect()
}

/// Every file of every layer of `tag` as (path, mode, content), bottom layer first.
fn layer_files(store: &Store, tag: &str) -> Vec<(String, u32, Vec<u8>)> {
    layers(store, tag).into_iter().flatten().collect()
}

/// The newest (mode, text) of `name` among `files`.
fn file_in(files: &[(String, u32, Vec<u8>)], name: &str) -> Option<(u32, String)> {
    files
        .iter()
        .rev()
        .find(|(p, _, _)| p.trim_end_matches('/') == name)
        .map(|(_, m, d)| (*m, String::from_utf8_lossy(d).into_owned()))
}

/// The layer digests of `tag`, bottom first.
fn layer_digests(store: &Store, tag: &str) -> Vec<String> {
    let img = store.image(tag, &Platform::default()).unwrap();
    img.manifest
        .layers()
        .iter()
        .map(|l| berth_image::desc_digest(l).unwrap().to_string())
        .collect()
}

/// The line reporting the outcome (CACHED or DONE) of the step whose title holds
/// `needle`.
fn step_status(log: &str, needle: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no step {needle:?} in:\n{log}"));
    let n = lines[i].split_whitespace().next().unwrap();
    lines[i + 1..]
        .iter()
        .find(|l| l.starts_with(&format!("{n} ")) && (l.contains("CACHED") || l.contains("DONE")))
        .unwrap_or_else(|| panic!("step {needle:?} has no outcome in:\n{log}"))
        .to_string()
}

/// The step whose title holds `needle` reported `outcome` (CACHED or DONE).
fn assert_step(log: &str, needle: &str, outcome: &str) {
    assert!(step_status(log, needle).contains(outcome), "{log}");
}

fn config_of(store: &Store, tag: &str) -> serde_json::Value {
    let img = store.image(tag, &Platform::default()).unwrap();
    serde_json::from_slice(&store.read_blob(&img.config_digest).unwrap()).unwrap()
}

/// Runs the image's entrypoint+cmd under berth-oci from an overlay of its snapshots.
fn run_with_berth_oci(env: &Env, tag: &str) -> String {
    let store = env.store();
    let img = store.image(tag, &Platform::default()).unwrap();
    let dir = env.roots.path().join("run-bundle");
    let lowers = store.prepare_rootfs(&img, &dir).unwrap();
    let rootfs = mount_overlay(&lowers, &dir).unwrap();
    let spec = berth_image::to_runtime_spec(&img.config, &rootfs).unwrap();
    let mut v = serde_json::to_value(&spec).unwrap();
    v["process"]["terminal"] = serde_json::json!(false);
    v["root"] = serde_json::json!({"path": rootfs, "readonly": false});
    fs::write(dir.join("config.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let id = integration_tests::unique_id("bbuild");
    let out = Command::new(bin_path("berth-oci"))
        .arg("--root")
        .arg(env.roots.state().join("oci"))
        .args(["run", "--bundle"])
        .arg(&dir)
        .arg(&id)
        .output()
        .unwrap();
    unmount_overlay(&dir).unwrap();
    assert!(
        out.status.success(),
        "container failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const EVERYTHING: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS builder
ARG GREETING=hello
ENV APP_HOME=/app
WORKDIR $APP_HOME
COPY src/ ./src/
COPY --chmod=0755 <<"EOF" /usr/local/bin/gen.sh
#!/bin/sh
echo "$1" > /app/out.txt
EOF
RUN --mount=type=cache,target=/cache gen.sh "$GREETING from builder" && cat src/a.txt >> out.txt && echo cached > /cache/c
ADD inner.tar.gz /app/unpacked/

FROM busybox AS unused
RUN exit 9

FROM busybox
LABEL org.example.k=v
MAINTAINER someone@example.com
EXPOSE 8080 53/udp
ENV GREETING=hi
USER root
WORKDIR /srv
COPY --from=builder /app/out.txt ./out.txt
COPY --from=builder /app/unpacked/ ./unpacked/
COPY --chown=65534:65534 src/a.txt owned.txt
SHELL ["/bin/sh", "-c"]
RUN echo "run in final: $GREETING" > run.txt
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s CMD true
ONBUILD RUN echo onbuild
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/out.txt /srv/run.txt /srv/unpacked/inner.txt; stat -c '%u:%g %n' /srv/owned.txt"]
"#;

fn everything_context(env: &Env) {
    env.write("Dockerfile", EVERYTHING);
    env.write("src/a.txt", "line from a.txt\n");
    // a gzip tar for ADD to unpack
    let mut b = tar::Builder::new(Vec::new());
    let data = b"inside the archive\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", &data[..]).unwrap();
    let raw = b.into_inner().unwrap();
    let mut gz = flate2_gz(&raw);
    fs::write(env.ctx.join("inner.tar.gz"), &mut gz).unwrap();
}

fn flate2_gz(raw: &[u8]) -> Vec<u8> {
    // gzip through the busybox applet (no flate2 dependency in this test crate)
    let mut child = Command::new("/bin/busybox")
        .args(["gzip", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn multi_stage_with_every_instruction_builds_and_runs() {
    let env = Env::new();
    let leaks = env.leak_check();
    everything_context(&env);
    let log = ok(env.build(&["-t", "every:1", "-t", "every:2"]));
    // the unused stage is not built
    assert!(!log.contains("exit 9"), "{log}");
    assert!(log.contains("[builder 2/5] COPY src/ ./src/"), "{log}");
    let store = env.store();
    assert_eq!(
        store.resolve("every:1").unwrap().digest(),
        store.resolve("every:2").unwrap().digest()
    );
    let cfg = config_of(&store, "every:1");
    let c = &cfg["config"];
    assert_eq!(c["Labels"]["org.example.k"], "v");
    assert_eq!(cfg["author"], "someone@example.com");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert!(c["ExposedPorts"]["53/udp"].is_object());
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["User"], "root");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(c["OnBuild"][0], "RUN echo onbuild");
    assert_eq!(c["Shell"][0], "/bin/sh");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hi")
    );
    assert_eq!(cfg["created"], "1970-01-01T00:00:00Z");
    // history: one entry per instruction, layers marked
    let hist = cfg["history"].as_array().unwrap();
    let layers = hist.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layers, cfg["rootfs"]["diff_ids"].as_array().unwrap().len());
    assert!(hist.iter().any(|h| {
        h["created_by"]
            .as_str()
            .unwrap()
            .starts_with("RUN /bin/sh -c echo")
    }));

    // the image runs under berth-oci and prints what RUN/COPY/ADD produced
    let out = run_with_berth_oci(&env, "every:1");
    assert_eq!(
        out,
        "hello from builder\nline from a.txt\nrun in final: hi\ninside the archive\n65534:65534 /srv/owned.txt\n",
    );
    // a child image runs the ONBUILD trigger first and does not inherit it
    let child = env.roots.path().join("Dockerfile.child");
    fs::write(&child, "FROM every:1\nRUN echo child\n").unwrap();
    let log = ok(env.build(&["-t", "child:1", "-f", child.to_str().unwrap()]));
    assert!(log.contains(" onbuild\n"), "{log}");
    assert!(log.contains(" child\n"), "{log}");
    assert!(config_of(&env.store(), "child:1")["config"]["OnBuild"].is_null());
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn built_image_runs_under_podman() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write(
        "Dockerfile",
        "FROM busybox\nWORKDIR /w\nCOPY msg.txt .\nRUN echo built-by-berth >> msg.txt\nCMD [\"cat\", \"/w/msg.txt\"]\n",
    );
    env.write("msg.txt", "from the context\n");
    ok(env.build(&["-t", "podtest:1"]));
    let skopeo = require_cmd("skopeo");
    let podman = require_cmd("podman");
    require_cmd("runc");
    let archive = env.roots.path().join("img.tar");
    run_ok(
        &skopeo,
        [
            "copy",
            &format!(
                "oci:{}:podtest:1",
                env.roots.root().join("images").display()
            ),
            &format!("oci-archive:{}:podtest:1", archive.display()),
        ],
    )
    .unwrap();
    let proot = env.roots.path().join("podman-root");
    let prun = env.roots.path().join("podman-run");
    let conf = env.roots.path().join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
    )
    .unwrap();
    let podman_cmd = |args: &[&str]| {
        let out = Command::new(&podman)
            .env("CONTAINERS_CONF", &conf)
            .args(["--root", proot.to_str().unwrap()])
            .args(["--runroot", prun.to_str().unwrap()])
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    podman_cmd(&["load", "-i", archive.to_str().unwrap()]);
    let out = podman_cmd(&["run", "--rm", "--network", "none", "localhost/podtest:1"]);
    assert_eq!(out, "from the context\nbuilt-by-berth\n");
    let _ = podman_cmd(&["rmi", "-a", "-f"]);
    leaks.assert_clean();
}

const REPRO: &str = "FROM busybox\nARG V=1\nWORKDIR /app\nCOPY . .\nRUN echo v=$V > v.txt && mkdir -p d && touch d/f && rm -f rm-me.txt\nCMD [\"cat\", \"v.txt\"]\n";

#[test]
fn same_dockerfile_and_context_give_the_same_digest() {
    let a = Env::new();
    let b = Env::new();
    let leaks = a.leak_check();
    for e in [&a, &b] {
        e.write("Dockerfile", REPRO);
        e.write("x/y.txt", "y\n");
        e.write("rm-me.txt", "gone\n");
    }
    ok(a.build(&["-t", "r:1"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(b.build(&["-t", "r:1", "--no-cache"]));
    ok(a.build(&["-t", "r:2", "--no-cache"]));
    let da = a.store().resolve("r:1").unwrap().digest().clone();
    let db = b.store().resolve("r:1").unwrap().digest().clone();
    let da2 = a.store().resolve("r:2").unwrap().digest().clone();
    assert_eq!(da, db);
    assert_eq!(da, da2);
    // the removed file is an OCI whiteout in the RUN layer
    let layers = layer_entries(&a.store(), "r:1");
    let last = layers.last().unwrap();
    let names: Vec<&str> = last.iter().map(|(p, _)| p.as_str()).collect();
    assert!(names.contains(&"app/.wh.rm-me.txt"), "{names:?}");
    // SOURCE_DATE_EPOCH changes the timestamps, hence the digest
    let with_epoch = ok(a.build(&["-t", "r:3", "--build-arg", "SOURCE_DATE_EPOCH=946684800"]));
    assert!(with_epoch.contains("CACHED"), "{with_epoch}");
    let cfg = config_of(&a.store(), "r:3");
    assert_eq!(cfg["created"], "2000-01-01T00:00:00Z");
    leaks.assert_clean();
}

#[test]
fn cache_hits_and_one_changed_file_rebuilds_from_its_step() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY one.txt /one.txt\nRUN echo step-two > /two\nCOPY two.txt /two.txt\nRUN cat /one.txt /two.txt > /both\n",
    );
    env.write("one.txt", "1\n");
    env.write("two.txt", "2\n");
    let first = ok(env.build(&["-t", "c:1"]));
    assert!(!first.contains("CACHED"), "{first}");
    let t = Instant::now();
    let again = ok(env.build(&["-t", "c:2"]));
    let took = t.elapsed();
    assert_eq!(again.matches("CACHED").count(), 4, "{again}");
    // nothing ran: only FROM and the export report DONE
    assert_eq!(again.matches("DONE").count(), 2, "{again}");
    assert!(took.as_millis() < 2000, "cached rebuild took {took:?}");
    assert_eq!(
        env.store().resolve("c:1").unwrap().digest(),
        env.store().resolve("c:2").unwrap().digest()
    );
    // change the second copied file: steps 2 and 3 cached, 4 and 5 rerun
    env.write("two.txt", "two changed\n");
    let changed = ok(env.build(&["-t", "c:3"]));
    assert_step(&changed, "COPY one.txt", "CACHED");
    assert_step(&changed, "RUN echo step-two", "CACHED");
    assert_step(&changed, "COPY two.txt", "DONE");
    assert_step(&changed, "RUN cat", "DONE");
    let layers = layer_entries(&env.store(), "c:3");
    let both = layers
        .last()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "both")
        .unwrap();
    assert_eq!(both.1, b"1\ntwo changed\n");
    // --no-cache reruns everything
    let nocache = ok(env.build(&["-t", "c:4", "--no-cache"]));
    assert!(!nocache.contains("CACHED"), "{nocache}");
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn dockerignore_excludes_files() {
    let env = Env::new();
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY . /ctx/\nRUN find /ctx | sort > /listing\n",
    );
    env.write(".dockerignore", "# comment\n*.log\nsecret/\n!keep.log\n");
    env.write("app.txt", "app\n");
    env.write("debug.log", "log\n");
    env.write("keep.log", "kept\n");
    env.write("secret/key", "k\n");
    ok(env.build(&["-t", "ign:1"]));
    let layers = layer_entries(&env.store(), "ign:1");
    let listing = layers
        .last()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "listing")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .unwrap();
    assert!(listing.contains("/ctx/app.txt"), "{listing}");
    assert!(listing.contains("/ctx/keep.log"), "{listing}");
    assert!(listing.contains("/ctx/Dockerfile"), "{listing}");
    assert!(!listing.contains("debug.log"), "{listing}");
    assert!(!listing.contains("secret"), "{listing}");
    // changing an ignored file does not invalidate the cache
    env.write("debug.log", "changed\n");
    let again = ok(env.build(&["-t", "ign:2"]));
    assert_eq!(again.matches("CACHED").count(), 2, "{again}");
    // <Dockerfile>.dockerignore wins over the context's
    let df = env.roots.path().join("Special.Dockerfile");
    fs::write(
        &df,
        "FROM busybox\nCOPY . /ctx/\nRUN find /ctx | sort > /listing\n",
    )
    .unwrap();
    fs::write(
        env.roots.path().join("Special.Dockerfile.dockerignore"),
        "app.txt\n",
    )
    .unwrap();
    ok(env.build(&["-t", "ign:3", "-f", df.to_str().unwrap()]));
    let layers = layer_entries(&env.store(), "ign:3");
    let listing = layers
        .last()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "listing")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .unwrap();
    assert!(listing.contains("/ctx/debug.log"), "{listing}");
    assert!(!listing.contains("app.txt"), "{listing}");
    // naming an ignored file fails clearly
    env.write("Dockerfile", "FROM busybox\nCOPY debug.log /\n");
    let out = env.build(&[]);
    fails_with(&out, "debug.log: not found");
}

#[test]
fn secrets_never_reach_layers_or_history() {
    let env = Env::new();
    let leaks = env.leak_check();
    let secret = "s3cr3t-value-4242";
    let sfile = env.roots.path().join("token.txt");
    fs::write(&sfile, secret).unwrap();
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=token wc -c < /run/secrets/token > /len && md5sum /run/secrets/token | cut -c1-8 > /sum\nRUN --mount=type=secret,id=token,target=/etc/tok test -s /etc/tok && echo ok > /ok\n",
    );
    let log = ok(env.build(&[
        "-t",
        "sec:1",
        "--secret",
        &format!("id=token,src={}", sfile.display()),
    ]));
    assert!(!log.contains(secret));
    let store = env.store();
    let layers = layer_entries(&store, "sec:1");
    let new: Vec<&(String, Vec<u8>)> = layers[1..].iter().flatten().collect();
    let len = new.iter().find(|(p, _)| p == "len").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&len.1).trim(),
        secret.len().to_string()
    );
    assert!(new.iter().any(|(p, _)| p == "ok"));
    for (p, d) in &new {
        assert!(
            !p.contains("secrets") && !p.contains("etc/tok"),
            "mount point {p} in a layer"
        );
        assert!(
            !String::from_utf8_lossy(d).contains(secret),
            "secret in layer file {p}"
        );
    }
    // and not in any blob of the store (config, history, manifests)
    for d in store.list_blobs().unwrap() {
        let bytes = store.read_blob(&d).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "secret in blob {d}"
        );
    }
    // a missing required secret fails
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=other,required=true cat /run/secrets/other\n",
    );
    let out = env.build(&[]);
    fails_with(&out, "secret other is required");
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn failing_run_reports_exit_code_and_leaves_nothing() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY f /f\nRUN echo before-the-failure && echo to-stderr >&2 && exit 3\nRUN echo never\n",
    );
    env.write("f", "f\n");
    let out = env.build(&["-t", "fail:1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("before-the-failure"), "{err}");
    assert!(err.contains("to-stderr"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(!err.contains("never"), "{err}");
    assert!(
        env.store().resolve("fail:1").is_err(),
        "failed build was tagged"
    );
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn interrupted_build_leaves_nothing() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write("Dockerfile", "FROM busybox\nRUN echo started && sleep 12\n");
    let (mut child, mut err, mut seen) = env.build_until_started(&["-t", "int:1"]);
    let t = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    err.read_to_end(&mut seen).unwrap();
    assert!(
        t.elapsed().as_secs() < 10,
        "interrupt took {:?}: {}",
        t.elapsed(),
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(status.code(), Some(1), "{}", String::from_utf8_lossy(&seen));
    assert!(String::from_utf8_lossy(&seen).contains("interrupted"));
    assert!(env.store().resolve("int:1").is_err());
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn output_archives_load_elsewhere() {
    let env = Env::new();
    env.write("Dockerfile", "FROM busybox\nCOPY a /a\n");
    env.write("a", "a\n");
    let oci = env.roots.path().join("out-oci.tar");
    let dock = env.roots.path().join("out-docker.tar");
    ok(env.build(&[
        "-t",
        "outp:1",
        "--output",
        &format!("type=oci,dest={}", oci.display()),
        "--output",
        &format!("type=docker,dest={}", dock.display()),
    ]));
    let skopeo = require_cmd("skopeo");
    let dest = env.roots.path().join("layout");
    run_ok(
        &skopeo,
        [
            "copy",
            &format!("oci-archive:{}:outp:1", oci.display()),
            &format!("oci:{}:x", dest.display()),
        ],
    )
    .unwrap();
    let b = TestRoots::new().unwrap();
    let out = b
        .berth()
        .args(["load", "-i", dock.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Path::new(&dest);
}

#[test]
fn run_mounts_cache_bind_tmpfs() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=cache,target=/c,id=k echo x >> /c/count && wc -l < /c/count > /count\n\
         RUN --mount=type=bind,source=data.txt,target=/mnt/data.txt cat /mnt/data.txt > /copied\n\
         RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs-ok > /tmpfs\n\
         RUN grep -q localhost /etc/hosts && echo hosts-ok > /hosts-ok\n",
    );
    env.write("data.txt", "bound from the context\n");
    ok(env.build(&["-t", "m:1"]));
    ok(env.build(&["-t", "m:2", "--no-cache"]));
    let layers = layer_entries(&env.store(), "m:2");
    let files: Vec<&(String, Vec<u8>)> = layers[1..].iter().flatten().collect();
    let get = |n: &str| {
        files
            .iter()
            .find(|(p, _)| p == n)
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_else(|| panic!("{n} missing from layers"))
    };
    // the cache directory persisted between the two builds
    assert_eq!(get("count").trim(), "2");
    assert_eq!(get("copied"), "bound from the context\n");
    assert_eq!(get("tmpfs"), "tmpfs-ok\n");
    assert_eq!(get("hosts-ok"), "hosts-ok\n");
    assert!(
        !files
            .iter()
            .any(|(p, _)| p == "etc/hosts" || p == "etc/resolv.conf")
    );
    for (p, _) in &files {
        assert!(
            !p.starts_with("c/") && !p.starts_with("mnt") && !p.starts_with("scratch"),
            "mount point {p} in a layer"
        );
    }
    // changing the bound file invalidates its step
    env.write("data.txt", "changed\n");
    let log = ok(env.build(&["-t", "m:3"]));
    assert_eq!(log.matches("CACHED").count(), 1, "{log}");
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn missing_base_is_pulled_and_pull_refreshes() {
    let env = Env::new();
    let reg = integration_tests::registry::Registry::start(integration_tests::registry::Auth::None)
        .unwrap();
    let image = format!("{}/lib/busybox:1", reg.addr());
    // push busybox from another root
    let other = TestRoots::new().unwrap();
    let store = Store::open(&other.root().join("images")).unwrap();
    fixtures::busybox_image(&store, &image).unwrap();
    let out = other.berth().args(["push", "-q", &image]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    env.write(
        "Dockerfile",
        &format!("FROM {image}\nRUN echo pulled-ok > /p\n"),
    );
    let log = ok(env.build(&["-t", "pulled:1"]));
    assert!(log.contains(&format!("pulling {image}")), "{log}");
    assert!(env.store().resolve(&image).is_ok());
    // present now: no pull without --pull, a pull with it
    let log = ok(env.build(&["-t", "pulled:2"]));
    assert!(!log.contains("pulling"), "{log}");
    let log = ok(env.build(&["-t", "pulled:3", "--pull"]));
    assert!(log.contains(&format!("pulling {image}")), "{log}");
    assert_eq!(log.matches("CACHED").count(), 1, "{log}");
    // an image nobody has fails clearly
    env.write(
        "Dockerfile",
        &format!("FROM {}/nope/nothing:1\n", reg.addr()),
    );
    let out = env.build(&[]);
    fails_with(&out, "pulling base image");
}

#[test]
fn next_build_sweeps_what_a_killed_build_left() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write("Dockerfile", "FROM busybox\nRUN echo started && sleep 60\n");
    let (mut child, _err, _) = env.build_until_started(&[]);
    // no chance to clean up
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !leaks.leaks().is_empty(),
        "a killed build should leave its step behind"
    );
    env.write("Dockerfile", "FROM busybox\nRUN true\n");
    ok(env.build(&[]));
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn target_builds_only_what_it_needs() {
    let env = Env::new();
    env.write(
        "Dockerfile",
        "FROM busybox AS base\nRUN echo base > /base\n\
         FROM base AS dev\nRUN echo dev > /dev-marker\n\
         FROM busybox AS other\nRUN echo other > /other\n\
         FROM dev AS final\nRUN echo final > /final\n",
    );
    let log = ok(env.build(&["--target", "dev", "-t", "t:dev"]));
    assert!(log.contains("[dev 2/2] RUN echo dev"), "{log}");
    assert!(
        !log.contains("echo other") && !log.contains("echo final"),
        "{log}"
    );
    let files: Vec<String> = layer_entries(&env.store(), "t:dev")
        .into_iter()
        .flatten()
        .map(|(p, _)| p)
        .collect();
    assert!(files.contains(&"base".to_string()) && files.contains(&"dev-marker".to_string()));
    // the default target is the last stage, built on dev (cached) without `other`
    let log = ok(env.build(&["-t", "t:final"]));
    assert!(!log.contains("echo other"), "{log}");
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    let out = env.build(&["--target", "nope"]);
    fails_with(&out, "nope");
}

#[test]
fn add_fetches_http_urls_with_checksum() {
    let env = Env::new();
    let www = env.roots.path().join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("hello.txt"), "served over http\n").unwrap();
    // an archive: kept as is unless --unpack=true
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(7);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", &b"inside\n"[..])
        .unwrap();
    fs::write(www.join("a.tar.gz"), flate2_gz(&b.into_inner().unwrap())).unwrap();
    let port = integration_tests::registry::free_port().unwrap();
    let mut httpd = Command::new("/bin/busybox")
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
        .arg(&www)
        .spawn()
        .unwrap();
    // wait until it answers
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "busybox httpd did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    // sha256 of the served file
    let sum = Command::new("/bin/busybox")
        .args(["sha256sum"])
        .arg(www.join("hello.txt"))
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    env.write(
        "Dockerfile",
        &format!(
            "FROM busybox\nADD --checksum=sha256:{hex} {url} /fetched/\nRUN --network=host cat /fetched/hello.txt > /copy\n\
             ADD http://127.0.0.1:{port}/a.tar.gz /packed/\nADD --unpack=true http://127.0.0.1:{port}/a.tar.gz /unpacked/\n"
        ),
    );
    let r = env.build(&["-t", "url:1"]);
    let files: Vec<(String, Vec<u8>)> = if r.status.success() {
        layer_entries(&env.store(), "url:1")
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    // a wrong checksum fails
    env.write(
        "Dockerfile",
        &format!(
            "FROM busybox\nADD --checksum=sha256:{} {url} /x\n",
            "0".repeat(64)
        ),
    );
    let bad = env.build(&[]);
    let _ = httpd.kill();
    let _ = httpd.wait();
    ok(r);
    let get = |n: &str| files.iter().find(|(p, _)| p == n).map(|(_, d)| d.clone());
    assert_eq!(get("fetched/hello.txt").unwrap(), b"served over http\n");
    assert_eq!(get("copy").unwrap(), b"served over http\n");
    assert!(get("packed/a.tar.gz").is_some() && get("packed/inner.txt").is_none());
    assert_eq!(get("unpacked/inner.txt").unwrap(), b"inside\n");
    fails_with(&bad, "checksum mismatch");
}

#[test]
fn run_bind_mount_from_another_stage() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write(
        "Dockerfile",
        "FROM busybox AS src\nRUN mkdir -p /data && echo from-stage > /data/f\n\
         FROM busybox\nRUN --mount=type=bind,from=src,source=/data,target=/mnt/src cat /mnt/src/f > /got\n",
    );
    ok(env.build(&["-t", "bindfrom:1"]));
    let files: Vec<(String, Vec<u8>)> = layer_entries(&env.store(), "bindfrom:1")
        .into_iter()
        .flatten()
        .collect();
    let got = files.iter().find(|(p, _)| p == "got").unwrap();
    assert_eq!(got.1, b"from-stage\n");
    assert!(!files.iter().any(|(p, _)| p.starts_with("mnt/src")));
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn copy_parents_exclude_and_heredoc_expansion() {
    let env = Env::new();
    let leaks = env.leak_check();
    env.write(
        "Dockerfile",
        r#"FROM busybox
ARG WHO=world
ENV GREETING=hello
COPY --exclude=**/*.md x/sub /excl/
COPY --parents x/a.txt y/a.txt /parents/
COPY --parents x/./sub/ /pivot/
COPY --parents */a.txt /glob/
COPY --exclude=*.md hom* /hom/
COPY <<EOF /expanded.txt
$GREETING ${WHO} 'single $WHO' "double"
EOF
COPY <<'EOF' /literal.txt
$GREETING ${WHO}
EOF
COPY --chmod=0700 <<EOF /script.sh
#!/bin/sh
echo \$HOME
EOF
"#,
    );
    env.write("x/a.txt", "xa\n");
    env.write("y/a.txt", "ya\n");
    env.write("x/sub/deep/b.txt", "b\n");
    env.write("x/sub/skip.md", "md\n");
    env.write("home.txt", "home\n");
    env.write("home.md", "not copied\n");
    ok(env.build(&["-t", "par:1", "--build-arg", "WHO=berth"]));
    let files = layer_files(&env.store(), "par:1");
    let text = |n: &str| file_in(&files, n).map(|(_, t)| t);
    // --parents keeps the whole source path, or what follows a /./ pivot
    assert_eq!(text("parents/x/a.txt").unwrap(), "xa\n");
    assert_eq!(text("parents/y/a.txt").unwrap(), "ya\n");
    assert_eq!(text("pivot/sub/deep/b.txt").unwrap(), "b\n");
    assert_eq!(text("pivot/sub/skip.md").unwrap(), "md\n");
    assert!(text("pivot/x/sub/skip.md").is_none());
    assert_eq!(text("glob/x/a.txt").unwrap(), "xa\n");
    assert_eq!(text("glob/y/a.txt").unwrap(), "ya\n");
    // --exclude, below a directory source and on what a wildcard found
    assert_eq!(text("excl/deep/b.txt").unwrap(), "b\n");
    assert!(text("excl/skip.md").is_none());
    assert_eq!(text("hom/home.txt").unwrap(), "home\n");
    assert!(text("hom/home.md").is_none());
    // an unquoted heredoc delimiter expands variables and keeps quotes; a quoted one
    // is taken literally
    assert_eq!(
        text("expanded.txt").unwrap(),
        "hello berth 'single berth' \"double\"\n"
    );
    assert_eq!(text("literal.txt").unwrap(), "$GREETING ${WHO}\n");
    let (mode, script) = file_in(&files, "script.sh").unwrap();
    assert_eq!(mode & 0o7777, 0o700);
    assert_eq!(script, "#!/bin/sh\necho $HOME\n");
    // an excluded file changing leaves its step cached; the step copying it reruns
    env.write("x/sub/skip.md", "changed\n");
    let log = ok(env.build(&["-t", "par:2", "--build-arg", "WHO=berth"]));
    assert_step(&log, "COPY --exclude=**/*.md", "CACHED");
    assert_step(&log, "COPY --parents x/./sub/", "DONE");
    // the variable's value is part of the heredoc step's cache key
    let log = ok(env.build(&["-t", "par:3", "--build-arg", "WHO=other"]));
    assert_step(&log, "COPY <<EOF /expanded.txt", "DONE");
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn copy_link_layers_survive_a_base_change() {
    let env = Env::new();
    let leaks = env.leak_check();
    // a second base: busybox plus one layer
    let base2 = env.roots.path().join("Dockerfile.base2");
    fs::write(&base2, "FROM busybox\nRUN echo two > /base2\n").unwrap();
    ok(env.build(&["-t", "base2:1", "-f", base2.to_str().unwrap()]));
    env.write(
        "Dockerfile",
        "ARG BASE=busybox\nFROM ${BASE}\n\
         COPY --link app.txt /app/app.txt\n\
         COPY --link --chown=nobody --chmod=0640 app.txt /app/owned.txt\n\
         COPY plain.txt /app/plain.txt\n\
         RUN cat /app/app.txt > /app/seen && stat -c '%u %a' /app/owned.txt >> /app/seen\n",
    );
    env.write("app.txt", "linked\n");
    env.write("plain.txt", "plain\n");
    ok(env.build(&["-t", "link:1"]));
    let log = ok(env.build(&["-t", "link:2", "--build-arg", "BASE=base2:1"]));
    // the linked steps are reused on the new base; what is not linked reruns
    assert_step(&log, "COPY --link app.txt", "CACHED");
    assert_step(&log, "COPY --link --chown", "CACHED");
    assert_step(&log, "COPY plain.txt", "DONE");
    assert_step(&log, "RUN cat", "DONE");
    let store = env.store();
    let l1 = layer_digests(&store, "link:1");
    let l2 = layer_digests(&store, "link:2");
    assert_eq!(l2.len(), l1.len() + 1);
    // the same blobs for the two linked steps on either base
    assert_eq!(
        l1[l1.len() - 4..l1.len() - 2],
        l2[l2.len() - 4..l2.len() - 2]
    );
    // a linked layer holds only what was copied
    let img = store.image("link:2", &Platform::default()).unwrap();
    let d = berth_image::desc_digest(&img.manifest.layers()[l2.len() - 4]).unwrap();
    let r = berth_image::unpack::decompress(store.open_blob(&d).unwrap(), None).unwrap();
    let names: Vec<String> = tar::Archive::new(r)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app/", "app/app.txt"]);
    // the image has the new base and the linked files, owner and mode applied
    let files = layer_files(&store, "link:2");
    assert_eq!(file_in(&files, "base2").unwrap().1, "two\n");
    assert_eq!(
        file_in(&files, "app/seen").unwrap().1,
        "linked\n65534 640\n"
    );
    leaks.assert_clean();
    env.assert_no_leftovers();
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A server process in its own process group, killed with the group (git daemon forks)
/// and reaped when dropped, also when an assertion fails.
struct Server(std::process::Child);

impl Server {
    fn spawn(c: &mut Command) -> Server {
        use std::os::unix::process::CommandExt;
        Server(c.process_group(0).spawn().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test made; no memory is involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made with openssl:
/// returns (CA certificate, server certificate, server key).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = require_cmd("openssl");
    fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        &openssl,
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=berth test CA",
            ],
        ]
        .concat(),
    )
    .unwrap();
    run_ok(
        &openssl,
        [
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                &p("srv.key"),
                "-out",
                &p("srv.csr"),
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )
    .unwrap();
    fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_ok(
        &openssl,
        [
            "x509",
            "-req",
            "-in",
            &p("srv.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("srv.pem"),
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
        ],
    )
    .unwrap();
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

#[test]
fn add_fetches_https_urls_verifying_the_server() {
    let env = Env::new();
    let leaks = env.leak_check();
    let (ca, cert, key) = test_pki(&env.roots.path().join("pki"));
    let www = env.roots.path().join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("hello.txt"), "served over https\n").unwrap();
    let port = integration_tests::registry::free_port().unwrap();
    // openssl's own small web server: files relative to its working directory
    let srv = Server::spawn(
        Command::new(require_cmd("openssl"))
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .current_dir(&www)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    );
    wait_port(port, "openssl s_server");
    let url = format!("https://127.0.0.1:{port}/hello.txt");
    let sum = run_ok(
        "/bin/busybox",
        ["sha256sum", www.join("hello.txt").to_str().unwrap()],
    )
    .unwrap();
    let hex = sum.split_whitespace().next().unwrap().to_string();
    let build = |dockerfile: String, trust: bool| {
        env.write("Dockerfile", &dockerfile);
        let mut c = env.build_cmd(&["-t", "https:1"]);
        c.env_remove("SSL_CERT_DIR");
        if trust {
            c.env("SSL_CERT_FILE", &ca);
        } else {
            c.env_remove("SSL_CERT_FILE");
        }
        c.output().unwrap()
    };
    ok(build(
        format!("FROM busybox\nADD --checksum=sha256:{hex} {url} /fetched/\n"),
        true,
    ));
    let files = layer_files(&env.store(), "https:1");
    let (mode, text) = file_in(&files, "fetched/hello.txt").unwrap();
    assert_eq!(text, "served over https\n");
    assert_eq!(mode & 0o7777, 0o600);
    // a wrong checksum is a clear error
    let bad = build(
        format!(
            "FROM busybox\nADD --checksum=sha256:{} {url} /x\n",
            "0".repeat(64)
        ),
        true,
    );
    fails_with(&bad, "checksum mismatch");
    // the server is verified: without the test CA the build fails on the certificate
    let untrusted = build(format!("FROM busybox\nADD {url} /y\n"), false);
    fails_with(&untrusted, "certificate not trusted");
    drop(srv);
    leaks.assert_clean();
    env.assert_no_leftovers();
}

#[test]
fn add_clones_git_repositories() {
    let env = Env::new();
    let leaks = env.leak_check();
    let git = require_cmd("git");
    let base = env.roots.path().join("git");
    let repo = base.join("repo.git");
    fs::create_dir_all(repo.join("sub")).unwrap();
    let g = |args: &[&str]| {
        run_ok(
            &git,
            [
                &[
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@example.com",
                    "-C",
                    repo.to_str().unwrap(),
                ][..],
                args,
            ]
            .concat(),
        )
        .unwrap()
    };
    g(&["init", "-q", "-b", "main"]);
    fs::write(repo.join("a.txt"), "v1\n").unwrap();
    fs::write(repo.join("sub/s.txt"), "in sub\n").unwrap();
    g(&["add", "-A"]);
    g(&["commit", "-qm", "one"]);
    g(&["tag", "-a", "v1", "-m", "release one"]);
    let first = g(&["rev-parse", "HEAD"]).trim().to_string();
    fs::write(repo.join("a.txt"), "v2\n").unwrap();
    g(&["commit", "-qam", "two"]);
    let port = integration_tests::registry::free_port().unwrap();
    let daemon = Server::spawn(
        Command::new(&git)
            .arg("daemon")
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(&base)
            .stderr(std::process::Stdio::null()),
    );
    wait_port(port, "git daemon");
    let url = format!("git://127.0.0.1:{port}/repo.git");
    env.write(
        "Dockerfile",
        &format!(
            "FROM busybox\n\
             ADD {url}#v1 /src/\n\
             ADD --keep-git-dir {url} /full/\n\
             ADD {url}#main:sub /sub/\n\
             ADD {url}#{first} /bysha/\n\
             RUN cat /src/a.txt /full/a.txt /sub/s.txt /bysha/a.txt > /seen && test -f /full/.git/HEAD && test ! -e /src/.git && echo kept >> /seen\n"
        ),
    );
    ok(env.build(&["-t", "git:1"]));
    let files = layer_files(&env.store(), "git:1");
    assert_eq!(
        file_in(&files, "seen").unwrap().1,
        "v1\nv2\nin sub\nv1\nkept\n"
    );
    assert!(files.iter().all(|(p, _, _)| !p.starts_with("src/.git")));
    assert!(file_in(&files, "sub/s.txt").is_some() && file_in(&files, "sub/a.txt").is_none());
    // unchanged refs: every step cached, nothing cloned
    let log = ok(env.build(&["-t", "git:2"]));
    assert_eq!(log.matches("CACHED").count(), 5, "{log}");
    // a new commit on main reruns what follows main, not the tag
    fs::write(repo.join("a.txt"), "v3\n").unwrap();
    g(&["commit", "-qam", "three"]);
    let log = ok(env.build(&["-t", "git:3"]));
    assert_step(&log, "#v1 /src/", "CACHED");
    assert_step(&log, "--keep-git-dir", "DONE");
    let files = layer_files(&env.store(), "git:3");
    assert!(file_in(&files, "seen").unwrap().1.starts_with("v1\nv3\n"));
    // a ref the remote does not have is a clear error
    env.write("Dockerfile", &format!("FROM busybox\nADD {url}#nope /n/\n"));
    let out = env.build(&[]);
    fails_with(&out, "ref nope not found");
    drop(daemon);
    leaks.assert_clean();
    env.assert_no_leftovers();
}

/// A static probe that asks the agent at $SSH_AUTH_SOCK for its identities
/// (SSH_AGENTC_REQUEST_IDENTITIES) and prints the answer's type, the key count and
/// the first key's comment.
const AGENT_PROBE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
static unsigned be32(const unsigned char *p) { return (unsigned)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static int readn(int fd, unsigned char *b, size_t n) {
    size_t got = 0;
    while (got < n) { ssize_t r = read(fd, b + got, n - got); if (r <= 0) return -1; got += r; }
    return 0;
}
int main(void) {
    const char *path = getenv("SSH_AUTH_SOCK");
    if (!path) { puts("no SSH_AUTH_SOCK"); return 2; }
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 3; }
    unsigned char req[5] = {0, 0, 0, 1, 11};
    if (write(s, req, 5) != 5) return 4;
    unsigned char hdr[4];
    if (readn(s, hdr, 4)) return 5;
    unsigned len = be32(hdr);
    unsigned char *b = malloc(len);
    if (readn(s, b, len)) return 6;
    unsigned n = be32(b + 1);
    printf("type %u keys %u", b[0], n);
    if (n > 0) {
        unsigned bl = be32(b + 5);
        unsigned cl = be32(b + 9 + bl);
        printf(" comment %.*s", (int)cl, (const char *)(b + 13 + bl));
    }
    printf(" sock %s\n", path);
    return 0;
}
"#;

#[test]
fn run_ssh_mount_reaches_the_agent_and_nothing_else() {
    let env = Env::new();
    let leaks = env.leak_check();
    let gcc = require_cmd("gcc");
    let keygen = require_cmd("ssh-keygen");
    let agent_bin = require_cmd("ssh-agent");
    let ssh_add = require_cmd("ssh-add");
    let dir = env.roots.path().join("ssh");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("probe.c"), AGENT_PROBE).unwrap();
    run_ok(
        &gcc,
        [
            "-static",
            "-O1",
            "-o",
            env.ctx.join("probe").to_str().unwrap(),
            dir.join("probe.c").to_str().unwrap(),
        ],
    )
    .unwrap();
    let key = dir.join("id_ed25519");
    run_ok(
        &keygen,
        [
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "berth-test-key",
            "-f",
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    // a real agent holding the key
    let sock = dir.join("agent.sock");
    let agent = Server::spawn(
        Command::new(&agent_bin)
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null()),
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(&ssh_add)
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY probe /probe\n\
         RUN --mount=type=ssh /probe > /default-answer\n\
         RUN --mount=type=ssh,id=other,target=/tmp/agent.sock,uid=65534,mode=0600 \
             stat -c '%u %a' /tmp/agent.sock > /other-answer && su nobody -s /probe >> /other-answer\n\
         RUN --mount=type=ssh,id=missing echo optional-skipped > /optional\n",
    );
    let build = |extra: &[&str], sock_env: Option<&Path>| {
        let mut c = env.build_cmd(extra);
        match sock_env {
            Some(s) => c.env("SSH_AUTH_SOCK", s),
            None => c.env_remove("SSH_AUTH_SOCK"),
        };
        c.output().unwrap()
    };
    // `default` from $SSH_AUTH_SOCK; `other` from the key file (a private agent)
    let other = format!("other={}", key.display());
    ok(build(
        &["-t", "ssh:1", "--ssh", "default", "--ssh", &other],
        Some(&sock),
    ));
    let files = layer_files(&env.store(), "ssh:1");
    assert_eq!(
        file_in(&files, "default-answer").unwrap().1,
        "type 12 keys 1 comment berth-test-key sock /run/buildkit/ssh_agent.0\n"
    );
    let other_answer = file_in(&files, "other-answer").unwrap().1;
    assert!(
        other_answer
            .starts_with("65534 600\ntype 12 keys 1 comment berth-test-key sock /tmp/agent.sock\n"),
        "{other_answer}"
    );
    assert_eq!(file_in(&files, "optional").unwrap().1, "optional-skipped\n");
    // no socket, mount point or agent path in any layer or in the history
    for (p, _, _) in &files {
        assert!(
            !p.starts_with("run/buildkit") && !p.starts_with("tmp/agent.sock"),
            "{p} in a layer"
        );
    }
    let cfg = config_of(&env.store(), "ssh:1").to_string();
    assert!(!cfg.contains("SSH_AUTH_SOCK") && !cfg.contains(sock.to_str().unwrap()));
    // a required agent that is not given fails clearly
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
    );
    let out = build(&[], None);
    fails_with(&out, "ssh agent default is required");
    drop(agent);
    leaks.assert_clean();
    env.assert_no_leftovers();
    assert!(
        !env.roots.state().join("build-ssh").exists()
            || fs::read_dir(env.roots.state().join("build-ssh"))
                .unwrap()
                .next()
                .is_none(),
        "the key agent's socket directory is left"
    );
}

/// `n` bytes that do not compress (xorshift), different per seed.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Bytes of "Total reclaimed space: 1.2MB".
fn reclaimed(out: &str) -> f64 {
    let v = out
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("no reclaimed space in {out}"));
    let v = v.split_whitespace().next().unwrap();
    let (num, mult) = if let Some(n) = v.strip_suffix("GB") {
        (n, 1e9)
    } else if let Some(n) = v.strip_suffix("MB") {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix("kB") {
        (n, 1e3)
    } else {
        (v.strip_suffix('B').unwrap(), 1.0)
    };
    num.parse::<f64>().unwrap() * mult
}

#[test]
fn builder_prune_removes_cache_and_reports_space() {
    let env = Env::new();
    let leaks = env.leak_check();
    let berth = |args: &[&str]| {
        let out = env.roots.berth().args(args).output().unwrap();
        assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY big.bin /big.bin\n\
         RUN --mount=type=cache,target=/c,id=pc dd if=/dev/zero of=/c/fill bs=1024 count=512 2>/dev/null; echo ran > /ran\n",
    );
    fs::write(env.ctx.join("big.bin"), noise(1 << 20, 1)).unwrap();
    ok(env.build(&["-t", "p:1"]));
    let old = layer_digests(&env.store(), "p:1");
    // the tag moves on: the first COPY layer is kept by the cache alone
    fs::write(env.ctx.join("big.bin"), noise(1 << 20, 2)).unwrap();
    ok(env.build(&["-t", "p:1"]));
    let old_copy: berth_image::Digest = old[old.len() - 2].parse().unwrap();
    assert!(env.store().has_blob(&old_copy));
    // everything was used within the hour
    let out = berth(&["builder", "prune", "--filter", "until=1h"]);
    assert_eq!(reclaimed(&out), 0.0, "{out}");
    // without --all: the dangling entry, its layer and snapshot, and the cache mount
    let out = berth(&["builder", "prune", "-f"]);
    assert!(out.contains("Deleted build cache objects:"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("mount:")).count(),
        1,
        "{out}"
    );
    assert!(reclaimed(&out) > 2.5e6, "{out}");
    assert!(!env.store().has_blob(&old_copy));
    let mounts = env.roots.root().join("build/mounts");
    assert_eq!(fs::read_dir(&mounts).unwrap().count(), 0);
    // what the image uses stays cached
    let log = ok(env.build(&["-t", "p:1"]));
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    // --all: nothing is cached afterwards
    let out = berth(&["builder", "prune", "--all"]);
    assert!(reclaimed(&out) > 0.0, "{out}");
    let log = ok(env.build(&["-t", "p:1"]));
    assert!(!log.contains("CACHED"), "{log}");
    // system prune clears the build cache too
    let out = berth(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted build cache objects"), "{out}");
    let log = ok(env.build(&["-t", "p:1"]));
    assert!(!log.contains("CACHED"), "{log}");
    let out = env
        .roots
        .berth()
        .args(["builder", "prune", "--filter", "label=x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("only until=DURATION"),
        "{}",
        stderr(&out)
    );
    leaks.assert_clean();
    env.assert_no_leftovers();
}
