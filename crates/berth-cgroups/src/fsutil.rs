//! Small file helpers for cgroup control files: one open, one write, no buffering.

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;

/// Write `value` to a control file in a single write(2) (the kernel parses each write
/// on its own).
pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

pub(crate) fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// Read a file that may be missing (a counter this kernel lacks): `None` then.
pub(crate) fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Read a number; "max" reads as `u64::MAX`.
pub(crate) fn read_u64_opt(path: &Path) -> Option<u64> {
    let s = read_opt(path)?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Write an OCI resource value to `dir/file`, with an error naming the OCI field, the
/// value and the file. A missing file means the host lacks the controller or feature.
pub(crate) fn set(dir: &Path, file: &str, field: &str, value: impl Display) -> Result<(), Error> {
    let value = value.to_string();
    let path = dir.join(file);
    write_raw(&path, &value).map_err(|error| apply_error(field, &value, path, error))
}

pub(crate) fn apply_error(field: &str, value: &str, path: PathBuf, error: io::Error) -> Error {
    if error.kind() == io::ErrorKind::NotFound {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("")).display().to_string();
        return Error::Unsupported {
            field: field.to_string(),
            value: value.to_string(),
            reason: format!("this host has no {file} in {dir} (controller or feature missing)"),
        };
    }
    Error::Apply {
        field: field.to_string(),
        value: value.to_string(),
        path,
        error,
    }
}

/// Create `dir` and any missing parents. A racing `destroy` of another container may
/// remove a shared empty parent between our mkdirs: retry a few times.
pub(crate) fn mkdir_all(dir: &Path) -> Result<(), Error> {
    let mut last = None;
    for _ in 0..5 {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(error) => {
                return Err(Error::Create {
                    path: dir.to_path_buf(),
                    error,
                });
            }
        }
    }
    Err(Error::Create {
        path: dir.to_path_buf(),
        error: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
    })
}

/// Remove a cgroup directory and any child cgroups the container made, retrying while
/// exiting processes still populate it (EBUSY). A missing directory is success.
pub(crate) fn remove_cgroup(dir: &Path) -> Result<(), Error> {
    let mut delay = Duration::from_millis(1);
    let mut children_done = false;
    for attempt in 0.. {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if is_busy(&e) && attempt < 9 => {
                if !children_done {
                    children_done = true;
                    if let Ok(entries) = std::fs::read_dir(dir) {
                        for entry in entries.flatten() {
                            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                                remove_cgroup(&entry.path())?;
                            }
                        }
                        continue;
                    }
                }
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(error) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    error,
                });
            }
        }
    }
    unreachable!("the retry loop returns")
}

fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY))
}

/// Read a `cgroup.procs` file into pids.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>, Error> {
    Ok(read(path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}
