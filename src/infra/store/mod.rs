//! The SQLite store: connection settings, migrations, and the queries every step shares.
//!
//! Every connection runs in WAL mode with foreign keys on and a long busy timeout; writes use
//! IMMEDIATE transactions so two steps never deadlock upgrading a read lock. No transaction is
//! ever held across a container run or a network call.

pub mod approvals;
pub mod attachments;
pub mod audit;
pub mod containers;
pub mod groups;
pub mod history;
pub mod marks;
pub mod messages;
pub mod outbox;
pub mod runs;
mod schema;
pub mod tasks;
pub mod usage;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::time::Duration;

use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;

/// Number of migrations this binary knows.
pub const SCHEMA_VERSION: i64 = schema::MIGRATIONS.len() as i64;

/// An open database.
pub struct Store {
    pub conn: Connection,
}

impl Store {
    /// Open the home's database (it must exist), migrating it if it is older than this binary.
    pub fn open(home: &Home) -> Result<Store> {
        if !home.root.is_dir() {
            return Err(Coded::err(
                Code::NotInitialised,
                format!(
                    "no claw home at {}: run `claw init` first (or pass --home)",
                    home.root.display()
                ),
            ));
        }
        if !home.db().is_file() {
            return Err(Coded::err(
                Code::NotInitialised,
                format!("{} has no database: run `claw init`", home.root.display()),
            ));
        }
        Store::open_path(home, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    /// Create (or open) the database, for `claw init`.
    pub fn create(home: &Home) -> Result<Store> {
        Store::open_path(
            home,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
    }

    fn open_path(home: &Home, flags: OpenFlags) -> Result<Store> {
        let path = home.db();
        let corrupt = |e: rusqlite::Error| open_error(&path, e);
        let conn = Connection::open_with_flags(&path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(corrupt)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(corrupt)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        let mut store = Store { conn };
        store.migrate(home)?;
        Ok(store)
    }

    /// The schema version recorded in the file.
    pub fn version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&mut self, home: &Home) -> Result<()> {
        let v = self.version()?;
        if v > SCHEMA_VERSION {
            return Err(Coded::err(
                Code::NotInitialised,
                format!(
                    "{} was written by a newer claw (schema {v}, this binary knows {SCHEMA_VERSION}); upgrade claw, the database was not touched",
                    home.db().display()
                ),
            ));
        }
        if v == SCHEMA_VERSION {
            return Ok(());
        }
        // Two processes may race to migrate a fresh file: serialise on the global lock and re-check.
        let _lock = crate::infra::lock::acquire(&home.global_lock())?;
        let v = self.version()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(v as usize) {
            tx.execute_batch(sql)
                .with_context(|| format!("migration {} failed", i + 1))?;
            tracing::info!(version = i + 1, "applied migration");
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// Start an IMMEDIATE write transaction.
    pub fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

/// Explain why the database could not be opened. A full disk or an I/O error must never be
/// reported as corruption: the advice for corruption (move the file aside) would lose data.
fn open_error(path: &std::path::Path, e: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode;
    let code = e.sqlite_error_code();
    let full =
        code == Some(ErrorCode::DiskFull) || free_bytes(path).is_some_and(|b| b < 1024 * 1024);
    let message = if full {
        format!(
            "the disk holding {} is full ({e}); free some space and run the command again, nothing was lost",
            path.display()
        )
    } else {
        match code {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => format!(
                "{} is not a usable claw database ({e}); restore it from a backup or move it aside and run `claw init`",
                path.display()
            ),
            Some(ErrorCode::ReadOnly)
            | Some(ErrorCode::PermissionDenied)
            | Some(ErrorCode::CannotOpen) => {
                format!(
                    "cannot open {} ({e}); check its permissions and the folder's",
                    path.display()
                )
            }
            _ => format!(
                "cannot use {} ({e}); check the disk, then run `claw doctor`",
                path.display()
            ),
        }
    };
    Coded::err(Code::NotInitialised, message)
}

/// Bytes available to us on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent()?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c is a valid NUL-terminated path and st points to writable memory of the right size.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between Linux and macOS; the casts are needed on one of them.
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Append-only audit helper usable inside any transaction or connection.
pub fn now() -> i64 {
    crate::infra::time::now_ms()
}
