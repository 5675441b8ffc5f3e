//! The SQLite store against real files, real processes and SIGKILL.
//!
//! Child processes are this test binary run again on the `child_process` test
//! with `SFT_CHILD` naming their role; they talk to the parent through files and
//! lines on stdout that start with `@@`.

#[path = "support/children.rs"]
mod children;
#[path = "support/store_behaviour.rs"]
mod store_behaviour;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use children::{append_line, env, next_message, say, spawn_child, spawn_quiet};
use serde_json::Value;
use store_behaviour::{at, json, named, segment, status, wait_for, LONG};
use storyflow_tasks::{
    Config, ErrorKind, EventKind, Schedule, SegmentError, SegmentId, SqliteOptions, SqliteStore, Store, TaskFailure, TaskKind, TaskOutcome,
    TaskState,
};

// ----- helpers ---------------------------------------------------------------------

/// A directory removed when dropped (unmounting a test file system first).
struct TempDir {
    path: PathBuf,
    mounted: bool,
}

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("sft-store-{name}-{}-{}", std::process::id(), nanos()));
        fs::create_dir_all(&path).unwrap();
        Self { path, mounted: false }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Mounts a tmpfs of `size` on this directory; false (with the reason printed) if not root.
    fn mount_tmpfs(&mut self, options: &str) -> bool {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return false;
        }
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&self.path).status();
        match status {
            Ok(status) if status.success() => {
                self.mounted = true;
                true
            }
            other => {
                eprintln!("skipped: mount -t tmpfs failed: {other:?}");
                false
            }
        }
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(&self.path).status().unwrap();
        assert!(status.success(), "remount {options} failed");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A small xorshift generator: random enough for kill moments, with no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self((nanos() as u64) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn quick() -> SqliteOptions {
    SqliteOptions { sweep_interval: Duration::from_millis(50), ..SqliteOptions::default() }
}

// ----- the child processes ----------------------------------------------------------

#[test]
fn child_process() {
    let Ok(role) = std::env::var("SFT_CHILD") else {
        return;
    };
    let db = env("SFT_DB");
    let max_attempts = std::env::var("SFT_MAX_ATTEMPTS").map_or(3, |v| v.parse().unwrap());
    let store = SqliteStore::open_with(&db, &Config::default(), SqliteOptions { max_attempts, ..quick() }).unwrap();
    match role.as_str() {
        "narrate" => child_narrate(&store),
        "overlap" => child_overlap(&store),
        "waiter" => {
            say("ready");
            let after: u64 = env("SFT_AFTER").parse().unwrap();
            let woke = store.wait_for_change(&env("SFT_TASK"), after, LONG).unwrap();
            say(&format!("woke {woke}"));
        }
        "pinger" => {
            // Answers every change of the task with the time it woke.
            let task = env("SFT_TASK");
            let mut revision: u64 = env("SFT_AFTER").parse().unwrap();
            say("ready");
            loop {
                let woke: Value = match store.wait_for_change(&task, revision, LONG) {
                    Ok(json) => serde_json::from_str(&json).unwrap(),
                    Err(_) => return,
                };
                let at = nanos();
                revision = woke["revision"].as_u64().unwrap();
                say(&format!("{revision} {at}"));
                if woke["status"] != "PENDING" {
                    return;
                }
            }
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
        "yielder" => child_yielder(&store),
        other => panic!("unknown child role {other}"),
    }
}

/// Runs `narrate` tasks: one segment per sentence, resuming after the segments already done.
fn child_narrate(store: &SqliteStore) {
    let ack = env("SFT_ACK");
    let sentences: i64 = env("SFT_SEGMENTS").parse().unwrap();
    store.register_handler("narrate").unwrap();
    let mut rng = Rng::new();
    loop {
        let Some(claim) = store.claim_next(Some(Duration::from_millis(100))).unwrap() else {
            let stats = store.stats().unwrap();
            if stats.counts.pending == 0 && stats.counts.processing == 0 {
                return;
            }
            continue;
        };
        let id = claim.task_id.to_string();
        let done = status(store, &id)["completed_segments"].as_array().unwrap().len() as i64;
        for sentence in done..sentences {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            store.update_progress(&id, sentence as u64, sentences as u64, None).unwrap();
            store.add_segment(&id, &segment(sentence)).unwrap();
            append_line(&ack, &format!("{id} {sentence}"));
            store.set_checkpoint(&id, &json(&(sentence + 1).to_string())).unwrap();
        }
        store.finish(&id, TaskOutcome::Completed).unwrap();
        append_line(&ack, &format!("{id} finished"));
    }
}

/// Runs `narrate` tasks a sentence at a time, polling the yield check between sentences:
/// asked to yield, it yields, and a resumed task picks up after its segments.
fn child_yielder(store: &SqliteStore) {
    let sentences: i64 = env("SFT_SEGMENTS").parse().unwrap();
    store.register_handler("narrate").unwrap();
    say("ready");
    loop {
        let Some(claim) = store.claim_next(Some(Duration::from_millis(100))).unwrap() else { continue };
        let id = claim.task_id.to_string();
        say(&format!("running {} {}", claim.attempt, claim.yields));
        let done = status(store, &id)["completed_segments"].as_array().unwrap().len() as i64;
        let mut yielded = false;
        for sentence in done..sentences {
            if store.is_yield_requested(&id).unwrap() {
                assert_eq!(store.finish(&id, TaskOutcome::Yielded).unwrap(), TaskState::Pending);
                say(&format!("yielded after {sentence}"));
                yielded = true;
                break;
            }
            store.add_segment(&id, &segment(sentence)).unwrap();
            store.set_checkpoint(&id, &json(&(sentence + 1).to_string())).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        if !yielded {
            store.finish(&id, TaskOutcome::Completed).unwrap();
            say("done");
            return;
        }
    }
}

/// Runs `work` tasks and its own function tasks, logging each start and end, and
/// noting an overlap if another process's task holds the marker file.
fn child_overlap(store: &SqliteStore) {
    let marker = PathBuf::from(env("SFT_MARKER"));
    let log = env("SFT_LOG");
    let own: usize = env("SFT_OWN").parse().unwrap();
    let pid = std::process::id();
    store.register_handler("work").unwrap();
    for i in 0..own {
        store.submit(Some(&format!("fn-{pid}-{i}")), TaskKind::Function, Schedule::default()).unwrap();
    }
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
            append_line(&log, &format!("OVERLAP {pid} {id}"));
        }
        append_line(&log, &format!("start {pid} {id}"));
        std::thread::sleep(Duration::from_millis(2));
        let _ = fs::remove_file(&marker);
        append_line(&log, &format!("end {pid} {id}"));
        store.finish(&id, TaskOutcome::Completed).unwrap();
    }
}

// ----- one process ------------------------------------------------------------------

#[test]
fn a_named_task_no_live_worker_serves_waits_with_no_queue_position() {
    let dir = TempDir::new("conformance");
    let path = dir.join("tasks.db");
    store_behaviour::a_named_task_no_live_worker_serves_waits_with_no_queue_position(|| {
        SqliteStore::open(&path, &Config::default()).unwrap()
    });
}

#[test]
fn a_named_task_runs_with_its_segments_errors_checkpoint_and_progress() {
    let dir = TempDir::new("conformance");
    let path = dir.join("tasks.db");
    store_behaviour::a_named_task_runs_with_its_segments_errors_checkpoint_and_progress(|| {
        SqliteStore::open(&path, &Config::default()).unwrap()
    });
}

#[test]
fn cancel_failure_and_stale_finish() {
    let dir = TempDir::new("conformance");
    let path = dir.join("tasks.db");
    store_behaviour::cancel_failure_and_stale_finish(|| SqliteStore::open(&path, &Config::default()).unwrap());
}

#[test]
fn one_task_runs_at_a_time_and_progress_reaches_other_handles() {
    let dir = TempDir::new("one");
    let path = dir.join("tasks.db");
    let a = SqliteStore::open(&path, &Config::default()).unwrap();
    let b = SqliteStore::open(&path, &Config::default()).unwrap();
    a.register_handler("h").unwrap();
    b.register_handler("h").unwrap();
    let payload = json("null");
    let first = a.submit(None, named("h", &payload), Schedule::default()).unwrap();
    a.submit(None, named("h", &payload), Schedule::default()).unwrap();
    let claim = a.claim_next(LONG).unwrap().unwrap();
    assert_eq!(claim.task_id, first);
    assert!(b.claim_next(Some(Duration::from_millis(30))).unwrap().is_none(), "a second task ran at once");

    let before = status(&b, &first)["revision"].as_u64().unwrap();
    a.update_progress(&first, 3, 10, None).unwrap();
    // Coalesced in `a`, committed by its flush thread, seen by `b` from the file.
    let seen: Value = serde_json::from_str(&b.wait_for_change(&first, before, LONG).unwrap()).unwrap();
    assert_eq!(seen["progress"]["current"], 3);
    a.finish(&first, TaskOutcome::Completed).unwrap();
    let next = b.claim_next(LONG).unwrap().unwrap();
    assert_ne!(next.task_id, first);
    let finished: Value = serde_json::from_str(&a.wait(&first, LONG).unwrap()).unwrap();
    assert_eq!(finished["status"], "COMPLETED");
}

#[test]
fn retention_deletes_rows_and_bounds_the_wal() {
    let dir = TempDir::new("retention");
    let path = dir.join("tasks.db");
    let store = store_behaviour::retention_keeps_the_newest_finished_tasks(|config| SqliteStore::open(&path, config).unwrap());
    // The configuration the shared behaviour opened the file with.
    let config = Config { max_retained_finished: 5, event_buffer_capacity: 50, ..Config::default() };
    store.collect_garbage().unwrap();
    let events = store.wait_events(0, 1000, Some(Duration::ZERO)).unwrap();
    assert!(events.len() <= 50, "{} events kept", events.len());

    let expiring = SqliteStore::open(&path, &Config { cleanup_threshold_secs: 0.0, ..config }).unwrap();
    while expiring.collect_garbage().unwrap() > 0 {}
    assert_eq!(expiring.stats().unwrap().retained, 0);
    expiring.checkpoint().unwrap();
    let wal = fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len());
    assert!(wal <= SqliteOptions::default().journal_size_limit as u64, "WAL is {wal} bytes");
}

#[test]
fn reopening_keeps_every_retained_task() {
    let dir = TempDir::new("reopen");
    let path = dir.join("tasks.db");
    let before = {
        let store = SqliteStore::open(&path, &Config::default()).unwrap();
        for i in 0..2000 {
            let id = store.submit(Some(&format!("t{i}")), TaskKind::Function, Schedule::default()).unwrap();
            if i % 10 != 0 {
                store.claim_next(LONG).unwrap().unwrap();
                store.add_segment(&id, &segment(i)).unwrap();
                store
                    .finish(
                        &id,
                        if i % 3 == 0 { TaskOutcome::Failed(TaskFailure::Message("no voice".into())) } else { TaskOutcome::Completed },
                    )
                    .unwrap();
            } else {
                store.submit(Some(&format!("named{i}")), named("nobody", &json("[1]")), Schedule::default()).unwrap();
                store.cancel(&id).unwrap();
            }
        }
        store.list_json(None).unwrap()
    };
    let store = SqliteStore::open(&path, &Config::default()).unwrap();
    let after: Vec<Value> = serde_json::from_str(&store.list_json(None).unwrap()).unwrap();
    let before: Vec<Value> = serde_json::from_str(&before).unwrap();
    assert_eq!(after.len(), 2200);
    assert_eq!(after, before);
    assert_eq!(store.stats().unwrap().retained, 2200);
}

// ----- bad databases ------------------------------------------------------------------

fn open_error(path: &Path) -> String {
    match SqliteStore::open(path, &Config::default()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.message().to_owned(),
    }
}

#[test]
fn a_missing_directory_is_named() {
    let dir = TempDir::new("missing");
    let message = open_error(&dir.join("no/such/dir/tasks.db"));
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("no/such/dir"), "{message}");
}

#[test]
fn a_read_only_directory_is_named() {
    let mut dir = TempDir::new("readonly");
    let path = dir.join("tasks.db");
    if is_root() {
        if !dir.mount_tmpfs("size=4m") {
            return;
        }
        SqliteStore::open(&path, &Config::default()).unwrap().close().unwrap();
        dir.remount("ro");
    } else {
        SqliteStore::open(&path, &Config::default()).unwrap().close().unwrap();
        let mut perms = fs::metadata(&dir.path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        fs::set_permissions(&dir.path, perms).unwrap();
    }
    let message = open_error(&path);
    assert!(message.contains("is read-only"), "{message}");
    if is_root() {
        dir.remount("rw");
    } else {
        let mut perms = fs::metadata(&dir.path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&dir.path, perms).unwrap();
    }
}

#[test]
fn a_corrupt_file_is_named() {
    let dir = TempDir::new("corrupt");
    let garbage = dir.join("garbage.db");
    fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    let message = open_error(&garbage);
    assert!(message.contains("corrupt or is not an SQLite database"), "{message}");

    // A real store whose pages were overwritten after its header.
    let damaged = dir.join("damaged.db");
    {
        let store = SqliteStore::open(&damaged, &Config::default()).unwrap();
        for i in 0..300 {
            store.submit(Some(&format!("t{i}")), named("h", &json(r#""some payload text""#)), Schedule::default()).unwrap();
        }
        store.checkpoint().unwrap();
    }
    let mut bytes = fs::read(&damaged).unwrap();
    let page = 4096;
    for b in &mut bytes[page..page * 6] {
        *b = 0xa5;
    }
    fs::write(&damaged, bytes).unwrap();
    let message = open_error(&damaged);
    assert!(message.contains("corrupt"), "{message}");
}

#[test]
fn another_applications_database_and_a_newer_schema_are_named() {
    let dir = TempDir::new("schema");
    let foreign = dir.join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE songs (title TEXT)").unwrap();
    }
    let message = open_error(&foreign);
    assert!(message.contains("another application"), "{message}");

    let newer = dir.join("newer.db");
    SqliteStore::open(&newer, &Config::default()).unwrap().close().unwrap();
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let message = open_error(&newer);
    assert!(message.contains("schema version 99, newer than version 2"), "{message}");
}

#[test]
fn a_full_disk_is_named() {
    let mut dir = TempDir::new("full");
    if !dir.mount_tmpfs("size=512k") {
        return;
    }
    // Open a store while there is room, then fill the disk.
    let path = dir.join("tasks.db");
    let store = SqliteStore::open(&path, &Config::default()).unwrap();
    let filler = dir.join("filler");
    {
        let mut file = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
    }
    let mut failure = None;
    for i in 0..10_000 {
        if let Err(e) = store.submit(Some(&format!("t{i}")), named("h", &json(r#""a payload""#)), Schedule::default()) {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("submits kept succeeding on a full disk");
    assert!(failure.message().contains("disk is full"), "{failure}");
    let message = open_error(&dir.join("other.db"));
    assert!(message.contains("the disk is full"), "{message}");
    // Room again: the same handle works on.
    fs::remove_file(&filler).unwrap();
    store.submit(Some("after"), named("h", &json("1")), Schedule::default()).unwrap();
    assert_eq!(status(&store, "after")["status"], "PENDING");
    drop(store);
}

// ----- several processes ------------------------------------------------------------

#[test]
fn processes_sharing_a_file_never_run_two_tasks_at_once() {
    let dir = TempDir::new("overlap");
    let db = dir.join("tasks.db");
    let log = dir.join("runs.log");
    let store = SqliteStore::open(&db, &Config::default()).unwrap();
    let payload = json("{}");
    let named_ids: Vec<String> =
        (0..30).map(|i| store.submit(Some(&format!("w{i}")), named("work", &payload), Schedule::default()).unwrap().to_string()).collect();
    let children: Vec<Child> = (0..3)
        .map(|_| {
            spawn_quiet(
                "overlap",
                &[
                    ("SFT_DB", db.display().to_string()),
                    ("SFT_MARKER", dir.join("running").display().to_string()),
                    ("SFT_LOG", log.display().to_string()),
                    ("SFT_OWN", "5".into()),
                ],
            )
        })
        .collect();
    let pids: HashSet<String> = children.iter().map(|c| c.id().to_string()).collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains("OVERLAP"), "two tasks ran at once:\n{text}");
    let mut starts: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("start ")) {
        let mut parts = line.split(' ').skip(1);
        let (pid, id) = (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned());
        starts.entry(id).or_default().push(pid);
    }
    assert_eq!(starts.len(), 30 + 15);
    for (id, runners) in &starts {
        assert_eq!(runners.len(), 1, "{id} ran {} times", runners.len());
        if let Some(owner) = id.strip_prefix("fn-").and_then(|rest| rest.split('-').next()) {
            assert_eq!(owner, runners[0], "function task {id} ran in another process");
            assert!(pids.contains(owner));
        }
    }
    for id in named_ids {
        assert_eq!(status(&store, &id)["status"], "COMPLETED");
    }
    // Runs did not interleave: each start is followed by its own end.
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        assert_eq!(pair[0].replacen("start", "end", 1), pair[1]);
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_segment() {
    let dir = TempDir::new("sigkill");
    let db = dir.join("tasks.db");
    let ack = dir.join("ack.log");
    let sentences = 60;
    let store = SqliteStore::open_with(&db, &Config::default(), SqliteOptions { max_attempts: 10_000, ..quick() }).unwrap();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            store
                .submit(Some(&format!("chapter-{i}")), named("narrate", &json(&format!("{{\"chapter\": {i}}}"))), Schedule::default())
                .unwrap()
                .to_string()
        })
        .collect();
    let child_env = [
        ("SFT_DB", db.display().to_string()),
        ("SFT_ACK", ack.display().to_string()),
        ("SFT_SEGMENTS", sentences.to_string()),
        ("SFT_MAX_ATTEMPTS", "10000".to_string()),
    ];
    let mut rng = Rng::new();
    let mut kills = 0;
    for _ in 0..150 {
        let stats = store.stats().unwrap();
        if stats.counts.pending == 0 && stats.counts.processing == 0 {
            break;
        }
        let mut child = spawn_quiet("narrate", &child_env);
        std::thread::sleep(Duration::from_millis(5 + rng.below(45)));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    // Whatever is left, one last worker finishes.
    let mut child = spawn_quiet("narrate", &child_env);
    assert!(child.wait().unwrap().success());
    let starts: u64 = ids.iter().map(|id| status(&store, id)["attempt"].as_u64().unwrap()).sum();
    eprintln!("{kills} SIGKILLs; {starts} starts of {} tasks", ids.len());

    let acked = fs::read_to_string(&ack).unwrap_or_default();
    let mut acked_segments: BTreeMap<String, HashSet<i64>> = BTreeMap::new();
    let mut finished: HashMap<String, usize> = HashMap::new();
    for line in acked.lines() {
        let (id, what) = line.split_once(' ').unwrap();
        match what {
            "finished" => *finished.entry(id.to_owned()).or_default() += 1,
            n => {
                acked_segments.entry(id.to_owned()).or_default().insert(n.parse().unwrap());
            }
        }
    }
    let events = store.wait_events(0, 100_000, Some(Duration::ZERO)).unwrap();
    for id in &ids {
        let s = status(&store, id);
        assert_eq!(s["status"], "COMPLETED", "{s}");
        let got: Vec<i64> = s["completed_segments"].as_array().unwrap().iter().map(|seg| seg["segment_id"].as_i64().unwrap()).collect();
        assert_eq!(got, (0..sentences).collect::<Vec<_>>(), "segments of {id}: none missing, none twice");
        for n in acked_segments.get(id).into_iter().flatten() {
            assert!(got.contains(n), "acknowledged segment {n} of {id} lost");
        }
        assert!(finished.get(id).copied().unwrap_or(0) <= 1);
        let finishes = events.iter().filter(|e| &*e.task_id == id && e.kind == EventKind::Finished).count();
        assert_eq!(finishes, 1, "{id} finished {finishes} times");
        assert!(s["attempt"].as_u64().unwrap() >= 1);
        assert_eq!(s["checkpoint"], sentences);
    }
}

#[test]
fn a_long_poll_is_woken_by_another_process() {
    let dir = TempDir::new("longpoll");
    let db = dir.join("tasks.db");
    let store = SqliteStore::open(&db, &Config::default()).unwrap();
    let id = store.submit(Some("polled"), named("nobody-yet", &json("null")), Schedule::default()).unwrap();
    let revision = status(&store, &id)["revision"].as_u64().unwrap();
    let (mut child, mut out) =
        spawn_child("waiter", &[("SFT_DB", db.display().to_string()), ("SFT_TASK", id.to_string()), ("SFT_AFTER", revision.to_string())]);
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
    let dir = TempDir::new("owner");
    let db = dir.join("tasks.db");
    let store = SqliteStore::open_with(&db, &Config::default(), quick()).unwrap();
    let (mut child, mut out) =
        spawn_child("owner", &[("SFT_DB", db.display().to_string()), ("SFT_RUNNING", "ran".into()), ("SFT_PENDING", "queued".into())]);
    assert_eq!(next_message(&mut out).as_deref(), Some("claimed ran"));
    child.kill().unwrap();
    child.wait().unwrap();
    let ran: Value = serde_json::from_str(&store.wait("ran", LONG).unwrap()).unwrap();
    let queued: Value = serde_json::from_str(&store.wait("queued", LONG).unwrap()).unwrap();
    assert_eq!((ran["status"].as_str(), queued["status"].as_str()), (Some("FAILED"), Some("FAILED")));
    assert_eq!(ran["error"], "its process exited while it was running");
    assert_eq!(queued["error"], "its process exited before it ran");
}

#[test]
fn an_interrupted_named_task_resumes_and_fails_after_max_attempts() {
    let dir = TempDir::new("attempts");
    let db = dir.join("tasks.db");
    let options = SqliteOptions { max_attempts: 2, ..quick() };
    let store = SqliteStore::open_with(&db, &Config::default(), options).unwrap();
    let id = store.submit(Some("fragile"), named("stuck", &json(r#"{"chapter": 1}"#)), Schedule::default()).unwrap();
    let blocker = store.submit(Some("behind"), named("stuck", &json("2")), Schedule::default()).unwrap();
    let child_env = [("SFT_DB", db.display().to_string()), ("SFT_MAX_ATTEMPTS", "2".to_string())];

    let (mut child, mut out) = spawn_child("stuck", &child_env);
    let claimed: Value = serde_json::from_str(next_message(&mut out).unwrap().strip_prefix("claimed ").unwrap()).unwrap();
    assert_eq!((claimed["task_id"].as_str(), claimed["attempt"].as_u64()), (Some("fragile"), Some(1)));
    child.kill().unwrap();
    child.wait().unwrap();
    // Found dead by this process's sweep (or by the explicit call, whichever comes first).
    store.recover().unwrap();
    let s = wait_for(&store, &id, |s| s["status"] == "PENDING");
    // Its only worker died: it waits for one, with no queue position.
    assert_eq!((s["status"].as_str(), s["attempt"].as_u64(), s["queue_position"].as_u64()), (Some("PENDING"), Some(1), None));
    assert_eq!(s["checkpoint"], 1);
    assert_eq!(s["completed_segments"].as_array().unwrap().len(), 1);
    assert!(status(&store, &blocker)["queue_position"].is_null(), "no live worker serves its handler either");

    let (mut child, mut out) = spawn_child("stuck", &child_env);
    let claimed: Value = serde_json::from_str(next_message(&mut out).unwrap().strip_prefix("claimed ").unwrap()).unwrap();
    assert_eq!((claimed["task_id"].as_str(), claimed["attempt"].as_u64()), (Some("fragile"), Some(2)));
    assert_eq!(claimed["checkpoint"], 1, "the resumed start is handed its checkpoint");
    child.kill().unwrap();
    child.wait().unwrap();
    let failed: Value = serde_json::from_str(&store.wait(&id, LONG).unwrap()).unwrap();
    assert_eq!(failed["status"], "FAILED");
    assert!(failed["error"].as_str().unwrap().contains("kept being interrupted"), "{failed}");
    assert_eq!(failed["completed_segments"].as_array().unwrap().len(), 2);
}

// ----- measurements ---------------------------------------------------------------------

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    percentile(&mut values, 0.5)
}

/// Prints the median over `runs` of each run's p50 and p99, in microseconds.
fn report(what: &str, target: &str, runs: Vec<Vec<f64>>) {
    let p50 = median(runs.iter().map(|r| percentile(&mut r.clone(), 0.5)).collect());
    let p99 = median(runs.iter().map(|r| percentile(&mut r.clone(), 0.99)).collect());
    println!("{what:<44} p50 {p50:>9.2} us   p99 {p99:>9.2} us   ({} runs of {}; target {target})", runs.len(), runs[0].len());
}

fn micros_since(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

#[test]
#[ignore = "a benchmark that prints figures: cargo test --release --test sqlite_store -- --ignored --nocapture"]
fn bench_sqlite_store() {
    use std::time::Instant;
    const RUNS: usize = 3;
    let dir = TempDir::new("bench");
    let payload = json(r#"{"chapter": 1, "voice": "narrator"}"#);

    let mut submit_runs = Vec::new();
    let mut segment_runs = Vec::new();
    let mut progress_runs = Vec::new();
    let mut status_runs = Vec::new();
    for run in 0..RUNS {
        let store = SqliteStore::open(dir.join(&format!("run{run}.db")), &Config::default()).unwrap();
        store.register_handler("bench").unwrap();
        submit_runs.push(
            (0..2000)
                .map(|_| {
                    let start = Instant::now();
                    store.submit(None, named("bench", &payload), Schedule::default()).unwrap();
                    micros_since(start)
                })
                .collect(),
        );
        let claim = store.claim_next(LONG).unwrap().unwrap();
        let id = claim.task_id.to_string();
        progress_runs.push(
            (0..200)
                .map(|batch| {
                    let start = Instant::now();
                    for i in 0..1000u64 {
                        store.update_progress(&id, batch * 1000 + i, 200_000, None).unwrap();
                    }
                    micros_since(start) / 1000.0
                })
                .collect(),
        );
        segment_runs.push(
            (0..2000)
                .map(|i| {
                    let start = Instant::now();
                    store.add_segment(&id, &segment(i)).unwrap();
                    micros_since(start)
                })
                .collect(),
        );
        store.finish(&id, TaskOutcome::Completed).unwrap();
        let small = store.submit(None, named("bench", &payload), Schedule::default()).unwrap();
        status_runs.push(
            (0..2000)
                .map(|_| {
                    let start = Instant::now();
                    store.status_json(&small).unwrap();
                    micros_since(start)
                })
                .collect(),
        );
    }
    report("submit (one thread)", "<= 100 us p50", submit_runs);
    report("progress update, caller's cost", "<= 2 us", progress_runs);
    report("segment append (committed)", "<= 200 us p50", segment_runs);
    report("status read, same process", "-", status_runs);

    let mut threaded_runs = Vec::new();
    for run in 0..RUNS {
        let store = std::sync::Arc::new(SqliteStore::open(dir.join(&format!("threads{run}.db")), &Config::default()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let payload = json("null");
                    (0..250)
                        .map(|_| {
                            let start = Instant::now();
                            store.submit(None, named("bench", &payload), Schedule::default()).unwrap();
                            micros_since(start)
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        threaded_runs.push(threads.into_iter().flat_map(|t| t.join().unwrap()).collect());
    }
    report("submit (8 threads at once)", "-", threaded_runs);

    // Cross-process wake: the time from just before a committing call here to the
    // moment a long-poll in another process returns.
    let mut wake_runs = Vec::new();
    for run in 0..RUNS {
        let db = dir.join(&format!("wake{run}.db"));
        let store = SqliteStore::open(&db, &Config::default()).unwrap();
        let id = store.submit(Some("pinged"), named("nobody", &payload), Schedule::default()).unwrap();
        let mut revision = status(&store, &id)["revision"].as_u64().unwrap();
        let (mut child, mut out) = spawn_child(
            "pinger",
            &[("SFT_DB", db.display().to_string()), ("SFT_TASK", id.to_string()), ("SFT_AFTER", revision.to_string())],
        );
        assert_eq!(next_message(&mut out).as_deref(), Some("ready"));
        let mut rng = Rng::new();
        let mut samples = Vec::new();
        for i in 0..300 {
            std::thread::sleep(Duration::from_micros(500 + rng.below(2000)));
            let start = nanos();
            store.set_checkpoint(&id, &json(&i.to_string())).unwrap();
            let line = next_message(&mut out).unwrap();
            let (seen, at) = line.split_once(' ').unwrap();
            assert!(seen.parse::<u64>().unwrap() > revision);
            revision = seen.parse().unwrap();
            samples.push((at.parse::<u128>().unwrap().saturating_sub(start)) as f64 / 1000.0);
        }
        store.cancel(&id).unwrap();
        child.wait().unwrap();
        wake_runs.push(samples);
    }
    report("cross-process long-poll wake", "<= 2000 us p50", wake_runs);

    // Bytes on disk per retained finished task, with 10 segments each.
    let db = dir.join("size.db");
    let store = SqliteStore::open(&db, &Config::default()).unwrap();
    store.checkpoint().unwrap();
    let empty = store.disk_usage();
    for _ in 0..5000 {
        let id = store.submit(None, TaskKind::Function, Schedule::default()).unwrap();
        store.claim_next(LONG).unwrap().unwrap();
        for s in 0..10 {
            store.add_segment(&id, &segment(s)).unwrap();
        }
        store.finish(&id, TaskOutcome::Completed).unwrap();
    }
    store.checkpoint().unwrap();
    println!("bytes on disk per retained finished task (10 segments): {:.0}", (store.disk_usage() - empty) as f64 / 5000.0);
    drop(store);

    // Reopening with 100,000 retained finished tasks.
    let db = dir.join("reopen.db");
    let store = SqliteStore::open(&db, &Config::default()).unwrap();
    let build = Instant::now();
    for _ in 0..100_000 {
        let id = store.submit(None, TaskKind::Function, Schedule::default()).unwrap();
        store.claim_next(LONG).unwrap().unwrap();
        store.finish(&id, TaskOutcome::Completed).unwrap();
    }
    store.checkpoint().unwrap();
    println!(
        "bytes on disk per retained finished task (no segments): {:.0}   ({} MB for 100,000; built in {:.1} s)",
        store.disk_usage() as f64 / 100_000.0,
        store.disk_usage() / 1_000_000,
        build.elapsed().as_secs_f64()
    );
    drop(store);
    for quick_check_on_open in [true, false] {
        let times: Vec<f64> = (0..5)
            .map(|_| {
                let start = Instant::now();
                let store =
                    SqliteStore::open_with(&db, &Config::default(), SqliteOptions { quick_check_on_open, ..Default::default() }).unwrap();
                let elapsed = start.elapsed().as_secs_f64() * 1e3;
                assert_eq!(store.stats().unwrap().retained, 100_000);
                elapsed
            })
            .collect();
        println!(
            "reopen with 100,000 retained (quick_check {quick_check_on_open}): median {:.1} ms of 5 (target <= 1000 ms)",
            median(times)
        );
    }
}

#[test]
fn a_worker_that_lost_its_lease_is_refused() {
    let dir = TempDir::new("stale");
    let path = dir.join("tasks.db");
    let a = SqliteStore::open(&path, &Config::default()).unwrap();
    let b = SqliteStore::open(&path, &Config::default()).unwrap();
    a.register_handler("h").unwrap();
    b.register_handler("h").unwrap();
    let id = a.submit(Some("leased"), named("h", &json("null")), Schedule::default()).unwrap();
    a.claim_next(LONG).unwrap().unwrap();
    a.add_segment(&id, &segment(0)).unwrap();
    // Without its lock file `a` looks dead to `b`, though it runs on: a stale worker.
    fs::remove_file(format!("{}.workers/{}.lock", path.display(), a.worker_id())).unwrap();
    // Found by this call or by `b`'s own sweep, whichever comes first.
    b.recover().unwrap();
    let claim = b.claim_next(LONG).unwrap().unwrap();
    assert_eq!((&*claim.task_id, claim.attempt), ("leased", 2));
    assert_eq!(a.add_segment(&id, &segment(1)).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(a.finish(&id, TaskOutcome::Completed).unwrap_err().kind(), ErrorKind::InvalidState);
    b.add_segment(&id, &segment(1)).unwrap();
    assert_eq!(b.finish(&id, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    let done = status(&b, &id);
    assert_eq!(done["completed_segments"].as_array().unwrap().len(), 2);
}

// ----- priorities, yields and deadlines -------------------------------------------------

fn due_in(seconds: f64) -> Schedule {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    Schedule { priority: 0, deadline: Some(now + seconds) }
}

#[test]
fn priorities_set_the_claim_order_and_the_queue_positions() {
    let dir = TempDir::new("conformance");
    let path = dir.join("tasks.db");
    store_behaviour::priorities_set_the_claim_order_and_the_queue_positions(|| SqliteStore::open(&path, &Config::default()).unwrap());
}

#[test]
fn a_yield_puts_the_task_back_at_the_head_of_its_priority_with_what_it_did() {
    let dir = TempDir::new("yield");
    let store = SqliteStore::open(dir.join("tasks.db"), &Config::default()).unwrap();
    store.register_handler("narrate").unwrap();
    let payload = json(r#"{"chapter": 1}"#);
    let book = store.submit(Some("book"), named("narrate", &payload), Schedule::default()).unwrap();
    let claim = store.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!((&*claim.task_id, claim.attempt, claim.yields), ("book", 1, 0));
    store.add_segment(&book, &segment(0)).unwrap();
    store.add_error(&book, &SegmentError { segment_id: SegmentId::from(1), error: "voice".into() }).unwrap();
    store.set_checkpoint(&book, &json(r#"{"next": 2}"#)).unwrap();
    store.update_progress(&book, 2, 10, None).unwrap();
    assert!(!store.is_yield_requested(&book).unwrap());
    store.submit(Some("same"), named("narrate", &payload), Schedule::default()).unwrap();
    assert!(!store.is_yield_requested(&book).unwrap(), "only a higher priority asks for a yield");
    // A higher task nobody can run asks nothing; one this worker can run does.
    store.submit(Some("unserved"), named("nobody", &payload), at(9)).unwrap();
    assert!(!store.is_yield_requested(&book).unwrap());
    let preview = store.submit(Some("preview"), TaskKind::Function, at(5)).unwrap();
    assert!(store.is_yield_requested(&book).unwrap());
    assert_eq!(status(&store, &book)["yield_requested"], true);
    assert!(!store.is_yield_requested(&preview).unwrap(), "a pending task is never asked");
    assert_eq!(store.is_yield_requested("nobody").unwrap_err().kind(), ErrorKind::NotFound);
    let before = store.last_event_seq().unwrap();

    assert_eq!(store.finish(&book, TaskOutcome::Yielded).unwrap(), TaskState::Pending);
    let yielded = status(&store, &book);
    assert_eq!((yielded["status"].as_str(), yielded["yields"].as_u64(), yielded["attempt"].as_u64()), (Some("PENDING"), Some(1), Some(1)));
    // Behind the preview (and the unserved task, which may be served any time), ahead of
    // the other task of its priority.
    assert_eq!(yielded["queue_position"], 2);
    assert_eq!(status(&store, "same")["queue_position"], 3);
    assert_eq!((yielded["completed_segments"].as_array().unwrap().len(), yielded["errors"].as_array().unwrap().len()), (1, 1));
    assert_eq!(yielded["checkpoint"], serde_json::json!({"next": 2}));
    assert_eq!(yielded["progress"]["current"], 2);
    assert!(yielded["started_at"].is_null());
    assert!(!yielded["yield_requested"].as_bool().unwrap());
    let events = store.wait_events(before, 10, LONG).unwrap();
    assert_eq!((events[0].kind, events[0].status), (EventKind::Yielded, TaskState::Pending));
    assert_eq!(store.finish(&book, TaskOutcome::Completed).unwrap_err().kind(), ErrorKind::InvalidState);

    let urgent = store.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(&*urgent.task_id, "preview");
    store.finish(&preview, TaskOutcome::Completed).unwrap();
    let resumed = store.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!((&*resumed.task_id, resumed.attempt, resumed.yields), ("book", 1, 1));
    let checkpoint: Value = serde_json::from_str(resumed.checkpoint.as_ref().unwrap().get()).unwrap();
    assert_eq!(checkpoint, serde_json::json!({"next": 2}));
    let resumed_json: Value = serde_json::from_str(&resumed.to_json()).unwrap();
    let keys: Vec<&String> = resumed_json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["task_id", "run", "handler", "payload", "attempt", "checkpoint", "yields"]);
    assert_eq!(store.finish(&book, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    let done = status(&store, &book);
    assert_eq!((done["yields"].as_u64(), done["attempt"].as_u64()), (Some(1), Some(1)));
    assert_eq!(&*store.claim_next(Some(Duration::ZERO)).unwrap().unwrap().task_id, "same");
    store.finish("same", TaskOutcome::Completed).unwrap();
}

#[test]
fn the_queue_bound_and_the_report_caps_hold() {
    let dir = TempDir::new("caps");
    let path = dir.join("tasks.db");
    store_behaviour::the_queue_bound_and_the_report_caps_hold(|config| SqliteStore::open(&path, config).unwrap());
}

#[test]
fn a_cancel_requested_wins_over_a_yield() {
    let dir = TempDir::new("conformance");
    let path = dir.join("tasks.db");
    store_behaviour::a_cancel_requested_wins_over_a_yield(|| SqliteStore::open(&path, &Config::default()).unwrap());
}

#[test]
fn deadlines_fail_pending_tasks_and_cancel_running_ones_in_sqlite() {
    let dir = TempDir::new("deadlines");
    let store = SqliteStore::open_with(dir.join("tasks.db"), &Config::default(), quick()).unwrap();
    // The worker is busy with a task that outlives the other's deadline.
    let busy = store.submit(Some("busy"), TaskKind::Function, due_in(0.3)).unwrap();
    store.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
    let late = store.submit(Some("late"), TaskKind::Function, due_in(0.05)).unwrap();
    assert!(status(&store, &late)["deadline"].as_f64().is_some());
    let failed = wait_for(&store, &late, |s| s["status"] != "PENDING");
    assert_eq!((failed["status"].as_str(), failed["error"].as_str()), (Some("FAILED"), Some(storyflow_tasks::DEADLINE_PASSED_PENDING)));
    assert_eq!(status(&store, &busy)["status"], "PROCESSING", "failed while the worker was busy");
    // The running task's deadline passes: it is asked to cancel, and ends saying why.
    let asked = wait_for(&store, &busy, |s| s["cancel_requested"] == true);
    assert_eq!(asked["status"], "PROCESSING");
    assert!(store.is_cancel_requested(&busy).unwrap());
    assert_eq!(store.finish(&busy, TaskOutcome::Completed).unwrap(), TaskState::Cancelled);
    assert_eq!(status(&store, &busy)["error"], storyflow_tasks::DEADLINE_PASSED_RUNNING);
    // A deadline already past at submission is accepted and fails at once.
    let skewed = store.submit(Some("skewed"), TaskKind::Function, Schedule { priority: 3, deadline: Some(1.0) }).unwrap();
    let s = status(&store, &skewed);
    assert_eq!((s["status"].as_str(), s["error"].as_str()), (Some("FAILED"), Some(storyflow_tasks::DEADLINE_PASSED_PENDING)));
    assert!(store.claim_next(Some(Duration::ZERO)).unwrap().is_none());
    let bad = Schedule { priority: 0, deadline: Some(-1.0) };
    assert_eq!(store.submit(None, TaskKind::Function, bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(store.stats().unwrap().counts.pending, 0);
}

#[test]
fn a_high_priority_task_from_one_process_makes_another_process_s_task_yield() {
    let dir = TempDir::new("two-process-yield");
    let db = dir.join("tasks.db");
    let store = SqliteStore::open_with(&db, &Config::default(), quick()).unwrap();
    let (mut child, mut out) = spawn_child("yielder", &[("SFT_DB", db.display().to_string()), ("SFT_SEGMENTS", "400".into())]);
    assert_eq!(next_message(&mut out).as_deref(), Some("ready"));
    let book = store.submit(Some("book"), named("narrate", &json(r#"{"chapter": 1}"#)), Schedule::default()).unwrap();
    assert_eq!(next_message(&mut out).as_deref(), Some("running 1 0"));
    wait_for(&store, &book, |s| !s["completed_segments"].as_array().unwrap().is_empty());
    // This process's own function task, at a higher priority: the child's task yields to it.
    let preview = store.submit(Some("preview"), TaskKind::Function, at(10)).unwrap();
    let yielded = next_message(&mut out).unwrap();
    assert!(yielded.starts_with("yielded after "), "{yielded}");
    let claim = store.claim_next(LONG).unwrap().unwrap();
    assert_eq!(&*claim.task_id, "preview");
    let book_meanwhile = status(&store, &book);
    assert_eq!((book_meanwhile["status"].as_str(), book_meanwhile["yields"].as_u64()), (Some("PENDING"), Some(1)));
    assert_eq!(book_meanwhile["queue_position"], 0);
    store.finish(&preview, TaskOutcome::Completed).unwrap();
    assert_eq!(next_message(&mut out).as_deref(), Some("running 1 1"), "resumed with the same attempt");
    assert_eq!(next_message(&mut out).as_deref(), Some("done"));
    assert!(child.wait().unwrap().success());
    let done = status(&store, &book);
    assert_eq!((done["status"].as_str(), done["yields"].as_u64(), done["attempt"].as_u64()), (Some("COMPLETED"), Some(1), Some(1)));
    let segments: Vec<i64> = done["completed_segments"].as_array().unwrap().iter().map(|s| s["segment_id"].as_i64().unwrap()).collect();
    assert_eq!(segments, (0..400).collect::<Vec<_>>(), "every sentence once, in order, across the yield");
}

// ----- the manager on the SQLite store: what runs in this process yields too ----------------

fn manager_on(db: &Path) -> std::sync::Arc<storyflow_tasks::TaskManager> {
    let config = Config { store: format!("sqlite:{}", db.display()), ..Config::default() };
    storyflow_tasks::TaskManager::with_config(config)
}

fn manager_status(manager: &storyflow_tasks::TaskManager, id: &str) -> Value {
    serde_json::from_str(&manager.read_status(id).unwrap()).unwrap()
}

#[test]
fn the_manager_on_sqlite_runs_a_resumable_body_again_after_it_yields() {
    use std::sync::{mpsc, Arc, Mutex};
    use storyflow_tasks::TaskContext;
    let dir = TempDir::new("manager-yield");
    let manager = manager_on(&dir.join("tasks.db"));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (started, has_started) = mpsc::channel::<()>();
    let started = Mutex::new(Some(started));
    let book_order = order.clone();
    manager
        .submit_resumable(Some("book"), Schedule::default(), move |context: &TaskContext<'_>| {
            let manager = context.manager();
            let done = manager.status(context.task_id()).unwrap().completed_segments.len() as i64;
            book_order.lock().unwrap().push(format!("book from {done}"));
            for sentence in done..3 {
                if context.is_yield_requested() {
                    context.yield_task().unwrap();
                    return Ok(());
                }
                manager.add_completed_segment(context.task_id(), &segment(sentence)).unwrap();
                if let Some(started) = started.lock().unwrap().take() {
                    started.send(()).unwrap();
                    // Waits until the preview is queued: then it is asked to yield.
                    while !context.is_yield_requested() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    has_started.recv().unwrap();
    let preview_order = order.clone();
    manager
        .submit_with(Some("preview"), at(5), move |_: &TaskContext<'_>| {
            preview_order.lock().unwrap().push("preview".to_owned());
            Ok(())
        })
        .unwrap();
    let done: Value = serde_json::from_str(&manager.wait("book", LONG).unwrap()).unwrap();
    assert_eq!(*order.lock().unwrap(), ["book from 0", "preview", "book from 1"]);
    assert_eq!((done["status"].as_str(), done["yields"].as_u64(), done["attempt"].as_u64()), (Some("COMPLETED"), Some(1), Some(1)));
    assert_eq!(done["completed_segments"].as_array().unwrap().len(), 3);
    // A run-once body cannot yield; a task that is not running cannot either.
    let (refused, refusal) = mpsc::channel::<ErrorKind>();
    manager
        .submit(Some("once"), move |context: &TaskContext<'_>| {
            refused.send(context.yield_task().unwrap_err().kind()).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(refusal.recv().unwrap(), ErrorKind::InvalidState);
    manager.wait("once", LONG).unwrap();
    assert_eq!(manager.yield_task("once").unwrap_err().kind(), ErrorKind::InvalidState);
    manager.shutdown(LONG).unwrap();
}

#[test]
fn the_manager_on_sqlite_hands_a_yielded_runner_task_over_again_and_fails_late_ones() {
    let dir = TempDir::new("manager-runner");
    let manager = manager_on(&dir.join("tasks.db"));
    let runner = manager.register_runner();
    manager.submit_to_runner_with(runner, Some("run"), at(2)).unwrap();
    let first = manager.next_assignment(runner, LONG).unwrap();
    assert_eq!((&*first.task_id, first.attempt, first.yields), ("run", 1, 0));
    manager.set_checkpoint("run", r#"{"sentence": 4}"#).unwrap();
    manager.yield_task("run").unwrap();
    manager.finish_runner_task(runner, "run", Err(TaskFailure::Code(3))).unwrap();
    let again = manager.next_assignment(runner, LONG).unwrap();
    assert_eq!((&*again.task_id, again.run, again.attempt, again.yields), ("run", true, 1, 1));
    assert_eq!(again.checkpoint.map(|c| c.get().to_owned()).as_deref(), Some(r#"{"sentence":4}"#));
    manager.finish_runner_task(runner, "run", Ok(())).unwrap();
    assert_eq!(manager_status(&manager, "run")["status"], "COMPLETED");

    // An external task holds the worker while another task's deadline passes.
    manager.submit_external_with(Some("outside"), Schedule::default()).unwrap();
    manager.wait_for_change("outside", 1, LONG).unwrap();
    manager.submit_to_runner_with(runner, Some("late"), due_in(0.05)).unwrap();
    let late: Value = serde_json::from_str(&manager.wait("late", LONG).unwrap()).unwrap();
    assert_eq!((late["status"].as_str(), late["error"].as_str()), (Some("FAILED"), Some(storyflow_tasks::DEADLINE_PASSED_PENDING)));
    manager.finish("outside", Ok(())).unwrap();
    let stats = manager.read_stats().unwrap();
    assert!(stats.pending_by_priority.is_empty());
    manager.shutdown(LONG).unwrap();
}
