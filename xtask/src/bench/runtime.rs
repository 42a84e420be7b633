//! berth-oci against crun and runc: `run` of /bin/true on the busybox bundle, the
//! create/start/state/kill/delete steps, peak RSS and binary size.
//!
//! crun 1.8 refuses hybrid cgroups, so every contender runs inside one private mount
//! namespace whose /sys/fs/cgroup is a fresh tmpfs holding only the v1 hierarchies
//! (ENVIRONMENT.md); hyperfine itself is started in that view.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Report;
use crate::util;

/// Shell prologue building the cgroup-v1-only view, then `exec "$@"`.
const V1_VIEW: &str = r#"set -e
mount --make-rprivate /
mounts=$(awk '$3=="cgroup" {print $2, $4}' /proc/self/mounts)
links=$(for l in /sys/fs/cgroup/*; do [ -L "$l" ] && echo "$(basename "$l") $(readlink "$l")"; done; true)
# Unmount the host view first: shadowed mounts would still show in mountinfo.
umount -R /sys/fs/cgroup
mount -t tmpfs -o mode=755 berth-bench-cgroup /sys/fs/cgroup
echo "$mounts" | while read -r mp opts; do
  [ -n "$mp" ] || continue
  o=$(echo "$opts" | tr , '\n' | grep -Ev '^(rw|ro|nosuid|nodev|noexec|relatime)$' | paste -sd, -)
  mkdir -p "$mp"
  mount -t cgroup -o "$o" cgroup "$mp"
done
echo "$links" | while read -r name target; do if [ -n "$name" ]; then ln -s "$target" "/sys/fs/cgroup/$name"; fi; done
exec "$@"
"#;

fn in_v1_view(args: &[String]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", V1_VIEW, "v1-view"]).args(args);
    c
}

/// hyperfine inside the v1 view.
fn hyperfine(
    r: &mut Report,
    name: &str,
    commands: &[(&str, String)],
    extra: &[&str],
) -> Result<()> {
    r.hyperfine_via(name, commands, extra, in_v1_view)
}

/// Peak RSS (KiB) of one `run`, measured by /usr/bin/time inside the v1 view.
fn peak_rss_kib(cmd: &[String]) -> Result<f64> {
    let mut args = vec![
        "/usr/bin/time".to_string(),
        "-f".into(),
        "berth-rss %M".into(),
    ];
    args.extend(cmd.iter().cloned());
    let out = in_v1_view(&args).output().context("run /usr/bin/time")?;
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.strip_prefix("berth-rss "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no RSS figure from {cmd:?}: {err}"))
}

/// The scratch directory, removed at the end.
struct Work(PathBuf);

impl Work {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(r: &mut Report) -> Result<()> {
    let ours = util::target_dir().join("release/berth-oci");
    if !ours.is_file() {
        bail!(
            "{} missing (cargo build --release -p berth-oci)",
            ours.display()
        );
    }
    let crun = integration_tests::require_cmd("crun");
    let runc = integration_tests::require_cmd("runc");
    let work_dir = Report::dir().join("runtime-work");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)?;
    let work = Work(work_dir);
    let bundle = integration_tests::busybox_bundle(&work.path().join("bundle"), &["/bin/true"])?;
    let rt: Vec<(&str, PathBuf, PathBuf)> = vec![
        ("berth-oci", ours.clone(), work.path().join("root-berth")),
        ("crun", crun.clone(), work.path().join("root-crun")),
        ("runc", runc.clone(), work.path().join("root-runc")),
    ];
    let b = bundle.display().to_string();
    // The steps need a container that is still running at kill time.
    let sleeper =
        integration_tests::busybox_bundle(&work.path().join("sleeper"), &["sleep", "1000"])?;
    let bs = sleeper.display().to_string();
    let line = |bin: &Path, root: &Path, verb: &str, id: &str| -> String {
        match verb {
            "run" | "create" => format!(
                "{} --root {} {verb} --bundle {b} {id}",
                bin.display(),
                root.display()
            ),
            _ => format!("{} --root {} {verb}", bin.display(), root.display()) + &format!(" {id}"),
        }
    };
    let cmds: Vec<(&str, String)> = rt
        .iter()
        .map(|(l, bin, root)| (*l, line(bin, root, "run", &format!("bench-{l}"))))
        .collect();
    hyperfine(
        r,
        "runtime: run /bin/true (busybox bundle)",
        &cmds,
        &["-N", "--warmup", "5", "--runs", "60"],
    )?;

    // The steps, each with its own prepare (shell: the prepare needs sequencing).
    let del = |bin: &Path, root: &Path, id: &str| {
        format!(
            "{} --root {} delete --force {id}",
            bin.display(),
            root.display()
        )
    };
    let steps: [(&str, &str); 5] = [
        ("create", ""),
        ("start", "create"),
        ("state", "create"),
        ("kill", "create+start"),
        ("delete", "create"),
    ];
    for (verb, pre) in steps {
        let mut cmds = Vec::new();
        let mut prepares = Vec::new();
        for (l, bin, root) in &rt {
            let id = format!("step-{l}");
            let mut p = del(bin, root, &id);
            if pre.starts_with("create") {
                p += &format!(
                    " && {} --root {} create --bundle {bs} {id} </dev/null >/dev/null 2>&1",
                    bin.display(),
                    root.display()
                );
            }
            if pre == "create+start" {
                p += &format!(" && {}", line(bin, root, "start", &id));
            }
            let cmd = match verb {
                "kill" => line(bin, root, "kill", &id) + " KILL",
                "create" => format!(
                    "{} --root {} create --bundle {bs} {id} </dev/null >/dev/null 2>&1",
                    bin.display(),
                    root.display()
                ),
                _ => line(bin, root, verb, &id),
            };
            cmds.push((*l, cmd));
            prepares.push(p);
        }
        // hyperfine takes one --prepare per command, in order.
        let mut extra: Vec<&str> = vec!["--warmup", "3", "--runs", "30"];
        for p in &prepares {
            extra.push("--prepare");
            extra.push(p);
        }
        hyperfine(r, &format!("runtime: {verb}"), &cmds, &extra)?;
        for (l, bin, root) in &rt {
            let _ = in_v1_view(&[
                "sh".into(),
                "-c".into(),
                del(bin, root, &format!("step-{l}")),
            ])
            .status();
        }
    }

    // The median of a few runs: one run's figure moves by ~0.1 MiB with what else the
    // machine does (which file pages are resident).
    let mut rss = Vec::new();
    for (l, bin, root) in &rt {
        let mut kib = Vec::new();
        for n in 0..5 {
            let cmd: Vec<String> = line(bin, root, "run", &format!("rss-{l}-{n}"))
                .split(' ')
                .map(String::from)
                .collect();
            kib.push(peak_rss_kib(&cmd)?);
        }
        kib.sort_by(f64::total_cmp);
        rss.push((*l, kib[kib.len() / 2] / 1024.0));
    }
    r.metric(
        "runtime: peak RSS of run (median of 5)",
        "MiB",
        rss[0].1,
        &rss[1..],
    );
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1_048_576.0)
            .unwrap_or(f64::NAN)
    };
    r.metric(
        "runtime: binary size",
        "MiB",
        size(&ours),
        &[("crun", size(&crun)), ("runc", size(&runc))],
    );
    r.note("runtime: all three run in a private mount namespace whose /sys/fs/cgroup is a tmpfs with only the v1 hierarchies (crun refuses hybrid); berth-oci re-executes once from a detached read-only bind mount of itself for create/run/exec (CVE-2019-5736 protection), included in its figures");
    Ok(())
}
