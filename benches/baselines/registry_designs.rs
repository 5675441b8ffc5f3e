//! The evidence behind the registry's design: how long the single
//! slowest insert takes while each candidate grows to `count` entries, on one
//! thread, so that only the data structure shows (no lock waits, no worker);
//! then what a lookup costs in each sharded candidate, side by side.
//!
//! The candidates are small replicas of the designs, not the library's code
//! (its registry is crate-private); `sharded_256_siphash` is the shape the
//! library's `src/registry.rs` had before this measurement, `sharded_1024_prehashed`
//! the shape it has after (see BENCHMARKS.md, "Why this registry").

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::measure::{Report, Slowest, Uninterrupted, XorShift};

/// Stands in for a task record: about the size of the library's `Task`.
struct Record {
    _payload: [u64; 26],
}

/// A registry candidate: `id -> Arc<Record>` behind its own locking scheme.
trait Candidate: Sync {
    fn insert(&self, id: Arc<str>, record: Arc<Record>);
    fn get(&self, id: &str) -> Option<Arc<Record>>;
}

/// One map, one lock, boxed records: the resize moves pointers but all of them at once.
struct OneMap(Mutex<HashMap<Arc<str>, Arc<Record>>>);

/// One map with records inline, as the plain design keeps them.
struct OneMapInline(Mutex<HashMap<Arc<str>, [u64; 26]>>);

/// One map with the final capacity reserved up front (the configuration would have to know it).
struct Reserved(Mutex<HashMap<Arc<str>, Arc<Record>>>);

/// `N` maps chosen by a SipHash of the id; each map hashes the id again (and must re-read
/// every id, a cache miss each, when it resizes).
/// One shard of a sharded design: its own lock over its own map.
type Shard<K, S = RandomState> = Mutex<HashMap<K, Arc<Record>, S>>;

struct ShardedSipHash {
    shards: Box<[Shard<Arc<str>>]>,
    hasher: RandomState,
}

/// `N` maps; the id's hash is computed once and stored beside it, so a resize
/// rehashes from the stored number and never touches the ids.
struct ShardedPrehashed {
    shards: Box<[Shard<HashedId, BuildHasherDefault<StoredHash>>]>,
    hasher: RandomState,
}

/// An id with its precomputed hash.
struct HashedId {
    hash: u64,
    id: Arc<str>,
}

/// What a lookup borrows a stored key as: a hash and the id's text.
trait IdKey {
    fn hash_value(&self) -> u64;
    fn text(&self) -> &str;
}

impl IdKey for HashedId {
    fn hash_value(&self) -> u64 {
        self.hash
    }
    fn text(&self) -> &str {
        &self.id
    }
}

impl IdKey for (u64, &str) {
    fn hash_value(&self) -> u64 {
        self.0
    }
    fn text(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn IdKey + 'a> for HashedId {
    fn borrow(&self) -> &(dyn IdKey + 'a) {
        self
    }
}

impl Hash for dyn IdKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value());
    }
}

impl PartialEq for dyn IdKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.hash_value() == other.hash_value() && self.text() == other.text()
    }
}

impl Eq for dyn IdKey + '_ {}

impl Hash for HashedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn IdKey).hash(state);
    }
}

impl PartialEq for HashedId {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn IdKey) == (other as &dyn IdKey)
    }
}

impl Eq for HashedId {}

/// Passes the stored hash through.
#[derive(Default)]
struct StoredHash(u64);

impl Hasher for StoredHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("only stored hashes are hashed");
    }
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

impl Candidate for OneMap {
    fn insert(&self, id: Arc<str>, record: Arc<Record>) {
        self.0.lock().unwrap().insert(id, record);
    }
    fn get(&self, id: &str) -> Option<Arc<Record>> {
        self.0.lock().unwrap().get(id).cloned()
    }
}

impl Candidate for OneMapInline {
    fn insert(&self, id: Arc<str>, record: Arc<Record>) {
        self.0.lock().unwrap().insert(id, record._payload);
    }
    fn get(&self, id: &str) -> Option<Arc<Record>> {
        self.0.lock().unwrap().get(id).map(|payload| Arc::new(Record { _payload: *payload }))
    }
}

impl Candidate for Reserved {
    fn insert(&self, id: Arc<str>, record: Arc<Record>) {
        self.0.lock().unwrap().insert(id, record);
    }
    fn get(&self, id: &str) -> Option<Arc<Record>> {
        self.0.lock().unwrap().get(id).cloned()
    }
}

impl ShardedSipHash {
    fn new(shards: usize) -> Self {
        Self { shards: (0..shards).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }
    fn shard(&self, id: &str) -> &Mutex<HashMap<Arc<str>, Arc<Record>>> {
        &self.shards[(self.hasher.hash_one(id) % self.shards.len() as u64) as usize]
    }
}

impl Candidate for ShardedSipHash {
    fn insert(&self, id: Arc<str>, record: Arc<Record>) {
        self.shard(&id).lock().unwrap().insert(id, record);
    }
    fn get(&self, id: &str) -> Option<Arc<Record>> {
        self.shard(id).lock().unwrap().get(id).cloned()
    }
}

impl ShardedPrehashed {
    fn new(shards: usize) -> Self {
        Self { shards: (0..shards).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }
    /// The shard comes from bits the maps do not use for buckets (low) or tags (top 7).
    fn shard(&self, hash: u64) -> &Mutex<HashMap<HashedId, Arc<Record>, BuildHasherDefault<StoredHash>>> {
        &self.shards[((hash >> 32) % self.shards.len() as u64) as usize]
    }
}

impl Candidate for ShardedPrehashed {
    fn insert(&self, id: Arc<str>, record: Arc<Record>) {
        let hash = self.hasher.hash_one(&*id);
        self.shard(hash).lock().unwrap().insert(HashedId { hash, id }, record);
    }
    fn get(&self, id: &str) -> Option<Arc<Record>> {
        let hash = self.hasher.hash_one(id);
        let key: &dyn IdKey = &(hash, id);
        self.shard(hash).lock().unwrap().get(key).cloned()
    }
}

/// Inserts `count` fresh UUID ids (each with its record, allocated as the library
/// allocates a task) and times every insert; then times lookups of all of them.
///
/// On a loaded 2-core machine the slowest insert is often one whose thread was
/// preempted; the slowest of the windows in which the thread never left its core
/// is the data structure's own worst case.
fn measure(name: &str, candidate: &dyn Candidate, count: usize, report: Report) -> Report {
    let (mut slowest, mut uninterrupted) = (Slowest::new(), Uninterrupted::new());
    let mut over_100us = 0u64;
    let started = Instant::now();
    for index in 0..count {
        let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().hyphenated().to_string());
        let record = Arc::new(Record { _payload: [index as u64; 26] });
        let start = Instant::now();
        candidate.insert(id, record);
        let nanos = start.elapsed().as_nanos() as u64;
        over_100us += u64::from(nanos > 100_000);
        slowest.offer(nanos, index as u64);
        uninterrupted.offer(nanos, index as u64, index + 1 == count);
    }
    report
        .samples(&format!("design_{name}_insert_max_us"), &[slowest.max_us()])
        .samples(&format!("design_{name}_uninterrupted_insert_max_us"), &[uninterrupted.slowest().max_us()])
        .info(&format!("{name}_slowest_inserts_us_at_index"), slowest.to_json())
        .info(&format!("{name}_slowest_uninterrupted_inserts_us_at_index"), uninterrupted.slowest().to_json())
        .info(&format!("{name}_inserts_over_100us"), over_100us)
        .info(&format!("{name}_uninterrupted_inserts_over_100us"), uninterrupted.over_100us())
        .info(&format!("{name}_fill_seconds"), started.elapsed().as_secs_f64())
}

/// Lookups per candidate per round, and rounds, of the lookup comparison.
const LOOKUPS: usize = 300_000;
const LOOKUP_ROUNDS: usize = 5;

/// Lookup cost of the sharded candidates side by side: all hold the same
/// `count` ids and records, and rounds of random lookups alternate between them,
/// so that only the number of shards and the hashing differ.
fn compare_lookups(count: usize, mut report: Report) -> Report {
    let candidates: Vec<(&str, Box<dyn Candidate>)> = vec![
        ("sharded_256_siphash", Box::new(ShardedSipHash::new(256))),
        ("sharded_256_prehashed", Box::new(ShardedPrehashed::new(256))),
        ("sharded_1024_prehashed", Box::new(ShardedPrehashed::new(1024))),
        ("sharded_4096_prehashed", Box::new(ShardedPrehashed::new(4096))),
    ];
    let ids: Vec<Arc<str>> = (0..count)
        .map(|index| {
            let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().hyphenated().to_string());
            let record = Arc::new(Record { _payload: [index as u64; 26] });
            for (_, candidate) in &candidates {
                candidate.insert(id.clone(), record.clone());
            }
            id
        })
        .collect();
    let mut random = XorShift::new();
    let order: Vec<usize> = (0..LOOKUPS).map(|_| random.below(count as u64) as usize).collect();
    let mut samples = vec![Vec::with_capacity(LOOKUP_ROUNDS); candidates.len()];
    for round in 0..LOOKUP_ROUNDS {
        for offset in 0..candidates.len() {
            let which = (round + offset) % candidates.len();
            let start = Instant::now();
            for &index in &order {
                black_box(candidates[which].1.get(&ids[index]));
            }
            samples[which].push(start.elapsed().as_nanos() as f64 / LOOKUPS as f64);
        }
    }
    for ((name, _), samples) in candidates.iter().zip(&samples) {
        report = report.samples(&format!("design_{name}_get_ns"), samples);
    }
    report
}

pub fn run(count: usize) -> Report {
    let mut report = Report::default().info("count", count);
    report = measure("one_map_inline", &OneMapInline(Mutex::default()), count, report);
    report = measure("one_map_boxed", &OneMap(Mutex::default()), count, report);
    report = measure("one_map_reserved", &Reserved(Mutex::new(HashMap::with_capacity(count))), count, report);
    report = measure("sharded_256_siphash", &ShardedSipHash::new(256), count, report);
    for shards in [256, 1024, 4096] {
        report = measure(&format!("sharded_{shards}_prehashed"), &ShardedPrehashed::new(shards), count, report);
    }
    compare_lookups(count, report)
}
