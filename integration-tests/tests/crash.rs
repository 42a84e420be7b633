//! Crash consistency: `berth pull`, `push`, `build`, `run -d`, `run --rm`, `rm -f` and
//! `apply` (with `berth serve` running), and `berth serve` itself, killed with SIGKILL at
//! random points. After every kill `berth system check` finds no problem (an interrupted
//! operation is listed, not a problem), the same operation then succeeds, what was
//! there before still verifies, and at the end nothing is left on the host.
//!
//! The kill points come from a printed seed (`BERTH_TEST_SEED` replays a run). The delay
//! is drawn uniformly from 0 to 1.2 times the duration of an uninterrupted run of the
//! operation, measured first (the second of two, past one-time set-up), so kills land
//! all along the operation whatever the machine's speed. Rounds per operation: `BERTH_CRASH_RUNS` (the issue's 50 for a full
//! run; CI runs fewer). Each test spreads its rounds over two workers with their own
//! roots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_image::{Store, fixtures};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{
    LeakCheck, SeededRng, TestRoots, bin_path, count_from_env, figure, require_root, text,
};

/// Rounds per operation in CI (two workers each); `BERTH_CRASH_RUNS` overrides.
const CI_RUNS: usize = 6;
const WORKERS: usize = 2;

/// One worker: its own roots (with their own docker config dir), and its leak check.
struct Worker {
    idx: usize,
    roots: TestRoots,
    serve: std::sync::Mutex<Option<integration_tests::Serve>>,
}

impl Worker {
    fn new(idx: usize) -> Result<Worker> {
        let roots = TestRoots::new()?.with_own_config();
        Ok(Worker {
            idx,
            roots,
            serve: std::sync::Mutex::new(None),
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.roots.berth();
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.roots.output(args))
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!("berth {args:?} failed ({}):\n{}", out.status, text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `system check`: exit 0 and no problem line; returns how many interrupted
    /// operations it listed.
    fn check_clean(&self, when: &str) -> Result<usize> {
        let out = self.run(&["system", "check"])?;
        let text = text(&out);
        ensure!(
            out.status.success() && !text.contains("problem:"),
            "system check {when} is not clean ({}):\n{text}",
            out.status
        );
        Ok(text
            .lines()
            .filter(|l| l.starts_with("interrupted:"))
            .count())
    }

    /// Names and states of every container, as `ps -a` shows them.
    fn states(&self) -> Result<Vec<(String, String)>> {
        let out = self.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
            .collect())
    }

    /// Waits (bounded) until the containers' states stop changing: a killed CLI's
    /// monitor may still be starting or removing a container.
    fn settle(&self) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(15);
        let mut last = self.states()?;
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = self.states()?;
            if now == last && !self.monitors_busy() {
                return Ok(());
            }
            ensure!(Instant::now() < end, "containers never settled: {now:?}");
            last = now;
        }
    }

    /// Whether a berth process of this root other than monitors and serve is still
    /// running (a killed CLI's children, say berth-oci of a build step).
    fn monitors_busy(&self) -> bool {
        let marker = self.roots.path().display().to_string();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return false;
        };
        rd.flatten().any(|e| {
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            String::from_utf8_lossy(&env).contains(&marker)
                && cmd.contains("berth")
                && !cmd.contains("internal-monitor")
                && !cmd.contains("serve")
                && e.file_name() != std::process::id().to_string().as_str()
        })
    }

    fn start_serve(&self) -> Result<()> {
        *self.serve.lock().unwrap() = Some(self.roots.serve("0.3")?);
        Ok(())
    }

    fn stop_serve(&self, signal: nix::sys::signal::Signal) {
        if let Some(serve) = self.serve.lock().unwrap().take() {
            serve.stop(signal);
        }
    }

    fn remove_all_containers(&self) -> Result<()> {
        let ids = self.ok(&["ps", "-aq", "--no-trunc"])?;
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let out = self.run(&["rm", "-f", id])?;
            ensure!(
                out.status.success()
                    || String::from_utf8_lossy(&out.stderr).contains("no such container"),
                "rm -f {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_serve(nix::sys::signal::Signal::SIGTERM);
        let _ = self.remove_all_containers();
    }
}

/// One operation under test.
trait Scenario: Sync {
    /// Short name (figures are `crash.<name>.*`).
    fn name(&self) -> &'static str;
    /// Once per worker, before the rounds.
    fn prepare(&self, _w: &Worker) -> Result<()> {
        Ok(())
    }
    /// Starts round `i`'s operation; this process gets the SIGKILL.
    fn start(&self, w: &Worker, i: usize) -> Result<Child>;
    /// The kill delay range when it is not measured (for processes that never end).
    fn fixed_span(&self) -> Option<Duration> {
        None
    }
    /// After the kill and a clean check: the same operation succeeds and its result
    /// is right; leaves the worker ready for the next round.
    fn redo(&self, w: &Worker, i: usize) -> Result<()>;
    /// After the last round: everything that was there still verifies.
    fn finish(&self, _w: &Worker) -> Result<()> {
        Ok(())
    }
}

/// Per worker: kills in the middle, interrupted operations seen, rounds run.
#[derive(Default)]
struct Tally {
    rounds: usize,
    killed_mid: usize,
    interrupted: usize,
}

fn spawn_quiet(mut cmd: Command, log: &Path) -> Result<Child> {
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

fn worker_rounds(s: &dyn Scenario, w: &Worker, rounds: usize, seed: u64) -> Result<Tally> {
    let mut rng = SeededRng::new(seed);
    let mut tally = Tally::default();
    s.prepare(w)?;
    // two uninterrupted runs first (the first also pays for one-time set-up, such as
    // the default network): the second's duration sets the range of the kill delays
    let span = match s.fixed_span() {
        Some(d) => d,
        None => {
            let mut took = Duration::ZERO;
            for i in [1000, 1001] {
                let mut child = s.start(w, i)?;
                let t = Instant::now();
                let status = child.wait()?;
                took = t.elapsed();
                ensure!(
                    status.success(),
                    "{}: the uninterrupted run failed ({status})",
                    s.name()
                );
                s.redo(w, i)?;
            }
            took.mul_f64(1.2)
        }
    };
    figure(
        &format!("crash.{}.kill_span.w{}", s.name(), w.idx),
        span.as_millis() as f64,
        "ms",
    );
    for i in 1..=rounds {
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 + 1));
        let mut child = s.start(w, i)?;
        // spawned now: start()'s own preparation (say, the container rm -f removes)
        // is not part of the delay
        std::thread::sleep(delay);
        let finished = child.try_wait()?.is_some();
        let _ = child.kill(); // SIGKILL
        child.wait()?;
        tally.rounds += 1;
        if !finished {
            tally.killed_mid += 1;
        }
        let when = format!(
            "after {} round {i} killed at {delay:?} (finished before: {finished})",
            s.name()
        );
        w.settle().with_context(|| when.clone())?;
        tally.interrupted += w.check_clean(&when)?;
        s.redo(w, i).with_context(|| format!("redo {when}"))?;
        w.check_clean(&format!("{when}, after the redo"))?;
    }
    s.finish(w)?;
    Ok(tally)
}

/// Runs `rounds` rounds of `s`, spread over the workers, then checks that nothing is
/// left: no problem or interrupted operation, and nothing on the host.
fn drive(s: &dyn Scenario) {
    require_root();
    let _ = bin_path("berth");
    let rounds = count_from_env("BERTH_CRASH_RUNS", CI_RUNS);
    let mut rng = SeededRng::from_env(&format!("crash {}", s.name()));
    let started = Instant::now();
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|i| Worker::new(i).expect("worker roots"))
        .collect();
    let leaks: Vec<LeakCheck> = workers
        .iter()
        .map(|w| LeakCheck::new(&[w.roots.path().display().to_string()]))
        .collect();
    let seeds: Vec<u64> = workers.iter().map(|_| rng.next_u64()).collect();
    let per = rounds.div_ceil(WORKERS);
    let results: Vec<Result<Tally>> = std::thread::scope(|sc| {
        let handles: Vec<_> = workers
            .iter()
            .zip(&seeds)
            .map(|(w, &seed)| sc.spawn(move || worker_rounds(s, w, per, seed)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let mut total = Tally::default();
    for (w, r) in workers.iter().zip(results) {
        let t = r.unwrap_or_else(|e| {
            panic!(
                "crash {} worker {} (seed {}): {e:#}",
                s.name(),
                w.idx,
                rng.seed()
            )
        });
        total.rounds += t.rounds;
        total.killed_mid += t.killed_mid;
        total.interrupted += t.interrupted;
    }
    for (w, leak) in workers.iter().zip(&leaks) {
        w.stop_serve(nix::sys::signal::Signal::SIGTERM);
        w.remove_all_containers().unwrap();
        let out = w.ok(&["system", "check"]).unwrap();
        assert!(
            !out.contains("problem:") && !out.contains("interrupted:"),
            "{out}"
        );
        w.ok(&["network", "rm", "bridge"]).ok();
        leak.assert_clean();
    }
    let name = s.name();
    figure(&format!("crash.{name}.kills"), total.rounds as f64, "runs");
    figure(
        &format!("crash.{name}.killed_mid_operation"),
        total.killed_mid as f64,
        "runs",
    );
    figure(
        &format!("crash.{name}.interrupted_ops_seen"),
        total.interrupted as f64,
        "count",
    );
    figure(
        &format!("crash.{name}.seconds"),
        started.elapsed().as_secs_f64(),
        "s",
    );
    assert!(
        total.killed_mid > 0 || total.rounds < 4,
        "no kill landed mid-operation in {} rounds",
        total.rounds
    );
}

fn busybox_in(w: &Worker) -> Result<()> {
    let store = Store::open(&w.roots.root().join("images"))?;
    fixtures::busybox_image(&store, "busybox:latest")?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// pull and push, against a loopback registry

struct Pull {
    reg: Registry,
    /// A small image of several layers, on the registry.
    image: String,
    digest: String,
    /// Pulled once before the rounds: must still verify after every kill.
    base: String,
}

impl Pull {
    fn new() -> Result<Pull> {
        let reg = Registry::start(Auth::None)?;
        let src = Worker::new(99)?;
        let store = Store::open(&src.roots.root().join("images"))?;
        let image = format!("{}/crash/layers:1", reg.addr());
        let digest = fixtures::generated_image(&store, &image, 11, 4, 6 << 20)?
            .digest()
            .to_string();
        let base = format!("{}/crash/base:1", reg.addr());
        fixtures::busybox_image(&store, &base)?;
        src.ok(&["push", &image])?;
        src.ok(&["push", &base])?;
        Ok(Pull {
            reg,
            image,
            digest,
            base,
        })
    }
}

impl Scenario for Pull {
    fn name(&self) -> &'static str {
        "pull"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        w.ok(&["pull", "-q", &self.base])?;
        Ok(())
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let log = w.roots.path().join(format!("pull-{i}.log"));
        spawn_quiet(w.cmd(&["pull", &self.image]), &log)
    }
    fn redo(&self, w: &Worker, _i: usize) -> Result<()> {
        let out = w.ok(&["pull", &self.image])?;
        ensure!(out.contains(&self.digest), "pull printed no digest: {out}");
        // the next round pulls from nothing again
        w.ok(&["rmi", &self.image])?;
        w.ok(&["system", "prune", "-f"])?;
        Ok(())
    }
    fn finish(&self, w: &Worker) -> Result<()> {
        let out = w.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &self.base,
            "echo",
            "alive",
        ])?;
        ensure!(out.trim() == "alive", "{out}");
        let _ = &self.reg;
        Ok(())
    }
}

#[test]
fn kill_9_of_pull() {
    drive(&Pull::new().unwrap());
}

struct Push {
    reg: Registry,
    /// Where pushed images are pulled back to be verified.
    verify: Worker,
}

impl Push {
    fn local(&self) -> &'static str {
        "crash/local:1"
    }
    fn target(&self, w: &Worker, i: usize) -> String {
        format!("{}/crash/push-{}-{i}:1", self.reg.addr(), w.idx)
    }
}

impl Scenario for Push {
    fn name(&self) -> &'static str {
        "push"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        let store = Store::open(&w.roots.root().join("images"))?;
        fixtures::generated_image(&store, self.local(), 12 + w.idx as u64, 3, 6 << 20)?;
        Ok(())
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let target = self.target(w, i);
        w.ok(&["tag", self.local(), &target])?;
        let log = w.roots.path().join(format!("push-{i}.log"));
        spawn_quiet(w.cmd(&["push", &target]), &log)
    }
    fn redo(&self, w: &Worker, i: usize) -> Result<()> {
        let target = self.target(w, i);
        let out = w.ok(&["push", &target])?;
        let store = Store::open(&w.roots.root().join("images"))?;
        let digest = store.resolve(&target)?.digest().to_string();
        ensure!(out.contains(&digest), "push printed no digest: {out}");
        // what the registry holds is complete: it pulls back to the same digest
        let out = self.verify.ok(&["pull", &target])?;
        ensure!(
            out.contains(&digest),
            "pulled back a different image: {out}"
        );
        self.verify.ok(&["rmi", &target])?;
        w.ok(&["rmi", &target])?;
        Ok(())
    }
    fn finish(&self, w: &Worker) -> Result<()> {
        // the source image was never damaged by the kills
        let store = Store::open(&w.roots.root().join("images"))?;
        let check = berth_image::gc::check(&store, false)?;
        ensure!(check.problems.is_empty(), "{:?}", check.problems);
        ensure!(store.resolve(self.local()).is_ok(), "source image lost");
        Ok(())
    }
}

#[test]
fn kill_9_of_push() {
    let push = Push {
        reg: Registry::start(Auth::None).unwrap(),
        verify: Worker::new(98).unwrap(),
    };
    drive(&push);
}

// ---------------------------------------------------------------------------------
// build

struct Build;

const DOCKERFILE: &str = "FROM busybox:latest
RUN echo one > /one && sleep 0.1
COPY data /data
RUN cat /one /data/x > /both && sleep 0.1
";

impl Scenario for Build {
    fn name(&self) -> &'static str {
        "build"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        busybox_in(w)?;
        let ctx = w.roots.path().join("ctx");
        std::fs::create_dir_all(ctx.join("data"))?;
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
        std::fs::write(ctx.join("data/x"), "two\n")?;
        Ok(())
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let ctx = w.roots.path().join("ctx");
        let log = w.roots.path().join(format!("build-{i}.log"));
        let mut c = w.cmd(&["build", "--no-cache", "-t", "built:1"]);
        c.arg(&ctx);
        spawn_quiet(c, &log)
    }
    fn redo(&self, w: &Worker, _i: usize) -> Result<()> {
        let ctx = w.roots.path().join("ctx");
        let out = w
            .cmd(&["build", "--no-cache", "-t", "built:1"])
            .arg(&ctx)
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "build after the kill failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = w.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "built:1",
            "cat",
            "/both",
        ])?;
        ensure!(out == "one\ntwo\n", "built image has {out:?}");
        // the build swept what the killed one left
        for dir in [
            w.roots.root().join("build/tmp"),
            w.roots.state().join("build"),
        ] {
            if dir.exists() {
                let left: Vec<_> = std::fs::read_dir(&dir)?
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                ensure!(left.is_empty(), "build leftovers: {left:?}");
            }
        }
        Ok(())
    }
}

#[test]
fn kill_9_of_build() {
    drive(&Build);
}

// ---------------------------------------------------------------------------------
// run -d, run --rm, rm -f

/// `rm -f NAME`, fine if it is already gone.
fn rm_f(w: &Worker, name: &str) -> Result<()> {
    let out = w.run(&["rm", "-f", name])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() || err.contains("no such container"),
        "rm -f {name}: {err}"
    );
    Ok(())
}

struct RunDetached;

impl Scenario for RunDetached {
    fn name(&self) -> &'static str {
        "run_detached"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        busybox_in(w)
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let name = format!("d{i}");
        let log = w.roots.path().join(format!("run-{i}.log"));
        spawn_quiet(
            w.cmd(&["run", "-d", "--name", &name, "busybox", "sleep", "600"]),
            &log,
        )
    }
    fn redo(&self, w: &Worker, i: usize) -> Result<()> {
        let name = format!("d{i}");
        rm_f(w, &name)?;
        w.ok(&["run", "-d", "--name", &name, "busybox", "sleep", "600"])?;
        let ip = w.ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.NetworkSettings.IPAddress}}",
            &name,
        ])?;
        ensure!(
            ip.starts_with("running ") && ip.trim().len() > "running ".len(),
            "{name} after the redo: {ip}"
        );
        rm_f(w, &name)
    }
}

#[test]
fn kill_9_of_run_detached() {
    drive(&RunDetached);
}

struct RunRm;

impl Scenario for RunRm {
    fn name(&self) -> &'static str {
        "run_rm"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        busybox_in(w)
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let name = format!("r{i}");
        let log = w.roots.path().join(format!("run-{i}.log"));
        spawn_quiet(
            w.cmd(&["run", "--rm", "--name", &name, "busybox", "echo", "hello"]),
            &log,
        )
    }
    fn redo(&self, w: &Worker, i: usize) -> Result<()> {
        let name = format!("r{i}");
        // a container the killed run created but never started stays, as docker's
        rm_f(w, &name)?;
        let out = w.ok(&["run", "--rm", "--name", &name, "busybox", "echo", "hello"])?;
        ensure!(out == "hello\n", "{out:?}");
        let left = w.states()?;
        ensure!(
            !left.iter().any(|(n, _)| *n == name),
            "--rm left {name}: {left:?}"
        );
        Ok(())
    }
}

#[test]
fn kill_9_of_run_rm() {
    drive(&RunRm);
}

struct RmForce;

impl Scenario for RmForce {
    fn name(&self) -> &'static str {
        "rm_force"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        busybox_in(w)
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let name = format!("x{i}");
        w.ok(&["run", "-d", "--name", &name, "busybox", "sleep", "600"])?;
        let log = w.roots.path().join(format!("rm-{i}.log"));
        spawn_quiet(w.cmd(&["rm", "-f", &name]), &log)
    }
    fn redo(&self, w: &Worker, i: usize) -> Result<()> {
        let name = format!("x{i}");
        rm_f(w, &name)?;
        let left = w.states()?;
        ensure!(
            !left.iter().any(|(n, _)| *n == name),
            "rm -f left {name}: {left:?}"
        );
        Ok(())
    }
}

#[test]
fn kill_9_of_rm_force() {
    drive(&RmForce);
}

// ---------------------------------------------------------------------------------
// apply with serve running, and serve itself

fn deployment(replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: crash, labels: {{app: crash}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: crash}}}}
  template:
    metadata: {{labels: {{app: crash}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
"#
    )
}

/// Replicas of round `i`: alternating, so every apply changes something.
fn replicas(i: usize) -> usize {
    1 + i % 3
}

fn manifest(w: &Worker, i: usize) -> Result<PathBuf> {
    let f = w.roots.path().join(format!("deploy-{i}.yaml"));
    std::fs::write(&f, deployment(replicas(i)))?;
    Ok(f)
}

/// Waits (bounded) until `n` pods run and are ready, with one container each.
fn converged(w: &Worker, n: usize) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = serde_json::from_str(&w.ok(&["get", "pods", "-o", "json"])?)?;
        let pods = v["items"].as_array().cloned().unwrap_or_default();
        let ready = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["ready"] == true)
            .count();
        let running = w.states()?.iter().filter(|(_, s)| s == "running").count();
        if pods.len() == n && ready == n && running == n {
            // and no more than that: nothing duplicated
            let all = w.states()?;
            if all.len() == n {
                return Ok(());
            }
        }
        ensure!(
            Instant::now() < end,
            "never converged to {n} pods: {} pods, {ready} ready, containers {:?}",
            pods.len(),
            w.states()?
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

struct Apply;

impl Scenario for Apply {
    fn name(&self) -> &'static str {
        "apply"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        busybox_in(w)?;
        w.start_serve()
    }
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        let f = manifest(w, i)?;
        let log = w.roots.path().join(format!("apply-{i}.log"));
        let mut c = w.cmd(&["apply", "-f"]);
        c.arg(&f);
        spawn_quiet(c, &log)
    }
    fn redo(&self, w: &Worker, i: usize) -> Result<()> {
        let f = manifest(w, i)?;
        let out = w
            .cmd(&["apply", "-f"])
            .arg(&f)
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "apply after the kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        converged(w, replicas(i))
    }
    fn finish(&self, w: &Worker) -> Result<()> {
        w.ok(&["delete", "deployment", "crash"])?;
        converged(w, 0)
    }
}

#[test]
fn kill_9_of_apply_with_serve_running() {
    drive(&Apply);
}

struct Serve;

impl Scenario for Serve {
    fn name(&self) -> &'static str {
        "serve"
    }
    fn prepare(&self, w: &Worker) -> Result<()> {
        busybox_in(w)
    }
    /// serve is started, the next desired state applied, and serve is what dies.
    fn start(&self, w: &Worker, i: usize) -> Result<Child> {
        w.start_serve()?;
        w.ok(&["apply", "-f", manifest(w, i)?.to_str().context("path")?])?;
        let serve = w
            .serve
            .lock()
            .unwrap()
            .take()
            .context("serve not running")?;
        Ok(serve.into_child())
    }
    fn fixed_span(&self) -> Option<Duration> {
        // the time serve needs to bring up to three pods here, with margin
        Some(Duration::from_millis(2500))
    }
    fn redo(&self, w: &Worker, i: usize) -> Result<()> {
        w.start_serve()?;
        converged(w, replicas(i))?;
        w.stop_serve(nix::sys::signal::Signal::SIGTERM);
        Ok(())
    }
    fn finish(&self, w: &Worker) -> Result<()> {
        w.start_serve()?;
        w.ok(&["delete", "deployment", "crash"])?;
        converged(w, 0)?;
        w.stop_serve(nix::sys::signal::Signal::SIGTERM);
        Ok(())
    }
}

#[test]
fn kill_9_of_serve() {
    drive(&Serve);
}

// ---------------------------------------------------------------------------------
// berth-oci create itself (what every engine calls)

/// SIGKILL of `berth-oci create` anywhere, then `delete --force` of the id: no init,
/// cgroup or state may remain.
#[test]
fn kill_9_of_berth_oci_create() {
    require_root();
    let oci = bin_path("berth-oci");
    let runs = count_from_env("BERTH_CRASH_RUNS", CI_RUNS);
    let mut rng = SeededRng::from_env("crash berth-oci create");
    let dir = tempfile::Builder::new()
        .prefix("berth-crash-oci-")
        .tempdir()
        .unwrap();
    let bundle =
        integration_tests::busybox_bundle(&dir.path().join("bundle"), &["sleep", "60"]).unwrap();
    let state = dir.path().join("state");
    let prefix = integration_tests::unique_id("crashoci");
    let leaks = LeakCheck::new(&[dir.path().display().to_string(), prefix.clone()]);
    let oci_cmd = |args: &[&str]| {
        let mut c = Command::new(&oci);
        c.arg("--root").arg(&state).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let create = |id: &str| {
        let mut c = oci_cmd(&["create", "--bundle"]);
        c.arg(&bundle).arg(id);
        c
    };
    let delete = |id: &str| {
        let st = oci_cmd(&["delete", "--force", id]).status().unwrap();
        assert!(st.success(), "delete --force {id}: {st}");
    };
    let mut span = Duration::ZERO;
    for i in 0..2 {
        let id = format!("{prefix}-warm{i}");
        let t = Instant::now();
        assert!(create(&id).status().unwrap().success());
        span = t.elapsed().mul_f64(1.2);
        delete(&id);
    }
    let mut killed_mid = 0;
    for i in 0..runs {
        let id = format!("{prefix}-{i}");
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 + 1));
        let mut child = create(&id).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        delete(&id);
        // the same id can be created again at once (its error to a file: the waiting
        // init keeps the create's stderr open)
        let err_path = dir.path().join("create.err");
        let st = create(&id)
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "create {id} after the kill at {delay:?} failed: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        delete(&id);
    }
    let left = integration_tests::state_entries(&state);
    assert!(left.is_empty(), "state left: {left:?}");
    leaks.assert_clean();
    figure("crash.oci_create.kills", runs as f64, "runs");
    figure(
        "crash.oci_create.killed_mid_operation",
        killed_mid as f64,
        "runs",
    );
}
