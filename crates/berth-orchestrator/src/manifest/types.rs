//! The Kubernetes kinds berth understands, with the fields it acts on.
//!
//! Field names and shapes follow the upstream API so the same YAML runs on a cluster.
//! Fields not listed here are reported as warnings by the parser (never silently
//! dropped); none of these types skips a field when serialized, which is how the parser
//! tells known fields from unknown ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::selector::LabelSelector;

/// `metadata` of every object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name (DNS label rules).
    #[serde(default)]
    pub name: String,
    /// Namespace; "default" when empty.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A number or a string such as a named port or a percentage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name or "25%".
    String(String),
}

/// `Namespace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {}

/// `Pod.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Main containers.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Run to completion, in order, before the main containers.
    #[serde(default)]
    pub init_containers: Vec<Container>,
    /// Always (default), OnFailure, Never.
    #[serde(default)]
    pub restart_policy: Option<String>,
    /// Volumes the containers mount.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Seconds between SIGTERM and SIGKILL (default 30).
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
    /// Pod-level user and group defaults.
    #[serde(default)]
    pub security_context: Option<PodSecurityContext>,
    /// Hostname inside the pod.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `spec.securityContext` of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// Default uid of the containers.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// Default gid of the containers.
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// Refuse to start a container whose user is 0.
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// Supplementary group owning the volumes.
    #[serde(default)]
    pub fs_group: Option<i64>,
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Unique within the pod.
    #[serde(default)]
    pub name: String,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Replaces the image's Entrypoint.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Whole ConfigMaps or Secrets as environment.
    #[serde(default)]
    pub env_from: Vec<EnvFromSource>,
    /// Ports the container listens on.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Requests and limits.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Where volumes appear.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Restart the container when it fails.
    #[serde(default)]
    pub liveness_probe: Option<Probe>,
    /// Gate traffic from Services.
    #[serde(default)]
    pub readiness_probe: Option<Probe>,
    /// Hold the other probes until it succeeds.
    #[serde(default)]
    pub startup_probe: Option<Probe>,
    /// User, group, capabilities, read-only root.
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    /// Always, IfNotPresent, Never.
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// Keep stdin open.
    #[serde(default)]
    pub stdin: Option<bool>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: Option<bool>,
}

/// `env[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[serde(default)]
    pub name: String,
    /// Literal value (`$(VAR)` references expand).
    #[serde(default)]
    pub value: Option<String>,
    /// Value from a ConfigMap, Secret or pod field.
    #[serde(default)]
    pub value_from: Option<EnvVarSource>,
}

/// `env[].valueFrom`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a ConfigMap.
    #[serde(default)]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret.
    #[serde(default)]
    pub secret_key_ref: Option<KeySelector>,
    /// A field of the pod (metadata.name, metadata.namespace, status.podIP, ...).
    #[serde(default)]
    pub field_ref: Option<FieldRef>,
}

/// A key of a named ConfigMap or Secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Key in its data.
    #[serde(default)]
    pub key: String,
    /// A missing object or key is not an error.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// `fieldRef`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    /// Path such as metadata.name.
    #[serde(default)]
    pub field_path: String,
    /// Usually v1.
    #[serde(default)]
    pub api_version: Option<String>,
}

/// `envFrom[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// Prefix for every key.
    #[serde(default)]
    pub prefix: Option<String>,
    /// All keys of a ConfigMap.
    #[serde(default)]
    pub config_map_ref: Option<NameRef>,
    /// All keys of a Secret.
    #[serde(default)]
    pub secret_ref: Option<NameRef>,
}

/// A reference by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameRef {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// A missing object is not an error.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// `ports[]` of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Name a Service's targetPort can use.
    #[serde(default)]
    pub name: Option<String>,
    /// Port number inside the pod.
    #[serde(default)]
    pub container_port: i64,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Publish on the node.
    #[serde(default)]
    pub host_port: Option<i64>,
}

/// `resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Requests (cpu shares, HPA utilization base).
    #[serde(default)]
    pub requests: BTreeMap<String, QuantityText>,
    /// Limits (cgroup limits).
    #[serde(default)]
    pub limits: BTreeMap<String, QuantityText>,
}

/// A quantity as written (YAML may give a number or a string); validated separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QuantityText {
    /// `cpu: 1`.
    Number(serde_json::Number),
    /// `memory: 32Mi`.
    Text(String),
}

impl QuantityText {
    /// The text Kubernetes would parse.
    pub fn as_text(&self) -> String {
        match self {
            QuantityText::Number(n) => n.to_string(),
            QuantityText::Text(t) => t.clone(),
        }
    }
}

/// `volumeMounts[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// Name of a pod volume.
    #[serde(default)]
    pub name: String,
    /// Absolute path in the container.
    #[serde(default)]
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: Option<bool>,
    /// A path inside the volume instead of its root.
    #[serde(default)]
    pub sub_path: Option<String>,
}

/// `volumes[]` of a pod: exactly one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name the mounts use.
    #[serde(default)]
    pub name: String,
    /// A scratch directory living as long as the pod.
    #[serde(default)]
    pub empty_dir: Option<EmptyDir>,
    /// Files from a ConfigMap.
    #[serde(default)]
    pub config_map: Option<ConfigMapVolume>,
    /// Files from a Secret.
    #[serde(default)]
    pub secret: Option<SecretVolume>,
    /// A host directory or file.
    #[serde(default)]
    pub host_path: Option<HostPath>,
    /// A claimed local volume.
    #[serde(default)]
    pub persistent_volume_claim: Option<PvcSource>,
}

/// `emptyDir`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDir {
    /// "" (disk) or Memory (tmpfs).
    #[serde(default)]
    pub medium: Option<String>,
    /// Size cap.
    #[serde(default)]
    pub size_limit: Option<QuantityText>,
}

/// `items[]` of ConfigMap and Secret volumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    /// Key in the data.
    #[serde(default)]
    pub key: String,
    /// Relative file path.
    #[serde(default)]
    pub path: String,
    /// File mode.
    #[serde(default)]
    pub mode: Option<u32>,
}

/// `configMap` volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolume {
    /// ConfigMap name.
    #[serde(default)]
    pub name: String,
    /// Subset of keys and their paths.
    #[serde(default)]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (default 0644).
    #[serde(default)]
    pub default_mode: Option<u32>,
    /// A missing ConfigMap is not an error.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// `secret` volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    /// Secret name.
    #[serde(default)]
    pub secret_name: String,
    /// Subset of keys and their paths.
    #[serde(default)]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (default 0644).
    #[serde(default)]
    pub default_mode: Option<u32>,
    /// A missing Secret is not an error.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// `hostPath` volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPath {
    /// Path on this host.
    #[serde(default)]
    pub path: String,
    /// "", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `persistentVolumeClaim` volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// PVC name in the pod's namespace.
    #[serde(default)]
    pub claim_name: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// A liveness, readiness or startup probe: exactly one handler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Run a command in the container; exit 0 is success.
    #[serde(default)]
    pub exec: Option<ExecAction>,
    /// HTTP GET; 200-399 is success.
    #[serde(default)]
    pub http_get: Option<HttpGetAction>,
    /// A TCP connection that opens is success.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Wait before the first probe.
    #[serde(default)]
    pub initial_delay_seconds: Option<i64>,
    /// Interval (default 10).
    #[serde(default)]
    pub period_seconds: Option<i64>,
    /// Per-probe timeout (default 1).
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    /// Successes to become ready (default 1).
    #[serde(default)]
    pub success_threshold: Option<i64>,
    /// Failures to give up (default 3).
    #[serde(default)]
    pub failure_threshold: Option<i64>,
}

/// `exec` probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    /// Command and arguments (no shell).
    #[serde(default)]
    pub command: Vec<String>,
}

/// `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Path (default /).
    #[serde(default)]
    pub path: Option<String>,
    /// Number or a container port name.
    pub port: IntOrString,
    /// Host (default: the pod IP).
    #[serde(default)]
    pub host: Option<String>,
    /// HTTP only here.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

/// A header of an httpGet probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Header value.
    #[serde(default)]
    pub value: String,
}

/// `tcpSocket` probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    /// Number or a container port name.
    pub port: IntOrString,
    /// Host (default: the pod IP).
    #[serde(default)]
    pub host: Option<String>,
}

/// `securityContext` of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// uid.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// gid.
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// Refuse uid 0.
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// Read-only root filesystem.
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
    /// All capabilities, no confinement.
    #[serde(default)]
    pub privileged: Option<bool>,
    /// false sets no_new_privileges.
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities added to and dropped from the default set.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

/// `capabilities`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Names without CAP_ (NET_ADMIN), or ALL.
    #[serde(default)]
    pub add: Vec<String>,
    /// Names without CAP_, or ALL.
    #[serde(default)]
    pub drop: Vec<String>,
}

/// `spec.template` of workload kinds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Labels (must satisfy the selector) and annotations of the pods.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The pods' spec.
    #[serde(default)]
    pub spec: PodSpec,
}

/// `Deployment.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Desired pods (default 1).
    #[serde(default)]
    pub replicas: Option<i64>,
    /// Must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    /// The pods.
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// RollingUpdate (default) or Recreate.
    #[serde(default)]
    pub strategy: Option<DeploymentStrategy>,
    /// Old ReplicaSets kept for rollback (default 10).
    #[serde(default)]
    pub revision_history_limit: Option<i64>,
    /// Seconds a pod must be ready before it counts as available.
    #[serde(default)]
    pub min_ready_seconds: Option<i64>,
    /// Seconds before a stalled rollout is reported.
    #[serde(default)]
    pub progress_deadline_seconds: Option<i64>,
    /// Pause rollouts.
    #[serde(default)]
    pub paused: Option<bool>,
}

/// `strategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// RollingUpdate or Recreate.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Surge and unavailability bounds.
    #[serde(default)]
    pub rolling_update: Option<RollingUpdate>,
}

/// `strategy.rollingUpdate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Extra pods allowed above replicas (default 25%).
    #[serde(default)]
    pub max_surge: Option<IntOrString>,
    /// Pods allowed to be unavailable (default 25%).
    #[serde(default)]
    pub max_unavailable: Option<IntOrString>,
}

/// `ReplicaSet.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    /// Desired pods (default 1).
    #[serde(default)]
    pub replicas: Option<i64>,
    /// Must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    /// The pods.
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// Seconds a pod must be ready before it counts as available.
    #[serde(default)]
    pub min_ready_seconds: Option<i64>,
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP (default) or NodePort.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Pods receiving traffic.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// A fixed virtual IP, or None for headless.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
}

/// `Service.spec.ports[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when there are several.
    #[serde(default)]
    pub name: Option<String>,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Port of the virtual IP.
    #[serde(default)]
    pub port: i64,
    /// Port (or container port name) on the pods; default: port.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// NodePort (30000-32767) for type NodePort.
    #[serde(default)]
    pub node_port: Option<i64>,
}

/// `HorizontalPodAutoscaler.spec` (autoscaling/v2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaSpec {
    /// The scaled workload.
    #[serde(default)]
    pub scale_target_ref: CrossVersionRef,
    /// Lower bound (default 1).
    #[serde(default)]
    pub min_replicas: Option<i64>,
    /// Upper bound.
    #[serde(default)]
    pub max_replicas: i64,
    /// Resource metrics (CPU utilization).
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    /// Stabilization windows and policies.
    #[serde(default)]
    pub behavior: Option<serde_json::Value>,
}

/// `scaleTargetRef`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossVersionRef {
    /// apps/v1.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Deployment or ReplicaSet.
    #[serde(default)]
    pub kind: String,
    /// Object name.
    #[serde(default)]
    pub name: String,
}

/// `metrics[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Resource (the only type supported on one node).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The resource metric.
    #[serde(default)]
    pub resource: Option<ResourceMetric>,
}

/// `metrics[].resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMetric {
    /// cpu or memory.
    #[serde(default)]
    pub name: String,
    /// Target.
    #[serde(default)]
    pub target: MetricTarget,
}

/// `metrics[].resource.target`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// Utilization or AverageValue.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Percent of requests.
    #[serde(default)]
    pub average_utilization: Option<i64>,
    /// Absolute per-pod value.
    #[serde(default)]
    pub average_value: Option<QuantityText>,
}

/// `Job.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Successful pods needed (default 1).
    #[serde(default)]
    pub completions: Option<i64>,
    /// Pods at once (default 1).
    #[serde(default)]
    pub parallelism: Option<i64>,
    /// Failed pods tolerated (default 6).
    #[serde(default)]
    pub backoff_limit: Option<i64>,
    /// Deadline for the whole job.
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// The pods (restartPolicy OnFailure or Never).
    #[serde(default)]
    pub template: PodTemplateSpec,
}

/// `PersistentVolumeClaim.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcSpec {
    /// ReadWriteOnce etc.; one node, so informational.
    #[serde(default)]
    pub access_modes: Vec<String>,
    /// `requests.storage`.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Only the local class exists.
    #[serde(default)]
    pub storage_class_name: Option<String>,
    /// Filesystem only.
    #[serde(default)]
    pub volume_mode: Option<String>,
}
