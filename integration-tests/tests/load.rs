//! Load: many `berth run -d` at once then as many `berth rm -f` (distinct names and
//! addresses, all running, all gone after), many concurrent blob pulls into one store,
//! and create/delete cycles of berth-oci whose memory and descriptors must not grow.
//! Each reports its figures (see `integration_tests::figure`); the counts are the
//! issue's by default where CI's time allows, and environment variables set them for a
//! full run: `BERTH_LOAD_CONTAINERS`, `BERTH_LOAD_PULLS` x `BERTH_LOAD_LAYERS`,
//! `BERTH_LOAD_OCI_CYCLES`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_image::{Store, fixtures};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{
    LeakCheck, TestRoots, bin_path, busybox_bundle, count_from_env, figure, require_root, text,
    unique_id,
};

fn assert_check_clean(roots: &TestRoots) {
    let o = roots.output(&["system", "check"]);
    let t = text(&o);
    assert!(
        o.status.success() && !t.contains("problem:") && !t.contains("interrupted:"),
        "system check:\n{t}"
    );
}

/// Runs `f(i)` for `0..n` on `n` threads at once; returns each result with its duration.
fn all_at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<(T, Duration)> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let t = Instant::now();
                    let r = f(i);
                    (r, t.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

/// Reports wall time, median and slowest of one concurrent phase.
fn phase_figures(name: &str, wall: Duration, mut each: Vec<Duration>) {
    each.sort();
    figure(&format!("{name}.wall"), wall.as_secs_f64(), "s");
    if !each.is_empty() {
        figure(
            &format!("{name}.median"),
            each[each.len() / 2].as_secs_f64() * 1e3,
            "ms",
        );
        figure(
            &format!("{name}.slowest"),
            each[each.len() - 1].as_secs_f64() * 1e3,
            "ms",
        );
    }
}

#[test]
fn many_concurrent_runs_then_removes() {
    require_root();
    let n = count_from_env("BERTH_LOAD_CONTAINERS", 50);
    let roots = TestRoots::new().unwrap().with_own_config();
    let leaks = LeakCheck::new(&[roots.path().display().to_string()]);
    let store = Store::open(&roots.root().join("images")).unwrap();
    fixtures::busybox_image(&store, "busybox:latest").unwrap();
    // the default network comes up once, outside the measured phase
    roots.ok(&["run", "--rm", "--name", "warm", "busybox", "true"]);

    let t = Instant::now();
    let runs = all_at_once(n, |i| {
        roots.output(&[
            "run",
            "-d",
            "--name",
            &format!("load{i}"),
            "busybox",
            "sleep",
            "600",
        ])
    });
    let wall = t.elapsed();
    for (i, (o, _)) in runs.iter().enumerate() {
        assert!(o.status.success(), "run -d load{i} failed:\n{}", text(o));
    }
    phase_figures(
        &format!("load.run_d_x{n}"),
        wall,
        runs.iter().map(|r| r.1).collect(),
    );

    // every one runs, with its own address
    let lines = roots.ok(&["ps", "--format", "{{.Names}}"]);
    let running: BTreeSet<&str> = lines.lines().collect();
    assert_eq!(running.len(), n, "running: {running:?}");
    let mut ips = BTreeSet::new();
    for i in 0..n {
        let ip = roots.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            &format!("load{i}"),
        ]);
        let ip = ip.trim().to_owned();
        assert!(!ip.is_empty(), "load{i} has no address");
        assert!(ips.insert(ip.clone()), "address {ip} given twice");
    }
    assert_check_clean(&roots);

    let t = Instant::now();
    let rms = all_at_once(n, |i| roots.output(&["rm", "-f", &format!("load{i}")]));
    let wall = t.elapsed();
    for (i, (o, _)) in rms.iter().enumerate() {
        assert!(o.status.success(), "rm -f load{i} failed:\n{}", text(o));
    }
    phase_figures(
        &format!("load.rm_f_x{n}"),
        wall,
        rms.iter().map(|r| r.1).collect(),
    );
    let left = roots.ok(&["ps", "-aq"]);
    assert!(left.trim().is_empty(), "containers left: {left}");
    assert_check_clean(&roots);
    roots.ok(&["network", "rm", "bridge"]);
    leaks.assert_clean();
}

#[test]
fn many_concurrent_blob_pulls_into_one_store() {
    require_root();
    let _ = bin_path("berth");
    let pulls = count_from_env("BERTH_LOAD_PULLS", 10);
    let layers = count_from_env("BERTH_LOAD_LAYERS", 20);
    let reg = Registry::start(Auth::None).unwrap();
    let src = TestRoots::new().unwrap().with_own_config();
    let store = Store::open(&src.root().join("images")).unwrap();
    let names: Vec<String> = (0..pulls)
        .map(|i| format!("{}/load/img{i}:1", reg.addr()))
        .collect();
    let mut digests = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // small layers (about 24 KiB each), distinct per image
        let d =
            fixtures::generated_image(&store, name, 100 + i as u64, layers, (layers as u64) << 15)
                .unwrap();
        digests.push(d.digest().to_string());
    }
    // the pushes run at once too
    let t = Instant::now();
    let pushed = all_at_once(pulls, |i| src.output(&["push", &names[i]]));
    for (o, _) in &pushed {
        assert!(o.status.success(), "push: {}", text(o));
    }
    phase_figures(
        &format!("load.push_x{pulls}_of_{layers}_layers"),
        t.elapsed(),
        pushed.iter().map(|r| r.1).collect(),
    );

    let roots = TestRoots::new().unwrap().with_own_config();
    let leaks = LeakCheck::new(&[roots.path().display().to_string()]);
    let t = Instant::now();
    let pulled = all_at_once(pulls, |i| roots.output(&["pull", &names[i]]));
    let wall = t.elapsed();
    for (i, (o, _)) in pulled.iter().enumerate() {
        assert!(o.status.success(), "pull {} failed:\n{}", names[i], text(o));
        assert!(text(o).contains(&digests[i]), "{}", text(o));
    }
    let blobs = pulls * layers;
    phase_figures(
        &format!("load.pull_{blobs}_blobs"),
        wall,
        pulled.iter().map(|r| r.1).collect(),
    );
    figure(
        &format!("load.pull_{blobs}_blobs.rate"),
        blobs as f64 / wall.as_secs_f64(),
        "blobs/s",
    );
    // every image is complete and unpacked, and every blob verifies
    let store = Store::open(&roots.root().join("images")).unwrap();
    for name in &names {
        let image = store.image(name, &Default::default()).unwrap();
        assert_eq!(image.manifest.layers().len(), layers);
        for c in image.chain_ids().unwrap() {
            assert!(store.has_snapshot(&c), "{name}: snapshot {c} missing");
        }
    }
    assert_check_clean(&roots);
    leaks.assert_clean();
}

/// Peak RSS (KiB) and exit status of a child, from wait4.
// reaped by wait4, which std's Child does not know about
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (i64, i32) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth-oci");
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32, "wait4");
    (usage.ru_maxrss, status)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn berth_oci_create_delete_cycles_leave_nothing_and_do_not_grow() {
    require_root();
    let cycles = count_from_env("BERTH_LOAD_OCI_CYCLES", 200);
    let oci = bin_path("berth-oci");
    let dir = tempfile::Builder::new()
        .prefix("berth-load-oci-")
        .tempdir()
        .unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["sleep", "60"]).unwrap();
    let state = dir.path().join("state");
    let prefix = unique_id("ocicycle");
    let leaks = LeakCheck::new(&[dir.path().display().to_string(), prefix.clone()]);
    let fds_before = open_fds(std::process::id() as i32);
    let mut create_rss = Vec::new();
    let mut delete_rss = Vec::new();
    let mut init_fds = Vec::new();
    let mut each = Vec::new();
    let t = Instant::now();
    for i in 0..cycles {
        let id = format!("{prefix}-{i}");
        let c = Instant::now();
        let (rss, status) = run_measured(
            Command::new(&oci)
                .arg("--root")
                .arg(&state)
                .args(["create", "--bundle"])
                .arg(&bundle)
                .arg(&id),
        );
        assert_eq!(status, 0, "create {id} failed (cycle {i})");
        create_rss.push(rss);
        // the waiting init's descriptors
        let st: serde_json::Value = serde_json::from_slice(
            &Command::new(&oci)
                .arg("--root")
                .arg(&state)
                .args(["state", &id])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let pid = st["pid"].as_i64().unwrap_or(0) as i32;
        init_fds.push(open_fds(pid));
        let (rss, status) = run_measured(
            Command::new(&oci)
                .arg("--root")
                .arg(&state)
                .args(["delete", "--force", &id]),
        );
        assert_eq!(status, 0, "delete {id} failed (cycle {i})");
        delete_rss.push(rss);
        each.push(c.elapsed());
    }
    let wall = t.elapsed();
    let tenth = (cycles / 10).max(1);
    let avg = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len().max(1) as f64;
    let avg_d =
        |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64;
    let (first_c, last_c) = (
        avg(&create_rss[..tenth]),
        avg(&create_rss[cycles - tenth..]),
    );
    let (first_d, last_d) = (
        avg(&delete_rss[..tenth]),
        avg(&delete_rss[cycles - tenth..]),
    );
    let fds: BTreeSet<usize> = init_fds.iter().copied().collect();
    figure(
        &format!("load.oci_cycles_x{cycles}.wall"),
        wall.as_secs_f64(),
        "s",
    );
    figure(
        "load.oci_cycles.create_peak_rss.first_tenth",
        first_c,
        "KiB",
    );
    figure("load.oci_cycles.create_peak_rss.last_tenth", last_c, "KiB");
    figure(
        "load.oci_cycles.delete_peak_rss.first_tenth",
        first_d,
        "KiB",
    );
    figure("load.oci_cycles.delete_peak_rss.last_tenth", last_d, "KiB");
    figure(
        "load.oci_cycles.cycle.first_tenth",
        avg_d(&each[..tenth]) * 1e3,
        "ms",
    );
    figure(
        "load.oci_cycles.cycle.last_tenth",
        avg_d(&each[cycles - tenth..]) * 1e3,
        "ms",
    );
    figure(
        "load.oci_cycles.init_fds.max",
        fds.iter().max().copied().unwrap_or(0) as f64,
        "fds",
    );
    // flat: memory within 10% (allocator noise), the init's descriptors always the same
    assert!(
        last_c <= first_c * 1.1 && last_d <= first_d * 1.1,
        "peak RSS grew: create {first_c} -> {last_c} KiB, delete {first_d} -> {last_d} KiB"
    );
    assert_eq!(fds.len(), 1, "init descriptor counts varied: {fds:?}");
    assert_eq!(
        open_fds(std::process::id() as i32),
        fds_before,
        "the test's own descriptors changed"
    );
    let left = integration_tests::state_entries(&state);
    assert!(left.is_empty(), "state left: {left:?}");
    leaks.assert_clean();
}
