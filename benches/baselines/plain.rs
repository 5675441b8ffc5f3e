//! The plain design the registry's is measured against: the registry of the
//! original StoryFlow `tasks.py` design translated literally to Rust. One `HashMap` of task records, stored inline,
//! behind one lock that every submit, read, progress report and the worker
//! take; the status JSON is written while that lock is held. Retention is
//! unbounded (nothing expires during a burst, as with the library's default
//! one-hour cleanup threshold), so it has no cleanup scan.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::measure::{quantile, Report, Slowest, Uninterrupted, XorShift};
use crate::wire::WireStatus;

type Job = Box<dyn FnOnce(&PlainManager, &str) + Send>;

/// Same shapes as the C side: reader pause, writer-hot chunks.
const READER_PAUSE: Duration = Duration::from_micros(10);
const WRITER_HOT_CHUNKS: usize = 5;
const WRITER_HOT_CHUNK: Duration = Duration::from_millis(400);

#[derive(Serialize)]
struct Segment {
    segment_id: Value,
    audio_url: String,
    duration: f64,
}

#[derive(Serialize)]
struct SegmentError {
    segment_id: Value,
    error: String,
}

/// One registry record, inline in the map as the original design keeps its dicts.
type PlainTask = WireStatus<&'static str, Segment, SegmentError>;

struct PlainState {
    tasks: HashMap<String, PlainTask>,
    pending: VecDeque<(String, Job)>,
}

/// The plain HashMap + one lock task manager.
pub struct PlainManager {
    state: Mutex<PlainState>,
    work_available: Condvar,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl PlainManager {
    fn start() -> Arc<Self> {
        let manager = Arc::new(Self {
            state: Mutex::new(PlainState { tasks: HashMap::new(), pending: VecDeque::new() }),
            work_available: Condvar::new(),
        });
        let worker = manager.clone();
        thread::spawn(move || worker.work());
        manager
    }

    fn lock(&self) -> MutexGuard<'_, PlainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&self, task_id: &str, job: Job) {
        let record = PlainTask {
            task_id: task_id.to_owned(),
            status: "PENDING",
            progress: Map::new(),
            completed_segments: Vec::new(),
            errors: Vec::new(),
            created_at: unix_now(),
            started_at: None,
            completed_at: None,
            error: None,
            revision: 1,
            queue_position: None,
            cancel_requested: false,
        };
        let mut state = self.lock();
        assert!(state.tasks.insert(task_id.to_owned(), record).is_none(), "ids are unique");
        state.pending.push_back((task_id.to_owned(), job));
        drop(state);
        self.work_available.notify_one();
    }

    fn status_json(&self, task_id: &str) -> Option<String> {
        let state = self.lock();
        state.tasks.get(task_id).map(|task| serde_json::to_string(task).expect("a record serialises"))
    }

    fn update_progress(&self, task_id: &str, current: u64, total: u64) {
        let mut state = self.lock();
        if let Some(task) = state.tasks.get_mut(task_id) {
            task.progress.clear();
            task.progress.insert("current".into(), current.into());
            task.progress.insert("total".into(), total.into());
            let percentage = (current * 100).checked_div(total).map_or(0, |percentage| percentage.min(100));
            task.progress.insert("percentage".into(), percentage.into());
            task.revision += 1;
        }
    }

    fn set_status(&self, task_id: &str, status: &'static str) {
        let mut state = self.lock();
        let task = state.tasks.get_mut(task_id).expect("a queued task is registered");
        task.status = status;
        if status == "PROCESSING" {
            task.started_at = Some(unix_now());
        } else {
            task.completed_at = Some(unix_now());
        }
        task.revision += 1;
    }

    fn work(self: Arc<Self>) {
        loop {
            let mut state = self.lock();
            let (task_id, job) = loop {
                match state.pending.pop_front() {
                    Some(next) => break next,
                    None => state = self.work_available.wait(state).unwrap_or_else(PoisonError::into_inner),
                }
            };
            drop(state);
            self.set_status(&task_id, "PROCESSING");
            job(&self, &task_id);
            self.set_status(&task_id, "COMPLETED");
        }
    }

    fn wait_finished(&self, task_id: &str) {
        while !self.status_json(task_id).is_some_and(|json| json.contains("\"COMPLETED\"")) {
            thread::sleep(Duration::from_micros(200));
        }
    }
}

fn no_op() -> Job {
    Box::new(|_, _| {})
}

/// The slowest submit and the slowest read from a second thread while `count` tasks are submitted.
pub fn burst(count: usize) -> Report {
    let manager = PlainManager::start();
    let ids: Arc<Vec<String>> = Arc::new((0..count).map(|_| uuid::Uuid::new_v4().to_string()).collect());
    manager.submit("warm-up", no_op());
    manager.wait_finished("warm-up");
    let published = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (manager, ids, published, done) = (manager.clone(), ids.clone(), published.clone(), done.clone());
        thread::spawn(move || {
            let (mut slowest, mut reads, mut random) = (Slowest::new(), 0u64, XorShift::new());
            while !done.load(Ordering::Acquire) {
                let known = published.load(Ordering::Acquire);
                if known == 0 {
                    continue;
                }
                let index = if reads % 2 == 0 { known - 1 } else { random.below(known as u64) as usize };
                let start = Instant::now();
                let status = manager.status_json(&ids[index]);
                slowest.offer(start.elapsed().as_nanos() as u64, known as u64);
                assert!(status.is_some(), "a submitted task has a status");
                reads += 1;
                thread::sleep(READER_PAUSE);
            }
            (slowest, reads)
        })
    };
    let (mut submits, mut uninterrupted) = (Slowest::new(), Uninterrupted::new());
    let began = Instant::now();
    for (index, id) in ids.iter().enumerate() {
        let start = Instant::now();
        manager.submit(id, no_op());
        let nanos = start.elapsed().as_nanos() as u64;
        submits.offer(nanos, index as u64);
        uninterrupted.offer(nanos, index as u64, index + 1 == count);
        published.store(index + 1, Ordering::Release);
    }
    let seconds = began.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let (reads, read_count) = reader.join().expect("reader ran");
    manager.wait_finished(ids.last().expect("count >= 1"));
    Report::default()
        .samples("plain_submit_max_us_burst_1m", &[submits.max_us()])
        .samples("plain_uninterrupted_submit_max_us_burst_1m", &[uninterrupted.slowest().max_us()])
        .samples("plain_status_max_us_burst_1m", &[reads.max_us()])
        .info("seconds", seconds)
        .info("reads", read_count)
        .info("slowest_submits_us_at_index", submits.to_json())
        .info("slowest_uninterrupted_submits_us_at_index", uninterrupted.slowest().to_json())
        .info("slowest_reads_us_at_size", reads.to_json())
}

/// p99 of status reads while the running task reports progress in a tight loop.
pub fn writer_hot() -> Report {
    let manager = PlainManager::start();
    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let (writer_stop, writer_updates) = (stop.clone(), updates.clone());
    manager.submit(
        "hot",
        Box::new(move |manager, task_id| {
            let mut current = 0;
            while !writer_stop.load(Ordering::Relaxed) {
                current += 1;
                manager.update_progress(task_id, current, 1 << 40);
            }
            writer_updates.store(current, Ordering::Relaxed);
        }),
    );
    while !manager.status_json("hot").is_some_and(|json| json.contains("\"PROCESSING\"")) {
        thread::yield_now();
    }
    let began = Instant::now();
    let (mut p99, mut reads) = (Vec::new(), 0usize);
    let mut latencies = Vec::with_capacity(4 << 20);
    for _ in 0..WRITER_HOT_CHUNKS {
        latencies.clear();
        let chunk_end = Instant::now() + WRITER_HOT_CHUNK;
        let mut start = Instant::now();
        while start < chunk_end {
            std::hint::black_box(manager.status_json("hot"));
            let end = Instant::now();
            latencies.push(end.duration_since(start).as_nanos() as u64);
            start = end;
        }
        reads += latencies.len();
        p99.push(quantile(&mut latencies, 0.99) as f64 / 1e3);
    }
    let seconds = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    manager.wait_finished("hot");
    Report::default()
        .samples("plain_status_p99_us_writer_hot", &p99)
        .info("reads_per_s", (reads as f64 / seconds).round())
        .info("updates_per_s", (updates.load(Ordering::Relaxed) as f64 / seconds).round())
}
