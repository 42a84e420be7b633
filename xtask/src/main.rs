//! `cargo xtask`: the project's automation.
//!
//! - `test`: installs what the tests need, then fmt, clippy and every test
//! - `demo`: shows berth's main job end to end, as far as it exists
//! - `bench`: berth against its real peers with hyperfine; writes target/bench/report.md
//! - `fixtures`: prepares test fixtures (the busybox bundle)
//! - `lint`: fmt, clippy and cargo-deny
//! - `fuzz`: the coverage-guided fuzz targets of fuzz/ (cargo-fuzz), each for N seconds
//! - `audit`, `sweep`: the host leak audit and the stale test-root sweep `test` runs
//!
//! It is a developer tool, not part of berth.

mod audit;
mod bench;
mod demo;
mod fuzz;
mod install;
mod util;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <test|demo|bench|fixtures|lint|install|fuzz> [args]
  test [-- TEST-FILTER...]  install prerequisites, fmt check, clippy -D warnings, every test
  demo                      show berth's main job end to end
  bench [CASE...]           benchmarks against real peers -> target/bench/report.md
  fixtures                  make test fixtures under target/fixtures
  lint                      fmt check, clippy, cargo deny check
  install                   only install the prerequisites
  audit                     list berth objects on the host (fails if any; test runs it)
  sweep [--dry-run] [ROOT...]  remove test roots of killed test runs (test runs it first)
  fuzz [--seconds N] [--release] [--asan] [TARGET...]
                            run the fuzz targets N seconds each (crash: fails);
                            --asan: release build with AddressSanitizer (nightly)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("fixtures") => fixtures().map(|_| ()),
        Some("lint") => lint(),
        Some("install") => install::prerequisites(),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("audit") => audit::check(&audit::Snapshot::default(), &util::target_dir()),
        Some("sweep") => {
            let dry_run = args.iter().any(|a| a == "--dry-run");
            let only: Vec<std::path::PathBuf> = args[1..]
                .iter()
                .filter(|a| !a.starts_with("--"))
                .map(std::path::PathBuf::from)
                .collect();
            audit::sweep(
                std::time::SystemTime::now(),
                Some(&berth_bin()),
                &only,
                dry_run,
            )
        }
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The one clippy invocation, shared by `test` and `lint`.
const CLIPPY: &[&str] = &[
    "clippy",
    "--workspace",
    "--all-targets",
    "--locked",
    "--",
    "-D",
    "warnings",
];

/// Seconds per fuzz target in `test` (the whole step, build included, stays < 5 min).
const FUZZ_CI_SECONDS: &str = "4";

/// Steps of `test`, each reported in the summary.
fn test(filters: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    let run_start = std::time::SystemTime::now();
    let mut summary: Vec<(String, bool, f64)> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<()>| {
        util::banner(name);
        let t = std::time::Instant::now();
        let result = f();
        if let Err(err) = &result {
            eprintln!("xtask: {name} failed: {err:#}");
        }
        summary.push((name.to_owned(), result.is_ok(), t.elapsed().as_secs_f64()));
        result.is_ok()
    };
    let filters = filters
        .iter()
        .skip_while(|a| *a == "--")
        .cloned()
        .collect::<Vec<_>>();

    // a step that fails stops the run only when later steps cannot mean anything
    let ok = step("install prerequisites", &mut || install::prerequisites())
        && step("build binaries", &mut || {
            util::cargo(&["build", "--workspace", "--bins", "--locked"])
        });
    if ok {
        // roots of killed earlier runs would otherwise count as this run's leaks
        step("sweep stale test roots", &mut || {
            audit::sweep(run_start, Some(&berth_bin()), &[], false)
        });
        step("fixtures", &mut || fixtures().map(|_| ()));
        step("fmt", &mut || util::cargo(&["fmt", "--all", "--check"]));
        step("clippy", &mut || util::cargo(CLIPPY));
        let before = audit::Snapshot::take();
        step("tests", &mut || run_tests(&filters));
        step("doc tests", &mut || {
            util::cargo(&["test", "--workspace", "--doc", "--locked"])
        });
        step("leak audit", &mut || {
            audit::check(&before, &util::target_dir())
        });
        // a short pass: new crashes on inputs near the seeds, and the targets build
        step("fuzz (short pass)", &mut || {
            fuzz::run(&["--seconds".into(), FUZZ_CI_SECONDS.into()])
        });
    }

    println!();
    let failed: Vec<_> = summary
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(n, _, _)| n.as_str())
        .collect();
    for (name, ok, secs) in &summary {
        println!(
            "  {:<24} {:>6} {:>8.1}s",
            name,
            if *ok { "ok" } else { "FAILED" },
            secs
        );
    }
    let total = started.elapsed().as_secs_f64();
    if failed.is_empty() && ok {
        println!(
            "xtask test: all {} steps passed in {total:.0}s",
            summary.len()
        );
        Ok(())
    } else {
        bail!(
            "xtask test: FAILED ({}) after {total:.0}s",
            failed.join(", ")
        )
    }
}

/// The `berth` binary `test` builds first.
fn berth_bin() -> std::path::PathBuf {
    util::target_dir().join("debug").join("berth")
}

fn run_tests(filters: &[String]) -> Result<()> {
    // nextest gives each test its own process and kills hung ones; cargo test otherwise
    let nextest = util::command_ok("cargo", &["nextest", "--version"]);
    let mut args: Vec<&str> = if nextest {
        vec![
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-tests=warn",
        ]
    } else {
        vec!["test", "--workspace", "--locked"]
    };
    if !filters.is_empty() {
        if !nextest {
            args.push("--");
        }
        args.extend(filters.iter().map(String::as_str));
    }
    // tests write figures (crash rounds, load timings) here as JSON lines
    let figures = util::target_dir().join("test-figures");
    let _ = std::fs::remove_dir_all(&figures);
    std::fs::create_dir_all(&figures)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let result = util::run(
        std::process::Command::new(cargo)
            .args(&args)
            .current_dir(util::workspace_root())
            .env(integration_tests::FIGURES_ENV, &figures),
    );
    print_figures(&figures);
    result
}

/// Prints the figures the tests wrote (`{"name","value","unit"}` lines) as a table,
/// sorted by name.
fn print_figures(dir: &std::path::Path) {
    let mut rows: Vec<(String, f64, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or("?").to_owned(),
                        v["value"].as_f64().unwrap_or(f64::NAN),
                        v["unit"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    println!("\ntest figures ({}):", dir.display());
    for (name, value, unit) in rows {
        println!("  {name:<width$} {value:>12.1} {unit}");
    }
}

/// Makes the fixtures under target/fixtures and returns that directory:
/// `busybox-bundle/` (an OCI bundle running /bin/true) and `images/` (an OCI image
/// layout holding `busybox:latest`, made by berth-image, the same digest every time).
pub fn fixtures() -> Result<std::path::PathBuf> {
    let dir = util::target_dir().join("fixtures");
    let bundle = dir.join("busybox-bundle");
    if bundle.join("config.json").is_file() {
        println!("fixtures: {} exists", bundle.display());
    } else {
        let tmp = dir.join("busybox-bundle.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        integration_tests::busybox_bundle(&tmp, &["/bin/true"])?;
        std::fs::rename(&tmp, &bundle)?;
        println!("fixtures: made {}", bundle.display());
    }
    let store = berth_image::Store::open(&dir.join("images"))?;
    let desc = berth_image::fixtures::busybox_image(&store, "busybox:latest")?;
    println!(
        "fixtures: busybox:latest in {} is {}",
        store.root().display(),
        desc.digest()
    );
    Ok(dir)
}

fn lint() -> Result<()> {
    util::cargo(&["fmt", "--all", "--check"])?;
    util::cargo(CLIPPY)?;
    if !util::command_ok("cargo", &["deny", "--version"]) {
        util::banner("installing cargo-deny");
        util::cargo(&["install", "--locked", "cargo-deny"])?;
    }
    // advisories need the network database; offline it is skipped, the rest must pass
    util::cargo(&["deny", "check", "licenses", "bans", "sources"])?;
    if util::command_ok("cargo", &["deny", "check", "advisories"]) {
        println!("lint: advisories clean");
    } else {
        println!("lint: advisories check failed or offline (see `cargo deny check advisories`)");
    }
    Ok(())
}
