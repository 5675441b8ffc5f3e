//! The Redis store against a real `redis-server`, real processes and SIGKILL.
//!
//! Every test starts its own server (tests/support/redis_server.rs) on a free port. Child
//! processes are this test binary run again on the `child_process` test with `SFT_CHILD`
//! naming their role and `SFT_MACHINE` their machine; they talk to the parent through
//! files and lines on stdout that start with `@@`.

#[path = "support/children.rs"]
mod children;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/store_behaviour.rs"]
mod store_behaviour;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, ChildStdout};
use std::sync::Arc;
use std::time::{Duration, Instant};

use children::{append_line, env, next_message, say, spawn_child, spawn_quiet};
use redis_server::RedisServer;
use serde_json::Value;
use store_behaviour::{at, json, named, segment, status, wait_for, LONG};
use storyflow_tasks::{
    Config, ErrorKind, EventKind, RedisOptions, RedisStore, Schedule, Store, TaskFailure, TaskKind, TaskManager, TaskOutcome, TaskState,
};

// ----- helpers ---------------------------------------------------------------------

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("sft-redis-test-{name}-{}-{}", std::process::id(), nanos()));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Short leases, so that a killed process is found dead within seconds (long enough that
/// a heartbeat thread delayed by a loaded machine is not taken for a dead one).
fn quick(machine: &str) -> RedisOptions {
    RedisOptions {
        machine_id: Some(machine.to_owned()),
        lease: Duration::from_millis(2000),
        heartbeat_interval: Duration::from_millis(100),
        sweep_interval: Duration::from_millis(100),
        ..RedisOptions::default()
    }
}

fn open(server: &RedisServer, machine: &str) -> RedisStore {
    RedisStore::open_with(&server.url(), &Config::default(), quick(machine)).unwrap()
}

/// A new handle on `server` at each call, each of a machine of its own (m1, m2, ...): the
/// opener the shared store behaviours (tests/support/store_behaviour.rs) are given.
fn machine_after_machine(server: &RedisServer, machines: &Cell<u32>) -> RedisStore {
    machines.set(machines.get() + 1);
    open(server, &format!("m{}", machines.get()))
}

/// Calls `f` until the server answers; every refusal meanwhile must say the server is away.
fn retrying<T>(errors: &mut u64, mut f: impl FnMut() -> storyflow_tasks::Result<T>) -> T {
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) => {
                assert!(e.message().contains("is unreachable"), "an unclear error while the server was away: {e}");
                *errors += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

// ----- the child processes ----------------------------------------------------------

#[test]
fn child_process() {
    let Ok(role) = std::env::var("SFT_CHILD") else {
        return;
    };
    let url = env("SFT_URL");
    let max_attempts = std::env::var("SFT_MAX_ATTEMPTS").map_or(3, |v| v.parse().unwrap());
    let options = RedisOptions { max_attempts, ..quick(&env("SFT_MACHINE")) };
    let store = RedisStore::open_with(&url, &Config::default(), options).unwrap();
    match role.as_str() {
        "machine" => child_machine(&store),
        "narrate" => child_narrate(&store),
        "observer" => child_observer(&store),
        "waiter" => {
            say("ready");
            let after: u64 = env("SFT_AFTER").parse().unwrap();
            let woke = store.wait_for_change(&env("SFT_TASK"), after, LONG).unwrap();
            say(&format!("woke {woke}"));
        }
        "owner" => {
            store.submit(Some(&env("SFT_RUNNING")), TaskKind::Function, Schedule::default()).unwrap();
            store.submit(Some(&env("SFT_PENDING")), TaskKind::Function, Schedule::default()).unwrap();
            let claim = store.claim_next(LONG).unwrap().unwrap();
            say(&format!("claimed {}", claim.task_id));
            std::thread::sleep(Duration::from_secs(3600));
        }
        "stuck" => {
            store.register_handler("stuck").unwrap();
            let claim = store.claim_next(LONG).unwrap().unwrap();
            let attempt = claim.attempt;
            store.add_segment(&claim.task_id, &segment(i64::from(attempt))).unwrap();
            store.set_checkpoint(&claim.task_id, &json(&attempt.to_string())).unwrap();
            say(&format!("claimed {}", claim.to_json()));
            std::thread::sleep(Duration::from_secs(3600));
        }
        "stale" => {
            store.register_handler("h").unwrap();
            let claim = store.claim_next(LONG).unwrap().unwrap();
            store.add_segment(&claim.task_id, &segment(0)).unwrap();
            say("claimed");
            while !PathBuf::from(env("SFT_GO")).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let segment = store.add_segment(&claim.task_id, &segment(1)).unwrap_err().kind();
            let finish = store.finish(&claim.task_id, TaskOutcome::Completed).unwrap_err().kind();
            // Its heartbeat, renewed once it runs again, finds it recovered.
            std::thread::sleep(Duration::from_millis(300));
            let claim = store.claim_next(Some(Duration::from_millis(10))).unwrap_err();
            let dead = if claim.message().contains("found dead") { "found dead" } else { "not told" };
            say(&format!("refused {segment:?} {finish:?} {dead}"));
        }
        other => panic!("unknown child role {other}"),
    }
}

/// One process of a machine: runs `work` tasks (three segments each) and the `slow` task,
/// logging every start and end; a second task running at once on its machine (in any of
/// the machine's processes) is logged as an overlap through the machine's marker file.
fn child_machine(store: &RedisStore) {
    let machine = env("SFT_MACHINE");
    let marker = PathBuf::from(env("SFT_MARKER"));
    let log = env("SFT_LOG");
    let pid = std::process::id();
    store.register_handler("work").unwrap();
    store.register_handler("slow").unwrap();
    loop {
        let Some(claim) = store.claim_next(Some(Duration::from_millis(100))).unwrap() else {
            let stats = store.stats().unwrap();
            if stats.counts.pending == 0 && stats.counts.processing == 0 {
                return;
            }
            continue;
        };
        let id = claim.task_id.to_string();
        if OpenOptions::new().write(true).create_new(true).open(&marker).is_err() {
            append_line(&log, &format!("OVERLAP {machine} {pid} {id}"));
        }
        append_line(&log, &format!("start {machine} {pid} {id} {}", claim.attempt));
        let done = claim.checkpoint.as_ref().map_or(0, |c| c.get().parse::<i64>().unwrap());
        if claim.handler.as_deref() == Some("slow") && claim.attempt == 1 {
            store.add_segment(&id, &segment(0)).unwrap();
            store.set_checkpoint(&id, &json("1")).unwrap();
            say(&format!("slow {pid}"));
            std::thread::sleep(Duration::from_secs(3600));
        }
        for n in done..3 {
            store.add_segment(&id, &segment(n)).unwrap();
            store.set_checkpoint(&id, &json(&(n + 1).to_string())).unwrap();
        }
        let _ = fs::remove_file(&marker);
        append_line(&log, &format!("end {machine} {pid} {id}"));
        assert_eq!(store.finish(&id, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    }
}

/// Runs `narrate` tasks through a server outage: one segment per sentence, each
/// acknowledged in a file once the store took it; every call retried until the server
/// answers (the errors meanwhile must say it is away).
fn child_narrate(store: &RedisStore) {
    let ack = env("SFT_ACK");
    let sentences: i64 = env("SFT_SEGMENTS").parse().unwrap();
    store.register_handler("narrate").unwrap();
    let mut errors = 0;
    loop {
        let claim = retrying(&mut errors, || store.claim_next(Some(Duration::from_millis(100))));
        let Some(claim) = claim else {
            let stats = retrying(&mut errors, || store.stats());
            if stats.counts.pending == 0 && stats.counts.processing == 0 {
                say(&format!("errors {errors}"));
                return;
            }
            continue;
        };
        let id = claim.task_id.to_string();
        let done = claim.checkpoint.as_ref().map_or(0, |c| c.get().parse::<i64>().unwrap());
        for sentence in done..sentences {
            std::thread::sleep(Duration::from_millis(3));
            store.update_progress(&id, sentence as u64, sentences as u64, None).unwrap();
            retrying(&mut errors, || store.add_segment(&id, &segment(sentence)));
            append_line(&ack, &format!("{id} {sentence}"));
            retrying(&mut errors, || store.set_checkpoint(&id, &json(&(sentence + 1).to_string())));
        }
        assert_eq!(retrying(&mut errors, || store.finish(&id, TaskOutcome::Completed)), TaskState::Completed);
        append_line(&ack, &format!("{id} finished"));
    }
}

/// Runs nothing: follows a task with status reads, long-polls and the change feed.
fn child_observer(store: &RedisStore) {
    let task = env("SFT_TASK");
    let after: u64 = env("SFT_AFTER").parse().unwrap();
    say("ready");
    let mut revision = status(store, &task)["revision"].as_u64().unwrap();
    let mut revisions = vec![revision];
    loop {
        let seen: Value = serde_json::from_str(&store.wait_for_change(&task, revision, LONG).unwrap()).unwrap();
        revision = seen["revision"].as_u64().unwrap();
        revisions.push(revision);
        if seen["status"] == "COMPLETED" {
            break;
        }
    }
    let finished: Value = serde_json::from_str(&store.wait(&task, LONG).unwrap()).unwrap();
    let mut kinds = Vec::new();
    let mut seq = after;
    while !kinds.contains(&EventKind::Finished) {
        for event in store.wait_events(seq, 100, LONG).unwrap() {
            seq = event.seq;
            if *event.task_id == *task {
                kinds.push(event.kind);
            }
        }
    }
    let revisions_rising = revisions.windows(2).all(|w| w[1] > w[0]);
    say(&format!(
        "saw {} {} {} {}",
        finished["status"].as_str().unwrap(),
        finished["completed_segments"].as_array().unwrap().len(),
        revisions_rising,
        serde_json::to_string(&kinds).unwrap()
    ));
}

// ----- one process ------------------------------------------------------------------

#[test]
fn a_named_task_runs_with_its_segments_errors_checkpoint_and_progress() {
    let server = RedisServer::start();
    let machines = Cell::new(0);
    store_behaviour::a_named_task_runs_with_its_segments_errors_checkpoint_and_progress(|| machine_after_machine(&server, &machines));
}

#[test]
fn a_named_task_no_live_worker_serves_waits_with_no_queue_position() {
    let server = RedisServer::start();
    let machines = Cell::new(0);
    store_behaviour::a_named_task_no_live_worker_serves_waits_with_no_queue_position(|| machine_after_machine(&server, &machines));
}

#[test]
fn cancel_failure_and_stale_finish() {
    let server = RedisServer::start();
    let machines = Cell::new(0);
    store_behaviour::cancel_failure_and_stale_finish(|| machine_after_machine(&server, &machines));
}

#[test]
fn one_task_runs_per_machine_and_machines_run_at_once() {
    let server = RedisServer::start();
    // Two processes of machine m1, one of machine m2.
    let a = open(&server, "m1");
    let b = open(&server, "m1");
    let c = open(&server, "m2");
    for store in [&a, &b, &c] {
        store.register_handler("h").unwrap();
    }
    let payload = json("null");
    let ids: Vec<_> = (0..4).map(|i| a.submit(Some(&format!("t{i}")), named("h", &payload), Schedule::default()).unwrap()).collect();
    let first = a.claim_next(LONG).unwrap().unwrap();
    assert_eq!(first.task_id, ids[0]);
    assert!(b.claim_next(Some(Duration::from_millis(50))).unwrap().is_none(), "a second task ran at once on machine m1");
    let other = c.claim_next(LONG).unwrap().unwrap();
    assert_eq!(other.task_id, ids[1], "machine m2 runs beside m1");
    assert_eq!(b.stats().unwrap().counts.processing, 2);

    let before = status(&b, &first.task_id)["revision"].as_u64().unwrap();
    a.update_progress(&first.task_id, 3, 10, None).unwrap();
    // Coalesced in `a`, written by its ticker thread, seen by `b` through the server.
    let seen: Value = serde_json::from_str(&b.wait_for_change(&first.task_id, before, LONG).unwrap()).unwrap();
    assert_eq!(seen["progress"]["current"], 3);
    a.finish(&first.task_id, TaskOutcome::Completed).unwrap();
    let next = b.claim_next(LONG).unwrap().unwrap();
    assert_eq!(next.task_id, ids[2], "m1's slot is free again, for any of its processes");
    let finished: Value = serde_json::from_str(&c.wait(&first.task_id, LONG).unwrap()).unwrap();
    assert_eq!(finished["status"], "COMPLETED");
}

#[test]
fn retention_deletes_finished_tasks_and_caps_the_feed() {
    let server = RedisServer::start();
    let store = store_behaviour::retention_keeps_the_newest_finished_tasks(|config| {
        RedisStore::open_with(&server.url(), config, quick("m1")).unwrap()
    });
    let task_keys: Vec<String> = server.query(redis::cmd("KEYS").arg("{storyflow}:t:*"));
    assert_eq!(task_keys.len(), 10, "five tasks, each a hash and a segment list: {task_keys:?}");
    let ttl: i64 = server.query(redis::cmd("TTL").arg("{storyflow}:t:t39"));
    assert!(ttl > 3600, "a finished task's keys expire on the server too (TTL {ttl})");
    let feed: u64 = server.query(redis::cmd("XLEN").arg("{storyflow}:ev"));
    assert!((50..=250).contains(&feed), "the feed is capped near 50 events, holds {feed}");

    // The cleanup threshold: a finished task older than it is deleted by the sweep.
    let young = Config { cleanup_threshold_secs: 0.0, ..Config::default() };
    let sweeper = RedisStore::open_with(&server.url(), &young, quick("m2")).unwrap();
    sweeper.collect_garbage().unwrap();
    assert_eq!(sweeper.stats().unwrap().retained, 0);
    let task_keys: Vec<String> = server.query(redis::cmd("KEYS").arg("{storyflow}:t:*"));
    assert!(task_keys.is_empty(), "{task_keys:?}");
    let listed: Vec<Value> = serde_json::from_str(&store.list_json(None).unwrap()).unwrap();
    assert!(listed.is_empty());
}

#[test]
fn namespaces_keep_services_apart_and_configuration_is_checked() {
    let server = RedisServer::start();
    let one = RedisStore::open_with(&server.url(), &Config { redis_namespace: "svc-a".into(), ..Config::default() }, quick("m1")).unwrap();
    let two = RedisStore::open_with(&server.url(), &Config { redis_namespace: "svc-b".into(), ..Config::default() }, quick("m1")).unwrap();
    one.submit(Some("same-id"), TaskKind::Function, Schedule::default()).unwrap();
    two.submit(Some("same-id"), TaskKind::Function, Schedule::default()).unwrap();
    assert_eq!((one.stats().unwrap().submitted_total, two.stats().unwrap().submitted_total), (1, 1));
    let keys: Vec<String> = server.query(redis::cmd("KEYS").arg("*"));
    assert!(keys.iter().all(|k| k.starts_with("{svc-a}:") || k.starts_with("{svc-b}:")), "{keys:?}");

    for (bad, says) in [
        (r#"{"store": "redis://127.0.0.1:1/0", "redis_namespace": "no spaces"}"#, "redis_namespace"),
        (r#"{"store": "redis://127.0.0.1:1/0", "machine_id": ""}"#, "machine_id"),
    ] {
        let error = Config::default().merged_with_json(bad).unwrap_err();
        assert!(error.message().contains(says), "{bad}: {error}");
    }
    let nobody = RedisServer::start();
    let url = nobody.url();
    drop(nobody);
    let error = RedisStore::open_with(&url, &Config::default(), quick("m1")).err().expect("opened a store on no server");
    assert!(error.message().contains("is unreachable"), "{error}");
    assert!(error.message().contains("127.0.0.1"), "{error}");
}

#[test]
fn an_outage_fails_calls_clearly_and_the_store_reconnects_by_itself() {
    let mut server = RedisServer::start();
    let store = open(&server, "m1");
    store.register_handler("h").unwrap();
    let id = store.submit(Some("kept"), named("h", &json("1")), Schedule::default()).unwrap();
    store.claim_next(LONG).unwrap().unwrap();
    store.add_segment(&id, &segment(1)).unwrap();
    store.set_checkpoint(&id, &json("1")).unwrap();
    server.kill();
    let error = store.status_json(&id).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidState);
    assert!(error.message().starts_with("the Redis server at 127.0.0.1:"), "{error}");
    assert!(error.message().contains("is unreachable"), "{error}");
    assert!(store.add_segment(&id, &segment(2)).unwrap_err().message().contains("is unreachable"));
    assert!(store.submit(None, named("h", &json("2")), Schedule::default()).unwrap_err().message().contains("is unreachable"));
    assert!(store.wait_for_change(&id, 0, Some(Duration::from_millis(10))).unwrap_err().message().contains("is unreachable"));
    server.restart();
    // The same handle, without reopening: what was acknowledged before the crash is there.
    let mut errors = 0;
    let back: Value = serde_json::from_str(&retrying(&mut errors, || store.status_json(&id))).unwrap();
    assert_eq!(back["status"], "PROCESSING");
    assert_eq!(back["completed_segments"].as_array().unwrap().len(), 1);
    assert_eq!(back["checkpoint"], 1);
    store.add_segment(&id, &segment(2)).unwrap();
    assert_eq!(store.finish(&id, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    assert_eq!(status(&store, &id)["completed_segments"].as_array().unwrap().len(), 2);
}

#[test]
fn the_manager_runs_named_and_function_tasks_on_redis() {
    let server = RedisServer::start();
    let config = Config { store: server.url(), machine_id: Some("manager-box".into()), ..Config::default() };
    let manager = TaskManager::with_config(config);
    let handler: storyflow_tasks::HandlerFn = Arc::new(|context, payload| {
        let n: i64 = serde_json::from_str(payload.get()).unwrap();
        for i in 0..n {
            context.manager().add_completed_segment(context.task_id(), &segment(i)).unwrap();
        }
        Ok(())
    });
    manager.register_handler("count", handler).unwrap();
    let named_id = manager.submit_named("count", Some("3"), Some("named")).unwrap();
    let function_id = manager
        .submit(Some("function"), |context: &storyflow_tasks::TaskContext<'_>| {
            context.manager().add_completed_segment(context.task_id(), &segment(9)).unwrap();
            Err(TaskFailure::Message("it stopped on purpose".into()))
        })
        .map_err(|rejected| rejected.error)
        .unwrap();
    let named_done: Value = serde_json::from_str(&manager.wait(&named_id, LONG).unwrap()).unwrap();
    assert_eq!((named_done["status"].as_str(), named_done["completed_segments"].as_array().unwrap().len()), (Some("COMPLETED"), 3));
    let function_done: Value = serde_json::from_str(&manager.wait(&function_id, LONG).unwrap()).unwrap();
    assert_eq!((function_done["status"].as_str(), function_done["error"].as_str()), (Some("FAILED"), Some("it stopped on purpose")));
    assert_eq!(manager.read_stats().unwrap().completed_total, 1);
    manager.shutdown(LONG).unwrap();
}

#[test]
fn a_worker_that_lost_its_lease_is_refused() {
    let server = RedisServer::start();
    let dir = TempDir::new("stale");
    let go = dir.join("go");
    let b = open(&server, "m2");
    b.register_handler("h").unwrap();
    let id = b.submit(Some("leased"), named("h", &json("null")), Schedule::default()).unwrap();
    let (mut child, mut out) = spawn_child("stale", &[("SFT_URL", server.url()), ("SFT_MACHINE", "m1".into()), ("SFT_GO", go.clone())]);
    assert_eq!(next_message(&mut out).as_deref(), Some("claimed"));
    // Stopped (a long pause, a partition): its heartbeat lapses while it still holds the task.
    let pid = i32::try_from(child.id()).unwrap();
    assert!(pid > 0);
    // SAFETY: `pid` is the positive pid of the child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let claim = b.claim_next(LONG).unwrap().unwrap();
    assert_eq!((&*claim.task_id, claim.attempt), ("leased", 2));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    fs::write(&go, "").unwrap();
    assert_eq!(next_message(&mut out).as_deref(), Some("refused InvalidState InvalidState found dead"));
    assert!(child.wait().unwrap().success());
    b.add_segment(&id, &segment(1)).unwrap();
    assert_eq!(b.finish(&id, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    let done = status(&b, &id);
    assert_eq!(done["completed_segments"].as_array().unwrap().len(), 2, "the stale worker's late segment was refused");
}

// ----- several processes ------------------------------------------------------------

#[test]
fn four_machines_drain_two_thousand_tasks_and_a_killed_one_is_resumed_elsewhere() {
    let server = RedisServer::start();
    let dir = TempDir::new("machines");
    let log = dir.join("runs.log");
    let store = open(&server, "parent");
    let payload = json("{}");
    store.submit(Some("slow"), named("slow", &payload), Schedule::default()).unwrap();
    let ids: Vec<String> = (0..2000)
        .map(|i| store.submit(Some(&format!("w{i}")), named("work", &payload), Schedule::default()).unwrap().to_string())
        .collect();
    let child_env = |machine: &str| {
        vec![
            ("SFT_URL", server.url()),
            ("SFT_MACHINE", machine.to_owned()),
            ("SFT_MARKER", dir.join(&format!("running-{machine}"))),
            ("SFT_LOG", log.clone()),
        ]
    };
    // Machine m0 starts first and takes the slow task at the head of the queue.
    let (mut victim, mut victim_out) = spawn_child("machine", &child_env("m0"));
    let said = next_message(&mut victim_out).unwrap();
    assert!(said.starts_with("slow "), "{said}");
    // Two processes per machine: still one task at a time on each machine.
    let mut children: Vec<Child> = Vec::new();
    children.push(spawn_quiet("machine", &child_env("m0")));
    for machine in ["m1", "m2", "m3"] {
        children.push(spawn_quiet("machine", &child_env(machine)));
        children.push(spawn_quiet("machine", &child_env(machine)));
    }
    // Killed mid-task, once the others are draining.
    wait_for(&store, &ids[200], |s| s["status"] != "PENDING");
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Its marker is left behind; m0's slot stays taken until the lease lapses.
    fs::remove_file(dir.join("running-m0")).unwrap();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }

    let text = fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("OVERLAP"),
        "two tasks ran at once on one machine:\n{}",
        text.lines().filter(|l| l.contains("OVERLAP")).collect::<Vec<_>>().join("\n")
    );
    let mut starts: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut most_at_once = 0;
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[0] {
            "start" => {
                starts.entry(parts[3].to_owned()).or_default().push((parts[1].to_owned(), parts[4].parse().unwrap()));
                running.insert(parts[1].to_owned());
                most_at_once = most_at_once.max(running.len());
            }
            "end" => {
                running.remove(parts[1]);
            }
            _ => {}
        }
    }
    assert_eq!(starts.len(), 2001);
    for id in &ids {
        assert_eq!(starts[id].len(), 1, "{id} ran {} times", starts[id].len());
        assert_eq!(status(&store, id)["status"], "COMPLETED");
    }
    assert!(most_at_once >= 2, "machines ran one at a time: {most_at_once}");
    let slow = &starts["slow"];
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert_eq!((slow[0].0.as_str(), slow[0].1, slow[1].1), ("m0", 1, 2));
    let resumed = status(&store, "slow");
    assert_eq!((resumed["status"].as_str(), resumed["attempt"].as_u64()), (Some("COMPLETED"), Some(2)));
    let segments: Vec<i64> = resumed["completed_segments"].as_array().unwrap().iter().map(|s| s["segment_id"].as_i64().unwrap()).collect();
    assert_eq!(segments, [0, 1, 2], "the resumed start kept segment 0 and its checkpoint, and did 1 and 2");
    let stats = store.stats().unwrap();
    assert_eq!((stats.completed_total, stats.counts.pending, stats.counts.processing), (2001, 0, 0));
}

#[test]
fn a_server_crash_mid_run_loses_nothing_acknowledged() {
    let mut server = RedisServer::start();
    let dir = TempDir::new("outage");
    let ack = dir.join("ack.log");
    let store = open(&server, "parent");
    let sentences = 8;
    let ids: Vec<String> = (0..60)
        .map(|i| {
            store
                .submit(Some(&format!("chapter-{i}")), named("narrate", &json(&format!("{{\"chapter\": {i}}}"))), Schedule::default())
                .unwrap()
                .to_string()
        })
        .collect();
    let children: Vec<(Child, BufReader<ChildStdout>)> = ["m1", "m2"]
        .iter()
        .map(|machine| {
            spawn_child(
                "narrate",
                &[
                    ("SFT_URL", server.url()),
                    ("SFT_MACHINE", (*machine).to_owned()),
                    ("SFT_ACK", ack.clone()),
                    ("SFT_SEGMENTS", sentences.to_string()),
                ],
            )
        })
        .collect();
    wait_for(&store, &ids[15], |s| s["status"] != "PENDING");
    // A crash (SIGKILL: only what the AOF holds survives), five seconds away, a restart.
    server.kill();
    let error = store.stats().unwrap_err();
    assert!(error.message().contains("is unreachable"), "{error}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(store.status_json(&ids[0]).unwrap_err().message().contains("is unreachable"));
    server.restart();
    let mut child_errors = 0;
    for (mut child, mut out) in children {
        let said = next_message(&mut out).unwrap();
        child_errors += said.strip_prefix("errors ").unwrap().parse::<u64>().unwrap();
        assert!(child.wait().unwrap().success());
    }
    assert!(child_errors > 0, "the workers never saw the server away");

    let acked = fs::read_to_string(&ack).unwrap_or_default();
    let mut acked_segments: BTreeMap<String, HashSet<i64>> = BTreeMap::new();
    for line in acked.lines() {
        let (id, what) = line.split_once(' ').unwrap();
        if what != "finished" {
            acked_segments.entry(id.to_owned()).or_default().insert(what.parse().unwrap());
        }
    }
    let events = store.wait_events(0, 100_000, Some(Duration::ZERO)).unwrap();
    for id in &ids {
        let s = status(&store, id);
        assert_eq!(s["status"], "COMPLETED", "{s}");
        let got: HashSet<i64> = s["completed_segments"].as_array().unwrap().iter().map(|seg| seg["segment_id"].as_i64().unwrap()).collect();
        assert_eq!(got, (0..sentences).collect::<HashSet<_>>(), "segments of {id}");
        for n in acked_segments.get(id).into_iter().flatten() {
            assert!(got.contains(n), "acknowledged segment {n} of {id} lost");
        }
        assert_eq!(s["checkpoint"], sentences);
        let finishes = events.iter().filter(|e| &*e.task_id == id && e.kind == EventKind::Finished).count();
        assert_eq!(finishes, 1, "{id} finished {finishes} times");
    }
}

#[test]
fn a_process_that_runs_nothing_follows_a_task_with_status_waits_and_the_feed() {
    let server = RedisServer::start();
    let store = open(&server, "worker-box");
    store.register_handler("obs").unwrap();
    let id = store.submit(Some("observed"), named("obs", &json("null")), Schedule::default()).unwrap();
    let after = store.last_event_seq().unwrap();
    let (mut child, mut out) = spawn_child(
        "observer",
        &[("SFT_URL", server.url()), ("SFT_MACHINE", "api-box".into()), ("SFT_TASK", id.to_string()), ("SFT_AFTER", after.to_string())],
    );
    assert_eq!(next_message(&mut out).as_deref(), Some("ready"));
    store.claim_next(LONG).unwrap().unwrap();
    for i in 0..3 {
        store.update_progress(&id, i, 3, None).unwrap();
        store.add_segment(&id, &segment(i as i64)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    store.finish(&id, TaskOutcome::Completed).unwrap();
    let said = next_message(&mut out).unwrap();
    let words: Vec<&str> = said.splitn(5, ' ').collect();
    assert_eq!(&words[..4], ["saw", "COMPLETED", "3", "true"], "{said}");
    let kinds: Vec<String> = serde_json::from_str(words[4]).unwrap();
    assert_eq!(kinds.first().map(String::as_str), Some("started"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "segment").count(), 3, "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("finished"), "{kinds:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_long_poll_is_woken_by_another_process() {
    let server = RedisServer::start();
    let store = open(&server, "m1");
    let id = store.submit(Some("polled"), named("nobody-yet", &json("null")), Schedule::default()).unwrap();
    let revision = status(&store, &id)["revision"].as_u64().unwrap();
    let (mut child, mut out) = spawn_child(
        "waiter",
        &[("SFT_URL", server.url()), ("SFT_MACHINE", "m2".into()), ("SFT_TASK", id.to_string()), ("SFT_AFTER", revision.to_string())],
    );
    assert_eq!(next_message(&mut out).as_deref(), Some("ready"));
    store.set_checkpoint(&id, &json("42")).unwrap();
    let woke = next_message(&mut out).unwrap();
    let seen: Value = serde_json::from_str(woke.strip_prefix("woke ").unwrap()).unwrap();
    assert_eq!(seen["checkpoint"], 42);
    assert!(seen["revision"].as_u64().unwrap() > revision);
    assert!(child.wait().unwrap().success());
}

#[test]
fn function_tasks_of_a_killed_process_fail_with_the_reason() {
    let server = RedisServer::start();
    let store = open(&server, "m1");
    let (mut child, mut out) = spawn_child(
        "owner",
        &[("SFT_URL", server.url()), ("SFT_MACHINE", "m2".into()), ("SFT_RUNNING", "ran".into()), ("SFT_PENDING", "queued".into())],
    );
    assert_eq!(next_message(&mut out).as_deref(), Some("claimed ran"));
    child.kill().unwrap();
    child.wait().unwrap();
    let ran: Value = serde_json::from_str(&store.wait("ran", LONG).unwrap()).unwrap();
    let queued: Value = serde_json::from_str(&store.wait("queued", LONG).unwrap()).unwrap();
    assert_eq!((ran["status"].as_str(), queued["status"].as_str()), (Some("FAILED"), Some("FAILED")));
    assert_eq!(ran["error"], "its process exited while it was running");
    assert_eq!(queued["error"], "its process exited before it ran");
    let slot: Option<String> = server.query(redis::cmd("GET").arg("{storyflow}:m:m2"));
    assert_eq!(slot, None, "the dead process's machine slot is free again");
}

#[test]
fn an_interrupted_named_task_resumes_and_fails_after_max_attempts() {
    let server = RedisServer::start();
    let options = RedisOptions { max_attempts: 2, ..quick("m1") };
    let store = RedisStore::open_with(&server.url(), &Config::default(), options).unwrap();
    let id = store.submit(Some("fragile"), named("stuck", &json(r#"{"chapter": 1}"#)), Schedule::default()).unwrap();
    let blocker = store.submit(Some("behind"), named("stuck", &json("2")), Schedule::default()).unwrap();
    let child_env = [("SFT_URL", server.url()), ("SFT_MACHINE", "m2".to_owned()), ("SFT_MAX_ATTEMPTS", "2".to_owned())];

    let (mut child, mut out) = spawn_child("stuck", &child_env);
    let claimed: Value = serde_json::from_str(next_message(&mut out).unwrap().strip_prefix("claimed ").unwrap()).unwrap();
    assert_eq!((claimed["task_id"].as_str(), claimed["attempt"].as_u64()), (Some("fragile"), Some(1)));
    child.kill().unwrap();
    child.wait().unwrap();
    let s = wait_for(&store, &id, |s| s["status"] == "PENDING");
    // Its only worker died: it waits for one, with no queue position.
    assert_eq!((s["status"].as_str(), s["attempt"].as_u64(), s["queue_position"].as_u64()), (Some("PENDING"), Some(1), None));
    assert_eq!(s["checkpoint"], 1);
    assert_eq!(s["completed_segments"].as_array().unwrap().len(), 1);
    assert!(status(&store, &blocker)["queue_position"].is_null(), "no live worker serves its handler either");

    let (mut child, mut out) = spawn_child("stuck", &child_env);
    let claimed: Value = serde_json::from_str(next_message(&mut out).unwrap().strip_prefix("claimed ").unwrap()).unwrap();
    assert_eq!((claimed["task_id"].as_str(), claimed["attempt"].as_u64()), (Some("fragile"), Some(2)), "requeued at the head");
    assert_eq!(claimed["checkpoint"], 1, "the resumed start is handed its checkpoint");
    child.kill().unwrap();
    child.wait().unwrap();
    let failed: Value = serde_json::from_str(&store.wait(&id, LONG).unwrap()).unwrap();
    assert_eq!(failed["status"], "FAILED");
    assert!(failed["error"].as_str().unwrap().contains("kept being interrupted"), "{failed}");
    assert_eq!(failed["completed_segments"].as_array().unwrap().len(), 2);
}

#[test]
fn a_closed_handle_hands_its_running_task_back() {
    let server = RedisServer::start();
    let a = open(&server, "m1");
    let b = open(&server, "m1");
    a.register_handler("h").unwrap();
    b.register_handler("h").unwrap();
    let id = a.submit(Some("handed-back"), named("h", &json("null")), Schedule::default()).unwrap();
    a.claim_next(LONG).unwrap().unwrap();
    let started = Instant::now();
    a.close().unwrap();
    assert!(a.submit(None, TaskKind::Function, Schedule::default()).unwrap_err().kind() == ErrorKind::ShutDown);
    let claim = b.claim_next(LONG).unwrap().unwrap();
    assert_eq!((&*claim.task_id, claim.attempt), (&*id, 2));
    eprintln!("handed back in {:?}", started.elapsed());
}

// ----- scheduling: priorities, yields, deadlines ---------------------------------------

fn epoch_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn priorities_set_the_claim_order_and_the_queue_positions() {
    let server = RedisServer::start();
    let machines = Cell::new(0);
    store_behaviour::priorities_set_the_claim_order_and_the_queue_positions(|| machine_after_machine(&server, &machines));
}

#[test]
fn a_running_task_is_asked_to_yield_and_goes_back_to_the_head_of_its_priority() {
    let server = RedisServer::start();
    let store = open(&server, "m1");
    let observer = open(&server, "api-box");
    store.register_handler("narrate").unwrap();
    let payload = json("null");
    let long = store.submit(Some("long"), named("narrate", &payload), at(0)).unwrap();
    let claim = store.claim_next(LONG).unwrap().unwrap();
    assert_eq!(claim.task_id, long);
    store.add_segment(&long, &segment(0)).unwrap();
    store.set_checkpoint(&long, &json(r#"{"sentence": 1}"#)).unwrap();
    store.update_progress(&long, 1, 10, None).unwrap();
    store.submit(Some("same-priority"), named("narrate", &payload), at(0)).unwrap();
    assert!(!store.is_yield_requested(&long).unwrap(), "nothing of a higher priority waits");
    // A higher-priority task no worker of this machine serves does not ask it to yield.
    store.submit(Some("elsewhere"), named("other-handler", &payload), at(50)).unwrap();
    // One this machine serves does, once the ticker has looked (an answer without a round trip).
    store.submit(Some("urgent"), named("narrate", &payload), at(10)).unwrap();
    let asked_at = Instant::now();
    while !store.is_yield_requested(&long).unwrap() {
        assert!(asked_at.elapsed() < Duration::from_secs(30), "never asked to yield");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("asked to yield after {:?}", asked_at.elapsed());
    assert!(observer.is_yield_requested(&long).unwrap(), "another process reads the same answer");
    assert_eq!(status(&observer, &long)["yield_requested"], true);
    assert_eq!(store.finish(&long, TaskOutcome::Yielded).unwrap(), TaskState::Pending);
    let back = status(&observer, &long);
    assert_eq!((back["status"].as_str(), back["yields"].as_u64(), back["attempt"].as_u64()), (Some("PENDING"), Some(1), Some(1)));
    assert_eq!(back["yield_requested"], false);
    assert_eq!(back["checkpoint"], serde_json::json!({"sentence": 1}));
    assert_eq!(back["completed_segments"].as_array().unwrap().len(), 1);
    assert_eq!(back["progress"]["current"], 1, "the progress not yet written went with the yield");
    // Behind the urgent task and the unserved one of priority 50 (which may be served any
    // time), ahead of the one of its own priority.
    assert_eq!(back["queue_position"], 2);
    assert_eq!(status(&observer, "same-priority")["queue_position"], 3);
    assert_eq!(store.claim_next(LONG).unwrap().unwrap().task_id.as_ref(), "urgent");
    store.finish("urgent", TaskOutcome::Completed).unwrap();
    let again = store.claim_next(LONG).unwrap().unwrap();
    assert_eq!((&*again.task_id, again.attempt), ("long", 1), "a yield is not an interruption: the attempt stays");
    assert_eq!(again.checkpoint.as_ref().map(|c| c.get()), Some(r#"{"sentence": 1}"#));
    assert_eq!(store.finish(&long, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    assert_eq!(store.claim_next(LONG).unwrap().unwrap().task_id.as_ref(), "same-priority");
    let events = observer.wait_events(0, 1000, Some(Duration::ZERO)).unwrap();
    let put_back = events.iter().filter(|e| &*e.task_id == "long" && e.status == TaskState::Pending).count();
    assert_eq!(put_back, 2, "submitted, then back to PENDING after the yield");
}

#[test]
fn a_cancel_requested_wins_over_a_yield() {
    let server = RedisServer::start();
    let machines = Cell::new(0);
    store_behaviour::a_cancel_requested_wins_over_a_yield(|| machine_after_machine(&server, &machines));
}

#[test]
fn deadlines_fail_pending_tasks_and_cancel_running_ones() {
    let server = RedisServer::start();
    let store = open(&server, "m1");
    let observer = open(&server, "api-box");
    store.register_handler("h").unwrap();
    let payload = json("null");
    // Running: the worker holds it while its deadline passes.
    let running_deadline = epoch_now() + 0.3;
    let running = store.submit(Some("running"), named("h", &payload), Schedule { priority: 0, deadline: Some(running_deadline) }).unwrap();
    store.claim_next(LONG).unwrap().unwrap();
    // Pending behind it (the machine is busy): it never starts.
    let pending_deadline = epoch_now() + 0.3;
    let pending = store.submit(Some("pending"), named("h", &payload), Schedule { priority: 0, deadline: Some(pending_deadline) }).unwrap();
    assert_eq!(status(&observer, &pending)["deadline"].as_f64().map(|d| (d - pending_deadline).abs() < 1e-3), Some(true));
    let failed: Value = serde_json::from_str(&observer.wait(&pending, LONG).unwrap()).unwrap();
    eprintln!("pending task failed {:.0} ms after its deadline", (failed["completed_at"].as_f64().unwrap() - pending_deadline) * 1e3);
    assert_eq!((failed["status"].as_str(), failed["error"].as_str()), (Some("FAILED"), Some(storyflow_tasks::DEADLINE_PASSED_PENDING)));
    assert!(failed["started_at"].is_null(), "it never started");
    let asked = wait_for(&observer, &running, |s| s["cancel_requested"] == true);
    assert_eq!(asked["status"], "PROCESSING");
    assert!(store.is_cancel_requested(&running).unwrap());
    assert_eq!(store.finish(&running, TaskOutcome::Completed).unwrap(), TaskState::Cancelled);
    let cancelled = status(&observer, &running);
    assert_eq!(cancelled["error"], storyflow_tasks::DEADLINE_PASSED_RUNNING);
    let events = observer.wait_events(0, 1000, Some(Duration::ZERO)).unwrap();
    assert!(events.iter().any(|e| &*e.task_id == "running" && e.kind == EventKind::CancelRequested));
    assert!(events.iter().any(|e| &*e.task_id == "pending" && e.kind == EventKind::Finished && e.status == TaskState::Failed));

    // Already past at submit (clock skew): accepted, and failed at once.
    let late = store.submit(Some("late"), named("h", &payload), Schedule { priority: 0, deadline: Some(epoch_now() - 10.0) }).unwrap();
    let s = status(&store, &late);
    assert_eq!((s["status"].as_str(), s["error"].as_str()), (Some("FAILED"), Some(storyflow_tasks::DEADLINE_PASSED_PENDING)));
    let bad = store.submit(None, named("h", &payload), Schedule { priority: 0, deadline: Some(f64::NAN) }).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
    let stats = store.stats().unwrap();
    assert_eq!((stats.counts.failed, stats.counts.cancelled, stats.counts.pending), (2, 1, 0));
}

#[test]
fn a_worker_claims_its_next_task_with_the_end_of_the_last_and_hands_it_back_unused() {
    let server = RedisServer::start();
    let options = RedisOptions { claim_on_finish: true, ..quick("m1") };
    let a = RedisStore::open_with(&server.url(), &Config::default(), options).unwrap();
    let b = open(&server, "m1");
    a.register_handler("h").unwrap();
    b.register_handler("h").unwrap();
    let payload = json("null");
    for id in ["first", "second", "third"] {
        a.submit(Some(id), named("h", &payload), Schedule::default()).unwrap();
    }
    assert_eq!(a.claim_next(LONG).unwrap().unwrap().task_id.as_ref(), "first");
    assert_eq!(a.finish("first", TaskOutcome::Completed).unwrap(), TaskState::Completed);
    // Claimed with that finish: PROCESSING already, this handle's next claim.
    assert_eq!(status(&b, "second")["status"], "PROCESSING");
    let second = a.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!((&*second.task_id, second.attempt), ("second", 1));
    a.add_segment("second", &segment(1)).unwrap();
    assert_eq!(a.finish("second", TaskOutcome::Completed).unwrap(), TaskState::Completed);
    assert_eq!(status(&b, "third")["status"], "PROCESSING");
    // Closed before it ran: handed back at the head, as if never started.
    a.close().unwrap();
    let back = status(&b, "third");
    assert_eq!((back["status"].as_str(), back["attempt"].as_u64(), back["queue_position"].as_u64()), (Some("PENDING"), Some(0), Some(0)));
    let third = b.claim_next(LONG).unwrap().unwrap();
    assert_eq!((&*third.task_id, third.attempt), ("third", 1));
    assert_eq!(b.finish("third", TaskOutcome::Completed).unwrap(), TaskState::Completed);
    assert_eq!(b.stats().unwrap().completed_total, 3);
}

/// The lower-case name of an error kind, as the cross-language table writes it.
fn kind_word(kind: ErrorKind) -> String {
    let name = format!("{kind:?}");
    let mut word = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            word.push('_');
        }
        word.push(c.to_ascii_lowercase());
    }
    word
}

/// Whether every field of `expect` has that value in `actual`.
fn fields_hold(actual: &Value, expect: &Value) -> bool {
    expect.as_object().unwrap().iter().all(|(key, value)| &actual[key] == value)
}

#[test]
fn the_cross_language_scheduling_table_holds_on_redis() {
    let server = RedisServer::start();
    let config = Config { store: server.url(), machine_id: Some("table-box".into()), ..Config::default() };
    let manager = TaskManager::with_config(config);
    let table: Value =
        serde_json::from_str(&fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cases/scheduling.json")).unwrap()).unwrap();
    let status_of =
        |id: &str| -> Value { serde_json::from_str(&manager.status_json(id).unwrap_or_else(|| panic!("{id} unknown"))).unwrap() };
    let until = |id: &str, done: &dyn Fn(&Value) -> bool| -> Value {
        let mut s = status_of(id);
        while !done(&s) {
            s = serde_json::from_str(&manager.wait_for_change(id, s["revision"].as_u64().unwrap(), LONG).unwrap()).unwrap();
        }
        s
    };
    for case in table["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        for step in case["steps"].as_array().unwrap() {
            let (verb, target) = step.as_object().unwrap().iter().next().unwrap();
            let id = target.as_str().unwrap_or_default();
            let expect = &step["expect"];
            let context = format!("case {name:?}, step {step}");
            match verb.as_str() {
                "submit" => {
                    let options = match (&step["options"], &step["options_json"]) {
                        (Value::Object(options), _) => {
                            let mut options = options.clone();
                            if let Some(seconds) = options.remove("deadline_in") {
                                options.insert("deadline".into(), serde_json::json!(epoch_now() + seconds.as_f64().unwrap()));
                            }
                            Some(Value::Object(options).to_string())
                        }
                        (_, Value::String(text)) => Some(text.clone()),
                        _ => None,
                    };
                    let submitted =
                        Schedule::from_json(options.as_deref()).and_then(|schedule| manager.submit_external_with(Some(id), schedule));
                    match step["expect_error"].as_str() {
                        None => {
                            submitted.unwrap_or_else(|e| panic!("{context}: {e}"));
                        }
                        Some(word) => {
                            let error = submitted.err().unwrap_or_else(|| panic!("{context}: accepted"));
                            assert_eq!(kind_word(error.kind()), word, "{context}: {error}");
                            assert!(error.message().contains(step["message_contains"].as_str().unwrap()), "{context}: {error}");
                        }
                    }
                }
                "started" => {
                    until(id, &|s| s["status"] != "PENDING");
                    assert_eq!(status_of(id)["status"], "PROCESSING", "{context}");
                }
                "finish" => manager.finish(id, Ok(())).unwrap_or_else(|e| panic!("{context}: {e}")),
                "yield" => match step["expect_error"].as_str() {
                    None => {
                        manager.yield_task(id).unwrap_or_else(|e| panic!("{context}: {e}"));
                        manager.finish(id, Ok(())).unwrap_or_else(|e| panic!("{context}: {e}"));
                    }
                    Some(word) => {
                        let error = manager.yield_task(id).err().unwrap_or_else(|| panic!("{context}: accepted"));
                        assert_eq!(kind_word(error.kind()), word, "{context}: {error}");
                    }
                },
                "cancel" => {
                    manager.cancel(id).unwrap_or_else(|e| panic!("{context}: {e}"));
                }
                "status" => {
                    let s = status_of(id);
                    assert!(fields_hold(&s, expect), "{context}: {s}");
                }
                "until" => {
                    until(id, &|s| fields_hold(s, expect));
                }
                "finished" => {
                    let s: Value = serde_json::from_str(&manager.wait(id, LONG).unwrap()).unwrap();
                    assert!(fields_hold(&s, expect), "{context}: {s}");
                }
                "yield_requested" => {
                    assert_eq!(manager.is_yield_requested(id).unwrap(), expect.as_bool().unwrap(), "{context}");
                }
                "missing" => assert!(manager.status_json(id).is_none(), "{context}"),
                "stats" => {
                    let stats = serde_json::to_value(manager.read_stats().unwrap()).unwrap();
                    assert!(fields_hold(&stats, target), "{context}: {stats}");
                }
                other => panic!("{context}: unknown step {other}"),
            }
        }
        eprintln!("case {name}: ok");
    }
    manager.shutdown(LONG).unwrap();
}

#[test]
fn the_queue_bound_and_the_report_caps_hold() {
    let server = RedisServer::start();
    store_behaviour::the_queue_bound_and_the_report_caps_hold(|config| RedisStore::open_with(&server.url(), config, quick("m1")).unwrap());
}
