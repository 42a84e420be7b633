//! Attaching to a running container's stdio (`berth attach`), through its monitor.
//!
//! Each monitor listens on a unix socket ([`socket_path`]). A client receives the
//! container's output from the moment it connects (earlier output is in the log)
//! and, when the container was started with `-i`, sends its stdin: the monitor holds
//! the container's stdin open between clients, as docker does for `run -d -i`.
//! When the container exits, every client gets its exit code and the connection
//! closes.
//!
//! Frames on the stream socket: a kind byte, a big-endian u32 length, the payload.
//! Monitor to client: [`STDOUT`], [`STDERR`], [`EXIT`] (an i32). Client to
//! monitor: [`STDIN`], [`RESIZE`] (rows, cols as u16).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::container::Engine;

/// Container stdout (monitor to client).
pub const STDOUT: u8 = 1;
/// Container stderr (monitor to client).
pub const STDERR: u8 = 2;
/// The container exited: payload is the exit code as a big-endian i32.
pub const EXIT: u8 = 3;
/// Client stdin for the container (client to monitor).
pub const STDIN: u8 = 4;
/// Terminal size: rows and columns as big-endian u16 (client to monitor).
pub const RESIZE: u8 = 5;

/// Where the monitor of container `id` listens: a short name under the state root
/// (unix socket paths hold 108 bytes), else under the temporary directory.
pub fn socket_path(engine: &Engine, id: &str) -> PathBuf {
    let short = &id[..id.len().min(24)];
    let p = engine.state.join("attach").join(format!("{short}.sock"));
    if p.as_os_str().len() <= 100 {
        return p;
    }
    std::env::temp_dir().join(format!("berth-attach-{short}.sock"))
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(5 + data.len());
    buf.push(kind);
    buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
    buf.extend_from_slice(data);
    w.write_all(&buf)
}

/// Reads one frame; None at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > 1 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

/// Connects to the monitor of a running container.
pub fn connect(engine: &Engine, id: &str) -> io::Result<UnixStream> {
    UnixStream::connect(socket_path(engine, id))
}

/// The monitor's side: attached clients and where their input goes.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    clients: Mutex<Vec<UnixStream>>,
    /// Write end of the container's stdin pipe (`-i` without a terminal).
    pub input: Mutex<Option<OwnedFd>>,
    /// The pty master (`-t`): input and resizes go there.
    pub pty: Mutex<Option<OwnedFd>>,
}

impl Hub {
    /// Sends output to every client; a client that cannot take it within a second
    /// is dropped rather than stalling the container.
    pub fn broadcast(&self, kind: u8, data: &[u8]) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if clients.is_empty() {
            return;
        }
        clients.retain_mut(|c| write_frame(c, kind, data).is_ok());
    }

    /// Tells every client the exit code and lets them go; the run's stdin and pty
    /// are closed (a restart brings new ones).
    pub fn finish(&self, code: i32) {
        for slot in [&self.pty, &self.input] {
            if let Ok(mut fd) = slot.lock() {
                fd.take();
            }
        }
        self.broadcast(EXIT, &code.to_be_bytes());
        if let Ok(mut clients) = self.clients.lock() {
            for c in clients.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn input(&self, data: &[u8]) {
        for slot in [&self.pty, &self.input] {
            if let Ok(fd) = slot.lock()
                && let Some(fd) = fd.as_ref()
            {
                crate::monitor::write_all_fd(fd.as_raw_fd(), data);
                return;
            }
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        if let Ok(fd) = self.pty.lock()
            && let Some(fd) = fd.as_ref()
        {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads ws.
            unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }
}

/// Listens at `path` and serves clients on threads; runs until the process ends.
pub(crate) fn listen(path: &Path, hub: Arc<Hub>) -> io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("attach".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let Ok(out) = conn.try_clone() else { continue };
                let _ = out.set_write_timeout(Some(Duration::from_secs(1)));
                if let Ok(mut c) = hub.clients.lock() {
                    c.push(out);
                }
                let hub = hub.clone();
                let _ = std::thread::Builder::new()
                    .name("attach-in".into())
                    .spawn(move || serve_input(conn, &hub));
            }
        })?;
    Ok(())
}

fn serve_input(mut conn: UnixStream, hub: &Hub) {
    while let Ok(Some((kind, data))) = read_frame(&mut conn) {
        match kind {
            STDIN => hub.input(&data),
            RESIZE if data.len() == 4 => hub.resize(
                u16::from_be_bytes([data[0], data[1]]),
                u16::from_be_bytes([data[2], data[3]]),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"hello").unwrap();
        write_frame(&mut buf, EXIT, &7i32.to_be_bytes()).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((EXIT, 7i32.to_be_bytes().to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }
}
