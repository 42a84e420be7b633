//! `linux.netDevices`: move a host network link into the container's network
//! namespace (optionally renamed), with one rtnetlink RTM_SETLINK request.

use crate::error::{Error, Result, sys};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Where the link goes: the network namespace of a pid, or a namespace fd.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// IFLA_NET_NS_PID.
    Pid(i32),
    /// IFLA_NET_NS_FD.
    Fd(RawFd),
}

fn attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn bad(host: &str, why: String) -> Error {
    Error::Init(format!("linux.netDevices: {host}: {why}"))
}

/// Move host link `host` to `target`, named `name` there.
pub(crate) fn move_link(host: &str, target: Target, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains('/') || name.contains(' ') {
        return Err(bad(host, format!("invalid interface name {name:?}")));
    }
    let c = crate::sys::cstr(host)?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(bad(host, "no such network interface on the host".into()));
    }
    // SAFETY: socket takes integers and returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(sys("linux.netDevices: open rtnetlink socket"));
    }
    // SAFETY: the kernel just gave us this fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut m = vec![0u8; 16];
    // struct ifinfomsg: family, pad, type, index, flags, change.
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&(index as i32).to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]);
    match target {
        Target::Pid(p) => attr(&mut m, libc::IFLA_NET_NS_PID, &(p as u32).to_ne_bytes()),
        Target::Fd(f) => attr(&mut m, libc::IFLA_NET_NS_FD, &(f as u32).to_ne_bytes()),
    }
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    attr(&mut m, libc::IFLA_IFNAME, &n);
    // struct nlmsghdr: len, type, flags, seq, pid.
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: a zeroed sockaddr_nl addresses the kernel.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: m and sa are valid for their lengths.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            m.as_ptr().cast(),
            m.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(sys(format!("linux.netDevices: {host}: send RTM_SETLINK")));
    }
    let mut buf = [0u8; 4096];
    // SAFETY: buf is valid for its length.
    let r = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r < 20 {
        return Err(sys(format!(
            "linux.netDevices: {host}: read the kernel's answer"
        )));
    }
    let typ = u16::from_ne_bytes([buf[4], buf[5]]);
    if typ == libc::NLMSG_ERROR as u16 {
        let e = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if e != 0 {
            return Err(bad(
                host,
                format!(
                    "move into the container as {name:?}: {}",
                    crate::error::errno_text(&std::io::Error::from_raw_os_error(-e))
                ),
            ));
        }
    }
    Ok(())
}
