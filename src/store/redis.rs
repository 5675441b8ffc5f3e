//! The Redis store: one registry and one queue shared by every process of every machine
//! connected to one server (and one key namespace).
//!
//! Every transition is one Lua script (`redis.lua`, run with EVALSHA), so it is atomic on
//! the server. A claim takes the first task by (priority, fifo) that this worker may run,
//! if its machine's slot is free, and holds it under a lease token that every later write
//! of the running task is checked against: a worker found dead while it was not (a long
//! pause, a partition) is refused, as BullMQ's `moveToFinished` refuses a stale job lock.
//! Liveness is a heartbeat in a sorted set, renewed by a thread of this handle (never the
//! task's thread, which native TTS code may hold for long). The change feed is a capped
//! stream whose entry ids are the event sequence numbers; while a thread of this process
//! waits, one thread per handle follows it with a blocking read and wakes the waiters.
//!
//! Connections come from a small pool; a connection that fails is dropped, the next call
//! opens a new one (after a short backoff while the server stays away), so the store
//! reconnects by itself after an outage or a restart. Every call made while the server is
//! unreachable fails with an error that says so; nothing is acknowledged before Redis
//! replied.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Script, Value};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

use super::{Claim, Recovery, StatusOut, Store, TaskKind};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventKind, TaskEvent};
use crate::stats::{PriorityPending, StateCounts, Stats};
use crate::status::{self, CompletedSegment, SegmentError, TaskState};
use crate::sync::{deadline_after, lock};
use crate::TaskId;
use crate::{Schedule, TaskFailure, TaskOutcome, DEADLINE_PASSED_PENDING, DEADLINE_PASSED_RUNNING};

/// The scripts: a prelude shared by all, then one section per script.
const SCRIPTS: &str = include_str!("redis.lua");

/// The environment variable naming this machine when the configuration does not.
pub const MACHINE_ENV_VAR: &str = "STORYFLOW_TASKS_MACHINE";

/// Most task statuses one status script renders (a listing is several calls).
const STATUS_BATCH: usize = 256;
/// How long the change feed is still followed after the last waiter of this process left.
const WATCH_GRACE: Duration = Duration::from_secs(1);
/// The longest pause between two tries to reach the server.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Event kinds as the scripts number them.
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
/// The kind numbers of the events that may make a task claimable: submitted, finished, yielded.
const QUEUE_KINDS: [usize; 3] = [0, 6, 7];

/// Settings of the Redis store that the manager's [`Config`] does not hold.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// This handle's machine; `None`: the configuration's `machine_id`, else
    /// `STORYFLOW_TASKS_MACHINE`, else /etc/machine-id, else the host name.
    pub machine_id: Option<String>,
    /// How many times a named task may be started before an interruption makes it FAILED.
    pub max_attempts: u32,
    /// How long a heartbeat keeps a worker alive: a worker silent for longer is dead.
    pub lease: Duration,
    /// How often the heartbeat is renewed (well under `lease`).
    pub heartbeat_interval: Duration,
    /// How often dead workers are looked for and retention runs.
    pub sweep_interval: Duration,
    /// How often coalesced progress is written (at most 100 ms by contract).
    pub progress_flush_interval: Duration,
    /// How often passed deadlines are looked for (the contract allows 100 ms).
    pub deadline_interval: Duration,
    /// How often the answer of `is_yield_requested` is refreshed for the tasks run here.
    pub yield_refresh_interval: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long one command may take before the server counts as unreachable.
    pub command_timeout: Duration,
    /// How long `finish` retries while the server is unreachable, before it reports the
    /// error (the worker has nothing else to do until the task's end is written).
    pub finish_retry_for: Duration,
    /// Whether `finish` also claims this handle's next task in the same round trip, for
    /// the next `claim_next` (a worker's loop: the manager sets it). A claim not taken by
    /// the time the handle closes is handed back, its attempt as before.
    pub claim_on_finish: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            machine_id: None,
            max_attempts: 3,
            lease: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(1),
            progress_flush_interval: Duration::from_millis(20),
            deadline_interval: Duration::from_millis(50),
            yield_refresh_interval: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(10),
            finish_retry_for: Duration::from_secs(60),
            claim_on_finish: false,
        }
    }
}

/// The scripts, loaded once per process (EVALSHA; a server that lost them is given them again).
struct Scripts {
    register_worker: Script,
    register_handler: Script,
    heartbeat: Script,
    reap: Script,
    release_worker: Script,
    submit: Script,
    claim: Script,
    append: Script,
    set_field: Script,
    flush_progress: Script,
    cancel: Script,
    finish: Script,
    deadlines: Script,
    yield_wanted: Script,
    status: Script,
    peek: Script,
    collect: Script,
    unclaim: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS_ONCE: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS_ONCE.get_or_init(|| {
        let mut sections = SCRIPTS.split("\n--@@ ");
        let prelude = sections.next().unwrap_or_default();
        let mut by_name: HashMap<&str, String> = HashMap::new();
        for section in sections {
            let (name, body) = section.split_once('\n').unwrap_or((section, ""));
            by_name.insert(name.trim(), format!("{prelude}\n{body}"));
        }
        let take = |name: &str| Script::new(by_name.get(name).unwrap_or_else(|| panic!("redis.lua has no script {name}")));
        Scripts {
            register_worker: take("register_worker"),
            register_handler: take("register_handler"),
            heartbeat: take("heartbeat"),
            reap: take("reap"),
            release_worker: take("release_worker"),
            submit: take("submit"),
            claim: take("claim"),
            append: take("append"),
            set_field: take("set_field"),
            flush_progress: take("flush_progress"),
            cancel: take("cancel"),
            finish: take("finish"),
            deadlines: take("deadlines"),
            yield_wanted: take("yield_wanted"),
            status: take("status"),
            peek: take("peek"),
            collect: take("collect"),
            unclaim: take("unclaim"),
        }
    })
}

// ----- connections -------------------------------------------------------------------

/// When the server was last found unreachable, and how long to leave it be.
struct Outage {
    retry_at: Instant,
    backoff: Duration,
    reason: String,
}

/// A few connections to one server, opened on demand, dropped when they fail.
struct Pool {
    client: redis::Client,
    /// Where the server is, for errors ("127.0.0.1:6379/0").
    address: String,
    idle: Mutex<Vec<redis::Connection>>,
    outage: Mutex<Option<Outage>>,
    /// When this handle last lost the server (a sweep waits one lease after it).
    last_outage: Mutex<Instant>,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// A failure talking to the server: it was unreachable (nothing happened, or the reply was
/// lost), or it answered with an error.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading))
        || e.is_unrecoverable_error()
}

impl Pool {
    fn new(url: &str, options: &RedisOptions) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::invalid(format!("store {url:?} is not a valid Redis URL: {e}")))?;
        let info = client.get_connection_info();
        let address = format!("{}/{}", info.addr(), info.redis_settings().db());
        Ok(Self {
            client,
            address,
            idle: Mutex::new(Vec::new()),
            outage: Mutex::new(None),
            last_outage: Mutex::new(Instant::now()),
            connect_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
        })
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> Error {
        Error::invalid_state(format!("the Redis server at {} is unreachable: {reason}", self.address))
    }

    /// Opens a connection, unless the server was found away moments ago.
    fn connect(&self) -> Result<redis::Connection> {
        if let Some(outage) = lock(&self.outage).as_ref() {
            if Instant::now() < outage.retry_at {
                return Err(self.unreachable(&outage.reason));
            }
        }
        let opened = self.client.get_connection_with_timeout(self.connect_timeout).and_then(|conn| {
            conn.set_read_timeout(Some(self.command_timeout))?;
            conn.set_write_timeout(Some(self.command_timeout))?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => {
                *lock(&self.outage) = None;
                Ok(conn)
            }
            Err(e) => {
                self.mark_down(&e);
                Err(self.unreachable(e))
            }
        }
    }

    fn mark_down(&self, e: &redis::RedisError) {
        let mut outage = lock(&self.outage);
        let backoff = outage.as_ref().map_or(Duration::from_millis(20), |o| (o.backoff * 2).min(MAX_BACKOFF));
        *outage = Some(Outage { retry_at: Instant::now() + backoff, backoff, reason: e.to_string() });
        *lock(&self.last_outage) = Instant::now();
        lock(&self.idle).clear();
    }

    /// Runs `f` on a connection. A pooled connection that turns out dead (the server
    /// restarted since it was last used) is replaced and `f` tried once more; the scripts
    /// make that retry harmless (each write carries an id it is not done twice under).
    fn run<T>(&self, mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T> {
        let pooled = lock(&self.idle).pop();
        let (mut conn, mut fresh) = match pooled {
            Some(conn) => (conn, false),
            None => (self.connect()?, true),
        };
        loop {
            match f(&mut conn) {
                Ok(value) => {
                    lock(&self.idle).push(conn);
                    return Ok(value);
                }
                Err(e) if is_connection_error(&e) => {
                    drop(conn);
                    if fresh {
                        self.mark_down(&e);
                        return Err(self.unreachable(e));
                    }
                    conn = self.connect()?;
                    fresh = true;
                }
                Err(e) => {
                    lock(&self.idle).push(conn);
                    return Err(Error::new(ErrorKind::Internal, format!("the Redis server at {} refused a command: {e}", self.address)));
                }
            }
        }
    }
}

// ----- replies -------------------------------------------------------------------------

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn float(value: &Value) -> Option<f64> {
    text(value)?.parse().ok()
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

fn bad_reply(what: &str) -> Error {
    Error::new(ErrorKind::Internal, format!("the Redis server gave an unexpected reply to {what}"))
}

fn raw(text: String) -> Result<Box<RawValue>> {
    RawValue::from_string(text).map_err(|e| Error::new(ErrorKind::Internal, format!("the task store holds invalid JSON: {e}")))
}

fn empty_progress() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

fn state_of(code: i64) -> TaskState {
    TaskState::ALL.get(code as usize).copied().unwrap_or(TaskState::Failed)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// Whether `id` may name a machine: [A-Za-z0-9_.:-], 1 to 255 characters.
pub(crate) fn valid_machine_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// This machine's identity: the option, the configuration, the environment, /etc/machine-id, the host name.
fn machine_identity(options: &RedisOptions, config: &Config) -> Result<String> {
    if let Some(id) = options.machine_id.clone().or_else(|| config.machine_id.clone()) {
        if !valid_machine_id(&id) {
            return Err(Error::invalid(format!("machine_id {id:?} must be 1 to 255 of [A-Za-z0-9_.:-]")));
        }
        return Ok(id);
    }
    if let Some(id) = std::env::var_os(MACHINE_ENV_VAR) {
        let id = id.to_string_lossy().into_owned();
        if !valid_machine_id(&id) {
            return Err(Error::invalid(format!("{MACHINE_ENV_VAR}={id:?} must be 1 to 255 of [A-Za-z0-9_.:-]")));
        }
        return Ok(id);
    }
    let from_file = std::fs::read_to_string("/etc/machine-id").map(|s| s.trim().to_owned()).unwrap_or_default();
    if valid_machine_id(&from_file) {
        return Ok(from_file);
    }
    let host = host_name();
    if valid_machine_id(&host) {
        return Ok(host);
    }
    Err(Error::invalid(format!("this machine has no usable identity: set machine_id or {MACHINE_ENV_VAR}")))
}

// ----- the store -------------------------------------------------------------------------

/// A task store on a Redis server, shared by every process of every machine that opens it
/// with the same namespace. Each handle is a worker identity of its own, new on every open.
/// Dropping the handle closes it.
pub struct RedisStore {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A task this handle runs: its lease and its progress not yet written.
struct Live {
    token: String,
    progress: Option<Box<RawValue>>,
    dirty: bool,
    version: u64,
    yield_requested: bool,
}

/// Wakes this process's waiters when the change feed moved.
struct Notifier {
    state: Mutex<Generations>,
    changed: Condvar,
    /// Wakes the feed's follower when the first waiter arrives.
    watch: Condvar,
}

#[derive(Default, Clone, Copy)]
struct Generations {
    /// Threads of this process waiting for a change (the feed is followed only meanwhile).
    waiters: usize,
    /// Any event.
    any: u64,
    /// An event that may make a task claimable: submitted, finished, put back.
    queue: u64,
}

struct Inner {
    pool: Pool,
    config: Config,
    options: RedisOptions,
    worker_id: String,
    machine_id: String,
    /// "{namespace}:"
    prefix: String,
    tasks_key: String,
    /// The leading script arguments: prefix, event cap, retention cap, key TTL.
    common: [String; 4],
    handlers: Mutex<HashSet<String>>,
    live: Mutex<HashMap<String, Live>>,
    live_changed: Condvar,
    /// Held shared by status reads and exclusively while coalesced progress is written,
    /// so a read never sees a written update and its overlay both.
    flush_gate: RwLock<()>,
    notifier: Notifier,
    /// When a claim last found nothing, at which queue generation.
    last_empty: Mutex<Option<(u64, Instant)>>,
    closed: AtomicBool,
    /// Set when another process found this worker dead and recovered its tasks.
    reaped: AtomicBool,
    /// Ends of runs (the finish script's arguments) not written because the server was away.
    unwritten_endings: Mutex<Vec<Vec<String>>>,
    /// The next task, claimed by the last finish, for the next `claim_next`.
    prefetched: Mutex<Option<Claim>>,
    /// The token of a claim the server did not answer (it may have been made).
    unanswered_claim: Mutex<Option<String>>,
    /// Set by a change that may ask a task run here to yield (a submit of this process, a
    /// queue event seen on the feed): the next yield check reads the answer again.
    yield_answers_stale: AtomicBool,
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://host:port[/db]`) with default [`RedisOptions`].
    pub fn open(url: &str, config: &Config) -> Result<Self> {
        Self::open_with(url, config, RedisOptions::default())
    }

    /// Connects to the server at `url` and registers this handle as a worker.
    ///
    /// Fails with a message naming the cause for an invalid URL, namespace or machine id,
    /// or a server that cannot be reached; nothing is left running then.
    pub fn open_with(url: &str, config: &Config, options: RedisOptions) -> Result<Self> {
        config.validate()?;
        if options.max_attempts == 0 {
            return Err(Error::invalid("max_attempts must be at least 1"));
        }
        if options.heartbeat_interval >= options.lease {
            return Err(Error::invalid("the heartbeat interval must be shorter than the lease"));
        }
        let machine_id = machine_identity(&options, config)?;
        let pool = Pool::new(url, &options)?;
        let prefix = format!("{{{}}}:", config.redis_namespace);
        let ttl = (config.cleanup_threshold_secs.ceil() + 60.0).min(10.0 * 365.0 * 86400.0) as u64;
        let common = [prefix.clone(), config.event_buffer_capacity.to_string(), config.max_retained_finished.to_string(), ttl.to_string()];
        // A per-boot identity: a reused name would let a restarted process inherit
        // (and a stale one finish) the leases of its previous life.
        let worker_id = format!("{}-{}-{}", host_name(), std::process::id(), uuid::Uuid::new_v4().simple());
        let inner = Arc::new(Inner {
            pool,
            config: config.clone(),
            worker_id,
            machine_id,
            tasks_key: format!("{prefix}tasks"),
            prefix,
            common,
            options,
            handlers: Mutex::new(HashSet::new()),
            live: Mutex::new(HashMap::new()),
            live_changed: Condvar::new(),
            flush_gate: RwLock::new(()),
            notifier: Notifier { state: Mutex::new(Generations::default()), changed: Condvar::new(), watch: Condvar::new() },
            last_empty: Mutex::new(None),
            closed: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
            unwritten_endings: Mutex::new(Vec::new()),
            prefetched: Mutex::new(None),
            unanswered_claim: Mutex::new(None),
            yield_answers_stale: AtomicBool::new(false),
        });
        let lease_ms = inner.options.lease.as_millis().to_string();
        inner.script(
            &scripts().register_worker,
            &[&inner.worker_id, &lease_ms, &std::process::id().to_string(), &host_name(), &inner.machine_id],
            |_| Ok(()),
        )?;
        // From here on a failure drops the handle, whose close withdraws the worker again.
        let store = Self { inner, threads: Mutex::new(Vec::new()) };
        store.start()?;
        Ok(store)
    }

    fn start(&self) -> Result<()> {
        let cannot_start = |e: std::io::Error| Error::new(ErrorKind::Internal, format!("cannot start the task store's threads: {e}"));
        let watcher = {
            let inner = self.inner.clone();
            std::thread::Builder::new().name("sft-redis-watch".into()).spawn(move || inner.watch_loop())
        };
        lock(&self.threads).push(watcher.map_err(cannot_start)?);
        let ticker = {
            let inner = self.inner.clone();
            std::thread::Builder::new().name("sft-redis-tick".into()).spawn(move || inner.tick_loop())
        };
        lock(&self.threads).push(ticker.map_err(cannot_start)?);
        Ok(())
    }

    /// This handle's machine identity.
    pub fn machine_id(&self) -> &str {
        &self.inner.machine_id
    }

    /// Writes every coalesced progress update now (normally the ticker thread's job).
    pub fn flush_progress(&self) -> Result<()> {
        self.inner.flush_progress()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Store for RedisStore {
    fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    fn register_handler(&self, handler: &str) -> Result<()> {
        self.inner.register_handler(handler)
    }

    fn submit(&self, task_id: Option<&str>, kind: TaskKind<'_>, schedule: Schedule) -> Result<TaskId> {
        schedule.validate()?;
        self.inner.submit(task_id, kind, schedule.priority, schedule.deadline)
    }

    fn status_json(&self, task_id: &str) -> Result<String> {
        self.inner.status_json(task_id)
    }

    fn list_json(&self, filter: Option<TaskState>) -> Result<String> {
        self.inner.list_json(filter)
    }

    fn stats(&self) -> Result<Stats> {
        self.inner.stats()
    }

    fn is_cancel_requested(&self, task_id: &str) -> Result<bool> {
        let (_, _, cancel) = self.inner.peek(task_id)?.ok_or_else(|| Error::not_found(task_id))?;
        Ok(cancel)
    }

    fn update_progress(&self, task_id: &str, current: u64, total: u64, extra: Option<&Map<String, Json>>) -> Result<()> {
        self.inner.update_progress(task_id, current, total, extra)
    }

    fn add_segment(&self, task_id: &str, segment: &CompletedSegment) -> Result<()> {
        if !segment.duration.is_finite() || segment.duration < 0.0 {
            return Err(Error::invalid(format!("duration must be finite and >= 0, not {}", segment.duration)));
        }
        self.inner.config.check_segment_id(&segment.segment_id)?;
        self.inner.config.check_url(&segment.audio_url)?;
        let body = status::to_raw(segment)?;
        self.inner.append(task_id, body.get(), true)
    }

    fn add_error(&self, task_id: &str, error: &SegmentError) -> Result<()> {
        self.inner.config.check_segment_id(&error.segment_id)?;
        self.inner.config.check_message("error message", &error.error)?;
        let body = status::to_raw(error)?;
        self.inner.append(task_id, body.get(), false)
    }

    fn set_checkpoint(&self, task_id: &str, checkpoint: &RawValue) -> Result<()> {
        self.inner.config.check_checkpoint_json(checkpoint.get())?;
        self.inner.set_field(task_id, "checkpoint", checkpoint.get())
    }

    fn set_failure_message(&self, task_id: &str, message: &str) -> Result<()> {
        self.inner.config.check_message("failure message", message)?;
        self.inner.set_field(task_id, "message", message)
    }

    fn cancel(&self, task_id: &str) -> Result<TaskState> {
        self.inner.cancel(task_id)
    }

    fn claim_next(&self, timeout: Option<Duration>) -> Result<Option<Claim>> {
        self.inner.claim_next(timeout)
    }

    fn is_yield_requested(&self, task_id: &str) -> Result<bool> {
        self.inner.is_yield_requested(task_id)
    }

    fn finish(&self, task_id: &str, outcome: TaskOutcome) -> Result<TaskState> {
        self.inner.finish(task_id, &outcome)
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
        self.inner.last_event_seq()
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
        self.inner.retry_unwritten_endings();
        if let Some(claim) = lock(&self.inner.prefetched).take() {
            let token = self.inner.token_of(&claim.task_id);
            let _ = self.inner.script(&scripts().unclaim, &[&claim.task_id, &token], |_| Ok(()));
        }
        // What this handle still holds is handled as if its process had died, so nothing
        // it owned is left waiting for a worker that will never come.
        let max_attempts = self.inner.options.max_attempts.to_string();
        let released = self.inner.script(&scripts().release_worker, &[&self.inner.worker_id, &max_attempts], |_| Ok(()));
        lock(&self.inner.live).clear();
        flushed.and(released)
    }
}

impl Inner {
    // ----- calls ---------------------------------------------------------------------

    /// Runs one script with the common arguments and `args`, and reads its reply with `read`.
    fn script<T>(&self, script: &Script, args: &[&str], read: impl FnOnce(Value) -> Result<T>) -> Result<T> {
        let reply = self.pool.run(|conn| {
            let mut call = script.prepare_invoke();
            call.key(&self.tasks_key);
            for arg in &self.common {
                call.arg(arg);
            }
            for arg in args {
                call.arg(*arg);
            }
            call.invoke::<Value>(conn)
        })?;
        read(reply)
    }

    /// A script whose reply is `{"ok", ...}` or a refusal `{code, state?}`; returns the rest.
    fn checked(&self, script: &Script, task_id: &str, args: &[&str]) -> Result<Vec<Value>> {
        self.script(script, args, |reply| {
            let mut reply = items(reply).into_iter();
            let code = reply.next().as_ref().and_then(text).ok_or_else(|| bad_reply("a script"))?;
            let rest: Vec<Value> = reply.collect();
            let state = || rest.first().and_then(int).map_or(TaskState::Failed, state_of);
            match code.as_str() {
                "ok" => Ok(rest),
                "notfound" => Err(Error::not_found(task_id)),
                "finished" => Err(already_finished(task_id, state())),
                "lease" => {
                    lock(&self.live).remove(task_id);
                    Err(lease_lost(task_id))
                }
                "dup" => Err(Error::new(ErrorKind::DuplicateId, format!("a task with id {task_id:?} already exists"))),
                "full" => Err(Error::new(
                    ErrorKind::QueueFull,
                    format!("the queue holds {} pending tasks, its configured maximum", rest.first().and_then(int).unwrap_or(0)),
                )),
                "cap" => Err(Error::invalid(format!(
                    "task already has {} reports, the configured maximum",
                    rest.first().and_then(int).unwrap_or(0)
                ))),
                other => Err(Error::new(ErrorKind::Internal, format!("the Redis store's script answered {other:?}"))),
            }
        })
    }

    fn refuse_if_closed(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::ShutDown, "the task store was closed"));
        }
        Ok(())
    }

    /// The lease token of a task this handle runs, or "" (a write from elsewhere).
    fn token_of(&self, task_id: &str) -> String {
        lock(&self.live).get(task_id).map(|live| live.token.clone()).unwrap_or_default()
    }

    // ----- notification ------------------------------------------------------------------

    fn generations(&self) -> Generations {
        *lock(&self.notifier.state)
    }

    fn bump(&self, queue: bool) {
        if queue {
            self.yield_answers_stale.store(true, Ordering::SeqCst);
        }
        let mut state = lock(&self.notifier.state);
        state.any += 1;
        if queue {
            state.queue += 1;
        }
        self.notifier.changed.notify_all();
    }

    /// Waits until `moved` holds for the generations or `deadline`; false at the deadline.
    fn wait_past(&self, deadline: Option<Instant>, moved: impl Fn(&Generations) -> bool) -> bool {
        let mut state = lock(&self.notifier.state);
        state.waiters += 1;
        if state.waiters == 1 {
            self.notifier.watch.notify_all();
        }
        let mut woken = true;
        while !moved(&state) && !self.closed.load(Ordering::SeqCst) {
            match deadline {
                None => state = self.notifier.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        woken = false;
                        break;
                    }
                    state = self.notifier.changed.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
        state.waiters -= 1;
        woken
    }

    fn wake_everyone(&self) {
        self.bump(true);
        self.notifier.watch.notify_all();
        let _live = lock(&self.live);
        self.live_changed.notify_all();
    }

    /// Follows the change feed with a blocking read and wakes this process's waiters.
    fn watch_loop(self: Arc<Self>) {
        let key = format!("{}ev", self.prefix);
        let mut conn: Option<redis::Connection> = None;
        let mut backoff = Duration::from_millis(20);
        // Where the feed was read up to; `None`: not following it now.
        let mut last_seq: Option<u64> = None;
        let mut waited_at = Instant::now();
        while !self.closed.load(Ordering::SeqCst) {
            {
                // Nobody of this process waits (a worker draining a full queue, an API
                // process between requests): no reads at all, after a short grace.
                let state = lock(&self.notifier.state);
                if state.waiters > 0 {
                    waited_at = Instant::now();
                } else if waited_at.elapsed() >= WATCH_GRACE || last_seq.is_none() {
                    last_seq = None;
                    let _ = self.notifier.watch.wait_timeout(state, WATCH_GRACE);
                    continue;
                }
            }
            if conn.is_none() {
                match self.pool.client.get_connection_with_timeout(self.pool.connect_timeout) {
                    Ok(c) if c.set_read_timeout(Some(Duration::from_secs(5))).is_ok() => {
                        conn = Some(c);
                        backoff = Duration::from_millis(20);
                    }
                    _ => {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let Some(after) = last_seq else {
                // Following the feed from now on. The wake-up after it makes every waiter
                // look at what it waits for again, so nothing before this point is missed.
                match redis::cmd("GET").arg(format!("{}evseq", self.prefix)).query::<Option<u64>>(c) {
                    Ok(seq) => {
                        last_seq = Some(seq.unwrap_or(0));
                        self.bump(true);
                    }
                    Err(_) => {
                        conn = None;
                        self.bump(true);
                    }
                }
                continue;
            };
            let read: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1024)
                .arg("BLOCK")
                .arg(250)
                .arg("STREAMS")
                .arg(&key)
                .arg(format!("{after}-0"))
                .query(c);
            match read {
                Ok(reply) => {
                    let mut queue = false;
                    let mut newest = None;
                    for stream in items(reply) {
                        let mut parts = items(stream).into_iter();
                        let _name = parts.next();
                        for entry in parts.next().map(items).unwrap_or_default() {
                            let Some((seq, kind, _, _, _)) = parse_entry(entry) else { continue };
                            newest = Some(seq.max(newest.unwrap_or(0)));
                            queue |= QUEUE_KINDS.contains(&kind);
                        }
                    }
                    if let Some(seq) = newest {
                        last_seq = Some(seq.max(after));
                        self.bump(queue);
                    }
                }
                Err(_) => {
                    // Back after an outage (or on a server that lost the feed): followed
                    // again from where the server is.
                    conn = None;
                    last_seq = None;
                    self.bump(true);
                }
            }
        }
    }

    /// The heartbeat, coalesced progress, deadlines, the yield answers, and the periodic
    /// sweep (dead workers, retention): everything that must not run on a task's thread.
    fn tick_loop(self: Arc<Self>) {
        let options = self.options.clone();
        let step = options
            .progress_flush_interval
            .min(options.deadline_interval)
            .min(options.yield_refresh_interval)
            .min(options.heartbeat_interval)
            .max(Duration::from_millis(1));
        let mut last_beat = Instant::now();
        let mut last_sweep = Instant::now();
        let mut last_deadlines = Instant::now() - options.deadline_interval;
        let mut last_yield = Instant::now();
        let mut last_flush = Instant::now();
        loop {
            {
                let live = lock(&self.live);
                if self.closed.load(Ordering::SeqCst) {
                    return;
                }
                let _ = self.live_changed.wait_timeout(live, step);
            }
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let busy = !lock(&self.live).is_empty();
            if busy && last_flush.elapsed() >= options.progress_flush_interval {
                last_flush = Instant::now();
                let _ = self.flush_progress();
            }
            if last_beat.elapsed() >= options.heartbeat_interval {
                last_beat = Instant::now();
                self.heartbeat();
                self.retry_unwritten_endings();
            }
            if last_deadlines.elapsed() >= options.deadline_interval {
                last_deadlines = Instant::now();
                let _ = self.script(&scripts().deadlines, &[DEADLINE_PASSED_PENDING], |_| Ok(()));
            }
            if busy && last_yield.elapsed() >= options.yield_refresh_interval {
                last_yield = Instant::now();
                let _ = self.refresh_yield_answers();
            }
            if last_sweep.elapsed() >= options.sweep_interval {
                last_sweep = Instant::now();
                let _ = self.recover();
                let _ = self.collect_garbage();
            }
        }
    }

    fn heartbeat(&self) {
        let lease_ms = self.options.lease.as_millis().to_string();
        if let Ok(alive) = self.script(&scripts().heartbeat, &[&self.worker_id, &lease_ms], |reply| Ok(int(&reply) == Some(1))) {
            if !alive {
                self.reaped.store(true, Ordering::SeqCst);
            }
        }
    }

    // ----- liveness and recovery -------------------------------------------------------

    fn recover(&self) -> Result<Recovery> {
        // Back from an outage, every worker's heartbeat looks lapsed until it reconnected:
        // a handle judges the others only once it has been connected for a whole lease.
        if lock(&self.pool.last_outage).elapsed() < self.options.lease {
            return Ok(Recovery::default());
        }
        let max_attempts = self.options.max_attempts.to_string();
        self.script(&scripts().reap, &[&max_attempts, &self.worker_id], |reply| {
            let mut recovery = Recovery::default();
            for worker in items(reply) {
                let mut parts = items(worker).into_iter();
                let (Some(id), requeued, failed) = (parts.next().as_ref().and_then(text), parts.next(), parts.next()) else { continue };
                recovery.dead_workers.push(id);
                recovery.requeued.extend(requeued.map(items).unwrap_or_default().iter().filter_map(text).map(Arc::from));
                recovery.failed.extend(failed.map(items).unwrap_or_default().iter().filter_map(text).map(Arc::from));
            }
            Ok(recovery)
        })
    }

    fn collect_garbage(&self) -> Result<usize> {
        let cutoff = (crate::sync::unix_now() - self.config.cleanup_threshold_secs).to_string();
        self.script(&scripts().collect, &[&cutoff], |reply| Ok(int(&reply).unwrap_or(0).max(0) as usize))
    }

    // ----- submission and changes ------------------------------------------------------

    fn register_handler(&self, handler: &str) -> Result<()> {
        self.config.check_handler_name(handler)?;
        self.refuse_if_closed()?;
        let registered = self.script(&scripts().register_handler, &[&self.worker_id, handler], |reply| Ok(int(&reply) == Some(1)))?;
        if !registered {
            self.reaped.store(true, Ordering::SeqCst);
            return Err(self.reaped_error());
        }
        lock(&self.handlers).insert(handler.to_owned());
        self.bump(true);
        Ok(())
    }

    fn reaped_error(&self) -> Error {
        Error::invalid_state(format!(
            "this worker ({}) was found dead by another process (its heartbeat lapsed) and its tasks were recovered: reopen the store",
            self.worker_id
        ))
    }

    fn submit(&self, task_id: Option<&str>, kind: TaskKind<'_>, priority: i32, deadline: Option<f64>) -> Result<TaskId> {
        self.refuse_if_closed()?;
        let task_id = self.config.task_id_or_new(task_id)?;
        let (handler, payload, owner) = match kind {
            TaskKind::Function => ("", "", self.worker_id.as_str()),
            TaskKind::Named { handler, payload } => {
                self.config.check_handler_name(handler)?;
                (handler, payload.map_or("null", RawValue::get), "")
            }
        };
        let deadline = deadline.map(|d| format!("{d:.6}")).unwrap_or_default();
        let op = new_token();
        self.checked(
            &scripts().submit,
            &task_id,
            &[
                &task_id,
                handler,
                payload,
                owner,
                &priority.to_string(),
                &deadline,
                &self.config.max_pending_tasks.to_string(),
                &op,
                DEADLINE_PASSED_PENDING,
            ],
        )?;
        self.yield_answers_stale.store(true, Ordering::SeqCst);
        Ok(task_id)
    }

    fn append(&self, task_id: &str, body: &str, segment: bool) -> Result<()> {
        let (cap, which) = if segment { (self.config.max_segments_per_task, "s") } else { (self.config.max_errors_per_task, "e") };
        let token = self.token_of(task_id);
        let op = new_token();
        match self.checked(&scripts().append, task_id, &[task_id, &token, body, which, &cap.to_string(), &op]) {
            Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                let what = if segment { "completed segments" } else { "segment errors" };
                Err(Error::invalid(format!("task already has {cap} {what}, the configured maximum")))
            }
            other => other.map(drop),
        }
    }

    fn set_field(&self, task_id: &str, field: &str, value: &str) -> Result<()> {
        let token = self.token_of(task_id);
        self.checked(&scripts().set_field, task_id, &[task_id, &token, field, value]).map(drop)
    }

    fn update_progress(&self, task_id: &str, current: u64, total: u64, extra: Option<&Map<String, Json>>) -> Result<()> {
        let progress = status::progress_json(current, total, extra)?;
        {
            let mut live = lock(&self.live);
            if let Some(entry) = live.get_mut(task_id) {
                entry.progress = Some(progress);
                entry.dirty = true;
                entry.version += 1;
                drop(live);
                // Waiters in this process see it at once; others when the flush writes it.
                self.bump(false);
                return Ok(());
            }
        }
        // Not run by this process: nothing to coalesce with, so it is written at once.
        self.set_field(task_id, "progress", progress.get())
    }

    fn flush_progress(&self) -> Result<()> {
        let _gate = self.flush_gate.write().unwrap_or_else(|e| e.into_inner());
        let batch: Vec<(String, String, Box<RawValue>, u64)> = lock(&self.live)
            .iter()
            .filter(|(_, live)| live.dirty)
            .filter_map(|(id, live)| Some((id.clone(), live.token.clone(), live.progress.clone()?, live.version)))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let args: Vec<&str> = batch.iter().flat_map(|(id, token, progress, _)| [id.as_str(), token.as_str(), progress.get()]).collect();
        self.script(&scripts().flush_progress, &args, |_| Ok(()))?;
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

    fn cancel(&self, task_id: &str) -> Result<TaskState> {
        let op = new_token();
        let rest = self.checked(&scripts().cancel, task_id, &[task_id, &op])?;
        Ok(rest.first().and_then(int).map_or(TaskState::Processing, state_of))
    }

    // ----- the worker's side: claim and finish ---------------------------------------------

    fn claim_next(&self, timeout: Option<Duration>) -> Result<Option<Claim>> {
        let deadline = deadline_after(timeout);
        loop {
            self.refuse_if_closed()?;
            if self.reaped.load(Ordering::SeqCst) {
                return Err(self.reaped_error());
            }
            if let Some(claim) = lock(&self.prefetched).take() {
                return Ok(Some(claim));
            }
            let seen = self.generations().queue;
            // Nothing happened to the queue since a claim found nothing: no need to ask
            // again (but ask now and then, in case a wake-up was lost with a connection).
            let known_empty = lock(&self.last_empty).is_some_and(|(at, when)| at == seen && when.elapsed() < Duration::from_secs(1));
            if !known_empty {
                if let Some(claim) = self.try_claim()? {
                    *lock(&self.last_empty) = None;
                    return Ok(Some(claim));
                }
                *lock(&self.last_empty) = Some((seen, Instant::now()));
            }
            let poll = deadline.map_or(Instant::now() + Duration::from_secs(1), |d| d.min(Instant::now() + Duration::from_secs(1)));
            if !self.wait_past(Some(poll), |g| g.queue != seen) && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    fn try_claim(&self) -> Result<Option<Claim>> {
        // A claim whose reply was lost may have been made: asked again under the same
        // token, the server hands it over instead of leaving it leased to nobody.
        let token = lock(&self.unanswered_claim).take().unwrap_or_else(new_token);
        let handlers: Vec<String> = lock(&self.handlers).iter().cloned().collect();
        let mut args: Vec<&str> = vec![&self.worker_id, &self.machine_id, &token, DEADLINE_PASSED_PENDING];
        args.extend(handlers.iter().map(String::as_str));
        let reply = match self.script(&scripts().claim, &args, Ok) {
            Err(e) if is_unreachable(&e) => {
                *lock(&self.unanswered_claim) = Some(token);
                return Err(e);
            }
            other => other?,
        };
        self.take_claim(reply, token)
    }

    /// Reads a claim's reply: the task is this handle's now, under `token`.
    fn take_claim(&self, reply: Value, token: String) -> Result<Option<Claim>> {
        let mut parts = items(reply).into_iter();
        let code = parts.next().as_ref().and_then(text).unwrap_or_default();
        match code.as_str() {
            "ok" => {}
            "dead" => {
                self.reaped.store(true, Ordering::SeqCst);
                return Err(self.reaped_error());
            }
            _ => return Ok(None),
        }
        let rest: Vec<Value> = parts.collect();
        let task_id = rest.first().and_then(text).ok_or_else(|| bad_reply("a claim"))?;
        let handler = rest.get(1).and_then(text);
        let payload = rest.get(2).and_then(text).map(raw).transpose()?;
        let attempt = rest.get(3).and_then(int).unwrap_or(1) as u32;
        let checkpoint = rest.get(4).and_then(text).map(raw).transpose()?;
        let yields = rest.get(5).and_then(int).unwrap_or(0) as u32;
        lock(&self.live).insert(task_id.clone(), Live { token, progress: None, dirty: false, version: 0, yield_requested: false });
        self.live_changed.notify_all();
        Ok(Some(Claim { task_id: Arc::from(task_id), run: true, handler, payload, attempt, checkpoint, yields }))
    }

    fn finish(&self, task_id: &str, outcome: &TaskOutcome) -> Result<TaskState> {
        if let TaskOutcome::Failed(TaskFailure::Message(message)) = outcome {
            self.config.check_message("failure message", message)?;
        }
        let Some(token) = lock(&self.live).get(task_id).map(|live| live.token.clone()) else {
            // Never claimed here (or finished already): the store says which.
            let state = self.peek(task_id)?.ok_or_else(|| Error::not_found(task_id))?.0;
            if state.is_finished() {
                return Err(already_finished(task_id, state));
            }
            return Err(Error::invalid_state(format!(
                "task {task_id:?} is {} and not running under this worker, so it cannot finish it",
                state.as_str()
            )));
        };
        let (outcome, message, fallback) = match outcome {
            TaskOutcome::Completed => ("c", String::new(), String::new()),
            TaskOutcome::Yielded => ("y", String::new(), String::new()),
            TaskOutcome::Failed(TaskFailure::Message(text)) => ("f", text.clone(), String::new()),
            TaskOutcome::Failed(TaskFailure::Code(code)) => ("f", String::new(), format!("task function returned {code}")),
        };
        let mut args: Vec<String> =
            vec![task_id.to_owned(), token, outcome.to_owned(), message, fallback, String::new(), DEADLINE_PASSED_RUNNING.to_owned()];
        let claim_next = self.options.claim_on_finish && !self.closed.load(Ordering::SeqCst);
        args.extend([
            DEADLINE_PASSED_PENDING.to_owned(),
            self.worker_id.clone(),
            self.machine_id.clone(),
            if claim_next { new_token() } else { String::new() },
        ]);
        if claim_next {
            args.extend(lock(&self.handlers).iter().cloned());
        }
        // The worker has nothing else to do until this is written: while the server is
        // away it tries again (the token makes a repeat harmless), up to a limit.
        let give_up = Instant::now() + self.options.finish_retry_for;
        let mut pause = Duration::from_millis(20);
        let result = loop {
            let attempt = {
                // Not held across the pauses: status reads must fail fast meanwhile, not wait.
                let _gate = self.flush_gate.write().unwrap_or_else(|e| e.into_inner());
                let latest = lock(&self.live).get(task_id).filter(|live| live.dirty).and_then(|live| live.progress.clone());
                args[5] = latest.map(|p| p.get().to_owned()).unwrap_or_default();
                self.end_run(&args)
            };
            match attempt {
                Err(e) if is_unreachable(&e) && Instant::now() < give_up && !self.closed.load(Ordering::SeqCst) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                other => break other,
            }
        };
        if matches!(&result, Err(e) if is_unreachable(e)) {
            // Still leased to this handle: the ticker writes it once the server is back,
            // so the machine's slot is not held by a run that ended.
            lock(&self.unwritten_endings).push(args);
        }
        result
    }

    /// Writes the end of a run (the finish script's arguments); forgets the run unless the
    /// server was unreachable.
    fn end_run(&self, args: &[String]) -> Result<TaskState> {
        let task_id = args[0].as_str();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = self.checked(&scripts().finish, task_id, &refs);
        match &result {
            Err(e) if is_unreachable(e) => {}
            _ => {
                lock(&self.live).remove(task_id);
                self.bump(true);
            }
        }
        let mut rest = result?.into_iter();
        let state = rest.next().as_ref().and_then(int).map_or(TaskState::Failed, state_of);
        if let Some(claimed) = rest.next() {
            // The worker's next task, claimed with this end: handed to its next claim_next.
            if let Ok(Some(claim)) = self.take_claim(claimed, args[10].clone()) {
                *lock(&self.prefetched) = Some(claim);
            }
        }
        Ok(state)
    }

    /// Tries again the ends of runs that could not be written while the server was away.
    fn retry_unwritten_endings(&self) {
        let pending: Vec<Vec<String>> = std::mem::take(&mut *lock(&self.unwritten_endings));
        for args in pending {
            if matches!(self.end_run(&args), Err(e) if is_unreachable(&e)) {
                lock(&self.unwritten_endings).push(args);
            }
        }
    }

    // ----- reads ---------------------------------------------------------------------------

    fn peek(&self, task_id: &str) -> Result<Option<(TaskState, u64, bool)>> {
        let row = self.script(&scripts().peek, &[task_id], |reply| {
            let parts = items(reply);
            if parts.is_empty() {
                return Ok(None);
            }
            let get = |i: usize| parts.get(i).and_then(int).unwrap_or(0);
            Ok(Some((state_of(get(0)), get(1) as u64, get(2) == 1)))
        })?;
        Ok(row.map(|(state, revision, cancel)| {
            let dirty = state == TaskState::Processing && lock(&self.live).get(task_id).is_some_and(|live| live.dirty);
            (state, revision + u64::from(dirty), cancel)
        }))
    }

    fn status_json(&self, task_id: &str) -> Result<String> {
        self.render(&[task_id])?.pop().flatten().map(|(_, json)| json).ok_or_else(|| Error::not_found(task_id))
    }

    /// The status JSON of each of `ids` (`None` for an unknown one), with this process's
    /// progress not yet written.
    fn render(&self, ids: &[&str]) -> Result<Vec<Option<(TaskState, String)>>> {
        let _gate = self.flush_gate.read().unwrap_or_else(|e| e.into_inner());
        let replies = self.script(&scripts().status, ids, |reply| Ok(items(reply)))?;
        let mut out = Vec::with_capacity(ids.len());
        for (task_id, reply) in ids.iter().zip(replies) {
            let mut parts = items(reply).into_iter();
            let Some(fields) = parts.next() else {
                out.push(None);
                continue;
            };
            let f = items(fields);
            let field = |i: usize| f.get(i).and_then(text);
            let state = state_of(field(0).and_then(|s| s.parse().ok()).unwrap_or(3));
            let bodies = |value: Option<Value>| -> Result<Vec<Box<RawValue>>> {
                items(value.unwrap_or(Value::Nil)).iter().filter_map(text).map(raw).collect()
            };
            let completed_segments = bodies(parts.next())?;
            let errors = bodies(parts.next())?;
            let queue_position = parts.next().as_ref().and_then(int).map(|p| p as u64);
            let yield_requested = parts.next().as_ref().and_then(int) == Some(1);
            let mut progress = field(1).map(raw).transpose()?.unwrap_or_else(empty_progress);
            let mut revision = field(6).and_then(|s| s.parse::<u64>().ok()).unwrap_or(1);
            if state == TaskState::Processing {
                if let Some(latest) = lock(&self.live).get(*task_id).filter(|live| live.dirty).and_then(|live| live.progress.clone()) {
                    progress = latest;
                    revision += 1;
                }
            }
            let status = StatusOut {
                task_id,
                status: state,
                progress,
                completed_segments,
                errors,
                created_at: f.get(2).and_then(float).unwrap_or(0.0),
                started_at: f.get(3).and_then(float),
                completed_at: f.get(4).and_then(float),
                error: field(5).filter(|_| matches!(state, TaskState::Failed | TaskState::Cancelled)),
                revision,
                queue_position,
                cancel_requested: field(7).as_deref() == Some("1"),
                handler: field(8),
                attempt: field(9).and_then(|s| s.parse().ok()).unwrap_or(0),
                checkpoint: field(10).map(raw).transpose()?,
                priority: field(11).and_then(|s| s.parse().ok()).unwrap_or(0),
                deadline: f.get(12).and_then(float),
                yield_requested,
                yields: field(13).and_then(|s| s.parse().ok()).unwrap_or(0),
            };
            let json = serde_json::to_string(&status).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
            out.push(Some((state, json)));
        }
        Ok(out)
    }

    fn list_json(&self, filter: Option<TaskState>) -> Result<String> {
        let ids: Vec<String> = self.pool.run(|conn| redis::cmd("ZRANGE").arg(&self.tasks_key).arg(0).arg(-1).query(conn))?;
        let mut statuses: Vec<Box<RawValue>> = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(STATUS_BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            // A task removed by retention between the two reads is simply not listed.
            for (state, json) in self.render(&refs)?.into_iter().flatten() {
                if filter.is_none_or(|wanted| wanted == state) {
                    statuses.push(raw(json)?);
                }
            }
        }
        serde_json::to_string(&statuses).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
    }

    fn stats(&self) -> Result<Stats> {
        let (counts_key, queue_key, max_key) =
            (format!("{}counts", self.prefix), format!("{}q", self.prefix), format!("{}runmax", self.prefix));
        let prio_key = format!("{}prio", self.prefix);
        let (counts, pending, longest, by_priority): (HashMap<String, String>, u64, Option<f64>, HashMap<i32, i64>) =
            self.pool.run(|conn| {
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(&counts_key)
                    .cmd("ZCARD")
                    .arg(&queue_key)
                    .cmd("ZSCORE")
                    .arg(&max_key)
                    .arg("us")
                    .cmd("HGETALL")
                    .arg(&prio_key)
                    .query(conn)
            })?;
        let mut pending_by_priority: Vec<PriorityPending> = by_priority
            .into_iter()
            .filter(|(_, pending)| *pending > 0)
            .map(|(priority, pending)| PriorityPending { priority, pending: pending as u64 })
            .collect();
        pending_by_priority.sort_by_key(|p| std::cmp::Reverse(p.priority));
        let get = |name: &str| counts.get(name).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let n = |name: &str| get(name).max(0.0) as u64;
        let runs = n("runs");
        let retained: [u64; 5] = [pending, n("r1"), n("r2"), n("r3"), n("r4")];
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
            submitted_total: n("t0"),
            completed_total: n("t2"),
            failed_total: n("t3"),
            cancelled_total: n("t4"),
            mean_run_secs: if runs == 0 { 0.0 } else { get("runus") / 1e6 / runs as f64 },
            max_run_secs: longest.unwrap_or(0.0) / 1e6,
            pending_by_priority,
        })
    }

    fn wait_until(&self, task_id: &str, timeout: Option<Duration>, awaited: &str, done: impl Fn(TaskState, u64) -> bool) -> Result<String> {
        let deadline = deadline_after(timeout);
        loop {
            let seen = self.generations().any;
            let (state, revision, _) = self.peek(task_id)?.ok_or_else(|| Error::not_found(task_id))?;
            if done(state, revision) {
                return self.status_json(task_id);
            }
            self.refuse_if_closed()?;
            if !self.wait_past(deadline, |g| g.any != seen) {
                return Err(Error::new(ErrorKind::Timeout, format!("task {task_id:?} did not {awaited} in time")));
            }
        }
    }

    fn last_event_seq(&self) -> Result<u64> {
        let key = format!("{}evseq", self.prefix);
        let seq: Option<u64> = self.pool.run(|conn| redis::cmd("GET").arg(&key).query(conn))?;
        Ok(seq.unwrap_or(0))
    }

    fn read_events(&self, after_seq: u64, max: usize) -> Result<Vec<TaskEvent>> {
        let key = format!("{}ev", self.prefix);
        let start = format!("{}-0", after_seq.saturating_add(1));
        let reply: Value = self.pool.run(|conn| redis::cmd("XRANGE").arg(&key).arg(&start).arg("+").arg("COUNT").arg(max).query(conn))?;
        Ok(items(reply)
            .into_iter()
            .filter_map(parse_entry)
            .map(|(seq, kind, state, revision, task_id)| TaskEvent {
                seq,
                task_id: Arc::from(task_id),
                kind: event_kind(kind),
                status: state_of(state),
                revision,
            })
            .collect())
    }

    fn wait_events(&self, after_seq: u64, max: usize, timeout: Option<Duration>) -> Result<Vec<TaskEvent>> {
        if max == 0 {
            return Err(Error::invalid("max_events must be at least 1"));
        }
        let deadline = deadline_after(timeout);
        loop {
            let seen = self.generations().any;
            let events = self.read_events(after_seq, max)?;
            if !events.is_empty() {
                return Ok(events);
            }
            self.refuse_if_closed()?;
            if !self.wait_past(deadline, |g| g.any != seen) {
                return Err(Error::new(ErrorKind::Timeout, format!("no event after {after_seq} in time")));
            }
        }
    }

    /// Asks the server, for every task run here, whether a higher-priority task waits.
    fn refresh_yield_answers(&self) -> Result<()> {
        let ids: Vec<String> = lock(&self.live).keys().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        let answers = self.script(&scripts().yield_wanted, &args, |reply| Ok(items(reply)))?;
        let mut live = lock(&self.live);
        for (id, answer) in ids.iter().zip(answers) {
            if let Some(entry) = live.get_mut(id) {
                entry.yield_requested = int(&answer) == Some(1);
            }
        }
        Ok(())
    }

    /// Whether a higher-priority task waits that this task's machine could run: for a task
    /// run here the ticker's answer (no round trip; at most `yield_refresh_interval` old
    /// after a submit elsewhere, read again at once after a change seen here), else one read.
    fn is_yield_requested(&self, task_id: &str) -> Result<bool> {
        if self.yield_answers_stale.swap(false, Ordering::SeqCst) && lock(&self.live).contains_key(task_id) {
            if let Err(e) = self.refresh_yield_answers() {
                self.yield_answers_stale.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        if let Some(live) = lock(&self.live).get(task_id) {
            return Ok(live.yield_requested);
        }
        let answers = self.script(&scripts().yield_wanted, &[task_id], |reply| Ok(items(reply)))?;
        match answers.first().and_then(int) {
            Some(-1) | None => Err(Error::not_found(task_id)),
            Some(answer) => Ok(answer == 1),
        }
    }
}

/// One change-feed entry: seq, kind, state, revision, task id.
fn parse_entry(entry: Value) -> Option<(u64, usize, i64, u64, String)> {
    let mut parts = items(entry).into_iter();
    let id = text(&parts.next()?)?;
    let seq: u64 = id.split('-').next()?.parse().ok()?;
    let fields = items(parts.next()?);
    let body = text(fields.get(1)?)?;
    let mut words = body.splitn(4, ' ');
    let kind: usize = words.next()?.parse().ok()?;
    let state: i64 = words.next()?.parse().ok()?;
    let revision: u64 = words.next()?.parse().ok()?;
    let task_id = words.next()?.to_owned();
    Some((seq, kind, state, revision, task_id))
}

fn event_kind(code: usize) -> EventKind {
    EVENT_KINDS.get(code).copied().unwrap_or(EventKind::Progress)
}

fn is_unreachable(e: &Error) -> bool {
    e.kind() == ErrorKind::InvalidState && e.message().contains("is unreachable")
}

fn already_finished(task_id: &str, state: TaskState) -> Error {
    Error::invalid_state(format!("task {task_id:?} already finished as {}", state.as_str()))
}

fn lease_lost(task_id: &str) -> Error {
    Error::invalid_state(format!("task {task_id:?} is no longer leased to this worker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_found_and_carries_the_prelude() {
        let s = scripts();
        for script in [&s.submit, &s.claim, &s.finish, &s.status, &s.collect] {
            assert_eq!(script.get_hash().len(), 40);
        }
    }

    #[test]
    fn machine_ids_are_checked() {
        assert!(valid_machine_id("gpu-01.example:7"));
        assert!(!valid_machine_id(""));
        assert!(!valid_machine_id("with space"));
        assert!(!valid_machine_id(&"x".repeat(256)));
    }

    #[test]
    fn feed_entries_parse() {
        let entry = Value::Array(vec![
            Value::BulkString(b"12-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"e".to_vec()), Value::BulkString(b"6 2 9 a b".to_vec())]),
        ]);
        assert_eq!(parse_entry(entry), Some((12, 6, 2, 9, "a b".to_owned())));
        assert_eq!(event_kind(6), EventKind::Finished);
    }
}
