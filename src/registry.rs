//! The task registry: id -> task, sharded so that no single resize stops every caller.
//!
//! A single `HashMap` behind one lock stalls every submitter and reader while
//! it doubles (0.3 to 0.8 s near 917,504 entries on the 2-core benchmark
//! machine). Split into shards, one resize moves only that shard's entries,
//! which are pointers, and holds up only the callers that hash to it.
//!
//! Each id's hash is computed once and stored beside it, and the shards' maps
//! use that stored number as their hash. A resize then never re-reads or
//! re-hashes an id: with ids re-hashed, each id read was a cache miss and one
//! 256-shard resize at a million tasks took ~1.5 ms; with stored hashes it
//! takes ~0.2 ms, and ~0.07 ms with 1,024 shards (`benches/baselines/registry_designs.rs`,
//! BENCHMARKS.md). It also makes every call hash the id once instead of two or three times.

use std::borrow::Borrow;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::task::Task;
use crate::TaskId;

/// 1,024 shards: a million tasks make about 1,000 per shard, so a resize moves ~30 KB.
/// 4,096 made the worst resize smaller still, but their 160 KB of shard headers
/// fall out of cache and cost a random lookup ~100 ns more at a million tasks.
const SHARD_COUNT: usize = 1024;

type Shard = Mutex<HashMap<StoredKey, Arc<Task>, BuildHasherDefault<StoredHash>>>;

/// An id with its hash, as stored in a shard.
struct StoredKey {
    hash: u64,
    id: TaskId,
}

/// What a shard's map hashes and compares: an id with its hash, stored or borrowed.
trait HashedId {
    fn hash_value(&self) -> u64;
    fn id(&self) -> &str;
}

impl HashedId for StoredKey {
    fn hash_value(&self) -> u64 {
        self.hash
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// A looked-up id: its hash and the caller's text, nothing allocated.
impl HashedId for (u64, &str) {
    fn hash_value(&self) -> u64 {
        self.0
    }
    fn id(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn HashedId + 'a> for StoredKey {
    fn borrow(&self) -> &(dyn HashedId + 'a) {
        self
    }
}

impl Hash for dyn HashedId + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value());
    }
}

impl PartialEq for dyn HashedId + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.hash_value() == other.hash_value() && self.id() == other.id()
    }
}

impl Eq for dyn HashedId + '_ {}

impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn HashedId).hash(state);
    }
}

impl PartialEq for StoredKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn HashedId) == (other as &dyn HashedId)
    }
}

impl Eq for StoredKey {}

/// The shards' hasher: passes the stored hash through.
#[derive(Default)]
struct StoredHash(u64);

impl Hasher for StoredHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    /// Keys only ever write their stored `u64`; this fallback merely keeps the type total.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

pub(crate) struct Registry {
    shards: Box<[Shard]>,
    /// Keyed per process (SipHash), so callers cannot pick ids that collide on purpose.
    id_hasher: RandomState,
}

impl Registry {
    pub fn new() -> Self {
        Self { shards: (0..SHARD_COUNT).map(|_| Mutex::default()).collect(), id_hasher: RandomState::new() }
    }

    /// The id's hash and its shard. The shard comes from bits 32 and up, which the
    /// maps use neither for bucket indexes (low bits) nor for tags (top 7 bits).
    fn locate(&self, task_id: &str) -> (u64, &Shard) {
        let hash = self.id_hasher.hash_one(task_id);
        (hash, &self.shards[(hash >> 32) as usize % SHARD_COUNT])
    }

    pub fn get(&self, task_id: &str) -> Option<Arc<Task>> {
        let (hash, shard) = self.locate(task_id);
        lock(shard).get(&(hash, task_id) as &dyn HashedId).cloned()
    }

    pub fn contains(&self, task_id: &str) -> bool {
        let (hash, shard) = self.locate(task_id);
        lock(shard).contains_key(&(hash, task_id) as &dyn HashedId)
    }

    /// Inserts `task` under its id unless the id is taken (false).
    pub fn insert_new(&self, task: &Arc<Task>) -> bool {
        let (hash, shard) = self.locate(&task.id);
        match lock(shard).entry(StoredKey { hash, id: task.id.clone() }) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(task.clone());
                true
            }
        }
    }

    /// Removes `task` if it is still the entry under its id.
    pub fn remove(&self, task: &Arc<Task>) -> bool {
        let (hash, shard) = self.locate(&task.id);
        let key: &dyn HashedId = &(hash, &*task.id);
        let mut shard = lock(shard);
        match shard.get(key) {
            Some(current) if Arc::ptr_eq(current, task) => {
                shard.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Every task, each shard locked only while its pointers are copied.
    pub fn snapshot(&self) -> Vec<Arc<Task>> {
        let mut tasks = Vec::new();
        for shard in self.shards.iter() {
            tasks.extend(lock(shard).values().cloned());
        }
        tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Arc<Task> {
        Arc::new(Task::new(Arc::from(id), 0.0, true, None, crate::Schedule::default()))
    }

    #[test]
    fn finds_inserts_refuses_duplicates_and_removes_only_its_own_entry() {
        let registry = Registry::new();
        let ids: Vec<TaskId> = (0..5_000).map(|i| Arc::from(format!("task-{i}"))).collect();
        for id in &ids {
            assert!(registry.insert_new(&task(id)));
        }
        for id in &ids {
            assert_eq!(&*registry.get(id).expect("inserted").id, &**id);
            assert!(registry.contains(id));
        }
        assert!(registry.get("task-5000").is_none());
        assert!(!registry.contains(""));
        assert!(!registry.insert_new(&task(&ids[7])), "a taken id is refused");
        assert_eq!(registry.snapshot().len(), ids.len());

        let stranger = task("task-3");
        assert!(!registry.remove(&stranger), "another task with the same id is not removed");
        let owner = registry.get("task-3").expect("inserted");
        assert!(registry.remove(&owner));
        assert!(!registry.remove(&owner), "already gone");
        assert!(registry.get("task-3").is_none());
        assert_eq!(registry.snapshot().len(), ids.len() - 1);
    }

    #[test]
    fn ids_that_differ_only_slightly_are_kept_apart() {
        let registry = Registry::new();
        let ids: Vec<TaskId> = ["a", "a\0", "ab", "b", "é", "e\u{301}"].into_iter().map(Arc::from).collect();
        for id in &ids {
            assert!(registry.insert_new(&task(id)), "{id:?}");
        }
        for id in &ids {
            assert_eq!(&*registry.get(id).expect("inserted").id, &**id);
        }
    }
}
