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
    crate::trace::mark("db: opened");
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
    crate::trace::mark("db: pragmas");
    conn.execute_batch(crate::network::SCHEMA).map_err(wrap)?;
    conn.execute_batch(crate::container::SCHEMA).map_err(wrap)?;
    conn.execute_batch(crate::volume::SCHEMA).map_err(wrap)?;
    crate::network::migrate(&conn).map_err(wrap)?;
    conn.execute_batch(crate::dns::SCHEMA).map_err(wrap)?;
    crate::trace::mark("db: schema");
    Ok(conn)
}

/// Starts a write transaction that takes the database's write lock at once
/// (`BEGIN IMMEDIATE`). A deferred transaction that reads and then writes fails at
/// once with "database is locked" when another process wrote in between; this one
/// waits its turn (busy timeout), so concurrent CLI processes serialize instead of
/// racing. It takes a shared connection, derefs to it, and rolls back when dropped
/// uncommitted; its errors convert into every berth crate's error with `?`.
pub fn immediate(conn: &rusqlite::Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

/// Copies the WAL into the database file without blocking anyone (PASSIVE), so the
/// log stays short: the first connection of a process group to open the database
/// reads the whole WAL to rebuild its index, so a long one costs every CLI call.
/// Monitors call it after they reported the exit (its fsyncs are nobody's wait).
pub fn checkpoint(conn: &rusqlite::Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn immediate_commits_or_rolls_back_and_locks_out_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let a = rusqlite::Connection::open(&path).unwrap();
        a.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)")
            .unwrap();
        let b = rusqlite::Connection::open(&path).unwrap();
        b.busy_timeout(Duration::ZERO).unwrap();

        let tx = immediate(&a).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        // the write lock is held from BEGIN: another writer cannot even start
        assert!(immediate(&b).is_err());
        drop(tx);
        assert_eq!(count(&a), 0, "dropped uncommitted: rolled back");

        let tx = immediate(&a).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&b), 1, "committed: visible to another connection");
        immediate(&b).unwrap().commit().unwrap();
    }
}
