//! Network sandboxes: a network namespace that no container owns, for containers to
//! share (a Kubernetes pod's containers, without a pause process).
//!
//! A sandbox is a pinned network namespace with one endpoint on a network (an
//! address, published ports, a hosts file and a resolv.conf naming the embedded DNS
//! server), recorded in the root's database. Containers join it with the network
//! mode `sandbox:NAME` ([`NetworkMode::Sandbox`]); they see its interfaces, address,
//! ports, hosts file and resolv.conf, and reach each other over `localhost`. The
//! sandbox outlives its containers (a container exiting or restarting leaves it
//! alone) until [`remove`]; [`crate::network::prune`] (so `berth system prune`)
//! removes sandboxes no running container uses.
//!
//! ```no_run
//! # fn demo(engine: &berth_engine::Engine) -> berth_engine::Result<()> {
//! use berth_engine::sandbox::{self, SandboxSpec};
//! let sb = sandbox::create(engine, &SandboxSpec {
//!     name: "web-7d9f".into(),
//!     network: "bridge".into(),     // or a user network, or "none"
//!     ports: vec!["8080:80".into()],
//!     hostname: "web-7d9f".into(),
//!     ..Default::default()
//! })?;
//! println!("pod address {:?}", sb.ip);
//! let mut cfg = berth_engine::CreateConfig::default();
//! cfg.network.network = sandbox::mode(&sb.name); // "sandbox:web-7d9f"
//! // ... engine.create(cfg, ...), engine.start(...) for each container ...
//! sandbox::remove(engine, "web-7d9f", false)?; // after its containers stopped
//! # Ok(()) }
//! ```
//!
//! Docker's `--network container:NAME` (joining another container's namespace)
//! goes through the same path ([`joined_attachment`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::container::{Container, Engine, state};
use crate::error::{Error, Result};
use crate::network::{self, Attachment, Netns, NetworkMode, PublishedPort, Request};

/// What a sandbox is made of.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// Unique name in the root (letters, digits, `_`, `.`, `-`).
    pub name: String,
    /// "" or "bridge" (the default network), a user network's name, or "none" (a
    /// namespace with only lo).
    pub network: String,
    /// A fixed address on the network, else the next free one.
    pub ip: Option<Ipv4Addr>,
    /// Ports to publish, as `-p` values (`[ip:]host:container[/proto]`).
    pub ports: Vec<String>,
    /// Hostname listed in the hosts file (default: the name).
    pub hostname: String,
    /// Extra names on a user network (other members resolve them).
    pub aliases: Vec<String>,
    /// Extra hosts-file entries, `NAME:IP`.
    pub extra_hosts: Vec<String>,
    /// resolv.conf search domains (default: the host's).
    pub dns_search: Vec<String>,
    /// Free-form labels (e.g. the owning pod).
    pub labels: BTreeMap<String, String>,
}

/// A sandbox as made.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Network it is on ("bridge", a user network, or "none").
    pub network: String,
    /// The pinned namespace (a runtime joins it by this path).
    pub netns: PathBuf,
    /// Address on the network (None for "none").
    pub ip: Option<Ipv4Addr>,
    /// Gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Prefix length.
    pub prefix: u8,
    /// MAC of eth0.
    pub mac: Option<String>,
    /// Published ports with the host ports chosen.
    pub ports: Vec<PublishedPort>,
    /// The hosts file its containers see.
    pub hosts: PathBuf,
    /// The resolv.conf its containers see (names 127.0.0.11).
    pub resolv_conf: PathBuf,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
    /// Running containers in it, by id.
    pub containers: Vec<String>,
    /// What joining containers get.
    pub attachment: Attachment,
}

/// The network mode value that joins sandbox `name` (`sandbox:NAME`), for
/// [`crate::network::Request::network`].
pub fn mode(name: &str) -> String {
    NetworkMode::Sandbox(name.to_string()).to_string()
}

fn view(engine: &Engine, row: network::SandboxRow) -> Result<Sandbox> {
    let att = row.attachment.clone().ok_or_else(|| {
        Error::Network(network::Error::UnknownSandbox {
            name: row.name.clone(),
        })
    })?;
    let netns = match &att.netns {
        Netns::Path(p) => p.clone(),
        _ => PathBuf::new(),
    };
    Ok(Sandbox {
        containers: network::sandbox_users(&engine.conn, &row.name)?,
        id: row.id,
        network: match row.request.network.as_str() {
            "" => network::DEFAULT_NETWORK.to_string(),
            n => n.to_string(),
        },
        name: row.name,
        netns,
        ip: att.ip,
        gateway: att.gateway,
        prefix: att.prefix,
        mac: att.mac.clone(),
        ports: att.ports.clone(),
        hosts: att.hosts.clone().unwrap_or_default(),
        resolv_conf: att.resolv_conf.clone().unwrap_or_default(),
        labels: row.labels,
        created: row.created,
        attachment: att,
    })
}

/// Makes a sandbox: its namespace on `spec.network` with an address, the published
/// ports, a hosts file and a resolv.conf naming the embedded DNS server. Errors:
/// a name in use, an unknown network, a taken port or address; nothing of a
/// failed sandbox remains.
pub fn create(engine: &Engine, spec: &SandboxSpec) -> Result<Sandbox> {
    if !crate::names::valid_name(&spec.name) {
        return Err(Error::invalid(
            "sandbox name",
            format!(
                "{:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                spec.name
            ),
        ));
    }
    let req = Request {
        network: spec.network.clone(),
        ports: spec.ports.clone(),
        hostname: if spec.hostname.is_empty() {
            spec.name.clone()
        } else {
            spec.hostname.clone()
        },
        name: spec.name.clone(),
        aliases: spec.aliases.clone(),
        ip: spec.ip,
        extra_hosts: spec.extra_hosts.clone(),
        dns_search: spec.dns_search.clone(),
        embedded_dns: true,
        ..Default::default()
    };
    let row = network::create_sandbox(
        &engine.conn,
        &engine.root,
        &engine.state,
        &req,
        &spec.labels,
    )?;
    view(engine, row)
}

/// A sandbox by name or id.
pub fn get(engine: &Engine, name: &str) -> Result<Sandbox> {
    let row = network::sandbox_row(&engine.conn, name)?.ok_or_else(|| {
        Error::Network(network::Error::UnknownSandbox {
            name: name.to_string(),
        })
    })?;
    view(engine, row)
}

/// Every sandbox of the root, by name.
pub fn list(engine: &Engine) -> Result<Vec<Sandbox>> {
    network::sandbox_names(&engine.conn)?
        .iter()
        .map(|n| get(engine, n))
        .collect()
}

/// Every sandbox's name and labels, half-made ones included: deciding whether a
/// sandbox still belongs to something needs only its labels, and a sandbox whose
/// creation was killed has no attachment for [`get`] to show.
pub fn labels(engine: &Engine) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let mut out = Vec::new();
    for name in network::sandbox_names(&engine.conn)? {
        if let Some(row) = network::sandbox_row(&engine.conn, &name)? {
            out.push((row.name, row.labels));
        }
    }
    Ok(out)
}

/// Removes a sandbox: its endpoint, published ports and namespace pin. Refused while
/// running containers use it, unless `force` (they keep the namespace until they
/// exit; nothing is left once they do).
pub fn remove(engine: &Engine, name: &str, force: bool) -> Result<()> {
    Ok(network::remove_sandbox(&engine.conn, name, force)?)
}

/// The attachment of a container that joins another namespace (`container:ID` or
/// `sandbox:NAME`): the target's namespace, address, hosts file and resolv.conf.
pub fn joined_attachment(engine: &Engine, c: &Container) -> Result<Attachment> {
    match c.config.network.mode() {
        NetworkMode::Sandbox(name) => Ok(get(engine, &name)?.attachment),
        NetworkMode::Container(target) => {
            let t = engine.get(&target)?;
            if !matches!(t.state.as_str(), state::RUNNING | state::PAUSED) {
                return Err(Error::Conflict {
                    id: c.short_id().to_string(),
                    detail: format!(
                        "cannot join the network namespace of container {}: it is not running",
                        t.name
                    ),
                });
            }
            let mut att = t.attachment.clone().ok_or_else(|| Error::Conflict {
                id: c.short_id().to_string(),
                detail: format!("container {} has no network namespace recorded", t.name),
            })?;
            if matches!(att.netns, Netns::New) {
                // made by the runtime: reachable through its init
                att.netns = Netns::Path(PathBuf::from(format!("/proc/{}/ns/net", t.pid)));
            }
            Ok(att)
        }
        _ => Err(Error::invalid(
            "network mode",
            format!("{} does not join a namespace", c.config.network.network),
        )),
    }
}

/// Sets up the network of a container about to start: its own endpoint, or the
/// namespace it joins.
pub(crate) fn setup_for(engine: &Engine, c: &Container) -> Result<Attachment> {
    let req = c.network_request();
    if req.mode().is_joined() {
        return joined_attachment(engine, c);
    }
    Ok(network::setup(
        &engine.conn,
        &engine.root,
        &engine.state,
        &c.id,
        &req,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_include_half_made_sandboxes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("root"), &dir.path().join("state")).unwrap();
        // a creator killed between the row and its network: no attachment
        engine
            .conn
            .execute(
                "INSERT INTO sandboxes (id, name, request, labels, created, dir, attachment)
                 VALUES (?1, 'half', '{}', '{\"pod\":\"gone\"}', '2026-01-01T00:00:00Z',
                         '/nonexistent', '')",
                [format!("{:064x}", 1)],
            )
            .unwrap();
        assert!(list(&engine).is_err(), "list needs every attachment");
        let all = labels(&engine).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "half");
        assert_eq!(all[0].1.get("pod").map(String::as_str), Some("gone"));
    }
}
