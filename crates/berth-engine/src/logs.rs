//! Container logs: docker's json-file format, one `{"log","stream","time"}` object per
//! line, size-capped with one rotated file kept.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::timefmt;

/// Default size at which the log rotates.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text, newline included when the program wrote one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// Appends entries to a log file, rotating it to `<file>.1` past `max_size`.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
}

impl Writer {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path, max_size: u64) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
        })
    }

    /// Writes one entry per line of `data` (a trailing partial line is an entry too,
    /// like docker does when a stream ends without a newline).
    pub fn write(&mut self, stream: &str, data: &[u8]) -> std::io::Result<()> {
        let time = timefmt::now();
        let mut out = Vec::with_capacity(data.len() + 64);
        for line in data.split_inclusive(|&b| b == b'\n') {
            let e = Entry {
                log: String::from_utf8_lossy(line).into_owned(),
                stream: stream.to_string(),
                time: time.clone(),
            };
            serde_json::to_writer(&mut out, &e).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        if self.size + out.len() as u64 > self.max_size && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let old = rotated(&self.path);
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Path of the rotated file of `path`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Which entries `logs` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only the last `n` entries.
    pub tail: Option<usize>,
    /// Only entries at or after this time.
    pub since: Option<SystemTime>,
    /// Only entries before this time.
    pub until: Option<SystemTime>,
}

impl Filter {
    fn keeps(&self, e: &Entry) -> bool {
        let t = timefmt::parse(&e.time);
        match t {
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u),
            None => true,
        }
    }
}

/// Reads every entry of `path` (the rotated file first) that `filter` keeps; returns
/// them and the byte offset reached in the current file (to follow from).
pub fn read(path: &Path, filter: &Filter) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut out = Vec::new();
    if let Ok(f) = File::open(rotated(path)) {
        read_from(BufReader::new(f), filter, &mut out)?;
    }
    let mut offset = 0;
    match File::open(path) {
        Ok(f) => {
            offset = read_from(BufReader::new(f), filter, &mut out)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(n) = filter.tail
        && out.len() > n
    {
        out.drain(..out.len() - n);
    }
    Ok((out, offset))
}

/// Reads complete lines; returns the offset after the last complete line.
fn read_from(mut r: impl BufRead, filter: &Filter, out: &mut Vec<Entry>) -> std::io::Result<u64> {
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(offset);
        }
        offset += n as u64;
        if let Ok(e) = serde_json::from_slice::<Entry>(&line)
            && filter.keeps(&e)
        {
            out.push(e);
        }
    }
}

/// Follows `path` from `offset`, calling `emit` for each new entry, until `done()`
/// says the writer has finished (checked when no new data arrives). Handles rotation
/// (the file shrinking or being replaced).
pub fn follow(
    path: &Path,
    mut offset: u64,
    filter: &Filter,
    mut emit: impl FnMut(&Entry) -> std::io::Result<()>,
    mut done: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let mut finished_seen = false;
    loop {
        let mut got = false;
        if let Ok(mut f) = File::open(path) {
            let len = f.metadata()?.len();
            if len < offset {
                offset = 0; // rotated
            }
            if len > offset {
                f.seek(SeekFrom::Start(offset))?;
                let mut entries = Vec::new();
                let n = read_from(BufReader::new(f), filter, &mut entries)?;
                offset += n;
                got = n > 0;
                for e in &entries {
                    emit(e)?;
                }
            }
        }
        if !got {
            if finished_seen {
                return Ok(());
            }
            if done() {
                // one more pass for what was written just before the end
                finished_seen = true;
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rotate_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let mut w = Writer::open(&p, 200).unwrap();
        w.write("stdout", b"one\ntwo\n").unwrap();
        w.write("stderr", b"three").unwrap();
        let (e, _) = read(&p, &Filter::default()).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].log, "one\n");
        assert_eq!(e[2].stream, "stderr");
        for i in 0..10 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(rotated(&p).exists());
        let (e, _) = read(
            &p,
            &Filter {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            e.iter().map(|x| x.log.as_str()).collect::<Vec<_>>(),
            ["line 8\n", "line 9\n"]
        );
        assert!(std::fs::metadata(&p).unwrap().len() <= 200);
    }
}
