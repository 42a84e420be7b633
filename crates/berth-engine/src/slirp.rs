//! Rootless networking: a pinned network namespace per container, connected to the
//! host through slirp4netns (user-mode TCP/IP, no host root), with published ports
//! added through its API socket. Used instead of the bridge when berth runs inside
//! the user's own user namespace.

use crate::network::{Attachment, Error, Netns, PublishedPort};
use berth_net::ports::PortSpec;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

/// The addresses slirp4netns gives with `--configure` (its documented defaults).
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const DNS: &str = "nameserver 10.0.2.3\n";

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Pin a namespace at `dir/netns`, start slirp4netns on it (detached from us: it
/// outlives `berth run -d`; its pid is kept in `dir/slirp4netns.pid`) and publish
/// `specs`. `hosts` is the hosts file content.
pub fn setup(dir: &Path, specs: &[PortSpec], hosts: &str) -> Result<Attachment, Error> {
    let pin = dir.join("netns");
    pin_netns(&pin).map_err(io_err(format!(
        "create network namespace {}",
        pin.display()
    )))?;
    // Socket paths are limited to 107 bytes: slirp4netns binds it relative to its
    // working directory (`dir`), we reach it through our fd of `dir`.
    let dir_fd = std::fs::File::open(dir).map_err(io_err(format!("open {}", dir.display())))?;
    let sock = std::path::PathBuf::from(format!(
        "/proc/self/fd/{}/slirp4netns.sock",
        std::os::fd::AsRawFd::as_raw_fd(&dir_fd)
    ));
    let log = std::fs::File::create(dir.join("slirp4netns.log"))
        .map_err(io_err(format!("create {}/slirp4netns.log", dir.display())))?;
    let log2 = log
        .try_clone()
        .map_err(io_err("clone slirp4netns log".into()))?;
    let child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("slirp4netns")
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .args(["--netns-type=path", "--api-socket", "slirp4netns.sock"])
            .arg(&pin)
            .current_dir(dir)
            .arg("tap0")
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(io_err(
                "start slirp4netns (rootless networking; Debian package slirp4netns)".into(),
            ))?
    };
    std::fs::write(dir.join("slirp4netns.pid"), child.id().to_string())
        .map_err(io_err(format!("write {}/slirp4netns.pid", dir.display())))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            return Err(Error::Io {
                what: format!(
                    "slirp4netns did not come up: {}",
                    std::fs::read_to_string(dir.join("slirp4netns.log")).unwrap_or_default()
                ),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ports = Vec::new();
    for s in specs {
        let host_port = match s.host_port {
            Some(p) => p,
            None => free_port()?,
        };
        let req = serde_json::json!({"execute": "add_hostfwd", "arguments": {
            "proto": s.proto.as_str(), "host_addr": s.host_ip.to_string(),
            "host_port": host_port, "guest_port": s.container_port}});
        let mut c = std::os::unix::net::UnixStream::connect(&sock)
            .map_err(io_err(format!("connect {}", sock.display())))?;
        c.write_all(req.to_string().as_bytes())
            .map_err(io_err("send add_hostfwd to slirp4netns".into()))?;
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        if reply.contains("\"error\"") {
            return Err(Error::Io {
                what: format!(
                    "publish {}:{host_port}->{}/{} through slirp4netns: {reply}",
                    s.host_ip,
                    s.container_port,
                    s.proto.as_str()
                ),
                source: std::io::Error::other("add_hostfwd refused"),
            });
        }
        ports.push(PublishedPort {
            host_ip: IpAddr::V4(s.host_ip),
            host_port,
            container_port: s.container_port,
            proto: s.proto.as_str().into(),
        });
    }
    let hosts_path = dir.join("hosts");
    let resolv = dir.join("resolv.conf");
    berth_net::hosts::write_in_place(&hosts_path, hosts).map_err(|e| Error::Io {
        what: format!("write {}", hosts_path.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    berth_net::hosts::write_in_place(&resolv, DNS).map_err(|e| Error::Io {
        what: format!("write {}", resolv.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(Attachment {
        netns: Netns::Path(pin),
        ip: Some(GUEST),
        gateway: Some(GATEWAY),
        prefix: 24,
        mac: None,
        ports,
        hosts: Some(hosts_path),
        resolv_conf: Some(resolv),
        dns: None,
    })
}

/// A new network namespace with lo up, pinned at `pin`. Made on a thread that ends
/// in it: inside the user's namespace a thread cannot go back to the host's network
/// namespace (owned by the host's user namespace), which
/// `berth_net::netns::create` does.
fn pin_netns(pin: &Path) -> std::io::Result<()> {
    std::fs::File::create(pin)?;
    let target = pin.to_path_buf();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        berth_net::Netlink::open()?.set_up(1) // lo is index 1 in a fresh namespace
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")));
    if made.is_err() {
        let _ = berth_net::netns::remove(pin);
    }
    made
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("0.0.0.0:0").map_err(io_err("pick a free port".into()))?;
    Ok(l.local_addr()
        .map_err(io_err("pick a free port".into()))?
        .port())
}

/// Stop slirp4netns and unpin the namespace; true if `dir` held a slirp setup.
pub fn teardown(dir: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(dir.join("slirp4netns.pid")) else {
        return false;
    };
    if let Ok(pid) = pid.trim().parse::<i32>() {
        // SAFETY: signalling the slirp4netns this container's setup started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = berth_net::netns::remove(&dir.join("netns"));
    true
}
