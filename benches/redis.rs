//! The Redis store's figures, through the same public API as the other stores: managers
//! configured with `store: "redis://..."`, one per process, each process a machine of its
//! own (its own `machine_id`), against a `redis-server` this program starts on a free port
//! of 127.0.0.1 (AOF on, fsync every second, as in production) and stops.
//!
//! One invocation is one run of every figure; it prints one JSON object
//! `{"redis_<figure>": [sample], ..., "info": {...}}` (each per-call figure one run's p50
//! or p99) that `benches/report.py` folds with the other runs (medians over the runs).
//! `redis summary DIR` prints the medians of the runs in DIR beside their targets.
//!
//! Usage: redis run | redis summary SAMPLES_DIR
//! The worker processes are this program again: `redis worker URL NAMESPACE MACHINE HANDLER`.
//!
//! Counts (environment): BENCH_QUICK=1 for a short try. BENCH_REDIS_COMMANDSTATS=1 also
//! prints, for each throughput run, the server's calls and microseconds per task by command
//! (`INFO commandstats` deltas).

// Shared with tests/redis_store.rs, which uses all of it (restarts too).
#[allow(dead_code)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis_server::RedisServer;
use serde_json::{json, Map, Value};
use storyflow_tasks::{CompletedSegment, Config, RedisOptions, RedisStore, Schedule, SegmentId, Store, TaskKind, TaskManager, TaskOutcome};

const LONG: Option<Duration> = Some(Duration::from_secs(300));

struct Counts {
    noop_tasks: usize,
    sleep_tasks_per_worker: usize,
    latency_samples: usize,
    status_reads: usize,
    segment_tasks: usize,
    retained: usize,
}

impl Counts {
    fn from_environment() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Self {
                noop_tasks: 2000,
                sleep_tasks_per_worker: 15,
                latency_samples: 300,
                status_reads: 500,
                segment_tasks: 200,
                retained: 1000,
            }
        } else {
            Self {
                noop_tasks: 20_000,
                sleep_tasks_per_worker: 50,
                latency_samples: 2000,
                status_reads: 2000,
                segment_tasks: 1000,
                retained: 10_000,
            }
        }
    }
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn segment(n: i64) -> CompletedSegment {
    CompletedSegment { segment_id: SegmentId::from(n), audio_url: format!("/media/audio/{n}.wav"), duration: 2.5 }
}

fn store_config(url: &str, namespace: &str, machine: &str) -> Config {
    Config { store: url.to_owned(), redis_namespace: namespace.to_owned(), machine_id: Some(machine.to_owned()), ..Config::default() }
}

/// A direct store handle (the parent's: it submits and reads, and runs nothing).
fn open_store(url: &str, namespace: &str, machine: &str) -> RedisStore {
    RedisStore::open_with(url, &store_config(url, namespace, machine), RedisOptions::default()).unwrap()
}

// ----- worker processes ---------------------------------------------------------------------

/// A worker process: a manager that registers HANDLER when told "go" on stdin and shuts
/// down at end of input.
fn worker(url: &str, namespace: &str, machine: &str, handler: &str) {
    let manager = TaskManager::with_config(store_config(url, namespace, machine));
    // Opens the store (a read does) before saying it is ready.
    let _ = manager.read_stats().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut lines = std::io::stdin().lock().lines();
    if lines.next().and_then(|l| l.ok()).as_deref() == Some("go") {
        let body: storyflow_tasks::HandlerFn = match handler {
            "noop" => Arc::new(|_, _| Ok(())),
            "sleep20" => Arc::new(|_, _| {
                std::thread::sleep(Duration::from_millis(20));
                Ok(())
            }),
            "seg3" => Arc::new(|context, _| {
                for n in 0..3 {
                    context.manager().add_completed_segment(context.task_id(), &segment(n)).unwrap();
                }
                Ok(())
            }),
            other => panic!("unknown handler {other}"),
        };
        manager.register_handler(handler, body).unwrap();
        for _ in lines.by_ref() {}
    }
    let _ = manager.shutdown(Some(Duration::from_secs(10)));
}

struct Workers {
    children: Vec<(Child, Option<ChildStdin>)>,
}

impl Workers {
    /// Starts `n` worker processes, machines `<prefix>0..n`, and waits until each is ready.
    fn start(url: &str, namespace: &str, prefix: &str, n: usize, handler: &str) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut children = Vec::new();
        for i in 0..n {
            let mut child = Command::new(&exe)
                .args(["worker", url, namespace, &format!("{prefix}{i}"), handler])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut ready = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
            assert_eq!(ready.trim(), "ready");
            let stdin = child.stdin.take();
            children.push((child, stdin));
        }
        Self { children }
    }

    fn go(&mut self) {
        for (_, stdin) in &mut self.children {
            let stdin = stdin.as_mut().unwrap();
            writeln!(stdin, "go").unwrap();
            stdin.flush().unwrap();
        }
    }

    /// CPU seconds the worker processes have used so far (user and system, from /proc).
    fn cpu_secs(&self) -> f64 {
        let tick = 100.0; // USER_HZ on Linux
        self.children
            .iter()
            .filter_map(|(child, _)| std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok())
            .filter_map(|stat| {
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / tick)
            })
            .sum()
    }

    fn stop(mut self) {
        for (child, stdin) in &mut self.children {
            drop(stdin.take());
            let _ = child.wait();
        }
        self.children.clear();
    }
}

/// Waits until `n` tasks of this namespace completed (from the parent, which runs nothing):
/// a look every 5 ms, so that the watching adds next to nothing to the server's load.
fn wait_completed(store: &RedisStore, n: u64) {
    while store.stats().unwrap().completed_total < n {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn submit_many(store: &RedisStore, handler: &str, n: usize) {
    let payload = serde_json::value::RawValue::from_string("null".into()).unwrap();
    for _ in 0..n {
        store.submit(None, TaskKind::Named { handler, payload: Some(&payload) }, Schedule::default()).unwrap();
    }
}

/// Tasks per second with `workers` worker processes draining `tasks` queued tasks, and the
/// server's CPU time per task meanwhile (microseconds).
fn throughput(server: &RedisServer, run: &str, handler: &str, workers: usize, tasks: usize) -> (f64, f64) {
    let namespace = format!("bench-{run}-{handler}-{workers}");
    let url = server.url();
    let store = open_store(&url, &namespace, "parent");
    submit_many(&store, handler, tasks);
    let mut pool = Workers::start(&url, &namespace, "m", workers, handler);
    let report = std::env::var_os("BENCH_REDIS_COMMANDSTATS").is_some();
    let stats_before = if report { command_usage(server) } else { HashMap::new() };
    let cpu_before = server_cpu(server);
    let workers_cpu_before = pool.cpu_secs();
    let started = Instant::now();
    pool.go();
    wait_completed(&store, tasks as u64);
    let secs = started.elapsed().as_secs_f64();
    let busy = (server_cpu(server) - cpu_before) / secs;
    if report {
        print_command_usage(&stats_before, &command_usage(server), tasks, &format!("{workers} x {handler}"));
        let per_task = |secs: f64| secs / tasks as f64 * 1e6;
        eprintln!(
            "   CPU per task: server {:.0} us, worker processes {:.0} us",
            per_task(server_cpu(server) - cpu_before),
            per_task(pool.cpu_secs() - workers_cpu_before)
        );
    }
    pool.stop();
    eprintln!("{workers} x {handler}: {:.0} tasks/s, the server busy {:.0}% of the time", tasks as f64 / secs, busy * 100.0);
    (tasks as f64 / secs, busy * secs / tasks as f64 * 1e6)
}

/// CPU seconds the server has used (its main thread and the others).
fn server_cpu(server: &RedisServer) -> f64 {
    let info: String = server.query(redis::cmd("INFO").arg("cpu"));
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
    field("used_cpu_sys:") + field("used_cpu_user:")
}

fn commandstats(server: &RedisServer) -> HashMap<String, f64> {
    let info: String = server.query(redis::cmd("INFO").arg("commandstats"));
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Per command: calls and microseconds spent in it (`INFO commandstats`; a script's own
/// `redis.call`s are counted under their commands too, and inside its EVALSHA time).
fn command_usage(server: &RedisServer) -> HashMap<String, (f64, f64)> {
    let info: String = server.query(redis::cmd("INFO").arg("commandstats"));
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| rest.split(',').find_map(|kv| kv.strip_prefix(key))?.parse::<f64>().ok();
            Some((name.to_owned(), (field("calls=")?, field("usec=")?)))
        })
        .collect()
}

/// The opt-in report (BENCH_REDIS_COMMANDSTATS=1): calls and server microseconds per task
/// by command over one throughput run, the busiest first.
fn print_command_usage(before: &HashMap<String, (f64, f64)>, after: &HashMap<String, (f64, f64)>, tasks: usize, label: &str) {
    let mut rows: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = before.get(name).copied().unwrap_or((0.0, 0.0));
            (name.clone(), (calls - c0) / tasks as f64, (usec - u0) / tasks as f64)
        })
        .filter(|(_, calls, _)| *calls > 0.0)
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    eprintln!("{label}: per task, calls and server us by command");
    for (name, calls, usec) in rows {
        eprintln!("   {name:<14} {calls:>8.3} calls {usec:>8.1} us");
    }
}

fn used_memory(server: &RedisServer) -> f64 {
    let info: String = server.query(redis::cmd("INFO").arg("memory"));
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

fn run_all() {
    let counts = Counts::from_environment();
    let server = RedisServer::start();
    let url = server.url();
    let run = format!("{}", std::process::id());
    let mut figures = Map::new();
    let mut put = |name: &str, value: f64| {
        figures.insert(format!("redis_{name}"), json!([value]));
    };

    // Throughput: 1, 2 and 4 worker processes, each a machine of its own.
    for workers in [1, 2, 4] {
        let (noop, server_us) = throughput(&server, &run, "noop", workers, counts.noop_tasks);
        put(&format!("noop_{workers}w_tasks_per_s"), noop);
        put(&format!("server_cpu_us_per_noop_task_{workers}w"), server_us);
        let (sleep, _) = throughput(&server, &run, "sleep20", workers, counts.sleep_tasks_per_worker * workers);
        put(&format!("sleep20ms_{workers}w_tasks_per_s"), sleep);
        eprintln!("{workers} workers: {noop:.0} no-op tasks/s, {sleep:.1} 20 ms tasks/s");
    }

    // Submit to start, with one idle worker process: the status's started_at (the server's
    // clock, the same clock on loopback) minus the time just before the submit.
    {
        let namespace = format!("bench-{run}-latency");
        let store = open_store(&url, &namespace, "parent");
        let mut pool = Workers::start(&url, &namespace, "m", 1, "noop");
        pool.go();
        std::thread::sleep(Duration::from_millis(300));
        let payload = serde_json::value::RawValue::from_string("null".into()).unwrap();
        let mut samples = Vec::new();
        for _ in 0..counts.latency_samples {
            let before = epoch_now();
            let id = store.submit(None, TaskKind::Named { handler: "noop", payload: Some(&payload) }, Schedule::default()).unwrap();
            let done: Value = serde_json::from_str(&store.wait(&id, LONG).unwrap()).unwrap();
            samples.push((done["started_at"].as_f64().unwrap() - before) * 1e6);
        }
        pool.stop();
        put("submit_to_start_p50_us", percentile(&mut samples, 0.5));
        put("submit_to_start_p99_us", percentile(&mut samples, 0.99));
    }

    // Status reads from another process than the one running the task (10 segments).
    {
        let namespace = format!("bench-{run}-status");
        let runner = open_store(&url, &namespace, "m0");
        runner.register_handler("h").unwrap();
        let payload = serde_json::value::RawValue::from_string("{\"chapter\": 1}".into()).unwrap();
        let id = runner.submit(None, TaskKind::Named { handler: "h", payload: Some(&payload) }, Schedule::default()).unwrap();
        runner.claim_next(LONG).unwrap().unwrap();
        for n in 0..10 {
            runner.add_segment(&id, &segment(n)).unwrap();
        }
        let reader = open_store(&url, &namespace, "api");
        let mut samples = Vec::new();
        for _ in 0..counts.status_reads {
            let started = Instant::now();
            std::hint::black_box(reader.status_json(&id).unwrap());
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
        put("status_read_p50_us", percentile(&mut samples, 0.5));
        put("status_read_p99_us", percentile(&mut samples, 0.99));

        // The yield check: answered from the ticker's value for a task run here, one read elsewhere.
        let mut local = Vec::new();
        for _ in 0..counts.status_reads {
            let started = Instant::now();
            std::hint::black_box(runner.is_yield_requested(&id).unwrap());
            local.push(started.elapsed().as_secs_f64() * 1e9);
        }
        let mut remote = Vec::new();
        for _ in 0..counts.status_reads {
            let started = Instant::now();
            std::hint::black_box(reader.is_yield_requested(&id).unwrap());
            remote.push(started.elapsed().as_secs_f64() * 1e6);
        }
        put("yield_check_running_here_p50_ns", percentile(&mut local, 0.5));
        put("yield_check_other_process_p50_us", percentile(&mut remote, 0.5));
        runner.finish(&id, TaskOutcome::Completed).unwrap();
    }

    // Round trips per task with three segments, through a worker process's manager: the
    // server's count of script calls during the run, less what the same processes send
    // while idle for as long (heartbeats, deadline and retention sweeps).
    {
        let namespace = format!("bench-{run}-trips");
        let store = open_store(&url, &namespace, "parent");
        let mut pool = Workers::start(&url, &namespace, "m", 1, "seg3");
        pool.go();
        std::thread::sleep(Duration::from_millis(300));
        let before = commandstats(&server);
        let started = Instant::now();
        submit_many(&store, "seg3", counts.segment_tasks);
        wait_completed(&store, counts.segment_tasks as u64);
        let secs = started.elapsed().as_secs_f64();
        let after = commandstats(&server);
        let idle_started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs.max(1.0)));
        let idle_after = commandstats(&server);
        let idle_secs = idle_started.elapsed().as_secs_f64();
        pool.stop();
        let delta =
            |a: &HashMap<String, f64>, b: &HashMap<String, f64>, name: &str| b.get(name).unwrap_or(&0.0) - a.get(name).unwrap_or(&0.0);
        // Top-level calls the clients send: scripts, and the plain reads the parent's
        // completion check makes (HGETALL, XRANGE, GET), which are not the task's.
        let scripts_run = delta(&before, &after, "evalsha") + delta(&before, &after, "eval");
        let scripts_idle = (delta(&after, &idle_after, "evalsha") + delta(&after, &idle_after, "eval")) * secs / idle_secs;
        let tasks = counts.segment_tasks as f64;
        put("round_trips_per_3_segment_task", (scripts_run - scripts_idle) / tasks);
        put("feed_reads_per_3_segment_task", delta(&before, &after, "xread") / tasks);
        eprintln!(
            "{} script calls for {tasks} tasks in {secs:.2} s, {:.0} of them background (idle rate), {} XREAD wake-ups",
            scripts_run,
            scripts_idle,
            delta(&before, &after, "xread")
        );
    }

    // Server memory per retained finished task, without and with three segments.
    for segments in [0, 3] {
        let namespace = format!("bench-{run}-memory-{segments}");
        let store = open_store(&url, &namespace, &format!("mem{segments}"));
        store.register_handler("h").unwrap();
        let _: String = server.query(redis::cmd("MEMORY").arg("PURGE"));
        let before = used_memory(&server);
        let payload = serde_json::value::RawValue::from_string("{\"chapter\": 12, \"voice\": \"en-1\"}".into()).unwrap();
        for _ in 0..counts.retained {
            let id = store.submit(None, TaskKind::Named { handler: "h", payload: Some(&payload) }, Schedule::default()).unwrap();
            store.claim_next(LONG).unwrap().unwrap();
            for n in 0..segments {
                store.add_segment(&id, &segment(n)).unwrap();
            }
            store.finish(&id, TaskOutcome::Completed).unwrap();
        }
        let after = used_memory(&server);
        put(&format!("memory_per_finished_task_{segments}_segments_bytes"), (after - before) / counts.retained as f64);
    }

    let load: String = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    figures.insert("info".into(), json!({"counts": {"noop_tasks": counts.noop_tasks, "retained": counts.retained}, "load": load.trim()}));
    println!("{}", Value::Object(figures));
}

/// Targets: (figure, relation, limit; or a ratio of two figures).
const TARGETS: [(&str, &str, f64); 5] = [
    ("redis_noop_4w_tasks_per_s", ">=", 5000.0),
    ("redis_submit_to_start_p50_us", "<=", 2000.0),
    ("redis_round_trips_per_3_segment_task", "<=", 8.0),
    ("redis_sleep20ms_scaling_1_to_4", ">=", 3.6),
    ("redis_status_read_p50_us", "<=", f64::INFINITY),
];

fn summary(dir: &str) {
    let mut samples: HashMap<String, Vec<f64>> = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".redis.json") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let Some(Value::Object(run)) = text.lines().last().and_then(|l| serde_json::from_str(l).ok()) else { continue };
        if let (Some(one), Some(four)) = (run.get("redis_sleep20ms_1w_tasks_per_s"), run.get("redis_sleep20ms_4w_tasks_per_s")) {
            let ratio = four[0].as_f64().unwrap() / one[0].as_f64().unwrap();
            samples.entry("redis_sleep20ms_scaling_1_to_4".into()).or_default().push(ratio);
        }
        for (key, value) in run {
            if let Some(v) = value.get(0).and_then(Value::as_f64) {
                samples.entry(key).or_default().push(v);
            }
        }
    }
    let mut names: Vec<&String> = samples.keys().collect();
    names.sort();
    println!("| figure | median | min | max | runs | target |");
    println!("|---|---:|---:|---:|---:|---|");
    for name in names {
        let mut values = samples[name].clone();
        let median = percentile(&mut values, 0.5);
        let target = TARGETS.iter().find(|t| t.0 == name).filter(|t| t.2.is_finite()).map_or(String::new(), |(_, relation, limit)| {
            let met = if *relation == ">=" { median >= *limit } else { median <= *limit };
            format!("{relation} {limit}: {}", if met { "met" } else { "MISSED" })
        });
        println!("| `{name}` | {median:.2} | {:.2} | {:.2} | {} | {target} |", values[0], values[values.len() - 1], values.len());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("worker") => worker(&args[1], &args[2], &args[3], &args[4]),
        Some("summary") => summary(&args[1]),
        Some("run") | None => run_all(),
        Some(other) => panic!("unknown mode {other}: use run, summary DIR or worker"),
    }
}
