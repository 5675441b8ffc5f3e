//! The task registry: id -> task, sharded so that no single resize stops every caller.
//!
//! A single `HashMap` behind one lock stalls every submitter and reader while
//! it doubles (hundreds of milliseconds near a million entries). Split into
//! shards, one resize moves only that shard's entries, which are pointers, and
//! holds up only the callers that hash to it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::task::Task;
use crate::TaskId;

/// 256 shards: a million tasks make about 4,000 per shard, so a resize moves ~100 KB.
const SHARD_COUNT: usize = 256;

type Shard = Mutex<HashMap<TaskId, Arc<Task>>>;

pub(crate) struct Registry {
    shards: Box<[Shard]>,
    shard_hasher: RandomState,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARD_COUNT).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_hasher: RandomState::new(),
        }
    }

    fn shard(&self, task_id: &str) -> &Shard {
        let hash = self.shard_hasher.hash_one(task_id);
        &self.shards[(hash % SHARD_COUNT as u64) as usize]
    }

    pub fn get(&self, task_id: &str) -> Option<Arc<Task>> {
        lock(self.shard(task_id)).get(task_id).cloned()
    }

    pub fn contains(&self, task_id: &str) -> bool {
        lock(self.shard(task_id)).contains_key(task_id)
    }

    /// Inserts `make()`'s task under `task_id` unless the id is taken; returns it.
    pub fn insert_new(&self, task_id: &TaskId, make: impl FnOnce() -> Arc<Task>) -> Option<Arc<Task>> {
        let mut shard = lock(self.shard(task_id));
        if shard.contains_key(task_id) {
            return None;
        }
        let task = make();
        shard.insert(task_id.clone(), task.clone());
        Some(task)
    }

    /// Removes `task` if it is still the entry under its id.
    pub fn remove(&self, task: &Arc<Task>) -> bool {
        let mut shard = lock(self.shard(&task.id));
        match shard.get(&task.id) {
            Some(current) if Arc::ptr_eq(current, task) => {
                shard.remove(&task.id);
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
