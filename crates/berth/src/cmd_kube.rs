//! kubectl-like verbs over berth-orchestrator: `serve` runs the control loops,
//! `apply`/`get`/`delete`/`scale` read and change the desired state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use berth_orchestrator::manifest::{self, Body, LabelSelector};
use berth_orchestrator::store::{self, Stored};
use serde_json::{Value, json};

use crate::Global;

/// kubectl-like verbs.
#[derive(Debug, clap::Subcommand)]
pub enum KubeCommand {
    /// Run the control loops that make manifests real (foreground; Ctrl-C stops the
    /// loops, not the containers).
    Serve {
        /// Seconds between passes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Create or update objects from manifests (file, directory, or - for stdin).
    Apply {
        /// Manifest file, directory of .yaml/.yml/.json files, or -.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List objects like kubectl get.
    Get {
        /// pods, deployments, replicasets, services, configmaps, secrets, namespaces,
        /// jobs, hpa, pvc (singular and short names work).
        kind: String,
        /// One object.
        name: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Label selector (app=web,tier!=db).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// wide, json or yaml.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Delete objects named in manifests, or KIND NAME.
    Delete {
        /// Manifests whose objects to delete.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// KIND NAME...
        args: Vec<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Set the replicas of a Deployment or ReplicaSet.
    Scale {
        /// deployment/NAME or replicaset/NAME (or KIND NAME).
        target: Vec<String>,
        /// New replica count.
        #[arg(long)]
        replicas: i64,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Show one object in detail, with its events (like kubectl describe).
    Describe {
        /// Kind (pod, deployment, job, ...), or KIND/NAME.
        kind: String,
        /// Object name (all of the kind when left out).
        name: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Watch, list or undo the rollouts of a Deployment.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
}

/// `rollout` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum RolloutAction {
    /// Wait until the Deployment's newest template runs everywhere and is ready.
    Status {
        /// deployment/NAME.
        target: Vec<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Give up after this many seconds (0: never).
        #[arg(long, default_value_t = 0.0)]
        timeout: f64,
    },
    /// List the Deployment's revisions.
    History {
        /// deployment/NAME.
        target: Vec<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Show this revision's pod template.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Go back to the previous revision (or --to-revision).
    Undo {
        /// deployment/NAME.
        target: Vec<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Revision to go back to (default: the one before the current).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
}

pub fn run(g: &Global, cmd: KubeCommand) -> anyhow::Result<u8> {
    match cmd {
        KubeCommand::Serve { interval } => serve(g, interval),
        KubeCommand::Apply { files } => apply(g, &files),
        KubeCommand::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            selector,
            output,
        } => {
            let ns = (!all_namespaces).then_some(namespace.as_str());
            get(
                g,
                &kind,
                name.as_deref(),
                ns,
                selector.as_deref(),
                output.as_deref(),
            )
        }
        KubeCommand::Delete {
            files,
            args,
            namespace,
        } => delete(g, &files, &args, &namespace),
        KubeCommand::Scale {
            target,
            replicas,
            namespace,
        } => scale(g, &target, replicas, &namespace),
        KubeCommand::Describe {
            kind,
            name,
            namespace,
        } => crate::cmd_kube_describe::describe(g, &kind, name.as_deref(), &namespace),
        KubeCommand::Rollout { action } => match action {
            RolloutAction::Status {
                target,
                namespace,
                timeout,
            } => rollout_status(g, &target, &namespace, timeout),
            RolloutAction::History {
                target,
                namespace,
                revision,
            } => rollout_history(g, &target, &namespace, revision),
            RolloutAction::Undo {
                target,
                namespace,
                to_revision,
            } => rollout_undo(g, &target, &namespace, to_revision),
        },
    }
}

fn lock_path(g: &Global) -> PathBuf {
    g.state.join("serve.lock")
}

/// Holds the serve lock: a second `berth serve` on the same root refuses to start and
/// `apply` can tell whether anyone reconciles.
fn try_lock(g: &Global) -> anyhow::Result<Option<std::fs::File>> {
    std::fs::create_dir_all(&g.state).with_context(|| format!("create {}", g.state.display()))?;
    let path = lock_path(g);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock.unlock().map_err(|(_, e)| e)?)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

fn kick_path(g: &Global) -> PathBuf {
    g.state.join("serve.kick")
}

/// When the desired state last changed (the kick file's mtime).
fn kicked(g: &Global) -> Option<SystemTime> {
    std::fs::metadata(kick_path(g))
        .and_then(|m| m.modified())
        .ok()
}

/// Tells a running serve to reconcile now rather than at its next interval.
fn kick(g: &Global) {
    let _ = std::fs::write(kick_path(g), b"");
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn serve(g: &Global, interval: f64) -> anyhow::Result<u8> {
    let path = lock_path(g);
    std::fs::create_dir_all(&g.state).with_context(|| format!("create {}", g.state.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let _lock = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            bail!(
                "berth serve is already running for state {}",
                g.state.display()
            )
        }
        Err((_, e)) => return Err(e).with_context(|| format!("lock {}", path.display())),
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_stop as *const () as libc::sighandler_t) };
    }
    let eng = berth_engine::Engine::open(&g.root, &g.state)?;
    let launcher = berth_engine::monitor::self_launcher([
        "--root".as_ref(),
        g.root.as_os_str(),
        "--state".as_ref(),
        g.state.as_os_str(),
        "internal-monitor".as_ref(),
    ])?;
    let images = CliImages { g: g.clone() };
    let mut ctl = berth_orchestrator::controller::Controller::new(&eng, launcher, &images)?;
    eprintln!("berth serve: reconciling (state {})", g.state.display());
    let pause = Duration::from_secs_f64(interval.max(0.05));
    while !STOP.load(Ordering::SeqCst) {
        if let Err(e) = ctl.reconcile() {
            eprintln!("berth serve: {e}");
        }
        // wait for the interval, or less when apply/delete/scale changed something
        let until = std::time::Instant::now() + pause;
        let seen = kicked(g);
        while std::time::Instant::now() < until && !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            if kicked(g) != seen {
                break;
            }
        }
    }
    eprintln!("berth serve: stopped (containers keep running; start serve again to adopt them)");
    Ok(0)
}

/// Images for the controller: from the store, pulled as `berth pull` does.
struct CliImages {
    g: Global,
}

impl berth_orchestrator::controller::Images for CliImages {
    fn get(
        &self,
        reference: &str,
        policy: &str,
    ) -> Result<(berth_image::Store, berth_image::Image), String> {
        let store = crate::cmd_image::store(&self.g).map_err(|e| format!("{e:#}"))?;
        let found =
            berth_engine::container::find_image(&store, reference).map_err(|e| e.to_string())?;
        match (found, policy) {
            (Some(img), "IfNotPresent" | "Never") => return Ok((store, img)),
            (None, "Never") => {
                return Err(format!(
                    "ErrImageNeverPull: image {reference} is not present and imagePullPolicy is Never"
                ));
            }
            (found, _) => {
                let args = crate::cmd_registry::PullArgs {
                    platform: "linux/amd64".into(),
                    quiet: true,
                    insecure: false,
                    no_unpack: false,
                    reference: reference.to_string(),
                };
                let pulled = crate::cmd_registry::run(
                    &self.g,
                    crate::cmd_registry::RegistryCommand::Pull(args),
                );
                if let Err(e) = pulled {
                    // Always with a local copy: like a kubelet whose registry is down, use it
                    if let Some(img) = found {
                        return Ok((store, img));
                    }
                    return Err(format!("ErrImagePull: {reference}: {e:#}"));
                }
            }
        }
        let img = berth_engine::container::find_image(&store, reference)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("image {reference} not in the store after pulling it"))?;
        Ok((store, img))
    }
}

/// Reads every manifest named (files, directories, `-`) as (source, text).
fn read_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("read stdin")?;
            out.push(("-".into(), text));
        } else if f.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(f)
                .with_context(|| format!("read directory {}", f.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect();
            entries.sort();
            for p in entries {
                out.push((p.display().to_string(), read(&p)?));
            }
        } else {
            out.push((f.display().to_string(), read(f)?));
        }
    }
    Ok(out)
}

fn read(p: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("read manifest {}", p.display()))
}

/// Objects of every input with their manifests as JSON; all inputs are checked before
/// anything is stored.
fn parse_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<(manifest::Object, Value)>> {
    let mut all = Vec::new();
    for (source, text) in read_inputs(files)? {
        let parsed = manifest::parse(&source, &text)?;
        for w in &parsed.warnings {
            eprintln!("Warning: {w}");
        }
        for (o, v) in parsed.objects.into_iter().zip(parsed.values) {
            all.push((o, v));
        }
    }
    Ok(all)
}

pub(crate) fn resource_name(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "deployment.apps",
        "ReplicaSet" => "replicaset.apps",
        "HorizontalPodAutoscaler" => "horizontalpodautoscaler.autoscaling",
        "Job" => "job.batch",
        "Pod" => "pod",
        "Service" => "service",
        "ConfigMap" => "configmap",
        "Secret" => "secret",
        "Namespace" => "namespace",
        "PersistentVolumeClaim" => "persistentvolumeclaim",
        _ => "object",
    }
}

fn apply(g: &Global, files: &[PathBuf]) -> anyhow::Result<u8> {
    let objects = parse_inputs(files)?;
    if try_lock(g)?.is_some() {
        bail!(
            "berth serve is not running for state {}: nothing would act on the manifests. \
             Start it (e.g. `berth serve &`, with the same --root/--state) and apply again",
            g.state.display()
        );
    }
    let conn = store::open(&g.root)?;
    let mut refused = false;
    for (o, mut v) in objects {
        if let Some(ns) = &o.metadata.namespace {
            v["metadata"]["namespace"] = json!(ns);
        }
        // as kubectl: an object the server refuses is reported, the others still apply
        let outcome = match store::apply(&conn, &o, &v, "") {
            Err(e @ store::Error::NodePortAllocated { .. }) => {
                eprintln!("Error from server (Invalid): {e}");
                refused = true;
                continue;
            }
            other => other?,
        };
        println!(
            "{}/{} {}",
            resource_name(o.kind()),
            o.metadata.name,
            outcome.word()
        );
    }
    kick(g);
    Ok(u8::from(refused))
}

pub(crate) fn canonical_kind(kind: &str) -> anyhow::Result<&'static str> {
    Ok(match kind.to_ascii_lowercase().as_str() {
        "pod" | "pods" | "po" => "Pod",
        "deployment" | "deployments" | "deploy" => "Deployment",
        "replicaset" | "replicasets" | "rs" => "ReplicaSet",
        "service" | "services" | "svc" => "Service",
        "configmap" | "configmaps" | "cm" => "ConfigMap",
        "secret" | "secrets" => "Secret",
        "namespace" | "namespaces" | "ns" => "Namespace",
        "job" | "jobs" => "Job",
        "horizontalpodautoscaler" | "horizontalpodautoscalers" | "hpa" => "HorizontalPodAutoscaler",
        "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => "PersistentVolumeClaim",
        other => bail!("the server doesn't have a resource type {other:?}"),
    })
}

pub(crate) fn age(created: &str) -> String {
    let Some(t) = berth_engine::timefmt::parse(created) else {
        return "<unknown>".into();
    };
    let s = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i] + 3)
                }
            })
            .collect();
        println!("{}", line.join("").trim_end());
    }
}

pub(crate) struct PodView {
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) ready: usize,
    pub(crate) total: usize,
    pub(crate) status: String,
    pub(crate) restarts: i64,
    pub(crate) ip: String,
    pub(crate) created: String,
    pub(crate) template: Value,
    pub(crate) is_ready: bool,
    pub(crate) phase: String,
    pub(crate) message: String,
    pub(crate) uid: String,
    /// (container name in the spec, engine container) of the pod.
    pub(crate) containers: Vec<(String, berth_engine::Container)>,
}

pub(crate) fn pod_views(g: &Global) -> anyhow::Result<Vec<PodView>> {
    let eng = berth_engine::Engine::open(&g.root, &g.state)?;
    eng.conn.execute_batch(store::SCHEMA)?;
    let containers = eng.list()?;
    let mut out = Vec::new();
    for p in store::pods(&eng.conn)? {
        let mine: Vec<_> = containers
            .iter()
            .filter(|c| {
                c.labels()
                    .get(berth_orchestrator::controller::POD_UID_LABEL)
                    == Some(&p.uid)
            })
            .collect();
        let total = p.template["spec"]["containers"]
            .as_array()
            .map_or(0, Vec::len);
        let running = mine.iter().filter(|c| c.state == "running").count();
        let status = if !p.message.is_empty() && running == 0 {
            // a reason word (ErrImagePull: ...) when the message starts with one
            let head = p.message.split(':').next().unwrap_or("");
            if head.starts_with(|c: char| c.is_ascii_uppercase())
                && head.chars().all(|c| c.is_ascii_alphanumeric())
            {
                head.to_string()
            } else {
                "Pending".to_string()
            }
        } else if mine.iter().any(|c| c.state == "restarting") {
            "CrashLoopBackOff".into()
        } else if p.phase == "Succeeded" {
            "Completed".into()
        } else if p.phase == "Failed" {
            "Error".into()
        } else {
            p.phase.clone()
        };
        let labels = p.template["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(PodView {
            ns: p.namespace.clone(),
            name: p.name.clone(),
            owner: p.owner.clone(),
            labels,
            ready: if p.ready {
                total
            } else {
                running
                    .min(total)
                    .saturating_sub(usize::from(running > 0 && !p.ready))
            },
            total,
            status,
            restarts: mine.iter().map(|c| c.restart_count).sum(),
            ip: mine
                .iter()
                .find_map(|c| c.attachment.as_ref().and_then(|a| a.ip))
                .map_or("<none>".into(), |ip| ip.to_string()),
            created: p.created.clone(),
            template: p.template.clone(),
            is_ready: p.ready,
            phase: p.phase.clone(),
            message: p.message.clone(),
            uid: p.uid.clone(),
            containers: mine
                .iter()
                .map(|c| {
                    let n = c
                        .labels()
                        .get(berth_orchestrator::controller::CONTAINER_LABEL)
                        .cloned()
                        .unwrap_or_default();
                    (n, (*c).clone())
                })
                .collect(),
        });
    }
    Ok(out)
}

fn get(
    g: &Global,
    kind: &str,
    name: Option<&str>,
    ns: Option<&str>,
    selector: Option<&str>,
    output: Option<&str>,
) -> anyhow::Result<u8> {
    let kind = canonical_kind(kind)?;
    let sel = LabelSelector::parse(selector.unwrap_or(""))?;
    let in_ns = |n: &str| ns.is_none_or(|want| kind == "Namespace" || want == n);
    let wide = output == Some("wide");
    let structured = matches!(output, Some("json") | Some("yaml"));
    if let Some(o) = output.filter(|o| !matches!(*o, "wide" | "json" | "yaml")) {
        bail!("unknown output format {o:?}: use wide, json or yaml");
    }
    let mut header: Vec<&str> = if ns.is_none() {
        vec!["NAMESPACE"]
    } else {
        vec![]
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut items: Vec<Value> = Vec::new();
    if kind == "Pod" {
        header.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
        if wide {
            header.push("IP");
        }
        for p in pod_views(g)? {
            if !in_ns(&p.ns) || name.is_some_and(|n| n != p.name) || !sel.matches(&p.labels) {
                continue;
            }
            if structured {
                let mut v = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": p.template["metadata"].clone(), "spec": p.template["spec"].clone(),
                    "status": {"phase": p.phase, "podIP": p.ip, "ready": p.is_ready,
                        "containerStatuses": p.containers.iter().map(|(n, c)| json!({
                            "name": n, "restartCount": c.restart_count, "state": c.state,
                            "exitCode": c.exit_code, "containerID": format!("berth://{}", c.id),
                        })).collect::<Vec<_>>()}});
                v["metadata"]["name"] = json!(p.name);
                v["metadata"]["namespace"] = json!(p.ns);
                v["metadata"]["uid"] = json!(p.uid);
                items.push(v);
                continue;
            }
            let mut r = if ns.is_none() {
                vec![p.ns.clone()]
            } else {
                vec![]
            };
            r.extend([
                p.name.clone(),
                format!("{}/{}", p.ready, p.total),
                p.status.clone(),
                p.restarts.to_string(),
                age(&p.created),
            ]);
            if wide {
                r.push(p.ip.clone());
            }
            let _ = &p.owner;
            rows.push(r);
        }
    } else {
        let conn = store::open(&g.root)?;
        let objects: Vec<Stored> = store::list(&conn, kind)?;
        let pods = if matches!(kind, "Deployment" | "ReplicaSet") {
            pod_views(g)?
        } else {
            vec![]
        };
        let all = store::list(&conn, "ReplicaSet")?;
        match kind {
            "Deployment" => header.extend(["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]),
            "ReplicaSet" => header.extend(["NAME", "DESIRED", "CURRENT", "READY", "AGE"]),
            "ConfigMap" | "Secret" => header.extend(["NAME", "DATA", "AGE"]),
            "Service" => header.extend(["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"]),
            "Job" => header.extend(["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]),
            "PersistentVolumeClaim" => header.extend([
                "NAME",
                "STATUS",
                "VOLUME",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "AGE",
            ]),
            "HorizontalPodAutoscaler" => header.extend([
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE",
            ]),
            _ => header.extend(["NAME", "AGE"]),
        }
        for o in &objects {
            let m = &o.object.metadata;
            if !in_ns(o.object.namespace())
                || name.is_some_and(|n| n != m.name)
                || !sel.matches(&m.labels)
            {
                continue;
            }
            let pods_of = |rs: &str| {
                pods.iter()
                    .filter(|p| {
                        p.owner == format!("ReplicaSet/{rs}") && p.ns == o.object.namespace()
                    })
                    .collect::<Vec<_>>()
            };
            let mut status = store::status(&conn, o.object.kind(), o.object.namespace(), &m.name);
            // NodePorts serve allocated (Kubernetes shows them in spec.ports)
            let mut node_ports: Vec<(usize, i64)> = Vec::new();
            let cols: Vec<String> = match &o.object.body {
                Body::Job(j) => job_columns(j, &status),
                Body::PersistentVolumeClaim(c) => {
                    let access = status["accessModes"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| access_short(m.as_str()?))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        status["phase"].as_str().unwrap_or("Pending").to_string(),
                        status["volumeName"].as_str().unwrap_or("").to_string(),
                        status["capacity"]["storage"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        access,
                        c.storage_class_name
                            .clone()
                            .unwrap_or_else(|| "local".into()),
                    ]
                }
                Body::HorizontalPodAutoscaler(h) => hpa_columns(h, &status),
                Body::Deployment(d) => {
                    let owned: Vec<&Stored> = all
                        .iter()
                        .filter(|r| {
                            r.owner == format!("Deployment/{}", m.name)
                                && r.object.namespace() == o.object.namespace()
                        })
                        .collect();
                    let hash_now = newest_rs(&owned);
                    let every: Vec<&PodView> = owned
                        .iter()
                        .flat_map(|r| pods_of(&r.object.metadata.name))
                        .collect();
                    let ready = every.iter().filter(|p| p.is_ready).count();
                    let updated = hash_now.map_or(0, |h| pods_of(h).len());
                    let desired = d.replicas.unwrap_or(1);
                    status = json!({"replicas": every.len(), "readyReplicas": ready, "updatedReplicas": updated, "availableReplicas": ready, "observedGeneration": o.generation});
                    vec![
                        format!("{ready}/{desired}"),
                        updated.to_string(),
                        ready.to_string(),
                    ]
                }
                Body::ReplicaSet(r) => {
                    let mine = pods_of(&m.name);
                    let ready = mine.iter().filter(|p| p.is_ready).count();
                    status = json!({"replicas": mine.len(), "readyReplicas": ready});
                    vec![
                        r.replicas.unwrap_or(1).to_string(),
                        mine.len().to_string(),
                        ready.to_string(),
                    ]
                }
                Body::Service(svc) => {
                    let ip = berth_orchestrator::services::allocated(
                        &conn,
                        o.object.namespace(),
                        &m.name,
                    )
                    .map_or("<pending>".to_string(), |ip| ip.to_string());
                    let ports: Vec<String> = svc
                        .ports
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let proto = p.protocol.as_deref().unwrap_or("TCP");
                            let allocated = berth_orchestrator::services::allocated_node_port(
                                &conn,
                                o.object.namespace(),
                                &m.name,
                                proto,
                                p.port,
                            )
                            .filter(|_| p.node_port.is_none())
                            .map(i64::from);
                            if let Some(n) = allocated {
                                node_ports.push((i, n));
                            }
                            match p.node_port.or(allocated) {
                                Some(n) => format!("{}:{n}/{proto}", p.port),
                                None => format!("{}/{proto}", p.port),
                            }
                        })
                        .collect();
                    status = json!({"clusterIP": ip});
                    vec![
                        svc.kind.clone().unwrap_or_else(|| "ClusterIP".into()),
                        ip,
                        ports.join(","),
                    ]
                }
                Body::ConfigMap { data, binary } => vec![(data.len() + binary.len()).to_string()],
                Body::Secret { data, .. } => vec![data.len().to_string()],
                _ => vec![],
            };
            if structured {
                let mut v = o.manifest.clone();
                v["metadata"]["uid"] = json!(o.uid);
                v["metadata"]["generation"] = json!(o.generation);
                v["metadata"]["creationTimestamp"] = json!(o.created);
                if status != json!({}) {
                    v["status"] = status;
                }
                for (i, n) in &node_ports {
                    v["spec"]["ports"][*i]["nodePort"] = json!(n);
                }
                items.push(v);
                continue;
            }
            let mut r = if ns.is_none() {
                vec![o.object.namespace().to_string()]
            } else {
                vec![]
            };
            r.push(m.name.clone());
            r.extend(cols);
            r.push(age(&o.created));
            rows.push(r);
        }
    }
    if structured {
        let doc = match (name, items.len()) {
            (Some(_), 1) => items.remove(0),
            _ => json!({"apiVersion": "v1", "kind": "List", "items": items}),
        };
        if output == Some("json") {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print!("{}", serde_norway::to_string(&doc)?);
        }
        return Ok(0);
    }
    if rows.is_empty() {
        if let Some(n) = name {
            bail!("{} {n:?} not found", resource_name(kind));
        }
        eprintln!(
            "No resources found{}.",
            ns.map(|n| format!(" in {n} namespace")).unwrap_or_default()
        );
        return Ok(0);
    }
    let mut table = vec![header.iter().map(|h| h.to_string()).collect()];
    table.extend(rows);
    print_table(&table);
    Ok(0)
}

fn newest_rs<'a>(owned: &[&'a Stored]) -> Option<&'a str> {
    owned
        .iter()
        .max_by_key(|r| {
            r.object
                .metadata
                .annotations
                .get("deployment.kubernetes.io/revision")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .map(|r| r.object.metadata.name.as_str())
}

fn delete(g: &Global, files: &[PathBuf], args: &[String], ns: &str) -> anyhow::Result<u8> {
    let mut targets: Vec<(String, String, String)> = Vec::new();
    if !files.is_empty() {
        for (o, _) in parse_inputs(files)? {
            targets.push((
                o.kind().into(),
                o.namespace().into(),
                o.metadata.name.clone(),
            ));
        }
    } else {
        let (kind, names) = match args {
            [one] if one.contains('/') => {
                let (k, n) = one.split_once('/').unwrap_or_default();
                (k.to_string(), vec![n.to_string()])
            }
            [kind, names @ ..] if !names.is_empty() => (kind.clone(), names.to_vec()),
            _ => bail!("give -f FILE or KIND NAME..."),
        };
        let kind = canonical_kind(&kind)?;
        for n in names {
            let target_ns = if kind == "Namespace" {
                String::new()
            } else {
                ns.to_string()
            };
            targets.push((kind.into(), target_ns, n));
        }
    }
    let conn = store::open(&g.root)?;
    let mut missing = false;
    for (kind, ns, name) in targets {
        if kind == "Pod" && !store::delete(&conn, &kind, &ns, &name)? {
            // a pod made by a ReplicaSet: forget it; its owner makes a replacement
            let n = conn.execute(
                "DELETE FROM k8s_pods WHERE namespace=?1 AND name=?2",
                [&ns, &name],
            )?;
            if n == 0 {
                eprintln!("Error from server (NotFound): pods {name:?} not found");
                missing = true;
                continue;
            }
        } else if kind != "Pod" && !store::delete(&conn, &kind, &ns, &name)? {
            eprintln!(
                "Error from server (NotFound): {} {name:?} not found",
                resource_name(&kind)
            );
            missing = true;
            continue;
        }
        if kind == "Namespace" {
            conn.execute("DELETE FROM k8s_objects WHERE namespace=?1", [&name])?;
        }
        println!("{} {name:?} deleted", resource_name(&kind));
    }
    kick(g);
    Ok(if missing { 1 } else { 0 })
}

fn scale(g: &Global, target: &[String], replicas: i64, ns: &str) -> anyhow::Result<u8> {
    if replicas < 0 {
        bail!("--replicas {replicas}: must be 0 or more");
    }
    let (kind, name) = match target {
        [one] if one.contains('/') => {
            let (k, n) = one.split_once('/').unwrap_or_default();
            (k.to_string(), n.to_string())
        }
        [k, n] => (k.clone(), n.clone()),
        _ => bail!("give deployment/NAME or KIND NAME"),
    };
    let kind = canonical_kind(&kind)?;
    if !matches!(kind, "Deployment" | "ReplicaSet") {
        bail!("{kind} cannot be scaled: use a Deployment or ReplicaSet");
    }
    let conn = store::open(&g.root)?;
    let Some(o) = store::list(&conn, kind)?
        .into_iter()
        .find(|o| o.object.namespace() == ns && o.object.metadata.name == name)
    else {
        bail!("{} {name:?} not found", resource_name(kind));
    };
    let mut v = o.manifest.clone();
    v["spec"]["replicas"] = json!(replicas);
    let parsed = manifest::parse("scale", &v.to_string())?;
    let obj = parsed
        .objects
        .first()
        .context("scaled object did not parse")?;
    store::apply(&conn, obj, &v, &o.owner)?;
    println!("{}/{name} scaled", resource_name(kind));
    kick(g);
    Ok(0)
}

fn access_short(mode: &str) -> Option<&'static str> {
    Some(match mode {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        _ => return None,
    })
}

/// kubectl's STATUS, COMPLETIONS and DURATION of a Job.
fn job_columns(j: &berth_orchestrator::manifest::types::JobSpec, status: &Value) -> Vec<String> {
    let state = status["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["status"] == "True")
                .and_then(|c| c["type"].as_str())
        })
        .unwrap_or("Running");
    let duration = match (
        status["startTime"]
            .as_str()
            .and_then(berth_engine::timefmt::parse),
        status["completionTime"]
            .as_str()
            .and_then(berth_engine::timefmt::parse),
    ) {
        (Some(s), Some(e)) => short_duration(e.duration_since(s).unwrap_or_default()),
        (Some(s), None) => short_duration(s.elapsed().unwrap_or_default()),
        _ => String::new(),
    };
    vec![
        state.to_string(),
        format!(
            "{}/{}",
            status["succeeded"].as_i64().unwrap_or(0),
            j.completions.unwrap_or(1)
        ),
        duration,
    ]
}

fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// kubectl's REFERENCE, TARGETS, MINPODS, MAXPODS and REPLICAS of an HPA.
fn hpa_columns(h: &berth_orchestrator::manifest::types::HpaSpec, status: &Value) -> Vec<String> {
    let current = status["currentCPUUtilizationPercentage"]
        .as_i64()
        .map_or("<unknown>".to_string(), |c| format!("{c}%"));
    let target = h
        .metrics
        .iter()
        .find_map(|m| m.resource.as_ref()?.target.average_utilization)
        .map_or("<none>".to_string(), |t| format!("{t}%"));
    vec![
        format!("{}/{}", h.scale_target_ref.kind, h.scale_target_ref.name),
        format!("cpu: {current}/{target}"),
        h.min_replicas.unwrap_or(1).to_string(),
        h.max_replicas.to_string(),
        status["currentReplicas"].as_i64().unwrap_or(0).to_string(),
    ]
}

/// `deployment/NAME` or `deployment NAME` (the kind may be left out for rollout).
fn deployment_target(target: &[String]) -> anyhow::Result<String> {
    let (kind, name) = match target {
        [one] if one.contains('/') => {
            let (k, n) = one.split_once('/').unwrap_or_default();
            (k.to_string(), n.to_string())
        }
        [k, n] => (k.clone(), n.clone()),
        [n] => ("deployment".to_string(), n.clone()),
        _ => bail!("give deployment/NAME"),
    };
    if canonical_kind(&kind)? != "Deployment" {
        bail!("rollout works on deployments, not {kind}");
    }
    Ok(name)
}

fn find(conn: &store::Connection, kind: &str, ns: &str, name: &str) -> anyhow::Result<Stored> {
    store::list(conn, kind)?
        .into_iter()
        .find(|o| o.object.namespace() == ns && o.object.metadata.name == name)
        .with_context(|| format!("{} {name:?} not found", resource_name(kind)))
}

/// ReplicaSets of a Deployment with their revisions, oldest first.
fn revisions(conn: &store::Connection, ns: &str, name: &str) -> anyhow::Result<Vec<(i64, Stored)>> {
    let owner = format!("Deployment/{name}");
    let mut out: Vec<(i64, Stored)> = store::list(conn, "ReplicaSet")?
        .into_iter()
        .filter(|r| r.owner == owner && r.object.namespace() == ns)
        .filter_map(|r| {
            let rev = r
                .object
                .metadata
                .annotations
                .get(berth_orchestrator::controller::REVISION)?
                .parse()
                .ok()?;
            Some((rev, r))
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

fn rollout_status(g: &Global, target: &[String], ns: &str, timeout: f64) -> anyhow::Result<u8> {
    let name = deployment_target(target)?;
    let conn = store::open(&g.root)?;
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let d = find(&conn, "Deployment", ns, &name)?;
        let Body::Deployment(spec) = &d.object.body else {
            bail!("deployment {name:?} not found");
        };
        let desired = spec.replicas.unwrap_or(1).max(0) as usize;
        let revs = revisions(&conn, ns, &name)?;
        let pods = pod_views(g)?;
        let wanted = berth_orchestrator::controller::replica_set_name(&name, &spec.template);
        if !revs.iter().any(|(_, r)| r.object.metadata.name == wanted) {
            let msg = "Waiting for deployment spec update to be observed...".to_string();
            if msg != last {
                println!("{msg}");
                last = msg;
            }
            if timeout > 0.0 && start.elapsed().as_secs_f64() > timeout {
                bail!("timed out waiting for the condition");
            }
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let newest = Some(format!("ReplicaSet/{wanted}"));
        let mine: Vec<&PodView> = pods
            .iter()
            .filter(|p| {
                p.ns == ns
                    && revs
                        .iter()
                        .any(|(_, r)| p.owner == format!("ReplicaSet/{}", r.object.metadata.name))
            })
            .collect();
        let updated = mine
            .iter()
            .filter(|p| Some(&p.owner) == newest.as_ref())
            .count();
        let available = mine
            .iter()
            .filter(|p| Some(&p.owner) == newest.as_ref() && p.is_ready)
            .count();
        let total = mine.len();
        let msg = if updated < desired {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."
            )
        } else if total > updated {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                total - updated
            )
        } else if available < desired {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {desired} updated replicas are available..."
            )
        } else {
            println!("deployment {name:?} successfully rolled out");
            return Ok(0);
        };
        if msg != last {
            println!("{msg}");
            last = msg;
        }
        if timeout > 0.0 && start.elapsed().as_secs_f64() > timeout {
            bail!("timed out waiting for the condition");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rollout_history(
    g: &Global,
    target: &[String],
    ns: &str,
    revision: Option<i64>,
) -> anyhow::Result<u8> {
    let name = deployment_target(target)?;
    let conn = store::open(&g.root)?;
    find(&conn, "Deployment", ns, &name)?;
    let revs = revisions(&conn, ns, &name)?;
    if let Some(want) = revision {
        let Some((_, rs)) = revs.iter().find(|(r, _)| *r == want) else {
            bail!("unable to find the specified revision");
        };
        println!("deployment.apps/{name} with revision #{want}");
        let mut tpl = rs.manifest["spec"]["template"].clone();
        if let Some(l) = tpl["metadata"]["labels"].as_object_mut() {
            l.remove(berth_orchestrator::controller::TEMPLATE_HASH_LABEL);
        }
        println!("Pod Template:");
        for line in serde_norway::to_string(&tpl)?.lines() {
            println!("  {line}");
        }
        return Ok(0);
    }
    println!("deployment.apps/{name} ");
    let mut rows = vec![vec!["REVISION".to_string(), "CHANGE-CAUSE".to_string()]];
    for (rev, rs) in &revs {
        let cause = rs
            .object
            .metadata
            .annotations
            .get(berth_orchestrator::controller::CHANGE_CAUSE)
            .cloned()
            .unwrap_or_else(|| "<none>".into());
        rows.push(vec![rev.to_string(), cause]);
    }
    print_table(&rows);
    println!();
    Ok(0)
}

fn rollout_undo(g: &Global, target: &[String], ns: &str, to: i64) -> anyhow::Result<u8> {
    let name = deployment_target(target)?;
    let conn = store::open(&g.root)?;
    let d = find(&conn, "Deployment", ns, &name)?;
    let revs = revisions(&conn, ns, &name)?;
    let chosen = if to == 0 {
        // the revision before the current one
        revs.len().checked_sub(2).and_then(|i| revs.get(i))
    } else {
        revs.iter().find(|(r, _)| *r == to)
    };
    let Some((_, rs)) = chosen else {
        if to == 0 {
            bail!("no rollout history found for deployment {name:?}");
        }
        bail!("unable to find specified revision {to} in history");
    };
    if revs.last().is_some_and(|(_, cur)| cur.uid == rs.uid) {
        println!(
            "deployment.apps/{name} skipped rollback (current template already matches revision {to})"
        );
        return Ok(0);
    }
    let mut tpl = rs.manifest["spec"]["template"].clone();
    if let Some(l) = tpl["metadata"]["labels"].as_object_mut() {
        l.remove(berth_orchestrator::controller::TEMPLATE_HASH_LABEL);
    }
    let mut v = d.manifest.clone();
    v["spec"]["template"] = tpl;
    let parsed = manifest::parse("rollout undo", &v.to_string())?;
    let obj = parsed
        .objects
        .first()
        .context("rolled back object did not parse")?;
    store::apply(&conn, obj, &v, &d.owner)?;
    println!("deployment.apps/{name} rolled back");
    kick(g);
    Ok(0)
}

/// The engine container a `logs`/`exec` reference means when it names a pod: the
/// container named by `-c`, else the pod's first (kubectl's default). None when no
/// pod has that name, so the reference is a container's.
pub fn pod_container(
    g: &Global,
    reference: &str,
    container: Option<&str>,
    ns: &str,
) -> anyhow::Result<Option<String>> {
    let conn = store::open(&g.root)?;
    let Some(p) = store::pods(&conn)?
        .into_iter()
        .find(|p| p.namespace == ns && p.name == reference)
    else {
        if container.is_some() {
            bail!("pods {reference:?} not found");
        }
        return Ok(None);
    };
    let names: Vec<String> = p.template["spec"]["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let want = match container {
        Some(c) => {
            let inits: Vec<String> = p.template["spec"]["initContainers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if !names.iter().chain(&inits).any(|n| n == c) {
                bail!(
                    "container {c} is not valid for pod {reference}: choose one of [{}]",
                    names.join(" ")
                );
            }
            c.to_string()
        }
        None => {
            let first = names.first().context("pod has no containers")?.clone();
            if names.len() > 1 {
                eprintln!("Defaulted container {first:?} out of: {}", names.join(", "));
            }
            first
        }
    };
    let eng = berth_engine::Engine::open(&g.root, &g.state)?;
    let found = eng.list()?.into_iter().find(|c| {
        c.labels()
            .get(berth_orchestrator::controller::POD_UID_LABEL)
            == Some(&p.uid)
            && c.labels()
                .get(berth_orchestrator::controller::CONTAINER_LABEL)
                == Some(&want)
    });
    match found {
        Some(c) => Ok(Some(c.id)),
        None => bail!("container {want:?} in pod {reference:?} is waiting to start"),
    }
}

/// `top pods`: CPU (millicores over a short sample) and memory of every pod.
pub fn top_pods(g: &Global, name: Option<&str>, ns: Option<&str>) -> anyhow::Result<u8> {
    let pods: Vec<PodView> = pod_views(g)?
        .into_iter()
        .filter(|p| ns.is_none_or(|n| n == p.ns) && name.is_none_or(|n| n == p.name))
        .collect();
    let ids: Vec<String> = pods
        .iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .filter(|(_, c)| c.state == "running")
                .map(|(_, c)| c.id.clone())
        })
        .collect();
    let sample = berth_orchestrator::metrics::sample(&ids, Duration::from_millis(500));
    let mut rows = vec![];
    let mut header = vec![];
    if ns.is_none() {
        header.push("NAMESPACE".to_string());
    }
    header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"].map(String::from));
    rows.push(header);
    for p in &pods {
        let mine: Vec<&(String, u64, u64)> = sample
            .iter()
            .filter(|(id, _, _)| p.containers.iter().any(|(_, c)| &c.id == id))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let cpu: u64 = mine.iter().map(|s| s.1).sum();
        let mem: u64 = mine.iter().map(|s| s.2).sum();
        let mut r = vec![];
        if ns.is_none() {
            r.push(p.ns.clone());
        }
        r.extend([
            p.name.clone(),
            format!("{cpu}m"),
            format!("{}Mi", mem >> 20),
        ]);
        rows.push(r);
    }
    if rows.len() == 1 {
        if let Some(n) = name {
            bail!("pods {n:?} not found (or not running)");
        }
        eprintln!(
            "No resources found{}.",
            ns.map(|n| format!(" in {n} namespace")).unwrap_or_default()
        );
        return Ok(0);
    }
    print_table(&rows);
    Ok(0)
}
