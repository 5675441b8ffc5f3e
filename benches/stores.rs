//! The memory store and the SQLite store side by side, through the same public API:
//! a [`TaskManager`] configured with `store: "memory"` or `store: "sqlite:<dir>/tasks.db"`.
//!
//! One store per process, like the other benchmarks; `benches/run.sh` runs the two
//! alternately in one invocation, and each prints one JSON object
//! `{"stores_<store>_<figure>": [sample], "info": {...}}` that `benches/report.py`
//! folds into the "Stores" table. Each per-call figure is one run's p50 or p99, so the
//! report's median is the median over the repeated runs.
//!
//! Usage: stores memory|sqlite [DIR]
//!   (DIR: where the SQLite files go, a fresh temporary directory by default; removed afterwards)
//! The processes the SQLite runs start for the cross-process figures are this program
//! again: `stores child_status DB TASK CALLS` and `stores child_wait DB TASK`.
//!
//! Counts (environment): BENCH_QUICK=1 for a short try (500 calls, 5,000 tasks);
//! BENCH_STORES_CALLS (per-call samples per figure, default 2,000) and
//! BENCH_STORES_TASKS (the tasks/s run, which are then the retained tasks of the
//! on-disk size and the reopen, default 100,000) override either mode. The figures'
//! names keep saying 100k.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use storyflow_tasks::{CompletedSegment, Config, SegmentId, SqliteStore, TaskContext, TaskFailure, TaskManager};

const LONG: Option<Duration> = Some(Duration::from_secs(120));
const SUBMIT_THREADS: usize = 8;
/// Progress updates are timed in batches of this many: one update is near the clock's own cost.
const PROGRESS_BATCH: usize = 1000;
const REOPENS: usize = 3;

/// How many of each thing one run does.
struct Counts {
    calls: usize,
    tasks: usize,
    wakes: usize,
}

impl Counts {
    fn from_environment() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let number = |name: &str, default: usize| {
            std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} is a number"))).max(1)
        };
        let calls = number("BENCH_STORES_CALLS", if quick { 500 } else { 2000 });
        Self { calls, tasks: number("BENCH_STORES_TASKS", if quick { 5000 } else { 100_000 }), wakes: (calls / 4).max(50) }
    }
}

/// A store under test: the configuration a manager gets, and where its files are.
#[derive(Clone)]
enum StoreUnderTest {
    Memory,
    Sqlite(PathBuf),
}

impl StoreUnderTest {
    fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// A manager on this store; `file` names the SQLite file inside the directory.
    fn manager(&self, file: &str) -> Arc<TaskManager> {
        let store = match self {
            Self::Memory => "memory".to_string(),
            Self::Sqlite(dir) => format!("sqlite:{}", dir.join(file).display()),
        };
        TaskManager::with_config(Config { store, ..Config::default() })
    }

    fn file(&self, file: &str) -> Option<PathBuf> {
        match self {
            Self::Memory => None,
            Self::Sqlite(dir) => Some(dir.join(file)),
        }
    }
}

/// The figures of one process, printed as one JSON object.
struct Figures {
    prefix: String,
    object: Map<String, Value>,
    info: Map<String, Value>,
}

impl Figures {
    fn new(store: &StoreUnderTest) -> Self {
        Self { prefix: format!("stores_{}_", store.name()), object: Map::new(), info: Map::new() }
    }

    fn add(&mut self, name: &str, value: f64) {
        self.object.insert(format!("{}{name}", self.prefix), json!([value]));
    }

    /// Adds `<name>_p50` and `<name>_p99` of `samples`.
    fn add_quantiles(&mut self, name: &str, mut samples: Vec<f64>) {
        self.add(&format!("{name}_p50"), quantile(&mut samples, 0.5));
        self.add(&format!("{name}_p99"), quantile(&mut samples, 0.99));
    }

    fn info(&mut self, name: &str, value: impl Into<Value>) {
        self.info.insert(name.into(), value.into());
    }
}

/// The q-quantile (0..=1) by nearest rank; sorts the samples.
fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((q * samples.len() as f64) as usize).min(samples.len() - 1)]
}

fn micros_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

/// The wall clock in nanoseconds: the one clock two processes read alike.
fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos()
}

fn segment(n: usize) -> CompletedSegment {
    CompletedSegment { segment_id: SegmentId::from(n as i64), audio_url: format!("file:///audio/chapter-1/{n}.wav"), duration: 2.5 }
}

fn revision_of(status: &str) -> u64 {
    serde_json::from_str::<Value>(status).expect("status JSON")["revision"].as_u64().expect("a revision")
}

fn noop(_: &TaskContext<'_>) -> Result<(), TaskFailure> {
    Ok(())
}

/// A task that holds the worker until the returned sender sends (or is dropped).
fn hold_worker(manager: &Arc<TaskManager>) -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (started_sender, started) = mpsc::channel::<()>();
    manager
        .submit(None, move |_: &TaskContext<'_>| {
            started_sender.send(()).expect("the bench waits");
            let _ = released.recv();
            Ok(())
        })
        .expect("submit the holder");
    started.recv().expect("the holder started");
    release
}

/// Submit latency, one thread and eight at once, with the worker held (submits only,
/// not the worker's competition for the store), then the status reads of a finished task.
fn submits_and_reads(store: &StoreUnderTest, counts: &Counts, figures: &mut Figures) -> Arc<str> {
    let manager = store.manager("latency.db");
    let release = hold_worker(&manager);
    let mut one_thread = Vec::with_capacity(counts.calls);
    let mut first = None;
    for _ in 0..counts.calls {
        let start = Instant::now();
        let id = manager.submit(None, noop).expect("submit");
        one_thread.push(micros_since(start));
        first.get_or_insert(id);
    }
    figures.add_quantiles("submit_us", one_thread);

    let barrier = Arc::new(Barrier::new(SUBMIT_THREADS));
    let per_thread = (counts.calls / SUBMIT_THREADS).max(1);
    let threads: Vec<_> = (0..SUBMIT_THREADS)
        .map(|_| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..per_thread)
                    .map(|_| {
                        let start = Instant::now();
                        manager.submit(None, noop).expect("submit");
                        micros_since(start)
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    figures.add_quantiles("submit_8_threads_us", threads.into_iter().flat_map(|t| t.join().expect("submitter")).collect());

    drop(release);
    let last = manager.submit(None, noop).expect("submit");
    manager.wait(&last, LONG).expect("the queue drains");
    let first = first.expect("at least one submit");
    let reads = (0..counts.calls)
        .map(|_| {
            let start = Instant::now();
            manager.read_status(&first).expect("status");
            micros_since(start)
        })
        .collect();
    figures.add_quantiles("status_us", reads);
    manager.shutdown(LONG).expect("shutdown");
    first
}

/// The worker's own cost of a progress update and of a segment append, timed inside a
/// running task on the worker thread.
fn worker_costs(store: &StoreUnderTest, counts: &Counts, figures: &mut Figures) {
    let manager = store.manager("worker.db");
    let calls = counts.calls;
    let (sender, received) = mpsc::channel::<(Vec<f64>, Vec<f64>)>();
    let id = manager
        .submit(None, move |context: &TaskContext<'_>| {
            let manager = context.manager();
            let total = (calls * PROGRESS_BATCH) as u64;
            let progress = (0..calls)
                .map(|batch| {
                    let start = Instant::now();
                    for i in 0..PROGRESS_BATCH {
                        manager.update_progress(context.task_id(), (batch * PROGRESS_BATCH + i) as u64, total, None).expect("progress");
                    }
                    micros_since(start) / PROGRESS_BATCH as f64
                })
                .collect();
            let appends = (0..calls)
                .map(|n| {
                    let segment = segment(n);
                    let start = Instant::now();
                    manager.add_completed_segment(context.task_id(), &segment).expect("segment");
                    micros_since(start)
                })
                .collect();
            sender.send((progress, appends)).expect("the bench waits");
            Ok(())
        })
        .expect("submit");
    let (progress, appends) = received.recv().expect("the task reports");
    manager.wait(&id, LONG).expect("finished");
    figures.add_quantiles("progress_us", progress);
    figures.add_quantiles("segment_us", appends);
    manager.shutdown(LONG).expect("shutdown");
}

fn spawn_child(args: &[&str]) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a child process");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    (child, out)
}

fn next_line(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read the child");
    assert!(!line.is_empty(), "the child ended early");
    line.trim_end().to_string()
}

/// Status reads of `task` from another process on the same file.
fn status_from_child(db: &Path, task: &str, calls: usize, figures: &mut Figures) {
    let (mut child, mut out) = spawn_child(&["child_status", &db.display().to_string(), task, &calls.to_string()]);
    let samples: Vec<f64> = serde_json::from_str(&next_line(&mut out)).expect("the child's samples");
    child.wait().expect("the child exits");
    figures.add_quantiles("status_other_process_us", samples);
}

/// A long-poll in another process woken by a segment append in this one: from just
/// before the append to the moment the child's `wait_for_change` returned.
fn cross_process_wake(store: &StoreUnderTest, counts: &Counts, figures: &mut Figures) {
    let manager = store.manager("wake.db");
    let db = store.file("wake.db").expect("an SQLite store");
    let (command, commands) = mpsc::channel::<()>();
    let (stamp, stamps) = mpsc::channel::<u128>();
    let (started_sender, started) = mpsc::channel::<()>();
    let id = manager
        .submit(None, move |context: &TaskContext<'_>| {
            started_sender.send(()).expect("the bench waits");
            for n in 0.. {
                if commands.recv().is_err() {
                    break;
                }
                let segment = segment(n);
                let at = unix_nanos();
                context.manager().add_completed_segment(context.task_id(), &segment).expect("segment");
                stamp.send(at).expect("the bench waits");
            }
            Ok(())
        })
        .expect("submit");
    started.recv().expect("the task runs");
    let (mut child, mut out) = spawn_child(&["child_wait", &db.display().to_string(), &id]);
    assert_eq!(next_line(&mut out), "ready");
    let mut random = 0x9E37_79B9_7F4A_7C15_u64;
    let mut samples = Vec::with_capacity(counts.wakes);
    for _ in 0..counts.wakes {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        // An idle gap, so that the waiter is really parked when the change comes.
        std::thread::sleep(Duration::from_micros(500 + random % 2000));
        command.send(()).expect("the task listens");
        let at = stamps.recv().expect("the task appended");
        let line = next_line(&mut out);
        let woke: u128 = line.split_once(' ').expect("revision and time").1.parse().expect("a time");
        samples.push(woke.saturating_sub(at) as f64 / 1e3);
    }
    drop(command);
    manager.wait(&id, LONG).expect("finished");
    child.wait().expect("the child exits");
    figures.add_quantiles("wake_other_process_us", samples);
    manager.shutdown(LONG).expect("shutdown");
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Bytes of an SQLite store's files once its WAL is checkpointed into the database.
fn disk_bytes(db: &Path) -> u64 {
    let store = SqliteStore::open(db, &Config::default()).expect("open the store");
    store.checkpoint().expect("checkpoint");
    let bytes = store.disk_usage();
    drop(store);
    bytes
}

/// No-op tasks per second until the last finished; the tasks stay retained, which gives
/// the size per retained finished task, and (SQLite) the time to reopen with them.
fn throughput_and_retention(store: &StoreUnderTest, counts: &Counts, figures: &mut Figures) {
    if let Some(empty) = store.file("empty.db") {
        store.manager("empty.db").read_stats().expect("open an empty store");
        figures.info("empty_store_bytes", disk_bytes(&empty));
    }
    let manager = store.manager("retained.db");
    manager.read_stats().expect("open the store");
    let rss_before = resident_bytes();
    let start = Instant::now();
    let mut last = None;
    for _ in 0..counts.tasks {
        last = Some(manager.submit(None, noop).expect("submit"));
    }
    manager.wait(&last.expect("one task at least"), LONG).expect("the queue drains");
    let seconds = start.elapsed().as_secs_f64();
    figures.add("tasks_per_s", counts.tasks as f64 / seconds);
    figures.info("tasks", counts.tasks);
    figures.info("tasks_seconds", seconds);
    let Some(db) = store.file("retained.db") else {
        let rss = resident_bytes().saturating_sub(rss_before);
        figures.add("bytes_per_retained_task", rss as f64 / counts.tasks as f64);
        manager.shutdown(LONG).expect("shutdown");
        return;
    };
    manager.shutdown(LONG).expect("shutdown");
    drop(manager);
    let mut reopens = Vec::with_capacity(REOPENS);
    for _ in 0..REOPENS {
        let manager = store.manager("retained.db");
        let start = Instant::now();
        let stats = manager.read_stats().expect("reopen");
        reopens.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(stats.retained, counts.tasks as u64, "every finished task is retained");
        manager.shutdown(LONG).expect("shutdown");
    }
    figures.info("reopen_ms", json!(reopens.clone()));
    figures.add("reopen_100k_ms", quantile(&mut reopens, 0.5));
    let empty = figures.info.get("empty_store_bytes").and_then(Value::as_u64).unwrap_or(0);
    let bytes = disk_bytes(&db);
    figures.info("retained_store_bytes", bytes);
    figures.add("bytes_per_retained_task", bytes.saturating_sub(empty) as f64 / counts.tasks as f64);
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(store_name: &str, dir: Option<&str>) {
    let counts = Counts::from_environment();
    let _cleanup;
    let store = match store_name {
        "memory" => StoreUnderTest::Memory,
        _ => {
            let dir = dir.map_or_else(
                || std::env::temp_dir().join(format!("sft-bench-stores-{}-{}", std::process::id(), unix_nanos())),
                PathBuf::from,
            );
            std::fs::create_dir_all(&dir).expect("create the store's directory");
            _cleanup = TempDir(dir.clone());
            StoreUnderTest::Sqlite(dir)
        }
    };
    let mut figures = Figures::new(&store);
    let read_task = submits_and_reads(&store, &counts, &mut figures);
    if let Some(db) = store.file("latency.db") {
        status_from_child(&db, &read_task, counts.calls, &mut figures);
    }
    worker_costs(&store, &counts, &mut figures);
    if matches!(store, StoreUnderTest::Sqlite(_)) {
        cross_process_wake(&store, &counts, &mut figures);
    }
    throughput_and_retention(&store, &counts, &mut figures);
    figures.info("calls", counts.calls);
    let mut object = figures.object;
    object.insert("info".into(), Value::Object(figures.info));
    println!("{}", Value::Object(object));
}

fn child_manager(db: &str) -> Arc<TaskManager> {
    TaskManager::with_config(Config { store: format!("sqlite:{db}"), ..Config::default() })
}

/// Times `calls` status reads of `task` and prints them as one JSON array (us).
fn child_status(db: &str, task: &str, calls: usize) {
    let manager = child_manager(db);
    manager.read_status(task).expect("the task is there");
    let samples: Vec<f64> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            manager.read_status(task).expect("status");
            micros_since(start)
        })
        .collect();
    println!("{}", json!(samples));
    manager.shutdown(LONG).expect("shutdown");
}

/// Long-polls `task` until it finishes, printing `REVISION UNIX_NANOS` as each change wakes it.
fn child_wait(db: &str, task: &str) {
    let manager = child_manager(db);
    let mut revision = revision_of(&manager.read_status(task).expect("the task is there"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").and_then(|()| out.flush()).expect("stdout");
    loop {
        let status = manager.wait_for_change(task, revision, LONG).expect("long-poll");
        let woke = unix_nanos();
        let value: Value = serde_json::from_str(&status).expect("status JSON");
        if value["status"] != "PROCESSING" {
            break;
        }
        revision = value["revision"].as_u64().expect("a revision");
        writeln!(out, "{revision} {woke}").and_then(|()| out.flush()).expect("stdout");
    }
    manager.shutdown(LONG).expect("shutdown");
}

fn main() {
    // `cargo bench` appends `--bench`; nothing else is expected.
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1), arg(2), arg(3)) {
        (Some(store @ ("memory" | "sqlite")), dir, None, None) => run(store, dir),
        (Some("child_status"), Some(db), Some(task), Some(calls)) => child_status(db, task, calls.parse().expect("CALLS is a number")),
        (Some("child_wait"), Some(db), Some(task), None) => child_wait(db, task),
        _ => {
            eprintln!("usage: stores memory|sqlite [DIR] (see benches/stores.rs)");
            std::process::exit(2);
        }
    }
}
