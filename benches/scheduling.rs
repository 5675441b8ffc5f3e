//! "The person waiting goes first": how long a one-sentence preview waits to start while
//! a 300-chapter book is queued and its chapters speak 0.2 s sentences, under plain FIFO,
//! with priority alone, and with priority and cooperative yield; and what the yield check
//! costs per call on the memory and the SQLite store.
//!
//! The book: its first chapter is running when the preview comes, and has
//! `CHAPTER_SENTENCES` sentences; the 299 chapters queued behind it have one sentence
//! each, so that the FIFO wait (which runs them all) takes a minute, not an hour. The
//! preview is submitted at a random moment of the running chapter:
//! - FIFO: the preview has the book's priority and waits for every chapter;
//! - priority: the preview's priority is higher, so it runs next, but only once the
//!   running chapter ends;
//! - priority + yield: the running chapter polls the yield check between sentences and
//!   yields, so the preview waits for at most the sentence being spoken.
//!
//! `benches/run.sh` runs it once per `make bench` (it repeats its samples itself), with
//! `BENCH_ONLY=scheduling` alone. It prints one JSON object for `benches/report.py`:
//! each figure folded (`median`, `min`, `max`, `runs`) over its samples; and the table
//! of the three waits side by side on stderr.
//!
//! Counts (environment): BENCH_QUICK=1 for a short try (30 queued chapters, 6 samples);
//! BENCH_SCHEDULING_SAMPLES (samples per priority mode, default 20);
//! BENCH_SCHEDULING_CHAPTERS (the queue, default 300).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use storyflow_tasks::{Config, Schedule, TaskContext, TaskFailure, TaskManager};

const SENTENCE: Duration = Duration::from_millis(200);
/// Sentences of the chapter that is running when the preview comes: 1.6 s of audio.
const CHAPTER_SENTENCES: u32 = 8;
const BOOK_PRIORITY: i32 = 0;
const PREVIEW_PRIORITY: i32 = 10;
const LONG: Option<Duration> = Some(Duration::from_secs(900));

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Fifo,
    Priority,
    PriorityYield,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fifo => "fifo",
            Mode::Priority => "priority",
            Mode::PriorityYield => "priority_yield",
        }
    }
}

struct Counts {
    samples: usize,
    chapters: usize,
    check_calls: usize,
}

impl Counts {
    fn from_environment() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let number = |name: &str, default: usize| {
            std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} is a number"))).max(1)
        };
        Self {
            samples: number("BENCH_SCHEDULING_SAMPLES", if quick { 6 } else { 20 }),
            chapters: number("BENCH_SCHEDULING_CHAPTERS", if quick { 30 } else { 300 }),
            check_calls: if quick { 2_000 } else { 20_000 },
        }
    }
}

/// A small xorshift generator for the moment the preview comes.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The q-quantile (0..=1) by nearest rank.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A chapter of `sentences` sentences: speaks one per `SENTENCE`, stops when cancelled,
/// and (with `polls`) yields when asked, to go on after the sentences it spoke.
fn chapter(
    sentences: u32,
    polls: bool,
    started: Option<mpsc::Sender<()>>,
) -> impl FnMut(&TaskContext<'_>) -> Result<(), TaskFailure> + Send {
    let mut spoken = 0;
    let mut started = started;
    move |context: &TaskContext<'_>| {
        if let Some(started) = started.take() {
            let _ = started.send(());
        }
        while spoken < sentences {
            if context.is_cancel_requested() {
                return Ok(());
            }
            if polls && context.is_yield_requested() {
                context.yield_task().map_err(|e| TaskFailure::Message(e.to_string()))?;
                return Ok(());
            }
            std::thread::sleep(SENTENCE);
            spoken += 1;
        }
        Ok(())
    }
}

/// One wait: queues the book, submits the preview at a random moment of the running
/// chapter, and returns the seconds from the preview's submission to its start.
fn one_wait(manager: &Arc<TaskManager>, mode: Mode, chapters: usize, rng: &mut Rng, sample: usize) -> f64 {
    let polls = mode == Mode::PriorityYield;
    let (started, first_started) = mpsc::channel();
    let mut ids = Vec::with_capacity(chapters);
    for n in 0..chapters {
        let sentences = if n == 0 { CHAPTER_SENTENCES } else { 1 };
        let body = chapter(sentences, polls, (n == 0).then(|| started.clone()));
        let id = format!("{}-{sample}-chapter-{n}", mode.name());
        manager.submit_resumable(Some(&id), Schedule::with_priority(BOOK_PRIORITY), body).expect("submit a chapter");
        ids.push(id);
    }
    first_started.recv().expect("the first chapter starts");
    std::thread::sleep(SENTENCE.mul_f64(f64::from(CHAPTER_SENTENCES) * rng.unit()));
    let priority = if mode == Mode::Fifo { BOOK_PRIORITY } else { PREVIEW_PRIORITY };
    let (began, preview_began) = mpsc::channel::<Instant>();
    let submitted = Instant::now();
    let preview = manager
        .submit_with(Some(&format!("{}-{sample}-preview", mode.name())), Schedule::with_priority(priority), move |_: &TaskContext<'_>| {
            let _ = began.send(Instant::now());
            std::thread::sleep(SENTENCE);
            Ok(())
        })
        .expect("submit the preview");
    let start = preview_began.recv().expect("the preview starts");
    let wait = start.duration_since(submitted).as_secs_f64();
    // The book is not what is measured: cancel what is left of it.
    for id in &ids {
        let _ = manager.cancel(id);
    }
    manager.wait(&preview, LONG).expect("the preview finishes");
    for id in &ids {
        manager.wait(id, LONG).expect("a chapter finishes");
    }
    wait
}

/// Seconds per `is_yield_requested` call on the running task while `queued` tasks of a
/// lower priority wait (the case polled between sentences), one sample per batch.
fn yield_check_cost(manager: &Arc<TaskManager>, queued: usize, calls: usize) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let (started, running) = mpsc::channel();
    let hold = stop.clone();
    let id = manager
        .submit_with(Some("check-runner"), Schedule::with_priority(1), move |_: &TaskContext<'_>| {
            let _ = started.send(());
            while !hold.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
        .expect("submit");
    running.recv().expect("it starts");
    let waiting: Vec<String> = (0..queued)
        .map(|n| manager.submit_external_with(Some(&format!("check-queued-{n}")), Schedule::default()).expect("submit").to_string())
        .collect();
    const BATCH: usize = 100;
    let mut samples = Vec::with_capacity(calls / BATCH);
    for _ in 0..(calls / BATCH).max(1) {
        let began = Instant::now();
        for _ in 0..BATCH {
            assert!(!manager.is_yield_requested(&id).expect("the yield check"));
        }
        samples.push(began.elapsed().as_secs_f64() / BATCH as f64);
    }
    for id in &waiting {
        let _ = manager.cancel(id);
    }
    stop.store(true, Ordering::Release);
    manager.wait(&id, LONG).expect("finishes");
    samples
}

fn folded(samples: &[f64], scale: f64, unit: &str) -> Value {
    let scaled: Vec<f64> = samples.iter().map(|s| s * scale).collect();
    json!({
        "median": quantile(&scaled, 0.5),
        "min": quantile(&scaled, 0.0),
        "max": quantile(&scaled, 1.0),
        "unit": unit,
        "runs": scaled.len(),
    })
}

fn main() {
    let counts = Counts::from_environment();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut figures = Map::new();
    let mut table = Vec::new();

    let manager = TaskManager::new();
    for mode in [Mode::Priority, Mode::PriorityYield, Mode::Fifo] {
        // FIFO runs every queued chapter before the preview: one sample is a minute.
        let samples = if mode == Mode::Fifo { 1 } else { counts.samples };
        let waits: Vec<f64> = (0..samples).map(|sample| one_wait(&manager, mode, counts.chapters, &mut rng, sample)).collect();
        let (p50, p99) = (quantile(&waits, 0.5), quantile(&waits, 0.99));
        figures.insert(
            format!("scheduling_preview_wait_{}_p50_s", mode.name()),
            json!({"median": p50, "min": quantile(&waits, 0.0), "max": quantile(&waits, 1.0), "unit": "s", "runs": waits.len()}),
        );
        figures.insert(
            format!("scheduling_preview_wait_{}_p99_s", mode.name()),
            json!({"median": p99, "min": p99, "max": p99, "unit": "s", "runs": waits.len()}),
        );
        table.push((mode.name(), p50, p99, waits.len()));
    }
    let memory_check = yield_check_cost(&manager, counts.chapters, counts.check_calls);
    figures.insert("scheduling_yield_check_memory_ns".into(), folded(&memory_check, 1e9, "ns"));
    manager.shutdown(LONG).expect("shut down");

    let dir: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join(format!("sft-bench-scheduling-{}", std::process::id())), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("a directory for the SQLite file");
    let sqlite = TaskManager::with_config(Config { store: format!("sqlite:{}", dir.join("tasks.db").display()), ..Config::default() });
    let sqlite_check = yield_check_cost(&sqlite, counts.chapters, counts.check_calls / 10);
    figures.insert("scheduling_yield_check_sqlite_us".into(), folded(&sqlite_check, 1e6, "us"));
    let sqlite_waits: Vec<f64> =
        (0..(counts.samples / 3).max(3)).map(|sample| one_wait(&sqlite, Mode::PriorityYield, counts.chapters, &mut rng, sample)).collect();
    figures.insert("scheduling_preview_wait_priority_yield_sqlite_p50_s".into(), folded(&sqlite_waits, 1.0, "s"));
    let sqlite_p99 = quantile(&sqlite_waits, 0.99);
    figures.insert(
        "scheduling_preview_wait_priority_yield_sqlite_p99_s".into(),
        json!({"median": sqlite_p99, "min": sqlite_p99, "max": sqlite_p99, "unit": "s", "runs": sqlite_waits.len()}),
    );
    let _ = sqlite.shutdown(LONG);
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    let mut text = format!(
        "The preview's wait to start ({} chapters queued, 0.2 s sentences, the running chapter {} sentences)\n",
        counts.chapters, CHAPTER_SENTENCES
    );
    text.push_str(&format!("{:<26} {:>10} {:>10} {:>8}\n", "memory store", "p50 (s)", "p99 (s)", "samples"));
    for (name, p50, p99, n) in &table {
        text.push_str(&format!("{name:<26} {p50:>10.3} {p99:>10.3} {n:>8}\n"));
    }
    text.push_str(&format!(
        "{:<26} {:>10.3} {:>10.3} {:>8}\n",
        "priority_yield (sqlite)",
        quantile(&sqlite_waits, 0.5),
        sqlite_p99,
        sqlite_waits.len()
    ));
    text.push_str(&format!(
        "yield check per call: memory {:.0} ns, sqlite {:.1} us (p50; {} tasks queued)\n",
        quantile(&memory_check, 0.5) * 1e9,
        quantile(&sqlite_check, 0.5) * 1e6,
        counts.chapters
    ));
    eprint!("{text}");
    let target_met = table.iter().find(|(name, ..)| *name == "priority_yield").is_some_and(|(_, _, p99, _)| *p99 <= 0.25);
    figures.insert(
        "info".into(),
        json!({"scheduling": {"chapters": counts.chapters, "running_chapter_sentences": CHAPTER_SENTENCES, "sentence_s": SENTENCE.as_secs_f64(),
            "target_priority_yield_p99_le_0_25_s": target_met}}),
    );
    println!("{}", Value::Object(figures));
}
