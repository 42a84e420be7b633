//! Networks as the engine sees them: the networks and endpoints tables, the default
//! bridge, address and port allocation, and the setup/teardown calls the container
//! lifecycle makes. The kernel side (links, namespaces, nft rules) is berth-net's.
//!
//! Choices:
//! - Every root has its own default network "bridge" whose bridge name and /24 are
//!   derived from a hash of the root path (so parallel roots never collide; a subnet
//!   already routed on the host is skipped; `BERTH_BRIDGE_SUBNET` overrides it).
//! - A network's host objects (bridge, nft table) are made when its first container
//!   attaches and stay, as docker's and podman's do, until `network rm` (also allowed
//!   for "bridge", which is made again on next use) or [`prune`]. Bringing the default
//!   network up and down around every `run --rm` cost about 120 ms here (nft table,
//!   bridge unregistration). A root's directory vanishing (a test's temporary root)
//!   leaves its bridges behind, so each network brought up is registered in
//!   `/run/berth-net/` with its root, and bringing any network up removes those of
//!   roots that no longer exist.
//! - Allocation (addresses, host ports, bringing a network up or down) happens inside
//!   a `BEGIN IMMEDIATE` transaction, so concurrent `berth run` processes serialize on
//!   the database instead of racing.
//! - Names: containers on a user network find each other through their hosts files,
//!   rewritten for every member when one joins or leaves; the default bridge lists
//!   only the container itself (as docker).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use berth_net::{Mapping, Netlink, PortSpec, Proto, Subnet};
use rusqlite::{OptionalExtension, params};

/// Tables of networks and endpoints (one endpoint per container on a bridge network).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL DEFAULT 'bridge',
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    bridge TEXT NOT NULL UNIQUE,
    labels TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    up INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS endpoints (
    container_id TEXT PRIMARY KEY,
    network TEXT NOT NULL REFERENCES networks(name),
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    host_veth TEXT NOT NULL,
    netns TEXT NOT NULL,
    hosts TEXT NOT NULL,
    names TEXT NOT NULL DEFAULT '[]',
    ports TEXT NOT NULL DEFAULT '[]',
    extra_hosts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS endpoints_network ON endpoints(network);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    request TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    dir TEXT NOT NULL,
    attachment TEXT NOT NULL DEFAULT ''
);
";

/// Adds what later versions added to the tables of an older database.
pub(crate) fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('endpoints') WHERE name = 'extra_hosts'")?
        .exists([])?;
    if !has {
        conn.execute_batch(
            "ALTER TABLE endpoints ADD COLUMN extra_hosts TEXT NOT NULL DEFAULT '[]'",
        )?;
    }
    Ok(())
}

/// Name of every root's default network.
pub const DEFAULT_NETWORK: &str = "bridge";

/// What a container asks of the network (from `run` flags).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Request {
    /// "" or "bridge" = default bridge, "host", "none", a user network name,
    /// `container:ID` (share a running container's namespace) or `sandbox:NAME` (join
    /// a sandbox, see [`crate::sandbox`]); [`NetworkMode`] parses it.
    pub network: String,
    /// `-p` values as typed.
    pub ports: Vec<String>,
    /// `-P`: publish every exposed port on a free host port.
    pub publish_all: bool,
    /// Exposed ports of the image and `--expose` ("80/tcp").
    pub exposed: Vec<String>,
    /// Container hostname (defaults to the id's first 12 characters).
    pub hostname: String,
    /// Container name.
    pub name: String,
    /// Extra names on a user network.
    pub aliases: Vec<String>,
    /// A fixed address on the network (`--ip`), else the next free one.
    pub ip: Option<Ipv4Addr>,
    /// Extra hosts-file lines, `NAME:IP` (`--add-host`).
    pub extra_hosts: Vec<String>,
    /// Search domains for resolv.conf (`--dns-search`).
    pub dns_search: Vec<String>,
    /// Use the embedded DNS server (127.0.0.11) even on the default bridge; user
    /// networks and sandboxes always do. On the default bridge it answers records
    /// of [`crate::dns`] and forwards the rest, but not container names (as docker).
    pub embedded_dns: bool,
}

/// The network modes of [`Request::network`], parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A bridge network: the default one (`bridge`) or a user network by name.
    Bridge(String),
    /// The host's namespace.
    Host,
    /// A namespace with only lo.
    None,
    /// The namespace of another (running) container, by id, id prefix or name
    /// (`container:NAME`).
    Container(String),
    /// The namespace of a sandbox made with [`crate::sandbox::create`]
    /// (`sandbox:NAME`).
    Sandbox(String),
}

impl NetworkMode {
    /// Parses a `--network` value.
    pub fn parse(s: &str) -> NetworkMode {
        match s {
            "" | DEFAULT_NETWORK => NetworkMode::Bridge(DEFAULT_NETWORK.into()),
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            _ => {
                if let Some(c) = s.strip_prefix("container:") {
                    NetworkMode::Container(c.into())
                } else if let Some(n) = s.strip_prefix("sandbox:") {
                    NetworkMode::Sandbox(n.into())
                } else {
                    NetworkMode::Bridge(s.into())
                }
            }
        }
    }

    /// Whether the container shares a namespace it does not own.
    pub fn is_joined(&self) -> bool {
        matches!(self, NetworkMode::Container(_) | NetworkMode::Sandbox(_))
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkMode::Bridge(n) => f.write_str(n),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Container(c) => write!(f, "container:{c}"),
            NetworkMode::Sandbox(s) => write!(f, "sandbox:{s}"),
        }
    }
}

impl Request {
    /// The parsed network mode.
    pub fn mode(&self) -> NetworkMode {
        NetworkMode::parse(&self.network)
    }
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Netns {
    /// The host's: no network namespace entry in config.json.
    Host,
    /// A fresh one with only lo (`--network none`): the runtime creates it.
    New,
    /// A prepared one: the runtime joins it by path.
    Path(PathBuf),
}

/// What setup produced, for config.json and `inspect`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// Namespace to use.
    pub netns: Netns,
    /// Container address on the bridge.
    pub ip: Option<Ipv4Addr>,
    /// Its gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Prefix length (0 without an address).
    pub prefix: u8,
    /// MAC of eth0.
    pub mac: Option<String>,
    /// Ports published, with the host ports actually chosen.
    pub ports: Vec<PublishedPort>,
    /// To bind-mount at /etc/hosts.
    pub hosts: Option<PathBuf>,
    /// To bind-mount at /etc/resolv.conf.
    pub resolv_conf: Option<PathBuf>,
    /// The embedded DNS server answers in this namespace (resolv.conf names
    /// 127.0.0.11): `Some(network)` whose members' names it resolves (`Some("")` for
    /// records and forwarding only), `None` without it.
    #[serde(default)]
    pub dns: Option<String>,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedPort {
    /// Host address (0.0.0.0 = all).
    pub host_ip: IpAddr,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// "tcp" or "udp".
    pub proto: String,
}

/// Errors of the engine's network handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kernel side.
    #[error(transparent)]
    Net(#[from] berth_net::Error),
    /// Metadata database.
    #[error("network metadata: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No such network.
    #[error("network {name} not found")]
    UnknownNetwork {
        /// As given.
        name: String,
    },
    /// Name taken.
    #[error("network {name} already exists")]
    NetworkExists {
        /// As given.
        name: String,
    },
    /// Containers still attached.
    #[error("network {name} has attached containers: {containers}")]
    InUse {
        /// Network.
        name: String,
        /// Their ids.
        containers: String,
    },
    /// host / none.
    #[error("{name} is a predefined network: it cannot be {what}")]
    Predefined {
        /// Network.
        name: String,
        /// created or removed.
        what: &'static str,
    },
    /// Another container of this root publishes the port.
    #[error("host port {ip}:{port}/{proto} is already published by container {container}")]
    PortTaken {
        /// Host address.
        ip: Ipv4Addr,
        /// Host port.
        port: u16,
        /// Protocol.
        proto: String,
        /// Holder.
        container: String,
    },
    /// A network name we cannot use.
    #[error("invalid network name {name:?}: {reason}")]
    BadName {
        /// As given.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Subnet clash.
    #[error("subnet {subnet} overlaps {other}")]
    Overlap {
        /// Asked for.
        subnet: String,
        /// Existing network or route.
        other: String,
    },
    /// Gateway outside the subnet.
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    Gateway {
        /// As given.
        gateway: String,
        /// Subnet.
        subnet: String,
    },
    /// Nothing free in the pool.
    #[error("no free /24 left for a network in {pool}")]
    NoSubnet {
        /// Pool searched.
        pool: &'static str,
    },
    /// `--ip` outside the subnet or reserved.
    #[error("address {ip} is not a usable address of network {network} ({subnet})")]
    BadIp {
        /// Asked for.
        ip: Ipv4Addr,
        /// Network.
        network: String,
        /// Its subnet.
        subnet: String,
    },
    /// `--ip` already held.
    #[error("address {ip} is already in use on network {network}")]
    IpInUse {
        /// Asked for.
        ip: Ipv4Addr,
        /// Network.
        network: String,
    },
    /// `--add-host` value.
    #[error("invalid extra host {value:?}: use NAME:IPV4")]
    BadHost {
        /// As given.
        value: String,
    },
    /// A flag that does not go with the network mode.
    #[error("{what} cannot be used with network mode {mode}")]
    Conflict {
        /// The flag.
        what: &'static str,
        /// The mode.
        mode: String,
    },
    /// No such sandbox.
    #[error("sandbox {name} not found")]
    UnknownSandbox {
        /// As given.
        name: String,
    },
    /// Sandbox name taken.
    #[error("sandbox {name} already exists")]
    SandboxExists {
        /// As given.
        name: String,
    },
    /// Containers still in the sandbox.
    #[error("sandbox {name} is in use by running containers: {containers}")]
    SandboxInUse {
        /// Sandbox.
        name: String,
        /// Their ids.
        containers: String,
    },
    /// Exposed port text.
    #[error("invalid exposed port {value:?}")]
    BadExposed {
        /// As given.
        value: String,
    },
    /// File work.
    #[error("{what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A network as `network ls` / `inspect` show it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// bridge, host or null.
    pub driver: String,
    /// CIDR ("" for host/none).
    pub subnet: String,
    /// Gateway ("" for host/none).
    pub gateway: String,
    /// Host bridge interface.
    pub bridge: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
    /// Whether its bridge and rules exist on the host now.
    pub active: bool,
    /// Attached containers by id.
    pub containers: BTreeMap<String, EndpointInfo>,
}

/// A container on a network.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInfo {
    /// Container name.
    pub name: String,
    /// Address/prefix.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// MAC.
    pub mac_address: String,
}

#[derive(Debug, Clone)]
struct Network {
    name: String,
    subnet: Subnet,
    gateway: Ipv4Addr,
    bridge: String,
    up: bool,
}

impl Network {
    fn table(&self) -> String {
        format!("berth_{}", self.bridge)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredPort {
    host_ip: Ipv4Addr,
    host_port: u16,
    container_port: u16,
    proto: String,
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn root_key(root: &Path) -> Vec<u8> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    root.as_os_str().as_encoded_bytes().to_vec()
}

fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            what: "read /dev/urandom".into(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Now as RFC 3339 UTC (seconds).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn is_default(name: &str) -> bool {
    name.is_empty() || name == DEFAULT_NETWORK
}

fn load(conn: &rusqlite::Connection, name: &str) -> Result<Option<Network>, Error> {
    let row = conn
        .query_row(
            "SELECT name, subnet, gateway, bridge, up FROM networks WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((name, subnet, gateway, bridge, up)) = row else {
        return Ok(None);
    };
    Ok(Some(Network {
        name,
        subnet: subnet.parse()?,
        gateway: gateway.parse().map_err(|_| Error::Gateway {
            gateway: gateway.clone(),
            subnet: subnet.clone(),
        })?,
        bridge,
        up,
    }))
}

fn used_subnets(conn: &rusqlite::Connection) -> Result<Vec<(String, Subnet)>, Error> {
    let mut stmt = conn.prepare("SELECT name, subnet FROM networks")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(n, s)| s.parse().ok().map(|s| (n, s)))
        .collect())
}

fn check_overlap(conn: &rusqlite::Connection, subnet: Subnet) -> Result<(), Error> {
    for (name, other) in used_subnets(conn)? {
        if other.overlaps(subnet) {
            return Err(Error::Overlap {
                subnet: subnet.to_string(),
                other: format!("network {name} ({other})"),
            });
        }
    }
    for route in berth_net::ipam::host_routes() {
        if route.overlaps(subnet) {
            return Err(Error::Overlap {
                subnet: subnet.to_string(),
                other: format!("a route of this host ({route})"),
            });
        }
    }
    Ok(())
}

/// A free /24 in 10.`first`.0.0 .. 10.`first+64`.255.0, starting from `seed`.
fn pick_subnet(conn: &rusqlite::Connection, first: u8, seed: u64) -> Result<Subnet, Error> {
    let total = 64u64 * 256;
    for i in 0..total {
        let n = (seed + i) % total;
        let subnet = Subnet {
            addr: Ipv4Addr::new(10, first + (n / 256) as u8, (n % 256) as u8, 0),
            prefix: 24,
        };
        if check_overlap(conn, subnet).is_ok() {
            return Ok(subnet);
        }
    }
    Err(Error::NoSubnet {
        pool: if first == 64 {
            "10.64.0.0/10"
        } else {
            "10.128.0.0/10"
        },
    })
}

fn insert_network(
    conn: &rusqlite::Connection,
    name: &str,
    subnet: Subnet,
    gateway: Ipv4Addr,
    bridge: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO networks (name, id, driver, subnet, gateway, bridge, labels, created)
         VALUES (?1, ?2, 'bridge', ?3, ?4, ?5, ?6, ?7)",
        params![
            name,
            random_id()?,
            subnet.to_string(),
            gateway.to_string(),
            bridge,
            serde_json::to_string(labels).unwrap_or_else(|_| "{}".into()),
            now_rfc3339()
        ],
    )?;
    Ok(())
}

/// The default network's row, made on first use (database only; host objects come
/// with the first container).
fn default_network(conn: &rusqlite::Connection, root: &Path) -> Result<Network, Error> {
    if let Some(net) = load(conn, DEFAULT_NETWORK)? {
        return Ok(net);
    }
    let key = root_key(root);
    let h = fnv(&[&key]);
    let subnet = match std::env::var("BERTH_BRIDGE_SUBNET") {
        Ok(s) if !s.is_empty() => s.parse()?,
        _ => pick_subnet(conn, 64, h)?,
    };
    let bridge = format!("berth{:08x}", h as u32);
    insert_network(
        conn,
        DEFAULT_NETWORK,
        subnet,
        subnet.first_host(),
        &bridge,
        &BTreeMap::new(),
    )?;
    load(conn, DEFAULT_NETWORK)?.ok_or(Error::UnknownNetwork {
        name: DEFAULT_NETWORK.into(),
    })
}

fn resolve(conn: &rusqlite::Connection, root: &Path, name: &str) -> Result<Network, Error> {
    if is_default(name) {
        return default_network(conn, root);
    }
    load(conn, name)?.ok_or_else(|| Error::UnknownNetwork { name: name.into() })
}

/// Creates a user network (database only until a container attaches).
pub fn create_network(
    conn: &rusqlite::Connection,
    root: &Path,
    name: &str,
    subnet: Option<&str>,
    gateway: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<NetworkInfo, Error> {
    if matches!(name, "host" | "none" | DEFAULT_NETWORK) {
        return Err(Error::Predefined {
            name: name.into(),
            what: "created",
        });
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.is_empty()
        || !valid
        || !name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(Error::BadName {
            name: name.into(),
            reason: "use letters, digits, '_', '.' and '-', starting with a letter or digit",
        });
    }
    let tx = crate::store::immediate(conn)?;
    if load(conn, name)?.is_some() {
        return Err(Error::NetworkExists { name: name.into() });
    }
    let h = fnv(&[&root_key(root), name.as_bytes()]);
    let subnet: Subnet = match subnet {
        Some(s) => {
            let s: Subnet = s.parse()?;
            check_overlap(conn, s)?;
            s
        }
        None => pick_subnet(conn, 128, h)?,
    };
    let gateway = match gateway {
        Some(g) => {
            let ip: Ipv4Addr = g.parse().map_err(|_| Error::Gateway {
                gateway: g.into(),
                subnet: subnet.to_string(),
            })?;
            let edge = u32::from(ip) == u32::from(subnet.addr)
                || u32::from(ip) == u32::from(subnet.addr) | !(u32::MAX << (32 - subnet.prefix));
            if !subnet.contains(ip) || edge {
                return Err(Error::Gateway {
                    gateway: g.into(),
                    subnet: subnet.to_string(),
                });
            }
            ip
        }
        None => subnet.first_host(),
    };
    let mut bridge = format!("bbr-{:08x}", h as u32);
    // two names of one root hashing alike: probe on
    let mut salt = 0u64;
    while conn
        .query_row(
            "SELECT 1 FROM networks WHERE bridge = ?1",
            [&bridge],
            |_| Ok(()),
        )
        .optional()?
        .is_some()
    {
        salt += 1;
        bridge = format!(
            "bbr-{:08x}",
            fnv(&[&h.to_le_bytes(), &salt.to_le_bytes()]) as u32
        );
    }
    insert_network(conn, name, subnet, gateway, &bridge, labels)?;
    tx.commit()?;
    inspect_network(conn, root, name)
}

/// Every network of the root (the default one included), plus host and none.
pub fn list_networks(conn: &rusqlite::Connection, root: &Path) -> Result<Vec<NetworkInfo>, Error> {
    default_network(conn, root)?;
    let names: Vec<String> = conn
        .prepare("SELECT name FROM networks ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for name in names {
        out.push(inspect_network(conn, root, &name)?);
    }
    for (name, driver) in [("host", "host"), ("none", "null")] {
        out.push(NetworkInfo {
            name: name.into(),
            id: format!("{:016x}", fnv(&[name.as_bytes()])),
            driver: driver.into(),
            subnet: String::new(),
            gateway: String::new(),
            bridge: String::new(),
            labels: BTreeMap::new(),
            created: String::new(),
            active: true,
            containers: BTreeMap::new(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One network with its attached containers.
pub fn inspect_network(
    conn: &rusqlite::Connection,
    root: &Path,
    name: &str,
) -> Result<NetworkInfo, Error> {
    if is_default(name) {
        default_network(conn, root)?;
    }
    let row = conn
        .query_row(
            "SELECT name, id, driver, subnet, gateway, bridge, labels, created, up
             FROM networks WHERE name = ?1",
            [name],
            |r| {
                Ok(NetworkInfo {
                    name: r.get(0)?,
                    id: r.get(1)?,
                    driver: r.get(2)?,
                    subnet: r.get(3)?,
                    gateway: r.get(4)?,
                    bridge: r.get(5)?,
                    labels: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    created: r.get(7)?,
                    active: r.get(8)?,
                    containers: BTreeMap::new(),
                })
            },
        )
        .optional()?;
    let mut info = row.ok_or_else(|| Error::UnknownNetwork { name: name.into() })?;
    let prefix = info.subnet.split('/').nth(1).unwrap_or("32").to_owned();
    let mut stmt =
        conn.prepare("SELECT container_id, ip, mac, names FROM endpoints WHERE network = ?1")?;
    let rows = stmt.query_map([name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (id, ip, mac, names) = row?;
        let names: Vec<String> = serde_json::from_str(&names).unwrap_or_default();
        info.containers.insert(
            id,
            EndpointInfo {
                name: names.get(1).cloned().unwrap_or_default(),
                ipv4_address: format!("{ip}/{prefix}"),
                mac_address: mac,
            },
        );
    }
    Ok(info)
}

/// Removes a network and its host objects; refused while containers are attached.
pub fn remove_network(conn: &rusqlite::Connection, name: &str) -> Result<(), Error> {
    if matches!(name, "host" | "none") {
        return Err(Error::Predefined {
            name: name.into(),
            what: "removed",
        });
    }
    let tx = crate::store::immediate(conn)?;
    let net = load(conn, name)?.ok_or_else(|| Error::UnknownNetwork { name: name.into() })?;
    let attached: Vec<String> = conn
        .prepare("SELECT container_id FROM endpoints WHERE network = ?1 ORDER BY container_id")?
        .query_map([name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !attached.is_empty() {
        return Err(Error::InUse {
            name: name.into(),
            containers: attached.join(", "),
        });
    }
    down(&net)?;
    conn.execute("DELETE FROM networks WHERE name = ?1", [name])?;
    Ok(tx.commit()?)
}

/// Host objects of a network away: rules then bridge. Always attempted, whatever the
/// recorded state says (a crash may have left them).
fn down(net: &Network) -> Result<(), Error> {
    down_objects(&net.bridge)?;
    let _ = std::fs::remove_file(Path::new(REGISTRY).join(&net.bridge));
    Ok(())
}

fn down_objects(bridge: &str) -> Result<(), Error> {
    berth_net::nft::down(&format!("berth_{bridge}"))?;
    let mut nl = netlink()?;
    berth_net::remove_link(&mut nl, bridge)?;
    Ok(())
}

/// Host-wide registry of networks that are up: one file per bridge holding its root.
const REGISTRY: &str = "/run/berth-net";

fn register(root: &Path, net: &Network) -> Result<(), Error> {
    let path = Path::new(REGISTRY).join(&net.bridge);
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    std::fs::create_dir_all(REGISTRY)
        .and_then(|()| std::fs::write(&path, root.as_os_str().as_encoded_bytes()))
        .map_err(io_err(format!("write {}", path.display())))
}

/// Removes the host objects of networks whose root directory is gone. Best effort:
/// another process may be collecting the same ones.
fn collect_orphans() {
    let Ok(entries) = std::fs::read_dir(REGISTRY) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(root) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !root.is_empty() && !Path::new(&root).exists() {
            let bridge = entry.file_name().to_string_lossy().into_owned();
            if down_objects(&bridge).is_ok() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes every network of the root that no container uses (the default one too: it
/// is made again on next use). Returns the user networks removed.
///
/// Sandboxes no running container uses go first (see [`crate::sandbox`]): a
/// sandbox's endpoint would otherwise keep its network in use.
pub fn prune(conn: &rusqlite::Connection) -> Result<Vec<String>, Error> {
    for name in sandbox_names(conn)? {
        match remove_sandbox(conn, &name, false) {
            Ok(()) | Err(Error::SandboxInUse { .. }) | Err(Error::UnknownSandbox { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM networks WHERE name NOT IN (SELECT network FROM endpoints)
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut removed = Vec::new();
    for name in names {
        match remove_network(conn, &name) {
            Ok(()) => {
                if name != DEFAULT_NETWORK {
                    removed.push(name);
                }
            }
            Err(Error::InUse { .. }) => {} // a container joined meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

// ---- sandboxes: the rows and host side; crate::sandbox is the public face ----

/// A sandbox row.
#[derive(Debug, Clone)]
pub(crate) struct SandboxRow {
    pub id: String,
    pub name: String,
    pub request: Request,
    pub labels: BTreeMap<String, String>,
    pub created: String,
    pub dir: PathBuf,
    pub attachment: Option<Attachment>,
}

pub(crate) fn sandbox_row(
    conn: &rusqlite::Connection,
    name: &str,
) -> Result<Option<SandboxRow>, Error> {
    Ok(conn
        .query_row(
            "SELECT id, name, request, labels, created, dir, attachment FROM sandboxes
             WHERE name = ?1 OR id = ?1",
            [name],
            |r| {
                Ok(SandboxRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    request: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                    labels: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    created: r.get(4)?,
                    dir: PathBuf::from(r.get::<_, String>(5)?),
                    attachment: serde_json::from_str(&r.get::<_, String>(6)?).ok(),
                })
            },
        )
        .optional()?)
}

pub(crate) fn sandbox_names(conn: &rusqlite::Connection) -> Result<Vec<String>, Error> {
    Ok(conn
        .prepare("SELECT name FROM sandboxes ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Running (or starting, paused, restarting) containers that joined sandbox `name`.
pub(crate) fn sandbox_users(conn: &rusqlite::Connection, name: &str) -> Result<Vec<String>, Error> {
    Ok(conn
        .prepare(
            "SELECT id FROM containers
             WHERE json_extract(config, '$.network.network') = ?1
               AND state IN ('running', 'paused', 'starting', 'restarting')
             ORDER BY id",
        )?
        .query_map([format!("sandbox:{name}")], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Makes a sandbox: its row, then its namespace on the network (`req.network`: a
/// bridge network or `none`). On error nothing of it remains.
pub(crate) fn create_sandbox(
    conn: &rusqlite::Connection,
    root: &Path,
    state: &Path,
    req: &Request,
    labels: &BTreeMap<String, String>,
) -> Result<SandboxRow, Error> {
    let mode = req.mode();
    if !matches!(mode, NetworkMode::Bridge(_) | NetworkMode::None) {
        return Err(Error::Conflict {
            what: "a sandbox",
            mode: mode.to_string(),
        });
    }
    validate(conn, req)?;
    let id = random_id()?;
    let dir = net_dir(state, &id);
    let r = conn.execute(
        "INSERT INTO sandboxes (id, name, request, labels, created, dir)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            req.name,
            serde_json::to_string(req).unwrap_or_default(),
            serde_json::to_string(labels).unwrap_or_default(),
            now_rfc3339(),
            dir.to_string_lossy(),
        ],
    );
    match r {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(Error::SandboxExists {
                name: req.name.clone(),
            });
        }
        r => r?,
    };
    let made = (|| {
        let mut req = req.clone();
        req.embedded_dns = true;
        let mut att = setup(conn, root, state, &id, &req)?;
        if matches!(att.netns, Netns::New) {
            // nobody's namespace to be made by a runtime: pin one with only lo
            let pin = dir.join("netns");
            berth_net::netns::create(&pin)?;
            att.netns = Netns::Path(pin);
        }
        conn.execute(
            "UPDATE sandboxes SET attachment = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(&att).unwrap_or_default()],
        )?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = teardown(conn, root, state, &id);
        let _ = conn.execute("DELETE FROM sandboxes WHERE id = ?1", [&id]);
        return Err(e);
    }
    sandbox_row(conn, &id)?.ok_or(Error::UnknownSandbox {
        name: req.name.clone(),
    })
}

/// Removes a sandbox (refused while running containers use it, unless `force`).
pub(crate) fn remove_sandbox(
    conn: &rusqlite::Connection,
    name: &str,
    force: bool,
) -> Result<(), Error> {
    let row =
        sandbox_row(conn, name)?.ok_or_else(|| Error::UnknownSandbox { name: name.into() })?;
    let users = sandbox_users(conn, &row.name)?;
    if !force && !users.is_empty() {
        return Err(Error::SandboxInUse {
            name: row.name,
            containers: users.join(", "),
        });
    }
    // net_dir(state, id) is row.dir: teardown only needs its parent's parent
    let state = row
        .dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/nonexistent"));
    teardown(conn, Path::new(""), state, &row.id)?;
    conn.execute("DELETE FROM sandboxes WHERE id = ?1", [&row.id])?;
    Ok(())
}

fn netlink() -> Result<Netlink, Error> {
    Netlink::open().map_err(|source| {
        Error::Net(berth_net::Error::Netlink {
            what: "open netlink socket".into(),
            source,
        })
    })
}

fn net_dir(state: &Path, container_id: &str) -> PathBuf {
    state.join("net").join(container_id)
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// What to publish: `-p` values parsed, plus exposed ports for `-P`.
fn wanted_ports(req: &Request) -> Result<Vec<PortSpec>, Error> {
    let mut specs = req
        .ports
        .iter()
        .map(|p| PortSpec::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    if req.publish_all {
        for e in &req.exposed {
            let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
            let bad = || Error::BadExposed { value: e.clone() };
            let port: u16 = port.parse().map_err(|_| bad())?;
            let proto = Proto::parse(proto).ok_or_else(bad)?;
            if !specs
                .iter()
                .any(|s| s.container_port == port && s.proto == proto)
            {
                specs.push(PortSpec {
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: None,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    Ok(specs)
}

/// Host ports published by this root's containers: (ip, port, proto, container).
fn published(conn: &rusqlite::Connection) -> Result<Vec<(StoredPort, String)>, Error> {
    let mut stmt = conn.prepare("SELECT container_id, ports FROM endpoints")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, ports) = row?;
        let ports: Vec<StoredPort> = serde_json::from_str(&ports).unwrap_or_default();
        out.extend(ports.into_iter().map(|p| (p, id.clone())));
    }
    Ok(out)
}

fn clash(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// Checks explicit host ports against this root's records and the host's sockets.
fn check_ports(conn: &rusqlite::Connection, specs: &[PortSpec]) -> Result<(), Error> {
    let taken = published(conn)?;
    for (i, s) in specs.iter().enumerate() {
        let Some(port) = s.host_port else { continue };
        let dup = specs[..i].iter().any(|o| {
            o.host_port == Some(port) && o.proto == s.proto && clash(o.host_ip, s.host_ip)
        });
        if let Some((_, holder)) = taken.iter().find(|(p, _)| {
            p.host_port == port && p.proto == s.proto.as_str() && clash(p.host_ip, s.host_ip)
        }) {
            return Err(Error::PortTaken {
                ip: s.host_ip,
                port,
                proto: s.proto.as_str().into(),
                container: holder.clone(),
            });
        }
        if dup {
            return Err(berth_net::Error::PortInUse {
                ip: s.host_ip,
                port,
                proto: s.proto.as_str(),
            }
            .into());
        }
        berth_net::ports::check_free(s.host_ip, port, s.proto)?;
    }
    Ok(())
}

/// Checks a request before anything is created: `-p` values, the network's existence,
/// explicit host ports free, `--ip`, `--add-host`. Joined modes (`container:`,
/// `sandbox:`) refuse what belongs to the namespace's owner; their target is checked
/// by the engine.
pub fn validate(conn: &rusqlite::Connection, req: &Request) -> Result<(), Error> {
    let specs = wanted_ports(req)?;
    parse_extra_hosts(&req.extra_hosts)?;
    let mode = req.mode();
    match &mode {
        NetworkMode::Bridge(name) if !is_default(name) => {
            let net =
                load(conn, name)?.ok_or_else(|| Error::UnknownNetwork { name: name.clone() })?;
            if let Some(ip) = req.ip {
                check_ip(&net, ip)?;
            }
        }
        NetworkMode::Sandbox(name) if sandbox_row(conn, name)?.is_none() => {
            return Err(Error::UnknownSandbox { name: name.clone() });
        }
        _ => {}
    }
    if req.ip.is_some() && !matches!(mode, NetworkMode::Bridge(_)) {
        return Err(Error::Conflict {
            what: "--ip",
            mode: mode.to_string(),
        });
    }
    if mode.is_joined() {
        if !req.ports.is_empty() {
            return Err(Error::Conflict {
                what: "port publishing",
                mode: mode.to_string(),
            });
        }
        if !req.extra_hosts.is_empty() {
            return Err(Error::Conflict {
                what: "--add-host",
                mode: mode.to_string(),
            });
        }
        return Ok(());
    }
    if matches!(mode, NetworkMode::Host | NetworkMode::None) {
        return Ok(()); // published ports are discarded there, as docker does
    }
    check_ports(conn, &specs)
}

/// `NAME:IP` (or `NAME=IP`) values.
fn parse_extra_hosts(v: &[String]) -> Result<Vec<(String, Ipv4Addr)>, Error> {
    v.iter()
        .map(|h| {
            let bad = || Error::BadHost { value: h.clone() };
            let (name, ip) = h
                .split_once('=')
                .or_else(|| h.split_once(':'))
                .ok_or_else(bad)?;
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(bad());
            }
            Ok((name.to_string(), ip))
        })
        .collect()
}

/// A fixed address must be a host address of the subnet other than the gateway.
fn check_ip(net: &Network, ip: Ipv4Addr) -> Result<(), Error> {
    let s = net.subnet;
    let host_bits = !(u32::MAX.checked_shl(32 - u32::from(s.prefix)).unwrap_or(0));
    let edge = u32::from(ip) == u32::from(s.addr) || u32::from(ip) == u32::from(s.addr) | host_bits;
    if !s.contains(ip) || edge || ip == net.gateway {
        return Err(Error::BadIp {
            ip,
            network: net.name.clone(),
            subnet: s.to_string(),
        });
    }
    Ok(())
}

fn names_of(req: &Request, container_id: &str) -> Vec<String> {
    let hostname = if req.hostname.is_empty() {
        container_id.chars().take(12).collect()
    } else {
        req.hostname.clone()
    };
    let mut names = vec![hostname, req.name.clone()];
    names.extend(req.aliases.iter().cloned());
    names
}

/// Rewrites the hosts file of every member of `net` (user networks list all members;
/// the default bridge only each container itself), each with its own extra hosts.
fn refresh_hosts(conn: &rusqlite::Connection, net: &Network) -> Result<(), Error> {
    let mut stmt =
        conn.prepare("SELECT ip, hosts, names, extra_hosts FROM endpoints WHERE network = ?1")?;
    let members = stmt
        .query_map([&net.name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let entries: Vec<(Ipv4Addr, Vec<String>)> = members
        .iter()
        .map(|(ip, _, names, _)| {
            (
                ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                serde_json::from_str(names).unwrap_or_default(),
            )
        })
        .collect();
    for (i, (_, hosts, _, extra)) in members.iter().enumerate() {
        let mut mine: Vec<(Ipv4Addr, Vec<String>)> = if net.name == DEFAULT_NETWORK {
            entries[i..=i].to_vec()
        } else {
            entries.clone()
        };
        mine.retain(|(ip, _)| !ip.is_unspecified());
        let extra: Vec<(String, Ipv4Addr)> = serde_json::from_str(extra).unwrap_or_default();
        mine.extend(extra.into_iter().map(|(n, ip)| (ip, vec![n])));
        let path = Path::new(hosts);
        if path.parent().is_some_and(Path::exists) {
            berth_net::hosts::write_in_place(path, &berth_net::hosts::render(&mine))?;
        }
    }
    Ok(())
}

fn host_resolv() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// Prepares the container's networking; on error nothing of it remains.
pub fn setup(
    conn: &rusqlite::Connection,
    root: &Path,
    state: &Path,
    container_id: &str,
    req: &Request,
) -> Result<Attachment, Error> {
    let mode = req.mode();
    if mode.is_joined() {
        // the engine resolves joined modes (crate::sandbox::joined_attachment)
        return Err(Error::Conflict {
            what: "network setup",
            mode: mode.to_string(),
        });
    }
    let dir = net_dir(state, container_id);
    std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    let hosts = dir.join("hosts");
    let resolv = dir.join("resolv.conf");
    let extra = parse_extra_hosts(&req.extra_hosts)?;
    let extra_lines: String = extra.iter().map(|(n, ip)| format!("{ip}\t{n}\n")).collect();
    let res = match mode {
        NetworkMode::Host => (|| {
            let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            berth_net::hosts::write_in_place(&hosts, &format!("{host_hosts}{extra_lines}"))?;
            let r = if req.dns_search.is_empty() {
                host_resolv()
            } else {
                berth_net::hosts::resolv_conf_with(&host_resolv(), &req.dns_search)
            };
            berth_net::hosts::write_in_place(&resolv, &r)?;
            Ok(Attachment {
                netns: Netns::Host,
                ip: None,
                gateway: None,
                prefix: 0,
                mac: None,
                ports: Vec::new(),
                hosts: Some(hosts.clone()),
                resolv_conf: Some(resolv.clone()),
                dns: None,
            })
        })(),
        NetworkMode::None => (|| {
            let mut own = vec![(Ipv4Addr::LOCALHOST, names_of(req, container_id))];
            own.extend(extra.iter().map(|(n, ip)| (*ip, vec![n.clone()])));
            berth_net::hosts::write_in_place(&hosts, &berth_net::hosts::render(&own))?;
            berth_net::hosts::write_in_place(&resolv, "")?;
            Ok(Attachment {
                netns: Netns::New,
                ip: None,
                gateway: None,
                prefix: 0,
                mac: None,
                ports: Vec::new(),
                hosts: Some(hosts.clone()),
                resolv_conf: Some(resolv.clone()),
                dns: None,
            })
        })(),
        // Rootless (inside the user's own user namespace): no bridge, veth or nft
        // without host root; the default network is slirp4netns.
        NetworkMode::Bridge(name)
            if is_default(&name) && berth_runtime::rootless::in_user_namespace() =>
        {
            let mut own = vec![(Ipv4Addr::LOCALHOST, names_of(req, container_id))];
            own.extend(extra.iter().map(|(n, ip)| (*ip, vec![n.clone()])));
            wanted_ports(req).and_then(|specs| {
                crate::slirp::setup(&dir, &specs, &berth_net::hosts::render(&own))
            })
        }
        _ => setup_bridge(conn, root, state, container_id, req),
    };
    if res.is_err() {
        let _ = teardown(conn, root, state, container_id);
    }
    res
}

fn setup_bridge(
    conn: &rusqlite::Connection,
    root: &Path,
    state: &Path,
    container_id: &str,
    req: &Request,
) -> Result<Attachment, Error> {
    let specs = wanted_ports(req)?;
    let dir = net_dir(state, container_id);
    let hosts = dir.join("hosts");
    let resolv = dir.join("resolv.conf");
    let pin = dir.join("netns");
    let host_veth = format!(
        "vb{:012x}",
        fnv(&[&root_key(root), container_id.as_bytes()]) & 0xffff_ffff_ffff
    );
    let extra = parse_extra_hosts(&req.extra_hosts)?;
    let dns = match &req.mode() {
        NetworkMode::Bridge(name) if !is_default(name) => Some(name.clone()),
        _ if req.embedded_dns => Some(String::new()),
        _ => None,
    };
    berth_net::hosts::write_in_place(&hosts, "")?;
    let resolv_text = if dns.is_some() {
        berth_net::hosts::embedded_resolv_conf(&host_resolv(), &req.dns_search)
    } else {
        berth_net::hosts::resolv_conf_with(&host_resolv(), &req.dns_search)
    };
    berth_net::hosts::write_in_place(&resolv, &resolv_text)?;

    // allocation, under the database's write lock
    let tx = crate::store::immediate(conn)?;
    let net = resolve(conn, root, &req.network)?;
    let used: Vec<Ipv4Addr> = conn
        .prepare("SELECT ip FROM endpoints WHERE network = ?1")?
        .query_map([&net.name], |r| r.get::<_, String>(0))?
        .filter_map(|ip| ip.ok().and_then(|ip| ip.parse().ok()))
        .chain(std::iter::once(net.gateway))
        .collect();
    let ip = match req.ip {
        Some(ip) => {
            check_ip(&net, ip)?;
            if used.contains(&ip) {
                return Err(Error::IpInUse {
                    ip,
                    network: net.name.clone(),
                });
            }
            ip
        }
        None => net.subnet.next_free(&used)?,
    };
    check_ports(conn, &specs)?;
    let mut avoid: Vec<u16> = published(conn)?.iter().map(|(p, _)| p.host_port).collect();
    let mut ports = Vec::new();
    for s in &specs {
        let host_port = match s.host_port {
            Some(p) => p,
            None => {
                let p = berth_net::ports::pick_free(s.host_ip, s.proto, &avoid)?;
                avoid.push(p);
                p
            }
        };
        ports.push(StoredPort {
            host_ip: s.host_ip,
            host_port,
            container_port: s.container_port,
            proto: s.proto.as_str().into(),
        });
    }
    // one nft batch: the network's table when it comes up, and this container's ports
    // (published before the veth exists; a failed setup's teardown removes them)
    let mut script = String::new();
    if !net.up {
        collect_orphans();
        register(root, &net)?;
        let mut nl = netlink()?;
        berth_net::ensure_bridge(&mut nl, &net.bridge, net.gateway, net.subnet.prefix)?;
        script = berth_net::nft::up_script(&net.table(), &net.bridge, net.subnet);
    }
    script.push_str(&berth_net::nft::publish_script(
        &net.table(),
        container_id,
        &mappings(ip, &ports),
    ));
    if !script.is_empty() {
        berth_net::nft::apply(&script)?;
    }
    if !net.up {
        conn.execute("UPDATE networks SET up = 1 WHERE name = ?1", [&net.name])?;
    }
    let mac = berth_net::ipam::mac_string(berth_net::ipam::mac_for(ip));
    conn.execute(
        "INSERT INTO endpoints (container_id, network, ip, mac, host_veth, netns, hosts, names, ports,
                                extra_hosts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            container_id,
            net.name,
            ip.to_string(),
            mac,
            host_veth,
            pin.to_string_lossy(),
            hosts.to_string_lossy(),
            serde_json::to_string(&names_of(req, container_id)).unwrap_or_default(),
            serde_json::to_string(&ports).unwrap_or_default(),
            serde_json::to_string(&extra).unwrap_or_default(),
        ],
    )?;
    refresh_hosts(conn, &net)?;
    tx.commit()?;

    // kernel work outside the lock: our row keeps the network up meanwhile
    let mut nl = netlink()?;
    berth_net::attach(
        &mut nl,
        &berth_net::Endpoint {
            netns: &pin,
            bridge: &net.bridge,
            host_veth: &host_veth,
            ip,
            prefix: net.subnet.prefix,
            gateway: net.gateway,
        },
    )?;
    Ok(Attachment {
        netns: Netns::Path(pin),
        ip: Some(ip),
        gateway: Some(net.gateway),
        prefix: net.subnet.prefix,
        mac: Some(mac),
        ports: ports
            .iter()
            .map(|p| PublishedPort {
                host_ip: IpAddr::V4(p.host_ip),
                host_port: p.host_port,
                container_port: p.container_port,
                proto: p.proto.clone(),
            })
            .collect(),
        hosts: Some(hosts),
        resolv_conf: Some(resolv),
        dns,
    })
}

fn mappings(ip: Ipv4Addr, ports: &[StoredPort]) -> Vec<Mapping> {
    ports
        .iter()
        .map(|p| Mapping {
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_ip: ip,
            container_port: p.container_port,
            proto: Proto::parse(&p.proto).unwrap_or(Proto::Tcp),
        })
        .collect()
}

/// Removes everything of the container's networking; safe to call again, and for a
/// container that never had any.
pub fn teardown(
    conn: &rusqlite::Connection,
    _root: &Path,
    state: &Path,
    container_id: &str,
) -> Result<(), Error> {
    if crate::slirp::teardown(&net_dir(state, container_id)) {
        let dir = net_dir(state, container_id);
        return crate::trash::discard(state, &dir)
            .map_err(io_err(format!("remove {}", dir.display())));
    }
    let tx = crate::store::immediate(conn)?;
    let row = conn
        .query_row(
            "SELECT network, ip, host_veth, netns, ports FROM endpoints WHERE container_id = ?1",
            [container_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()?;
    if let Some((network, ip, _host_veth, pin, ports)) = row {
        let net = load(conn, &network)?;
        let ports: Vec<StoredPort> = serde_json::from_str(&ports).unwrap_or_default();
        // the veth pair goes with the namespace once the container's processes are
        // gone (see berth_net::detach)
        berth_net::detach(Path::new(&pin))?;
        conn.execute(
            "DELETE FROM endpoints WHERE container_id = ?1",
            [container_id],
        )?;
        if let Some(net) = net {
            if let Ok(ip) = ip.parse()
                && net.up
            {
                berth_net::nft::unpublish(&net.table(), &mappings(ip, &ports))?;
            }
            refresh_hosts(conn, &net)?;
        }
    } else {
        // setup may have failed before its row existed: still unpin a namespace
        berth_net::netns::remove(&net_dir(state, container_id).join("netns"))?;
    }
    tx.commit()?;
    // renamed away now, deleted later (see crate::trash)
    let dir = net_dir(state, container_id);
    crate::trash::discard(state, &dir).map_err(io_err(format!("remove {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        (dir, conn)
    }

    #[test]
    fn default_network_differs_per_root() {
        let (a, ca) = db();
        let (b, cb) = db();
        let na = default_network(&ca, a.path()).unwrap();
        let nb = default_network(&cb, b.path()).unwrap();
        assert_ne!(na.bridge, nb.bridge);
        assert!(na.bridge.len() <= 15);
        assert_eq!(na.gateway, na.subnet.first_host());
    }

    #[test]
    fn user_networks_refuse_clashes() {
        let (dir, conn) = db();
        let none = BTreeMap::new();
        let n = create_network(
            &conn,
            dir.path(),
            "front",
            Some("10.201.7.0/24"),
            None,
            &none,
        )
        .unwrap();
        assert_eq!(n.gateway, "10.201.7.1");
        let err = create_network(&conn, dir.path(), "front", None, None, &none).unwrap_err();
        assert_eq!(err.to_string(), "network front already exists");
        let err =
            create_network(&conn, dir.path(), "x", Some("10.201.0.0/16"), None, &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 10.201.0.0/16 overlaps network front (10.201.7.0/24)"
        );
        let err = create_network(
            &conn,
            dir.path(),
            "y",
            Some("10.202.0.0/24"),
            Some("10.3.0.1"),
            &none,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gateway 10.3.0.1 is not a host address of subnet 10.202.0.0/24"
        );
        let err = create_network(&conn, dir.path(), "host", None, None, &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host is a predefined network: it cannot be created"
        );
        let names: Vec<String> = list_networks(&conn, dir.path())
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["bridge", "front", "host", "none"]);
        remove_network(&conn, "front").unwrap_or_else(|e| {
            // without root the host side cannot be touched; the row logic is what we test
            assert!(
                e.to_string().contains("nft") || e.to_string().contains("netlink"),
                "{e}"
            );
        });
    }

    #[test]
    fn validate_names_the_bad_input() {
        let (_dir, conn) = db();
        let req = Request {
            network: "nosuch".into(),
            ..Default::default()
        };
        assert_eq!(
            validate(&conn, &req).unwrap_err().to_string(),
            "network nosuch not found"
        );
        let req = Request {
            ports: vec!["80:x".into()],
            ..Default::default()
        };
        assert_eq!(
            validate(&conn, &req).unwrap_err().to_string(),
            "invalid port mapping \"80:x\": invalid container port \"x\""
        );
    }

    #[test]
    fn rfc3339_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
