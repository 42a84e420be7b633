//! `cargo xtask bench`: berth against its real peers, every contender of a case in the
//! same hyperfine run (twice, in opposite orders, times pooled), then
//! `target/bench/report.md` and `target/bench/ratios.svg`.
//!
//! Each capability adds a module with `pub fn run(r: &mut Report) -> Result<()>` and a
//! line in [`SUITES`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

mod build;
mod chart;
mod engine;
mod engines;
mod image;
mod network;
mod orchestrator;
mod registry;
mod runtime;

/// (name, function) of every benchmark suite; `cargo xtask bench NAME` runs a subset.
type Suite = fn(&mut Report) -> Result<()>;

const SUITES: &[(&str, Suite)] = &[
    ("runtime", runtime::run),
    ("image", image::run),
    ("registry", registry::run),
    ("engines", engines::run),
    ("build", build::run),
    ("engine", engine::run),
    ("orchestrator", orchestrator::run),
    ("network", network::run),
];

/// One measured figure of one contender.
#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub value: f64,
    /// Spread for time figures (stddev), none for counts and sizes.
    pub spread: Option<f64>,
}

/// A case: berth's figure first, then the peers'.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub unit: String,
    pub figures: Vec<Figure>,
}

impl Case {
    /// berth's figure divided by each peer's (below 1.0 means berth is better).
    pub fn ratios(&self) -> Vec<(String, f64)> {
        let Some(ours) = self.figures.first() else {
            return Vec::new();
        };
        self.figures[1..]
            .iter()
            .filter(|peer| peer.value > 0.0)
            .map(|peer| (peer.label.clone(), ours.value / peer.value))
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<Case>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn dir() -> PathBuf {
        util::target_dir().join("bench")
    }

    /// Times `commands` (berth's first) in two hyperfine rounds of opposite order and
    /// records the medians of the pooled times.
    /// `extra` goes to hyperfine as is (e.g. `--prepare`, `--runs`, `-N`).
    pub fn hyperfine(
        &mut self,
        name: &str,
        commands: &[(&str, String)],
        extra: &[&str],
    ) -> Result<()> {
        self.hyperfine_via(name, commands, extra, |argv| {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        })
    }

    /// [`Report::hyperfine`] with the hyperfine command line (`argv[0]` is
    /// "hyperfine") handed to `wrap`, for cases that must run inside a prepared
    /// environment such as a private mount namespace.
    pub fn hyperfine_via(
        &mut self,
        name: &str,
        commands: &[(&str, String)],
        extra: &[&str],
        wrap: impl Fn(&[String]) -> Command,
    ) -> Result<()> {
        if commands.is_empty() {
            bail!("bench case {name}: no commands");
        }
        let dir = Self::dir();
        std::fs::create_dir_all(&dir)?;
        util::banner(&format!("bench: {name}"));
        // Two rounds in opposite orders, times pooled: on a shared machine a load change
        // during one contender's block would otherwise land on that contender alone.
        let forward: Vec<usize> = (0..commands.len()).collect();
        let backward: Vec<usize> = forward.iter().rev().copied().collect();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); commands.len()];
        let mut rounds = vec![forward];
        if commands.len() > 1 {
            rounds.push(backward);
        }
        for (round, order) in rounds.iter().enumerate() {
            let json = dir.join(format!("{}.round{round}.json", slug(name)));
            let mut argv: Vec<String> = ["hyperfine", "--style", "basic", "--export-json"]
                .into_iter()
                .map(String::from)
                .collect();
            argv.push(json.display().to_string());
            argv.extend(round_args(extra, commands.len(), order, rounds.len()));
            for &i in order {
                let (label, command) = &commands[i];
                argv.extend([
                    "--command-name".to_owned(),
                    (*label).to_owned(),
                    command.clone(),
                ]);
            }
            util::run(&mut wrap(&argv)).with_context(|| format!("hyperfine for {name}"))?;
            let parsed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
            let results = parsed["results"]
                .as_array()
                .context("hyperfine json without results")?;
            for (r, &i) in results.iter().zip(order) {
                times[i].extend(
                    r["times"]
                        .as_array()
                        .context("hyperfine json without times")?
                        .iter()
                        .filter_map(|t| t.as_f64()),
                );
            }
        }
        let figures = times
            .iter()
            .zip(commands)
            .map(|(t, (label, _))| Figure {
                label: (*label).to_owned(),
                value: median(t) * 1000.0,
                spread: Some(stddev(t) * 1000.0),
            })
            .collect();
        self.cases.push(Case {
            name: name.to_owned(),
            unit: "ms".into(),
            figures,
        });
        Ok(())
    }

    /// Records a non-time figure (peak RSS, binary size), berth's value first.
    pub fn metric(&mut self, name: &str, unit: &str, ours: f64, peers: &[(&str, f64)]) {
        let mut figures = vec![Figure {
            label: "berth".into(),
            value: ours,
            spread: None,
        }];
        figures.extend(peers.iter().map(|(l, v)| Figure {
            label: (*l).to_owned(),
            value: *v,
            spread: None,
        }));
        self.cases.push(Case {
            name: name.to_owned(),
            unit: unit.to_owned(),
            figures,
        });
    }

    /// A line of context printed under the table (setup, caveats).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn markdown(&self) -> String {
        let mut md = String::from("# berth benchmarks\n\n");
        let _ = writeln!(
            md,
            "Medians; ratio = berth / peer (below 1.0: berth is faster or smaller).\n"
        );
        md.push_str("| case | berth | peers | ratios |\n|---|---|---|---|\n");
        for case in &self.cases {
            let fmt = |f: &Figure| match f.spread {
                Some(s) => format!("{} {:.2} ± {:.2} {}", f.label, f.value, s, case.unit),
                None => format!("{} {:.2} {}", f.label, f.value, case.unit),
            };
            let ours = case.figures.first().map(fmt).unwrap_or_default();
            let peers: Vec<String> = case.figures.iter().skip(1).map(fmt).collect();
            let ratios: Vec<String> = case
                .ratios()
                .iter()
                .map(|(l, r)| format!("{r:.2}x {l}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                case.name,
                ours,
                peers.join("<br>"),
                ratios.join("<br>")
            );
        }
        if !self.notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md.push_str("\n![ratios](ratios.svg)\n");
        md
    }
}

/// `berth network rm bridge` on a bench root (see [`PodmanPair::remove_bridge`]).
pub fn remove_bridge(berth: &std::path::Path, root: &std::path::Path, state: &std::path::Path) {
    let _ = Command::new(berth)
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(state)
        .args(["network", "rm", "bridge"])
        .output();
}

/// hyperfine options for one round of [`Report::hyperfine_via`]: per-command
/// `--prepare`/`--cleanup` lists follow the round's command `order`, and `--runs N` is
/// split between the `rounds`.
fn round_args(extra: &[&str], commands: usize, order: &[usize], rounds: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut per_command: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra.get(i + 1).copied();
        match (flag, value) {
            ("--prepare" | "--cleanup", Some(v)) => {
                match per_command.iter_mut().find(|(f, _)| *f == flag) {
                    Some((_, vs)) => vs.push(v),
                    None => per_command.push((flag, vec![v])),
                }
                i += 2;
            }
            ("--runs" | "-r", Some(v)) => {
                let n: usize = v.parse().unwrap_or(10);
                out.extend(["--runs".to_owned(), n.div_ceil(rounds).max(2).to_string()]);
                i += 2;
            }
            _ => {
                out.push(flag.to_owned());
                i += 1;
            }
        }
    }
    for (flag, values) in per_command {
        if values.len() == commands {
            for &c in order {
                out.extend([flag.to_owned(), values[c].to_owned()]);
            }
        } else {
            for v in values {
                out.extend([flag.to_owned(), v.to_owned()]);
            }
        }
    }
    out
}

fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    match t.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => t[n / 2],
        n => (t[n / 2 - 1] + t[n / 2]) / 2.0,
    }
}

fn stddev(times: &[f64]) -> f64 {
    let n = times.len() as f64;
    if times.len() < 2 {
        return 0.0;
    }
    let mean = times.iter().sum::<f64>() / n;
    (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// Peak RSS in MiB of one run of the shell command `command`, as GNU time reports it.
///
/// Measured from a small forked parent on purpose: a child spawned straight from xtask
/// (vfork-style) starts with xtask's own RSS high-water mark, which floors the figure.
pub fn peak_rss_mib(command: &str) -> Result<f64> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "berth-peak-rss %M", "sh", "-c"])
        .arg(format!("exec {command} >/dev/null 2>&1"))
        .output()
        .context("running /usr/bin/time (package `time`)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("`{command}` failed ({}): {err}", out.status);
    }
    let kib: f64 = err
        .lines()
        .find_map(|l| l.strip_prefix("berth-peak-rss "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no peak RSS from /usr/bin/time for `{command}`: {err}"))?;
    Ok(kib / 1024.0)
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

pub fn run(only: &[String]) -> Result<()> {
    crate::install::prerequisites()?;
    util::cargo(&["build", "--release", "--workspace", "--bins", "--locked"])?;
    crate::fixtures()?;
    let mut report = Report::default();
    let mut failures = Vec::new();
    for (name, suite) in SUITES {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        if let Err(err) = suite(&mut report) {
            eprintln!("bench {name} failed: {err:#}");
            report.note(format!("suite {name} failed: {err:#}"));
            failures.push(*name);
        }
    }
    if SUITES.is_empty() {
        report.note("no benchmark suites are registered yet");
    }
    let dir = Report::dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), report.markdown())?;
    std::fs::write(dir.join("ratios.svg"), chart::ratios_svg(&report.cases))?;
    println!("{}", report.markdown());
    println!("bench: wrote {}", dir.join("report.md").display());
    if !failures.is_empty() {
        bail!("bench suites failed: {failures:?}");
    }
    Ok(())
}

/// For suites comparing berth with podman: release binaries, a fresh work directory,
/// a berth root and a private podman storage both holding `localhost/busybox:latest`,
/// and a containers.conf podman can run with here.
pub struct PodmanPair {
    pub work: PathBuf,
    pub berth: PathBuf,
    pub oci: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub proot: PathBuf,
    pub prun: PathBuf,
    pub conf: PathBuf,
}

impl PodmanPair {
    /// The paths of suite `name` (nothing made yet), so a suite can clean up first.
    pub fn paths(name: &str) -> Result<Self> {
        let release = util::target_dir().join("release");
        let (berth, oci) = (release.join("berth"), release.join("berth-oci"));
        if !berth.is_file() || !oci.is_file() {
            bail!("bench {name} needs release builds of berth and berth-oci");
        }
        let work = Report::dir().join(name);
        Ok(PodmanPair {
            root: work.join("berth-root"),
            state: work.join("berth-state"),
            proot: work.join("podman-root"),
            prun: work.join("podman-run"),
            conf: work.join("containers.conf"),
            work,
            berth,
            oci,
        })
    }

    /// A fresh work directory with busybox in both stores.
    pub fn prepare(self) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&self.work);
        std::fs::create_dir_all(&self.work)?;
        // podman fails here with the default nofile ulimit (ENVIRONMENT.md)
        std::fs::write(
            &self.conf,
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
        )?;
        let store = berth_image::Store::open(&self.root.join("images"))?;
        berth_image::fixtures::busybox_image(&store, "localhost/busybox:latest")?;
        util::run(
            Command::new("skopeo")
                .arg("copy")
                .arg(format!(
                    "oci:{}:localhost/busybox:latest",
                    self.root.join("images").display()
                ))
                .arg(format!(
                    "containers-storage:[overlay@{}+{}]localhost/busybox:latest",
                    self.proot.display(),
                    self.prun.display()
                )),
        )
        .context("importing busybox into podman's storage")?;
        Ok(self)
    }

    /// `berth` with this root, state and runtime, as a shell command prefix.
    pub fn berth_shell(&self) -> String {
        format!(
            "env BERTH_RUNTIME={} {} --root {} --state {}",
            self.oci.display(),
            self.berth.display(),
            self.root.display(),
            self.state.display()
        )
    }

    /// `berth network rm bridge` on this root: its default bridge outlives the suite's
    /// containers (as docker0 does) and would stay on the host after the bench.
    pub fn remove_bridge(&self) {
        remove_bridge(&self.berth, &self.root, &self.state);
    }

    /// `podman` with this storage and config, as a shell command prefix.
    pub fn podman_shell(&self) -> String {
        format!(
            "env CONTAINERS_CONF={} podman --root {} --runroot {} --storage-driver overlay",
            self.conf.display(),
            self.proot.display(),
            self.prun.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_args_reorder_per_command_prepares_and_split_runs() {
        let extra = [
            "--warmup",
            "1",
            "--runs",
            "10",
            "--prepare",
            "a",
            "--prepare",
            "b",
        ];
        assert_eq!(
            round_args(&extra, 2, &[1, 0], 2),
            [
                "--warmup",
                "1",
                "--runs",
                "5",
                "--prepare",
                "b",
                "--prepare",
                "a"
            ]
        );
        // one --prepare for all commands stays as it is
        assert_eq!(
            round_args(&["--prepare", "x"], 2, &[1, 0], 2),
            ["--prepare", "x"]
        );
    }

    #[test]
    fn median_and_stddev() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((stddev(&[1.0, 3.0]) - 2f64.sqrt()).abs() < 1e-12);
    }
}
