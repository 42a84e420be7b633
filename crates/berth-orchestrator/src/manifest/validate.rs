//! The API's value rules for the supported kinds, each failure naming its field path.

use std::collections::BTreeSet;

use super::types::*;
use super::{Body, Object, Problem, Quantity};

struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn fail(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            msg: msg.into(),
        });
    }

    fn require(&mut self, path: &str, value: &str) -> bool {
        if value.is_empty() {
            self.fail(path, "required field missing");
            false
        } else {
            true
        }
    }

    fn dns_label(&mut self, path: &str, value: &str) {
        if self.require(path, value) && !is_dns_label(value) {
            self.fail(
                path,
                format!("{value:?} must be at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"),
            );
        }
    }

    fn dns_subdomain(&mut self, path: &str, value: &str) {
        if self.require(path, value) && (value.len() > 253 || !value.split('.').all(is_dns_label)) {
            self.fail(
                path,
                format!("{value:?} must be lowercase DNS labels separated by '.' (at most 253 characters)"),
            );
        }
    }

    fn non_negative(&mut self, path: &str, value: Option<i64>) {
        if let Some(v) = value.filter(|v| *v < 0) {
            self.fail(path, format!("{v} must be greater than or equal to 0"));
        }
    }

    fn port(&mut self, path: &str, value: i64) {
        if !(1..=65535).contains(&value) {
            self.fail(path, format!("{value} must be between 1 and 65535"));
        }
    }

    fn one_of(&mut self, path: &str, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value.filter(|v| !allowed.contains(v)) {
            self.fail(path, format!("{v:?} is not one of {}", allowed.join(", ")));
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Every problem of `o`.
pub(super) fn object(o: &Object) -> Vec<Problem> {
    let mut c = Check { problems: vec![] };
    match &o.body {
        Body::Namespace | Body::Service(_) => c.dns_label("metadata.name", &o.metadata.name),
        _ => c.dns_subdomain("metadata.name", &o.metadata.name),
    }
    if let Some(ns) = o.metadata.namespace.as_deref().filter(|n| !n.is_empty()) {
        c.dns_label("metadata.namespace", ns);
    }
    match &o.body {
        Body::Namespace | Body::ConfigMap { .. } | Body::Secret { .. } => {}
        Body::Pod(spec) => pod_spec(&mut c, "spec", spec, false),
        Body::Deployment(d) => {
            c.non_negative("spec.replicas", d.replicas);
            c.non_negative("spec.revisionHistoryLimit", d.revision_history_limit);
            c.non_negative("spec.minReadySeconds", d.min_ready_seconds);
            workload(&mut c, &d.selector, &d.template);
            if let Some(s) = &d.strategy {
                c.one_of(
                    "spec.strategy.type",
                    s.kind.as_deref(),
                    &["RollingUpdate", "Recreate"],
                );
                if s.kind.as_deref() == Some("Recreate") && s.rolling_update.is_some() {
                    c.fail(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy type is Recreate",
                    );
                }
                if let Some(ru) = &s.rolling_update {
                    let surge = ru.max_surge.as_ref().map(int_or_percent);
                    let unavail = ru.max_unavailable.as_ref().map(int_or_percent);
                    for (path, v) in [
                        ("spec.strategy.rollingUpdate.maxSurge", &surge),
                        ("spec.strategy.rollingUpdate.maxUnavailable", &unavail),
                    ] {
                        if let Some(Err(msg)) = v {
                            c.fail(path, msg.clone());
                        }
                    }
                    if matches!(surge, Some(Ok(0))) && matches!(unavail, Some(Ok(0))) {
                        c.fail(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            "may not be 0 when maxSurge is 0",
                        );
                    }
                }
            }
        }
        Body::ReplicaSet(r) => {
            c.non_negative("spec.replicas", r.replicas);
            workload(&mut c, &r.selector, &r.template);
        }
        Body::Job(j) => {
            c.non_negative("spec.completions", j.completions);
            c.non_negative("spec.parallelism", j.parallelism);
            c.non_negative("spec.backoffLimit", j.backoff_limit);
            let policy = j.template.spec.restart_policy.as_deref();
            if !matches!(policy, Some("OnFailure") | Some("Never")) {
                c.fail(
                    "spec.template.spec.restartPolicy",
                    format!(
                        "{:?} is not supported for a Job: use OnFailure or Never",
                        policy.unwrap_or("Always")
                    ),
                );
            }
            pod_spec(&mut c, "spec.template.spec", &j.template.spec, true);
        }
        Body::Service(s) => {
            c.one_of("spec.type", s.kind.as_deref(), &["ClusterIP", "NodePort"]);
            if s.ports.is_empty() {
                c.fail("spec.ports", "required field missing");
            }
            let mut names = BTreeSet::new();
            for (i, p) in s.ports.iter().enumerate() {
                let at = format!("spec.ports[{i}]");
                c.port(&format!("{at}.port"), p.port);
                c.one_of(
                    &format!("{at}.protocol"),
                    p.protocol.as_deref(),
                    &["TCP", "UDP"],
                );
                if s.ports.len() > 1 && p.name.as_deref().unwrap_or("").is_empty() {
                    c.fail(
                        format!("{at}.name"),
                        "required when a Service has several ports",
                    );
                }
                if let Some(n) = &p.name
                    && !names.insert(n.clone())
                {
                    c.fail(format!("{at}.name"), format!("duplicate port name {n:?}"));
                }
                if let Some(IntOrString::Int(t)) = &p.target_port {
                    c.port(&format!("{at}.targetPort"), *t);
                }
                if let Some(np) = p.node_port {
                    if s.kind.as_deref() != Some("NodePort") {
                        c.fail(format!("{at}.nodePort"), "only allowed for type NodePort");
                    } else if !(30000..=32767).contains(&np) {
                        c.fail(
                            format!("{at}.nodePort"),
                            format!("{np} is not in the range 30000-32767"),
                        );
                    }
                }
            }
        }
        Body::HorizontalPodAutoscaler(h) => {
            let r = &h.scale_target_ref;
            c.one_of(
                "spec.scaleTargetRef.kind",
                Some(r.kind.as_str()),
                &["Deployment", "ReplicaSet"],
            );
            c.require("spec.scaleTargetRef.name", &r.name);
            let min = h.min_replicas.unwrap_or(1);
            if min < 1 {
                c.fail("spec.minReplicas", format!("{min} must be at least 1"));
            }
            if h.max_replicas < min {
                c.fail(
                    "spec.maxReplicas",
                    format!("{} must be at least minReplicas ({min})", h.max_replicas),
                );
            }
            for (i, m) in h.metrics.iter().enumerate() {
                let at = format!("spec.metrics[{i}]");
                if m.kind != "Resource" {
                    c.fail(
                        format!("{at}.type"),
                        format!("{:?} is not supported on one node: use Resource", m.kind),
                    );
                    continue;
                }
                let Some(res) = &m.resource else {
                    c.fail(format!("{at}.resource"), "required field missing");
                    continue;
                };
                c.one_of(
                    &format!("{at}.resource.name"),
                    Some(&res.name),
                    &["cpu", "memory"],
                );
                match res.target.kind.as_str() {
                    "Utilization" => {
                        if res.target.average_utilization.is_none_or(|u| u < 1) {
                            c.fail(
                                format!("{at}.resource.target.averageUtilization"),
                                "must be a positive percentage",
                            );
                        }
                    }
                    "AverageValue" => quantity(
                        &mut c,
                        &format!("{at}.resource.target.averageValue"),
                        res.target.average_value.as_ref(),
                    ),
                    other => c.fail(
                        format!("{at}.resource.target.type"),
                        format!("{other:?} is not one of Utilization, AverageValue"),
                    ),
                }
            }
        }
        Body::PersistentVolumeClaim(p) => {
            let storage = p.resources.as_ref().and_then(|r| r.requests.get("storage"));
            if storage.is_none() {
                c.fail("spec.resources.requests.storage", "required field missing");
            }
            quantity(&mut c, "spec.resources.requests.storage", storage);
            c.one_of("spec.volumeMode", p.volume_mode.as_deref(), &["Filesystem"]);
        }
    }
    c.problems
}

fn quantity(c: &mut Check, path: &str, q: Option<&QuantityText>) {
    if let Some(q) = q
        && let Err(e) = Quantity::parse(&q.as_text())
    {
        c.fail(path, e.to_string());
    }
}

fn int_or_percent(v: &IntOrString) -> Result<i64, String> {
    match v {
        IntOrString::Int(i) if *i >= 0 => Ok(*i),
        IntOrString::Int(i) => Err(format!("{i} must be greater than or equal to 0")),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| (0..=100).contains(p))
            .ok_or_else(|| format!("{s:?} must be an integer or a percentage like 25%")),
    }
}

fn workload(c: &mut Check, selector: &super::LabelSelector, template: &PodTemplateSpec) {
    if selector.is_empty() {
        c.fail("spec.selector", "required field missing");
    } else if let Err(msg) = selector.check() {
        c.fail("spec.selector", msg);
    } else if !selector.matches(&template.metadata.labels) {
        c.fail(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        );
    }
    c.one_of(
        "spec.template.spec.restartPolicy",
        template.spec.restart_policy.as_deref(),
        &["Always"],
    );
    pod_spec(c, "spec.template.spec", &template.spec, false);
}

fn pod_spec(c: &mut Check, at: &str, spec: &PodSpec, job: bool) {
    if spec.containers.is_empty() {
        c.fail(format!("{at}.containers"), "required field missing");
    }
    if !job {
        c.one_of(
            &format!("{at}.restartPolicy"),
            spec.restart_policy.as_deref(),
            &["Always", "OnFailure", "Never"],
        );
    }
    c.non_negative(
        &format!("{at}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
    );
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = format!("{at}.volumes[{i}]");
        c.dns_label(&format!("{vp}.name"), &v.name);
        if !volumes.insert(v.name.as_str()) {
            c.fail(
                format!("{vp}.name"),
                format!("duplicate volume {:?}", v.name),
            );
        }
        let sources = [
            v.empty_dir.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
            v.host_path.is_some(),
            v.persistent_volume_claim.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            1 => {}
            0 => c.fail(
                vp.clone(),
                "must specify one of emptyDir, configMap, secret, hostPath, persistentVolumeClaim",
            ),
            _ => c.fail(vp.clone(), "may not specify more than one volume type"),
        }
        if let Some(h) = &v.host_path
            && !h.path.starts_with('/')
        {
            c.fail(format!("{vp}.hostPath.path"), "must be an absolute path");
        }
        if let Some(cm) = &v.config_map {
            c.require(&format!("{vp}.configMap.name"), &cm.name);
        }
        if let Some(s) = &v.secret {
            c.require(&format!("{vp}.secret.secretName"), &s.secret_name);
        }
        if let Some(p) = &v.persistent_volume_claim {
            c.require(
                &format!("{vp}.persistentVolumeClaim.claimName"),
                &p.claim_name,
            );
        }
        if let Some(e) = &v.empty_dir {
            c.one_of(
                &format!("{vp}.emptyDir.medium"),
                e.medium.as_deref(),
                &["", "Memory"],
            );
            quantity(
                c,
                &format!("{vp}.emptyDir.sizeLimit"),
                e.size_limit.as_ref(),
            );
        }
    }
    let mut names = BTreeSet::new();
    let all = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("{at}.initContainers[{i}]"), k, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, k)| (format!("{at}.containers[{i}]"), k, false)),
        );
    for (cp, k, init) in all {
        c.dns_label(&format!("{cp}.name"), &k.name);
        if !k.name.is_empty() && !names.insert(k.name.clone()) {
            c.fail(
                format!("{cp}.name"),
                format!("duplicate container name {:?}", k.name),
            );
        }
        c.require(&format!("{cp}.image"), &k.image);
        c.one_of(
            &format!("{cp}.imagePullPolicy"),
            k.image_pull_policy.as_deref(),
            &["Always", "IfNotPresent", "Never"],
        );
        for (j, e) in k.env.iter().enumerate() {
            let ep = format!("{cp}.env[{j}]");
            c.require(&format!("{ep}.name"), &e.name);
            if e.value.is_some() && e.value_from.is_some() {
                c.fail(
                    format!("{ep}.valueFrom"),
                    "may not be specified when `value` is not empty",
                );
            }
            if let Some(src) = &e.value_from {
                let n = [
                    src.config_map_key_ref.is_some(),
                    src.secret_key_ref.is_some(),
                    src.field_ref.is_some(),
                ]
                .iter()
                .filter(|s| **s)
                .count();
                if n != 1 {
                    c.fail(
                        format!("{ep}.valueFrom"),
                        "must specify exactly one of configMapKeyRef, secretKeyRef, fieldRef",
                    );
                }
            }
        }
        for (j, e) in k.env_from.iter().enumerate() {
            if e.config_map_ref.is_some() == e.secret_ref.is_some() {
                c.fail(
                    format!("{cp}.envFrom[{j}]"),
                    "must specify exactly one of configMapRef, secretRef",
                );
            }
        }
        let mut port_names = BTreeSet::new();
        for (j, p) in k.ports.iter().enumerate() {
            let pp = format!("{cp}.ports[{j}]");
            c.port(&format!("{pp}.containerPort"), p.container_port);
            if let Some(h) = p.host_port {
                c.port(&format!("{pp}.hostPort"), h);
            }
            c.one_of(
                &format!("{pp}.protocol"),
                p.protocol.as_deref(),
                &["TCP", "UDP"],
            );
            if let Some(n) = &p.name
                && !port_names.insert(n.clone())
            {
                c.fail(format!("{pp}.name"), format!("duplicate port name {n:?}"));
            }
        }
        if let Some(r) = &k.resources {
            for (which, map) in [("requests", &r.requests), ("limits", &r.limits)] {
                for (res, q) in map {
                    let rp = format!("{cp}.resources.{which}.{res}");
                    quantity(c, &rp, Some(q));
                }
            }
            for (res, req) in &r.requests {
                if let (Some(lim), Ok(rq)) = (r.limits.get(res), Quantity::parse(&req.as_text()))
                    && let Ok(l) = Quantity::parse(&lim.as_text())
                    && rq > l
                {
                    c.fail(
                        format!("{cp}.resources.requests.{res}"),
                        format!(
                            "must be less than or equal to {res} limit of {}",
                            lim.as_text()
                        ),
                    );
                }
            }
        }
        let mut paths = BTreeSet::new();
        for (j, m) in k.volume_mounts.iter().enumerate() {
            let mp = format!("{cp}.volumeMounts[{j}]");
            if !volumes.contains(m.name.as_str()) {
                c.fail(
                    format!("{mp}.name"),
                    format!("volume {:?} not found", m.name),
                );
            }
            if !m.mount_path.starts_with('/') {
                c.fail(format!("{mp}.mountPath"), "must be an absolute path");
            } else if !paths.insert(m.mount_path.clone()) {
                c.fail(format!("{mp}.mountPath"), "must be unique");
            }
            if let Some(sp) = &m.sub_path
                && (sp.starts_with('/') || sp.split('/').any(|p| p == ".."))
            {
                c.fail(
                    format!("{mp}.subPath"),
                    "must be a relative path without '..'",
                );
            }
        }
        let probes = [
            ("livenessProbe", &k.liveness_probe),
            ("readinessProbe", &k.readiness_probe),
            ("startupProbe", &k.startup_probe),
        ];
        for (name, probe) in probes {
            let Some(p) = probe else { continue };
            let pp = format!("{cp}.{name}");
            if init {
                c.fail(pp.clone(), "may not be set for init containers");
            }
            let handlers = [
                p.exec.is_some(),
                p.http_get.is_some(),
                p.tcp_socket.is_some(),
            ];
            if handlers.iter().filter(|h| **h).count() != 1 {
                c.fail(
                    pp.clone(),
                    "must specify exactly one of exec, httpGet, tcpSocket",
                );
            }
            for (f, v) in [
                ("initialDelaySeconds", p.initial_delay_seconds),
                ("periodSeconds", p.period_seconds),
                ("timeoutSeconds", p.timeout_seconds),
                ("successThreshold", p.success_threshold),
                ("failureThreshold", p.failure_threshold),
            ] {
                c.non_negative(&format!("{pp}.{f}"), v);
            }
            if name != "readinessProbe" && p.success_threshold.is_some_and(|s| s != 1) {
                c.fail(format!("{pp}.successThreshold"), "must be 1");
            }
            let port = p
                .http_get
                .as_ref()
                .map(|h| (&h.port, "httpGet"))
                .or(p.tcp_socket.as_ref().map(|t| (&t.port, "tcpSocket")));
            if let Some((port, how)) = port {
                let path = format!("{pp}.{how}.port");
                match port {
                    IntOrString::Int(n) => c.port(&path, *n),
                    IntOrString::String(s) => {
                        if !k.ports.iter().any(|p| p.name.as_deref() == Some(s)) {
                            c.fail(path, format!("no container port named {s:?}"));
                        }
                    }
                }
            }
            if let Some(e) = &p.exec
                && e.command.is_empty()
            {
                c.fail(format!("{pp}.exec.command"), "required field missing");
            }
        }
        if let Some(sc) = &k.security_context
            && let Some(caps) = &sc.capabilities
        {
            for (j, cap) in caps.add.iter().chain(&caps.drop).enumerate() {
                let ok = cap == "ALL"
                    || (!cap.is_empty()
                        && cap
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()));
                if !ok {
                    c.fail(
                        format!("{cp}.securityContext.capabilities"),
                        format!("entry {j}: {cap:?} is not a capability name like NET_ADMIN"),
                    );
                }
            }
        }
    }
}
