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

/// A DNS query for `name` (type A, class IN) with id 0x4242.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether a DNS reply carries `ip` as an answer's address.
fn reply_has(reply: &[u8], ip: Ipv4Addr) -> bool {
    reply.len() > 12 && reply[..2] == [0x42, 0x42] && reply.windows(4).any(|w| w == ip.octets())
}

/// As docker: the embedded server listens on 127.0.0.11 at a port of its own and
/// 127.0.0.11:53 is redirected to it inside the namespace, so a container may bind
/// port 53 itself (a DNS server image) and still resolve names. TCP 53 is bound by
/// the container's own program (busybox httpd); UDP 53 by this test from inside the
/// container's namespace (this busybox has no UDP server applet), both on 0.0.0.0.
#[test]
fn a_container_binds_port_53_and_still_resolves_names() {
    use std::io::{Read, Write};
    let (roots, leaks) = setup();
    let net = format!("dns53net{}", std::process::id());
    ok(&roots, &["network", "create", &net]);
    ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "peer53",
            "--network",
            &net,
            "busybox",
            "sleep",
            "60",
        ],
    );
    let peer: Ipv4Addr = ok(
        &roots,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "peer53"],
    )
    .trim()
    .parse()
    .unwrap();
    ok(
        &roots,
        &[
            "run",
            "-d",
            "--name",
            "dns53",
            "--network",
            &net,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "53",
            "-h",
            "/etc",
        ],
    );
    // the container's own server on TCP 0.0.0.0:53 runs and answers
    let served = berth(
        &roots,
        &[
            "exec",
            "dns53",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:53/hostname",
        ],
    );
    let running = ok(&roots, &["inspect", "-f", "{{.State.Running}}", "dns53"]);
    let pid = ok(&roots, &["inspect", "-f", "{{.State.Pid}}", "dns53"]);
    // names still resolve through 127.0.0.11:53 (udp) from the container's programs
    let lookup = berth(&roots, &["exec", "dns53", "nslookup", "peer53"]);
    // UDP 53 on every address is free, and 127.0.0.11:53 answers over UDP and TCP
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", pid.trim())).unwrap();
    let (udp_bind, udp_answer, tcp_answer) = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let own = UdpSocket::bind("0.0.0.0:53")
            .map(|_| ())
            .map_err(|e| e.to_string());
        let ask = UdpSocket::bind("0.0.0.0:0").unwrap();
        ask.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        ask.send_to(&dns_query("peer53"), "127.0.0.11:53").unwrap();
        let mut buf = [0u8; 512];
        let udp = ask
            .recv(&mut buf)
            .map(|n| buf[..n].to_vec())
            .unwrap_or_default();
        let mut tcp = std::net::TcpStream::connect_timeout(
            &"127.0.0.11:53".parse().unwrap(),
            Duration::from_secs(3),
        )
        .unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let q = dns_query("peer53");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).unwrap();
        let mut reply = vec![0u8; 514];
        let n = tcp.read(&mut reply).unwrap_or(0);
        (own, udp, reply[..n].to_vec())
    })
    .join()
    .unwrap();
    ok(&roots, &["rm", "-f", "dns53", "peer53"]);
    ok(&roots, &["network", "rm", &net]);

    assert_eq!(running.trim(), "true", "httpd on port 53 did not stay up");
    assert!(
        served.status.success() && !String::from_utf8_lossy(&served.stdout).trim().is_empty(),
        "{served:?}"
    );
    let text = String::from_utf8_lossy(&lookup.stdout);
    assert!(
        lookup.status.success() && text.contains(&format!("Address: {peer}")),
        "{lookup:?}"
    );
    assert_eq!(udp_bind, Ok(()), "binding 0.0.0.0:53/udp in the container");
    assert!(reply_has(&udp_answer, peer), "udp answer {udp_answer:?}");
    assert!(
        tcp_answer.len() > 2 && reply_has(&tcp_answer[2..], peer),
        "tcp answer {tcp_answer:?}"
    );
    drop(roots);
    leaks.assert_clean();
}
