//! Kubernetes-style desired state reconciled on one node over berth-engine.
//!
//! Parses the supported kinds (Namespace, Pod, Deployment, ReplicaSet, Service,
//! ConfigMap, Secret, HorizontalPodAutoscaler, Job, PersistentVolumeClaim) and runs
//! level-triggered control loops. It is not a cluster: one node only.
//!
//! So far: [`manifest`] reads manifests (validation with field paths, warnings for
//! fields berth does not act on); [`store`] keeps desired state in the berth root's
//! SQLite database; [`controller`] reconciles Deployments (rolling update and
//! Recreate), ReplicaSets and Pods (init containers, env from ConfigMaps and Secrets,
//! volumes, resource limits, security context, probes) into berth-engine containers,
//! and [`services`] gives Services a virtual IP balanced over ready pods (and
//! NodePorts). HorizontalPodAutoscalers and Jobs are stored but not acted on yet.

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
