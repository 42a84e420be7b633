//! Image store: unpacking the generated 6-layer, ~360 MiB image into snapshots, berth
//! vs `umoci unpack` (both from the same OCI layout, both to disk).

use std::path::Path;

use anyhow::Result;

use super::{Report, peak_rss_mib};
use crate::util;

pub fn run(r: &mut Report) -> Result<()> {
    let berth = util::target_dir().join("release/berth");
    let work = Report::dir().join("image");
    let root = work.join("root");
    let store_dir = root.join("images");
    let bundle = work.join("umoci-bundle");
    let tag = "gen:latest";
    let store = berth_image::Store::open(&store_dir)?;
    if store.resolve(tag).is_err() {
        util::banner("bench image: generating the 6-layer ~360 MiB image");
        berth_image::fixtures::generated_image(&store, tag, 1, 6, 360 << 20)?;
    }
    let img = store.image(tag, &berth_image::Platform::default())?;
    let compressed: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
    r.note(format!(
        "image: generated image has {} gzip layers, {:.0} MiB compressed",
        img.manifest.layers().len(),
        compressed as f64 / (1 << 20) as f64
    ));
    let snapshots = store_dir.join("snapshots");
    let prepare = format!(
        "rm -rf {}/* {} && sync",
        snapshots.display(),
        bundle.display()
    );
    let ours = format!(
        "{} --root {} image unpack {tag}",
        berth.display(),
        root.display()
    );
    let umoci = format!(
        "umoci unpack --image {}:{tag} {}",
        store_dir.display(),
        bundle.display()
    );
    r.hyperfine(
        "image: unpack 6 layers, 360 MiB gzip",
        &[("berth", ours.clone()), ("umoci", umoci.clone())],
        &["--runs", "3", "--prepare", &prepare],
    )?;
    let clean = |p: &Path| {
        let _ = std::fs::remove_dir_all(p);
    };
    clean(&bundle);
    for e in std::fs::read_dir(&snapshots)?.flatten() {
        clean(&e.path());
    }
    let rss_ours = peak_rss_mib(&ours)?;
    let rss_umoci = peak_rss_mib(&umoci)?;
    r.metric(
        "image: unpack peak RSS",
        "MiB",
        rss_ours,
        &[("umoci", rss_umoci)],
    );
    clean(&bundle);
    Ok(())
}
