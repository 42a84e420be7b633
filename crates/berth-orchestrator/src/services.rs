//! Services: a virtual IP per Service, spread over the ready pods it selects, and
//! NodePorts on the host's addresses, as one nftables table per berth root.
//!
//! The whole table is rewritten in one atomic `nft -f` batch whenever the endpoints
//! change, so a pod that stops being ready (or is about to be stopped) leaves the
//! Service before it goes. Virtual IPs come from 198.18.0.0/15 (reserved for
//! benchmarking, RFC 2544: never a real destination), one /24 per root; traffic to a
//! virtual IP without endpoints is rejected on this host rather than sent anywhere.
//! A NodePort Service port without a `nodePort` gets one from 30000-32767, as in
//! Kubernetes: the first free one from a start derived from the root, kept while the
//! port exists, claimed host-wide (see [`CLAIMS`]) so two roots never share one. A
//! written `nodePort` another Service of the root holds is refused at apply.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::params;
use sha2::Digest as _;

use crate::manifest::types::{IntOrString, ServiceSpec};
use crate::store;

/// Tables of the service allocator.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS k8s_service_ips (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    ip TEXT NOT NULL UNIQUE,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS k8s_service_node_ports (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    port INTEGER NOT NULL,
    node_port INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (namespace, name, protocol, port)
);
";

/// The range NodePorts come from.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// A ready pod as a Service sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Named container ports.
    pub ports: BTreeMap<String, u16>,
}

/// The /24 of virtual IPs of a root, and the table name, both from the root's path.
fn root_hash(root: &Path) -> [u8; 32] {
    sha2::Sha256::digest(root.as_os_str().as_encoded_bytes()).into()
}

/// nft table of a root's Services.
pub fn table_name(root: &Path) -> String {
    format!("berth_svc_{}", hex::encode(&root_hash(root)[..4]))
}

fn vip_net(root: &Path) -> (u8, u8) {
    let h = root_hash(root);
    (18 + (h[0] & 1), h[1])
}

/// The virtual IP of a Service, allocated on first use and kept while it exists.
pub fn cluster_ip(
    conn: &rusqlite::Connection,
    root: &Path,
    ns: &str,
    name: &str,
) -> Result<Ipv4Addr, store::Error> {
    if let Some(ip) = allocated(conn, ns, name) {
        return Ok(ip);
    }
    let (b, c) = vip_net(root);
    let used: Vec<String> = conn
        .prepare("SELECT ip FROM k8s_service_ips")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for d in 1..=254u8 {
        let ip = Ipv4Addr::new(198, b, c, d);
        if !used.contains(&ip.to_string()) {
            conn.execute(
                "INSERT INTO k8s_service_ips (namespace, name, ip) VALUES (?1, ?2, ?3)",
                params![ns, name, ip.to_string()],
            )?;
            return Ok(ip);
        }
    }
    Err(store::Error::Sqlite(rusqlite::Error::QueryReturnedNoRows))
}

/// The virtual IP a Service already has.
pub fn allocated(conn: &rusqlite::Connection, ns: &str, name: &str) -> Option<Ipv4Addr> {
    conn.query_row(
        "SELECT ip FROM k8s_service_ips WHERE namespace=?1 AND name=?2",
        params![ns, name],
        |r| r.get::<_, String>(0),
    )
    .ok()
    .and_then(|s| s.parse().ok())
}

/// The NodePort allocated to `port`/`protocol` of a Service, if any.
pub fn allocated_node_port(
    conn: &rusqlite::Connection,
    ns: &str,
    name: &str,
    protocol: &str,
    port: i64,
) -> Option<u16> {
    conn.query_row(
        "SELECT node_port FROM k8s_service_node_ports
         WHERE namespace=?1 AND name=?2 AND protocol=?3 AND port=?4",
        params![ns, name, protocol, port],
        |r| r.get(0),
    )
    .ok()
}

/// `spec` with a `nodePort` on every port of a NodePort Service: the one written, or
/// one allocated on first use (and kept). Allocations of ports the Service no longer
/// has NodePorts for are released.
pub fn with_node_ports(
    conn: &rusqlite::Connection,
    root: &Path,
    ns: &str,
    name: &str,
    spec: &ServiceSpec,
) -> Result<ServiceSpec, store::Error> {
    let mut spec = spec.clone();
    let node_port_type = spec.kind.as_deref() == Some("NodePort");
    let mut wanted = Vec::new();
    for p in spec.ports.iter_mut().filter(|_| node_port_type) {
        if p.node_port.is_some() {
            continue;
        }
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let np = match allocated_node_port(conn, ns, name, &proto, p.port) {
            Some(np) => np,
            None => allocate_node_port(conn, root, ns, name, &proto, p.port)?,
        };
        p.node_port = Some(np.into());
        wanted.push((proto, p.port));
    }
    let held: Vec<(String, i64, u16)> = conn
        .prepare(
            "SELECT protocol, port, node_port FROM k8s_service_node_ports
             WHERE namespace=?1 AND name=?2",
        )?
        .query_map(params![ns, name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (proto, port, np) in held {
        if wanted.contains(&(proto.clone(), port)) {
            continue;
        }
        unclaim(Path::new(CLAIMS), root, np);
        conn.execute(
            "DELETE FROM k8s_service_node_ports
             WHERE namespace=?1 AND name=?2 AND protocol=?3 AND port=?4",
            params![ns, name, proto, port],
        )?;
    }
    Ok(spec)
}

/// The first NodePort from a start derived from the root that no Service of this
/// root holds (allocated or written) and no socket of this host is bound to.
fn allocate_node_port(
    conn: &rusqlite::Connection,
    root: &Path,
    ns: &str,
    name: &str,
    protocol: &str,
    port: i64,
) -> Result<u16, store::Error> {
    // IMMEDIATE: an apply writing an explicit nodePort waits, so it sees this one
    let tx = berth_engine::store::immediate(conn)?;
    let conn = &*tx;
    let mut used: Vec<u16> = conn
        .prepare("SELECT node_port FROM k8s_service_node_ports")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    used.extend(written_node_ports(conn)?);
    let h = root_hash(root);
    let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
    let start = u16::from_be_bytes([h[2], h[3]]) % span;
    let free = (0..span)
        .map(|i| NODE_PORTS.start() + (start + i) % span)
        .find(|np| {
            !used.contains(np)
                && host_port_free(protocol, *np)
                && claim(Path::new(CLAIMS), root, *np)
        })
        .ok_or_else(|| store::Error::NodePortsExhausted {
            service: format!("{ns}/{name}"),
        })?;
    conn.execute(
        "INSERT INTO k8s_service_node_ports (namespace, name, protocol, port, node_port)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![ns, name, protocol, port, free],
    )?;
    tx.commit()?;
    Ok(free)
}

/// NodePorts written in the manifests of this root's Services.
fn written_node_ports(conn: &rusqlite::Connection) -> Result<Vec<u16>, store::Error> {
    Ok(node_port_holders(conn)?
        .into_iter()
        .filter(|(_, _, written)| *written)
        .map(|(np, _, _)| np)
        .collect())
}

/// Every NodePort of this root's Services: (port, "namespace/name", written in the
/// manifest rather than allocated).
fn node_port_holders(
    conn: &rusqlite::Connection,
) -> Result<Vec<(u16, String, bool)>, store::Error> {
    let manifests: Vec<(String, String, String)> = conn
        .prepare("SELECT namespace, name, manifest FROM k8s_objects WHERE kind='Service'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut held = Vec::new();
    for (ns, name, m) in manifests {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&m) else {
            continue;
        };
        for p in v["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                held.push((n, format!("{ns}/{name}"), true));
            }
        }
    }
    let allocated: Vec<(u16, String, String)> = conn
        .prepare("SELECT node_port, namespace, name FROM k8s_service_node_ports")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    held.extend(
        allocated
            .into_iter()
            .map(|(np, ns, name)| (np, format!("{ns}/{name}"), false)),
    );
    Ok(held)
}

/// Refuses `object` (at apply) if it is a Service with a `nodePort` another Service
/// of this root holds, written or allocated: as kube-apiserver, the first one keeps it.
pub fn check_node_ports(
    conn: &rusqlite::Connection,
    object: &crate::manifest::Object,
) -> Result<(), store::Error> {
    let crate::manifest::Body::Service(spec) = &object.body else {
        return Ok(());
    };
    let me = format!("{}/{}", object.namespace(), object.metadata.name);
    let explicit: Vec<(usize, i64)> = spec
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.node_port?)))
        .collect();
    if explicit.is_empty() {
        return Ok(());
    }
    let holders = node_port_holders(conn)?;
    for (index, port) in explicit {
        if let Some((_, holder, _)) = holders
            .iter()
            .find(|(np, holder, _)| i64::from(*np) == port && *holder != me)
        {
            return Err(store::Error::NodePortAllocated {
                service: me,
                index,
                port,
                holder: holder.clone(),
            });
        }
    }
    Ok(())
}

/// Host-wide claims of automatic NodePorts: one file per port holding the root that
/// allocated it, so two roots of one host (tests run many) never pick the same one.
/// A file beats reading every root's nft table: the claim is taken before the rules
/// exist, under one lock, so two roots allocating at once cannot both win. A claim
/// whose root directory is gone is stale and taken over (roots removed without
/// deleting their Services leave them behind).
const CLAIMS: &str = "/run/berth-node-ports";

/// Claims `port` for `root` in `dir`: false if another live root holds it. I/O
/// failures (e.g. /run not writable) count as claimed: the host-bound check and the
/// root-derived start still apply.
fn claim(dir: &Path, root: &Path, port: u16) -> bool {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let attempt = || -> std::io::Result<bool> {
        std::fs::create_dir_all(dir)?;
        let lock = std::fs::File::create(dir.join(".lock"))?;
        lock.lock()?;
        let path = dir.join(port.to_string());
        if let Ok(holder) = std::fs::read_to_string(&path)
            && Path::new(&holder) != root
            && !holder.is_empty()
            && Path::new(&holder).exists()
        {
            return Ok(false);
        }
        std::fs::write(&path, root.as_os_str().as_encoded_bytes())?;
        Ok(true)
    };
    attempt().unwrap_or_else(|e| {
        tracing::warn!("claim NodePort {port} in {}: {e}", dir.display());
        true
    })
}

/// Drops the claim of `root` on `port`, if it is its own.
fn unclaim(dir: &Path, root: &Path, port: u16) {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let path = dir.join(port.to_string());
    let Ok(lock) = std::fs::File::create(dir.join(".lock")) else {
        return;
    };
    if lock.lock().is_ok() && std::fs::read_to_string(&path).is_ok_and(|h| Path::new(&h) == root) {
        let _ = std::fs::remove_file(&path);
    }
}

/// Whether nothing on this host is bound to `port` (the NodePort rules would take
/// its traffic).
fn host_port_free(protocol: &str, port: u16) -> bool {
    let any = (Ipv4Addr::UNSPECIFIED, port);
    if protocol.eq_ignore_ascii_case("UDP") {
        std::net::UdpSocket::bind(any).is_ok()
    } else {
        std::net::TcpListener::bind(any).is_ok()
    }
}

/// Forgets the virtual IPs and NodePorts of Services that are gone.
pub fn release_missing(
    conn: &rusqlite::Connection,
    root: &Path,
    keep: &[(String, String)],
) -> Result<(), store::Error> {
    let all: Vec<(String, String)> = conn
        .prepare("SELECT namespace, name FROM k8s_service_ips")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (ns, name) in all {
        if !keep.contains(&(ns.clone(), name.clone())) {
            conn.execute(
                "DELETE FROM k8s_service_ips WHERE namespace=?1 AND name=?2",
                params![ns, name],
            )?;
        }
    }
    let with_ports: Vec<(String, String, u16)> = conn
        .prepare("SELECT namespace, name, node_port FROM k8s_service_node_ports")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (ns, name, np) in with_ports {
        if !keep.contains(&(ns.clone(), name.clone())) {
            conn.execute(
                "DELETE FROM k8s_service_node_ports WHERE namespace=?1 AND name=?2",
                params![ns, name],
            )?;
            unclaim(Path::new(CLAIMS), root, np);
        }
    }
    Ok(())
}

/// One port of a Service: (protocol, service port, node port, endpoints as ip and port).
pub type PortRule = (String, u16, Option<u16>, Vec<(Ipv4Addr, u16)>);

/// One Service ready to be written as rules.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Its virtual IP.
    pub ip: Ipv4Addr,
    /// (protocol, service port, node port, endpoint ip, endpoint port) per port.
    pub ports: Vec<PortRule>,
}

/// Endpoints of one Service: ready pods of its namespace matching its selector.
pub fn render(spec: &ServiceSpec, ns: &str, ip: Ipv4Addr, endpoints: &[Endpoint]) -> Rendered {
    let selected: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| {
            e.namespace == ns
                && !spec.selector.is_empty()
                && spec
                    .selector
                    .iter()
                    .all(|(k, v)| e.labels.get(k) == Some(v))
        })
        .collect();
    let ports = spec
        .ports
        .iter()
        .map(|p| {
            let targets = selected
                .iter()
                .filter_map(|e| {
                    let port = match &p.target_port {
                        None => Some(p.port as u16),
                        Some(IntOrString::Int(n)) => Some(*n as u16),
                        Some(IntOrString::String(name)) => e.ports.get(name).copied(),
                    }?;
                    Some((e.ip, port))
                })
                .collect();
            (
                p.protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_lowercase(),
                p.port as u16,
                p.node_port.map(|n| n as u16),
                targets,
            )
        })
        .collect();
    Rendered { ip, ports }
}

fn dnat_target(targets: &[(Ipv4Addr, u16)]) -> String {
    if targets.len() == 1 {
        return format!("dnat ip to {}:{}", targets[0].0, targets[0].1);
    }
    let elems: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
        .collect();
    format!(
        "dnat ip to numgen random mod {} map {{ {} }}",
        targets.len(),
        elems.join(", ")
    )
}

/// The nft batch for a root's Services; empty `services` removes the table.
pub fn script(root: &Path, services: &[Rendered]) -> String {
    let table = table_name(root);
    let (b, c) = vip_net(root);
    let vips = format!("198.{b}.{c}.0/24");
    // create-then-delete makes the delete valid whether or not the table exists
    let mut s = format!("table ip {table}\ndelete table ip {table}\n");
    if services.is_empty() {
        return s;
    }
    let mut svc = String::new();
    for r in services {
        for (proto, port, node_port, targets) in &r.ports {
            if targets.is_empty() {
                continue;
            }
            let to = dnat_target(targets);
            svc.push_str(&format!(
                "    ip daddr {} {proto} dport {port} {to}\n",
                r.ip
            ));
            if let Some(np) = node_port {
                svc.push_str(&format!(
                    "    fib daddr type local {proto} dport {np} {to}\n"
                ));
            }
        }
    }
    s.push_str(&format!(
        "table ip {table} {{
  comment \"berth services of {root}\"
  chain svc {{
{svc}  }}
  chain pre {{ type nat hook prerouting priority dstnat; policy accept; jump svc; }}
  chain out {{ type nat hook output priority -100; policy accept; jump svc; }}
  chain post {{ type nat hook postrouting priority srcnat; policy accept; ct status dnat ct original ip daddr {vips} masquerade; }}
  chain guard_out {{ type filter hook output priority 0; policy accept; ip daddr {vips} reject; }}
  chain guard_fwd {{ type filter hook forward priority 0; policy accept; ip daddr {vips} reject; }}
}}
",
        root = root.display()
    ));
    s
}

/// Applies the batch.
pub fn apply(script: &str) -> Result<(), berth_net::Error> {
    berth_net::nft::apply(script)
}

/// Removes the Service tables of roots whose directory is gone (a temporary root
/// deleted after its serve was killed): nothing else would ever remove them. Best
/// effort, at serve start.
pub fn collect_orphans() {
    let nft = |args: &[&str]| {
        std::process::Command::new("nft")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in nft(&["list", "tables"]).lines() {
        let Some(table) = line
            .strip_prefix("table ip ")
            .filter(|t| t.starts_with("berth_svc_"))
        else {
            continue;
        };
        let listing = nft(&["list", "table", "ip", table]);
        let root = listing.lines().find_map(|l| {
            l.trim()
                .strip_prefix("comment \"berth services of ")?
                .strip_suffix('"')
        });
        if let Some(root) = root
            && !Path::new(root).exists()
        {
            let _ = apply(&format!("delete table ip {table}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_balances_over_ready_endpoints_and_guards_the_range() {
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": "http", "nodePort": 30080}]
        }))
        .unwrap();
        let ep = |ip: [u8; 4], app: &str| Endpoint {
            namespace: "default".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ip: ip.into(),
            ports: [("http".to_string(), 8080)].into(),
        };
        let eps = [
            ep([10, 0, 0, 2], "web"),
            ep([10, 0, 0, 3], "web"),
            ep([10, 0, 0, 4], "db"),
        ];
        let r = render(&spec, "default", Ipv4Addr::new(198, 18, 1, 1), &eps);
        let root = Path::new("/var/lib/berth");
        let s = script(root, &[r]);
        assert!(s.contains("ip daddr 198.18.1.1 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 10.0.0.2 . 8080, 1 : 10.0.0.3 . 8080 }"), "{s}");
        assert!(s.contains("fib daddr type local tcp dport 30080"), "{s}");
        assert!(!s.contains("10.0.0.4"), "{s}");
        assert!(s.contains("reject"), "{s}");
        let empty = script(root, &[]);
        assert_eq!(empty.lines().count(), 2, "{empty}");
    }

    #[test]
    fn node_ports_are_allocated_once_kept_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(dir.path()).unwrap();
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "type": "NodePort",
            "ports": [
                {"name": "a", "port": 80, "nodePort": 30080},
                {"name": "b", "port": 81, "protocol": "UDP"}
            ]
        }))
        .unwrap();
        let got = with_node_ports(&conn, dir.path(), "default", "s", &spec).unwrap();
        assert_eq!(got.ports[0].node_port, Some(30080), "written ones stay");
        let auto = got.ports[1].node_port.unwrap();
        assert!(
            NODE_PORTS.contains(&(auto as u16)) && auto != 30080,
            "{auto}"
        );
        assert_eq!(
            allocated_node_port(&conn, "default", "s", "UDP", 81),
            Some(auto as u16)
        );
        let again = with_node_ports(&conn, dir.path(), "default", "s", &spec).unwrap();
        assert_eq!(again.ports[1].node_port, Some(auto), "kept");
        // another Service gets another port
        let other = with_node_ports(&conn, dir.path(), "default", "t", &spec).unwrap();
        assert_ne!(other.ports[1].node_port, Some(auto));
        // no longer a NodePort Service: released; a deleted Service: released
        let cluster_ip = ServiceSpec {
            kind: None,
            ..spec.clone()
        };
        let plain = with_node_ports(&conn, dir.path(), "default", "s", &cluster_ip).unwrap();
        assert_eq!(plain.ports[1].node_port, None);
        assert_eq!(allocated_node_port(&conn, "default", "s", "UDP", 81), None);
        release_missing(&conn, dir.path(), &[]).unwrap();
        assert_eq!(allocated_node_port(&conn, "default", "t", "UDP", 81), None);
    }

    fn apply_svc(conn: &rusqlite::Connection, name: &str, ports: &str) -> Result<(), store::Error> {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec: {{type: NodePort, selector: {{app: x}}, ports: {ports}}}\n"
        );
        let parsed = crate::manifest::parse("t.yaml", &text).unwrap();
        store::apply(conn, &parsed.objects[0], &parsed.values[0], "").map(|_| ())
    }

    #[test]
    fn explicit_node_port_held_by_another_service_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(dir.path()).unwrap();
        // explicit first: a second explicit one is refused, the auto one skips it
        apply_svc(&conn, "a", "[{port: 80, nodePort: 30080}]").unwrap();
        let err = apply_svc(
            &conn,
            "b",
            "[{name: x, port: 81}, {name: y, port: 80, nodePort: 30080}]",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "service default/b: spec.ports[1].nodePort: 30080: provided port is already \
             allocated (by service default/a)"
        );
        assert!(
            store::list(&conn, "Service").unwrap().len() == 1,
            "nothing of b stored"
        );
        // the same Service may apply its own port again
        apply_svc(&conn, "a", "[{port: 80, nodePort: 30080, name: web}]").unwrap();
        // an allocator that would start at the explicit port takes the next one
        let used = written_node_ports(&conn).unwrap();
        assert_eq!(used, vec![30080]);

        // auto first: the allocated port refuses a later explicit one
        let auto = {
            let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
                "type": "NodePort", "ports": [{"port": 90}]
            }))
            .unwrap();
            with_node_ports(&conn, dir.path(), "default", "c", &spec)
                .unwrap()
                .ports[0]
                .node_port
                .unwrap()
        };
        assert_ne!(auto, 30080, "auto allocation skips the explicit one");
        let err = apply_svc(&conn, "d", &format!("[{{port: 80, nodePort: {auto}}}]"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "{auto}: provided port is already allocated (by service default/c)"
            )),
            "{err}"
        );
        release_missing(&conn, dir.path(), &[]).unwrap();
    }

    #[test]
    fn auto_allocation_skips_every_explicit_port() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(dir.path()).unwrap();
        // the port the allocator would pick first for this root, written explicitly
        let h = root_hash(dir.path());
        let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
        let first = NODE_PORTS.start() + u16::from_be_bytes([h[2], h[3]]) % span;
        apply_svc(&conn, "a", &format!("[{{port: 80, nodePort: {first}}}]")).unwrap();
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "type": "NodePort", "ports": [{"port": 90}]
        }))
        .unwrap();
        let got = with_node_ports(&conn, dir.path(), "default", "b", &spec).unwrap();
        assert_ne!(got.ports[0].node_port, Some(i64::from(first)));
        release_missing(&conn, dir.path(), &[]).unwrap();
    }

    #[test]
    fn host_wide_claims_keep_two_roots_apart() {
        let claims = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert!(claim(claims.path(), a.path(), 30500));
        assert!(claim(claims.path(), a.path(), 30500), "own claim again");
        assert!(
            !claim(claims.path(), b.path(), 30500),
            "held by a live root"
        );
        unclaim(claims.path(), b.path(), 30500);
        assert!(
            !claim(claims.path(), b.path(), 30500),
            "b cannot drop a's claim"
        );
        unclaim(claims.path(), a.path(), 30500);
        assert!(claim(claims.path(), b.path(), 30500), "released");
        // a claim whose root is gone is stale
        let b_path = b.path().to_path_buf();
        drop(b);
        assert!(!b_path.exists());
        assert!(
            claim(claims.path(), a.path(), 30500),
            "stale claim taken over"
        );
    }
}
