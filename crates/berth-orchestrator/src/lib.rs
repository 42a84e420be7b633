//! Kubernetes-style desired state reconciled on one node over berth-engine.
//!
//! Parses the supported kinds (Namespace, Pod, Deployment, ReplicaSet, Service,
//! ConfigMap, Secret, HorizontalPodAutoscaler, Job, PersistentVolumeClaim) and runs
//! level-triggered control loops. It is not a cluster: one node only.
//!
//! [`manifest`] reads manifests (validation with field paths, warnings for fields
//! berth does not act on); [`store`] keeps desired state, observed status and
//! events in the berth root's SQLite database; [`controller`] reconciles
//! Deployments (rolling update, Recreate, revisions), ReplicaSets and Pods (one
//! network sandbox per pod, init containers, env from ConfigMaps and Secrets,
//! volumes, resource limits, security context, startup/liveness/readiness probes)
//! into berth-engine containers, started in parallel; [`batch`] runs Jobs and
//! provisions PersistentVolumeClaims as local directories; [`hpa`] scales on CPU
//! utilization measured from cgroups ([`metrics`]); [`services`] gives Services a
//! virtual IP balanced over ready pods (and NodePorts), with DNS names through the
//! engine's embedded DNS server.

pub mod batch;
pub mod controller;
pub mod hpa;
pub mod manifest;
pub mod metrics;
pub mod services;
pub mod store;

/// Current time in RFC 3339, as every record stores it.
pub fn now() -> String {
    berth_engine::timefmt::now()
}
