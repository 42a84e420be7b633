//! runc-style logging: errors go to stderr and, with `--log`, as one line to the log
//! file (`{"level","msg","time"}` with `--log-format json`, engines show its `msg`).

use crate::cli::Cli;
use std::io::Write;

/// Report an error.
pub fn error(cli: &Cli, msg: &str) {
    // Not eprintln!: it panics when stderr is closed.
    let _ = writeln!(std::io::stderr().lock(), "berth-oci: {msg}");
    write(cli, "error", msg);
}

fn write(cli: &Cli, level: &str, msg: &str) {
    let Some(path) = &cli.log else { return };
    let time = berth_runtime::state::now_rfc3339();
    let line = if cli.log_format == "json" {
        serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
    } else {
        format!("time={time:?} level={level} msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
