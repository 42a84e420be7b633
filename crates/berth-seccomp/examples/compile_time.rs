//! Measures compiling berth's default profile (and variants) and prints the figures.
use std::time::Instant;

use oci_spec::runtime::Arch;

fn time(label: &str, spec: &oci_spec::runtime::LinuxSeccomp) {
    berth_seccomp::Filter::compile(spec).unwrap();
    let runs = 20;
    let t = Instant::now();
    let mut len = 0;
    for _ in 0..runs {
        len = berth_seccomp::Filter::compile(spec)
            .unwrap()
            .program()
            .len();
    }
    println!("{label}: {:?} per compile, {len} insns", t.elapsed() / runs);
}

fn main() {
    let spec = berth_seccomp::default_profile();
    time("default (x86_64, x86, x32)", &spec);
    let mut one = spec.clone();
    one.set_architectures(Some(vec![Arch::ScmpArchX86_64]));
    time("native only", &one);
    let mut two = spec.clone();
    two.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
    time("x86_64 + x86", &two);
    let dir = std::env::temp_dir().join(format!("berth-seccomp-cache-{}", std::process::id()));
    berth_seccomp::Filter::compile_cached(&spec, &dir).unwrap();
    let runs = 200;
    let t = Instant::now();
    for _ in 0..runs {
        berth_seccomp::Filter::compile_cached(&spec, &dir).unwrap();
    }
    println!("default, cache hit: {:?} per compile", t.elapsed() / runs);
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(serde_json::to_vec(&spec).unwrap());
    }
    println!("  of which json: {:?}", t.elapsed() / runs);
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(berth_seccomp::Profile::from_oci(&spec).unwrap());
    }
    println!("  of which profile check: {:?}", t.elapsed() / runs);
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(libseccomp::get_api());
    }
    println!("  of which get_api: {:?}", t.elapsed() / runs);
    let _ = std::fs::remove_dir_all(&dir);
}
