//! Shared network namespaces and names, end to end: sandboxes made through the
//! library (the orchestrator's pods) joined by containers with `--network
//! sandbox:NAME`, docker's `--network container:NAME`, and the embedded DNS server
//! (127.0.0.11) answering busybox `nslookup` and `ping` for container names and for
//! records published through `berth_engine::dns`, forwarding the rest. Every test
//! uses private roots and ends with a leak check.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Output, Stdio};
use std::time::Duration;

use berth_engine::Engine;
use berth_engine::sandbox::{self, SandboxSpec};
use integration_tests::{LeakCheck, TestRoots, http_get};

fn setup() -> (TestRoots, LeakCheck) {
    TestRoots::with_busybox()
}

fn berth(roots: &TestRoots, args: &[&str]) -> Output {
    roots.output(args)
}

fn ok(roots: &TestRoots, args: &[&str]) -> String {
    roots.ok(args)
}

#[test]
fn sandbox_and_container_mode_share_one_namespace() {
    let (roots, leaks) = setup();
    let eng = Engine::open(&roots.root(), &roots.state()).unwrap();
    let port =
        berth_net::ports::pick_free(Ipv4Addr::LOCALHOST, berth_net::Proto::Tcp, &[]).unwrap();
    let sb = sandbox::create(
        &eng,
        &SandboxSpec {
            name: "pod1".into(),
            ports: vec![format!("127.0.0.1:{port}:80")],
            extra_hosts: vec!["db.example:192.0.2.5".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let ip = sb.ip.expect("a sandbox on the bridge has an address");
    assert!(sb.netns.exists(), "{}", sb.netns.display());
    // a second of the same name is refused, and nothing of it is made
    let dup = sandbox::create(
        &eng,
        &SandboxSpec {
            name: "pod1".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(dup.to_string(), "sandbox pod1 already exists");

    ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "sandbox:pod1",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ],
    );
    // another container of the pod reaches it over localhost and sees the pod's
    // address and hosts file
    let seen = ok(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            &sandbox::mode("pod1"),
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1/passwd && break; \
             sleep 0.2; done | head -1; ip -o -4 addr show eth0; grep db.example /etc/hosts; \
             grep nameserver /etc/resolv.conf",
        ],
    );
    assert!(seen.contains("root:x:0:0"), "{seen}");
    assert!(seen.contains(&format!("inet {ip}/")), "{seen}");
    assert!(seen.contains("192.0.2.5\tdb.example"), "{seen}");
    assert!(seen.contains("nameserver 127.0.0.11"), "{seen}");
    // the sandbox's published port reaches the container from the host
    let body = http_get(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "/passwd",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(body.contains("root:x:0:0"), "{body}");
    // docker's container:NAME joins the same namespace
    let joined = ok(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "container:web",
            "busybox",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ],
    );
    assert!(joined.contains(&format!("inet {ip}/")), "{joined}");
    // a port cannot be published by a container that joins a namespace
    let bad = berth(
        &roots,
        &[
            "run",
            "--rm",
            "-p",
            "80",
            "--network",
            "sandbox:pod1",
            "busybox",
            "true",
        ],
    );
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
    let bad = berth(
        &roots,
        &[
            "run",
            "--rm",
            "--network",
            "sandbox:nosuch",
            "busybox",
            "true",
        ],
    );
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("sandbox nosuch not found"),
        "{bad:?}"
    );

    // in use: refused; the sandbox outlives a container that stops
    let busy = sandbox::remove(&eng, "pod1", false).unwrap_err();
    assert!(
        busy.to_string().contains("in use by running containers"),
        "{busy}"
    );
    ok(&roots, &["rm", "-f", "web"]);
    assert!(sb.netns.exists());
    assert_eq!(sandbox::list(&eng).unwrap().len(), 1);
    sandbox::remove(&eng, "pod1", false).unwrap();
    assert!(!sb.netns.exists());
    assert!(sandbox::list(&eng).unwrap().is_empty());

    // an unused sandbox (with only lo, here) is collected by prune
    let lo = sandbox::create(
        &eng,
        &SandboxSpec {
            name: "pod2".into(),
            network: "none".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(lo.ip.is_none() && lo.netns.exists());
    berth_engine::network::prune(&eng.conn).unwrap();
    assert!(!lo.netns.exists());
    assert!(sandbox::list(&eng).unwrap().is_empty());
    drop(eng);
    drop(roots);
    leaks.assert_clean();
}

/// A DNS server on loopback answering every A query with 192.0.2.77, for forwarding
/// (the monitor forwards from the host's namespace); stops after `n` queries.
fn fake_upstream() -> (SocketAddr, std::thread::JoinHandle<u32>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut served = 0;
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Some(q) = berth_net::dns::parse_query(&buf[..n]) else {
                break; // the test's stop message
            };
            let ips = if q.qtype == 1 && q.name == "fwd.example.test" {
                vec![Ipv4Addr::new(192, 0, 2, 77)]
            } else {
                vec![]
            };
            let _ = sock.send_to(&berth_net::dns::answer(&buf[..n], &q, &ips), from);
            served += 1;
        }
        served
    });
    (addr, t)
}

#[test]
fn embedded_dns_answers_names_records_and_forwards() {
    let (roots, leaks) = setup();
    let net = format!("dnsnet{}", std::process::id());
    ok(&roots, &["network", "create", &net]);
    ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            &net,
            "--network-alias",
            "api",
            "busybox",
            "sleep",
            "60",
        ],
    );
    let srv_ip = ok(
        &roots,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "srv"],
    );
    let srv_ip = srv_ip.trim();
    let conn = berth_engine::store::open(&roots.root()).unwrap();
    berth_engine::dns::set_records(
        &conn,
        "test/web",
        &[berth_engine::dns::Record {
            name: "web.default.svc.cluster.local".into(),
            ip: Ipv4Addr::new(198, 18, 3, 4),
            network: None,
        }],
    )
    .unwrap();
    let (upstream, served) = fake_upstream();
    let script = "nslookup srv; echo rc=$?; ping -c 1 -W 2 api; echo rc=$?; \
                  nslookup web.default.svc.cluster.local; echo rc=$?; \
                  nslookup nosuch.cluster.local; echo rc=$?; \
                  nslookup fwd.example.test; echo rc=$?";
    let out = roots
        .berth()
        .env("BERTH_DNS_UPSTREAM", upstream.to_string())
        .args([
            "run",
            "--rm",
            "--network",
            &net,
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // the default bridge gets no container names, as docker
    let isolated = berth(
        &roots,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "grep -c 127.0.0.11 /etc/resolv.conf",
        ],
    );
    let _ = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(b"stop", upstream));
    let served = served.join().unwrap();
    ok(&roots, &["rm", "-f", "srv"]);
    ok(&roots, &["network", "rm", &net]);
    berth_engine::dns::remove_owner(&conn, "test/web").unwrap();
    drop(conn);

    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let blocks: Vec<&str> = text.split("rc=").collect();
    assert_eq!(blocks.len(), 6, "{out:?}");
    assert!(
        blocks[0].contains("127.0.0.11") && blocks[0].contains(&format!("Address: {srv_ip}")),
        "nslookup srv:\n{text}"
    );
    assert!(blocks[1].starts_with('0'), "nslookup srv failed:\n{text}");
    assert!(
        blocks[1].contains(&format!("({srv_ip})")) && blocks[2].starts_with('0'),
        "ping api:\n{text}"
    );
    assert!(
        blocks[2].contains("Address: 198.18.3.4") && blocks[3].starts_with('0'),
        "published record:\n{text}"
    );
    assert!(
        blocks[3].contains("NXDOMAIN") && !blocks[4].starts_with('0'),
        "unknown .local name:\n{text}"
    );
    assert!(
        blocks[4].contains("Address: 192.0.2.77") && blocks[5].starts_with('0'),
        "forwarded name:\n{text}"
    );
    assert!(served >= 1, "the upstream was never asked");
    assert_eq!(
        String::from_utf8_lossy(&isolated.stdout).trim(),
        "0",
        "{isolated:?}"
    );
    drop(roots);
    leaks.assert_clean();
}
