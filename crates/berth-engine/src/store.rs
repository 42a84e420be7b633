//! The metadata database: one SQLite file per berth root, safe for parallel CLI calls.

use std::path::Path;
use std::time::Duration;

/// Errors opening or migrating the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the root directory failed.
    #[error("create berth root {path}: {source}")]
    Root {
        /// The root.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("metadata database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
}

/// File name of the database under the berth root.
pub const DB_FILE: &str = "berth.db";

/// Open (creating if needed) the metadata database of `root`, with every module's
/// tables. WAL and a busy timeout let concurrent CLI processes share it.
pub fn open(root: &Path) -> Result<rusqlite::Connection, Error> {
    std::fs::create_dir_all(root).map_err(|source| Error::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let path = root.join(DB_FILE);
    let wrap = |source| Error::Sqlite {
        path: path.clone(),
        source,
    };
    let conn = rusqlite::Connection::open(&path).map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(wrap)?;
    // the last connection to close would checkpoint the WAL with an fsync: on a busy
    // disk 100+ ms at the end of every CLI call. Checkpoints still happen as the WAL
    // grows (wal_autocheckpoint), inside a commit.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(wrap)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    )
    .map_err(wrap)?;
    conn.execute_batch(crate::network::SCHEMA).map_err(wrap)?;
    conn.execute_batch(crate::container::SCHEMA).map_err(wrap)?;
    conn.execute_batch(crate::volume::SCHEMA).map_err(wrap)?;
    crate::network::migrate(&conn).map_err(wrap)?;
    conn.execute_batch(crate::dns::SCHEMA).map_err(wrap)?;
    Ok(conn)
}
