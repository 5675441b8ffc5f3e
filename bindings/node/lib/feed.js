'use strict';
// The change-feed poller: the one place that waits for task changes.
//
// One native sft_wait_events call is in flight at a time, on one libuv thread,
// whatever the number of waits, watches and listeners; everything they wait
// for is resolved from the events it brings back, on the main thread. It also
// aborts a running JS task's signal when another thread requests its
// cancellation. (JS tasks themselves are handed over by lib/runner.js.)
//
// Keeping the process alive: while a wait or a watch is pending and no JS task
// of ours is running, each poll is issued at once and so holds the event loop.
// While one of our JS tasks runs, it is that task's own work that keeps the
// process alive (as for any Promise); the poller then goes on between unref'd
// timers, so a process whose running task can never settle ends instead of
// hanging. With nothing awaited, no task running and no listener, it stops.

const { Result } = require('./native');
const { StoryflowTasksError } = require('./errors');
const { isFinished, parseStatus } = require('./status');
const { parseJson } = require('./json');

/** How long one native wait lasts at most: bounds how late the poller notices it is no longer needed. */
const POLL_TIMEOUT_MS = 200;
/** Events fetched per native call. */
const MAX_EVENTS_PER_POLL = 256;
/** Event names on the emitter whose listeners keep the poller running. */
const FEED_EVENT_NAMES = ['event', 'gap'];

class ChangeFeed {
  #native;
  #emitter;
  /** The seq of the newest event handled; null while idle (restart from "now"). */
  #cursor = null;
  /** A native wait is in flight or its batch is being handled. */
  #busy = false;
  /** The unref'd timer that issues the next poll while no one holds the process. */
  #lazyTimer = null;
  /** @type {import('./runner').TaskRunner} */
  #runner;
  /** id -> Set of { resolve, reject, timer }. */
  #waiters = new Map();
  /** id -> Set of TaskWatch. */
  #watchers = new Map();

  /**
   * @param {ReturnType<import('./native').makeNative>} native
   * @param {import('node:events').EventEmitter} emitter where every event is emitted as 'event'
   * @param {import('./runner').TaskRunner} runner whose running tasks' signals are aborted on request
   */
  constructor(native, emitter, runner) {
    this.#native = native;
    this.#emitter = emitter;
    this.#runner = runner;
    emitter.on('newListener', (name) => {
      if (FEED_EVENT_NAMES.includes(name)) {
        this.anchor();
        process.nextTick(() => this.kick());
      }
    });
    emitter.on('removeListener', () => this.kick());
  }

  /**
   * Fixes where the feed starts before something is registered, so that no
   * event about it can be missed. Call it before reading the state it depends on.
   */
  anchor() {
    if (this.#cursor === null) this.#cursor = this.#native.lastEventSeq();
  }

  /** Resolves `resolve(status)` when the task finishes, or rejects on timeout (ms, null: none). */
  addWaiter(taskId, resolve, reject, timeoutMs) {
    const waiter = { resolve, reject, timer: null };
    if (timeoutMs !== null) {
      waiter.timer = setTimeout(() => {
        this.#removeFrom(this.#waiters, taskId, waiter);
        reject(new StoryflowTasksError(`wait: task ${JSON.stringify(taskId)} did not finish within ${timeoutMs} ms (SFT_ERR_TIMEOUT)`,
          'SFT_ERR_TIMEOUT', Result.TIMEOUT));
        this.kick();
      }, timeoutMs);
    }
    this.#addTo(this.#waiters, taskId, waiter);
    this.kick();
  }

  /** Feeds `watch.update(status)` on every change of the task until it is finished. */
  addWatcher(taskId, watch) {
    this.#addTo(this.#watchers, taskId, watch);
    this.kick();
  }

  removeWatcher(taskId, watch) {
    this.#removeFrom(this.#watchers, taskId, watch);
    this.kick();
  }

  /** Starts, keeps going or stops the poller after anything that changes what it waits for. */
  kick() {
    if (this.#busy) return;
    if (this.#lazyTimer !== null) {
      clearTimeout(this.#lazyTimer);
      this.#lazyTimer = null;
    }
    if (!this.#isNeeded()) {
      // While a JS task of ours is queued, keep the place: a listener added meanwhile hears it start.
      if (this.#runner.queuedCount === 0) this.#cursor = null;
      return;
    }
    if (this.#holdsProcess()) {
      this.#poll();
      return;
    }
    this.#lazyTimer = setTimeout(() => {
      this.#lazyTimer = null;
      if (this.#busy) return;
      if (this.#isNeeded()) this.#poll();
      else this.#cursor = null;
    }, 0);
    this.#lazyTimer.unref();
  }

  #isAwaited() {
    return this.#waiters.size > 0 || this.#watchers.size > 0;
  }

  #isNeeded() {
    return this.#isAwaited() || this.#runner.runningCount > 0 ||
      FEED_EVENT_NAMES.some((name) => this.#emitter.listenerCount(name) > 0);
  }

  #holdsProcess() {
    return this.#isAwaited() && this.#runner.runningCount === 0;
  }

  #poll() {
    this.#busy = true;
    this.anchor();
    this.#native.waitEventsAsync(this.#cursor, MAX_EVENTS_PER_POLL, POLL_TIMEOUT_MS, (code, json) => {
      if (code !== Result.OK && code !== Result.TIMEOUT) {
        // Not expected; retry after a pause rather than spin on the failure.
        process.emitWarning(`storyflow-tasks: reading the change feed failed with ${this.#native.resultName(code)}; retrying`);
        const retry = setTimeout(() => this.#pollDone(), POLL_TIMEOUT_MS);
        if (!this.#holdsProcess()) retry.unref();
        return;
      }
      try {
        if (code === Result.OK && json !== null) this.#dispatch(parseJson(json));
      } finally {
        this.#pollDone();
      }
    });
  }

  #pollDone() {
    this.#busy = false;
    this.kick();
  }

  /** Handles one batch of events, oldest first. */
  #dispatch(batch) {
    const touched = new Set();
    let gapFrom = null;
    for (const event of batch) {
      if (event.seq > this.#cursor + 1 && gapFrom === null) gapFrom = this.#cursor;
      this.#cursor = Math.max(this.#cursor, event.seq);
      const taskId = event.task_id;
      if (event.kind === 'cancel_requested') this.#runner.abort(taskId);
      else if (event.kind === 'finished' && this.#waiters.has(taskId)) touched.add(taskId);
      if (this.#watchers.has(taskId)) touched.add(taskId);
      this.#emit('event', event);
    }
    if (gapFrom !== null) this.#recoverFromGap(gapFrom, batch[0].seq, touched);
    for (const taskId of touched) this.#deliverStatus(taskId);
  }

  /**
   * Events were dropped from the feed's ring buffer before they were read:
   * re-read the statuses of what is awaited, and of the running JS task.
   */
  #recoverFromGap(afterSeq, nextSeq, touched) {
    for (const taskId of this.#runner.runningIds()) {
      if (parseStatus(this.#native.getTaskStatus(taskId))?.cancel_requested) this.#runner.abort(taskId);
    }
    for (const taskId of [...this.#waiters.keys(), ...this.#watchers.keys()]) touched.add(taskId);
    this.#emit('gap', { afterSeq, nextSeq });
  }

  /** Resolves the waits and feeds the watches of one task with its current status. */
  #deliverStatus(taskId) {
    const json = this.#native.getTaskStatus(taskId);
    const finished = json === null || isFinished(parseStatus(json));
    const waiters = this.#waiters.get(taskId);
    if (waiters && finished) {
      this.#waiters.delete(taskId);
      for (const waiter of waiters) {
        clearTimeout(waiter.timer);
        if (json === null) waiter.reject(gone(taskId, 'wait'));
        else waiter.resolve(parseStatus(json));
      }
    }
    const watchers = this.#watchers.get(taskId);
    if (watchers) {
      if (finished) this.#watchers.delete(taskId);
      for (const watch of watchers) watch.update(parseStatus(json));
    }
  }

  #emit(name, payload) {
    if (this.#emitter.listenerCount(name) === 0) return;
    try {
      this.#emitter.emit(name, payload);
    } catch (error) {
      // A throwing listener is the listener's bug: report it as uncaught, but keep the poller going.
      // Rethrown from an immediate, never a tick: ticks left queued after one throws are
      // drained inside the next native completion callback, where ffi-napi aborts on a throw.
      setImmediate(() => {
        throw error;
      });
    }
  }

  #addTo(map, taskId, item) {
    let set = map.get(taskId);
    if (set === undefined) map.set(taskId, (set = new Set()));
    set.add(item);
  }

  #removeFrom(map, taskId, item) {
    const set = map.get(taskId);
    if (set === undefined) return;
    set.delete(item);
    if (set.size === 0) map.delete(taskId);
  }
}

/** The error for a task that left the registry (cleaned up) while being watched. */
function gone(taskId, operation) {
  return new StoryflowTasksError(`${operation}: task ${JSON.stringify(taskId)} is no longer in the registry (SFT_ERR_NOT_FOUND)`,
    'SFT_ERR_NOT_FOUND', Result.NOT_FOUND);
}

module.exports = { ChangeFeed, gone, POLL_TIMEOUT_MS };
