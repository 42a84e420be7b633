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
}
