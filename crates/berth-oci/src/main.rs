//! `berth-oci`: a runc-compatible OCI runtime binary over berth-runtime.
//!
//! Engines (podman, containerd's runc shim, CRI-O, dockerd) invoke it exactly as they
//! invoke runc. It parses runc's command line and maps each verb onto berth-runtime; it
//! holds no container logic of its own.

mod cli;
mod log;
mod reexec;
mod specgen;

use anyhow::{Context, Result, bail};
use berth_runtime::container as c;
use berth_runtime::{State, Status};
use cli::{Cli, Cmd};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `println!` panics when stdout is gone (a reader closed the pipe early); this returns
/// the write error instead, and `main` turns a broken pipe into a quiet exit.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // CVE-2019-5736: verbs that exec into a container run from a sealed memfd copy.
    if matches!(cli.cmd, Cmd::Create(_) | Cmd::Run(_) | Cmd::Exec(_))
        && let Err(e) = reexec::ensure_sealed()
    {
        log::error(&cli, &format!("protect the runtime binary: {e:#}"));
        return ExitCode::from(1);
    }
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&cli, &format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// Whether the error is stdout's reader going away (`berth-oci events | head -1`).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn abs(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn dispatch(cli: &Cli) -> Result<u8> {
    if cli.systemd_cgroup {
        bail!(
            "--systemd-cgroup: the systemd cgroup driver is not supported (no systemd on this host and no driver in this build)"
        );
    }
    let root = match &cli.root {
        Some(r) => abs(r),
        None => berth_runtime::rootless::default_state_root("berth-oci"),
    };
    match &cli.cmd {
        Cmd::Create(a) => {
            let o = create_opts(&root, &a.id, &a.common)?;
            c::create(&o).with_context(|| format!("create container {}", a.id))?;
            Ok(0)
        }
        Cmd::Run(a) => {
            let o = create_opts(&root, &a.id, &a.common)?;
            let code = c::run(&o, a.detach).with_context(|| format!("run container {}", a.id))?;
            Ok(code.clamp(0, 255) as u8)
        }
        Cmd::Start(a) => {
            c::start(&root, &a.id).with_context(|| format!("start container {}", a.id))?;
            Ok(0)
        }
        Cmd::State(a) => {
            let s = c::state(&root, &a.id)?;
            out!("{}", serde_json::to_string_pretty(&s.to_spec_json())?);
            Ok(0)
        }
        Cmd::Kill(a) => {
            let sig = c::parse_signal(a.signal.as_deref().unwrap_or("SIGTERM"))?;
            c::kill(&root, &a.id, sig, a.all)?;
            Ok(0)
        }
        Cmd::Delete(a) => {
            c::delete(&root, &a.id, a.force)?;
            Ok(0)
        }
        Cmd::Exec(a) => exec(&root, a),
        Cmd::Ps(a) => {
            let s = c::state(&root, &a.id)?;
            let pids = c::pids(&s)?;
            if a.format == "json" {
                out!("{}", serde_json::to_string(&pids)?);
                return Ok(0);
            }
            let mut args = a.ps_args.clone();
            if args.is_empty() {
                args.push("-ef".into());
            }
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .context("ps output has no PID column")?;
            out!("{header}");
            for l in lines {
                if l.split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| pids.contains(&p))
                {
                    out!("{l}");
                }
            }
            Ok(0)
        }
        Cmd::List(a) => {
            let all = c::list(&root)?;
            if a.quiet {
                for s in &all {
                    out!("{}", s.id);
                }
            } else if a.format == "json" {
                let v: Vec<_> = all.iter().map(State::to_spec_json).collect();
                out!("{}", serde_json::to_string(&v)?);
            } else {
                out!(
                    "{:<20} {:<8} {:<10} {:<40} {:<30} OWNER",
                    "ID",
                    "PID",
                    "STATUS",
                    "BUNDLE",
                    "CREATED"
                );
                for s in &all {
                    let pid = if s.status == Status::Stopped {
                        0
                    } else {
                        s.pid
                    };
                    out!(
                        "{:<20} {:<8} {:<10} {:<40} {:<30} {}",
                        s.id,
                        pid,
                        s.status,
                        s.bundle.display(),
                        s.created,
                        if s.owner.is_empty() { "root" } else { &s.owner }
                    );
                }
            }
            Ok(0)
        }
        Cmd::Pause(a) => {
            c::pause(&root, &a.id)?;
            Ok(0)
        }
        Cmd::Resume(a) => {
            c::resume(&root, &a.id)?;
            Ok(0)
        }
        Cmd::Update(a) => {
            let Some(r) = &a.resources else {
                bail!("update: only --resources FILE|- is supported (per-flag updates are not)");
            };
            let mut data = Vec::new();
            if r == "-" {
                std::io::stdin().read_to_end(&mut data)?;
            } else {
                data = std::fs::read(r).with_context(|| format!("read {r}"))?;
            }
            let de = &mut serde_json::Deserializer::from_slice(&data);
            let res: oci_spec::runtime::LinuxResources = serde_path_to_error::deserialize(de)
                .map_err(|e| anyhow::anyhow!("invalid --resources: {}: {}", e.path(), e.inner()))?;
            c::update(&root, &a.id, &res)?;
            Ok(0)
        }
        Cmd::Events(a) => {
            if a.stats {
                out!("{}", c::stats(&root, &a.id)?);
                return Ok(0);
            }
            let every = parse_interval(&a.interval)?;
            // As runc: stats every interval, and an "oom" event as soon as the kernel
            // reports an OOM kill in the container's memory cgroup.
            let mut oom = berth_runtime::oom::OomWatch::new(&c::state(&root, &a.id)?)?;
            loop {
                out!("{}", c::stats(&root, &a.id)?);
                let until = std::time::Instant::now() + every;
                loop {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match oom.as_mut() {
                        Some(w) => {
                            for _ in 0..w.wait(left.as_millis().min(i32::MAX as u128) as i32)? {
                                out!("{}", serde_json::json!({"type": "oom", "id": a.id}));
                            }
                        }
                        None => std::thread::sleep(left),
                    }
                }
            }
        }
        Cmd::Spec(a) => {
            let dir = a.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
            let p = dir.join("config.json");
            if p.exists() {
                bail!("file {} exists. Remove it first", p.display());
            }
            std::fs::write(
                &p,
                serde_json::to_string_pretty(&specgen::default_spec(a.rootless))?,
            )
            .with_context(|| format!("write {}", p.display()))?;
            Ok(0)
        }
        Cmd::Features => {
            out!("{}", serde_json::to_string_pretty(&specgen::features())?);
            Ok(0)
        }
    }
}

/// runc's `--interval` (a Go duration such as `5s`, `500ms`, `1m`).
fn parse_interval(s: &str) -> Result<std::time::Duration> {
    let (num, unit) = s
        .find(|ch: char| !ch.is_ascii_digit() && ch != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num
        .parse()
        .with_context(|| format!("--interval {s:?}: not a duration"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => bail!("--interval {s:?}: unknown unit {unit:?}"),
    };
    if secs <= 0.0 {
        bail!("--interval {s:?}: must be positive");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn create_opts(root: &Path, id: &str, a: &cli::CreateArgs) -> Result<c::CreateOpts> {
    Ok(c::CreateOpts {
        root: root.to_path_buf(),
        id: id.to_string(),
        bundle: abs(a.bundle.as_deref().unwrap_or(Path::new("."))),
        pid_file: a.pid_file.as_deref().map(abs),
        console_socket: a.console_socket.as_deref().map(abs),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
    })
}

fn exec(root: &Path, a: &cli::ExecArgs) -> Result<u8> {
    let st = c::state(root, &a.id)?;
    let mut p: oci_spec::runtime::Process = if let Some(f) = &a.process {
        let data = std::fs::read(f).with_context(|| format!("read --process {}", f.display()))?;
        let de = &mut serde_json::Deserializer::from_slice(&data);
        serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!(
                "invalid --process {}: {}: {}",
                f.display(),
                e.path(),
                e.inner()
            )
        })?
    } else {
        let mut p = st.process.clone().unwrap_or_default();
        if a.command.is_empty() {
            bail!("exec: no command given (pass ARGS or --process)");
        }
        p.set_args(Some(a.command.clone()));
        p.set_terminal(Some(a.tty));
        let mut env = p.env().clone().unwrap_or_default();
        for e in &a.env {
            let k = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(e.clone());
        }
        p.set_env(Some(env));
        if let Some(cwd) = &a.cwd {
            p.set_cwd(cwd.clone());
        }
        if let Some(u) = &a.user {
            let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
            let mut user = p.user().clone();
            user.set_uid(uid.parse().context("--user: uid must be numeric")?);
            user.set_gid(gid.parse().context("--user: gid must be numeric")?);
            user.set_additional_gids(if a.additional_gids.is_empty() {
                None
            } else {
                Some(a.additional_gids.clone())
            });
            p.set_user(user);
        }
        if a.no_new_privs {
            p.set_no_new_privileges(Some(true));
        }
        p
    };
    if p.args().as_ref().is_none_or(|v| v.is_empty()) {
        bail!("exec: process.args is empty");
    }
    if a.tty {
        p.set_terminal(Some(true));
    }
    let o = c::ExecOpts {
        process: p,
        console_socket: a.console_socket.as_deref().map(abs),
        detach: a.detach,
        pid_file: a.pid_file.as_deref().map(abs),
        preserve_fds: a.preserve_fds,
    };
    let code = c::exec(root, &a.id, &o).with_context(|| format!("exec in container {}", a.id))?;
    Ok(code.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::parse_interval;
    use std::time::Duration;

    #[test]
    fn intervals_are_go_durations() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_interval("3").unwrap(), Duration::from_secs(3));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5x").is_err());
    }
}
