//! Handing the notify listener fd to a seccomp agent (`linux.seccomp.listenerPath`).
//!
//! The runtime spec: connect to the agent's unix socket and send the container
//! process state JSON with the listener fd attached as SCM_RIGHTS, in one message.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::Error;

/// Connects to `listener_path` and sends `fd` with `state_json` (the container process
/// state, including `listenerMetadata` as `metadata`, built by the caller).
pub fn send_listener_fd(
    listener_path: &Path,
    fd: BorrowedFd<'_>,
    state_json: &[u8],
) -> Result<(), Error> {
    let fail = |source: io::Error| Error::Listener {
        path: listener_path.to_path_buf(),
        source,
    };
    if state_json.is_empty() {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty state json (a stream message with only an fd is not delivered)",
        )));
    }
    let stream = UnixStream::connect(listener_path).map_err(fail)?;
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let mut sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(state_json)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail(e.into())),
        }
    };
    // The fd went with the first bytes; a short write leaves only data to send.
    while sent < state_json.len() {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&state_json[sent..])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail(e.into())),
        }
    }
    Ok(())
}

/// Agent side: receives one listener fd and the state JSON from an accepted connection,
/// reading until the runtime closes it. Meant for seccomp agents and tests.
pub fn recv_listener_fd(stream: &UnixStream) -> Result<(OwnedFd, Vec<u8>), Error> {
    let mut data = Vec::new();
    let mut fd: Option<OwnedFd> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut cmsg_buf = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Receive(e.into())),
        };
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(|e| Error::Receive(e.into()))? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY: SCM_RIGHTS installed these fds in our table; we own them.
                    let owned = unsafe { OwnedFd::from_raw_fd(r) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let fd = fd.ok_or_else(|| {
        Error::Receive(io::Error::new(
            io::ErrorKind::InvalidData,
            "the connection carried no fd",
        ))
    })?;
    Ok((fd, data))
}

/// The runtime spec's "container process state" sent with the listener fd: `state` is
/// the container's state document (as `berth-oci state` prints it), `pid` the process
/// the filter was loaded in, `metadata` the profile's `listenerMetadata`.
pub fn process_state_json(state: &serde_json::Value, pid: i32, metadata: Option<&str>) -> Vec<u8> {
    let oci_version = state
        .get("ociVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("1.2.0");
    let mut doc = serde_json::json!({
        "ociVersion": oci_version,
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = metadata {
        doc["metadata"] = serde_json::Value::from(m);
    }
    serde_json::to_vec(&doc).expect("a json value always serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_state_has_the_spec_fields() {
        let state = serde_json::json!({"ociVersion": "1.0.2", "id": "c1", "status": "creating"});
        let doc: serde_json::Value =
            serde_json::from_slice(&super::process_state_json(&state, 42, Some("meta"))).unwrap();
        assert_eq!(doc["ociVersion"], "1.0.2");
        assert_eq!(doc["fds"][0], "seccompFd");
        assert_eq!(doc["pid"], 42);
        assert_eq!(doc["metadata"], "meta");
        assert_eq!(doc["state"]["id"], "c1");
        let doc: serde_json::Value =
            serde_json::from_slice(&super::process_state_json(&state, 1, None)).unwrap();
        assert!(doc.get("metadata").is_none());
    }
}
