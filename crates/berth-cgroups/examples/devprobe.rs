//! Manual check of the v2 device filter: run inside a private cgroup2 mount.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cg = berth_cgroups::open(None, "devprobe")?;
    cg.create()?;
    let r: oci_spec::runtime::LinuxResources = serde_json::from_str(
        r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
    )?;
    let mut res = cg.apply(&r);
    if res.is_ok() {
        let all: oci_spec::runtime::LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":true,"access":"rwm"}]}"#)?;
        res = cg.apply(&all);
    }
    cg.destroy()?;
    res?;
    println!("ok");
    Ok(())
}
