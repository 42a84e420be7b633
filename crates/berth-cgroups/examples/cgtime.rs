//! Times the start-path calls on this host: `cargo run --release --example cgtime [N]`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let res: oci_spec::runtime::LinuxResources = serde_json::from_str(
        r#"{"memory":{"limit":67108864},"pids":{"limit":100},"cpu":{"shares":512,"quota":50000,"period":100000},
            "devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
    )?;
    let mut t = [0f64; 5];
    for i in 0..n {
        let id = format!("cgtime-{}-{i}", std::process::id());
        let a = Instant::now();
        let cg = berth_cgroups::open(None, &id)?;
        let b = Instant::now();
        cg.create()?;
        let c = Instant::now();
        cg.apply(&res)?;
        let d = Instant::now();
        let _ = cg.pids()?;
        let e = Instant::now();
        cg.destroy()?;
        let f = Instant::now();
        for (k, (x, y)) in [(a, b), (b, c), (c, d), (d, e), (e, f)].iter().enumerate() {
            t[k] += (*y - *x).as_secs_f64() * 1e6 / f64::from(n);
        }
    }
    println!(
        "mean us over {n}: open {:.0}, create {:.0}, apply {:.0}, pids {:.0}, destroy {:.0}",
        t[0], t[1], t[2], t[3], t[4]
    );
    Ok(())
}
