//! A small embedded DNS server for containers (docker's 127.0.0.11, without a
//! daemon): whoever holds a container's namespace (the engine's per-container
//! monitor) binds [`bind_in`] inside it and runs a [`Server`] with a lookup function.
//! Names the lookup knows are answered with A records; names it does not own are
//! forwarded to upstream servers (the host's resolv.conf) from the caller's own
//! namespace, with a short timeout: SERVFAIL when none answers, never a hang.
//!
//! Only what stub resolvers (glibc, musl, busybox nslookup) send is handled: one
//! question, class IN. AAAA and other types of a known name get an empty answer
//! (NODATA), so resolvers fall back to the A record.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Error;
use crate::hosts::EMBEDDED_DNS;

const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
/// NXDOMAIN.
pub const RCODE_NXDOMAIN: u8 = 3;
/// SERVFAIL.
pub const RCODE_SERVFAIL: u8 = 2;
const RCODE_FORMERR: u8 = 1;
const RCODE_NOTIMP: u8 = 4;
/// TTL of local answers: short, as container addresses change on restart.
const TTL: u32 = 10;
/// How long one upstream server gets before the next one is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Total time for a forwarded query.
const FORWARD_BUDGET: Duration = Duration::from_secs(3);

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lowercase name without the trailing dot.
    pub name: String,
    /// Query type (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// Query class (1 = IN).
    pub qclass: u16,
    /// Offset just past the question in the message.
    end: usize,
}

/// Parses a query's header and first question; None when it is not a query we can
/// read (too short, a response, compressed or over-long names).
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if qdcount == 0 {
        return None;
    }
    let mut pos = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None; // no compression in a question we accept
        }
        let label = msg.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
        if pos > 12 + 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]);
    Some(Question {
        name: labels.join("."),
        qtype,
        qclass,
        end: pos + 4,
    })
}

fn reply_header(query: &[u8], rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]); // id
    // QR, the query's opcode and RD; AA; RA
    out.push(0x80 | (query[2] & 0x79) | 0x04);
    out.push(0x80 | (rcode & 0x0f));
    out.extend_from_slice(&qd.to_be_bytes());
    out.extend_from_slice(&an.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// A reply to `query` (whose question is `q`) with `ips` as A records; an empty
/// answer for other types.
pub fn answer(query: &[u8], q: &Question, ips: &[Ipv4Addr]) -> Vec<u8> {
    let wanted = q.qclass == CLASS_IN && matches!(q.qtype, TYPE_A | TYPE_ANY);
    let ips = if wanted { ips } else { &[] };
    let mut out = reply_header(query, 0, 1, ips.len() as u16);
    out.extend_from_slice(&query[12..q.end]);
    for ip in ips {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// An error reply (`rcode`) repeating the question when there is one.
pub fn error_reply(query: &[u8], q: Option<&Question>, rcode: u8) -> Vec<u8> {
    if query.len() < 12 {
        return Vec::new();
    }
    match q {
        Some(q) => {
            let mut out = reply_header(query, rcode, 1, 0);
            out.extend_from_slice(&query[12..q.end]);
            out
        }
        None => reply_header(query, rcode, 0, 0),
    }
}

/// What the lookup function says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A name we own, with these addresses.
    Found(Vec<Ipv4Addr>),
    /// A name in a domain we own that does not exist (NXDOMAIN, not forwarded).
    NotFound,
    /// Not ours: ask the upstream servers.
    Forward,
}

/// The lookup function a [`Server`] calls per question (lowercase name, no trailing
/// dot).
pub type LookupFn = dyn Fn(&str) -> Lookup + Send + Sync;

/// Forwards `query` to each upstream in turn; the first reply with the query's id,
/// or None after the budget.
pub fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let start = Instant::now();
    for up in upstreams {
        let left = FORWARD_BUDGET.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        let bind: SocketAddr = match up {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let Ok(sock) = UdpSocket::bind(bind) else {
            continue;
        };
        if sock.connect(up).is_err() || sock.send(query).is_err() {
            continue;
        }
        let until = Instant::now() + UPSTREAM_TIMEOUT.min(left);
        let mut buf = vec![0u8; 4096];
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() || sock.set_read_timeout(Some(wait)).is_err() {
                break;
            }
            match sock.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == query[..2] => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // timeout or refused: next server
            }
        }
    }
    None
}

/// The upstream servers: `BERTH_DNS_UPSTREAM` (`IP[:PORT],...`) when set, else the
/// nameservers of the host's /etc/resolv.conf (loopback ones too: forwarding
/// happens in the host's namespace).
pub fn host_upstreams() -> Vec<SocketAddr> {
    if let Ok(v) = std::env::var("BERTH_DNS_UPSTREAM") {
        return v
            .split(',')
            .filter_map(|s| {
                let s = s.trim();
                s.parse::<SocketAddr>()
                    .ok()
                    .or_else(|| s.parse::<std::net::IpAddr>().ok().map(|ip| (ip, 53).into()))
            })
            .collect();
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    crate::hosts::nameservers(&text)
        .into_iter()
        .filter(|ip| *ip != std::net::IpAddr::V4(EMBEDDED_DNS))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The reply to one query message; None to stay silent (not a query at all).
pub fn respond(query: &[u8], lookup: &LookupFn, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (query[2] >> 3) & 0x0f;
    let Some(q) = parse_query(query) else {
        return Some(error_reply(query, None, RCODE_FORMERR));
    };
    if opcode != 0 {
        return Some(error_reply(query, Some(&q), RCODE_NOTIMP));
    }
    match lookup(&q.name) {
        Lookup::Found(ips) => Some(answer(query, &q, &ips)),
        Lookup::NotFound => Some(error_reply(query, Some(&q), RCODE_NXDOMAIN)),
        Lookup::Forward => Some(
            forward(query, upstreams)
                .unwrap_or_else(|| error_reply(query, Some(&q), RCODE_SERVFAIL)),
        ),
    }
}

/// Opens UDP and TCP sockets for the embedded server inside the namespace pinned at
/// `netns` (or any namespace file, e.g. /proc/PID/ns/net), and makes 127.0.0.11:53
/// reach them. As docker does, the sockets listen on 127.0.0.11 at a high port the
/// kernel picks, and an nftables table inside the namespace (`berth_dns`) DNATs
/// 127.0.0.11:53 to them: port 53 stays free on every address for the container's
/// own programs (a DNS server image binds 0.0.0.0:53).
///
/// Every holder of a shared namespace (containers of one sandbox) binds the ports
/// already in use there, with SO_REUSEPORT: the kernel spreads queries over the
/// holders and the others keep answering when one goes away.
pub fn bind_in(netns: &Path) -> Result<(UdpSocket, TcpListener), Error> {
    let (udp, tcp) = crate::netns::within(netns, || {
        let udp_port = listening_port("udp", false).unwrap_or(0);
        let tcp_port = listening_port("tcp", true).unwrap_or(0);
        let udp = bound(libc::SOCK_DGRAM, udp_port)?;
        let udp_port = local_port(&udp)?;
        // the port of the namespace's other holders, else the UDP one when it is free
        let tcp = if tcp_port != 0 {
            bound(libc::SOCK_STREAM, tcp_port)?
        } else {
            bound(libc::SOCK_STREAM, udp_port).or_else(|_| bound(libc::SOCK_STREAM, 0))?
        };
        // SAFETY: listen on our own socket.
        if unsafe { libc::listen(tcp.as_raw_fd(), 16) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((UdpSocket::from(udp), TcpListener::from(tcp)))
    })?;
    let ports = (
        udp.local_addr().map_err(io_error("udp address"))?.port(),
        tcp.local_addr().map_err(io_error("tcp address"))?.port(),
    );
    crate::nft::apply_in(netns, &redirect_script(ports.0, ports.1))?;
    Ok((udp, tcp))
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        what: format!("embedded dns {what}"),
        source,
    }
}

/// The nft batch, run inside a container's namespace, that sends 127.0.0.11:53 to
/// the embedded server's ports (replies get their source port back from conntrack).
pub fn redirect_script(udp_port: u16, tcp_port: u16) -> String {
    format!(
        "add table ip berth_dns
delete table ip berth_dns
table ip berth_dns {{
  chain output {{ type nat hook output priority -100; policy accept;
    ip daddr {EMBEDDED_DNS} udp dport 53 dnat to {EMBEDDED_DNS}:{udp_port}
    ip daddr {EMBEDDED_DNS} tcp dport 53 dnat to {EMBEDDED_DNS}:{tcp_port}
  }}
}}
"
    )
}

/// The port of a socket of this namespace bound to 127.0.0.11 (read from the calling
/// thread's /proc/thread-self/net/{udp,tcp}; TCP sockets only when listening).
fn listening_port(proto: &str, listening: bool) -> Option<u16> {
    let table = std::fs::read_to_string(format!("/proc/thread-self/net/{proto}")).ok()?;
    embedded_port_in(&table, listening)
}

/// The port of the first socket on 127.0.0.11 in a /proc/net/{udp,tcp} table (with
/// `listening`, only sockets in TCP state LISTEN).
fn embedded_port_in(table: &str, listening: bool) -> Option<u16> {
    // addresses are the u32 in host (little-endian) order, as hex
    let want = format!("{:08X}", u32::from(EMBEDDED_DNS).swap_bytes());
    table.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        let (addr, port) = local.split_once(':')?;
        (addr == want && (!listening || state == "0A"))
            .then(|| u16::from_str_radix(port, 16).ok())
            .flatten()
    })
}

fn local_port(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: zeroed sockaddr_in is a valid buffer for getsockname.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: addr and len describe a live buffer of that size.
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u16::from_be(addr.sin_port))
}

fn bound(kind: i32, port: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEPORT, libc::SO_REUSEADDR] {
        // SAFETY: setsockopt reads one int.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(EMBEDDED_DNS).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: addr is a valid sockaddr_in of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A running DNS server: one thread polling its sockets; forwarded queries and TCP
/// connections get a short-lived thread each, so a slow upstream blocks nobody.
/// Dropping it stops the server and closes the sockets.
#[derive(Debug)]
pub struct Server {
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves on `udp` and `tcp` with `lookup`, forwarding to `upstreams`.
    pub fn start(
        udp: UdpSocket,
        tcp: TcpListener,
        upstreams: Vec<SocketAddr>,
        lookup: Arc<LookupFn>,
    ) -> io::Result<Server> {
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || serve(udp, tcp, stop_r, Arc::new(upstreams), lookup))?;
        Ok(Server {
            stop: Some(stop_w),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take()); // the poll sees the pipe's hang-up
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    stop: OwnedFd,
    upstreams: Arc<Vec<SocketAddr>>,
    lookup: Arc<LookupFn>,
) {
    let udp = Arc::new(udp);
    let _ = tcp.set_nonblocking(true);
    let _ = udp.set_nonblocking(true);
    let mut buf = vec![0u8; 4096];
    loop {
        let mut fds = [
            pollfd(udp.as_raw_fd()),
            pollfd(tcp.as_raw_fd()),
            pollfd(stop.as_raw_fd()),
        ];
        // SAFETY: fds is a live array of three pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[2].revents != 0 {
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            while let Ok((len, from)) = udp.recv_from(&mut buf) {
                let query = buf[..len].to_vec();
                let local = parse_query(&query).map(|q| lookup(&q.name));
                if matches!(local, Some(Lookup::Forward)) {
                    let (udp, up, lk) = (udp.clone(), upstreams.clone(), lookup.clone());
                    let _ = std::thread::Builder::new()
                        .name("dns-fwd".into())
                        .spawn(move || {
                            if let Some(r) = respond(&query, &*lk, &up) {
                                let _ = udp.send_to(&r, from);
                            }
                        });
                } else if let Some(r) = respond(&query, &*lookup, &[]) {
                    let _ = udp.send_to(&r, from);
                }
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            while let Ok((conn, _)) = tcp.accept() {
                let (up, lk) = (upstreams.clone(), lookup.clone());
                let _ = std::thread::Builder::new()
                    .name("dns-tcp".into())
                    .spawn(move || serve_tcp(conn, &up, &*lk));
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Length-prefixed queries on one connection until EOF or a quiet 5 s.
fn serve_tcp(mut conn: TcpStream, upstreams: &[SocketAddr], lookup: &LookupFn) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        let Some(r) = respond(&query, lookup, upstreams) else {
            return;
        };
        let mut out = (r.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&r);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

/// Upstream address for tests and callers that want one server.
pub fn upstream(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn answers_a_and_nodata_for_aaaa() {
        let lookup = |n: &str| {
            if n == "web.default.svc.cluster.local" {
                Lookup::Found(vec![Ipv4Addr::new(198, 18, 0, 7)])
            } else if n.ends_with(".local") {
                Lookup::NotFound
            } else {
                Lookup::Forward
            }
        };
        let q = query("Web.default.svc.cluster.local", 1);
        let r = respond(&q, &lookup, &[]).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[198, 18, 0, 7]);
        let r = respond(&query("web.default.svc.cluster.local", 28), &lookup, &[]).unwrap();
        assert_eq!((r[3] & 0x0f, r[7]), (0, 0), "NODATA for AAAA");
        let r = respond(&query("nope.cluster.local", 1), &lookup, &[]).unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
        // no upstream: SERVFAIL at once, not a hang
        let r = respond(&query("example.org", 1), &lookup, &[]).unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_SERVFAIL);
        assert!(respond(&[0; 5], &lookup, &[]).is_none());
    }

    #[test]
    fn silent_upstream_gives_servfail_within_the_budget() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = silent.local_addr().unwrap();
        let start = Instant::now();
        let r = respond(&query("example.org", 1), &|_| Lookup::Forward, &[up]).unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_SERVFAIL);
        assert!(start.elapsed() < FORWARD_BUDGET + Duration::from_millis(500));
    }

    #[test]
    fn forwards_to_an_upstream_that_answers() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let q = parse_query(&buf[..n]).unwrap();
            let r = answer(&buf[..n], &q, &[Ipv4Addr::new(192, 0, 2, 1)]);
            server.send_to(&r, from).unwrap();
        });
        let r = respond(&query("example.org", 1), &|_| Lookup::Forward, &[up]).unwrap();
        t.join().unwrap();
        assert_eq!(&r[r.len() - 4..], &[192, 0, 2, 1]);
    }

    #[test]
    fn finds_the_embedded_server_port_in_proc_tables() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11 2 0 0
  2: 0B00007F:A7C3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12 2 0 0
";
        assert_eq!(embedded_port_in(udp, false), Some(0xA7C3));
        let tcp = "  sl  local_address rem_address   st
  0: 0B00007F:A7C3 0B00007F:1F90 01 00000000:00000000
  1: 0B00007F:B000 00000000:0000 0A 00000000:00000000
";
        // an established connection is not the server; the listener is
        assert_eq!(embedded_port_in(tcp, true), Some(0xB000));
        assert_eq!(embedded_port_in("header\n", true), None);
        let script = redirect_script(40000, 40001);
        assert!(
            script.contains("udp dport 53 dnat to 127.0.0.11:40000"),
            "{script}"
        );
        assert!(
            script.contains("tcp dport 53 dnat to 127.0.0.11:40001"),
            "{script}"
        );
    }
}
