//! Replays every input kept under fuzz/corpus-regressions/TARGET/ (crashes the fuzzers
//! found, and a few seeds) through the same target bodies libFuzzer runs, on stable:
//! a fixed bug that comes back fails here without any fuzzing.

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// Longest one input may take here (a debug build; every kept input takes a few
/// milliseconds): the two shell_word timeouts took 5 s each before their fix.
const SLOW: std::time::Duration = std::time::Duration::from_secs(1);

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus-regressions")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = regressions_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `body` on each regression input of `target`; fails naming every input that
/// panics.
fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus-regressions/{target}/ holds no input: keep at least one seed"
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let t = std::time::Instant::now();
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            failed.push(f.display().to_string());
        } else if t.elapsed() > SLOW {
            // the fuzzers' timeouts are findings too (an input that hangs a build)
            failed.push(format!("{} (took {:?})", f.display(), t.elapsed()));
        }
    }
    targets::cleanup();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} regression inputs fail again:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    println!("{target}: {} regression inputs pass", files.len());
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), targets::$name);
            }
        )*

        /// Every target has its tests here and every regression directory a target.
        #[test]
        fn every_target_is_replayed() {
            let here: Vec<&str> = vec![$(stringify!($name)),*];
            let declared: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
            assert_eq!(here, declared, "replay_tests! and TARGETS list different targets");
            for e in std::fs::read_dir(regressions_dir()).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                assert!(
                    declared.contains(&name.as_str()),
                    "fuzz/corpus-regressions/{name}/ belongs to no target"
                );
            }
            let thin = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets"))
                .unwrap()
                .count();
            assert_eq!(thin, declared.len(), "fuzz/fuzz_targets/ and TARGETS differ");
        }
    };
}

replay_tests!(
    dockerfile,
    shell_word,
    dockerignore,
    image_manifest,
    layer_unpack,
    oci_config,
    kube_manifest,
    image_ref,
);
