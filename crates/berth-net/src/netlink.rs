//! A minimal synchronous rtnetlink client: just the link, address and route requests
//! container networking needs. Spawning `ip` costs milliseconds per call; one netlink
//! round trip costs microseconds, and the socket can be bound to another network
//! namespace (it stays in the namespace it was created in).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const IFF_UP: u32 = 1;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

/// A NETLINK_ROUTE socket; requests are answered before the call returns.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// A message under construction: header placeholder, body, attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched at send
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, patched at send
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Self { buf }
    }

    /// struct ifinfomsg
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        ifinfo(&mut self.buf, index, flags, change);
        self
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        attr(&mut self.buf, ty, data);
        self
    }

    fn nest(&mut self, ty: u16) -> usize {
        nest_start(&mut self.buf, ty)
    }

    fn end(&mut self, at: usize) {
        nest_end(&mut self.buf, at);
    }
}

fn ifinfo(buf: &mut Vec<u8>, index: i32, flags: u32, change: u32) {
    buf.push(0); // family AF_UNSPEC
    buf.push(0);
    buf.extend_from_slice(&0u16.to_ne_bytes()); // type
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

fn align(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).expect("netlink attribute fits in 64 KiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    align(buf);
}

fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = u16::try_from(buf.len() - at).expect("netlink attribute fits in 64 KiB");
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero means "kernel picks the port id".
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, seq: 1 })
    }

    /// Sends `msg` and waits for the kernel's acknowledgement. Returns the payloads of
    /// any data messages of type `want` received before it.
    fn call(&mut self, mut msg: Msg, want: Option<u16>) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = msg.buf.len() as u32;
        msg.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        // SAFETY: the buffer is valid for its length; the socket is open.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.buf.as_ptr().cast(),
                msg.buf.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: buf is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut data = &buf[..n as usize];
            while data.len() >= 16 {
                let mlen = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(data[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
                if mlen < 16 || mlen > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &data[16..mlen];
                if mseq == seq {
                    match ty {
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
                            if code == 0 {
                                return Ok(replies);
                            }
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        NLMSG_DONE => return Ok(replies),
                        t if Some(t) == want => replies.push(payload.to_vec()),
                        _ => {}
                    }
                }
                let step = (mlen + 3) & !3;
                data = &data[step.min(data.len())..];
            }
        }
    }

    /// Index of the link called `name` in this socket's namespace.
    pub fn link_index(&mut self, name: &str) -> io::Result<i32> {
        let mut msg = Msg::new(RTM_GETLINK, 0);
        msg.ifinfo(0, 0, 0).attr(IFLA_IFNAME, &cstr(name));
        let replies = self.call(msg, Some(RTM_NEWLINK))?;
        let reply = replies
            .first()
            .filter(|r| r.len() >= 16)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        Ok(i32::from_ne_bytes(reply[4..8].try_into().unwrap()))
    }

    /// Creates a bridge; an existing link of that name is fine (concurrent callers).
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        msg.ifinfo(0, 0, 0).attr(IFLA_IFNAME, &cstr(name));
        let info = msg.nest(IFLA_LINKINFO);
        msg.attr(IFLA_INFO_KIND, b"bridge");
        msg.end(info);
        match self.call(msg, None) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Creates a veth pair: `host` (up, enslaved to `master` when given) here, and
    /// `peer` (with `peer_mac`) directly inside the namespace open as `netns`.
    pub fn add_veth(
        &mut self,
        host: &str,
        master: Option<i32>,
        peer: &str,
        peer_mac: Option<[u8; 6]>,
        netns: RawFd,
    ) -> io::Result<()> {
        let mut msg = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        msg.ifinfo(0, IFF_UP, IFF_UP).attr(IFLA_IFNAME, &cstr(host));
        if let Some(m) = master {
            msg.attr(IFLA_MASTER, &(m as u32).to_ne_bytes());
        }
        let info = msg.nest(IFLA_LINKINFO);
        msg.attr(IFLA_INFO_KIND, b"veth");
        let data = msg.nest(IFLA_INFO_DATA);
        let p = msg.nest(VETH_INFO_PEER);
        ifinfo(&mut msg.buf, 0, 0, 0);
        msg.attr(IFLA_IFNAME, &cstr(peer));
        if let Some(mac) = peer_mac {
            msg.attr(IFLA_ADDRESS, &mac);
        }
        msg.attr(IFLA_NET_NS_FD, &(netns as u32).to_ne_bytes());
        msg.end(p);
        msg.end(data);
        msg.end(info);
        self.call(msg, None).map(drop)
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: i32) -> io::Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, 0);
        msg.ifinfo(index, IFF_UP, IFF_UP);
        self.call(msg, None).map(drop)
    }

    /// Deletes the link `name`; a link already gone is fine (teardown is idempotent).
    pub fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut msg = Msg::new(RTM_DELLINK, 0);
        msg.ifinfo(0, 0, 0).attr(IFLA_IFNAME, &cstr(name));
        match self.call(msg, None) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds `addr/prefix` to link `index`; already present is fine.
    pub fn add_addr(&mut self, index: i32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut msg = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        msg.buf.extend_from_slice(&[AF_INET, prefix, 0, 0]);
        msg.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        msg.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        match self.call(msg, None) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds the default route via `gateway` out of link `index`.
    pub fn add_default_route(&mut self, index: i32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut msg = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        msg.buf.extend_from_slice(&[
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            0, // RT_SCOPE_UNIVERSE
            RTN_UNICAST,
        ]);
        msg.buf.extend_from_slice(&0u32.to_ne_bytes());
        msg.attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.call(msg, None).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_aligned() {
        let mut buf = Vec::new();
        let at = nest_start(&mut buf, IFLA_LINKINFO);
        attr(&mut buf, IFLA_INFO_KIND, b"veth");
        nest_end(&mut buf, at);
        assert_eq!(buf.len(), 12);
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), 12);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 8);
        attr(&mut buf, IFLA_IFNAME, &cstr("eth0"));
        assert!(buf.len().is_multiple_of(4));
    }
}
