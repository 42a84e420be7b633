//! The control loops: level-triggered, each pass compares what the manifests ask for
//! with what runs and closes the gap. Nothing is kept only in memory except probe
//! counters, so a restarted `berth serve` adopts what runs and duplicates nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use berth_engine::sandbox::{self, SandboxSpec};
use berth_engine::{Container, CreateConfig, Engine, Launcher};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::manifest::types::{Container as ContainerSpec, IntOrString, PodTemplateSpec, Probe};
use crate::manifest::{Body, Quantity};
use crate::store::{self, PodRecord, Stored};

/// Label on every container: the uid of its pod.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label on every container: its pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label on every container: its pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label on every container: the container's name in the pod spec.
pub const CONTAINER_LABEL: &str = "io.kubernetes.container.name";
const HASH_LABEL: &str = "pod-template-hash";
/// Annotation of a ReplicaSet: its Deployment revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation copied from a Deployment to its ReplicaSet (`rollout history`).
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Label of the pods of one template.
pub const TEMPLATE_HASH_LABEL: &str = HASH_LABEL;

/// Controller errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The engine failed.
    #[error("{what}: {source}")]
    Engine {
        /// What was being done.
        what: String,
        /// Why.
        source: berth_engine::Error,
    },
}

fn engine_err(what: impl Into<String>) -> impl FnOnce(berth_engine::Error) -> Error {
    let what = what.into();
    move |source| Error::Engine { what, source }
}

/// How the controller gets images (the CLI pulls with berth-registry).
pub trait Images {
    /// The image for `reference` under `policy` (Always, IfNotPresent, Never).
    fn get(
        &self,
        reference: &str,
        policy: &str,
    ) -> Result<(berth_image::Store, berth_image::Image), String>;
}

/// Containers created and started at once by one pass (0 -> 50 replicas was 7.3 s
/// one at a time).
const START_WORKERS: usize = 8;

/// Owner prefix of the Services' DNS records (`service/NS/NAME`).
const DNS_OWNER: &str = "service/";

/// The sandbox (shared network namespace) of pod `p`.
pub fn sandbox_name(p: &PodRecord) -> String {
    format!("k8s_{}_{}", p.name, p.namespace)
}

/// Makes the pod's sandbox unless it exists.
fn ensure_sandbox(engine: &Engine, spec: &SandboxSpec) -> Result<(), String> {
    if sandbox::get(engine, &spec.name).is_ok() {
        return Ok(());
    }
    // a serve killed while making it left a row without its network (get fails on
    // it, create says it exists): start over
    let _ = sandbox::remove(engine, &spec.name, true);
    let sb = sandbox::create(engine, spec).map_err(|e| format!("create pod sandbox: {e}"))?;
    hairpin(engine, &sb.id);
    Ok(())
}

/// Lets a pod reach itself through a Service's virtual IP: where bridged traffic
/// passes the host's nat hooks (br_netfilter), the DNAT back to the pod is bridged
/// out of the port it came in on, which a bridge refuses unless the port is in
/// hairpin mode (what kubenet does too). The host-side veth is the sandbox's
/// endpoint row in the engine's table.
fn hairpin(engine: &Engine, sandbox_id: &str) {
    let veth: Option<String> = engine
        .conn
        .query_row(
            "SELECT host_veth FROM endpoints WHERE container_id = ?1",
            [sandbox_id],
            |r| r.get(0),
        )
        .ok();
    if let Some(v) = veth.filter(|v| !v.is_empty() && !v.contains('/')) {
        let _ = std::fs::write(format!("/sys/class/net/{v}/brport/hairpin_mode"), "1");
    }
}

/// One container to create and start.
#[derive(Debug)]
struct StartJob {
    pod: PodRecord,
    sandbox: SandboxSpec,
    container: String,
    cfg: CreateConfig,
    store: berth_image::Store,
    image: berth_image::Image,
}

/// Creates and starts one container; on failure nothing is left (the next pass
/// tries again from scratch).
fn start_one(engine: &Engine, launcher: &Launcher, j: &StartJob) -> Result<(), String> {
    ensure_sandbox(engine, &j.sandbox)?;
    let c = engine
        .create(j.cfg.clone(), &j.store, &j.image)
        .map_err(|e| format!("create container {}: {e}", j.container))?;
    let started = engine.start(&c.id, launcher, None).and_then(|h| match h {
        Some(h) => h.started().map(|_| ()),
        None => Ok(()),
    });
    if let Err(e) = started {
        let _ = engine.remove(&c.id, true, true);
        return Err(format!("start container {}: {e}", j.container));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct ProbeState {
    successes: i64,
    failures: i64,
    last: Option<Instant>,
    passed: bool,
    /// The container start these counts belong to.
    started: String,
}

/// The reconciler over one engine.
pub struct Controller<'a> {
    pub(crate) engine: &'a Engine,
    launcher: Launcher,
    images: &'a dyn Images,
    probes: HashMap<(String, String, &'static str), ProbeState>,
    last_services: Option<String>,
    pending: Vec<StartJob>,
    passes: u64,
    last_dns: Option<Vec<(String, String, std::net::Ipv4Addr)>>,
    backoff_seen: HashMap<String, i64>,
    pub(crate) hpa: crate::hpa::State,
}

impl std::fmt::Debug for Controller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl<'a> Controller<'a> {
    /// A controller running containers through `engine`, monitors via `launcher`.
    pub fn new(
        engine: &'a Engine,
        launcher: Launcher,
        images: &'a dyn Images,
    ) -> Result<Self, Error> {
        engine
            .conn
            .execute_batch(store::SCHEMA)
            .and_then(|()| engine.conn.execute_batch(crate::services::SCHEMA))
            .map_err(store::Error::from)?;
        crate::services::collect_orphans();
        Ok(Controller {
            engine,
            launcher,
            images,
            probes: HashMap::new(),
            last_services: None,
            pending: Vec::new(),
            passes: 0,
            last_dns: None,
            backoff_seen: HashMap::new(),
            hpa: crate::hpa::State::default(),
        })
    }

    /// One pass of every loop.
    pub fn reconcile(&mut self) -> Result<(), Error> {
        let conn = &self.engine.conn;
        let objects = store::list(conn, "")?;
        let autoscalers: Vec<&Stored> = objects
            .iter()
            .filter(|o| o.object.kind() == "HorizontalPodAutoscaler")
            .collect();
        if !autoscalers.is_empty() {
            let pods = store::pods(conn)?;
            let containers = self.engine.list().map_err(engine_err("list containers"))?;
            for h in autoscalers {
                if let Body::HorizontalPodAutoscaler(spec) = &h.object.body {
                    self.autoscale(h, spec, &objects, &pods, &containers)?;
                }
            }
        }
        let conn = &self.engine.conn;
        let objects = store::list(conn, "")?;
        for d in objects.iter().filter(|o| o.object.kind() == "Deployment") {
            self.deployment(d, &objects)?;
        }
        let objects = store::list(conn, "")?;
        let mut pods = store::pods(conn)?;
        // owners that are gone take their pods and replica sets with them
        for rs in objects.iter().filter(|o| !o.owner.is_empty()) {
            if !owner_exists(&objects, &rs.owner, rs.object.namespace()) {
                store::delete(
                    conn,
                    rs.object.kind(),
                    rs.object.namespace(),
                    &rs.object.metadata.name,
                )?;
            }
        }
        let objects = store::list(conn, "")?;
        let mut doomed = Vec::new();
        pods.retain(|p| {
            let keep = owner_exists(&objects, &p.owner, &p.namespace);
            if !keep {
                doomed.push(p.clone());
            }
            keep
        });
        let containers = self.engine.list().map_err(engine_err("list containers"))?;
        for o in &objects {
            match &o.object.body {
                Body::Job(spec) => self.job(o, spec, &mut pods, &mut doomed, &containers)?,
                Body::ReplicaSet(spec) => {
                    let want = spec.replicas.unwrap_or(1).max(0) as usize;
                    self.scale_pods(o, &spec.template, want, &mut pods, &mut doomed)?;
                }
                Body::Pod(_) => {
                    let owner = format!("Pod/{}", o.object.metadata.name);
                    if !pods
                        .iter()
                        .any(|p| p.owner == owner && p.namespace == o.object.namespace())
                    {
                        let template = json!({
                            "metadata": o.manifest.get("metadata").cloned().unwrap_or(Value::Null),
                            "spec": o.manifest.get("spec").cloned().unwrap_or(Value::Null),
                        });
                        let p = new_pod(
                            o.object.namespace(),
                            &o.object.metadata.name,
                            &owner,
                            template,
                        );
                        store::add_pod(conn, &p)?;
                        pods.push(p);
                    }
                }
                _ => {}
            }
        }
        // pods about to stop leave their Services first
        self.services(&objects, &pods, &containers)?;
        self.delete_pods(&doomed)?;
        let containers = self.engine.list().map_err(engine_err("list containers"))?;
        // containers of pods that no longer exist (a serve killed mid-delete)
        let orphans: Vec<&Container> = containers
            .iter()
            .filter(|c| {
                c.labels()
                    .get(POD_UID_LABEL)
                    .is_some_and(|uid| !pods.iter().any(|p| &p.uid == uid))
            })
            .collect();
        let had_orphans = !orphans.is_empty();
        for c in orphans {
            let _ = self.engine.remove(&c.id, true, true);
        }
        // sandboxes of pods that vanished (serve killed mid-delete): not every pass,
        // listing them costs a query per sandbox
        self.passes = self.passes.wrapping_add(1);
        let sweep = self.passes % 20 == 1 || had_orphans;
        // labels, not list: one half-made sandbox must not hide every orphan
        if let Some(sandboxes) = sweep.then(|| sandbox::labels(self.engine).ok()).flatten() {
            for (name, labels) in sandboxes {
                let orphan = labels
                    .get(POD_UID_LABEL)
                    .is_some_and(|uid| !pods.iter().any(|p| &p.uid == uid));
                if orphan {
                    let _ = sandbox::remove(self.engine, &name, true);
                }
            }
        }
        self.claims(&objects, &containers)?;
        for p in &pods {
            self.sync_pod(p, &containers, &objects)?;
        }
        self.run_starts()?;
        // forget what belonged to containers and pods that are gone
        self.backoff_seen
            .retain(|id, _| containers.iter().any(|c| &c.id == id));
        self.probes
            .retain(|(uid, _, _), _| pods.iter().any(|p| &p.uid == uid));
        let pods = store::pods(&self.engine.conn)?;
        self.services(&objects, &pods, &containers)?;
        Ok(())
    }

    /// Rewrites the Services' rules when their endpoints changed.
    fn services(
        &mut self,
        objects: &[Stored],
        pods: &[PodRecord],
        containers: &[Container],
    ) -> Result<(), Error> {
        use crate::services;
        let conn = &self.engine.conn;
        let endpoints: Vec<services::Endpoint> = pods
            .iter()
            .filter(|p| p.ready)
            .filter_map(|p| {
                let ip = containers
                    .iter()
                    .filter(|c| c.labels().get(POD_UID_LABEL) == Some(&p.uid))
                    .find_map(|c| c.attachment.as_ref().and_then(|a| a.ip))?;
                let template: PodTemplateSpec = serde_json::from_value(p.template.clone()).ok()?;
                let ports = template
                    .spec
                    .containers
                    .iter()
                    .flat_map(|k| &k.ports)
                    .filter_map(|cp| Some((cp.name.clone()?, cp.container_port as u16)))
                    .collect();
                Some(services::Endpoint {
                    namespace: p.namespace.clone(),
                    labels: template.metadata.labels,
                    ip,
                    ports,
                })
            })
            .collect();
        let mut rendered = Vec::new();
        let mut keep = Vec::new();
        let mut names = Vec::new();
        for o in objects {
            let Body::Service(spec) = &o.object.body else {
                continue;
            };
            let (ns, name) = (o.object.namespace(), &o.object.metadata.name);
            let ip = services::cluster_ip(conn, &self.engine.root, ns, name)?;
            let spec = services::with_node_ports(conn, &self.engine.root, ns, name, spec)?;
            keep.push((ns.to_string(), name.clone()));
            names.push((ns.to_string(), name.clone(), ip));
            rendered.push(services::render(&spec, ns, ip, &endpoints));
        }
        services::release_missing(conn, &self.engine.root, &keep)?;
        if self.last_dns.as_ref() != Some(&names) {
            match self.publish_dns(&names) {
                Ok(()) => self.last_dns = Some(names),
                Err(e) => eprintln!("berth serve: service names: {e}"),
            }
        }
        let script = services::script(&self.engine.root, &rendered);
        if self.last_services.as_deref() != Some(script.as_str()) {
            match services::apply(&script) {
                Ok(()) => self.last_services = Some(script),
                Err(e) => eprintln!("berth serve: services: {e}"),
            }
        }
        Ok(())
    }

    /// Publishes `NAME.NS.svc.cluster.local` (and `NAME.NS.svc`, `NAME.NS`) for each
    /// Service's virtual IP through the engine's DNS records, and removes the names
    /// of Services that are gone. Pods find `NAME` through their search domains.
    fn publish_dns(&self, services: &[(String, String, std::net::Ipv4Addr)]) -> Result<(), Error> {
        use berth_engine::dns;
        let conn = &self.engine.conn;
        let dns_err = engine_err("service names");
        let mut owners = Vec::new();
        for (ns, name, ip) in services {
            let owner = format!("{DNS_OWNER}{ns}/{name}");
            let records: Vec<dns::Record> = [
                format!("{name}.{ns}.svc.cluster.local"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}"),
            ]
            .into_iter()
            .map(|n| dns::Record {
                name: n,
                ip: *ip,
                network: None,
            })
            .collect();
            dns::set_records(conn, &owner, &records).map_err(engine_err("service names"))?;
            owners.push(owner);
        }
        let stale: Vec<String> = dns::records(conn, None)
            .map_err(dns_err)?
            .into_iter()
            .map(|(owner, _)| owner)
            .filter(|o| o.starts_with(DNS_OWNER) && !owners.contains(o))
            .collect();
        for o in stale {
            dns::remove_owner(conn, &o).map_err(engine_err("service names"))?;
        }
        Ok(())
    }

    fn deployment(&self, d: &Stored, objects: &[Stored]) -> Result<(), Error> {
        let Body::Deployment(spec) = &d.object.body else {
            return Ok(());
        };
        let conn = &self.engine.conn;
        let ns = d.object.namespace();
        let name = &d.object.metadata.name;
        let owner = format!("Deployment/{name}");
        let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
        let hash = short_hash(&template);
        let rs_name = format!("{name}-{hash}");
        let owned: Vec<&Stored> = objects
            .iter()
            .filter(|o| {
                o.owner == owner && o.object.namespace() == ns && o.object.kind() == "ReplicaSet"
            })
            .collect();
        let replicas_of = |o: &Stored| match &o.object.body {
            Body::ReplicaSet(r) => r.replicas.unwrap_or(0),
            _ => 0,
        };
        let desired = spec.replicas.unwrap_or(1).max(0);
        let pods = store::pods(conn)?;
        let ready_of = |rs: &str| {
            pods.iter()
                .filter(|p| p.owner == format!("ReplicaSet/{rs}") && p.namespace == ns && p.ready)
                .count() as i64
        };
        let pods_of = |rs: &str| {
            pods.iter()
                .filter(|p| p.owner == format!("ReplicaSet/{rs}") && p.namespace == ns)
                .count() as i64
        };
        let current = owned.iter().find(|o| o.object.metadata.name == rs_name);
        let olds: Vec<&&Stored> = owned
            .iter()
            .filter(|o| o.object.metadata.name != rs_name)
            .collect();
        let recreate = spec.strategy.as_ref().and_then(|s| s.kind.as_deref()) == Some("Recreate");
        let mut new_replicas = current.map(|c| replicas_of(c)).unwrap_or(0);
        let mut old_targets: Vec<(&Stored, i64)> =
            olds.iter().map(|o| (**o, replicas_of(o))).collect();
        if recreate {
            for t in &mut old_targets {
                t.1 = 0;
            }
            let old_pods: i64 = olds.iter().map(|o| pods_of(&o.object.metadata.name)).sum();
            new_replicas = if old_pods == 0 { desired } else { 0 };
        } else {
            let ru = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
            let mut unavailable =
                resolve(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            let total: i64 = new_replicas + old_targets.iter().map(|t| t.1).sum::<i64>();
            if new_replicas < desired {
                new_replicas = (new_replicas + (desired + surge - total).max(0)).min(desired);
            }
            new_replicas = new_replicas.min(desired);
            if old_targets.is_empty() {
                new_replicas = desired;
            }
            // scale old sets down while enough pods stay available
            let min_available = desired - unavailable;
            let mut available: i64 = ready_of(&rs_name)
                + olds
                    .iter()
                    .map(|o| ready_of(&o.object.metadata.name))
                    .sum::<i64>();
            for (o, target) in &mut old_targets {
                let ready = ready_of(&o.object.metadata.name);
                let unready = (*target - ready).max(0);
                *target -= unready; // pods that serve nothing can go at once
                let removable = (available - min_available).clamp(0, *target);
                *target -= removable;
                available -= removable;
            }
        }
        let revision = owned
            .iter()
            .filter_map(|o| {
                o.object
                    .metadata
                    .annotations
                    .get(REVISION)?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        // a set that becomes current again (rollback) takes the next revision, as upstream
        let keep_revision = match current.and_then(|c| {
            c.object
                .metadata
                .annotations
                .get(REVISION)?
                .parse::<i64>()
                .ok()
        }) {
            Some(r) if r >= revision => r,
            _ => revision + 1,
        }
        .to_string();
        let mut annotations = json!({REVISION: keep_revision});
        if let Some(cause) = d.object.metadata.annotations.get(CHANGE_CAUSE) {
            annotations[CHANGE_CAUSE] = json!(cause);
        }
        let scaled = |rs: &str, from: i64, to: i64| {
            if from == to {
                return Ok(());
            }
            let dir = if to > from { "up" } else { "down" };
            store::event(
                conn,
                ("Deployment", ns, name),
                "Normal",
                "ScalingReplicaSet",
                &format!("Scaled {dir} replica set {rs} from {from} to {to}"),
            )
        };
        scaled(
            &rs_name,
            current.map(|c| replicas_of(c)).unwrap_or(0),
            new_replicas,
        )?;
        for (o, target) in &old_targets {
            scaled(&o.object.metadata.name, replicas_of(o), *target)?;
        }
        let mut selector = serde_json::to_value(&spec.selector).unwrap_or(Value::Null);
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut tpl = template.clone();
        tpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut labels = serde_json::to_value(&spec.template.metadata.labels).unwrap_or(json!({}));
        labels[HASH_LABEL] = json!(hash);
        let manifest = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                         "annotations": annotations},
            "spec": {"replicas": new_replicas, "selector": selector, "template": tpl},
        });
        put_replica_set(conn, &manifest, &owner)?;
        for (o, target) in old_targets {
            if target != replicas_of(o) {
                let mut m = o.manifest.clone();
                m["spec"]["replicas"] = json!(target);
                put_replica_set(conn, &m, &owner)?;
            }
        }
        // history: keep revisionHistoryLimit scaled-down sets for rollback
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut idle: Vec<&&Stored> = olds
            .iter()
            .copied()
            .filter(|o| replicas_of(o) == 0 && pods_of(&o.object.metadata.name) == 0)
            .collect();
        idle.sort_by_key(|o| {
            o.object
                .metadata
                .annotations
                .get(REVISION)
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
        });
        while idle.len() > limit {
            let o = idle.remove(0);
            store::delete(conn, "ReplicaSet", ns, &o.object.metadata.name)?;
        }
        Ok(())
    }

    fn scale_pods(
        &self,
        rs: &Stored,
        template: &PodTemplateSpec,
        want: usize,
        pods: &mut Vec<PodRecord>,
        doomed: &mut Vec<PodRecord>,
    ) -> Result<(), Error> {
        let ns = rs.object.namespace();
        let owner = format!("ReplicaSet/{}", rs.object.metadata.name);
        let mut mine: Vec<PodRecord> = pods
            .iter()
            .filter(|p| p.owner == owner && p.namespace == ns)
            .cloned()
            .collect();
        while mine.len() < want {
            let name = format!("{}-{}", rs.object.metadata.name, suffix());
            let t = serde_json::to_value(template).unwrap_or(Value::Null);
            let p = new_pod(ns, &name, &owner, t);
            store::add_pod(&self.engine.conn, &p)?;
            store::event(
                &self.engine.conn,
                ("ReplicaSet", ns, &rs.object.metadata.name),
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {name}"),
            )?;
            pods.push(p.clone());
            mine.push(p);
        }
        if mine.len() > want {
            // like the upstream controller: unready and newest pods go first
            mine.sort_by(|a, b| a.ready.cmp(&b.ready).then(b.created.cmp(&a.created)));
            let extra = mine.len() - want;
            for p in mine.into_iter().take(extra) {
                store::event(
                    &self.engine.conn,
                    ("ReplicaSet", ns, &rs.object.metadata.name),
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", p.name),
                )?;
                pods.retain(|q| q.uid != p.uid);
                doomed.push(p);
            }
        }
        Ok(())
    }

    /// Stops the pods' containers (grace period, in parallel) and forgets the pods.
    fn delete_pods(&self, doomed: &[PodRecord]) -> Result<(), Error> {
        if doomed.is_empty() {
            return Ok(());
        }
        let containers = self.engine.list().map_err(engine_err("list containers"))?;
        let (root, state) = (&self.engine.root, &self.engine.state);
        std::thread::scope(|s| {
            for p in doomed {
                let ids: Vec<String> = containers
                    .iter()
                    .filter(|c| c.labels().get(POD_UID_LABEL) == Some(&p.uid))
                    .map(|c| c.id.clone())
                    .collect();
                let grace = p.template["spec"]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30) as u32;
                let sandbox = sandbox_name(p);
                s.spawn(move || {
                    let Ok(eng) = Engine::open(root, state) else {
                        return;
                    };
                    for id in &ids {
                        let _ = eng.stop(id, Some(grace));
                        let _ = eng.remove(id, true, true);
                    }
                    let _ = sandbox::remove(&eng, &sandbox, true);
                });
            }
        });
        for p in doomed {
            store::remove_pod(&self.engine.conn, &p.uid)?;
            let _ = std::fs::remove_dir_all(self.pod_dir(&p.uid));
        }
        Ok(())
    }

    fn pod_dir(&self, uid: &str) -> std::path::PathBuf {
        self.engine.root.join("k8s").join("pods").join(uid)
    }

    fn sync_pod(
        &mut self,
        p: &PodRecord,
        containers: &[Container],
        objects: &[Stored],
    ) -> Result<(), Error> {
        let Ok(template) = serde_json::from_value::<PodTemplateSpec>(p.template.clone()) else {
            return Ok(());
        };
        let spec = &template.spec;
        // a pod that ran to its end stays as it ended unless its policy restarts it
        if matches!(p.phase.as_str(), "Succeeded" | "Failed")
            && spec.restart_policy.as_deref().unwrap_or("Always") != "Always"
        {
            return Ok(());
        }
        let mut mine: Vec<&Container> = containers
            .iter()
            .filter(|c| c.labels().get(POD_UID_LABEL) == Some(&p.uid))
            .collect();
        // created but never started: a serve killed between the two (this pass's own
        // starts are not in `containers` yet); made again from scratch below
        mine.retain(|c| {
            let leftover = c.state == berth_engine::container::state::CREATED;
            if leftover {
                let _ = self.engine.remove(&c.id, true, true);
            }
            !leftover
        });
        let find = |n: &str| {
            mine.iter()
                .find(|c| c.labels().get(CONTAINER_LABEL).map(String::as_str) == Some(n))
        };
        let mut message = String::new();
        // init containers run one after the other to completion first
        for k in &spec.init_containers {
            match find(&k.name) {
                Some(c) if c.state == "exited" && c.exit_code == 0 => continue,
                Some(c) if c.state == "exited" => {
                    message = format!(
                        "init container {} failed with exit code {}",
                        k.name, c.exit_code
                    );
                    let _ = self.engine.remove(&c.id, true, true); // retried next pass
                }
                Some(_) => message = format!("waiting for init container {}", k.name),
                None => {
                    if let Err(e) = self.prepare_start(p, &template, k, true, objects) {
                        message = e;
                    }
                }
            }
            set_status(&self.engine.conn, p, "Pending", false, &message)?;
            return Ok(());
        }
        let mut running = 0;
        let mut ready = 0;
        let mut done = 0;
        let mut failed = 0;
        for k in &spec.containers {
            let Some(c) = find(&k.name) else {
                if let Err(e) = self.prepare_start(p, &template, k, false, objects) {
                    message = e;
                }
                continue;
            };
            match c.state.as_str() {
                "running" => {
                    running += 1;
                    if self.probe_ready(p, k, c) {
                        ready += 1;
                    }
                }
                "restarting" if self.backoff_seen.get(&c.id) != Some(&c.restart_count) => {
                    self.backoff_seen.insert(c.id.clone(), c.restart_count);
                    store::event(
                        &self.engine.conn,
                        ("Pod", &p.namespace, &p.name),
                        "Warning",
                        "BackOff",
                        &format!(
                            "Back-off restarting failed container {} in pod {}",
                            k.name, p.name
                        ),
                    )?;
                }
                "exited" if c.exit_code == 0 => done += 1,
                "exited" => failed += 1,
                // a serve killed between create and start left it: start it now (a
                // failure removes it, and the next pass makes it again)
                "created" => {
                    let started = self
                        .engine
                        .start(&c.id, &self.launcher, None)
                        .and_then(|h| h.map(|h| h.started().map(|_| ())).transpose());
                    if let Err(e) = started {
                        let _ = self.engine.remove(&c.id, true, true);
                        message = format!("start container {}: {e}", k.name);
                    }
                }
                _ => {}
            }
        }
        let n = spec.containers.len();
        let phase = if running > 0 && running + done + failed == n {
            "Running"
        } else if done == n {
            "Succeeded"
        } else if failed > 0 && running == 0 {
            "Failed"
        } else {
            "Pending"
        };
        set_status(&self.engine.conn, p, phase, ready == n && n > 0, &message)?;
        Ok(())
    }

    /// Readiness from the readiness probe (none: ready when running); a failing
    /// liveness probe kills the container so its restart policy restarts it.
    fn probe_ready(&mut self, p: &PodRecord, k: &ContainerSpec, c: &Container) -> bool {
        // the startup probe holds the others back until it passes once per start
        if let Some(probe) = &k.startup_probe {
            let key = (p.uid.clone(), k.name.clone(), "startup");
            let passed = |me: &Self| {
                me.probes
                    .get(&key)
                    .is_some_and(|s| s.passed && s.started == c.started_at)
            };
            if !passed(self) {
                if self.run_probe(p, k, c, probe, "startup") == Some(false) {
                    self.kill_for_probe(p, k, c, "startup");
                    return false;
                }
                if !passed(self) {
                    return false;
                }
            }
        }
        if let Some(probe) = &k.liveness_probe
            && self.run_probe(p, k, c, probe, "liveness") == Some(false)
        {
            self.kill_for_probe(p, k, c, "liveness");
            return false;
        }
        match &k.readiness_probe {
            None => true,
            Some(probe) => {
                self.run_probe(p, k, c, probe, "readiness");
                self.probes
                    .get(&(p.uid.clone(), k.name.clone(), "readiness"))
                    .is_some_and(|s| s.passed)
            }
        }
    }

    /// Kills a container whose liveness or startup probe failed; its restart policy
    /// restarts it, and its probes start over.
    fn kill_for_probe(&mut self, p: &PodRecord, k: &ContainerSpec, c: &Container, which: &str) {
        // through the runtime: the engine's kill counts as a user's stop, which ends
        // the restart policy; a probe kill must leave it to restart the container
        if let Ok(rt) = self.engine.runtime(c) {
            let _ = rt.kill(&c.id, libc_sigkill(), false);
        }
        let _ = store::event(
            &self.engine.conn,
            ("Pod", &p.namespace, &p.name),
            "Normal",
            "Killing",
            &format!(
                "Container {} failed {which} probe, will be restarted",
                k.name
            ),
        );
        for w in ["startup", "liveness", "readiness"] {
            self.probes.remove(&(p.uid.clone(), k.name.clone(), w));
        }
    }

    /// Runs a probe when its period is due; Some(false) once failureThreshold is hit.
    fn run_probe(
        &mut self,
        p: &PodRecord,
        k: &ContainerSpec,
        c: &Container,
        probe: &Probe,
        which: &'static str,
    ) -> Option<bool> {
        let key = (p.uid.clone(), k.name.clone(), which);
        let st = self.probes.entry(key).or_default();
        if st.started != c.started_at {
            // a restarted container is probed from scratch
            *st = ProbeState {
                started: c.started_at.clone(),
                ..Default::default()
            };
        }
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        if st.last.is_some_and(|l| l.elapsed() < period) {
            return None;
        }
        let started = berth_engine::timefmt::parse(&c.started_at);
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        if let Some(t) = started
            && t.elapsed().unwrap_or_default() < Duration::from_secs(delay)
        {
            return None;
        }
        st.last = Some(Instant::now());
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let ip = c.attachment.as_ref().and_then(|a| a.ip);
        let port_of = |port: &IntOrString| match port {
            IntOrString::Int(n) => Some(*n as u16),
            IntOrString::String(s) => k
                .ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(s))
                .map(|cp| cp.container_port as u16),
        };
        let ok = if let Some(h) = &probe.http_get {
            match (ip, port_of(&h.port)) {
                (Some(ip), Some(port)) => http_ok(
                    SocketAddr::new(ip.into(), port),
                    h.path.as_deref().unwrap_or("/"),
                    timeout,
                ),
                _ => false,
            }
        } else if let Some(t) = &probe.tcp_socket {
            match (ip, port_of(&t.port)) {
                (Some(ip), Some(port)) => {
                    TcpStream::connect_timeout(&SocketAddr::new(ip.into(), port), timeout).is_ok()
                }
                _ => false,
            }
        } else if let Some(e) = &probe.exec {
            self.engine
                .runtime(c)
                .ok()
                .map(|rt| {
                    let mut args: Vec<String> = vec!["exec".into(), c.id.clone()];
                    args.extend(e.command.iter().cloned());
                    rt.run(args).is_ok()
                })
                .unwrap_or(false)
        } else {
            true
        };
        let st = self
            .probes
            .get_mut(&(p.uid.clone(), k.name.clone(), which))?;
        if ok {
            st.successes += 1;
            st.failures = 0;
            if st.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                st.passed = true;
            }
            Some(true)
        } else {
            st.failures += 1;
            st.successes = 0;
            let _ = store::event(
                &self.engine.conn,
                ("Pod", &p.namespace, &p.name),
                "Warning",
                "Unhealthy",
                &format!("{}{} probe failed", which[..1].to_uppercase(), &which[1..]),
            );
            if st.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                st.passed = false;
                return Some(false);
            }
            None
        }
    }

    /// Everything a container start needs, made on the loop's thread; the create and
    /// start themselves run in parallel in [`Self::run_starts`].
    fn prepare_start(
        &mut self,
        p: &PodRecord,
        template: &PodTemplateSpec,
        k: &ContainerSpec,
        init: bool,
        objects: &[Stored],
    ) -> Result<(), String> {
        let policy = k.image_pull_policy.clone().unwrap_or_else(|| {
            if k.image.ends_with(":latest") || !k.image.contains(':') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let (store, image) = self.images.get(&k.image, &policy)?;
        let cfg = self.container_config(p, template, k, init, objects)?;
        let spec = &template.spec;
        let mut labels = BTreeMap::new();
        labels.insert(POD_UID_LABEL.to_string(), p.uid.clone());
        labels.insert(POD_NAME_LABEL.to_string(), p.name.clone());
        labels.insert(POD_NAMESPACE_LABEL.to_string(), p.namespace.clone());
        let sandbox = SandboxSpec {
            name: sandbox_name(p),
            network: String::new(),
            hostname: spec.hostname.clone().unwrap_or_else(|| p.name.clone()),
            // hostPorts belong to the pod's namespace, so to its sandbox
            ports: spec
                .containers
                .iter()
                .flat_map(|k| &k.ports)
                .filter_map(|cp| {
                    let proto = cp.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                    Some(format!("{}:{}/{proto}", cp.host_port?, cp.container_port))
                })
                .collect(),
            // short Service names resolve through the pod's namespace first
            dns_search: vec![
                format!("{}.svc.cluster.local", p.namespace),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            labels,
            ..Default::default()
        };
        self.pending.push(StartJob {
            pod: p.clone(),
            sandbox,
            container: k.name.clone(),
            cfg,
            store,
            image,
        });
        Ok(())
    }

    /// Creates and starts the prepared containers, several at once (each worker with
    /// its own connection to the database); failures become the pods' messages.
    fn run_starts(&mut self) -> Result<(), Error> {
        let jobs = std::mem::take(&mut self.pending);
        if jobs.is_empty() {
            return Ok(());
        }
        // BERTH_START_WORKERS=1 gives the one-at-a-time behaviour (for comparisons)
        let workers = std::env::var("BERTH_START_WORKERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(START_WORKERS)
            .clamp(1, 64)
            .min(jobs.len());
        // a pod's containers stay on one worker, in order, after its sandbox
        let mut groups: Vec<Vec<StartJob>> = (0..workers).map(|_| Vec::new()).collect();
        let mut slot: HashMap<String, usize> = HashMap::new();
        for j in jobs {
            let next = slot.len() % workers;
            let w = *slot.entry(j.pod.uid.clone()).or_insert(next);
            groups[w].push(j);
        }
        let (root, state, launcher) = (&self.engine.root, &self.engine.state, &self.launcher);
        let results: Vec<(PodRecord, String, Result<(), String>)> = if workers == 1 {
            let group = groups.pop().unwrap_or_default();
            group
                .into_iter()
                .map(|j| {
                    let r = start_one(self.engine, launcher, &j);
                    (j.pod, j.container, r)
                })
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = groups
                    .into_iter()
                    .map(|group| {
                        s.spawn(move || {
                            let eng = Engine::open(root, state);
                            group
                                .into_iter()
                                .map(|j| {
                                    let r = match &eng {
                                        Ok(eng) => start_one(eng, launcher, &j),
                                        Err(e) => Err(format!("open engine: {e}")),
                                    };
                                    (j.pod, j.container, r)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        let conn = &self.engine.conn;
        for (p, name, r) in results {
            let at = ("Pod", p.namespace.as_str(), p.name.as_str());
            match r {
                Ok(()) => {
                    store::event(
                        conn,
                        at,
                        "Normal",
                        "Created",
                        &format!("Created container {name}"),
                    )?;
                    store::event(
                        conn,
                        at,
                        "Normal",
                        "Started",
                        &format!("Started container {name}"),
                    )?;
                }
                Err(e) => {
                    store::event(conn, at, "Warning", "Failed", &format!("Error: {e}"))?;
                    // the pod's status for this pass is written: add why it waits
                    let now = store::pods(conn)?.into_iter().find(|q| q.uid == p.uid);
                    if let Some(q) = now {
                        set_status(conn, &q, &q.phase, q.ready, &e)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn container_config(
        &self,
        p: &PodRecord,
        template: &PodTemplateSpec,
        k: &ContainerSpec,
        init: bool,
        objects: &[Stored],
    ) -> Result<CreateConfig, String> {
        let spec = &template.spec;
        let mut cfg = CreateConfig {
            image: k.image.clone(),
            name: Some(format!("k8s_{}_{}_{}", k.name, p.name, p.namespace)),
            hostname: Some(spec.hostname.clone().unwrap_or_else(|| p.name.clone())),
            workdir: k.working_dir.clone(),
            tty: k.tty.unwrap_or(false),
            interactive: k.stdin.unwrap_or(false),
            stop_timeout: Some(spec.termination_grace_period_seconds.unwrap_or(30) as u32),
            ..Default::default()
        };
        match (&k.command, &k.args) {
            (Some(cmd), args) if !cmd.is_empty() => {
                cfg.entrypoint = Some(cmd[0].clone());
                cfg.cmd = cmd[1..].to_vec();
                cfg.cmd.extend(args.clone().unwrap_or_default());
            }
            (_, Some(args)) => cfg.cmd = args.clone(),
            _ => {}
        }
        cfg.restart = if init {
            "no".into()
        } else {
            match spec.restart_policy.as_deref().unwrap_or("Always") {
                "Never" => "no".into(),
                "OnFailure" => "on-failure".into(),
                _ => "always".into(),
            }
        };
        cfg.labels = template.metadata.labels.clone();
        cfg.labels.insert(POD_UID_LABEL.into(), p.uid.clone());
        cfg.labels.insert(POD_NAME_LABEL.into(), p.name.clone());
        cfg.labels
            .insert(POD_NAMESPACE_LABEL.into(), p.namespace.clone());
        cfg.labels.insert(CONTAINER_LABEL.into(), k.name.clone());
        cfg.env = self.env(p, k, objects)?;
        let sc = k.security_context.clone().unwrap_or_default();
        let psc = spec.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(psc.run_as_user);
        let gid = sc.run_as_group.or(psc.run_as_group);
        if let Some(u) = uid {
            cfg.user = Some(match gid {
                Some(g) => format!("{u}:{g}"),
                None => u.to_string(),
            });
        }
        if sc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && uid == Some(0) {
            return Err(format!(
                "container {} has runAsNonRoot and runAsUser 0",
                k.name
            ));
        }
        cfg.read_only = sc.read_only_root_filesystem.unwrap_or(false);
        cfg.privileged = sc.privileged.unwrap_or(false);
        if sc.allow_privilege_escalation == Some(false) {
            cfg.security_opt.push("no-new-privileges".into());
        }
        if let Some(caps) = &sc.capabilities {
            cfg.cap_add = caps.add.clone();
            cfg.cap_drop = caps.drop.clone();
        }
        if let Some(r) = &k.resources {
            if let Some(m) = r
                .limits
                .get("memory")
                .and_then(|q| Quantity::parse(&q.as_text()).ok())
            {
                cfg.memory = Some(m.value().to_string());
            }
            if let Some(c) = r
                .limits
                .get("cpu")
                .and_then(|q| Quantity::parse(&q.as_text()).ok())
            {
                cfg.cpus = Some(c.milli() as f64 / 1000.0);
            }
        }
        // every container of the pod joins its sandbox: one address, localhost between
        // them, ports published by the sandbox
        cfg.network.network = sandbox::mode(&sandbox_name(p));
        cfg.volumes = self.volumes(p, spec, k, objects)?;
        Ok(cfg)
    }

    fn lookup(
        &self,
        objects: &[Stored],
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        objects
            .iter()
            .find(|o| {
                o.object.kind() == kind
                    && o.object.namespace() == ns
                    && o.object.metadata.name == name
            })
            .and_then(|o| match &o.object.body {
                Body::ConfigMap { data, binary } => {
                    let mut m: BTreeMap<String, Vec<u8>> = data
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                        .collect();
                    m.extend(binary.clone());
                    Some(m)
                }
                Body::Secret { data, .. } => Some(data.clone()),
                _ => None,
            })
    }

    fn env(
        &self,
        p: &PodRecord,
        k: &ContainerSpec,
        objects: &[Stored],
    ) -> Result<Vec<String>, String> {
        let mut env: Vec<(String, String)> = Vec::new();
        for e in &k.env_from {
            let (kind, r) = match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), _) => ("ConfigMap", r),
                (_, Some(r)) => ("Secret", r),
                _ => continue,
            };
            match self.lookup(objects, kind, &p.namespace, &r.name) {
                Some(data) => {
                    for (key, v) in data {
                        let name = format!("{}{key}", e.prefix.clone().unwrap_or_default());
                        env.push((name, String::from_utf8_lossy(&v).into_owned()));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("{kind} {:?} not found", r.name)),
            }
        }
        for e in &k.env {
            let value = if let Some(src) = &e.value_from {
                let (kind, sel) = match (&src.config_map_key_ref, &src.secret_key_ref) {
                    (Some(s), _) => ("ConfigMap", Some(s)),
                    (_, Some(s)) => ("Secret", Some(s)),
                    _ => ("", None),
                };
                if let Some(sel) = sel {
                    match self
                        .lookup(objects, kind, &p.namespace, &sel.name)
                        .and_then(|d| d.get(&sel.key).cloned())
                    {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if sel.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "{kind} {:?} key {:?} not found",
                                sel.name, sel.key
                            ));
                        }
                    }
                } else if let Some(f) = &src.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => p.name.clone(),
                        "metadata.namespace" => p.namespace.clone(),
                        "metadata.uid" => p.uid.clone(),
                        other => return Err(format!("fieldRef {other:?} is not supported")),
                    }
                } else {
                    continue;
                }
            } else {
                expand_refs(e.value.as_deref().unwrap_or(""), &env)
            };
            env.retain(|(n, _)| n != &e.name);
            env.push((e.name.clone(), value));
        }
        Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    fn volumes(
        &self,
        p: &PodRecord,
        spec: &crate::manifest::types::PodSpec,
        k: &ContainerSpec,
        objects: &[Stored],
    ) -> Result<Vec<String>, String> {
        let dir = self.pod_dir(&p.uid).join("volumes");
        let mut out = Vec::new();
        for m in &k.volume_mounts {
            let Some(v) = spec.volumes.iter().find(|v| v.name == m.name) else {
                continue;
            };
            let ro = m.read_only.unwrap_or(false);
            let host = if v.empty_dir.is_some() {
                dir.join(&v.name)
            } else if let Some(h) = &v.host_path {
                std::path::PathBuf::from(&h.path)
            } else if let Some(c) = &v.persistent_volume_claim {
                let claim = objects.iter().find(|o| {
                    o.object.kind() == "PersistentVolumeClaim"
                        && o.object.namespace() == p.namespace
                        && o.object.metadata.name == c.claim_name
                });
                let Some(claim) = claim else {
                    return Err(format!(
                        "persistentvolumeclaim {:?} not found",
                        c.claim_name
                    ));
                };
                let dir = crate::batch::claim_dir(
                    &self.engine.root,
                    &p.namespace,
                    &c.claim_name,
                    &claim.uid,
                );
                if !dir.exists() {
                    return Err(format!(
                        "persistentvolumeclaim {:?} is not bound yet",
                        c.claim_name
                    ));
                }
                dir
            } else {
                let (kind, name, items, mode, optional) = match (&v.config_map, &v.secret) {
                    (Some(c), _) => ("ConfigMap", &c.name, &c.items, c.default_mode, c.optional),
                    (_, Some(s)) => (
                        "Secret",
                        &s.secret_name,
                        &s.items,
                        s.default_mode,
                        s.optional,
                    ),
                    _ => continue,
                };
                let target = dir.join(&v.name);
                let data = match self.lookup(objects, kind, &p.namespace, name) {
                    Some(d) => d,
                    None if optional == Some(true) => BTreeMap::new(),
                    None => {
                        return Err(format!("{kind} {name:?} for volume {:?} not found", v.name));
                    }
                };
                write_files(&target, &data, items, mode.unwrap_or(0o644))
                    .map_err(|e| format!("volume {}: {e}", v.name))?;
                target
            };
            let host = match &m.sub_path {
                Some(sp) if !sp.is_empty() => host.join(sp),
                _ => host,
            };
            if v.host_path.is_none()
                || v.host_path.as_ref().and_then(|h| h.kind.as_deref()) == Some("DirectoryOrCreate")
            {
                std::fs::create_dir_all(&host)
                    .map_err(|e| format!("volume {}: create {}: {e}", v.name, host.display()))?;
            }
            out.push(format!(
                "{}:{}{}",
                host.display(),
                m.mount_path,
                if ro
                    || v.config_map.is_some()
                    || v.secret.is_some()
                    || v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.read_only == Some(true))
                {
                    ":ro"
                } else {
                    ""
                }
            ));
        }
        Ok(out)
    }
}

fn write_files(
    dir: &std::path::Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[crate::manifest::types::KeyToPath],
    mode: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    let files: Vec<(String, &Vec<u8>, u32)> = if items.is_empty() {
        data.iter().map(|(k, v)| (k.clone(), v, mode)).collect()
    } else {
        items
            .iter()
            .filter_map(|i| {
                data.get(&i.key)
                    .map(|v| (i.path.clone(), v, i.mode.unwrap_or(mode)))
            })
            .collect()
    };
    for (rel, content, mode) in files {
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            continue; // validated keys never do this; never write outside the volume
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `$(VAR)` references to earlier variables, as Kubernetes expands them.
fn expand_refs(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                match env.iter().rev().find(|(n, _)| n == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[i..i + 3 + j]),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: berth-probe\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    // "HTTP/1.x NNN"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}

/// Writes a pod's status only when it changed: serve passes often, and every write
/// takes the database's write lock that CLI calls also need.
fn set_status(
    conn: &rusqlite::Connection,
    p: &PodRecord,
    phase: &str,
    ready: bool,
    message: &str,
) -> Result<(), store::Error> {
    if p.phase == phase && p.ready == ready && p.message == message {
        return Ok(());
    }
    store::set_pod_status(conn, &p.uid, phase, ready, message)
}

fn libc_sigkill() -> i32 {
    9
}

fn owner_exists(objects: &[Stored], owner: &str, ns: &str) -> bool {
    let Some((kind, name)) = owner.split_once('/') else {
        return true;
    };
    objects.iter().any(|o| {
        o.object.kind() == kind && o.object.namespace() == ns && o.object.metadata.name == name
    })
}

fn put_replica_set(
    conn: &rusqlite::Connection,
    manifest: &Value,
    owner: &str,
) -> Result<(), Error> {
    let parsed = crate::manifest::parse("controller", &manifest.to_string()).map_err(|e| {
        store::Error::Stored {
            kind: "ReplicaSet".into(),
            namespace: String::new(),
            name: manifest["metadata"]["name"].as_str().unwrap_or("").into(),
            source: Box::new(e),
        }
    })?;
    if let Some(o) = parsed.objects.first() {
        store::apply(conn, o, manifest, owner)?;
    }
    Ok(())
}

pub(crate) fn new_pod(ns: &str, name: &str, owner: &str, template: Value) -> PodRecord {
    PodRecord {
        namespace: ns.into(),
        name: name.into(),
        uid: store::new_uid(),
        owner: owner.into(),
        template,
        created: crate::now(),
        phase: "Pending".into(),
        ready: false,
        message: String::new(),
    }
}

/// The name of the ReplicaSet that runs `template` for Deployment `name`.
pub fn replica_set_name(name: &str, template: &PodTemplateSpec) -> String {
    let v = serde_json::to_value(template).unwrap_or(Value::Null);
    format!("{name}-{}", short_hash(&v))
}

/// Ten hex digits of the template's SHA-256 (stable across runs and versions).
fn short_hash(v: &Value) -> String {
    let d = sha2::Sha256::digest(v.to_string().as_bytes());
    hex::encode(&d[..5])
}

/// Five characters like the upstream generated names use.
pub(crate) fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    berth_engine::names::new_id()
        .as_bytes()
        .chunks(2)
        .take(5)
        .map(|c| ALPHABET[(c[0] as usize * 7 + c[1] as usize) % ALPHABET.len()] as char)
        .collect()
}

/// maxSurge / maxUnavailable against `desired`: percentages round up for surge and
/// down for unavailability; default 25%.
fn resolve(v: Option<&IntOrString>, desired: i64, round_up: bool) -> i64 {
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            percent(pct, desired, round_up)
        }
        None => percent(25, desired, round_up),
    }
}

fn percent(pct: i64, desired: i64, round_up: bool) -> i64 {
    let x = pct * desired;
    if round_up { (x + 99) / 100 } else { x / 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_like_upstream() {
        assert_eq!(resolve(None, 3, true), 1);
        assert_eq!(resolve(None, 3, false), 0);
        assert_eq!(
            resolve(Some(&IntOrString::String("50%".into())), 5, true),
            3
        );
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 5, false), 2);
    }

    #[test]
    fn env_references_expand() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand_refs("$(A)-$(B)-$(A", &env), "x-$(B)-$(A");
    }

    #[test]
    fn template_hash_is_stable() {
        let v = json!({"a": 1});
        assert_eq!(short_hash(&v), short_hash(&json!({"a": 1})));
        assert_eq!(short_hash(&v).len(), 10);
        assert!(suffix().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
