//! `berth-oci`: a runc-compatible OCI runtime binary over berth-runtime.
//!
//! Engines (podman, containerd's runc shim, CRI-O, dockerd) invoke it exactly as they
//! invoke runc. It parses runc's command line and maps each verb onto berth-runtime; it
//! holds no container logic of its own.

fn main() -> std::process::ExitCode {
    eprintln!("berth-oci: no runtime verbs are implemented yet");
    std::process::ExitCode::FAILURE
}
