//! Jobs (pods run to completion: completions, parallelism, backoffLimit,
//! activeDeadlineSeconds) and PersistentVolumeClaims (one local directory per claim).

use std::path::{Path, PathBuf};

use berth_engine::Container;
use serde_json::{Value, json};

use crate::controller::{Controller, Error, POD_UID_LABEL, new_pod, suffix};
use crate::manifest::Body;
use crate::manifest::types::JobSpec;
use crate::store::{self, PodRecord, Stored};

/// Label Kubernetes puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "job-name";

/// A claim's directory: `<root>/k8s/pvc/<namespace>/<name>@<uid>`, so a claim deleted
/// and made again under the same name never sees the old data.
pub fn claim_dir(root: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    root.join("k8s")
        .join("pvc")
        .join(ns)
        .join(format!("{name}@{uid}"))
}

/// The volume name `get pvc` shows for a claim.
pub fn volume_name(uid: &str) -> String {
    format!("pvc-{uid}")
}

fn terminal(status: &Value) -> Option<&str> {
    status["conditions"].as_array()?.iter().find_map(|c| {
        let t = c["type"].as_str()?;
        (matches!(t, "Complete" | "Failed") && c["status"] == "True").then_some(t)
    })
}

impl Controller<'_> {
    /// One pass of the Job loop for `j`: start pods up to parallelism until
    /// completions succeed, or mark the Job failed past backoffLimit or its deadline.
    pub(crate) fn job(
        &self,
        j: &Stored,
        spec: &JobSpec,
        pods: &mut Vec<PodRecord>,
        doomed: &mut Vec<PodRecord>,
        containers: &[Container],
    ) -> Result<(), Error> {
        let conn = &self.engine.conn;
        let (ns, name) = (j.object.namespace(), j.object.metadata.name.as_str());
        let owner = format!("Job/{name}");
        let mine: Vec<PodRecord> = pods
            .iter()
            .filter(|p| p.owner == owner && p.namespace == ns)
            .cloned()
            .collect();
        let completions = spec.completions.unwrap_or(1).max(0) as usize;
        let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
        let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0) as usize;
        let succeeded = mine.iter().filter(|p| p.phase == "Succeeded").count();
        let failed_pods = mine.iter().filter(|p| p.phase == "Failed").count();
        let active: Vec<&PodRecord> = mine
            .iter()
            .filter(|p| p.phase != "Succeeded" && p.phase != "Failed")
            .collect();
        // with restartPolicy OnFailure a failure restarts the container in place: each
        // restart counts against backoffLimit, as upstream counts them
        let restarts: usize = containers
            .iter()
            .filter(|c| {
                c.labels()
                    .get(POD_UID_LABEL)
                    .is_some_and(|uid| active.iter().any(|p| &p.uid == uid))
            })
            .map(|c| c.restart_count.max(0) as usize)
            .sum();
        let failed = failed_pods + restarts;
        let mut status = store::status(conn, "Job", ns, name);
        let now = crate::now();
        if status["startTime"].is_null() {
            status["startTime"] = json!(now);
        }
        let elapsed = berth_engine::timefmt::parse(status["startTime"].as_str().unwrap_or(""))
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let event = |kind: &str, reason: &str, msg: &str| {
            store::event(conn, ("Job", ns, name), kind, reason, msg)
        };
        let finish = |status: &mut Value, kind: &str, reason: &str, message: &str| {
            status["conditions"] = json!([{
                "type": kind, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": now,
            }]);
            if kind == "Complete" {
                status["completionTime"] = json!(now);
            }
        };
        let mut kill_active = false;
        match terminal(&status) {
            Some(_) => kill_active = true,
            None if succeeded >= completions => {
                finish(
                    &mut status,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                event("Normal", "Completed", "Job completed")?;
                kill_active = true;
            }
            None if failed > backoff_limit => {
                let msg = "Job has reached the specified backoff limit";
                finish(&mut status, "Failed", "BackoffLimitExceeded", msg);
                event("Warning", "BackoffLimitExceeded", msg)?;
                kill_active = true;
            }
            None if spec
                .active_deadline_seconds
                .is_some_and(|d| elapsed.as_secs_f64() >= d.max(0) as f64) =>
            {
                let msg = "Job was active longer than specified deadline";
                finish(&mut status, "Failed", "DeadlineExceeded", msg);
                event("Warning", "DeadlineExceeded", msg)?;
                kill_active = true;
            }
            None => {
                let want = parallelism.min(completions - succeeded);
                let mut template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
                template["metadata"]["labels"][JOB_NAME_LABEL] = json!(name);
                template["metadata"]["labels"]["batch.kubernetes.io/job-name"] = json!(name);
                template["metadata"]["labels"]["controller-uid"] = json!(j.uid);
                for _ in active.len()..want {
                    let p = new_pod(
                        ns,
                        &format!("{name}-{}", suffix()),
                        &owner,
                        template.clone(),
                    );
                    store::add_pod(conn, &p)?;
                    event(
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name),
                    )?;
                    pods.push(p);
                }
            }
        }
        let mut running = active.len();
        if kill_active {
            for p in &active {
                pods.retain(|q| q.uid != p.uid);
                doomed.push((*p).clone());
            }
            running = 0;
        }
        status["active"] = json!(running);
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed);
        store::set_status(conn, "Job", ns, name, &status)?;
        Ok(())
    }

    /// Provisions a directory per claim (status Bound) and removes the directories of
    /// deleted claims once no container mounts them.
    pub(crate) fn claims(&self, objects: &[Stored], containers: &[Container]) -> Result<(), Error> {
        let conn = &self.engine.conn;
        let root = &self.engine.root;
        let mut live = Vec::new();
        for o in objects {
            let Body::PersistentVolumeClaim(spec) = &o.object.body else {
                continue;
            };
            let (ns, name) = (o.object.namespace(), o.object.metadata.name.as_str());
            let dir = claim_dir(root, ns, name, &o.uid);
            if !dir.exists() {
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    store::event(
                        conn,
                        ("PersistentVolumeClaim", ns, name),
                        "Warning",
                        "ProvisioningFailed",
                        &format!("create {}: {e}", dir.display()),
                    )?;
                    continue;
                }
                store::event(
                    conn,
                    ("PersistentVolumeClaim", ns, name),
                    "Normal",
                    "ProvisioningSucceeded",
                    &format!(
                        "Successfully provisioned volume {} at {}",
                        volume_name(&o.uid),
                        dir.display()
                    ),
                )?;
            }
            let storage = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.get("storage"))
                .map(|q| q.as_text());
            let access = if spec.access_modes.is_empty() {
                vec!["ReadWriteOnce".to_string()]
            } else {
                spec.access_modes.clone()
            };
            let status = json!({
                "phase": "Bound",
                "accessModes": access,
                "capacity": {"storage": storage},
                "volumeName": volume_name(&o.uid),
                "path": dir.display().to_string(),
            });
            store::set_status(conn, "PersistentVolumeClaim", ns, name, &status)?;
            live.push(dir);
        }
        let base = root.join("k8s").join("pvc");
        let Ok(namespaces) = std::fs::read_dir(&base) else {
            return Ok(());
        };
        for ns_dir in namespaces.flatten() {
            let Ok(entries) = std::fs::read_dir(ns_dir.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let dir = e.path();
                if live.contains(&dir) {
                    continue;
                }
                let prefix = format!("{}:", dir.display());
                let used = containers
                    .iter()
                    .any(|c| c.config.volumes.iter().any(|v| v.starts_with(&prefix)));
                if !used {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            let _ = std::fs::remove_dir(ns_dir.path()); // only when empty
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_conditions() {
        assert_eq!(terminal(&json!({})), None);
        assert_eq!(
            terminal(&json!({"conditions": [{"type": "Complete", "status": "True"}]})),
            Some("Complete")
        );
        assert_eq!(
            terminal(&json!({"conditions": [{"type": "Failed", "status": "False"}]})),
            None
        );
        let d = claim_dir(Path::new("/r"), "default", "data", "u-1");
        assert_eq!(d, Path::new("/r/k8s/pvc/default/data@u-1"));
    }
}
