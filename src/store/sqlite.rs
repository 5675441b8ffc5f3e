//! The SQLite store: one database file shared by every process of one machine.
//!
//! Every process that opens the file shares one registry and one FIFO. The
//! database itself enforces that at most one task is PROCESSING (a unique
//! partial index), and a claim, a finish and a recovery are each one
//! transaction. Worker liveness is an advisory file lock per worker identity,
//! which the kernel releases when its process dies, SIGKILL included.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Claim, Recovery, StatusOut, Store, TaskKind};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventKind, TaskEvent};
use crate::stats::{PriorityPending, StateCounts, Stats};
use crate::status::{self, CompletedSegment, SegmentError, TaskState};
use crate::sync::{deadline_after, lock, unix_now};
use crate::TaskId;
use crate::{Schedule, TaskFailure, TaskOutcome, DEADLINE_PASSED_PENDING, DEADLINE_PASSED_RUNNING};

/// The schema this code writes and reads, kept in the file's `user_version`.
const SCHEMA_VERSION: i64 = 2;

/// Marks the file as a task store (`PRAGMA application_id`, "SFT1").
const APPLICATION_ID: i64 = 0x5346_5431;

/// Most finished tasks one retention transaction deletes, so no call stalls the writers.
const RETENTION_BATCH: i64 = 64;

/// Most surplus events one retention transaction deletes.
const EVENT_TRIM_BATCH: i64 = 1024;

/// The first schema (`user_version` 1). A new file gets it and then every migration, so
/// that a new file and an upgraded one are the same.
const SCHEMA: &str = "
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    state INTEGER NOT NULL,
    fifo INTEGER NOT NULL,
    handler TEXT,
    payload TEXT,
    owner TEXT,
    runner TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    progress TEXT,
    n_segments INTEGER NOT NULL DEFAULT 0,
    n_errors INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    message TEXT,
    revision INTEGER NOT NULL DEFAULT 1,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_queue ON tasks(fifo) WHERE state = 0;
CREATE UNIQUE INDEX tasks_one_processing ON tasks(state) WHERE state = 1;
CREATE INDEX tasks_finished ON tasks(completed_at) WHERE state >= 2;
CREATE INDEX tasks_owned ON tasks(owner) WHERE owner IS NOT NULL AND state < 2;
CREATE TABLE segments (
    task_seq INTEGER NOT NULL, n INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (task_seq, n)
) WITHOUT ROWID;
CREATE TABLE segment_errors (
    task_seq INTEGER NOT NULL, n INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (task_seq, n)
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, kind INTEGER NOT NULL,
    state INTEGER NOT NULL, revision INTEGER NOT NULL
);
CREATE TABLE workers (
    worker_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, started_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE worker_handlers (
    handler TEXT NOT NULL, worker_id TEXT NOT NULL, PRIMARY KEY (handler, worker_id)
) WITHOUT ROWID;
CREATE TABLE counts (state INTEGER PRIMARY KEY, retained INTEGER NOT NULL, total INTEGER NOT NULL);
INSERT INTO counts VALUES (0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0);
CREATE TABLE run_times (
    id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL, total REAL NOT NULL, max REAL NOT NULL
);
INSERT INTO run_times VALUES (1, 0, 0.0, 0.0);
CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks BEGIN
    UPDATE counts SET retained = retained + 1, total = total + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER tasks_moved AFTER UPDATE OF state ON tasks WHEN NEW.state != OLD.state BEGIN
    UPDATE counts SET retained = retained - 1 WHERE state = OLD.state;
    UPDATE counts SET retained = retained + 1, total = total + (NEW.state >= 2) WHERE state = NEW.state;
END;
CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks BEGIN
    UPDATE counts SET retained = retained - 1 WHERE state = OLD.state;
    DELETE FROM segments WHERE task_seq = OLD.seq;
    DELETE FROM segment_errors WHERE task_seq = OLD.seq;
END;
";

/// Schema version 2: priorities, deadlines and yields. The claim order becomes priority
/// descending, then `fifo`; the deadline index lets the sweep find the next deadline in
/// one read. `resuming`: the task yielded, so its next claim goes on with its attempt.
/// `cancel_requested` 2 means the deadline passed while it ran.
const MIGRATION_2: &str = "
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN deadline REAL;
ALTER TABLE tasks ADD COLUMN yields INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN resuming INTEGER NOT NULL DEFAULT 0;
DROP INDEX tasks_queue;
CREATE INDEX tasks_queue ON tasks(priority DESC, fifo) WHERE state = 0;
CREATE INDEX tasks_deadlines ON tasks(deadline) WHERE deadline IS NOT NULL AND state < 2;
";

/// The migrations, in order: `MIGRATIONS[i]` takes a file from version `i + 1` to `i + 2`.
const MIGRATIONS: [&str; 1] = [MIGRATION_2];

/// `cancel_requested` of a task asked to stop by a cancel.
const CANCEL_BY_REQUEST: i64 = 1;
/// `cancel_requested` of a task asked to stop because its deadline passed while it ran.
const CANCEL_BY_DEADLINE: i64 = 2;

/// How often the sweep looks for a passed deadline (a task of any process may have one).
const DEADLINE_POLL: Duration = Duration::from_millis(40);

/// Settings of the SQLite store that the manager's [`Config`] does not hold.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How many times a named task may be started before an interruption makes it FAILED.
    pub max_attempts: u32,
    /// How long a write waits for another process's transaction before failing.
    pub busy_timeout: Duration,
    /// How often coalesced progress updates are committed (at most 100 ms by contract).
    pub progress_flush_interval: Duration,
    /// How often `PRAGMA data_version` is polled while a thread of this process waits.
    pub change_poll_interval: Duration,
    /// How often dead workers are looked for and retention runs.
    pub sweep_interval: Duration,
    /// Bytes the WAL file is truncated to after a checkpoint.
    pub journal_size_limit: i64,
    /// How long without a change before the WAL is checkpointed.
    pub idle_checkpoint_after: Duration,
    /// Whether opening runs `PRAGMA quick_check`, to report a corrupt file at open.
    pub quick_check_on_open: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            busy_timeout: Duration::from_secs(10),
            progress_flush_interval: Duration::from_millis(20),
            change_poll_interval: Duration::from_millis(1),
            sweep_interval: Duration::from_millis(250),
            journal_size_limit: 8 * 1024 * 1024,
            idle_checkpoint_after: Duration::from_secs(1),
            quick_check_on_open: true,
        }
    }
}

/// A task store in one SQLite file, shared by every process that opens it.
///
/// Each handle is a worker identity of its own, new on every open. Dropping
/// the handle closes it.
pub struct SqliteStore {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The latest progress of a task this handle runs, not yet committed.
struct Live {
    seq: i64,
    progress: Option<Box<RawValue>>,
    dirty: bool,
    version: u64,
}

/// Wakes waiters of this process when anything in the database changed.
struct Notifier {
    generation: Mutex<Generation>,
    changed: Condvar,
    /// Wakes the change watcher when the first waiter arrives.
    watch: Condvar,
}

struct Generation {
    value: u64,
    waiters: usize,
}

struct Inner {
    path: PathBuf,
    config: Config,
    options: SqliteOptions,
    worker_id: String,
    lock_path: PathBuf,
    lock_file: Mutex<Option<File>>,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    handlers: Mutex<HashSet<String>>,
    live: Mutex<HashMap<String, Live>>,
    live_changed: Condvar,
    /// Held shared by status reads and exclusively while coalesced progress is
    /// committed, so a read never sees a committed update and its overlay both.
    flush_gate: RwLock<()>,
    notifier: Notifier,
    closed: AtomicBool,
}

/// The first claimable task: seq, task id, handler, owner.
type QueueHead = (i64, String, Option<String>, Option<String>);

/// What finishing reads of the task: seq, state, runner, cancel requested (0, or how it was
/// requested), started at, message, revision, priority, deadline.
type FinishRow = (i64, i64, Option<String>, i64, Option<f64>, Option<String>, i64, i32, Option<f64>);

/// The row fields most mutations look at.
struct RowHead {
    seq: i64,
    state: TaskState,
    revision: i64,
    n_segments: i64,
    n_errors: i64,
    cancel_requested: bool,
    runner: Option<String>,
}

/// Whether task `?1` is PROCESSING while a task of a higher priority is pending that some
/// live worker can run now and whose deadline (against `?2`, now) has not passed: then the
/// running task should yield. A lookup by id and one range of the claim index.
const YIELD_REQUESTED: &str = "SELECT t.state = 1 AND EXISTS (SELECT 1 FROM tasks AS p \
     WHERE p.state = 0 AND p.priority > t.priority AND (p.deadline IS NULL OR p.deadline > ?2) AND ( \
         (p.handler IS NULL AND EXISTS (SELECT 1 FROM workers AS w WHERE w.worker_id = p.owner)) \
      OR (p.handler IS NOT NULL AND EXISTS (SELECT 1 FROM worker_handlers AS h WHERE h.handler = p.handler)))) \
     FROM tasks AS t WHERE t.task_id = ?1";

const EVENT_KINDS: [EventKind; 8] = [
    EventKind::Submitted,
    EventKind::Started,
    EventKind::Progress,
    EventKind::Segment,
    EventKind::Error,
    EventKind::CancelRequested,
    EventKind::Finished,
    EventKind::Yielded,
];

fn kind_code(kind: EventKind) -> i64 {
    EVENT_KINDS.iter().position(|k| *k == kind).unwrap_or(0) as i64
}

fn state_code(state: TaskState) -> i64 {
    state as i64
}

fn state_of(code: i64) -> TaskState {
    TaskState::ALL.get(code as usize).copied().unwrap_or(TaskState::Failed)
}

/// Maps an SQLite failure onto the crate's error, in words that say what to do.
fn db_error(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::invalid_state(format!("the task store's disk is full ({e})")),
        Some(ErrorCode::ReadOnly) => Error::invalid_state(format!("the task store cannot be written: it is read-only ({e})")),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::invalid_state(format!("the task store file is corrupt ({e})")),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::new(
            ErrorKind::Timeout,
            format!("the task store stayed locked by another process for longer than its busy timeout ({e})"),
        ),
        _ => Error::new(ErrorKind::Internal, format!("task store error: {e}")),
    }
}

trait Db<T> {
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(db_error)
    }
}

fn raw(text: String) -> Result<Box<RawValue>> {
    RawValue::from_string(text).map_err(|e| Error::new(ErrorKind::Internal, format!("the task store holds invalid JSON: {e}")))
}

fn empty_progress() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

fn opening_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::invalid_state(format!("cannot open the task store at {}: {reason}", path.display()))
}

/// Explains an open failure by what it means for the file.
fn open_db_error(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            opening_error(path, format!("the file is corrupt or is not an SQLite database ({e})"))
        }
        Some(ErrorCode::DiskFull) => opening_error(path, format!("the disk is full ({e})")),
        Some(ErrorCode::ReadOnly) => opening_error(path, format!("the file is read-only ({e})")),
        Some(ErrorCode::CannotOpen) => opening_error(path, format!("the file cannot be opened ({e})")),
        _ => opening_error(path, e),
    }
}

/// Checks the directory before SQLite sees it: SQLite reports a missing, read-only
/// or full directory as one "unable to open", which tells the user nothing.
fn check_directory(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(format!(
                "cannot open the task store at {}: the directory {} does not exist",
                path.display(),
                dir.display()
            )))
        }
        Err(e) => return Err(opening_error(path, format!("the directory {} cannot be read ({e})", dir.display()))),
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::invalid(format!("cannot open the task store at {}: {} is not a directory", path.display(), dir.display())))
        }
        Ok(_) => {}
    }
    if path.is_dir() {
        return Err(Error::invalid(format!("cannot open the task store at {}: it is a directory", path.display())));
    }
    // SQLite needs to create the -wal and -shm files beside the database, so the
    // directory must be writable even when the database file already exists.
    let probe = dir.join(format!(".storyflow-tasks-probe-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    let written = OpenOptions::new().write(true).create_new(true).open(&probe).and_then(|mut file| {
        let result = file.write_all(&[0u8; 4096]).and_then(|()| file.sync_all());
        drop(file);
        result
    });
    let _ = fs::remove_file(&probe);
    match written {
        Ok(()) => Ok(()),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Err(opening_error(path, format!("the disk is full ({e})"))),
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => {
                Err(opening_error(path, format!("the directory {} is read-only ({e})", dir.display())))
            }
            _ => Err(opening_error(path, format!("the directory {} cannot be written ({e})", dir.display()))),
        },
    }
}

fn connect(path: &Path, options: &SqliteOptions) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(64);
    // WAL lets readers of every process go on while one writes. NORMAL syncs the WAL
    // only at checkpoints: a committed transaction survives the death of any process
    // (the WAL is in the page cache), though not a power cut.
    // Switching a new file to WAL takes an exclusive lock for which SQLite does not call
    // the busy handler: processes opening a new file at once (an API server's workers
    // starting together) get SQLITE_BUSY here, so the switch is retried within the busy timeout.
    let started = std::time::Instant::now();
    let mode: String = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < options.busy_timeout =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => break other?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("the file system does not support WAL (journal_mode is {mode})")),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "journal_size_limit", options.journal_size_limit)?;
    Ok(conn)
}

/// Creates the schema in a new file, or checks that an existing one is ours and not newer
/// and upgrades one of an older schema.
fn prepare_schema(path: &Path, conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| open_db_error(path, e))?;
    let read = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<(i64, i64, i64)> {
        let version = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let app = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let tables = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok((version, app, tables))
    };
    let (mut version, app, tables) = read(&tx).map_err(|e| open_db_error(path, e))?;
    if app == 0 && version == 0 && tables == 0 {
        tx.execute_batch(SCHEMA).map_err(|e| open_db_error(path, e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(|e| open_db_error(path, e))?;
        version = 1;
    } else if app != APPLICATION_ID {
        return Err(opening_error(
            path,
            format!("it is an SQLite database of another application (application_id {app:#x}, {tables} schema objects)"),
        ));
    } else if version > SCHEMA_VERSION {
        return Err(opening_error(
            path,
            format!(
                "it has schema version {version}, newer than version {SCHEMA_VERSION} that this storyflow-tasks reads: \
                 open it with the newer storyflow-tasks that wrote it"
            ),
        ));
    } else if version < 1 {
        return Err(opening_error(path, format!("it has schema version {version}, which no storyflow-tasks wrote")));
    }
    if version < SCHEMA_VERSION {
        // Upgraded in the transaction of the check: every process that opens the file
        // afterwards sees the new schema, and a failed upgrade changes nothing.
        for migration in &MIGRATIONS[(version - 1) as usize..] {
            tx.execute_batch(migration).map_err(|e| open_db_error(path, e))?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| open_db_error(path, e))?;
    }
    tx.commit().map_err(|e| open_db_error(path, e))
}

/// Takes an exclusive flock on `file` without waiting: false if another open file holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Changes whenever another connection (of any process) committed to the file.
fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).ok()
}

fn quick_check(path: &Path, conn: &Connection) -> Result<()> {
    let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(|e| open_db_error(path, e))?;
    if verdict != "ok" {
        return Err(opening_error(path, format!("the file is corrupt (quick_check: {verdict})")));
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if missing) the store at `path` with default [`SqliteOptions`].
    pub fn open(path: impl AsRef<Path>, config: &Config) -> Result<Self> {
        Self::open_with(path, config, SqliteOptions::default())
    }

    /// Opens (creating if missing) the store at `path`.
    ///
    /// Fails with a message naming the cause for a missing or read-only
    /// directory, a corrupt file, a file of another application or of a newer
    /// schema, and a full disk; nothing is left running then.
    pub fn open_with(path: impl AsRef<Path>, config: &Config, options: SqliteOptions) -> Result<Self> {
        config.validate()?;
        if options.max_attempts == 0 {
            return Err(Error::invalid("max_attempts must be at least 1"));
        }
        let path = path.as_ref().to_path_buf();
        check_directory(&path)?;
        let mut writer = connect(&path, &options).map_err(|e| open_db_error(&path, e))?;
        if writer.is_readonly("main").map_err(|e| open_db_error(&path, e))? {
            return Err(opening_error(&path, "the file is read-only"));
        }
        prepare_schema(&path, &mut writer)?;
        if options.quick_check_on_open {
            quick_check(&path, &writer)?;
        }
        let readers =
            (0..2).map(|_| connect(&path, &options).map(Mutex::new).map_err(|e| open_db_error(&path, e))).collect::<Result<Vec<_>>>()?;

        // A per-boot identity: a reused name would let a restarted process inherit
        // (and a stale one finish) the leases of its previous life.
        let worker_id = format!("{}-{}-{}", host_name(), std::process::id(), uuid::Uuid::new_v4().simple());
        let lock_dir = PathBuf::from(format!("{}.workers", path.display()));
        fs::create_dir_all(&lock_dir).map_err(|e| opening_error(&path, format!("cannot create {}: {e}", lock_dir.display())))?;
        let lock_path = lock_dir.join(format!("{worker_id}.lock"));
        let lock_file = File::create(&lock_path)
            .and_then(|file| match try_lock(&file)? {
                true => Ok(file),
                false => Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "held by another process")),
            })
            .map_err(|e| opening_error(&path, format!("cannot lock {}: {e}", lock_path.display())))?;
        let registered = writer.execute(
            "INSERT INTO workers (worker_id, pid, host, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![worker_id, std::process::id(), host_name(), unix_now()],
        );
        if let Err(e) = registered {
            drop(lock_file);
            let _ = fs::remove_file(&lock_path);
            return Err(open_db_error(&path, e));
        }

        let inner = Arc::new(Inner {
            path,
            config: config.clone(),
            options,
            worker_id,
            lock_path,
            lock_file: Mutex::new(Some(lock_file)),
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            handlers: Mutex::new(HashSet::new()),
            live: Mutex::new(HashMap::new()),
            live_changed: Condvar::new(),
            flush_gate: RwLock::new(()),
            notifier: Notifier {
                generation: Mutex::new(Generation { value: 0, waiters: 0 }),
                changed: Condvar::new(),
                watch: Condvar::new(),
            },
            closed: AtomicBool::new(false),
        });
        // From here on a failure drops the handle, whose close withdraws the worker
        // row and the lock file again: a failed open leaves nothing behind.
        let store = Self { inner, threads: Mutex::new(Vec::new()) };
        store.start()?;
        Ok(store)
    }

    fn start(&self) -> Result<()> {
        let inner = &self.inner;
        // Tasks of workers that died while no process had the file open.
        inner.recover()?;
        // The watcher's baseline is read before the first waiter can look at the
        // file: a commit after it is a change the watcher will see.
        let watch_conn = connect(&inner.path, &inner.options).map_err(|e| open_db_error(&inner.path, e))?;
        let baseline = data_version(&watch_conn);
        let cannot_start = |e: std::io::Error| Error::new(ErrorKind::Internal, format!("cannot start the task store's threads: {e}"));
        let watcher = {
            let inner = inner.clone();
            std::thread::Builder::new().name("sft-store-watch".into()).spawn(move || inner.watch_loop(watch_conn, baseline))
        };
        lock(&self.threads).push(watcher.map_err(cannot_start)?);
        let housekeeper = {
            let inner = inner.clone();
            std::thread::Builder::new().name("sft-store-house".into()).spawn(move || inner.housekeeping_loop())
        };
        lock(&self.threads).push(housekeeper.map_err(cannot_start)?);
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Bytes the database and its WAL take on disk now.
    pub fn disk_usage(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.inner.path.display()));
        [self.inner.path.as_path(), wal.as_path()].iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// Commits every coalesced progress update now (normally the flush thread's job).
    pub fn flush_progress(&self) -> Result<()> {
        self.inner.flush_progress()
    }

    /// Runs a WAL checkpoint that truncates the WAL file, waiting for readers up to the busy timeout.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = lock(&self.inner.writer);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).db()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Store for SqliteStore {
    fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    fn register_handler(&self, handler: &str) -> Result<()> {
        self.inner.register_handler(handler)
    }

    fn submit(&self, task_id: Option<&str>, kind: TaskKind<'_>, schedule: Schedule) -> Result<TaskId> {
        self.inner.submit(task_id, kind, schedule)
    }

    fn status_json(&self, task_id: &str) -> Result<String> {
        self.inner.with_reader(|conn| self.inner.render(conn, task_id))?.ok_or_else(|| Error::not_found(task_id))
    }

    fn list_json(&self, filter: Option<TaskState>) -> Result<String> {
        self.inner.list_json(filter)
    }

    fn stats(&self) -> Result<Stats> {
        self.inner.stats()
    }

    fn is_cancel_requested(&self, task_id: &str) -> Result<bool> {
        let requested: Option<bool> = self.inner.with_reader(|conn| {
            conn.prepare_cached("SELECT cancel_requested FROM tasks WHERE task_id = ?1")
                .db()?
                .query_row([task_id], |r| r.get(0))
                .optional()
                .db()
        })?;
        requested.ok_or_else(|| Error::not_found(task_id))
    }

    fn update_progress(&self, task_id: &str, current: u64, total: u64, extra: Option<&Map<String, Value>>) -> Result<()> {
        self.inner.update_progress(task_id, current, total, extra)
    }

    fn add_segment(&self, task_id: &str, segment: &CompletedSegment) -> Result<()> {
        self.inner.add_segment(task_id, segment)
    }

    fn add_error(&self, task_id: &str, error: &SegmentError) -> Result<()> {
        self.inner.add_error(task_id, error)
    }

    fn set_checkpoint(&self, task_id: &str, checkpoint: &RawValue) -> Result<()> {
        self.inner.set_checkpoint(task_id, checkpoint)
    }

    fn set_failure_message(&self, task_id: &str, message: &str) -> Result<()> {
        self.inner.set_failure_message(task_id, message)
    }

    fn cancel(&self, task_id: &str) -> Result<TaskState> {
        self.inner.cancel(task_id)
    }

    fn claim_next(&self, timeout: Option<Duration>) -> Result<Option<Claim>> {
        self.inner.claim_next(timeout)
    }

    fn is_yield_requested(&self, task_id: &str) -> Result<bool> {
        let requested: Option<bool> = self.inner.with_reader(|conn| self.inner.yield_requested(conn, task_id))?;
        requested.ok_or_else(|| Error::not_found(task_id))
    }

    fn finish(&self, task_id: &str, outcome: TaskOutcome) -> Result<TaskState> {
        self.inner.finish(task_id, outcome)
    }

    fn wait(&self, task_id: &str, timeout: Option<Duration>) -> Result<String> {
        self.inner.wait_until(task_id, timeout, "finish", |state, _| state.is_finished())
    }

    fn wait_for_change(&self, task_id: &str, after_revision: u64, timeout: Option<Duration>) -> Result<String> {
        self.inner.wait_until(task_id, timeout, "change", |state, revision| revision > after_revision || state.is_finished())
    }

    fn wait_events(&self, after_seq: u64, max: usize, timeout: Option<Duration>) -> Result<Vec<TaskEvent>> {
        self.inner.wait_events(after_seq, max, timeout)
    }

    fn last_event_seq(&self) -> Result<u64> {
        self.inner
            .with_reader(|conn| conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get::<_, i64>(0)).db())
            .map(|seq| seq as u64)
    }

    fn collect_garbage(&self) -> Result<usize> {
        self.inner.collect_garbage()
    }

    fn recover(&self) -> Result<Recovery> {
        self.inner.recover()
    }

    fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.wake_everyone();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
        let flushed = self.inner.flush_progress();
        // What this handle still holds is handled as if its process had died, so
        // nothing it owned is left waiting for a worker that will never come.
        let released = self.inner.release_worker(&self.inner.worker_id);
        if let Some(file) = lock(&self.inner.lock_file).take() {
            drop(file);
            let _ = fs::remove_file(&self.inner.lock_path);
        }
        flushed.and(released.map(|_| ()))
    }
}

impl Inner {
    // ----- connections and notification ------------------------------------------

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.readers[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        f(&lock(&self.readers[start % n]))
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer connection and wakes this process's waiters.
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.writer);
        let before = conn.total_changes();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
        let value = f(&tx)?;
        tx.commit().db()?;
        let changed = conn.total_changes() != before;
        drop(conn);
        // A housekeeping pass that found nothing to do wakes nobody.
        if changed {
            self.changed();
        }
        Ok(value)
    }

    fn generation(&self) -> u64 {
        lock(&self.notifier.generation).value
    }

    fn changed(&self) {
        let mut generation = lock(&self.notifier.generation);
        generation.value += 1;
        if generation.waiters > 0 {
            self.notifier.changed.notify_all();
        }
    }

    /// Waits until the generation moves past `seen` or `deadline`; false at the deadline.
    fn wait_past(&self, seen: u64, deadline: Option<Instant>) -> bool {
        let mut generation = lock(&self.notifier.generation);
        generation.waiters += 1;
        if generation.waiters == 1 {
            self.notifier.watch.notify_all();
        }
        let mut woken = true;
        while generation.value == seen && !self.closed.load(Ordering::SeqCst) {
            match deadline {
                None => generation = self.notifier.changed.wait(generation).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        woken = false;
                        break;
                    }
                    generation = self.notifier.changed.wait_timeout(generation, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
        generation.waiters -= 1;
        woken
    }

    fn wake_everyone(&self) {
        let mut generation = lock(&self.notifier.generation);
        generation.value += 1;
        self.notifier.changed.notify_all();
        self.notifier.watch.notify_all();
        drop(generation);
        let _live = lock(&self.live);
        self.live_changed.notify_all();
    }

    /// Turns changes committed by other processes into wake-ups, and runs the periodic
    /// housekeeping: the liveness sweep, retention and idle checkpoints.
    /// Turns changes committed by other processes into wake-ups. It does nothing
    /// else, so no housekeeping write waiting on another process's lock delays a wake-up.
    fn watch_loop(self: Arc<Self>, conn: Connection, mut last_version: Option<i64>) {
        while !self.closed.load(Ordering::SeqCst) {
            {
                let generation = lock(&self.notifier.generation);
                if generation.waiters == 0 {
                    // Nobody waits: no reason to poll every millisecond.
                    let _ = self.notifier.watch.wait_timeout(generation, self.options.sweep_interval);
                } else {
                    drop(generation);
                    std::thread::sleep(self.options.change_poll_interval);
                }
            }
            let version = data_version(&conn);
            if version != last_version {
                last_version = version;
                self.changed();
            }
        }
    }

    /// Commits coalesced progress while this process runs a task, and runs the
    /// periodic housekeeping: the liveness sweep, retention and idle checkpoints.
    fn housekeeping_loop(self: Arc<Self>) {
        let mut last_sweep = Instant::now();
        let mut last_change = Instant::now();
        let mut seen = self.generation();
        let mut checkpointed = true;
        loop {
            let live = lock(&self.live);
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            if live.is_empty() {
                // Woken early by a submission with a deadline; never sleeps past the poll,
                // since another process may have submitted one.
                let _ = self.live_changed.wait_timeout(live, self.options.sweep_interval.min(DEADLINE_POLL));
            } else {
                drop(live);
                std::thread::sleep(self.options.progress_flush_interval.min(DEADLINE_POLL));
                let _ = self.flush_progress();
            }
            let _ = self.enforce_deadlines();
            let generation = self.generation();
            if generation != seen {
                seen = generation;
                last_change = Instant::now();
                checkpointed = false;
            }
            if last_sweep.elapsed() >= self.options.sweep_interval {
                last_sweep = Instant::now();
                let _ = self.recover();
                let _ = self.collect_garbage();
            }
            if !checkpointed && last_change.elapsed() >= self.options.idle_checkpoint_after {
                checkpointed = true;
                let _ = lock(&self.writer).query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        }
    }

    // ----- coalesced progress ------------------------------------------------------

    fn flush_progress(&self) -> Result<()> {
        let _gate = self.flush_gate.write().unwrap_or_else(|e| e.into_inner());
        let batch: Vec<(String, i64, Box<RawValue>, u64)> = lock(&self.live)
            .iter()
            .filter(|(_, live)| live.dirty)
            .filter_map(|(id, live)| Some((id.clone(), live.seq, live.progress.clone()?, live.version)))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut update = tx
                .prepare_cached(
                    "UPDATE tasks SET progress = ?2, revision = revision + 1 \
                 WHERE seq = ?1 AND state = 1 AND runner = ?3 RETURNING revision",
                )
                .db()?;
            for (task_id, seq, progress, _) in &batch {
                let revision: Option<i64> = update.query_row(params![seq, progress.get(), self.worker_id], |r| r.get(0)).optional().db()?;
                if let Some(revision) = revision {
                    self.record(tx, task_id, EventKind::Progress, TaskState::Processing, revision).db()?;
                }
            }
            Ok(())
        })?;
        let mut live = lock(&self.live);
        for (task_id, _, _, version) in &batch {
            if let Some(entry) = live.get_mut(task_id) {
                if entry.version == *version {
                    entry.dirty = false;
                }
            }
        }
        Ok(())
    }

    fn update_progress(&self, task_id: &str, current: u64, total: u64, extra: Option<&Map<String, Value>>) -> Result<()> {
        let progress = status::progress_json(current, total, extra)?;
        {
            let mut live = lock(&self.live);
            if let Some(entry) = live.get_mut(task_id) {
                entry.progress = Some(progress);
                entry.dirty = true;
                entry.version += 1;
                drop(live);
                // Waiters in this process see it at once; others when the flush commits it.
                let waiting = lock(&self.notifier.generation).waiters > 0;
                if waiting {
                    self.changed();
                }
                return Ok(());
            }
        }
        // Not run by this process: nothing to coalesce with, so it is written at once.
        self.mutate(task_id, |tx, head| {
            tx.prepare_cached("UPDATE tasks SET progress = ?2, revision = revision + 1 WHERE seq = ?1")
                .db()?
                .execute(params![head.seq, progress.get()])
                .db()?;
            Ok(Some(EventKind::Progress))
        })
    }

    // ----- events ----------------------------------------------------------------

    fn record(&self, tx: &Connection, task_id: &str, kind: EventKind, state: TaskState, revision: i64) -> rusqlite::Result<()> {
        tx.prepare_cached("INSERT INTO events (task_id, kind, state, revision) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
            task_id,
            kind_code(kind),
            state_code(state),
            revision
        ])?;
        let seq = tx.last_insert_rowid();
        // Steady state: one event in, the one that falls off the cap out.
        let cap = self.config.event_buffer_capacity as i64;
        tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?.execute([seq - cap])?;
        Ok(())
    }

    fn wait_events(&self, after_seq: u64, max: usize, timeout: Option<Duration>) -> Result<Vec<TaskEvent>> {
        if max == 0 {
            return Err(Error::invalid("max_events must be at least 1"));
        }
        let deadline = deadline_after(timeout);
        loop {
            let seen = self.generation();
            let events = self.with_reader(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT seq, task_id, kind, state, revision FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                    .db()?;
                let rows = stmt
                    .query_map(params![after_seq as i64, max as i64], |r| {
                        Ok(TaskEvent {
                            seq: r.get::<_, i64>(0)? as u64,
                            task_id: Arc::from(r.get::<_, String>(1)?),
                            kind: EVENT_KINDS.get(r.get::<_, i64>(2)? as usize).copied().unwrap_or(EventKind::Progress),
                            status: state_of(r.get(3)?),
                            revision: r.get::<_, i64>(4)? as u64,
                        })
                    })
                    .db()?;
                rows.collect::<rusqlite::Result<Vec<_>>>().db()
            })?;
            if !events.is_empty() {
                return Ok(events);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorKind::ShutDown, "the task store was closed"));
            }
            if !self.wait_past(seen, deadline) {
                return Err(Error::new(ErrorKind::Timeout, format!("no event after {after_seq} in time")));
            }
        }
    }

    // ----- reads -----------------------------------------------------------------

    /// Renders a task's status JSON from its rows, with this process's uncommitted progress.
    fn render(&self, conn: &Connection, task_id: &str) -> Result<Option<String>> {
        let _gate = self.flush_gate.read().unwrap_or_else(|e| e.into_inner());
        let tx = conn.unchecked_transaction().db()?;
        let row = tx
            .prepare_cached(
                "SELECT seq, state, progress, n_segments, n_errors, created_at, started_at, completed_at, message, \
                 revision, cancel_requested, handler, attempt, checkpoint, fifo, priority, deadline, yields \
                 FROM tasks WHERE task_id = ?1",
            )
            .db()?
            .query_row([task_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    state_of(r.get(1)?),
                    r.get::<_, Option<String>>(2)?,
                    (r.get::<_, i64>(3)?, r.get::<_, i64>(4)?),
                    (r.get::<_, f64>(5)?, r.get::<_, Option<f64>>(6)?, r.get::<_, Option<f64>>(7)?),
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, bool>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, i64>(12)?,
                    r.get::<_, Option<String>>(13)?,
                    (r.get::<_, i64>(14)?, r.get::<_, i32>(15)?, r.get::<_, Option<f64>>(16)?, r.get::<_, i64>(17)?),
                ))
            })
            .optional()
            .db()?;
        let Some((
            seq,
            state,
            progress,
            (n_segments, n_errors),
            times,
            message,
            revision,
            cancel,
            handler,
            attempt,
            checkpoint,
            (fifo, priority, deadline, yields),
        )) = row
        else {
            return Ok(None);
        };
        let bodies = |table: &str, n: i64| -> Result<Vec<Box<RawValue>>> {
            if n == 0 {
                return Ok(Vec::new());
            }
            let mut stmt = tx.prepare_cached(&format!("SELECT body FROM {table} WHERE task_seq = ?1 ORDER BY n")).db()?;
            let texts = stmt.query_map([seq], |r| r.get::<_, String>(0)).db()?;
            texts.map(|text| raw(text.db()?)).collect()
        };
        let completed_segments = bodies("segments", n_segments)?;
        let errors = bodies("segment_errors", n_errors)?;
        // A named task no live worker registered the handler of waits outside the line, as
        // in the memory store: its status says so with no queue position.
        let served = |handler: &str| -> Result<bool> {
            tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM worker_handlers WHERE handler = ?1)")
                .db()?
                .query_row([handler], |r| r.get(0))
                .db()
        };
        let waits_for_handler = match (&handler, state) {
            (Some(handler), TaskState::Pending) => !served(handler)?,
            _ => false,
        };
        let queue_position = if state == TaskState::Pending && !waits_for_handler {
            // Every pending task of a higher priority, then those ahead in its own.
            let ahead: i64 = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM tasks WHERE state = 0 AND priority > ?1) \
                          + (SELECT count(*) FROM tasks WHERE state = 0 AND priority = ?1 AND fifo < ?2)",
                )
                .db()?
                .query_row(params![priority, fifo], |r| r.get(0))
                .db()?;
            Some(ahead as u64)
        } else {
            None
        };
        let yield_requested = state == TaskState::Processing && self.yield_requested(&tx, task_id)?.unwrap_or(false);
        drop(tx);
        let (mut progress, mut revision) = (progress.map(raw).transpose()?.unwrap_or_else(empty_progress), revision as u64);
        if let Some(live) = lock(&self.live).get(task_id).filter(|live| live.dirty && live.seq == seq) {
            if let Some(latest) = &live.progress {
                progress = latest.clone();
                revision += 1;
            }
        }
        let status = StatusOut {
            task_id,
            status: state,
            progress,
            completed_segments,
            errors,
            created_at: times.0,
            started_at: times.1,
            completed_at: times.2,
            error: message.filter(|_| matches!(state, TaskState::Failed | TaskState::Cancelled)),
            revision,
            queue_position,
            cancel_requested: cancel,
            handler,
            attempt: attempt as u32,
            checkpoint: checkpoint.map(raw).transpose()?,
            priority,
            deadline,
            yield_requested,
            yields: yields as u32,
        };
        serde_json::to_string(&status).map(Some).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
    }

    /// The state and revision a waiter checks, with this process's uncommitted progress.
    fn peek(&self, task_id: &str) -> Result<Option<(TaskState, u64)>> {
        let _gate = self.flush_gate.read().unwrap_or_else(|e| e.into_inner());
        let row: Option<(i64, i64, i64)> = self.with_reader(|conn| {
            conn.prepare_cached("SELECT seq, state, revision FROM tasks WHERE task_id = ?1")
                .db()?
                .query_row([task_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .db()
        })?;
        Ok(row.map(|(seq, state, revision)| {
            let dirty = lock(&self.live).get(task_id).is_some_and(|live| live.dirty && live.seq == seq);
            (state_of(state), revision as u64 + u64::from(dirty))
        }))
    }

    fn wait_until(&self, task_id: &str, timeout: Option<Duration>, awaited: &str, done: impl Fn(TaskState, u64) -> bool) -> Result<String> {
        let deadline = deadline_after(timeout);
        loop {
            let seen = self.generation();
            let (state, revision) = self.peek(task_id)?.ok_or_else(|| Error::not_found(task_id))?;
            if done(state, revision) {
                return self.with_reader(|conn| self.render(conn, task_id))?.ok_or_else(|| Error::not_found(task_id));
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorKind::ShutDown, "the task store was closed"));
            }
            if !self.wait_past(seen, deadline) {
                return Err(Error::new(ErrorKind::Timeout, format!("task {task_id:?} did not {awaited} in time")));
            }
        }
    }

    fn list_json(&self, filter: Option<TaskState>) -> Result<String> {
        let ids: Vec<String> = self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached("SELECT task_id FROM tasks WHERE ?1 < 0 OR state = ?1 ORDER BY seq").db()?;
            let rows = stmt.query_map([filter.map_or(-1, state_code)], |r| r.get(0)).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })?;
        let mut statuses: Vec<Box<RawValue>> = Vec::with_capacity(ids.len());
        for id in &ids {
            // A task removed by retention between the two reads is simply not listed.
            if let Some(json) = self.with_reader(|conn| self.render(conn, id))? {
                statuses.push(raw(json)?);
            }
        }
        serde_json::to_string(&statuses).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
    }

    fn stats(&self) -> Result<Stats> {
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction().db()?;
            let mut retained = [0u64; 5];
            let mut totals = [0u64; 5];
            {
                let mut stmt = tx.prepare_cached("SELECT state, retained, total FROM counts").db()?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))).db()?;
                for row in rows {
                    let (state, kept, total) = row.db()?;
                    if let Some(i) = usize::try_from(state).ok().filter(|i| *i < 5) {
                        retained[i] = kept.max(0) as u64;
                        totals[i] = total.max(0) as u64;
                    }
                }
            }
            let (count, total, max): (i64, f64, f64) =
                tx.query_row("SELECT count, total, max FROM run_times", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).db()?;
            let pending_by_priority = {
                let mut stmt = tx
                    .prepare_cached("SELECT priority, count(*) FROM tasks WHERE state = 0 GROUP BY priority ORDER BY priority DESC")
                    .db()?;
                let rows =
                    stmt.query_map([], |r| Ok(PriorityPending { priority: r.get(0)?, pending: r.get::<_, i64>(1)?.max(0) as u64 })).db()?;
                rows.collect::<rusqlite::Result<Vec<_>>>().db()?
            };
            Ok(Stats {
                counts: StateCounts {
                    pending: retained[0],
                    processing: retained[1],
                    completed: retained[2],
                    failed: retained[3],
                    cancelled: retained[4],
                },
                queue_depth: retained[0],
                retained: retained.iter().sum(),
                submitted_total: totals[0],
                completed_total: totals[2],
                failed_total: totals[3],
                cancelled_total: totals[4],
                mean_run_secs: if count == 0 { 0.0 } else { total / count as f64 },
                max_run_secs: max,
                pending_by_priority,
            })
        })
    }

    // ----- submission and mutations -------------------------------------------------

    fn register_handler(&self, handler: &str) -> Result<()> {
        self.config.check_handler_name(handler)?;
        self.write(|tx| {
            tx.execute("INSERT OR IGNORE INTO worker_handlers (handler, worker_id) VALUES (?1, ?2)", params![handler, self.worker_id]).db()
        })?;
        lock(&self.handlers).insert(handler.to_owned());
        Ok(())
    }

    fn submit(&self, task_id: Option<&str>, kind: TaskKind<'_>, schedule: Schedule) -> Result<TaskId> {
        schedule.validate()?;
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::ShutDown, "the task store was closed"));
        }
        let task_id = self.config.task_id_or_new(task_id)?;
        let (handler, payload, owner) = match kind {
            TaskKind::Function => (None, None, Some(self.worker_id.as_str())),
            TaskKind::Named { handler, payload } => {
                self.config.check_handler_name(handler)?;
                (Some(handler), Some(payload.map_or("null", RawValue::get)), None)
            }
        };
        let now = unix_now();
        self.write(|tx| {
            if self.config.max_pending_tasks > 0 {
                let pending: i64 = tx.query_row("SELECT retained FROM counts WHERE state = 0", [], |r| r.get(0)).db()?;
                if pending as u64 >= self.config.max_pending_tasks {
                    let taken: bool =
                        tx.query_row("SELECT EXISTS (SELECT 1 FROM tasks WHERE task_id = ?1)", [&*task_id], |r| r.get(0)).db()?;
                    if taken {
                        return Err(duplicate_id(&task_id));
                    }
                    return Err(Error::new(
                        ErrorKind::QueueFull,
                        format!("the queue holds {pending} pending tasks, its configured maximum"),
                    ));
                }
            }
            let seq: i64 = tx.query_row("SELECT coalesce(max(seq), 0) + 1 FROM tasks", [], |r| r.get(0)).db()?;
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO tasks (seq, task_id, state, fifo, handler, payload, owner, created_at, priority, deadline) \
                     VALUES (?1, ?2, 0, ?1, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .db()?
                .execute(params![seq, &*task_id, handler, payload, owner, now, schedule.priority, schedule.deadline])
                .db()?;
            if inserted == 0 {
                return Err(duplicate_id(&task_id));
            }
            self.record(tx, &task_id, EventKind::Submitted, TaskState::Pending, 1).db()?;
            if schedule.deadline.is_some_and(|deadline| deadline <= now) {
                // Accepted (the clocks of two machines may disagree) and failed at once.
                self.fail_row(tx, seq, &task_id, 1, DEADLINE_PASSED_PENDING, now)?;
                self.enforce_retention_cap(tx)?;
            }
            Ok(())
        })?;
        if schedule.deadline.is_some() {
            // The sweep looks at its next deadline again.
            let _live = lock(&self.live);
            self.live_changed.notify_all();
        }
        Ok(task_id)
    }

    /// Applies `apply` to a PENDING or PROCESSING task in one transaction, and
    /// records the event it names (its UPDATE must bump the revision by one).
    fn mutate(&self, task_id: &str, apply: impl FnOnce(&rusqlite::Transaction<'_>, &RowHead) -> Result<Option<EventKind>>) -> Result<()> {
        self.write(|tx| {
            let head = self.head(tx, task_id)?;
            if head.state.is_finished() {
                return Err(already_finished(task_id, head.state));
            }
            // A handle that ran the task and lost its lease (found dead while it was
            // not) must not add to the attempt that replaced it.
            if lock(&self.live).contains_key(task_id) && head.runner.as_deref() != Some(self.worker_id.as_str()) {
                lock(&self.live).remove(task_id);
                return Err(lease_lost(task_id));
            }
            if let Some(kind) = apply(tx, &head)? {
                self.record(tx, task_id, kind, head.state, head.revision + 1).db()?;
            }
            Ok(())
        })
    }

    fn head(&self, tx: &Connection, task_id: &str) -> Result<RowHead> {
        tx.prepare_cached("SELECT seq, state, revision, n_segments, n_errors, cancel_requested, runner FROM tasks WHERE task_id = ?1")
            .db()?
            .query_row([task_id], |r| {
                Ok(RowHead {
                    seq: r.get(0)?,
                    state: state_of(r.get(1)?),
                    revision: r.get(2)?,
                    n_segments: r.get(3)?,
                    n_errors: r.get(4)?,
                    cancel_requested: r.get(5)?,
                    runner: r.get(6)?,
                })
            })
            .optional()
            .db()?
            .ok_or_else(|| Error::not_found(task_id))
    }

    fn add_segment(&self, task_id: &str, segment: &CompletedSegment) -> Result<()> {
        if !segment.duration.is_finite() || segment.duration < 0.0 {
            return Err(Error::invalid(format!("duration must be finite and >= 0, not {}", segment.duration)));
        }
        self.config.check_segment_id(&segment.segment_id)?;
        self.config.check_url(&segment.audio_url)?;
        let body = status::to_raw(segment)?;
        self.append_report(task_id, body.get(), true)
    }

    fn add_error(&self, task_id: &str, error: &SegmentError) -> Result<()> {
        self.config.check_segment_id(&error.segment_id)?;
        self.config.check_message("error message", &error.error)?;
        let body = status::to_raw(error)?;
        self.append_report(task_id, body.get(), false)
    }

    /// Appends a segment or segment error as a row of its own: the cost of an
    /// append does not grow with the segments already there.
    fn append_report(&self, task_id: &str, body: &str, segment: bool) -> Result<()> {
        let (cap, what) = if segment {
            (self.config.max_segments_per_task, "completed segments")
        } else {
            (self.config.max_errors_per_task, "segment errors")
        };
        self.mutate(task_id, |tx, head| {
            let n = if segment { head.n_segments } else { head.n_errors };
            if n as usize >= cap {
                return Err(Error::invalid(format!("task already has {n} {what}, the configured maximum")));
            }
            let (bump, insert, kind) = if segment {
                (
                    "UPDATE tasks SET n_segments = n_segments + 1, revision = revision + 1 WHERE seq = ?1",
                    "INSERT INTO segments (task_seq, n, body) VALUES (?1, ?2, ?3)",
                    EventKind::Segment,
                )
            } else {
                (
                    "UPDATE tasks SET n_errors = n_errors + 1, revision = revision + 1 WHERE seq = ?1",
                    "INSERT INTO segment_errors (task_seq, n, body) VALUES (?1, ?2, ?3)",
                    EventKind::Error,
                )
            };
            tx.prepare_cached(bump).db()?.execute([head.seq]).db()?;
            tx.prepare_cached(insert).db()?.execute(params![head.seq, n, body]).db()?;
            Ok(Some(kind))
        })
    }

    fn set_checkpoint(&self, task_id: &str, checkpoint: &RawValue) -> Result<()> {
        self.config.check_checkpoint_json(checkpoint.get())?;
        self.mutate(task_id, |tx, head| {
            tx.prepare_cached("UPDATE tasks SET checkpoint = ?2, revision = revision + 1 WHERE seq = ?1")
                .db()?
                .execute(params![head.seq, checkpoint.get()])
                .db()?;
            // The feed has no kind of its own for a checkpoint; it is the task's progress.
            Ok(Some(EventKind::Progress))
        })
    }

    fn set_failure_message(&self, task_id: &str, message: &str) -> Result<()> {
        self.config.check_message("failure message", message)?;
        self.mutate(task_id, |tx, head| {
            tx.prepare_cached("UPDATE tasks SET message = ?2 WHERE seq = ?1").db()?.execute(params![head.seq, message]).db()?;
            Ok(None)
        })
    }

    fn cancel(&self, task_id: &str) -> Result<TaskState> {
        let now = unix_now();
        self.write(|tx| {
            let head = self.head(tx, task_id)?;
            match head.state {
                TaskState::Pending => {
                    tx.prepare_cached(
                        "UPDATE tasks SET state = 4, message = 'cancelled before it started', completed_at = ?2, \
                         revision = revision + 1 WHERE seq = ?1",
                    )
                    .db()?
                    .execute(params![head.seq, now])
                    .db()?;
                    self.record(tx, task_id, EventKind::Finished, TaskState::Cancelled, head.revision + 1).db()?;
                    self.enforce_retention_cap(tx)?;
                    Ok(TaskState::Cancelled)
                }
                TaskState::Processing => {
                    if !head.cancel_requested {
                        tx.prepare_cached("UPDATE tasks SET cancel_requested = 1, revision = revision + 1 WHERE seq = ?1")
                            .db()?
                            .execute([head.seq])
                            .db()?;
                        self.record(tx, task_id, EventKind::CancelRequested, TaskState::Processing, head.revision + 1).db()?;
                    }
                    Ok(TaskState::Processing)
                }
                finished => Err(already_finished(task_id, finished)),
            }
        })
    }

    // ----- the worker's side: claim and finish ------------------------------------------

    fn claim_next(&self, timeout: Option<Duration>) -> Result<Option<Claim>> {
        let deadline = deadline_after(timeout);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorKind::ShutDown, "the task store was closed"));
            }
            let seen = self.generation();
            if let Some(claim) = self.try_claim()? {
                return Ok(Some(claim));
            }
            if !self.wait_past(seen, deadline) {
                return Ok(None);
            }
        }
    }

    /// The next task in claim order (priority descending, then `fifo`) among tasks some live
    /// worker can run and whose deadline has not passed, if nothing runs anywhere.
    fn queue_head(&self, conn: &Connection) -> rusqlite::Result<Option<QueueHead>> {
        let running: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 1)", [], |r| r.get(0))?;
        if running {
            return Ok(None);
        }
        // A named task whose handler no worker registered does not hold up the
        // tasks behind it; a function task waits for its owner's turn.
        conn.prepare_cached(
            "SELECT seq, task_id, handler, owner FROM tasks AS t WHERE state = 0 \
               AND (deadline IS NULL OR deadline > ?1) AND ( \
                 (handler IS NULL AND EXISTS (SELECT 1 FROM workers AS w WHERE w.worker_id = t.owner)) \
              OR (handler IS NOT NULL AND EXISTS (SELECT 1 FROM worker_handlers AS h WHERE h.handler = t.handler))) \
             ORDER BY priority DESC, fifo LIMIT 1",
        )?
        .query_row([unix_now()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()
    }

    fn is_mine(&self, handler: &Option<String>, owner: &Option<String>) -> bool {
        match handler {
            None => owner.as_deref() == Some(self.worker_id.as_str()),
            Some(handler) => lock(&self.handlers).contains(handler),
        }
    }

    fn try_claim(&self) -> Result<Option<Claim>> {
        // Looked at on a reader first: an idle worker woken by every change in the
        // file must not take the write lock each time.
        let head = self.with_reader(|conn| self.queue_head(conn).db())?;
        match &head {
            Some((_, _, handler, owner)) if self.is_mine(handler, owner) => {}
            _ => return Ok(None),
        }
        let now = unix_now();
        let claim = self.write(|tx| {
            let Some((seq, task_id, handler, owner)) = self.queue_head(tx).db()? else { return Ok(None) };
            if !self.is_mine(&handler, &owner) {
                return Ok(None);
            }
            // A task resumed after a yield goes on with its attempt.
            let (revision, attempt, payload, checkpoint, yields): (i64, i64, Option<String>, Option<String>, i64) = tx
                .prepare_cached(
                    "UPDATE tasks SET state = 1, runner = ?2, attempt = attempt + 1 - resuming, resuming = 0, started_at = ?3, \
                     revision = revision + 1 WHERE seq = ?1 RETURNING revision, attempt, payload, checkpoint, yields",
                )
                .db()?
                .query_row(params![seq, self.worker_id, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .db()?;
            self.record(tx, &task_id, EventKind::Started, TaskState::Processing, revision).db()?;
            Ok(Some((seq, task_id, handler, attempt, payload, checkpoint, yields)))
        })?;
        let Some((seq, task_id, handler, attempt, payload, checkpoint, yields)) = claim else {
            return Ok(None);
        };
        lock(&self.live).insert(task_id.clone(), Live { seq, progress: None, dirty: false, version: 0 });
        self.live_changed.notify_all();
        Ok(Some(Claim {
            task_id: Arc::from(task_id),
            run: true,
            handler,
            payload: payload.map(raw).transpose()?,
            attempt: attempt as u32,
            checkpoint: checkpoint.map(raw).transpose()?,
            yields: yields as u32,
        }))
    }

    fn finish(&self, task_id: &str, outcome: TaskOutcome) -> Result<TaskState> {
        if let TaskOutcome::Failed(TaskFailure::Message(message)) = &outcome {
            self.config.check_message("failure message", message)?;
        }
        let now = unix_now();
        let _gate = self.flush_gate.write().unwrap_or_else(|e| e.into_inner());
        let latest = lock(&self.live).get(task_id).filter(|live| live.dirty).and_then(|live| live.progress.clone());
        let result = self.write(|tx| {
            let row: Option<FinishRow> = tx
                .prepare_cached(
                    "SELECT seq, state, runner, cancel_requested, started_at, message, revision, priority, deadline \
                     FROM tasks WHERE task_id = ?1",
                )
                .db()?
                .query_row([task_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
                })
                .optional()
                .db()?;
            let Some((seq, state, runner, cancel_requested, started_at, message, revision, priority, deadline)) = row else {
                return Err(Error::not_found(task_id));
            };
            if state_of(state) != TaskState::Processing || runner.as_deref() != Some(self.worker_id.as_str()) {
                return Err(Error::invalid_state(format!(
                    "task {task_id:?} is {} and not running under this worker, so it cannot finish it",
                    state_of(state).as_str()
                )));
            }
            let late = deadline.is_some_and(|deadline| deadline <= now);
            let revision_step = 1 + i64::from(latest.is_some());
            let (final_state, message) = match (&outcome, cancel_requested) {
                (_, CANCEL_BY_DEADLINE) => (TaskState::Cancelled, Some(DEADLINE_PASSED_RUNNING.to_owned())),
                (_, CANCEL_BY_REQUEST) => (TaskState::Cancelled, Some("cancelled while running".to_owned())),
                (TaskOutcome::Yielded, _) if late => (TaskState::Cancelled, Some(DEADLINE_PASSED_RUNNING.to_owned())),
                (TaskOutcome::Yielded, _) => {
                    // Back at the head of its priority, ahead of every pending task of it; the
                    // state and the lease's release are one statement, as for a final state.
                    let changed = tx
                        .prepare_cached(
                            "UPDATE tasks SET state = 0, runner = NULL, started_at = NULL, yields = yields + 1, resuming = 1, \
                             progress = coalesce(?4, progress), revision = revision + ?5, \
                             fifo = (SELECT coalesce(min(fifo), ?1) FROM tasks WHERE state = 0 AND priority = ?3) - 1 \
                             WHERE seq = ?1 AND state = 1 AND runner = ?2",
                        )
                        .db()?
                        .execute(params![seq, self.worker_id, priority, latest.as_ref().map(|p| p.get()), revision_step])
                        .db()?;
                    if changed != 1 {
                        return Err(lease_lost(task_id));
                    }
                    self.record(tx, task_id, EventKind::Yielded, TaskState::Pending, revision + revision_step).db()?;
                    return Ok(TaskState::Pending);
                }
                (TaskOutcome::Completed, _) => (TaskState::Completed, message),
                (TaskOutcome::Failed(TaskFailure::Message(text)), _) => (TaskState::Failed, Some(text.clone())),
                (TaskOutcome::Failed(TaskFailure::Code(code)), _) => {
                    (TaskState::Failed, Some(message.unwrap_or_else(|| format!("task function returned {code}"))))
                }
            };
            // The final state and the lease's release are one statement: no window in
            // which the task is finished but still leased, or released but not finished.
            let changed = tx
                .prepare_cached(
                    "UPDATE tasks SET state = ?3, message = ?4, completed_at = ?5, runner = NULL, \
                     progress = coalesce(?6, progress), revision = revision + ?7 \
                     WHERE seq = ?1 AND state = 1 AND runner = ?2",
                )
                .db()?
                .execute(params![
                    seq,
                    self.worker_id,
                    state_code(final_state),
                    message,
                    now,
                    latest.as_ref().map(|p| p.get()),
                    revision_step
                ])
                .db()?;
            if changed != 1 {
                return Err(lease_lost(task_id));
            }
            let ran = (now - started_at.unwrap_or(now)).max(0.0);
            tx.prepare_cached("UPDATE run_times SET count = count + 1, total = total + ?1, max = max(max, ?1)")
                .db()?
                .execute([ran])
                .db()?;
            self.record(tx, task_id, EventKind::Finished, final_state, revision + revision_step).db()?;
            self.enforce_retention_cap(tx)?;
            Ok(final_state)
        });
        // Finished, or not this handle's to finish: nothing to flush for it any more.
        // After a failed write (a full disk, a long lock) it stays, so a retry can finish it.
        if result.is_ok()
            || matches!(&result, Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidState) && !e.message().contains("task store"))
        {
            lock(&self.live).remove(task_id);
        }
        result
    }

    /// Whether the task is PROCESSING while a higher-priority task some live worker can run
    /// waits; `None` for an unknown task. Two index lookups, no write.
    fn yield_requested(&self, conn: &Connection, task_id: &str) -> Result<Option<bool>> {
        conn.prepare_cached(YIELD_REQUESTED).db()?.query_row(params![task_id, unix_now()], |r| r.get(0)).optional().db()
    }

    // ----- deadlines ---------------------------------------------------------------

    /// The earliest deadline still to act on: of a pending task, or of a running one not yet
    /// asked to cancel. One read of the deadline index.
    fn next_deadline(&self) -> Result<Option<f64>> {
        self.with_reader(|conn| {
            conn.prepare_cached(
                "SELECT min(deadline) FROM tasks WHERE deadline IS NOT NULL AND state < 2 \
                 AND (state = 0 OR cancel_requested = 0)",
            )
            .db()?
            .query_row([], |r| r.get(0))
            .db()
        })
    }

    /// Fails every pending task whose deadline passed and asks a running one past its
    /// deadline to cancel; returns how many tasks it changed. Every process's sweep may do
    /// it: the statements only touch tasks still in those states.
    fn enforce_deadlines(&self) -> Result<usize> {
        let now = unix_now();
        if self.next_deadline()?.is_none_or(|deadline| deadline > now) {
            return Ok(0);
        }
        self.write(|tx| {
            let due: Vec<(i64, String, i64, i64)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, task_id, state, revision FROM tasks WHERE deadline IS NOT NULL AND deadline <= ?1 \
                         AND state < 2 AND (state = 0 OR cancel_requested = 0)",
                    )
                    .db()?;
                let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).db()?;
                rows.collect::<rusqlite::Result<_>>().db()?
            };
            for (seq, task_id, state, revision) in &due {
                if state_of(*state) == TaskState::Pending {
                    self.fail_row(tx, *seq, task_id, *revision, DEADLINE_PASSED_PENDING, now)?;
                } else {
                    tx.prepare_cached("UPDATE tasks SET cancel_requested = ?2, revision = revision + 1 WHERE seq = ?1")
                        .db()?
                        .execute(params![seq, CANCEL_BY_DEADLINE])
                        .db()?;
                    self.record(tx, task_id, EventKind::CancelRequested, TaskState::Processing, revision + 1).db()?;
                }
            }
            self.enforce_retention_cap(tx)?;
            Ok(due.len())
        })
    }

    // ----- retention ---------------------------------------------------------------

    /// Evicts the oldest finished tasks past `max_retained_finished`, at most a batch.
    fn enforce_retention_cap(&self, tx: &Connection) -> Result<()> {
        let cap = self.config.max_retained_finished;
        if cap == 0 {
            return Ok(());
        }
        let finished: i64 =
            tx.prepare_cached("SELECT sum(retained) FROM counts WHERE state >= 2").db()?.query_row([], |r| r.get(0)).db()?;
        let excess = finished - cap as i64;
        if excess > 0 {
            tx.prepare_cached(
                "DELETE FROM tasks WHERE seq IN \
                 (SELECT seq FROM tasks WHERE state >= 2 ORDER BY completed_at LIMIT ?1)",
            )
            .db()?
            .execute([excess.min(RETENTION_BATCH)])
            .db()?;
        }
        Ok(())
    }

    fn collect_garbage(&self) -> Result<usize> {
        let cutoff = unix_now() - self.config.cleanup_threshold_secs;
        let cap = self.config.event_buffer_capacity as i64;
        let removed = self.write(|tx| {
            let removed = tx
                .prepare_cached(
                    "DELETE FROM tasks WHERE seq IN \
                     (SELECT seq FROM tasks WHERE state >= 2 AND completed_at <= ?1 ORDER BY completed_at LIMIT ?2)",
                )
                .db()?
                .execute(params![cutoff, RETENTION_BATCH])
                .db()?;
            tx.prepare_cached(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= \
                 (SELECT max(seq) FROM events) - ?1 ORDER BY seq LIMIT ?2)",
            )
            .db()?
            .execute(params![cap, EVENT_TRIM_BATCH])
            .db()?;
            self.enforce_retention_cap(tx)?;
            Ok(removed)
        })?;
        Ok(removed)
    }

    // ----- liveness and recovery ------------------------------------------------------

    /// Whether the process holding `worker_id`'s lock file is alive.
    ///
    /// The lock is an flock: the kernel drops it when the process dies however it
    /// dies, and a new process can never be mistaken for the old one (a pid can).
    fn is_alive(&self, worker_id: &str) -> bool {
        if worker_id == self.worker_id {
            return true;
        }
        let path = self.lock_path.with_file_name(format!("{worker_id}.lock"));
        match File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
            // Locked by us, its holder is gone; unknown trouble counts as alive.
            Ok(file) => !try_lock(&file).unwrap_or(false),
        }
    }

    fn recover(&self) -> Result<Recovery> {
        let workers: Vec<String> = self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached("SELECT worker_id FROM workers").db()?;
            let rows = stmt.query_map([], |r| r.get(0)).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })?;
        let mut recovery = Recovery::default();
        for worker in workers.into_iter().filter(|w| !self.is_alive(w)) {
            let released = self.release_worker(&worker)?;
            recovery.requeued.extend(released.requeued);
            recovery.failed.extend(released.failed);
            let _ = fs::remove_file(self.lock_path.with_file_name(format!("{worker}.lock")));
            recovery.dead_workers.push(worker);
        }
        Ok(recovery)
    }

    /// Gives up everything `worker` holds, in one transaction: its running named
    /// task goes back to the head of the queue (or fails out of attempts), its
    /// function tasks fail, and its identity and handlers are removed.
    fn release_worker(&self, worker: &str) -> Result<Recovery> {
        let now = unix_now();
        let max_attempts = i64::from(self.options.max_attempts);
        self.write(|tx| {
            let mut recovery = Recovery::default();
            let running: Vec<(i64, String, Option<String>, i64, i64)> = {
                let mut stmt =
                    tx.prepare_cached("SELECT seq, task_id, handler, attempt, revision FROM tasks WHERE state = 1 AND runner = ?1").db()?;
                let rows = stmt.query_map([worker], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).db()?;
                rows.collect::<rusqlite::Result<_>>().db()?
            };
            for (seq, task_id, handler, attempt, revision) in running {
                let failure = match handler {
                    Some(_) if attempt < max_attempts => None,
                    Some(_) => Some(format!(
                        "it kept being interrupted: the process running it exited during each of its {attempt} starts \
                         (max_attempts is {max_attempts})"
                    )),
                    None => Some("its process exited while it was running".to_owned()),
                };
                match failure {
                    None => {
                        tx.prepare_cached(
                            "UPDATE tasks SET state = 0, runner = NULL, started_at = NULL, revision = revision + 1, \
                             fifo = (SELECT coalesce(min(fifo), ?2) FROM tasks WHERE state = 0 \
                                     AND priority = (SELECT priority FROM tasks WHERE seq = ?1)) - 1 WHERE seq = ?1",
                        )
                        .db()?
                        .execute(params![seq, seq])
                        .db()?;
                        self.record(tx, &task_id, EventKind::Submitted, TaskState::Pending, revision + 1).db()?;
                        recovery.requeued.push(Arc::from(task_id));
                    }
                    Some(message) => {
                        self.fail_row(tx, seq, &task_id, revision, &message, now)?;
                        recovery.failed.push(Arc::from(task_id));
                    }
                }
            }
            let pending: Vec<(i64, String, i64)> = {
                let mut stmt = tx.prepare_cached("SELECT seq, task_id, revision FROM tasks WHERE state = 0 AND owner = ?1").db()?;
                let rows = stmt.query_map([worker], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).db()?;
                rows.collect::<rusqlite::Result<_>>().db()?
            };
            for (seq, task_id, revision) in pending {
                self.fail_row(tx, seq, &task_id, revision, "its process exited before it ran", now)?;
                recovery.failed.push(Arc::from(task_id));
            }
            tx.prepare_cached("DELETE FROM worker_handlers WHERE worker_id = ?1").db()?.execute([worker]).db()?;
            tx.prepare_cached("DELETE FROM workers WHERE worker_id = ?1").db()?.execute([worker]).db()?;
            self.enforce_retention_cap(tx)?;
            Ok(recovery)
        })
    }

    fn fail_row(&self, tx: &Connection, seq: i64, task_id: &str, revision: i64, message: &str, now: f64) -> Result<()> {
        tx.prepare_cached(
            "UPDATE tasks SET state = 3, runner = NULL, message = ?2, completed_at = ?3, revision = revision + 1 WHERE seq = ?1",
        )
        .db()?
        .execute(params![seq, message, now])
        .db()?;
        self.record(tx, task_id, EventKind::Finished, TaskState::Failed, revision + 1).db()
    }
}

fn already_finished(task_id: &str, state: TaskState) -> Error {
    Error::invalid_state(format!("task {task_id:?} already finished as {}", state.as_str()))
}

fn lease_lost(task_id: &str) -> Error {
    Error::invalid_state(format!("task {task_id:?} is no longer leased to this worker"))
}

fn duplicate_id(task_id: &str) -> Error {
    Error::new(ErrorKind::DuplicateId, format!("a task with id {task_id:?} already exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_codes_round_trip() {
        for (code, state) in TaskState::ALL.into_iter().enumerate() {
            assert_eq!(state_code(state), code as i64);
            assert_eq!(state_of(code as i64), state);
        }
        for kind in EVENT_KINDS {
            assert_eq!(EVENT_KINDS[kind_code(kind) as usize], kind);
        }
    }

    #[test]
    fn the_schema_enforces_one_processing_task() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare_schema(Path::new(":memory:"), &mut conn).unwrap();
        let insert = "INSERT INTO tasks (seq, task_id, state, fifo, created_at) VALUES (?1, ?2, ?3, ?1, 0)";
        conn.execute(insert, params![1, "a", 1]).unwrap();
        conn.execute(insert, params![2, "b", 0]).unwrap();
        let second = conn.execute("UPDATE tasks SET state = 1 WHERE task_id = 'b'", []);
        assert_eq!(second.unwrap_err().sqlite_error_code(), Some(ErrorCode::ConstraintViolation));
        let counts: Vec<(i64, i64)> = conn
            .prepare("SELECT retained, total FROM counts ORDER BY state")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(&counts[..2], &[(1, 1), (1, 1)]);
    }

    #[test]
    fn a_file_of_the_first_schema_opens_upgraded_with_its_tasks_kept() {
        let dir = std::env::temp_dir().join(format!("sft-migrate-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            // What a storyflow-tasks of schema version 1 wrote: a queued named task and a
            // requeued one at the head of the line.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let insert =
                "INSERT INTO tasks (seq, task_id, state, fifo, handler, payload, created_at) VALUES (?1, ?2, 0, ?3, 'h', 'null', 0)";
            conn.execute(insert, params![1, "queued", 1]).unwrap();
            conn.execute(insert, params![2, "requeued", 0]).unwrap();
        }
        let store = SqliteStore::open(&path, &Config::default()).unwrap();
        let version: i64 = lock(&store.inner.writer).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        store.register_handler("h").unwrap();
        let status: serde_json::Value = serde_json::from_str(&store.status_json("queued").unwrap()).unwrap();
        assert_eq!(
            (status["priority"].as_i64(), status["yields"].as_u64(), status["queue_position"].as_u64()),
            (Some(0), Some(0), Some(1))
        );
        assert!(status["deadline"].is_null());
        store.submit(Some("urgent"), TaskKind::Named { handler: "h", payload: None }, Schedule::with_priority(1)).unwrap();
        let order: Vec<String> = (0..3)
            .map(|_| {
                let claim = store.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
                store.finish(&claim.task_id, TaskOutcome::Completed).unwrap();
                claim.task_id.to_string()
            })
            .collect();
        assert_eq!(order, ["urgent", "requeued", "queued"]);
        store.close().unwrap();
        // Opening it again finds it current: nothing more to do.
        SqliteStore::open(&path, &Config::default()).unwrap().close().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_file_has_the_schema_an_upgraded_one_has() {
        let schema = |conn: &Connection| -> Vec<String> {
            let mut stmt = conn.prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name").unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
            rows.collect::<rusqlite::Result<_>>().unwrap()
        };
        let mut fresh = Connection::open_in_memory().unwrap();
        prepare_schema(Path::new(":memory:"), &mut fresh).unwrap();
        let mut old = Connection::open_in_memory().unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        old.pragma_update(None, "user_version", 1).unwrap();
        prepare_schema(Path::new(":memory:"), &mut old).unwrap();
        assert_eq!(schema(&fresh), schema(&old));
    }

    #[test]
    fn a_second_schema_preparation_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare_schema(Path::new(":memory:"), &mut conn).unwrap();
        prepare_schema(Path::new(":memory:"), &mut conn).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
