//! Reading manifests: multi-document YAML or JSON into typed objects, with every
//! unsupported field reported as a warning and every invalid value as an error naming
//! its path (`spec.template.spec.containers[0].image`).

pub mod quantity;
pub mod selector;
pub mod types;

mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use quantity::Quantity;
pub use selector::LabelSelector;
use types::*;

/// One supported object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `metadata` (namespace filled with "default" for namespaced kinds).
    pub metadata: ObjectMeta,
    /// Kind-specific content.
    pub body: Body,
}

/// Kind-specific content of an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// v1 Namespace.
    Namespace,
    /// v1 Pod.
    Pod(PodSpec),
    /// apps/v1 Deployment.
    Deployment(DeploymentSpec),
    /// apps/v1 ReplicaSet.
    ReplicaSet(ReplicaSetSpec),
    /// v1 Service.
    Service(ServiceSpec),
    /// v1 ConfigMap: text data (binaryData decoded into `binary`).
    ConfigMap {
        /// `data`.
        data: BTreeMap<String, String>,
        /// `binaryData`, decoded.
        binary: BTreeMap<String, Vec<u8>>,
    },
    /// v1 Secret: `data` decoded from base64, merged with `stringData`.
    Secret {
        /// `type` (Opaque by default).
        kind: String,
        /// Decoded values.
        data: BTreeMap<String, Vec<u8>>,
    },
    /// autoscaling/v2 HorizontalPodAutoscaler.
    HorizontalPodAutoscaler(HpaSpec),
    /// batch/v1 Job.
    Job(JobSpec),
    /// v1 PersistentVolumeClaim.
    PersistentVolumeClaim(PvcSpec),
}

/// Kinds, their API versions and whether they live in a namespace.
const KINDS: &[(&str, &str, bool)] = &[
    ("Namespace", "v1", false),
    ("Pod", "v1", true),
    ("Deployment", "apps/v1", true),
    ("ReplicaSet", "apps/v1", true),
    ("Service", "v1", true),
    ("ConfigMap", "v1", true),
    ("Secret", "v1", true),
    ("HorizontalPodAutoscaler", "autoscaling/v2", true),
    ("Job", "batch/v1", true),
    ("PersistentVolumeClaim", "v1", true),
];

impl Object {
    /// The kind as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Namespace => "Namespace",
            Body::Pod(_) => "Pod",
            Body::Deployment(_) => "Deployment",
            Body::ReplicaSet(_) => "ReplicaSet",
            Body::Service(_) => "Service",
            Body::ConfigMap { .. } => "ConfigMap",
            Body::Secret { .. } => "Secret",
            Body::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Body::Job(_) => "Job",
            Body::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
        }
    }

    /// The namespace, "default" when not given ("" for cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }
}

/// Where in the input a message points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name or "-" for stdin.
    pub source: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// "Deployment web" once known.
    pub object: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if !self.object.is_empty() {
            write!(f, " ({})", self.object)?;
        }
        Ok(())
    }
}

/// A field berth does not act on: the object is still applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub at: Location,
    /// Field path.
    pub path: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field {} is not supported by berth and is ignored",
            self.at, self.path
        )
    }
}

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path.
    pub path: String,
    /// What is wrong.
    pub msg: String,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not YAML or JSON.
    #[error("{at}: not valid YAML or JSON: {msg}")]
    Syntax {
        /// Where.
        at: Location,
        /// Parser message.
        msg: String,
    },
    /// A kind or apiVersion berth does not serve.
    #[error("{at}: {msg}")]
    Unsupported {
        /// Where.
        at: Location,
        /// What.
        msg: String,
    },
    /// Values that break the API's rules.
    #[error("{at}: {}", problems.iter().map(|p| format!("{}: {}", p.path, p.msg)).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Where.
        at: Location,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// Everything read from one input.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Objects in input order.
    pub objects: Vec<Object>,
    /// Unsupported fields.
    pub warnings: Vec<Warning>,
    /// Each object's document as written (JSON), same order as `objects`.
    pub values: Vec<Value>,
}

/// Parse every document of `text` (YAML stream, JSON object, or a `kind: List`).
/// `source` names the input in messages. Empty documents are skipped.
pub fn parse(source: &str, text: &str) -> Result<Parsed, Error> {
    let mut out = Parsed::default();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let mut at = Location {
            source: source.to_string(),
            document: i + 1,
            object: String::new(),
        };
        let value = Value::deserialize(doc).map_err(|e| Error::Syntax {
            at: at.clone(),
            msg: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            let items = value.get("items").and_then(Value::as_array).cloned();
            for item in items.unwrap_or_default() {
                parse_value(&mut at, item, &mut out)?;
            }
        } else {
            parse_value(&mut at, value, &mut out)?;
        }
    }
    Ok(out)
}

fn parse_value(at: &mut Location, value: Value, out: &mut Parsed) -> Result<(), Error> {
    let unsupported = |at: &Location, msg: String| Error::Unsupported {
        at: at.clone(),
        msg,
    };
    let Value::Object(map) = &value else {
        return Err(unsupported(
            at,
            "a document must be a mapping with kind and apiVersion".into(),
        ));
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    at.object = format!("{kind} {name}").trim().to_string();
    let Some(&(_, want_api, namespaced)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        let known: Vec<_> = KINDS.iter().map(|k| k.0).collect();
        return Err(unsupported(
            at,
            if kind.is_empty() {
                "kind: required field missing".into()
            } else {
                format!(
                    "kind: {kind:?} is not supported (supported: {})",
                    known.join(", ")
                )
            },
        ));
    };
    if api != want_api {
        return Err(unsupported(
            at,
            format!("apiVersion: {api:?} is not served for {kind}; use {want_api:?}"),
        ));
    }
    let (metadata, body, known) = match kind {
        "Namespace" => {
            let w: Wire<NamespaceSpec> = typed(at, &value)?;
            (w.metadata.clone(), Body::Namespace, to_value(&w))
        }
        "Pod" => wire(at, &value, Body::Pod)?,
        "Deployment" => wire(at, &value, Body::Deployment)?,
        "ReplicaSet" => wire(at, &value, Body::ReplicaSet)?,
        "Service" => wire(at, &value, Body::Service)?,
        "HorizontalPodAutoscaler" => wire(at, &value, Body::HorizontalPodAutoscaler)?,
        "Job" => wire(at, &value, Body::Job)?,
        "PersistentVolumeClaim" => wire(at, &value, Body::PersistentVolumeClaim)?,
        "ConfigMap" => {
            let w: ConfigMapWire = typed(at, &value)?;
            let mut binary = BTreeMap::new();
            let mut problems = Vec::new();
            for (k, v) in &w.binary_data {
                match decode_base64(v) {
                    Ok(b) => {
                        binary.insert(k.clone(), b);
                    }
                    Err(msg) => problems.push(Problem {
                        path: format!("binaryData.{k}"),
                        msg,
                    }),
                }
            }
            invalid(at, problems)?;
            let body = Body::ConfigMap {
                data: w.data.clone(),
                binary,
            };
            (w.metadata.clone(), body, to_value(&w))
        }
        "Secret" => {
            let w: SecretWire = typed(at, &value)?;
            let mut data = BTreeMap::new();
            let mut problems = Vec::new();
            for (k, v) in &w.data {
                match decode_base64(v) {
                    Ok(b) => {
                        data.insert(k.clone(), b);
                    }
                    Err(msg) => problems.push(Problem {
                        path: format!("data.{k}"),
                        msg,
                    }),
                }
            }
            invalid(at, problems)?;
            for (k, v) in &w.string_data {
                data.insert(k.clone(), v.clone().into_bytes());
            }
            let body = Body::Secret {
                kind: w.kind_of_secret.clone().unwrap_or_else(|| "Opaque".into()),
                data,
            };
            (w.metadata.clone(), body, to_value(&w))
        }
        _ => unreachable!("kind checked against KINDS"),
    };
    let mut unknown = Vec::new();
    unknown_fields(&value, &known, String::new(), &mut unknown);
    out.warnings.extend(unknown.into_iter().map(|path| Warning {
        at: at.clone(),
        path,
    }));
    let mut object = Object { metadata, body };
    if namespaced
        && object
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("")
            .is_empty()
    {
        object.metadata.namespace = Some("default".into());
    }
    invalid(at, validate::object(&object))?;
    out.objects.push(object);
    out.values.push(value);
    Ok(())
}

fn invalid(at: &Location, problems: Vec<Problem>) -> Result<(), Error> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            at: at.clone(),
            problems,
        })
    }
}

/// The common shape `{apiVersion, kind, metadata, spec}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<S> {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapWire {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    binary_data: BTreeMap<String, String>,
    #[serde(default)]
    immutable: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretWire {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, rename = "type")]
    kind_of_secret: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
    #[serde(default)]
    immutable: Option<bool>,
}

fn typed<T: DeserializeOwned>(at: &Location, value: &Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Error::Invalid {
            at: at.clone(),
            problems: vec![Problem {
                path: if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                msg: e.into_inner().to_string(),
            }],
        }
    })
}

fn wire<S>(
    at: &Location,
    value: &Value,
    body: fn(S) -> Body,
) -> Result<(ObjectMeta, Body, Value), Error>
where
    S: DeserializeOwned + Serialize + Default,
{
    let w: Wire<S> = typed(at, value)?;
    let known = to_value(&w);
    Ok((w.metadata, body(w.spec), known))
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// Metadata the API server fills in; exported objects carry them and they mean nothing
/// on input, so they are not worth a warning.
const SERVER_FIELDS: &[&str] = &[
    "status",
    "metadata.creationTimestamp",
    "metadata.uid",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.managedFields",
    "metadata.selfLink",
];

/// Paths present in `input` but not in `known` (the typed re-serialization).
fn unknown_fields(input: &Value, known: &Value, path: String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, p, out),
                    None if SERVER_FIELDS.contains(&p.as_str()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                unknown_fields(iv, kv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("not valid base64: {e}"))
}

#[cfg(test)]
mod tests;
