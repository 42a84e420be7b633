//! Kubernetes-style desired state reconciled on one node over berth-engine.
//!
//! Parses the supported kinds (Namespace, Pod, Deployment, ReplicaSet, Service,
//! ConfigMap, Secret, HorizontalPodAutoscaler, Job, PersistentVolumeClaim) and runs
//! level-triggered control loops. It is not a cluster: one node only.
