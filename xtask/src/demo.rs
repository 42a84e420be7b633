//! `cargo xtask demo`: berth's main job, end to end, as far as it exists today.

use anyhow::Result;

use crate::util;

pub fn run() -> Result<()> {
    crate::install::prerequisites()?;
    util::cargo(&["build", "--workspace", "--bins", "--locked"])?;
    let fixtures = crate::fixtures()?;
    let berth = util::target_dir().join("debug/berth");
    util::banner("berth version");
    util::run(std::process::Command::new(&berth).arg("version"))?;
    println!(
        "\ndemo: built berth and made the busybox bundle at {}; \
         running containers, images and builds join this demo as they land",
        fixtures.join("busybox-bundle").display()
    );
    Ok(())
}
