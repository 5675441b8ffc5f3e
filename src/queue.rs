//! The FIFO of pending tasks, which also answers "how many are ahead of this one".
//!
//! Pending tasks can be cancelled out of the middle of the queue, so a task's
//! position is not simply its sequence number minus the head's. A Fenwick tree
//! over the live/removed flags of the queue window counts the live tasks ahead
//! in O(log n); it is rebuilt in O(window) only after the head has moved past
//! half of it, which keeps every operation amortised O(log n).

use std::collections::VecDeque;

/// Below this many dequeued slots the tree is never rebuilt, so small queues stay cheap.
const MIN_REBUILD_SPAN: u64 = 4096;

/// Pending items in submission order, each with a sequence number.
pub(crate) struct PendingQueue<T> {
    /// `slots[i]` holds the item with sequence number `head_seq + i`; `None` once removed.
    slots: VecDeque<Option<T>>,
    head_seq: u64,
    live: usize,
    /// Fenwick tree over positions `tree_base ..`, 1-based inside: `tree[p - 1]`.
    tree: Vec<i64>,
    tree_base: u64,
}

impl<T> Default for PendingQueue<T> {
    fn default() -> Self {
        Self { slots: VecDeque::new(), head_seq: 0, live: 0, tree: Vec::new(), tree_base: 0 }
    }
}

fn lowest_bit(p: usize) -> usize {
    p & p.wrapping_neg()
}

impl<T> PendingQueue<T> {
    /// How many items are still queued.
    pub fn len(&self) -> usize {
        self.live
    }

    /// The sequence number the next pushed item will get.
    pub fn next_seq(&self) -> u64 {
        self.head_seq + self.slots.len() as u64
    }

    /// Appends `item` and returns its sequence number.
    pub fn push(&mut self, item: T) -> u64 {
        let seq = self.next_seq();
        self.slots.push_back(Some(item));
        self.live += 1;
        self.tree_append(1);
        seq
    }

    /// Takes the oldest live item.
    pub fn pop_front(&mut self) -> Option<T> {
        while let Some(slot) = self.slots.pop_front() {
            let seq = self.head_seq;
            self.head_seq += 1;
            if let Some(item) = slot {
                self.mark_removed(seq);
                self.maybe_rebuild();
                return Some(item);
            }
        }
        None
    }

    /// Takes the item with sequence number `seq` out of the middle, if it is still queued.
    pub fn remove(&mut self, seq: u64) -> Option<T> {
        let index = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        let item = self.slots.get_mut(index)?.take()?;
        self.mark_removed(seq);
        Some(item)
    }

    /// The item with sequence number `seq`, if it is still queued.
    pub fn get(&self, seq: u64) -> Option<&T> {
        let index = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        self.slots.get(index)?.as_ref()
    }

    /// Takes every queued item, oldest first.
    pub fn drain(&mut self) -> Vec<T> {
        let mut items = Vec::with_capacity(self.live);
        while let Some(item) = self.pop_front() {
            items.push(item);
        }
        items
    }

    /// How many live items are ahead of `seq`; `None` if `seq` is no longer queued.
    pub fn position(&self, seq: u64) -> Option<u64> {
        let index = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        self.slots.get(index)?.as_ref()?;
        let position = self.prefix_sum((seq - self.tree_base) as usize);
        Some(position as u64)
    }

    fn mark_removed(&mut self, seq: u64) {
        self.live -= 1;
        self.tree_add((seq - self.tree_base) as usize + 1, -1);
    }

    /// Sum of the flags at positions `1..=p`.
    fn prefix_sum(&self, mut p: usize) -> i64 {
        let mut sum = 0;
        while p > 0 {
            sum += self.tree[p - 1];
            p -= lowest_bit(p);
        }
        sum
    }

    fn tree_add(&mut self, mut p: usize, delta: i64) {
        while p <= self.tree.len() {
            self.tree[p - 1] += delta;
            p += lowest_bit(p);
        }
    }

    /// Appends position `len + 1` holding `value`: its node covers `(p - lowbit(p), p]`.
    fn tree_append(&mut self, value: i64) {
        let p = self.tree.len() + 1;
        let covered = self.prefix_sum(p - 1) - self.prefix_sum(p - lowest_bit(p));
        self.tree.push(value + covered);
    }

    /// Restarts the tree at the head once the dequeued prefix is more than half of it.
    fn maybe_rebuild(&mut self) {
        let dead_span = self.head_seq - self.tree_base;
        if dead_span < MIN_REBUILD_SPAN || dead_span * 2 < self.tree.len() as u64 {
            return;
        }
        self.tree.clear();
        self.tree.extend(self.slots.iter().map(|slot| i64::from(slot.is_some())));
        let n = self.tree.len();
        for p in 1..=n {
            let parent = p + lowest_bit(p);
            if parent <= n {
                self.tree[parent - 1] += self.tree[p - 1];
            }
        }
        self.tree_base = self.head_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_and_positions_with_removals() {
        let mut queue = PendingQueue::default();
        let seqs: Vec<u64> = (0..10).map(|i| queue.push(i)).collect();
        assert_eq!(queue.position(seqs[0]), Some(0));
        assert_eq!(queue.position(seqs[9]), Some(9));
        assert_eq!(queue.remove(seqs[3]), Some(3));
        assert_eq!(queue.remove(seqs[3]), None);
        assert_eq!(queue.position(seqs[3]), None);
        assert_eq!(queue.position(seqs[9]), Some(8));
        assert_eq!(queue.pop_front(), Some(0));
        assert_eq!(queue.position(seqs[9]), Some(7));
        assert_eq!(queue.position(seqs[0]), None);
        assert_eq!(queue.len(), 8);
        assert_eq!(queue.drain(), vec![1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn agrees_with_a_sorted_list_model_across_rebuilds() {
        let mut queue = PendingQueue::default();
        // The model: the live sequence numbers, sorted; a position is an index in it.
        let mut live: Vec<u64> = Vec::new();
        let mut every_seq: Vec<u64> = Vec::new();
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut next_random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..60_000u64 {
            match next_random() % 10 {
                0..=4 => {
                    let seq = queue.push(step);
                    live.push(seq);
                    every_seq.push(seq);
                }
                5..=7 => {
                    let expected = (!live.is_empty()).then(|| live.remove(0));
                    assert_eq!(queue.pop_front().is_some(), expected.is_some());
                }
                _ => {
                    if let Some(&seq) = every_seq.get((next_random() as usize) % every_seq.len().max(1)) {
                        let index = live.binary_search(&seq);
                        assert_eq!(queue.remove(seq).is_some(), index.is_ok());
                        if let Ok(index) = index {
                            live.remove(index);
                        }
                    }
                }
            }
            if step % 97 == 0 {
                for &seq in every_seq.iter().rev().take(50) {
                    let expected = live.binary_search(&seq).ok().map(|index| index as u64);
                    assert_eq!(queue.position(seq), expected, "seq {seq} at step {step}");
                }
            }
            assert_eq!(queue.len(), live.len());
        }
    }
}
