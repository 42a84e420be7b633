//! Phase timestamps for finding where a `berth run` spends its time: with
//! `BERTH_TRACE=1` in the environment, [`mark`] prints `berth-trace PID MS PHASE` to
//! stderr, MS being CLOCK_MONOTONIC in milliseconds, so the lines of the CLI, the
//! monitor and the runtime (which inherit the variable) sort into one timeline.
//! Without the variable a mark costs one load of a cached flag.

use std::sync::OnceLock;

/// Name of the environment variable that turns the marks on.
pub const ENV: &str = "BERTH_TRACE";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Milliseconds of CLOCK_MONOTONIC (shared by every process on the host).
pub fn monotonic_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Prints a phase mark when tracing is on.
pub fn mark(phase: &str) {
    if enabled() {
        use std::io::Write;
        // one write, so lines of processes sharing stderr do not interleave
        let line = format!(
            "berth-trace {} {:.3} {phase}\n",
            std::process::id(),
            monotonic_ms()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}
