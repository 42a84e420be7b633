//! HorizontalPodAutoscaler (autoscaling/v2) on CPU utilization: the upstream formula
//! `desired = ceil(current * currentUtilization / target)`, a tolerance of 0.1,
//! min/max replicas, stabilization windows (scale-down default 300 s, scale-up 0 s,
//! both from `spec.behavior`) and the default scale-up limit (double, or +4 pods,
//! per 15 s).
//!
//! Utilization is CPU used (from the containers' cgroups, measured over at least
//! a second) divided by CPU requested (requests, or limits when only limits are set),
//! over the running pods that have a measurement.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_engine::Container;
use serde_json::{Value, json};

use crate::controller::{Controller, Error, POD_UID_LABEL};
use crate::manifest::types::{HpaSpec, PodTemplateSpec};
use crate::manifest::{Body, Quantity};
use crate::store::{self, PodRecord, Stored};

/// Upstream's default tolerance around the target ratio.
pub const TOLERANCE: f64 = 0.1;
/// How long CPU is measured before a rate counts.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Per-container CPU readings and per-HPA recommendations, kept in memory as the
/// upstream controller keeps them.
#[derive(Debug, Default)]
pub struct State {
    readings: HashMap<String, (u64, Instant)>,
    rates: HashMap<String, u64>,
    recommendations: HashMap<String, Vec<(Instant, i64)>>,
    scale_ups: HashMap<String, Vec<(Instant, i64)>>,
}

impl State {
    /// Takes a CPU reading of each container; returns nothing, rates are updated
    /// once a reading is at least [`MIN_WINDOW`] old.
    fn measure(&mut self, ids: &[String]) {
        let now = Instant::now();
        for id in ids {
            let Some(u) = crate::metrics::usage(id) else {
                continue;
            };
            match self.readings.get(id) {
                Some((cpu, t)) if now.duration_since(*t) >= MIN_WINDOW => {
                    let rate = crate::metrics::millicores(*cpu, u.cpu_ns, now.duration_since(*t));
                    self.rates.insert(id.clone(), rate);
                    self.readings.insert(id.clone(), (u.cpu_ns, now));
                }
                Some(_) => {}
                None => {
                    self.readings.insert(id.clone(), (u.cpu_ns, now));
                }
            }
        }
        self.readings.retain(|id, _| ids.contains(id));
        self.rates.retain(|id, _| ids.contains(id));
    }
}

/// The CPU a container asks for, millicores (requests, else limits, as upstream
/// defaults requests from limits).
fn cpu_request(k: &crate::manifest::types::Container) -> Option<i128> {
    let r = k.resources.as_ref()?;
    let q = r.requests.get("cpu").or_else(|| r.limits.get("cpu"))?;
    Quantity::parse(&q.as_text()).ok().map(|q| q.milli())
}

fn window(behavior: &Option<Value>, dir: &str, default: u64) -> Duration {
    let secs = behavior
        .as_ref()
        .and_then(|b| b[dir]["stabilizationWindowSeconds"].as_u64())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// The replica count the formula asks for, before bounds and stabilization.
pub fn formula(current: i64, utilization: f64, target: f64) -> i64 {
    let ratio = utilization / target;
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    (current as f64 * ratio).ceil() as i64
}

/// Upstream's stabilization: scale up to the lowest recommendation of the up window,
/// down to the highest of the down window.
pub fn stabilize(
    current: i64,
    desired: i64,
    history: &[(Instant, i64)],
    up: Duration,
    down: Duration,
    now: Instant,
) -> i64 {
    let mut up_rec = desired;
    let mut down_rec = desired;
    for (t, r) in history {
        let age = now.duration_since(*t);
        if age <= up {
            up_rec = up_rec.min(*r);
        }
        if age <= down {
            down_rec = down_rec.max(*r);
        }
    }
    current.max(up_rec).min(down_rec)
}

impl Controller<'_> {
    /// One pass of one HPA: measure, compute, stabilize, and set the target's replicas.
    pub(crate) fn autoscale(
        &mut self,
        h: &Stored,
        spec: &HpaSpec,
        objects: &[Stored],
        pods: &[PodRecord],
        containers: &[Container],
    ) -> Result<(), Error> {
        let conn = &self.engine.conn;
        let (ns, name) = (h.object.namespace(), h.object.metadata.name.as_str());
        let key = format!("{ns}/{name}");
        let target_ref = &spec.scale_target_ref;
        let Some(target) = objects.iter().find(|o| {
            o.object.kind() == target_ref.kind
                && o.object.namespace() == ns
                && o.object.metadata.name == target_ref.name
        }) else {
            let status = json!({"conditions": [{"type": "AbleToScale", "status": "False",
                "reason": "FailedGetScale",
                "message": format!("the HPA controller was unable to get the target's current scale: {} {:?} not found", target_ref.kind, target_ref.name)}]});
            store::set_status(conn, "HorizontalPodAutoscaler", ns, name, &status)?;
            return Ok(());
        };
        let (current, owners): (i64, Vec<String>) = match &target.object.body {
            Body::Deployment(d) => (
                d.replicas.unwrap_or(1),
                objects
                    .iter()
                    .filter(|o| {
                        o.owner == format!("Deployment/{}", target_ref.name)
                            && o.object.namespace() == ns
                    })
                    .map(|o| format!("ReplicaSet/{}", o.object.metadata.name))
                    .collect(),
            ),
            Body::ReplicaSet(r) => (
                r.replicas.unwrap_or(1),
                vec![format!("ReplicaSet/{}", target_ref.name)],
            ),
            _ => return Ok(()),
        };
        let target_util = spec
            .metrics
            .iter()
            .filter(|m| m.resource.as_ref().is_some_and(|r| r.name == "cpu"))
            .find_map(|m| m.resource.as_ref()?.target.average_utilization)
            .unwrap_or(80)
            .max(1) as f64;
        // the running pods of the target and their containers
        let mut ids = Vec::new();
        let mut per_pod: Vec<(Vec<String>, i128)> = Vec::new();
        let mut missing_request = false;
        for p in pods
            .iter()
            .filter(|p| p.namespace == ns && owners.contains(&p.owner) && p.phase == "Running")
        {
            let Ok(t) = serde_json::from_value::<PodTemplateSpec>(p.template.clone()) else {
                continue;
            };
            let mut request = 0;
            for k in &t.spec.containers {
                match cpu_request(k) {
                    Some(r) => request += r,
                    None => missing_request = true,
                }
            }
            let mine: Vec<String> = containers
                .iter()
                .filter(|c| c.state == "running" && c.labels().get(POD_UID_LABEL) == Some(&p.uid))
                .map(|c| c.id.clone())
                .collect();
            ids.extend(mine.iter().cloned());
            per_pod.push((mine, request));
        }
        self.hpa.measure(&ids);
        let mut status = store::status(conn, "HorizontalPodAutoscaler", ns, name);
        status["currentReplicas"] = json!(current);
        if missing_request {
            status["conditions"] = json!([{"type": "ScalingActive", "status": "False",
                "reason": "FailedGetResourceMetric",
                "message": "the HPA was unable to compute the replica count: missing request for cpu"}]);
            store::set_status(conn, "HorizontalPodAutoscaler", ns, name, &status)?;
            return Ok(());
        }
        let (mut used, mut requested, mut measured) = (0u64, 0i128, 0i64);
        for (cids, request) in &per_pod {
            let rates: Option<Vec<u64>> = cids
                .iter()
                .map(|c| self.hpa.rates.get(c).copied())
                .collect();
            if let Some(r) = rates.filter(|r| !r.is_empty()) {
                used += r.iter().sum::<u64>();
                requested += request;
                measured += 1;
            }
        }
        let now = Instant::now();
        let min = spec.min_replicas.unwrap_or(1).max(1);
        let max = spec.max_replicas.max(min);
        let desired = if measured == 0 || requested <= 0 {
            // no metrics yet: only the bounds apply
            current.clamp(min, max)
        } else {
            let util = used as f64 * 100.0 / requested as f64;
            status["currentCPUUtilizationPercentage"] = json!(util.round() as i64);
            status["currentAverageMillicores"] = json!(used as i64 / measured);
            status["currentMetrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": util.round() as i64,
                            "averageValue": format!("{}m", used as i64 / measured)}}}]);
            // pods without a measurement yet count at the current ratio (upstream
            // assumes them at the target, which keeps the same direction)
            let proposal = formula(measured, util, target_util);
            let proposal = if proposal == measured {
                current
            } else {
                proposal + (current - measured).max(0)
            };
            let history = self.hpa.recommendations.entry(key.clone()).or_default();
            let up = window(&spec.behavior, "scaleUp", 0);
            let down = window(&spec.behavior, "scaleDown", 300);
            let stabilized = stabilize(current, proposal, history, up, down, now);
            history.push((now, proposal));
            let keep = up.max(down);
            history.retain(|(t, _)| now.duration_since(*t) <= keep);
            // default scale-up policy: at most double, or 4 more pods, per 15 s
            let ups = self.hpa.scale_ups.entry(key.clone()).or_default();
            ups.retain(|(t, _)| now.duration_since(*t) <= Duration::from_secs(15));
            let base = ups.first().map_or(current, |(_, from)| *from);
            let limit = (base * 2).max(base + 4);
            stabilized.min(limit).clamp(min, max)
        };
        status["desiredReplicas"] = json!(desired);
        status["conditions"] = json!([
            {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
            {"type": "ScalingActive", "status": if measured > 0 {"True"} else {"False"},
             "reason": if measured > 0 {"ValidMetricFound"} else {"FailedGetResourceMetric"}},
        ]);
        if desired != current {
            let mut m = target.manifest.clone();
            m["spec"]["replicas"] = json!(desired);
            let parsed = crate::manifest::parse("autoscaler", &m.to_string()).map_err(|e| {
                store::Error::Stored {
                    kind: target_ref.kind.clone(),
                    namespace: ns.into(),
                    name: target_ref.name.clone(),
                    source: Box::new(e),
                }
            })?;
            if let Some(o) = parsed.objects.first() {
                store::apply(conn, o, &m, &target.owner)?;
            }
            if desired > current {
                self.hpa
                    .scale_ups
                    .entry(key)
                    .or_default()
                    .push((now, current));
            }
            let why = if desired > current { "above" } else { "below" };
            store::event(
                conn,
                ("HorizontalPodAutoscaler", ns, name),
                "Normal",
                "SuccessfulRescale",
                &format!(
                    "New size: {desired}; reason: cpu resource utilization (percentage of request) {why} target"
                ),
            )?;
            status["lastScaleTime"] = json!(crate::now());
            status["currentReplicas"] = json!(desired);
        }
        store::set_status(conn, "HorizontalPodAutoscaler", ns, name, &status)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_and_tolerance_like_upstream() {
        // 2 pods at 200% of a 50% target: 8
        assert_eq!(formula(2, 200.0, 50.0), 8);
        // within 10%: no change
        assert_eq!(formula(3, 54.0, 50.0), 3);
        assert_eq!(formula(3, 46.0, 50.0), 3);
        // idle: ceil(0) = 0 (bounds lift it to minReplicas)
        assert_eq!(formula(3, 0.0, 50.0), 0);
        assert_eq!(formula(4, 30.0, 50.0), 3);
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let now = Instant::now();
        let h = vec![
            (now - Duration::from_secs(10), 5),
            (now - Duration::from_secs(2), 4),
        ];
        // down window 300 s: the highest recent recommendation (5) holds
        assert_eq!(
            stabilize(5, 1, &h, Duration::ZERO, Duration::from_secs(300), now),
            5
        );
        // a 5 s window only sees 4
        assert_eq!(
            stabilize(5, 1, &h, Duration::ZERO, Duration::from_secs(5), now),
            4
        );
        // scale up is immediate with a zero up window
        assert_eq!(
            stabilize(2, 6, &h, Duration::ZERO, Duration::from_secs(300), now),
            6
        );
    }
}
