//! Published ports: parsing `-p` values and checking that a host port is free.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use crate::Error;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

impl Proto {
    /// "tcp" or "udp".
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// Parses "tcp" / "udp".
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// One `-p` value as parsed: `[ip:][hostPort]:containerPort[/proto]` or `containerPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Host address; 0.0.0.0 means every address of the host.
    pub host_ip: Ipv4Addr,
    /// Host port; `None` means any free port.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

fn port(value: &str, what: &str, text: &str) -> Result<u16, Error> {
    let bad = |reason: String| Error::BadPort {
        value: value.to_owned(),
        reason,
    };
    if text.contains('-') {
        return Err(bad(format!("{what} ranges are not supported")));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad(format!("invalid {what} {text:?}"))),
        Ok(p) => Ok(p),
    }
}

impl PortSpec {
    /// Parses one `-p` value as docker accepts it (IPv4 only, no ranges).
    pub fn parse(value: &str) -> Result<PortSpec, Error> {
        let bad = |reason: &str| Error::BadPort {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let (rest, proto) = match value.rsplit_once('/') {
            Some((rest, p)) => (
                rest,
                Proto::parse(p).ok_or_else(|| bad("protocol must be tcp or udp"))?,
            ),
            None => (value, Proto::Tcp),
        };
        if rest.starts_with('[') {
            return Err(bad("IPv6 host addresses are not supported"));
        }
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h), *c),
            _ => return Err(bad("expected [ip:][hostPort:]containerPort[/protocol]")),
        };
        let host_ip = match ip {
            None | Some("") => Ipv4Addr::UNSPECIFIED,
            Some(ip) => ip
                .parse()
                .map_err(|_| bad(&format!("invalid host address {ip:?}")))?,
        };
        let host_port = match host {
            None | Some("") => None,
            Some(h) => Some(port(value, "host port", h)?),
        };
        Ok(PortSpec {
            host_ip,
            host_port,
            container_port: port(value, "container port", ctr)?,
            proto,
        })
    }
}

/// Fails with [`Error::PortInUse`] if something on the host listens on `ip:port`.
/// (Tries to bind it, the way the kernel would judge a server starting there.)
pub fn check_free(ip: Ipv4Addr, port: u16, proto: Proto) -> Result<(), Error> {
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let res = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::PortInUse {
            ip,
            port,
            proto: proto.as_str(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(Error::BadPort {
            value: format!("{ip}:{port}"),
            reason: format!("{ip} is not an address of this host"),
        }),
        Err(e) => Err(Error::Io {
            what: format!("probe host port {ip}:{port}/{}", proto.as_str()),
            source: e,
        }),
    }
}

/// A host port that is free right now on `ip`, chosen by the kernel (its ephemeral
/// range), skipping `avoid` (ports already published by us).
pub fn pick_free(ip: Ipv4Addr, proto: Proto, avoid: &[u16]) -> Result<u16, Error> {
    for _ in 0..32 {
        let addr = SocketAddr::new(IpAddr::V4(ip), 0);
        let port = match proto {
            Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
            Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        }
        .map_err(|e| Error::Io {
            what: format!("pick a free host port on {ip}"),
            source: e,
        })?
        .port();
        if !avoid.contains(&port) {
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: format!("pick a free host port on {ip}"),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p = PortSpec::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port),
            (Ipv4Addr::UNSPECIFIED, Some(8080), 80)
        );
        let p = PortSpec::parse("127.0.0.1::80/udp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.proto),
            (Ipv4Addr::LOCALHOST, None, Proto::Udp)
        );
        let p = PortSpec::parse("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (None, 80));
        let p = PortSpec::parse("127.0.0.1:9000:90/tcp").unwrap();
        assert_eq!(p.host_port, Some(9000));
    }

    #[test]
    fn rejects_bad_values_with_reason() {
        for (v, why) in [
            ("abc", "invalid container port \"abc\""),
            ("8080:0", "invalid container port \"0\""),
            ("70000:80", "invalid host port \"70000\""),
            ("80/sctp", "protocol must be tcp or udp"),
            ("1.2.3:80:80", "invalid host address \"1.2.3\""),
            ("8000-8001:80", "host port ranges are not supported"),
            (
                "a:b:c:d",
                "expected [ip:][hostPort:]containerPort[/protocol]",
            ),
        ] {
            let err = PortSpec::parse(v).unwrap_err().to_string();
            assert_eq!(err, format!("invalid port mapping {v:?}: {why}"));
        }
    }

    #[test]
    fn bound_port_is_reported_in_use() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = check_free(Ipv4Addr::LOCALHOST, port, Proto::Tcp).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("host port 127.0.0.1:{port}/tcp is already in use")
        );
        drop(l);
        let free = pick_free(Ipv4Addr::LOCALHOST, Proto::Tcp, &[]).unwrap();
        check_free(Ipv4Addr::LOCALHOST, free, Proto::Tcp).unwrap();
    }
}
