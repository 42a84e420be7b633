//! Times one container's network plumbing with berth-net: namespace + veth on a
//! bridge + address/route + one published port, then all of it removed again.
//!
//! `attach_cycle N` makes a scratch bridge and nft table, runs N cycles and prints the
//! mean milliseconds per cycle (used by `cargo xtask bench network`). Needs root.

use std::net::Ipv4Addr;
use std::time::Instant;

use berth_net::{Endpoint, Mapping, Netlink, Proto, Subnet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let id = std::process::id();
    let bridge = format!("bcyc{:x}", id & 0xfffff);
    let table = format!("berth_{bridge}");
    let subnet = Subnet {
        addr: Ipv4Addr::new(10, 251, (id % 256) as u8, 0),
        prefix: 24,
    };
    let gateway = subnet.first_host();
    let ip = subnet.next_free(&[gateway])?;
    let dir = tempfile::tempdir()?;
    let pin = dir.path().join("netns");
    let mut nl = Netlink::open()?;
    berth_net::ensure_bridge(&mut nl, &bridge, gateway, subnet.prefix)?;
    berth_net::nft::up(&table, &bridge, subnet)?;
    let port = berth_net::ports::pick_free(Ipv4Addr::LOCALHOST, Proto::Tcp, &[])?;
    let ports = [Mapping {
        host_ip: Ipv4Addr::LOCALHOST,
        host_port: port,
        container_ip: ip,
        container_port: 80,
        proto: Proto::Tcp,
    }];
    let start = Instant::now();
    let mut phases = [0f64; 4];
    let mut veth = String::new();
    for i in 0..n {
        // one name per container, as the engine does
        veth = format!("vc{:x}x{i}", id & 0xfffff);
        let t = Instant::now();
        berth_net::attach(
            &mut nl,
            &Endpoint {
                netns: &pin,
                bridge: &bridge,
                host_veth: &veth,
                ip,
                prefix: subnet.prefix,
                gateway,
            },
        )?;
        phases[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        berth_net::nft::publish(&table, "cycle", &ports)?;
        phases[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        berth_net::nft::unpublish(&table, &ports)?;
        phases[2] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        berth_net::detach(&pin)?;
        phases[3] += t.elapsed().as_secs_f64();
    }
    if std::env::var_os("PHASES").is_some() {
        let ms: Vec<String> = phases
            .iter()
            .map(|p| format!("{:.2}", p * 1000.0 / f64::from(n.max(1))))
            .collect();
        eprintln!(
            "attach / publish / unpublish / detach ms: {}",
            ms.join(" / ")
        );
    }
    // the last pair goes with its namespace in the background: wait so the bridge
    // removal below does not race it (not timed)
    let per_end = start.elapsed();
    for _ in 0..200 {
        if !std::path::Path::new("/sys/class/net").join(&veth).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let per = per_end.as_secs_f64() * 1000.0 / f64::from(n.max(1));
    berth_net::nft::down(&table)?;
    berth_net::remove_link(&mut nl, &bridge)?;
    println!("{per:.3}");
    Ok(())
}
