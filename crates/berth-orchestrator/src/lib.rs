//! Kubernetes-style desired state reconciled on one node over berth-engine.
//!
//! Parses the supported kinds (Namespace, Pod, Deployment, ReplicaSet, Service,
//! ConfigMap, Secret, HorizontalPodAutoscaler, Job, PersistentVolumeClaim) and runs
//! level-triggered control loops. It is not a cluster: one node only.
//!
//! So far: [`manifest`] reads manifests (validation with field paths, warnings for
//! fields berth does not act on). The control loops are not written yet.

pub mod manifest;
