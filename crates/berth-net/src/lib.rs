//! Container networking for berth: bridges, veth pairs, IPAM, port publishing and
//! name resolution between containers on user networks.
//!
//! It sets up and tears down network namespaces' links and the host rules for them;
//! it does not create containers and keeps no records (the engine stores which
//! addresses and ports it handed out). Synchronous: links and addresses go through a
//! small rtnetlink client ([`netlink`]), host rules through one `nft -f -` batch per
//! operation ([`nft`]); no async runtime.

pub mod dns;
pub mod hosts;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ports;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use ipam::Subnet;
pub use netlink::Netlink;
pub use nft::Mapping;
pub use ports::{PortSpec, Proto};

/// Errors of container networking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done (names the link).
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Creating, joining or removing a pinned namespace failed.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The pin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// nft rejected a batch.
    #[error("nft failed: {stderr}")]
    Nft {
        /// The batch.
        script: String,
        /// nft's message.
        stderr: String,
    },
    /// A `-p` value is malformed.
    #[error("invalid port mapping {value:?}: {reason}")]
    BadPort {
        /// As typed.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The host port is taken.
    #[error("host port {ip}:{port}/{proto} is already in use")]
    PortInUse {
        /// Host address.
        ip: Ipv4Addr,
        /// Host port.
        port: u16,
        /// tcp or udp.
        proto: &'static str,
    },
    /// A subnet value is malformed.
    #[error("invalid subnet {value:?}: {reason}")]
    BadSubnet {
        /// As typed.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// No address left.
    #[error("subnet {subnet} has no free address")]
    SubnetFull {
        /// The subnet.
        subnet: String,
    },
    /// Other I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), Error> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| Error::Io {
        what: format!("set {path}"),
        source,
    })
}

/// Makes sure the bridge `name` exists, holds `gateway/prefix` and is up; turns on IPv4
/// forwarding and `route_localnet` on the bridge (so DNAT of 127.0.0.1 to a container
/// is routed, then masqueraded). Safe to call again or concurrently.
pub fn ensure_bridge(
    nl: &mut Netlink,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<i32, Error> {
    nl.add_bridge(name)
        .map_err(nl_err(format!("create bridge {name}")))?;
    let index = nl
        .link_index(name)
        .map_err(nl_err(format!("find bridge {name}")))?;
    nl.add_addr(index, gateway, prefix)
        .map_err(nl_err(format!("add {gateway}/{prefix} to bridge {name}")))?;
    nl.set_up(index)
        .map_err(nl_err(format!("set bridge {name} up")))?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
        "1",
    )?;
    Ok(index)
}

/// Deletes a link (bridge or veth); already gone is fine.
pub fn remove_link(nl: &mut Netlink, name: &str) -> Result<(), Error> {
    nl.del_link(name)
        .map_err(nl_err(format!("delete link {name}")))
}

/// What [`attach`] needs to wire one container to a bridge.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    /// Where to pin the container's new namespace.
    pub netns: &'a Path,
    /// Bridge to plug the host side into.
    pub bridge: &'a str,
    /// Host-side veth name (at most 15 bytes).
    pub host_veth: &'a str,
    /// Container address.
    pub ip: Ipv4Addr,
    /// Prefix length of the network.
    pub prefix: u8,
    /// Default gateway (the bridge's address).
    pub gateway: Ipv4Addr,
}

/// Creates a namespace pinned at `ep.netns` with lo up and `eth0` (a veth whose peer
/// is on the bridge) holding `ep.ip`, default route via the gateway. Returns eth0's
/// MAC. On failure nothing is left behind.
pub fn attach(nl: &mut Netlink, ep: &Endpoint<'_>) -> Result<[u8; 6], Error> {
    let mut ns = netns::create(ep.netns)?;
    let mac = ipam::mac_for(ep.ip);
    let res = (|| {
        let bridge = nl
            .link_index(ep.bridge)
            .map_err(nl_err(format!("find bridge {}", ep.bridge)))?;
        let fd = netns::open(ep.netns)?;
        let fd = fd.as_raw_fd();
        let mut made = nl.add_veth(ep.host_veth, Some(bridge), "eth0", Some(mac), fd);
        if made
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST))
        {
            // a previous pair of this name still waits for its namespace to go
            // (detach is lazy): remove it now and try once more
            remove_link(nl, ep.host_veth)?;
            made = nl.add_veth(ep.host_veth, Some(bridge), "eth0", Some(mac), fd);
        }
        made.map_err(nl_err(format!("create veth {}", ep.host_veth)))?;
        let eth0 = ns
            .link_index("eth0")
            .map_err(nl_err("find eth0 in the container namespace"))?;
        ns.add_addr(eth0, ep.ip, ep.prefix)
            .map_err(nl_err(format!("add {}/{} to eth0", ep.ip, ep.prefix)))?;
        ns.set_up(eth0).map_err(nl_err("set eth0 up"))?;
        ns.add_default_route(eth0, ep.gateway)
            .map_err(nl_err(format!("add default route via {}", ep.gateway)))?;
        Ok(mac)
    })();
    if res.is_err() {
        let _ = detach_now(nl, ep.netns, ep.host_veth);
    }
    res
}

/// Unpins a container's namespace; idempotent. Its veth pair goes with the namespace:
/// the kernel deletes both ends when the last process in it has exited, in the
/// background. Deleting the veth here instead would block for the kernel's device
/// unregistration (about 25 ms measured here) on every container removal.
pub fn detach(netns_pin: &Path) -> Result<(), Error> {
    netns::remove(netns_pin)
}

/// Removes a container's veth pair now, then unpins its namespace; idempotent.
pub fn detach_now(nl: &mut Netlink, netns_pin: &Path, host_veth: &str) -> Result<(), Error> {
    let link = remove_link(nl, host_veth);
    netns::remove(netns_pin)?;
    link
}
