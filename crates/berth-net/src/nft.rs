//! Host rules of one network, in an nftables table of its own: masquerade for
//! outbound traffic, DNAT of published ports (from other hosts through prerouting,
//! from this host itself through output, loopback included), the loopback
//! masquerade that makes 127.0.0.1:PORT reach a container, and the guard that keeps
//! containers off the host's loopback.
//!
//! The guard: the bridge has `route_localnet` on (127.0.0.1:PORT and NodePorts are
//! routed to containers through it), which also makes the host accept packets for
//! 127.0.0.0/8 arriving from the bridge, so a container that routes them to its
//! gateway would reach services the host binds to loopback only (kube-proxy's
//! CVE-2020-8558), and packets from 127.0.0.0/8 (forged) would pass for the host's
//! own. Both are dropped on input from the bridge, except packets to 127.0.0.0/8 of
//! a connection this host DNATed (the replies of 127.0.0.1:PORT traffic; on input
//! their source is still the container's).
//!
//! Published ports are elements of maps keyed by (address, port) or port alone, each
//! element carrying the container id as its comment: publishing and unpublishing is
//! one `nft -f -` batch that touches nothing but that container's elements, and
//! dropping the network drops its whole table.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::Error;
use crate::ipam::Subnet;
use crate::ports::Proto;

/// One published port, resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Host address (0.0.0.0 = all of the host's addresses).
    pub host_ip: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
    /// Container address.
    pub container_ip: Ipv4Addr,
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

/// Runs one nft batch (atomic: all of it applies or none).
pub fn apply(script: &str) -> Result<(), Error> {
    run(Command::new("nft"), script)
}

/// Runs one nft batch inside the network namespace pinned at `netns`.
pub fn apply_in(netns: &std::path::Path, script: &str) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open(netns).map_err(|source| Error::Netns {
        path: netns.to_path_buf(),
        source,
    })?;
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new("nft");
    // SAFETY: setns is async-signal-safe; the descriptor stays open (ns outlives the
    // spawn).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run(cmd, script);
    drop(ns);
    r
}

fn run(mut cmd: Command, script: &str) -> Result<(), Error> {
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io {
            what: "run nft (is the nftables package installed?)".into(),
            source,
        })?;
    let write = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes());
    let out = child.wait_with_output().map_err(|source| Error::Io {
        what: "wait for nft".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Nft {
            script: script.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    write.map_err(|source| Error::Io {
        what: "write nft script".into(),
        source,
    })
}

/// The batch that (re)creates the table of a network on `bridge` with `subnet`.
pub fn up_script(table: &str, bridge: &str, subnet: Subnet) -> String {
    format!(
        "add table ip {table}
delete table ip {table}
table ip {table} {{
  map tcp_ip {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map tcp_any {{ type inet_service : ipv4_addr . inet_service; }}
  map udp_ip {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map udp_any {{ type inet_service : ipv4_addr . inet_service; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; fib daddr type local goto publish; }}
  chain output {{ type nat hook output priority -100; policy accept; fib daddr type local goto publish; }}
  chain publish {{
    dnat ip to ip daddr . tcp dport map @tcp_ip
    dnat ip to tcp dport map @tcp_any
    dnat ip to ip daddr . udp dport map @udp_ip
    dnat ip to udp dport map @udp_any
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != \"{bridge}\" masquerade
    oifname \"{bridge}\" ip saddr 127.0.0.0/8 masquerade
  }}
  chain loopback_guard {{ type filter hook input priority filter; policy accept;
    iifname \"{bridge}\" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop
    iifname \"{bridge}\" ip saddr 127.0.0.0/8 drop
  }}
}}
"
    )
}

/// Creates (or recreates, empty) the network's table.
pub fn up(table: &str, bridge: &str, subnet: Subnet) -> Result<(), Error> {
    apply(&up_script(table, bridge, subnet))
}

/// Deletes the network's table; a table already gone is fine.
pub fn down(table: &str) -> Result<(), Error> {
    apply(&format!("add table ip {table}\ndelete table ip {table}\n"))
}

fn element(m: &Mapping, comment: Option<&str>) -> (String, String) {
    let map = format!(
        "{}_{}",
        m.proto.as_str(),
        if m.host_ip.is_unspecified() {
            "any"
        } else {
            "ip"
        }
    );
    let key = if m.host_ip.is_unspecified() {
        m.host_port.to_string()
    } else {
        format!("{} . {}", m.host_ip, m.host_port)
    };
    let comment = comment
        .map(|c| format!(" comment \"{c}\""))
        .unwrap_or_default();
    (
        map,
        format!("{key}{comment} : {} . {}", m.container_ip, m.container_port),
    )
}

/// The batch that publishes `ports` of container `tag`.
pub fn publish_script(table: &str, tag: &str, ports: &[Mapping]) -> String {
    let mut s = String::new();
    for m in ports {
        let (map, elem) = element(m, Some(tag));
        s.push_str(&format!("add element ip {table} {map} {{ {elem} }}\n"));
    }
    s
}

/// Publishes `ports` of container `tag` (the comment on each element).
pub fn publish(table: &str, tag: &str, ports: &[Mapping]) -> Result<(), Error> {
    if ports.is_empty() {
        return Ok(());
    }
    apply(&publish_script(table, tag, ports))
}

/// The batch that removes `ports`; adding before deleting makes a missing element
/// (a teardown run twice) no error.
pub fn unpublish_script(table: &str, ports: &[Mapping]) -> String {
    let mut s = String::new();
    for m in ports {
        let (map, elem) = element(m, None);
        let key = elem.split(" : ").next().unwrap_or_default().to_owned();
        s.push_str(&format!("add element ip {table} {map} {{ {elem} }}\n"));
        s.push_str(&format!("delete element ip {table} {map} {{ {key} }}\n"));
    }
    s
}

/// Removes exactly `ports` from the network's maps.
pub fn unpublish(table: &str, ports: &[Mapping]) -> Result<(), Error> {
    if ports.is_empty() {
        return Ok(());
    }
    apply(&unpublish_script(table, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_guards_the_hosts_loopback_from_the_bridge() {
        let s = up_script("t", "br0", "10.9.0.0/24".parse().unwrap());
        assert!(
            s.contains("type filter hook input priority filter; policy accept;\n    iifname \"br0\" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop\n    iifname \"br0\" ip saddr 127.0.0.0/8 drop\n"),
            "{s}"
        );
    }

    #[test]
    fn scripts_name_the_container_and_key_by_address() {
        let m = Mapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 8080,
            container_ip: Ipv4Addr::new(10, 9, 0, 2),
            container_port: 80,
            proto: Proto::Tcp,
        };
        let any = Mapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            proto: Proto::Udp,
            ..m.clone()
        };
        assert_eq!(
            publish_script("t", "abc", &[m.clone(), any.clone()]),
            "add element ip t tcp_ip { 127.0.0.1 . 8080 comment \"abc\" : 10.9.0.2 . 80 }\n\
             add element ip t udp_any { 8080 comment \"abc\" : 10.9.0.2 . 80 }\n"
        );
        assert_eq!(
            unpublish_script("t", &[any]),
            "add element ip t udp_any { 8080 : 10.9.0.2 . 80 }\n\
             delete element ip t udp_any { 8080 }\n"
        );
    }
}
