//! `describe KIND [NAME]`: kubectl-like text of one object, its status, conditions and
//! events.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::bail;
use berth_orchestrator::manifest::Body;
use berth_orchestrator::manifest::types::{Container as ContainerSpec, PodTemplateSpec, Probe};
use berth_orchestrator::store::{self, Stored};
use serde_json::Value;

use crate::Global;
use crate::cmd_kube::{PodView, age, canonical_kind, pod_views, resource_name};

pub fn describe(g: &Global, kind: &str, name: Option<&str>, ns: &str) -> anyhow::Result<u8> {
    let (kind, name) = match (kind.split_once('/'), name) {
        (Some((k, n)), None) => (k.to_string(), Some(n.to_string())),
        _ => (kind.to_string(), name.map(String::from)),
    };
    let kind = canonical_kind(&kind)?;
    let conn = store::open(&g.root)?;
    let mut texts = Vec::new();
    if kind == "Pod" {
        for p in pod_views(g)? {
            if p.ns == ns && name.as_ref().is_none_or(|n| *n == p.name) {
                texts.push(pod(&conn, &p)?);
            }
        }
    } else {
        for o in store::list(&conn, kind)? {
            let in_ns = kind == "Namespace" || o.object.namespace() == ns;
            if in_ns && name.as_ref().is_none_or(|n| *n == o.object.metadata.name) {
                texts.push(object(g, &conn, &o)?);
            }
        }
    }
    if texts.is_empty() {
        match name {
            Some(n) => bail!("{} {n:?} not found", resource_name(kind)),
            None => eprintln!("No resources found in {ns} namespace."),
        }
    }
    print!("{}", texts.join("\n\n"));
    Ok(0)
}

fn map_lines(out: &mut String, title: &str, m: &BTreeMap<String, String>) {
    if m.is_empty() {
        let _ = writeln!(out, "{:<18}<none>", format!("{title}:"));
        return;
    }
    for (i, (k, v)) in m.iter().enumerate() {
        let head = if i == 0 {
            format!("{title}:")
        } else {
            String::new()
        };
        let _ = writeln!(out, "{head:<18}{k}={v}");
    }
}

fn field(out: &mut String, title: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<18}{value}", format!("{title}:"));
}

fn events(
    out: &mut String,
    conn: &store::Connection,
    kind: &str,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let evs = store::events(conn, kind, ns, name)?;
    if evs.is_empty() {
        let _ = writeln!(out, "Events:            <none>");
        return Ok(());
    }
    let from = match kind {
        "Pod" => "kubelet",
        "Deployment" => "deployment-controller",
        "ReplicaSet" => "replicaset-controller",
        "Job" => "job-controller",
        "HorizontalPodAutoscaler" => "horizontal-pod-autoscaler",
        "PersistentVolumeClaim" => "berth-local-provisioner",
        _ => "berth",
    };
    let _ = writeln!(out, "Events:");
    let mut rows = vec![
        ["Type", "Reason", "Age", "From", "Message"]
            .map(String::from)
            .to_vec(),
    ];
    rows.push(
        ["----", "------", "----", "----", "-------"]
            .map(String::from)
            .to_vec(),
    );
    for e in evs {
        rows.push(vec![e.kind, e.reason, age(&e.time), from.into(), e.message]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in rows {
        let mut line = String::from("  ");
        for (i, c) in r.iter().enumerate() {
            if i == 4 {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}", w = widths[i] + 2);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    Ok(())
}

fn probe_text(p: &Probe) -> String {
    let handler = if let Some(h) = &p.http_get {
        format!(
            "http-get http://:{}{}",
            port_text(&h.port),
            h.path.as_deref().unwrap_or("/")
        )
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket :{}", port_text(&t.port))
    } else if let Some(e) = &p.exec {
        format!("exec [{}]", e.command.join(" "))
    } else {
        "<none>".into()
    };
    format!(
        "{handler} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    )
}

fn port_text(p: &berth_orchestrator::manifest::types::IntOrString) -> String {
    match p {
        berth_orchestrator::manifest::types::IntOrString::Int(n) => n.to_string(),
        berth_orchestrator::manifest::types::IntOrString::String(s) => s.clone(),
    }
}

fn container_block(out: &mut String, k: &ContainerSpec, c: Option<&berth_engine::Container>) {
    let _ = writeln!(out, "  {}:", k.name);
    let line = |out: &mut String, t: &str, v: String| {
        let _ = writeln!(out, "    {:<20}{v}", format!("{t}:"));
    };
    if let Some(c) = c {
        line(out, "Container ID", format!("berth://{}", c.id));
    }
    line(out, "Image", k.image.clone());
    if let Some(c) = c {
        line(out, "Image ID", c.image_id.clone());
    }
    let ports: Vec<String> = k
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.container_port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    line(
        out,
        "Port",
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(", ")
        },
    );
    if let Some(cmd) = &k.command {
        line(out, "Command", cmd.join(" "));
    }
    if let Some(args) = &k.args {
        line(out, "Args", args.join(" "));
    }
    match c {
        Some(c) => {
            let state = match c.state.as_str() {
                "running" => "Running".to_string(),
                "restarting" => "Waiting".to_string(),
                "exited" => "Terminated".to_string(),
                other => other.to_string(),
            };
            line(out, "State", state.clone());
            if c.state == "restarting" {
                let _ = writeln!(out, "      Reason:           CrashLoopBackOff");
            }
            if c.state == "exited" {
                let reason = if c.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                let _ = writeln!(out, "      Reason:           {reason}");
                let _ = writeln!(out, "      Exit Code:        {}", c.exit_code);
            }
            if !c.started_at.is_empty() {
                let _ = writeln!(out, "      Started:          {}", c.started_at);
            }
            if c.state == "exited" && !c.finished_at.is_empty() {
                let _ = writeln!(out, "      Finished:         {}", c.finished_at);
            }
            if c.restart_count > 0 && c.state != "exited" {
                line(out, "Last State", "Terminated".into());
                let _ = writeln!(out, "      Exit Code:        {}", c.exit_code);
            }
            line(out, "Restart Count", c.restart_count.to_string());
        }
        None => {
            line(out, "State", "Waiting".into());
            let _ = writeln!(out, "      Reason:           ContainerCreating");
        }
    }
    if let Some(r) = &k.resources {
        for (title, m) in [("Limits", &r.limits), ("Requests", &r.requests)] {
            if !m.is_empty() {
                let _ = writeln!(out, "    {title}:");
                for (k, v) in m {
                    let _ = writeln!(out, "      {k}:  {}", v.as_text());
                }
            }
        }
    }
    for (t, p) in [
        ("Liveness", &k.liveness_probe),
        ("Readiness", &k.readiness_probe),
        ("Startup", &k.startup_probe),
    ] {
        if let Some(p) = p {
            line(out, t, probe_text(p));
        }
    }
    if k.env.is_empty() && k.env_from.is_empty() {
        let _ = writeln!(out, "    Environment:        <none>");
    } else {
        let _ = writeln!(out, "    Environment:");
        for e in &k.env_from {
            if let Some(r) = &e.config_map_ref {
                let _ = writeln!(out, "      ConfigMap  {}", r.name);
            }
            if let Some(r) = &e.secret_ref {
                let _ = writeln!(out, "      Secret     {}", r.name);
            }
        }
        for e in &k.env {
            let v = match &e.value_from {
                Some(src) => {
                    if let Some(s) = &src.config_map_key_ref {
                        format!("<set to the key '{}' of config map '{}'>", s.key, s.name)
                    } else if let Some(s) = &src.secret_key_ref {
                        format!("<set to the key '{}' in secret '{}'>", s.key, s.name)
                    } else if let Some(f) = &src.field_ref {
                        format!("({})", f.field_path)
                    } else {
                        String::new()
                    }
                }
                None => e.value.clone().unwrap_or_default(),
            };
            let _ = writeln!(out, "      {}:  {v}", e.name);
        }
    }
    if k.volume_mounts.is_empty() {
        let _ = writeln!(out, "    Mounts:             <none>");
    } else {
        let _ = writeln!(out, "    Mounts:");
        for m in &k.volume_mounts {
            let rw = if m.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            };
            let _ = writeln!(out, "      {} from {} ({rw})", m.mount_path, m.name);
        }
    }
}

fn pod(conn: &store::Connection, p: &PodView) -> anyhow::Result<String> {
    let mut out = String::new();
    let t: PodTemplateSpec = serde_json::from_value(p.template.clone()).unwrap_or_default();
    field(&mut out, "Name", &p.name);
    field(&mut out, "Namespace", &p.ns);
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    field(&mut out, "Node", format!("{host}/127.0.0.1"));
    field(&mut out, "Start Time", &p.created);
    map_lines(&mut out, "Labels", &p.labels);
    map_lines(&mut out, "Annotations", &t.metadata.annotations);
    field(&mut out, "Status", &p.status);
    if !p.message.is_empty() {
        field(&mut out, "Message", &p.message);
    }
    field(&mut out, "IP", &p.ip);
    if !p.owner.starts_with("Pod/") {
        field(&mut out, "Controlled By", &p.owner);
    }
    let find = |n: &str| {
        p.containers
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, c)| c)
    };
    if !t.spec.init_containers.is_empty() {
        let _ = writeln!(out, "Init Containers:");
        for k in &t.spec.init_containers {
            container_block(&mut out, k, find(&k.name));
        }
    }
    let _ = writeln!(out, "Containers:");
    for k in &t.spec.containers {
        container_block(&mut out, k, find(&k.name));
    }
    let _ = writeln!(out, "Conditions:");
    let running = p.containers.iter().any(|(_, c)| c.state == "running");
    let all_started = t.spec.containers.iter().all(|k| find(&k.name).is_some());
    let tf = |b: bool| if b { "True" } else { "False" };
    let _ = writeln!(out, "  Type              Status");
    let _ = writeln!(out, "  Initialized       {}", tf(all_started || running));
    let _ = writeln!(out, "  Ready             {}", tf(p.is_ready));
    let _ = writeln!(out, "  ContainersReady   {}", tf(p.is_ready));
    let _ = writeln!(out, "  PodScheduled      True");
    if t.spec.volumes.is_empty() {
        let _ = writeln!(out, "Volumes:            <none>");
    } else {
        let _ = writeln!(out, "Volumes:");
        for v in &t.spec.volumes {
            let _ = writeln!(out, "  {}:", v.name);
            let desc = if v.empty_dir.is_some() {
                "EmptyDir (a temporary directory that shares a pod's lifetime)".to_string()
            } else if let Some(h) = &v.host_path {
                format!(
                    "HostPath (bare host directory volume)\n    Path:       {}",
                    h.path
                )
            } else if let Some(c) = &v.persistent_volume_claim {
                format!(
                    "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:  {}\n    ReadOnly:   {}",
                    c.claim_name,
                    c.read_only.unwrap_or(false)
                )
            } else if let Some(c) = &v.config_map {
                format!(
                    "ConfigMap (a volume populated by a ConfigMap)\n    Name:       {}",
                    c.name
                )
            } else if let Some(s) = &v.secret {
                format!(
                    "Secret (a volume populated by a Secret)\n    SecretName: {}",
                    s.secret_name
                )
            } else {
                "<unknown>".into()
            };
            let _ = writeln!(out, "    Type:       {desc}");
        }
    }
    events(&mut out, conn, "Pod", &p.ns, &p.name)?;
    Ok(out)
}

fn object(g: &Global, conn: &store::Connection, o: &Stored) -> anyhow::Result<String> {
    let mut out = String::new();
    let m = &o.object.metadata;
    let ns = o.object.namespace();
    let kind = o.object.kind();
    field(&mut out, "Name", &m.name);
    if kind != "Namespace" {
        field(&mut out, "Namespace", ns);
    }
    field(&mut out, "CreationTimestamp", &o.created);
    map_lines(&mut out, "Labels", &m.labels);
    map_lines(&mut out, "Annotations", &m.annotations);
    let status = store::status(conn, kind, ns, &m.name);
    match &o.object.body {
        Body::Deployment(d) => {
            let owner = format!("Deployment/{}", m.name);
            let mut sets: Vec<(i64, Stored)> = store::list(conn, "ReplicaSet")?
                .into_iter()
                .filter(|r| r.owner == owner && r.object.namespace() == ns)
                .map(|r| {
                    let rev = r
                        .object
                        .metadata
                        .annotations
                        .get(berth_orchestrator::controller::REVISION)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    (rev, r)
                })
                .collect();
            sets.sort_by_key(|(r, _)| *r);
            let pods = pod_views(g)?;
            let of = |rs: &str| {
                pods.iter()
                    .filter(|p| p.ns == ns && p.owner == format!("ReplicaSet/{rs}"))
                    .collect::<Vec<_>>()
            };
            let desired = d.replicas.unwrap_or(1);
            let newest = sets.last().map(|(_, r)| r.object.metadata.name.clone());
            let total: usize = sets
                .iter()
                .map(|(_, r)| of(&r.object.metadata.name).len())
                .sum();
            let updated = newest.as_deref().map_or(0, |n| of(n).len());
            let available: usize = sets
                .iter()
                .map(|(_, r)| {
                    of(&r.object.metadata.name)
                        .iter()
                        .filter(|p| p.is_ready)
                        .count()
                })
                .sum();
            field(
                &mut out,
                "Selector",
                selector_text(&d.selector.match_labels),
            );
            field(
                &mut out,
                "Replicas",
                format!(
                    "{desired} desired | {updated} updated | {total} total | {available} available | {} unavailable",
                    (total as i64 - available as i64).max(0)
                ),
            );
            let strategy = d
                .strategy
                .as_ref()
                .and_then(|s| s.kind.clone())
                .unwrap_or_else(|| "RollingUpdate".into());
            field(&mut out, "StrategyType", &strategy);
            if strategy == "RollingUpdate" {
                let ru = d.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
                let f = |v: Option<&berth_orchestrator::manifest::types::IntOrString>| {
                    v.map_or("25%".to_string(), port_text)
                };
                field(
                    &mut out,
                    "RollingUpdateStrategy",
                    format!(
                        "{} max unavailable, {} max surge",
                        f(ru.and_then(|r| r.max_unavailable.as_ref())),
                        f(ru.and_then(|r| r.max_surge.as_ref()))
                    ),
                );
            }
            template_block(&mut out, &d.template);
            let _ = writeln!(out, "Conditions:");
            let _ = writeln!(out, "  Type           Status  Reason");
            let _ = writeln!(out, "  ----           ------  ------");
            let avail = available as i64 >= desired;
            let _ = writeln!(
                out,
                "  Available      {}  {}",
                if avail { "True " } else { "False" },
                if avail {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                }
            );
            let done = updated as i64 == desired && total == updated && avail;
            let _ = writeln!(
                out,
                "  Progressing    True    {}",
                if done {
                    "NewReplicaSetAvailable"
                } else {
                    "ReplicaSetUpdated"
                }
            );
            let olds: Vec<String> = sets
                .iter()
                .filter(|(_, r)| Some(&r.object.metadata.name) != newest.as_ref())
                .filter(|(_, r)| !of(&r.object.metadata.name).is_empty())
                .map(|(_, r)| {
                    format!(
                        "{} ({}/{} replicas created)",
                        r.object.metadata.name,
                        of(&r.object.metadata.name).len(),
                        replicas(&r.object.body)
                    )
                })
                .collect();
            field(
                &mut out,
                "OldReplicaSets",
                if olds.is_empty() {
                    "<none>".into()
                } else {
                    olds.join(", ")
                },
            );
            field(
                &mut out,
                "NewReplicaSet",
                newest.as_deref().map_or("<none>".to_string(), |n| {
                    let set = sets.iter().find(|(_, r)| r.object.metadata.name == n);
                    format!(
                        "{n} ({}/{} replicas created)",
                        of(n).len(),
                        set.map_or(0, |(_, r)| replicas(&r.object.body))
                    )
                }),
            );
        }
        Body::ReplicaSet(r) => {
            let pods = pod_views(g)?;
            let mine: Vec<&PodView> = pods
                .iter()
                .filter(|p| p.ns == ns && p.owner == format!("ReplicaSet/{}", m.name))
                .collect();
            field(
                &mut out,
                "Selector",
                selector_text(&r.selector.match_labels),
            );
            if !o.owner.is_empty() {
                field(&mut out, "Controlled By", &o.owner);
            }
            field(
                &mut out,
                "Replicas",
                format!(
                    "{} current / {} desired",
                    mine.len(),
                    r.replicas.unwrap_or(1)
                ),
            );
            let running = mine.iter().filter(|p| p.phase == "Running").count();
            let waiting = mine.iter().filter(|p| p.phase == "Pending").count();
            let ok = mine.iter().filter(|p| p.phase == "Succeeded").count();
            let failed = mine.iter().filter(|p| p.phase == "Failed").count();
            field(
                &mut out,
                "Pods Status",
                format!("{running} Running / {waiting} Waiting / {ok} Succeeded / {failed} Failed"),
            );
            template_block(&mut out, &r.template);
        }
        Body::Job(j) => {
            field(&mut out, "Parallelism", j.parallelism.unwrap_or(1));
            field(&mut out, "Completions", j.completions.unwrap_or(1));
            field(&mut out, "Backoff Limit", j.backoff_limit.unwrap_or(6));
            if let Some(s) = status["startTime"].as_str() {
                field(&mut out, "Start Time", s);
            }
            if let Some(s) = status["completionTime"].as_str() {
                field(&mut out, "Completed At", s);
            }
            if let Some(d) = j.active_deadline_seconds {
                field(&mut out, "Active Deadline Seconds", format!("{d}s"));
            }
            field(
                &mut out,
                "Pods Statuses",
                format!(
                    "{} Active / {} Succeeded / {} Failed",
                    status["active"].as_i64().unwrap_or(0),
                    status["succeeded"].as_i64().unwrap_or(0),
                    status["failed"].as_i64().unwrap_or(0)
                ),
            );
            template_block(&mut out, &j.template);
            conditions(&mut out, &status);
        }
        Body::Service(s) => {
            field(&mut out, "Selector", selector_text(&s.selector));
            field(&mut out, "Type", s.kind.as_deref().unwrap_or("ClusterIP"));
            let ip = berth_orchestrator::services::allocated(conn, ns, &m.name)
                .map_or("<pending>".to_string(), |ip| ip.to_string());
            field(&mut out, "IP", ip);
            for p in &s.ports {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                field(
                    &mut out,
                    "Port",
                    format!(
                        "{}  {}/{proto}",
                        p.name.as_deref().unwrap_or("<unset>"),
                        p.port
                    ),
                );
                field(
                    &mut out,
                    "TargetPort",
                    format!(
                        "{}/{proto}",
                        p.target_port.as_ref().map_or(p.port.to_string(), port_text)
                    ),
                );
                let allocated = || {
                    berth_orchestrator::services::allocated_node_port(
                        conn, ns, &m.name, proto, p.port,
                    )
                    .map(i64::from)
                };
                if let Some(n) = p.node_port.or_else(allocated) {
                    field(
                        &mut out,
                        "NodePort",
                        format!("{}  {n}/{proto}", p.name.as_deref().unwrap_or("<unset>")),
                    );
                }
            }
        }
        Body::HorizontalPodAutoscaler(h) => {
            field(
                &mut out,
                "Reference",
                format!("{}/{}", h.scale_target_ref.kind, h.scale_target_ref.name),
            );
            let _ = writeln!(
                out,
                "Metrics:                                               ( current / target )"
            );
            let target = h
                .metrics
                .iter()
                .find_map(|m| m.resource.as_ref()?.target.average_utilization)
                .map_or("<none>".to_string(), |t| format!("{t}%"));
            let current = status["currentCPUUtilizationPercentage"].as_i64().map_or(
                "<unknown>".to_string(),
                |c| {
                    format!(
                        "{c}% ({}m)",
                        status["currentAverageMillicores"].as_i64().unwrap_or(0)
                    )
                },
            );
            let _ = writeln!(
                out,
                "  resource cpu on pods  (as a percentage of request):  {current} / {target}"
            );
            field(&mut out, "Min replicas", h.min_replicas.unwrap_or(1));
            field(&mut out, "Max replicas", h.max_replicas);
            field(
                &mut out,
                format!("{} pods", h.scale_target_ref.kind).as_str(),
                format!(
                    "{} current / {} desired",
                    status["currentReplicas"].as_i64().unwrap_or(0),
                    status["desiredReplicas"].as_i64().unwrap_or(0)
                ),
            );
            conditions(&mut out, &status);
        }
        Body::PersistentVolumeClaim(c) => {
            field(
                &mut out,
                "StorageClass",
                c.storage_class_name.as_deref().unwrap_or("local"),
            );
            field(
                &mut out,
                "Status",
                status["phase"].as_str().unwrap_or("Pending"),
            );
            field(
                &mut out,
                "Volume",
                status["volumeName"].as_str().unwrap_or(""),
            );
            field(
                &mut out,
                "Capacity",
                status["capacity"]["storage"].as_str().unwrap_or(""),
            );
            field(
                &mut out,
                "Access Modes",
                status["accessModes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            );
            field(
                &mut out,
                "VolumeMode",
                c.volume_mode.as_deref().unwrap_or("Filesystem"),
            );
            field(&mut out, "Path", status["path"].as_str().unwrap_or(""));
            let users: Vec<String> = pod_views(g)?
                .into_iter()
                .filter(|p| {
                    p.ns == ns
                        && p.template["spec"]["volumes"].as_array().is_some_and(|vs| {
                            vs.iter()
                                .any(|v| v["persistentVolumeClaim"]["claimName"] == m.name.as_str())
                        })
                })
                .map(|p| p.name)
                .collect();
            field(
                &mut out,
                "Used By",
                if users.is_empty() {
                    "<none>".into()
                } else {
                    users.join(", ")
                },
            );
        }
        Body::ConfigMap { data, binary } => {
            let _ = writeln!(out, "\nData\n====");
            for (k, v) in data {
                let _ = writeln!(out, "{k}:\n----\n{v}\n");
            }
            for (k, v) in binary {
                let _ = writeln!(out, "{k}: {} bytes", v.len());
            }
        }
        Body::Secret { data, .. } => {
            let _ = writeln!(out, "\nType:  Opaque\n\nData\n====");
            for (k, v) in data {
                let _ = writeln!(out, "{k}:  {} bytes", v.len());
            }
        }
        _ => {}
    }
    events(&mut out, conn, kind, ns, &m.name)?;
    Ok(out)
}

fn replicas(b: &Body) -> i64 {
    match b {
        Body::ReplicaSet(r) => r.replicas.unwrap_or(1),
        _ => 0,
    }
}

fn selector_text(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn conditions(out: &mut String, status: &Value) {
    let Some(cs) = status["conditions"].as_array().filter(|c| !c.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "Conditions:");
    let _ = writeln!(out, "  Type            Status  Reason");
    let _ = writeln!(out, "  ----            ------  ------");
    for c in cs {
        let _ = writeln!(
            out,
            "  {:<16}{:<8}{}",
            c["type"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or("")
        );
    }
}

fn template_block(out: &mut String, t: &PodTemplateSpec) {
    let _ = writeln!(out, "Pod Template:");
    let labels: Vec<String> = t
        .metadata
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        out,
        "  Labels:  {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join("\n           ")
        }
    );
    let _ = writeln!(out, "  Containers:");
    for k in &t.spec.containers {
        let mut block = String::new();
        container_block(&mut block, k, None);
        // a template has no state: keep the spec lines only
        for line in block
            .lines()
            .filter(|l| !l.contains("State:") && !l.contains("ContainerCreating"))
        {
            let _ = writeln!(out, "  {line}");
        }
    }
}
