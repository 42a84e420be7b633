//! /etc/hosts and /etc/resolv.conf for containers. Containers on a user network find
//! each other by name through their hosts files, which are rewritten in place (same
//! inode, so a bind mount of the file sees the change) whenever a member joins or
//! leaves. Verified with busybox's ping and wget (libc resolver); `nslookup` asks DNS
//! servers only and does not read /etc/hosts.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::Error;

/// The hosts file: localhost lines, then one line per (address, names).
pub fn render(entries: &[(Ipv4Addr, Vec<String>)]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (ip, names) in entries {
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .collect();
        if !names.is_empty() {
            s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
    }
    s
}

/// Writes `content` into `path` in place (truncate + write, no rename) so that a bind
/// mount of the file shows the new content.
pub fn write_in_place(path: &Path, content: &str) -> Result<(), Error> {
    let err = |source| Error::Io {
        what: format!("write {}", path.display()),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(content.as_bytes()).map_err(err)
}

/// A resolv.conf for a container on a bridge: the host's, without loopback
/// nameservers (unreachable from another namespace); Google's if none is left, as
/// docker does.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            match f.next().and_then(|a| a.parse::<std::net::IpAddr>().ok()) {
                Some(ip) if ip.is_loopback() => continue,
                _ => servers += 1,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Address of the embedded DNS server inside a container's namespace (docker's).
pub const EMBEDDED_DNS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// A resolv.conf naming the embedded DNS server: the host's search domains (or
/// `search` when given) and `ndots:0`, so names are asked as typed first.
pub fn embedded_resolv_conf(host: &str, search: &[String]) -> String {
    let mut out = format!("nameserver {EMBEDDED_DNS}\n");
    out.push_str(&search_line(host, search));
    out.push_str("options ndots:0\n");
    out
}

/// `host`'s resolv.conf for a bridge container ([`resolv_conf`]) with `search` as its
/// search line when given.
pub fn resolv_conf_with(host: &str, search: &[String]) -> String {
    let base = resolv_conf(host);
    if search.is_empty() {
        return base;
    }
    let mut out: String = base
        .lines()
        .filter(|l| !l.starts_with("search") && !l.starts_with("domain"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&search_line(host, search));
    out
}

fn search_line(host: &str, search: &[String]) -> String {
    if !search.is_empty() {
        return format!("search {}\n", search.join(" "));
    }
    host.lines()
        .rfind(|l| l.starts_with("search ") || l.starts_with("search\t"))
        .map(|l| format!("{}\n", l.trim_end()))
        .unwrap_or_default()
}

/// The nameservers of a resolv.conf, in order.
pub fn nameservers(text: &str) -> Vec<std::net::IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver"))
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_list_every_name() {
        let s = render(&[(
            Ipv4Addr::new(10, 0, 0, 2),
            vec!["web".into(), "".into(), "www".into()],
        )]);
        assert!(s.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(s.ends_with("10.0.0.2\tweb www\n"));
    }

    #[test]
    fn resolv_drops_loopback_servers() {
        let s = resolv_conf("search x\nnameserver 127.0.0.53\nnameserver 10.1.1.1\n");
        assert_eq!(s, "search x\nnameserver 10.1.1.1\n");
        assert!(resolv_conf("nameserver 127.0.0.1\n").contains("8.8.8.8"));
    }

    #[test]
    fn embedded_resolv_keeps_search_and_names_127_0_0_11() {
        let host = "search a.example b.example\nnameserver 10.1.1.1\n";
        assert_eq!(
            embedded_resolv_conf(host, &[]),
            "nameserver 127.0.0.11\nsearch a.example b.example\noptions ndots:0\n"
        );
        assert_eq!(
            embedded_resolv_conf(host, &["ns.svc.cluster.local".into()]),
            "nameserver 127.0.0.11\nsearch ns.svc.cluster.local\noptions ndots:0\n"
        );
        assert_eq!(
            resolv_conf_with(host, &["x.example".into()]),
            "nameserver 10.1.1.1\nsearch x.example\n"
        );
        assert_eq!(
            nameservers("nameserver 10.1.1.1\n# c\nnameserver ::1\nnameserver bad\n"),
            vec![
                "10.1.1.1".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }
}
