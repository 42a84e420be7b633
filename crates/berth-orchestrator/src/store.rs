//! Desired state and pod records in the berth root's SQLite database.

use rusqlite::{OptionalExtension as _, params};
use serde_json::Value;

use crate::manifest::{self, Object};

/// The database connection type callers pass back in.
pub type Connection = rusqlite::Connection;

/// Tables of the orchestrator (in the same database as the engine's).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS k8s_objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    generation INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS k8s_pods (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    owner TEXT NOT NULL,
    template TEXT NOT NULL,
    created TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT 'Pending',
    ready INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS k8s_status (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS k8s_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    time TEXT NOT NULL
);
";

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("orchestrator database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The engine's database could not be opened.
    #[error(transparent)]
    Open(#[from] berth_engine::store::Error),
    /// A stored manifest no longer parses (written by another version).
    #[error("stored {kind} {namespace}/{name}: {source}")]
    Stored {
        /// Kind.
        kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        source: Box<manifest::Error>,
    },
    /// An explicit `nodePort` another Service of this root holds (as kube-apiserver).
    #[error(
        "service {service}: spec.ports[{index}].nodePort: {port}: provided port is already allocated (by service {holder})"
    )]
    NodePortAllocated {
        /// namespace/name of the refused Service.
        service: String,
        /// Index of the port in spec.ports.
        index: usize,
        /// The NodePort.
        port: i64,
        /// namespace/name of the Service holding it.
        holder: String,
    },
    /// Every NodePort of 30000-32767 is taken.
    #[error("service {service}: no free NodePort in 30000-32767")]
    NodePortsExhausted {
        /// namespace/name of the Service.
        service: String,
    },
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The parsed object.
    pub object: Object,
    /// The manifest as stored (JSON).
    pub manifest: Value,
    /// Unique id.
    pub uid: String,
    /// "Deployment/name" for objects the controller made.
    pub owner: String,
    /// Bumped when the manifest changes.
    pub generation: i64,
    /// Creation time (RFC 3339).
    pub created: String,
}

/// What `apply` did to one object, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// New.
    Created,
    /// Changed.
    Configured,
    /// Same as stored.
    Unchanged,
}

impl Applied {
    /// kubectl's word.
    pub fn word(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// Opens the database of `root` with the orchestrator's tables.
pub fn open(root: &std::path::Path) -> Result<rusqlite::Connection, Error> {
    let conn = berth_engine::store::open(root)?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(crate::services::SCHEMA)?;
    Ok(conn)
}

/// Stores `manifest` (the object as written, JSON) as the desired state of `object`.
pub fn apply(
    conn: &rusqlite::Connection,
    object: &Object,
    manifest: &Value,
    owner: &str,
) -> Result<Applied, Error> {
    let (kind, ns, name) = (object.kind(), object.namespace(), &object.metadata.name);
    let text = manifest.to_string();
    // IMMEDIATE: a deferred transaction that later writes fails at once with "database
    // is locked" when serve wrote in between; this one waits its turn (busy timeout)
    let tx = berth_engine::store::immediate(conn)?;
    crate::services::check_node_ports(&tx, object)?;
    let old: Option<(String, i64)> = tx
        .query_row(
            "SELECT manifest, generation FROM k8s_objects WHERE kind=?1 AND namespace=?2 AND name=?3",
            params![kind, ns, name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let outcome = match old {
        None => {
            tx.execute(
                "INSERT INTO k8s_objects (kind, namespace, name, uid, owner, generation, manifest, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7)",
                params![kind, ns, name, new_uid(), owner, text, crate::now()],
            )?;
            Applied::Created
        }
        Some((old_text, _)) if old_text == text => Applied::Unchanged,
        Some(_) => {
            tx.execute(
                "UPDATE k8s_objects SET manifest=?4, generation=generation+1
                 WHERE kind=?1 AND namespace=?2 AND name=?3",
                params![kind, ns, name, text],
            )?;
            Applied::Configured
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Removes an object; true if it existed.
pub fn delete(
    conn: &rusqlite::Connection,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<bool, Error> {
    conn.execute(
        "DELETE FROM k8s_status WHERE kind=?1 AND namespace=?2 AND name=?3",
        params![kind, ns, name],
    )?;
    conn.execute(
        "DELETE FROM k8s_events WHERE kind=?1 AND namespace=?2 AND name=?3",
        params![kind, ns, name],
    )?;
    Ok(conn.execute(
        "DELETE FROM k8s_objects WHERE kind=?1 AND namespace=?2 AND name=?3",
        params![kind, ns, name],
    )? > 0)
}

/// The observed status the controller recorded for an object (`{}` when none).
pub fn status(conn: &rusqlite::Connection, kind: &str, ns: &str, name: &str) -> Value {
    conn.query_row(
        "SELECT status FROM k8s_status WHERE kind=?1 AND namespace=?2 AND name=?3",
        params![kind, ns, name],
        |r| r.get::<_, String>(0),
    )
    .ok()
    .and_then(|t| serde_json::from_str(&t).ok())
    .unwrap_or_else(|| serde_json::json!({}))
}

/// Records an object's observed status, writing only when it changed.
pub fn set_status(
    conn: &rusqlite::Connection,
    kind: &str,
    ns: &str,
    name: &str,
    status: &Value,
) -> Result<(), Error> {
    if self::status(conn, kind, ns, name) == *status {
        return Ok(());
    }
    conn.execute(
        "INSERT INTO k8s_status (kind, namespace, name, status) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, namespace, name) DO UPDATE SET status = excluded.status",
        params![kind, ns, name, status.to_string()],
    )?;
    Ok(())
}

/// One event about an object, as `kubectl describe` lists them.
#[derive(Debug, Clone)]
pub struct Event {
    /// Normal or Warning.
    pub kind: String,
    /// CamelCase reason (Scheduled, Pulled, SuccessfulCreate...).
    pub reason: String,
    /// What happened.
    pub message: String,
    /// When (RFC 3339).
    pub time: String,
}

/// Records an event (the newest 50 per object are kept).
pub fn event(
    conn: &rusqlite::Connection,
    (kind, ns, name): (&str, &str, &str),
    kind_of_event: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO k8s_events (kind, namespace, name, type, reason, message, time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![kind, ns, name, kind_of_event, reason, message, crate::now()],
    )?;
    conn.execute(
        "DELETE FROM k8s_events WHERE kind=?1 AND namespace=?2 AND name=?3 AND seq NOT IN
         (SELECT seq FROM k8s_events WHERE kind=?1 AND namespace=?2 AND name=?3
          ORDER BY seq DESC LIMIT 50)",
        params![kind, ns, name],
    )?;
    Ok(())
}

/// Events of one object, oldest first.
pub fn events(
    conn: &rusqlite::Connection,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<Vec<Event>, Error> {
    let mut st = conn.prepare(
        "SELECT type, reason, message, time FROM k8s_events
         WHERE kind=?1 AND namespace=?2 AND name=?3 ORDER BY seq",
    )?;
    let rows = st.query_map(params![kind, ns, name], |r| {
        Ok(Event {
            kind: r.get(0)?,
            reason: r.get(1)?,
            message: r.get(2)?,
            time: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every stored object of `kind` ("" for all), oldest first.
pub fn list(conn: &rusqlite::Connection, kind: &str) -> Result<Vec<Stored>, Error> {
    let mut st = conn.prepare(
        "SELECT kind, namespace, name, uid, owner, generation, manifest, created FROM k8s_objects
         WHERE ?1 = '' OR kind = ?1 ORDER BY created, name",
    )?;
    let rows = st
        .query_map([kind], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (kind, namespace, name, uid, owner, generation, text, created) in rows {
        let stored_err = |source| Error::Stored {
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            source: Box::new(source),
        };
        let parsed = manifest::parse("stored", &text).map_err(stored_err)?;
        let Some(object) = parsed.objects.into_iter().next() else {
            continue;
        };
        out.push(Stored {
            object,
            manifest: serde_json::from_str(&text).unwrap_or(Value::Null),
            uid,
            owner,
            generation,
            created,
        });
    }
    Ok(out)
}

/// A pod record: what the controller runs as containers.
#[derive(Debug, Clone)]
pub struct PodRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Unique id.
    pub uid: String,
    /// "ReplicaSet/name", "Job/name", or "Pod/name" for bare pods.
    pub owner: String,
    /// The pod template (metadata + spec) as JSON.
    pub template: Value,
    /// Creation time.
    pub created: String,
    /// Pending, Running, Succeeded, Failed.
    pub phase: String,
    /// All containers ready.
    pub ready: bool,
    /// Why it is not running, if known.
    pub message: String,
}

/// Every pod record, oldest first.
pub fn pods(conn: &rusqlite::Connection) -> Result<Vec<PodRecord>, Error> {
    let mut st = conn.prepare(
        "SELECT namespace, name, uid, owner, template, created, phase, ready, message
         FROM k8s_pods ORDER BY created, name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(PodRecord {
            namespace: r.get(0)?,
            name: r.get(1)?,
            uid: r.get(2)?,
            owner: r.get(3)?,
            template: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
            created: r.get(5)?,
            phase: r.get(6)?,
            ready: r.get::<_, i64>(7)? != 0,
            message: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Records a new pod.
pub fn add_pod(conn: &rusqlite::Connection, p: &PodRecord) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO k8s_pods (namespace, name, uid, owner, template, created, phase, ready, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            p.namespace,
            p.name,
            p.uid,
            p.owner,
            p.template.to_string(),
            p.created,
            p.phase,
            p.ready as i64,
            p.message
        ],
    )?;
    Ok(())
}

/// Updates a pod's observed status.
pub fn set_pod_status(
    conn: &rusqlite::Connection,
    uid: &str,
    phase: &str,
    ready: bool,
    message: &str,
) -> Result<(), Error> {
    conn.execute(
        "UPDATE k8s_pods SET phase=?2, ready=?3, message=?4 WHERE uid=?1",
        params![uid, phase, ready as i64, message],
    )?;
    Ok(())
}

/// Forgets a pod record.
pub fn remove_pod(conn: &rusqlite::Connection, uid: &str) -> Result<(), Error> {
    let name: Option<(String, String)> = conn
        .query_row(
            "SELECT namespace, name FROM k8s_pods WHERE uid=?1",
            [uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((ns, name)) = name {
        conn.execute(
            "DELETE FROM k8s_events WHERE kind='Pod' AND namespace=?1 AND name=?2",
            params![ns, name],
        )?;
    }
    conn.execute("DELETE FROM k8s_pods WHERE uid=?1", [uid])?;
    Ok(())
}

/// A random 128-bit id in UUID text form.
pub fn new_uid() -> String {
    let id = berth_engine::names::new_id();
    format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}
