//! A loopback proxy in front of a test registry that injects faults into blob GETs:
//! slow bodies, stalls, delays, flipped bytes, truncated bodies, connection resets and
//! 5xx answers. Stopped (and its threads joined) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

/// What the proxy does to blob GETs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Blob bodies trickle at this many bytes per second per connection.
    Throttle(usize),
    /// The first N blob GETs without Range send half the body, then go silent
    /// with the connection open (until the client gives up on it).
    Stall(u32),
    /// Blob GETs whose path contains the string wait this long before answering.
    Delay(String, Duration),
    /// Blob bodies keep their length but have a flipped byte.
    WrongDigest,
    /// The first N blob GETs without Range send half the body, then close.
    Truncate(u32),
    /// The first N blob GETs answer 503.
    ServerErrors(u32),
    /// The first N blob GETs without Range send a third of the body, then reset the
    /// connection (RST, not an orderly close).
    Reset(u32),
}

/// A proxy that forwards to the registry and injects `fault` into blob GETs.
#[derive(Debug)]
pub struct FaultProxy {
    /// `127.0.0.1:PORT`: use it in place of the registry's address.
    pub addr: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, fault: Fault) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let budget = Arc::new(Mutex::new(match fault {
            Fault::Truncate(n) | Fault::ServerErrors(n) | Fault::Stall(n) | Fault::Reset(n) => n,
            _ => u32::MAX,
        }));
        let (st, lg, up) = (stop.clone(), log.clone(), upstream.to_owned());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            // bounded: at most 500 connections, then the proxy stops accepting
            while !st.load(Ordering::Relaxed) && workers.len() < 500 {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (lg, up, budget, fault) =
                            (lg.clone(), up.clone(), budget.clone(), fault.clone());
                        workers.push(std::thread::spawn(move || {
                            let _ = proxy_one(s, &up, &fault, &budget, &lg);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Ok(FaultProxy {
            addr,
            stop,
            log,
            thread: Some(thread),
        })
    }

    /// Request lines seen so far (` [range]` appended to ranged ones).
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_one(
    client: TcpStream,
    upstream: &str,
    fault: &Fault,
    budget: &Mutex<u32>,
    log: &Mutex<Vec<String>>,
) -> Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    let mut range = false;
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        range |= lower.starts_with("range:");
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let is_blob_get = request_line.starts_with("GET ") && request_line.contains("/blobs/sha256:");
    log.lock().unwrap().push(format!(
        "{}{}",
        request_line.trim_end(),
        if range { " [range]" } else { "" }
    ));
    let mut client = client;
    let take = |b: &Mutex<u32>| {
        let mut b = b.lock().unwrap();
        if *b > 0 {
            *b -= 1;
            true
        } else {
            false
        }
    };
    if is_blob_get
        && let Fault::Delay(needle, wait) = fault
        && request_line.contains(needle.as_str())
    {
        std::thread::sleep(*wait);
    }
    if is_blob_get
        && let Fault::ServerErrors(_) = fault
        && take(budget)
    {
        client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(10)))?;
    up.write_all(request_line.as_bytes())?;
    up.write_all(&head)?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    let ok200 = resp.starts_with(b"HTTP/1.1 200");
    if is_blob_get && ok200 && resp.len() > split {
        match fault {
            Fault::WrongDigest => {
                let last = resp.len() - 1;
                resp[last] ^= 0xff;
            }
            Fault::Truncate(_) if !range && take(budget) => {
                let cut = split + (resp.len() - split) / 2;
                client.write_all(&resp[..cut])?;
                client.flush()?;
                // an abrupt end of the connection mid-body
                return Ok(());
            }
            Fault::Reset(_) if !range && take(budget) => {
                let cut = split + (resp.len() - split) / 3;
                client.write_all(&resp[..cut])?;
                client.flush()?;
                // linger 0: close() sends RST, as a crashed peer or middlebox does
                let _ = nix::sys::socket::setsockopt(
                    &client,
                    nix::sys::socket::sockopt::Linger,
                    &libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    },
                );
                return Ok(());
            }
            Fault::Stall(_) if !range && take(budget) => {
                let cut = split + (resp.len() - split) / 2;
                client.write_all(&resp[..cut])?;
                client.flush()?;
                // silent, connection open: wait (bounded) for the client to close it
                let mut sink = [0u8; 1024];
                let until = std::time::Instant::now() + Duration::from_secs(20);
                client.set_read_timeout(Some(Duration::from_millis(200)))?;
                while std::time::Instant::now() < until {
                    match client.read(&mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
                return Ok(());
            }
            Fault::Throttle(rate) => {
                // 20 slices a second; a killed client ends this with a write error
                let slice = (rate / 20).max(1);
                for part in resp.chunks(slice) {
                    client.write_all(part)?;
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Ok(());
            }
            _ => {}
        }
    }
    client.write_all(&resp)?;
    Ok(())
}
