//! Container networking end to end: berth-net's bridge, veth, namespaces and nft
//! rules on the real kernel; the engine's network seam (default bridge, user networks
//! with names, published ports); the `berth network` verbs. Every test fetches over
//! HTTP only from this host's own addresses or namespaces it made, with bounded
//! retries, and ends with a leak check.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_engine::network::{self as enet, Netns, Request};
use berth_net::{Endpoint, Mapping, Netlink, Proto, Subnet};
use integration_tests::{LeakCheck, TestRoots, busybox_rootfs, require_cmd, require_root};

/// A distinct /24 per test in this process (10.250.x.0/24 stays off the engine's pools).
fn test_subnet(n: u32) -> Subnet {
    let x = (std::process::id() * 7 + n * 31) % 256;
    Subnet {
        addr: Ipv4Addr::new(10, 250, x as u8, 0),
        prefix: 24,
    }
}

/// This host's first non-loopback IPv4 address.
fn host_address() -> Ipv4Addr {
    let out = integration_tests::run_ok(
        require_cmd("ip"),
        ["-4", "-o", "addr", "show", "scope", "global"],
    )
    .expect("ip addr");
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback() && !ip.octets().starts_with(&[10, 250]))
        .expect("this host has a non-loopback IPv4 address")
}

/// GET / from `addr`, retried for at most `wait`: the body, or the last error.
fn http_get(addr: SocketAddr, wait: Duration) -> Result<String, String> {
    integration_tests::http_get(addr, "/", wait)
}

/// busybox httpd serving `www` inside the namespace pinned at `netns`.
fn httpd_in(netns: &Path, www: &Path) -> Child {
    Command::new(require_cmd("nsenter"))
        .arg(format!("--net={}", netns.display()))
        .args([
            require_cmd("busybox").to_str().unwrap(),
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
        ])
        .arg(www)
        .stdin(Stdio::null())
        .spawn()
        .expect("start httpd in the namespace")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn web_root(dir: &Path, text: &str) -> PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), text).unwrap();
    www
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn wait_gone(link: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while link_exists(link) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn library_publishes_to_loopback_and_host_address_then_leaves_nothing() {
    require_root();
    let tmp = tempfile::Builder::new()
        .prefix("berth-nettest-")
        .tempdir()
        .unwrap();
    let n = std::process::id() % 0xffff;
    let bridge = format!("btlib{n:x}");
    let veth = format!("vtlib{n:x}");
    let tag = integration_tests::unique_id("netlib");
    let table = format!("berth_{bridge}");
    let leaks = LeakCheck::new(&[
        tmp.path().to_string_lossy().into_owned(),
        bridge.clone(),
        veth.clone(),
        tag.clone(),
    ]);
    let subnet = test_subnet(1);
    let gateway = subnet.first_host();
    let ip = subnet.next_free(&[gateway]).unwrap();
    let pin = tmp.path().join("netns");
    let www = web_root(tmp.path(), "hello from berth-net\n");

    let mut nl = Netlink::open().unwrap();
    berth_net::ensure_bridge(&mut nl, &bridge, gateway, subnet.prefix).unwrap();
    // again: idempotent (concurrent first containers both call it)
    berth_net::ensure_bridge(&mut nl, &bridge, gateway, subnet.prefix).unwrap();
    berth_net::nft::up(&table, &bridge, subnet).unwrap();
    let mac = berth_net::attach(
        &mut nl,
        &Endpoint {
            netns: &pin,
            bridge: &bridge,
            host_veth: &veth,
            ip,
            prefix: subnet.prefix,
            gateway,
        },
    )
    .unwrap();
    assert_eq!(mac[..2], [0x02, 0x42]);
    let httpd = httpd_in(&pin, &www);

    let lo_port = berth_net::ports::pick_free(Ipv4Addr::LOCALHOST, Proto::Tcp, &[]).unwrap();
    let any_port =
        berth_net::ports::pick_free(Ipv4Addr::UNSPECIFIED, Proto::Tcp, &[lo_port]).unwrap();
    let ports = [
        Mapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: lo_port,
            container_ip: ip,
            container_port: 80,
            proto: Proto::Tcp,
        },
        Mapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: any_port,
            container_ip: ip,
            container_port: 80,
            proto: Proto::Tcp,
        },
    ];
    berth_net::nft::publish(&table, &tag, &ports).unwrap();

    let wait = Duration::from_secs(5);
    let body = http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, lo_port)), wait).unwrap();
    assert!(body.contains("hello from berth-net"), "{body}");
    let host = host_address();
    let body = http_get(SocketAddr::from((host, any_port)), wait).unwrap();
    assert!(body.contains("hello from berth-net"), "{body}");
    let body = http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, any_port)), wait).unwrap();
    assert!(body.contains("hello from berth-net"), "{body}");
    // published on 127.0.0.1 only: not on the host's other address
    assert!(
        http_get(
            SocketAddr::from((host, lo_port)),
            Duration::from_millis(300)
        )
        .is_err()
    );

    let ruleset = integration_tests::run_ok("nft", ["list", "table", "ip", &table]).unwrap();
    assert!(
        ruleset.contains(&format!(
            "ip saddr {subnet} oifname != \"{bridge}\" masquerade"
        )),
        "outbound NAT rule missing:\n{ruleset}"
    );
    assert!(ruleset.contains(&format!("comment \"{tag}\"")), "{ruleset}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );

    stop(httpd);
    berth_net::nft::unpublish(&table, &ports).unwrap();
    berth_net::nft::unpublish(&table, &ports).unwrap(); // twice: idempotent
    berth_net::detach(&pin).unwrap();
    berth_net::detach(&pin).unwrap(); // twice: idempotent
    // the pair goes with the namespace, in the kernel's background cleanup
    assert!(
        wait_gone(&veth, Duration::from_secs(3)),
        "veth {veth} outlived its namespace"
    );
    berth_net::nft::down(&table).unwrap();
    berth_net::remove_link(&mut nl, &bridge).unwrap();
    assert!(!link_exists(&veth) && !link_exists(&bridge) && !pin.exists());
    leaks.assert_clean();
}

fn request(network: &str, name: &str, ports: &[&str]) -> Request {
    Request {
        network: network.into(),
        ports: ports.iter().map(|p| p.to_string()).collect(),
        name: name.into(),
        hostname: name.into(),
        ..Default::default()
    }
}

fn pin_of(att: &enet::Attachment) -> PathBuf {
    match &att.netns {
        Netns::Path(p) => p.clone(),
        other => panic!("expected a namespace path, got {other:?}"),
    }
}

#[test]
fn engine_default_bridge_publishes_and_stays_until_removed() {
    require_root();
    // a root that disappears with its bridge still up (a test's temporary root)
    let gone = TestRoots::new().unwrap();
    let gone_id = integration_tests::unique_id("netgone");
    let gone_bridge = {
        let conn = berth_engine::store::open(&gone.root()).unwrap();
        let req = request("", "old", &[]);
        enet::setup(&conn, &gone.root(), &gone.state(), &gone_id, &req).unwrap();
        enet::teardown(&conn, &gone.root(), &gone.state(), &gone_id).unwrap();
        enet::inspect_network(&conn, &gone.root(), "bridge")
            .unwrap()
            .bridge
    };
    assert!(
        link_exists(&gone_bridge),
        "the default bridge stays up while its root exists"
    );
    drop(gone);

    let roots = TestRoots::new().unwrap();
    let id = integration_tests::unique_id("netdef");
    let mut leaks = LeakCheck::new(&[roots.path().to_string_lossy().into_owned(), id.clone()]);
    let conn = berth_engine::store::open(&roots.root()).unwrap();
    let bridge = enet::inspect_network(&conn, &roots.root(), "bridge")
        .unwrap()
        .bridge;
    leaks.add_marker(bridge.clone());
    let req = request("", "web", &["127.0.0.1::80"]);
    enet::validate(&conn, &req).unwrap();
    let att = enet::setup(&conn, &roots.root(), &roots.state(), &id, &req).unwrap();
    assert!(link_exists(&bridge));
    // bringing a network up collected the bridge of the root that is gone
    assert!(
        !link_exists(&gone_bridge),
        "orphaned bridge {gone_bridge} not collected"
    );
    let ip = att.ip.expect("an address on the bridge");
    assert_eq!(att.ports.len(), 1);
    let port = att.ports[0].host_port;
    let hosts = std::fs::read_to_string(att.hosts.as_ref().unwrap()).unwrap();
    assert!(hosts.contains(&format!("{ip}\tweb web")), "{hosts}");
    let info = enet::inspect_network(&conn, &roots.root(), "bridge").unwrap();
    assert_eq!(info.containers[&id].ipv4_address, format!("{ip}/24"));

    let www = web_root(roots.path(), "default bridge\n");
    let httpd = httpd_in(&pin_of(&att), &www);
    let body = http_get(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(body.contains("default bridge"), "{body}");
    stop(httpd);

    enet::teardown(&conn, &roots.root(), &roots.state(), &id).unwrap();
    enet::teardown(&conn, &roots.root(), &roots.state(), &id).unwrap();
    let rules = integration_tests::run_ok("nft", ["list", "ruleset"]).unwrap();
    assert!(!rules.contains(&id), "port element of {id} left:\n{rules}");
    assert!(
        link_exists(&bridge),
        "the default bridge stays, like docker0"
    );
    assert_eq!(enet::prune(&conn).unwrap(), Vec::<String>::new());
    assert!(
        !link_exists(&bridge),
        "network prune leaves the default bridge"
    );
    leaks.assert_clean();
}

/// Runs busybox `args` in a chroot of `rootfs`, in the namespace at `netns`, with
/// `hosts` bind-mounted at /etc/hosts (in a private mount namespace), as the engine
/// would set a container up.
fn in_container(rootfs: &Path, netns: &Path, hosts: &Path, args: &str) -> std::process::Output {
    let script = format!(
        "mount --bind {} {}/etc/hosts && exec nsenter --net={} chroot {} /bin/busybox {args}",
        hosts.display(),
        rootfs.display(),
        netns.display(),
        rootfs.display()
    );
    Command::new(require_cmd("unshare"))
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("run in container-like namespaces")
}

#[test]
fn user_network_members_resolve_each_other_by_name() {
    require_root();
    let roots = TestRoots::new().unwrap();
    let web = integration_tests::unique_id("netweb");
    let cli = integration_tests::unique_id("netcli");
    let net = format!("front{}", std::process::id());
    let leaks = LeakCheck::new(&[
        roots.path().to_string_lossy().into_owned(),
        web.clone(),
        cli.clone(),
    ]);
    let conn = berth_engine::store::open(&roots.root()).unwrap();
    let subnet = test_subnet(2).to_string();
    let info = enet::create_network(
        &conn,
        &roots.root(),
        &net,
        Some(&subnet),
        None,
        &BTreeMap::new(),
    )
    .unwrap();
    let mut req = request(&net, "web", &[]);
    req.aliases = vec!["www".into()];
    let a = enet::setup(&conn, &roots.root(), &roots.state(), &web, &req).unwrap();
    let b = enet::setup(
        &conn,
        &roots.root(),
        &roots.state(),
        &cli,
        &request(&net, "client", &[]),
    )
    .unwrap();
    let (a_ip, b_ip) = (a.ip.unwrap(), b.ip.unwrap());
    for att in [&a, &b] {
        let hosts = std::fs::read_to_string(att.hosts.as_ref().unwrap()).unwrap();
        assert!(hosts.contains(&format!("{a_ip}\tweb web www")), "{hosts}");
        assert!(hosts.contains(&format!("{b_ip}\tclient client")), "{hosts}");
    }
    let rm = enet::remove_network(&conn, &net).unwrap_err().to_string();
    assert!(
        rm.starts_with(&format!("network {net} has attached containers: ")),
        "{rm}"
    );

    // real resolution through the hosts file by busybox (the libc resolver)
    let rootfs = roots.path().join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    std::fs::write(rootfs.join("etc/hosts"), "").unwrap();
    let www = web_root(roots.path(), "served to peers\n");
    let httpd = httpd_in(&pin_of(&a), &www);
    let b_hosts = b.hosts.clone().unwrap();
    let ping = in_container(&rootfs, &pin_of(&b), &b_hosts, "ping -c 1 -W 2 web");
    assert!(
        ping.status.success() && String::from_utf8_lossy(&ping.stdout).contains(&a_ip.to_string()),
        "ping web: {ping:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let fetched = loop {
        let out = in_container(&rootfs, &pin_of(&b), &b_hosts, "wget -q -O - http://www/");
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout),
        "served to peers\n",
        "{fetched:?}"
    );
    stop(httpd);

    // a member leaving disappears from the others' hosts files (same file, rewritten)
    enet::teardown(&conn, &roots.root(), &roots.state(), &web).unwrap();
    let hosts = std::fs::read_to_string(&b_hosts).unwrap();
    assert!(
        !hosts.contains("web") && hosts.contains("client"),
        "{hosts}"
    );
    enet::teardown(&conn, &roots.root(), &roots.state(), &cli).unwrap();
    // a user network's bridge stays until the network is removed
    assert!(link_exists(&info.bridge));
    enet::remove_network(&conn, &net).unwrap();
    assert!(!link_exists(&info.bridge));
    let err = enet::inspect_network(&conn, &roots.root(), &net).unwrap_err();
    assert_eq!(err.to_string(), format!("network {net} not found"));
    leaks.assert_clean();
}

#[test]
fn bad_ports_unknown_networks_and_taken_ports_fail_before_anything_exists() {
    require_root();
    let roots = TestRoots::new().unwrap();
    let id = integration_tests::unique_id("netbad");
    let other = integration_tests::unique_id("netbad2");
    let leaks = LeakCheck::new(&[
        roots.path().to_string_lossy().into_owned(),
        id.clone(),
        other.clone(),
    ]);
    let conn = berth_engine::store::open(&roots.root()).unwrap();
    let err = |req: &Request| enet::validate(&conn, req).unwrap_err().to_string();

    assert_eq!(
        err(&request("", "x", &["8080:http"])),
        "invalid port mapping \"8080:http\": invalid container port \"http\""
    );
    assert_eq!(
        err(&request("", "x", &["127.0.0.1:70000:80"])),
        "invalid port mapping \"127.0.0.1:70000:80\": invalid host port \"70000\""
    );
    assert_eq!(
        err(&request("nosuchnet", "x", &[])),
        "network nosuchnet not found"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap().port();
    let spec = format!("127.0.0.1:{busy}:80");
    assert_eq!(
        err(&request("", "x", &[&spec])),
        format!("host port 127.0.0.1:{busy}/tcp is already in use")
    );
    // setup refuses it too, and leaves nothing behind
    let res = enet::setup(
        &conn,
        &roots.root(),
        &roots.state(),
        &id,
        &request("", "x", &[&spec]),
    );
    assert!(res.is_err());
    assert!(!roots.state().join("net").join(&id).exists());
    drop(listener);

    // a port published by another container of this root (nft holds no socket)
    let free = berth_net::ports::pick_free(Ipv4Addr::LOCALHOST, Proto::Tcp, &[]).unwrap();
    let spec = format!("127.0.0.1:{free}:80");
    enet::setup(
        &conn,
        &roots.root(),
        &roots.state(),
        &id,
        &request("", "a", &[&spec]),
    )
    .unwrap();
    assert_eq!(
        err(&request("", "b", &[&spec])),
        format!("host port 127.0.0.1:{free}/tcp is already published by container {id}")
    );
    let any = format!("{free}:80");
    assert!(
        enet::setup(
            &conn,
            &roots.root(),
            &roots.state(),
            &other,
            &request("", "b", &[&any])
        )
        .is_err()
    );
    enet::teardown(&conn, &roots.root(), &roots.state(), &id).unwrap();
    enet::remove_network(&conn, "bridge").unwrap();
    leaks.assert_clean();
}

#[test]
fn none_and_host_modes_make_no_links() {
    require_root();
    let roots = TestRoots::new().unwrap();
    let id = integration_tests::unique_id("netmode");
    let leaks = LeakCheck::new(&[roots.path().to_string_lossy().into_owned(), id.clone()]);
    let conn = berth_engine::store::open(&roots.root()).unwrap();
    let none = enet::setup(
        &conn,
        &roots.root(),
        &roots.state(),
        &id,
        &request("none", "n", &["80"]),
    )
    .unwrap();
    assert!(matches!(none.netns, Netns::New) && none.ip.is_none() && none.ports.is_empty());
    enet::teardown(&conn, &roots.root(), &roots.state(), &id).unwrap();
    let host = enet::setup(
        &conn,
        &roots.root(),
        &roots.state(),
        &id,
        &request("host", "h", &[]),
    )
    .unwrap();
    assert!(matches!(host.netns, Netns::Host));
    let resolv = std::fs::read_to_string(host.resolv_conf.unwrap()).unwrap();
    assert_eq!(resolv, std::fs::read_to_string("/etc/resolv.conf").unwrap());
    enet::teardown(&conn, &roots.root(), &roots.state(), &id).unwrap();
    assert!(!roots.state().join("net").join(&id).exists());
    leaks.assert_clean();
}

#[test]
fn cli_network_create_ls_inspect_rm() {
    require_root();
    let roots = TestRoots::new().unwrap();
    let name = format!("clinet{}", std::process::id());
    let leaks = LeakCheck::new(&[roots.path().to_string_lossy().into_owned(), name.clone()]);
    let subnet = test_subnet(3).to_string();
    let out = roots.output(&[
        "network", "create", "--subnet", &subnet, "--label", "team=net", &name,
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 64);

    let out = roots.output(&["network", "create", &name]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("berth: network {name} already exists")
    );

    let out = roots.output(&["network", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NETWORK ID"), "{text}");
    let line = text.lines().find(|l| l.contains(&name)).expect("listed");
    assert!(line.starts_with(&id[..12]) && line.contains("bridge") && line.contains(&subnet));
    for predefined in ["bridge", "host", "none"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(predefined)),
            "{text}"
        );
    }
    let out = roots.output(&["network", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == &id[..12])
    );

    let out = roots.output(&["network", "inspect", &name]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["Name"], name.as_str());
    assert_eq!(json[0]["Id"], id.as_str());
    assert_eq!(json[0]["Subnet"], subnet.as_str());
    assert_eq!(json[0]["Labels"]["team"], "net");

    let out = roots.output(&["network", "rm", &name, "nosuchnet"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "berth: network nosuchnet not found"
    );
    let out = roots.output(&["network", "inspect", &name]);
    assert_eq!(out.status.code(), Some(1));
    let out = roots.output(&["network", "rm", "host"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "berth: host is a predefined network: it cannot be removed"
    );
    leaks.assert_clean();
}

// ---- end to end through `berth run` ----

/// Private roots holding the busybox fixture image as `busybox:latest`.
fn engine_roots() -> (TestRoots, LeakCheck) {
    require_root();
    require_cmd("busybox");
    let roots = TestRoots::new().unwrap();
    let store = berth_image::Store::open(&roots.root().join("images")).unwrap();
    berth_image::fixtures::busybox_image(&store, "busybox:latest").unwrap();
    let leaks = LeakCheck::new(&[roots.path().to_string_lossy().into_owned()]);
    (roots, leaks)
}

#[test]
fn run_published_port_answers_over_http_from_the_host() {
    let (roots, leaks) = engine_roots();
    let port = berth_net::ports::pick_free(Ipv4Addr::LOCALHOST, Proto::Tcp, &[]).unwrap();
    let conn = berth_engine::store::open(&roots.root()).unwrap();
    let bridge = enet::inspect_network(&conn, &roots.root(), "bridge")
        .unwrap()
        .bridge;
    let publish = format!("127.0.0.1:{port}:80");
    roots.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, "busybox", "httpd", "-f", "-p", "80", "-h",
        "/etc",
    ]);
    let body = integration_tests::http_get(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "/passwd",
        Duration::from_secs(10),
    );
    roots.ok(&["rm", "-f", "web"]);
    assert!(link_exists(&bridge));
    roots.ok(&["network", "rm", "bridge"]);
    let body = body.unwrap();
    assert!(
        body.starts_with("HTTP/1.1 200") && body.contains("root:x:0:0"),
        "{body}"
    );
    assert!(
        !link_exists(&bridge),
        "default bridge left after its last container"
    );
    leaks.assert_clean();
}

#[test]
fn run_on_a_user_network_resolves_containers_by_name() {
    let (roots, leaks) = engine_roots();
    let net = format!("e2enet{}", std::process::id());
    roots.ok(&["network", "create", &net]);
    roots.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        &net,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fetched = loop {
        let out = roots
            .berth()
            .args(["run", "--rm", "--network", &net, "busybox"])
            .args(["wget", "-q", "-O", "-", "http://srv/passwd"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ping = roots
        .berth()
        .args([
            "run",
            "--rm",
            "--network",
            &net,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "srv",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // the default bridge does not resolve names (as docker)
    let isolated = roots
        .berth()
        .args([
            "run", "--rm", "busybox", "ping", "-c", "1", "-W", "1", "srv",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let busy = roots
        .berth()
        .args(["network", "rm", &net])
        .output()
        .unwrap();
    roots.ok(&["rm", "-f", "srv"]);
    roots.ok(&["network", "rm", &net, "bridge"]);
    assert!(
        String::from_utf8_lossy(&fetched.stdout).contains("root:x:0:0"),
        "wget http://srv/: {fetched:?}"
    );
    assert!(ping.status.success(), "ping srv: {ping:?}");
    assert!(
        !isolated.status.success(),
        "name resolved on the default bridge"
    );
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("has attached containers"),
        "{busy:?}"
    );
    leaks.assert_clean();
}

#[test]
fn run_network_none_has_only_lo_and_host_sees_the_host() {
    let (roots, leaks) = engine_roots();
    let none = roots.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    let names: Vec<&str> = none.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "{none}");
    let host = roots.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    for entry in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "eth0" || name == "lo" {
            assert!(
                host.contains(&format!(": {name}")),
                "{name} missing:\n{host}"
            );
        }
    }
    let bridge = roots.ok(&["run", "--rm", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(
        bridge
            .lines()
            .any(|l| l.contains("eth0") && l.contains("inet 10.")),
        "{bridge}"
    );
    roots.ok(&["network", "rm", "bridge"]);
    leaks.assert_clean();
}

/// CVE-2020-8558 (kube-proxy): the bridge needs `route_localnet` so that 127.0.0.1
/// published ports and NodePorts reach containers, and that same setting made the
/// host accept packets for 127.0.0.0/8 arriving from the bridge. A container that
/// routes 127.0.0.0/8 to its gateway (one with NET_ADMIN in its namespace can; one
/// with NET_RAW can forge such packets) must get nothing to a service on the host's
/// loopback, nor pass a datagram from 127.0.0.2 for the host's own, while what it
/// sends to the gateway arrives (the control) and a port published on 127.0.0.1 keeps
/// answering the host.
#[test]
fn containers_cannot_reach_the_hosts_loopback_services() {
    let (roots, leaks) = TestRoots::with_busybox();
    let published = berth_net::ports::pick_free(Ipv4Addr::LOCALHOST, Proto::Tcp, &[]).unwrap();
    roots.ok(&[
        "run",
        "-d",
        "--name",
        "prober",
        "-p",
        &format!("127.0.0.1:{published}:80"),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let pid = roots.ok(&["inspect", "--format", "{{.State.Pid}}", "prober"]);
    let gateway = roots.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Gateway}}",
        "prober",
    ]);
    let gateway: Ipv4Addr = gateway.trim().parse().unwrap();
    // a UDP service on the host's loopback only, and a control one on the gateway
    let lo_only = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let control = std::net::UdpSocket::bind((gateway, 0)).unwrap();
    for s in [&lo_only, &control] {
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
    }
    let port = |s: &std::net::UdpSocket| s.local_addr().unwrap().port();
    // the container's namespace sends 127.0.0.0/8 to the host, then a datagram to
    // each service, then one from 127.0.0.2 to the gateway
    let sent = Command::new(require_cmd("nsenter"))
        .args(["-t", pid.trim(), "-n", "bash", "-c"])
        .arg(format!(
            "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet && \
             ip route del table local local 127.0.0.1 dev lo && \
             ip route del table local local 127.0.0.0/8 dev lo && \
             ip route add 127.0.0.0/8 via {gateway} dev eth0 && \
             echo control > /dev/udp/{gateway}/{c} && echo forged > /dev/udp/127.0.0.1/{} && \
             ip addr add 127.0.0.2/32 dev eth0 && \
             ip route replace {gateway}/32 dev eth0 src 127.0.0.2 && \
             echo spoofed > /dev/udp/{gateway}/{c}",
            port(&lo_only),
            c = port(&control),
        ))
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", integration_tests::text(&sent));
    let recv = |s: &std::net::UdpSocket| {
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf)
            .map(|(n, from)| (String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    };
    let got = recv(&control);
    assert!(
        got.as_ref().is_ok_and(|(b, _)| b == "control\n"),
        "the container's datagram to its gateway did not arrive: {got:?}"
    );
    // the rest was sent before the control arrived: a short wait is enough
    for s in [&lo_only, &control] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let got = recv(&lo_only);
    assert!(
        got.is_err(),
        "a container reached the host's 127.0.0.1:{}: {got:?}",
        port(&lo_only)
    );
    let got = recv(&control);
    assert!(
        got.is_err(),
        "a container passed a datagram from loopback for the host's own: {got:?}"
    );
    // the host still reaches the container through its 127.0.0.1 port (the replies
    // come back through the bridge to 127.0.0.1)
    let body = integration_tests::http_get(
        SocketAddr::from((Ipv4Addr::LOCALHOST, published)),
        "/passwd",
        Duration::from_secs(10),
    );
    assert!(
        body.as_deref().is_ok_and(|b| b.contains("root:x:0:0")),
        "{body:?}"
    );
    roots.ok(&["rm", "-f", "prober"]);
    roots.ok(&["network", "rm", "bridge"]);
    leaks.assert_clean();
}
