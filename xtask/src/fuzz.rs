//! `cargo xtask fuzz [--seconds N] [--release] [--asan] [TARGET...]`: builds the
//! libFuzzer targets of fuzz/ with cargo-fuzz (installed at a pinned version when
//! missing) and runs each for N seconds, seeded from fuzz/corpus-regressions/ and the
//! repository's real inputs. Prints runs, speed and coverage per target; a crash is
//! saved under fuzz/artifacts/TARGET/ and fails the task.
//!
//! The stable pass builds without a sanitizer; `--asan` builds a release with
//! AddressSanitizer on the nightly toolchain (`-Zsanitizer` is nightly-only), which
//! catches memory errors in the C code under the targets (zlib, zstd, sqlite) and in
//! unsafe Rust that a plain build lets pass silently.
//!
//! The build goes to TARGET_DIR/fuzz (TARGET_DIR/fuzz-asan for `--asan`; their own
//! flags would otherwise invalidate the normal build), the growing corpus to
//! TARGET_DIR/fuzz/corpus/TARGET for both.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util;

/// The cargo-fuzz release `cargo xtask fuzz` installs and drives.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// The toolchain `--asan` builds with: sanitizers need nightly's `-Zsanitizer`.
const ASAN_TOOLCHAIN: &str = "nightly";

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--release] [--asan] [TARGET...]
  --seconds N   run each target for N seconds (default 30)
  --release     optimised build (slower to build, 2-5x the executions per second);
                the default is a quicker-to-build debug build with optimised code paths
  --asan        release build with AddressSanitizer (and LeakSanitizer), on the
                nightly toolchain (rustup toolchain install nightly)
  --jobs N      fuzz N targets at once (default 1; each still runs N seconds)
  TARGET        only these targets (default: all of fuzz/fuzz_targets/)";

/// What one target's run did.
#[derive(Debug, Default)]
struct Outcome {
    name: String,
    runs: u64,
    execs_per_sec: u64,
    cov: u64,
    features: u64,
    corpus: u64,
    crashes: Vec<PathBuf>,
    seconds: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut release = false;
    let mut asan = false;
    let mut jobs = 1usize;
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a value")?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--seconds {v:?} is not a number"))?;
            }
            "--release" => release = true,
            "--asan" => asan = true,
            "--jobs" => {
                let v = it.next().context("--jobs needs a value")?;
                jobs = v
                    .parse::<usize>()
                    .with_context(|| format!("--jobs {v:?} is not a number"))?
                    .max(1);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            s => wanted.push(s.to_owned()),
        }
    }
    let root = util::workspace_root();
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    for w in &wanted {
        if !all.contains(w) {
            bail!("no fuzz target {w:?} (have: {})", all.join(", "));
        }
    }
    let chosen: Vec<String> = if wanted.is_empty() { all } else { wanted };

    ensure_cargo_fuzz()?;
    // corpus, logs and scratch space stay under fuzz/ for both builds: what one build
    // finds seeds the other
    let target_dir = util::target_dir().join("fuzz");
    let build_dir = if asan {
        util::target_dir().join("fuzz-asan")
    } else {
        target_dir.clone()
    };
    let started = Instant::now();
    build(&root, &build_dir, release, asan)?;
    println!("fuzz: built in {:.0}s", started.elapsed().as_secs_f64());

    let bin_dir = build_dir
        .join("x86_64-unknown-linux-gnu")
        .join(if release || asan { "release" } else { "debug" });
    let mut outcomes = Vec::new();
    for batch in chosen.chunks(jobs) {
        let results: Vec<Result<Outcome>> = std::thread::scope(|sc| {
            let handles: Vec<_> = batch
                .iter()
                .map(|name| {
                    let (root, target_dir, bin) = (&root, &target_dir, bin_dir.join(name));
                    sc.spawn(move || run_target(root, target_dir, &bin, name, seconds, asan))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("fuzz runner thread panicked"))
                .collect()
        });
        for r in results {
            outcomes.push(r?);
        }
    }

    println!();
    println!(
        "  {:<16} {:>10} {:>8} {:>6} {:>7} {:>7} {:>7}",
        "target", "runs", "exec/s", "cov", "ft", "corpus", "crashes"
    );
    for o in &outcomes {
        println!(
            "  {:<16} {:>10} {:>8} {:>6} {:>7} {:>7} {:>7}",
            o.name,
            o.runs,
            o.execs_per_sec,
            o.cov,
            o.features,
            o.corpus,
            o.crashes.len()
        );
    }
    let total: u64 = outcomes.iter().map(|o| o.runs).sum();
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.crashes.is_empty()).collect();
    println!(
        "fuzz: {} targets, {total} runs in {:.0}s (build included)",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    if crashed.is_empty() {
        return Ok(());
    }
    for o in &crashed {
        for c in &o.crashes {
            eprintln!(
                "fuzz: {} crashed on {}\n  replay: {} {}\n  keep it as a regression: cp {} fuzz/corpus-regressions/{}/",
                o.name,
                c.display(),
                bin_dir.join(&o.name).display(),
                c.display(),
                c.display(),
                o.name
            );
        }
    }
    bail!(
        "fuzz: crashes in {}",
        crashed
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The target names: the files of fuzz/fuzz_targets/.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let mut names = BTreeSet::new();
    let dir = fuzz_dir.join("fuzz_targets");
    for e in fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs")
            && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
        {
            names.insert(stem.to_owned());
        }
    }
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names.into_iter().collect())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if have == format!("cargo-fuzz {CARGO_FUZZ_VERSION}") {
        return Ok(());
    }
    util::banner(&format!("installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
    util::cargo(&[
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ])
}

/// Builds every target into `target_dir`. fuzz/ is its own workspace: its lock file
/// starts as a copy of the main one, so the berth crates and their dependencies
/// build at exactly the versions the workspace tests.
fn build(root: &Path, target_dir: &Path, release: bool, asan: bool) -> Result<()> {
    let lock = root.join("fuzz/Cargo.lock");
    let main_lock = root.join("Cargo.lock");
    let stale = match (fs::metadata(&lock), fs::metadata(&main_lock)) {
        (Ok(l), Ok(m)) => l.modified()? < m.modified()?,
        _ => true,
    };
    if stale {
        fs::copy(&main_lock, &lock).with_context(|| format!("copy {}", main_lock.display()))?;
    }
    let target_arg = target_dir.to_string_lossy().into_owned();
    if asan {
        util::banner("building the fuzz targets with AddressSanitizer (nightly, release)");
        let mut cmd = Command::new("rustup");
        cmd.args(["run", ASAN_TOOLCHAIN, "cargo", "fuzz", "build", "--release"])
            .args(["--sanitizer", "address", "--target-dir", &target_arg])
            .current_dir(root);
        // the pinned toolchain reaches us through these; nightly must not inherit them
        for var in [
            "RUSTUP_TOOLCHAIN",
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        return util::run(&mut cmd).with_context(|| {
            format!("the ASan build needs the {ASAN_TOOLCHAIN} toolchain (rustup toolchain install {ASAN_TOOLCHAIN})")
        });
    }
    util::banner("building the fuzz targets");
    let mut args = vec!["fuzz", "build", "--sanitizer", "none"];
    if !release {
        args.push("--dev");
    }
    args.extend(["--target-dir", &target_arg]);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // without a sanitizer cargo-fuzz needs no nightly flag: the pinned stable builds it
    util::run(Command::new(cargo).args(&args).current_dir(root))
}

/// Seeds the corpus, runs one target for `seconds`, and reads libFuzzer's report.
fn run_target(
    root: &Path,
    target_dir: &Path,
    bin: &Path,
    name: &str,
    seconds: u64,
    asan: bool,
) -> Result<Outcome> {
    util::banner(&format!(
        "fuzzing {name} for {seconds}s{}",
        if asan { " with ASan" } else { "" }
    ));
    let corpus = target_dir.join("corpus").join(name);
    fs::create_dir_all(&corpus)?;
    let seeded = seed(root, name, &corpus)?;
    let artifacts = root.join("fuzz/artifacts").join(name);
    fs::create_dir_all(&artifacts)?;
    let before = listing(&artifacts)?;
    // targets make scratch files under TMPDIR: keep them out of /tmp and remove them
    let tmp = target_dir
        .join("tmp")
        .join(format!("{name}{}", if asan { "-asan" } else { "" }));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let log_path = target_dir
        .join("logs")
        .join(format!("{name}{}.log", if asan { "-asan" } else { "" }));
    fs::create_dir_all(log_path.parent().expect("log has a parent"))?;
    let log = fs::File::create(&log_path)?;
    let t = Instant::now();
    let status = Command::new(bin)
        .arg(&corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg("-timeout=20")
        // ASan's shadow memory and quarantine count against the limit
        .arg(format!("-rss_limit_mb={}", if asan { 4096 } else { 2048 }))
        .arg("-max_len=8192")
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("start {}", bin.display()))?;
    let seconds_taken = t.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&tmp);
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let mut o = parse_report(name, &text);
    o.seconds = seconds_taken;
    o.crashes = listing(&artifacts)?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !status.success() && o.crashes.is_empty() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{name}: the fuzzer exited with {status} without saving a crash; log {}:\n{}",
            log_path.display(),
            tail.join("\n")
        );
    }
    if !o.crashes.is_empty() {
        // the panic message and backtrace are in the log
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("stat::"))
            .take(40)
            .collect();
        eprintln!("{}", tail.join("\n"));
    }
    println!(
        "fuzz: {name}: {} runs in {:.0}s ({}/s), cov {}, ft {}, corpus {} ({seeded} seeds), {} crashes; log {}",
        o.runs,
        o.seconds,
        o.execs_per_sec,
        o.cov,
        o.features,
        o.corpus,
        o.crashes.len(),
        log_path.display()
    );
    Ok(o)
}

fn listing(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

/// Reads `stat::` lines and the last status line (`#N ... cov: C ft: F corp: K/...`).
fn parse_report(name: &str, text: &str) -> Outcome {
    let mut o = Outcome {
        name: name.to_owned(),
        ..Outcome::default()
    };
    let field = |line: &str, key: &str| -> Option<u64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        let v = words.next()?;
        v.split('/').next()?.parse().ok()
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            o.runs = v.trim().parse().unwrap_or(o.runs);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            o.execs_per_sec = v.trim().parse().unwrap_or(o.execs_per_sec);
        } else if line.starts_with('#') && line.contains(" cov: ") {
            o.cov = field(line, "cov:").unwrap_or(o.cov);
            o.features = field(line, "ft:").unwrap_or(o.features);
            o.corpus = field(line, "corp:").unwrap_or(o.corpus);
        }
    }
    o
}

/// Puts the regression inputs and the repository's real inputs for `name` into its
/// corpus (files named by content, so seeding again adds nothing). Returns how many.
fn seed(root: &Path, name: &str, corpus: &Path) -> Result<usize> {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let reg = root.join("fuzz/corpus-regressions").join(name);
    if reg.is_dir() {
        for e in fs::read_dir(&reg)? {
            let p = e?.path();
            if p.is_file() {
                inputs.push(fs::read(&p)?);
            }
        }
    }
    let fixtures = util::target_dir().join("fixtures");
    match name {
        "dockerfile" => {
            inputs.extend(files_named(&root.join("examples"), |n| {
                n.starts_with("Dockerfile")
            }));
            for f in [
                "crates/berth-build/src/parser_tests.rs",
                "integration-tests/tests/build.rs",
            ] {
                inputs.extend(raw_literals(&root.join(f), "FROM"));
            }
        }
        "dockerignore" => {
            inputs.extend(files_named(&root.join("examples"), |n| {
                n == ".dockerignore"
            }));
        }
        "kube_manifest" => {
            inputs.extend(files_named(&root.join("examples"), |n| {
                n.ends_with(".yaml") || n.ends_with(".yml")
            }));
            for f in [
                "crates/berth-orchestrator/src/manifest/tests.rs",
                "integration-tests/tests/orchestrator.rs",
            ] {
                inputs.extend(raw_literals(&root.join(f), "apiVersion"));
            }
        }
        "image_manifest" => {
            // the fixture image's index, manifest and config (made by `xtask fixtures`)
            let images = fixtures.join("images");
            inputs.extend(files_named(&images, |n| n == "index.json"));
            inputs.extend(
                files_named(&images.join("blobs"), |_| true)
                    .into_iter()
                    .filter(|b| b.len() < 64 << 10 && b.first() == Some(&b'{')),
            );
        }
        "oci_config" => {
            let cfg = fixtures.join("busybox-bundle/config.json");
            if let Ok(b) = fs::read(cfg) {
                inputs.push(b);
            }
        }
        _ => {}
    }
    for input in &inputs {
        let path = corpus.join(format!("seed-{}", fnv(input)));
        if !path.exists() {
            fs::write(&path, input)?;
        }
    }
    Ok(inputs.len())
}

/// Files under `dir` (recursively) whose name passes `pick`, read whole.
fn files_named(dir: &Path, pick: impl Fn(&str) -> bool + Copy) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(files_named(&p, pick));
        } else if ft.is_file()
            && p.file_name().and_then(|n| n.to_str()).is_some_and(pick)
            && let Ok(b) = fs::read(&p)
        {
            out.push(b);
        }
    }
    out
}

/// The `r#"..."#` string literals of a Rust source file that contain `needle`: the
/// test inputs written inline in the tests.
fn raw_literals(file: &Path, needle: &str) -> Vec<Vec<u8>> {
    let Ok(src) = fs::read_to_string(file) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("r#\"") {
        rest = &rest[i + 3..];
        let Some(j) = rest.find("\"#") else { break };
        let lit = &rest[..j];
        if lit.contains(needle) {
            out.push(lit.as_bytes().to_vec());
        }
        rest = &rest[j + 2..];
    }
    out
}

/// FNV-1a, for naming seed files by content.
fn fnv(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_report() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 120 ft: 300 corp: 40/2Kb lim: 43 exec/s: 2048 rss: 40Mb\n\
                   #9000\tDONE   cov: 130 ft: 320 corp: 42/2Kb lim: 43 exec/s: 3000 rss: 41Mb\n\
                   stat::number_of_executed_units: 9000\nstat::average_exec_per_sec:     3000\n";
        let o = parse_report("t", log);
        assert_eq!(
            (o.runs, o.execs_per_sec, o.cov, o.features, o.corpus),
            (9000, 3000, 130, 320, 42)
        );
    }

    #[test]
    fn finds_raw_literals() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.rs");
        fs::write(&f, "let a = r#\"FROM x\nRUN y\"#; let b = r#\"nope\"#;").unwrap();
        assert_eq!(raw_literals(&f, "FROM"), vec![b"FROM x\nRUN y".to_vec()]);
    }
}
