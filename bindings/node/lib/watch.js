'use strict';
// watch(id): an async iterator over a task's status, fed by the change feed.

const { isFinished } = require('./status');
const { gone } = require('./feed');

/**
 * Yields the task's current status, then its status after each change, and
 * ends after yielding the final one. Changes that happen while the consumer is
 * busy are coalesced: it always gets the newest status, never a stale one.
 */
class TaskWatch {
  #feed;
  #taskId;
  #latest;
  #yieldedRevision = -1;
  #error = null;
  #closed = false;
  /** The consumer's pending next(): { resolve, reject }. */
  #pending = null;

  /**
   * @param {import('./feed').ChangeFeed} feed
   * @param {string} taskId
   * @param {object} status the task's status when the watch began
   */
  constructor(feed, taskId, status) {
    this.#feed = feed;
    this.#taskId = taskId;
    this.#latest = status;
    if (!isFinished(status)) feed.addWatcher(taskId, this);
  }

  /** Called by the feed with the newest status, or null if the task left the registry. */
  update(status) {
    if (status === null) this.#error = gone(this.#taskId, 'watch');
    else if (status.revision > this.#latest.revision) this.#latest = status;
    if (this.#pending !== null && this.#settle(this.#pending.resolve, this.#pending.reject)) this.#pending = null;
  }

  /** @returns {Promise<IteratorResult<object, undefined>>} */
  next() {
    return new Promise((resolve, reject) => {
      if (!this.#settle(resolve, reject)) this.#pending = { resolve, reject };
    });
  }

  /** Stops watching (a `break` out of `for await` calls this). */
  return() {
    this.#close();
    if (this.#pending !== null) {
      this.#pending.resolve({ value: undefined, done: true });
      this.#pending = null;
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** Settles a next() if there is something to give; false if it must wait. */
  #settle(resolve, reject) {
    if (this.#closed) {
      resolve({ value: undefined, done: true });
    } else if (this.#latest.revision > this.#yieldedRevision) {
      this.#yieldedRevision = this.#latest.revision;
      resolve({ value: this.#latest, done: false });
    } else if (this.#error !== null) {
      this.#close();
      reject(this.#error);
    } else if (isFinished(this.#latest)) {
      this.#close();
      resolve({ value: undefined, done: true });
    } else {
      return false;
    }
    return true;
  }

  #close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#feed.removeWatcher(this.#taskId, this);
  }
}

module.exports = { TaskWatch };
