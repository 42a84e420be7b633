//! Name resolution for containers through the embedded DNS server (127.0.0.11),
//! and DNS records other crates publish.
//!
//! Each container on a user network (and each container of a sandbox, or one that
//! opted in with [`crate::network::Request::embedded_dns`]) gets a resolv.conf
//! naming 127.0.0.11; its monitor binds a [`berth_net::dns::Server`] there, inside
//! the container's namespace. It answers, in order:
//! 1. records published through this module ([`set_records`]), e.g. the
//!    orchestrator's Service names (`web.default.svc.cluster.local` -> virtual IP);
//! 2. on a user network, the names of its members: container names, hostnames,
//!    `--network-alias` names and 12-digit short ids;
//! 3. NXDOMAIN for other single-label names and names under `.local` (never asked
//!    of the outside), and the rest forwarded to the host's resolv.conf servers with
//!    a short timeout (SERVFAIL when none answers).
//!
//! Records live in the root's database (table `dns_records`), per owner (a string
//! the publisher chooses, e.g. `service/default/web`): a publisher replaces all its
//! records at once and removes them when done. A record may be limited to one
//! network; otherwise every container with the embedded server sees it. Changes
//! are seen by the next query: there is no cache to flush.
//!
//! ```no_run
//! # fn demo(conn: &rusqlite::Connection) -> berth_engine::Result<()> {
//! use berth_engine::dns::{self, Record};
//! dns::set_records(conn, "service/default/web", &[Record {
//!     name: "web.default.svc.cluster.local".into(),
//!     ip: "198.18.0.7".parse().unwrap(),
//!     network: None,
//! }])?;
//! assert_eq!(dns::lookup(conn, "", "web.default.svc.cluster.local")?.len(), 1);
//! dns::remove_owner(conn, "service/default/web")?;
//! # Ok(()) }
//! ```

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_net::dns::Lookup;

use crate::error::{Error, Result};

/// The records table.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dns_records (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    ip TEXT NOT NULL,
    network TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (owner, name, ip, network)
);
CREATE INDEX IF NOT EXISTS dns_records_name ON dns_records(name);
";

/// One A record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Fully qualified name, without the trailing dot (matched case-insensitively).
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Only containers on this network see it; None: every container with the
    /// embedded server.
    pub network: Option<String>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn check_name(name: &str) -> Result<String> {
    let n = normalize(name);
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !ok {
        return Err(Error::invalid("dns name", format!("{name:?}")));
    }
    Ok(n)
}

/// Replaces every record of `owner` with `records`, atomically (an empty slice
/// removes them).
pub fn set_records(conn: &rusqlite::Connection, owner: &str, records: &[Record]) -> Result<()> {
    let names = records
        .iter()
        .map(|r| check_name(&r.name))
        .collect::<Result<Vec<_>>>()?;
    let tx = crate::store::immediate(conn)?;
    tx.execute("DELETE FROM dns_records WHERE owner = ?1", [owner])?;
    for (r, name) in records.iter().zip(&names) {
        tx.execute(
            "INSERT OR IGNORE INTO dns_records (owner, name, ip, network) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                owner,
                name,
                r.ip.to_string(),
                r.network.as_deref().unwrap_or("")
            ],
        )?;
    }
    Ok(tx.commit()?)
}

/// Removes every record of `owner`; returns how many.
pub fn remove_owner(conn: &rusqlite::Connection, owner: &str) -> Result<usize> {
    Ok(conn.execute("DELETE FROM dns_records WHERE owner = ?1", [owner])?)
}

/// Records of one owner, or of all (`None`), as (owner, record).
pub fn records(conn: &rusqlite::Connection, owner: Option<&str>) -> Result<Vec<(String, Record)>> {
    let mut st = conn.prepare(
        "SELECT owner, name, ip, network FROM dns_records
         WHERE ?1 IS NULL OR owner = ?1 ORDER BY owner, name, ip",
    )?;
    let rows = st
        .query_map([owner], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(o, name, ip, net)| {
            Some((
                o,
                Record {
                    name,
                    ip: ip.parse().ok()?,
                    network: (!net.is_empty()).then_some(net),
                },
            ))
        })
        .collect())
}

/// The addresses of `name` as a container on `network` sees them ("" = no user
/// network: published records only); empty when the name is unknown here.
pub fn lookup(conn: &rusqlite::Connection, network: &str, name: &str) -> Result<Vec<Ipv4Addr>> {
    let name = normalize(name);
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut st = conn.prepare_cached(
        "SELECT ip FROM dns_records WHERE name = ?1 AND (network = '' OR network = ?2)",
    )?;
    for ip in st.query_map([&name, &network.to_string()], |r| r.get::<_, String>(0))? {
        if let Ok(ip) = ip?.parse()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    if !out.is_empty() || network.is_empty() || network == crate::network::DEFAULT_NETWORK {
        return Ok(out);
    }
    let short = name.len() == 12 && name.chars().all(|c| c.is_ascii_hexdigit());
    let mut st =
        conn.prepare_cached("SELECT container_id, ip, names FROM endpoints WHERE network = ?1")?;
    let rows = st.query_map([network], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (id, ip, names) = row?;
        let names: Vec<String> = serde_json::from_str(&names).unwrap_or_default();
        let hit =
            names.iter().any(|n| n.eq_ignore_ascii_case(&name)) || (short && id.starts_with(&name));
        if hit
            && let Ok(ip) = ip.parse()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    Ok(out)
}

/// What the server does with `name` for a container on `network`.
fn decide(conn: &rusqlite::Connection, network: &str, name: &str) -> Lookup {
    match lookup(conn, network, name) {
        Ok(ips) if !ips.is_empty() => Lookup::Found(ips),
        Ok(_) if !name.contains('.') || name == "local" || name.ends_with(".local") => {
            Lookup::NotFound
        }
        Ok(_) => Lookup::Forward,
        // the database is busy or gone: let the upstream decide rather than fail
        Err(_) => Lookup::Forward,
    }
}

/// Starts the embedded server inside the namespace at `netns` for a container whose
/// names come from `network` ("" for records only). It runs until dropped.
pub fn serve(root: &Path, netns: &Path, network: &str) -> Result<berth_net::dns::Server> {
    let (udp, tcp) = berth_net::dns::bind_in(netns).map_err(crate::network::Error::from)?;
    let conn = Mutex::new(crate::store::open(root)?);
    let network = network.to_string();
    let lookup: Arc<berth_net::dns::LookupFn> = Arc::new(move |name: &str| match conn.lock() {
        Ok(c) => decide(&c, &network, name),
        Err(_) => Lookup::Forward,
    });
    berth_net::dns::Server::start(udp, tcp, berth_net::dns::host_upstreams(), lookup)
        .map_err(Error::io("start dns server", netns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_per_owner_and_network() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        let r = |name: &str, ip: [u8; 4], net: Option<&str>| Record {
            name: name.into(),
            ip: ip.into(),
            network: net.map(Into::into),
        };
        set_records(
            &conn,
            "svc/a",
            &[
                r("Web.NS.svc.cluster.local.", [198, 18, 0, 7], None),
                r("db.internal", [198, 18, 0, 8], Some("front")),
            ],
        )
        .unwrap();
        set_records(
            &conn,
            "svc/b",
            &[r("web.ns.svc.cluster.local", [198, 18, 0, 9], None)],
        )
        .unwrap();
        assert_eq!(
            lookup(&conn, "", "web.ns.svc.cluster.local").unwrap(),
            vec![Ipv4Addr::new(198, 18, 0, 7), Ipv4Addr::new(198, 18, 0, 9)]
        );
        assert!(lookup(&conn, "back", "db.internal").unwrap().is_empty());
        assert_eq!(lookup(&conn, "front", "DB.internal").unwrap().len(), 1);
        // replacing an owner's set drops what it no longer lists
        set_records(&conn, "svc/a", &[]).unwrap();
        assert_eq!(records(&conn, None).unwrap().len(), 1);
        assert_eq!(remove_owner(&conn, "svc/b").unwrap(), 1);
        assert!(records(&conn, None).unwrap().is_empty());
        assert!(set_records(&conn, "x", &[r("bad name", [1, 1, 1, 1], None)]).is_err());
        assert_eq!(decide(&conn, "", "srv"), Lookup::NotFound);
        assert_eq!(decide(&conn, "", "x.cluster.local"), Lookup::NotFound);
        assert_eq!(decide(&conn, "", "example.org"), Lookup::Forward);
    }
}
