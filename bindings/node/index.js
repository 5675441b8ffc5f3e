'use strict';
// storyflow-tasks for Node: the process-wide task manager of libstoryflow_tasks,
// shared with the C/C++ engines and Python code of the same process.

const { EventEmitter } = require('node:events');
const path = require('node:path');
const { isMainThread } = require('node:worker_threads');
const { loadNative, DEFAULT_ENGINE, ENGINES } = require('./lib/load');
const { Result, WAIT_FOREVER } = require('./lib/native');
const { StoryflowTasksError, InvalidArgumentError, libraryError } = require('./lib/errors');
const { parseJson, toJson, describe } = require('./lib/json');
const { ChangeFeed } = require('./lib/feed');
const { TaskRunner } = require('./lib/runner');
const { TaskWatch } = require('./lib/watch');
const {
  TASK_PENDING, TASK_PROCESSING, TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED, isFinished, parseStatus,
} = require('./lib/status');

/** The longest timeout accepted, in ms: what a Node timer can wait (about 24.8 days). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const MAX_UINT64 = 2n ** 64n - 1n;

/**
 * Runs `compute` now and returns its outcome as a Promise: a throw becomes a rejection.
 * @template T
 * @param {() => T} compute
 * @returns {Promise<T>}
 */
function settleNow(compute) {
  try {
    return Promise.resolve(compute());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** The C API's names of the arguments passed as C strings. */
const C_STRING_NAMES = { taskId: 'task_id', status: 'status_filter', name: 'handler name' };

/**
 * A string passed to the library as a C string (a task id, a state name):
 * it cannot carry NUL, nor a lone surrogate, which UTF-8 cannot encode.
 */
function requireText(value, what, operation) {
  if (typeof value !== 'string') throw new TypeError(`${operation}: ${what} must be a string, got ${describe(value)}`);
  const carrier = `the C string ${C_STRING_NAMES[what] ?? what}`;
  if (value.includes('\0')) throw new InvalidArgumentError(`${operation}: ${what} holds a NUL character, which ${carrier} cannot carry`);
  if (!value.isWellFormed()) throw new InvalidArgumentError(`${operation}: ${what} holds a lone surrogate, which ${carrier} (UTF-8) cannot carry`);
  return value;
}

/** A count for progress: an integer in 0..2^64-1, as a number or a bigint. */
function requireCount(value, what, operation) {
  if (typeof value !== 'number' && typeof value !== 'bigint') {
    throw new TypeError(`${operation}: ${what} must be a number or a bigint, got ${describe(value)}`);
  }
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new InvalidArgumentError(`${operation}: ${what} must be an integer in 0..2^64-1 (a bigint beyond 2^53), got ${value}`);
  }
  if (value < 0 || value > MAX_UINT64) throw new InvalidArgumentError(`${operation}: ${what} must be in 0..2^64-1, got ${value}`);
  return value;
}

/** `extra` for a progress update as JSON text, or null; the library checks that it is an object. */
function extraJson(extra, operation) {
  return extra === undefined || extra === null ? null : toJson(extra, 'extra', operation);
}

/** A timeout option in ms: undefined, null or Infinity for none (null), else 0..MAX_TIMEOUT_MS. */
function timeoutMs(timeout, operation) {
  if (timeout === undefined || timeout === null || timeout === Infinity) return null;
  if (typeof timeout !== 'number' || Number.isNaN(timeout)) {
    throw new TypeError(`${operation}: timeout must be a number of milliseconds, got ${describe(timeout)}`);
  }
  if (timeout < 0 || timeout > MAX_TIMEOUT_MS) {
    throw new RangeError(`${operation}: timeout must be in 0..${MAX_TIMEOUT_MS} ms, or Infinity for no limit; got ${timeout}`);
  }
  return Math.ceil(timeout);
}

/** The options object of wait/shutdown, which may be left out. */
function optionsObject(options, operation) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeError(`${operation}: options must be an object, got ${describe(options)}`);
  return options;
}

/**
 * The submit options as JSON text for the library's *_with_options functions,
 * or null for the defaults. The library parses and checks them (priority an
 * integer in i32 range, deadline a finite number of epoch seconds >= 0 or null,
 * no other key) and refuses a bad one naming its key; here a Date deadline
 * becomes epoch seconds, and a key set to undefined counts as left out.
 */
function scheduleJson(schedule, operation) {
  const options = {};
  for (const [key, value] of Object.entries(schedule)) {
    if (value === undefined) continue;
    options[key] = key === 'deadline' && value instanceof Date ? value.getTime() / 1000 : value;
  }
  return Object.keys(options).length === 0 ? null : toJson(options, 'options', operation);
}

/**
 * The last argument of a submit: a task id (the positional form), or the
 * options `{ taskId, priority, deadline }`; undefined or null for neither.
 * @returns {{ taskId: string | null, optionsJson: string | null }}
 */
function submitArguments(taskIdOrOptions, operation) {
  if (taskIdOrOptions === undefined || taskIdOrOptions === null) return { taskId: null, optionsJson: null };
  if (typeof taskIdOrOptions === 'string') return { taskId: requireText(taskIdOrOptions, 'taskId', operation), optionsJson: null };
  if (typeof taskIdOrOptions !== 'object' || Array.isArray(taskIdOrOptions)) {
    throw new TypeError(`${operation}: the last argument must be a task id or an options object { taskId, priority, deadline }, ` +
      `got ${describe(taskIdOrOptions)}`);
  }
  const { taskId, ...schedule } = taskIdOrOptions;
  return {
    taskId: taskId === undefined || taskId === null ? null : requireText(taskId, 'taskId', operation),
    optionsJson: scheduleJson(schedule, operation),
  };
}

let instance = null;

/**
 * The process-wide task manager (a singleton: `new TaskManager() === getTaskManager()`).
 *
 * One worker thread in the library runs every task of the process, one at a
 * time, in submission order; this object submits JS tasks to it and reads the
 * shared registry.
 */
class TaskManager {
  /** @type {ReturnType<import('./lib/native').makeNative>} */
  #native;
  /** @type {ChangeFeed} */
  #feed;
  /** @type {TaskRunner} */
  #runner;

  /**
   * Returns the process-wide manager, loading the library on first use.
   * @param {{ engine?: 'koffi' | 'ffi-napi', libraryPath?: string }} [options]
   *   `engine`: the FFI engine (default: STORYFLOW_TASKS_ENGINE, else koffi);
   *   `libraryPath`: the library file (default: STORYFLOW_TASKS_LIB, the copy
   *   inside the package, the repository's target/release). Both only matter on
   *   first use; later calls that ask for something else throw.
   */
  constructor(options = undefined) {
    if (instance !== null) {
      instance.#checkSameOptions(options);
      return instance;
    }
    const loaded = loadNative(optionsObject(options, 'TaskManager'));
    this.#native = loaded.native;
    /** The FFI engine in use: 'koffi' or 'ffi-napi'. */
    this.engine = loaded.engine;
    /** The library file that was loaded. */
    this.libraryPath = loaded.libraryPath;
    /** The library version, e.g. '0.1.0'. */
    this.version = this.#native.version();
    /**
     * Task events from the library's change feed, for every task of the process
     * (C, Python and JS alike). 'event': `{ seq, task_id, kind, status, revision }`;
     * 'gap': `{ afterSeq, nextSeq }` when events were dropped before they were read.
     * Listeners do not keep the process alive by themselves.
     */
    this.events = new EventEmitter();
    this.#runner = new TaskRunner(this.#native, () => this.#feed.kick(), !isMainThread, (taskId) => ({
      shouldYield: () => this.isYieldRequested(taskId),
      yield: () => this.yieldTask(taskId),
    }));
    this.#feed = new ChangeFeed(this.#native, this.events, this.#runner);
    Object.freeze(this);
    instance = this;
  }

  #checkSameOptions(options) {
    const { engine, libraryPath } = optionsObject(options, 'TaskManager');
    if (engine !== undefined && engine !== this.engine) {
      throw new Error(`storyflow-tasks: the manager already runs on the ${this.engine} engine; it cannot switch to ${JSON.stringify(engine)}`);
    }
    if (libraryPath !== undefined && path.resolve(libraryPath) !== this.libraryPath) {
      throw new Error(`storyflow-tasks: the manager already loaded ${this.libraryPath}; it cannot load ${libraryPath} too`);
    }
  }

  /** Throws the library's error for a failed call. */
  #check(code, operation) {
    if (code === Result.OK) return;
    const name = this.#native.resultName(code);
    const message = this.#native.lastErrorMessage() ?? name;
    throw libraryError(`${operation}: ${message} (${name})`, name, code);
  }

  /**
   * The outcome of a mutation: true if applied; false if the task is unknown
   * or already finished (the original design ignores such updates); throws otherwise.
   */
  #applied(code, operation) {
    if (code === Result.NOT_FOUND || code === Result.INVALID_STATE) return false;
    this.#check(code, operation);
    return true;
  }

  #status(taskId) {
    return parseStatus(this.#native.getTaskStatus(taskId));
  }

  #notFound(taskId, operation) {
    return new StoryflowTasksError(`${operation}: no task ${JSON.stringify(taskId)} in the registry (SFT_ERR_NOT_FOUND)`,
      'SFT_ERR_NOT_FOUND', Result.NOT_FOUND);
  }

  /**
   * Submits a JS task. `fn(taskId, signal)` runs on the main thread when the
   * library's single worker reaches it (higher priority first, FIFO within one
   * priority, with every other task of the process); the worker stays with it
   * until the value it returns (a Promise or not) settles. A throw or rejection
   * fails the task with the error's message. `signal` is aborted when
   * cancellation of the task is requested (also when its deadline passes while
   * it runs).
   * @param {(taskId: string, signal: AbortSignal) => unknown} fn
   * @param {string | { taskId?: string | null, priority?: number | bigint, deadline?: Date | number | null }} [taskIdOrOptions]
   *   the id to use (by default a new UUIDv4), or options: `taskId`; `priority`,
   *   an integer in -2^31..2^31-1, higher first (default 0); `deadline`, a Date
   *   or Unix epoch seconds: a task still pending then never starts (FAILED), a
   *   running one is asked to cancel
   * @returns {string} the task id
   * @throws {TypeError} fn is not a function, or taskId is not a string
   * @throws {InvalidArgumentError} an option the library refuses (named in the message); nothing is queued
   * @throws {StoryflowTasksError} SFT_ERR_DUPLICATE_ID, SFT_ERR_QUEUE_FULL, SFT_ERR_SHUT_DOWN
   */
  submitTask(fn, taskIdOrOptions = undefined) {
    if (typeof fn !== 'function') throw new TypeError(`submitTask: fn must be a function, got ${describe(fn)}`);
    const { taskId, optionsJson } = submitArguments(taskIdOrOptions, 'submitTask');
    // Listeners added right after this call hear the task's events from its submission on.
    this.#feed.anchor();
    try {
      const { code, value } = this.#runner.submit(taskId, fn, optionsJson);
      this.#check(code, 'submitTask');
      return value;
    } finally {
      this.#feed.kick();
    }
  }

  /**
   * Serves the named tasks of `name` in this process, which makes it a worker
   * for the shared queue (the store's: other processes of one SQLite file
   * submit to it too). `fn(payload, context)` runs on this thread, like a JS
   * task, when the worker reaches such a task; it gets the payload given to
   * submitNamed and `context`: `id`, `signal` (aborts when cancellation is
   * requested), `attempt` (1, then 2, ... when an interrupted task is resumed),
   * `checkpoint` (the last one recorded with setCheckpoint, or null; parsed
   * losslessly like the payload), `yields` (how often the task yielded so far),
   * `shouldYield()` (isYieldRequested of the task) and `yield()` (yieldTask of
   * the task: call it, then return). A throw or rejection fails the task (no
   * retry). Registered handlers alone do not keep the process alive.
   * @param {string} name
   * @param {(payload: any, context: { id: string, signal: AbortSignal, attempt: number, checkpoint: any, yields: number,
   *   shouldYield: () => boolean, yield: () => void }) => unknown} fn
   * @throws {TypeError} name is not a string, or fn is not a function
   * @throws {StoryflowTasksError} SFT_ERR_DUPLICATE_ID (name already served in this process), SFT_ERR_INVALID_ARGUMENT, a store error
   */
  registerHandler(name, fn) {
    requireText(name, 'name', 'registerHandler');
    if (typeof fn !== 'function') throw new TypeError(`registerHandler: fn must be a function, got ${describe(fn)}`);
    this.#check(this.#runner.addHandler(name, fn), `registerHandler(${JSON.stringify(name)})`);
  }

  /**
   * The handler names registered with registerHandler on this thread, in order.
   * @returns {string[]}
   */
  handlerNames() {
    return this.#runner.handlerNames();
  }

  /**
   * Queues a named task: whichever process of the store serves `name` runs it
   * with `payload`. A task whose handler no process serves yet stays PENDING
   * until one registers it, without holding up the tasks behind it.
   * @param {string} name the handler name
   * @param {unknown} [payload] any JSON value (BigInt included); undefined: null
   * @param {string | { taskId?: string | null, priority?: number | bigint, deadline?: Date | number | null }} [taskIdOrOptions]
   *   the id to use (by default a new UUIDv4), or options as for submitTask
   * @returns {string} the task id
   * @throws {InvalidArgumentError} a value JSON cannot carry in payload, a NUL in name or taskId, an option the library refuses
   * @throws {StoryflowTasksError} SFT_ERR_DUPLICATE_ID, SFT_ERR_QUEUE_FULL, SFT_ERR_SHUT_DOWN, a store error
   */
  submitNamed(name, payload = undefined, taskIdOrOptions = undefined) {
    const operation = 'submitNamed';
    requireText(name, 'name', operation);
    const payloadJson = payload === undefined ? null : toJson(payload, 'payload', operation);
    const { taskId, optionsJson } = submitArguments(taskIdOrOptions, operation);
    this.#feed.anchor();
    try {
      const { code, value } = this.#native.submitNamed(name, payloadJson, taskId, optionsJson);
      this.#check(code, operation);
      return value;
    } finally {
      this.#feed.kick();
    }
  }

  /**
   * Records the running task's checkpoint: any JSON value (BigInt included),
   * committed before this returns in a durable store, and handed to the
   * handler as `context.checkpoint` when an interrupted task is resumed.
   * @param {string} taskId
   * @param {unknown} value
   * @returns {boolean} true if recorded; false if the task is unknown or finished
   * @throws {InvalidArgumentError} a value JSON cannot carry (undefined, NaN, a function, ...)
   */
  setCheckpoint(taskId, value) {
    const operation = 'setCheckpoint';
    requireText(taskId, 'taskId', operation);
    return this.#applied(this.#native.setCheckpoint(taskId, toJson(value, 'value', operation)), operation);
  }

  /**
   * The task's status (a fresh object with the wire keys: task_id, status,
   * progress, completed_segments, errors, created_at, started_at, completed_at,
   * error, revision, queue_position, cancel_requested, handler, attempt,
   * checkpoint, priority, deadline, yield_requested, yields), or null if unknown.
   * @param {string} taskId
   * @returns {object | null}
   */
  getTaskStatus(taskId) {
    return this.#status(requireText(taskId, 'taskId', 'getTaskStatus'));
  }

  /**
   * Replaces the task's progress with `current` of `total` (percentage computed
   * by the library) plus the keys of `extra`, kept with their JSON types.
   * @param {string} taskId
   * @param {number | bigint} current
   * @param {number | bigint} total
   * @param {Record<string, unknown> | null} [extra] e.g. `{ current_segment_id: 7 }`; any JSON value, BigInt included
   * @returns {boolean} true if applied; false if the task is unknown or finished
   * @throws {InvalidArgumentError} a count outside 0..2^64-1, a value JSON cannot carry in extra, a reserved key
   */
  updateTaskProgress(taskId, current, total, extra = undefined) {
    const operation = 'updateTaskProgress';
    requireText(taskId, 'taskId', operation);
    const code = this.#native.updateTaskProgress(taskId, requireCount(current, 'current', operation),
      requireCount(total, 'total', operation), extraJson(extra, operation));
    return this.#applied(code, operation);
  }

  /**
   * Records a finished audio segment. `segmentId` keeps its type (number or string).
   * @param {string} taskId
   * @param {number | string | bigint} segmentId
   * @param {{ audio_url: string, duration: number }} result duration in seconds, finite and >= 0
   * @returns {boolean} true if recorded; false if the task is unknown or finished
   * @throws {InvalidArgumentError}
   */
  addCompletedSegment(taskId, segmentId, result) {
    const operation = 'addCompletedSegment';
    requireText(taskId, 'taskId', operation);
    if (result === null || typeof result !== 'object') {
      throw new TypeError(`${operation}: result must be an object { audio_url, duration }, got ${describe(result)}`);
    }
    const record = `{"segment_id":${toJson(segmentId, 'segmentId', operation)},` +
      `"audio_url":${toJson(result.audio_url, 'result.audio_url', operation)},` +
      `"duration":${toJson(result.duration, 'result.duration', operation)}}`;
    return this.#applied(this.#native.addCompletedSegment(taskId, record), operation);
  }

  /**
   * Records a segment that failed. `segmentId` keeps its type (number or string).
   * @param {string} taskId
   * @param {number | string | bigint} segmentId
   * @param {string} message
   * @returns {boolean} true if recorded; false if the task is unknown or finished
   * @throws {InvalidArgumentError}
   */
  addError(taskId, segmentId, message) {
    const operation = 'addError';
    requireText(taskId, 'taskId', operation);
    const record = `{"segment_id":${toJson(segmentId, 'segmentId', operation)},"error":${toJson(message, 'message', operation)}}`;
    return this.#applied(this.#native.addError(taskId, record), operation);
  }

  /**
   * Whether cancellation of the task was requested (a running task may poll it,
   * or use the AbortSignal it was given).
   * @param {string} taskId
   * @returns {boolean}
   */
  isCancelRequested(taskId) {
    const { code, value } = this.#native.isCancelRequested(requireText(taskId, 'taskId', 'isCancelRequested'));
    this.#check(code, 'isCancelRequested');
    return value;
  }

  /**
   * Whether the running task should yield: a task of a higher priority waits
   * that a worker can run now. Cheap enough to poll between sentences, like
   * isCancelRequested; false for a task that is not PROCESSING.
   * @param {string} taskId
   * @returns {boolean}
   * @throws {StoryflowTasksError} SFT_ERR_NOT_FOUND
   */
  isYieldRequested(taskId) {
    const { code, value } = this.#native.isYieldRequested(requireText(taskId, 'taskId', 'isYieldRequested'));
    this.#check(code, 'isYieldRequested');
    return value;
  }

  /**
   * Makes the running task's end a yield: call it, then return (whatever the
   * task then returns or throws, its run counts as a yield). The task goes back
   * to PENDING at the head of its priority with its segments, errors, progress
   * and checkpoint kept and `yields` one more, and runs again (the same JS
   * function, or its handler with the same payload and its checkpoint) once the
   * tasks of higher priority have run. A task may yield without being asked;
   * cancellation wins over a yield.
   * @param {string} taskId
   * @throws {StoryflowTasksError} SFT_ERR_NOT_FOUND, SFT_ERR_INVALID_STATE (the task is not PROCESSING)
   */
  yieldTask(taskId) {
    requireText(taskId, 'taskId', 'yieldTask');
    this.#check(this.#native.yieldTask(taskId), 'yieldTask');
    this.#runner.noteYield(taskId);
  }

  /**
   * Cancels a task: a PENDING one becomes CANCELLED at once and never runs; a
   * PROCESSING one gets a cancellation request (`cancel_requested: true`, and a
   * JS task's signal is aborted) and ends CANCELLED when it returns.
   * @param {string} taskId
   * @returns {Promise<object>} the status right after the request
   * @throws {StoryflowTasksError} (rejects) SFT_ERR_NOT_FOUND, SFT_ERR_INVALID_STATE (already finished)
   */
  async cancel(taskId) {
    requireText(taskId, 'taskId', 'cancel');
    this.#check(this.#native.cancelTask(taskId), 'cancel');
    const status = this.#status(taskId);
    if (status !== null && status.status === TASK_CANCELLED) this.#runner.forget(taskId);
    else if (status !== null && status.cancel_requested) this.#runner.abort(taskId);
    return status;
  }

  /**
   * Resolves with the task's final status once it is COMPLETED, FAILED or
   * CANCELLED. Never blocks the event loop nor holds a thread per call: every
   * wait is served by the one change-feed poller.
   * @param {string} taskId
   * @param {{ timeout?: number }} [options] timeout in ms (default: none)
   * @returns {Promise<object>}
   * @throws {StoryflowTasksError} (rejects) SFT_ERR_NOT_FOUND, SFT_ERR_TIMEOUT
   */
  wait(taskId, options = undefined) {
    return new Promise((resolve, reject) => {
      requireText(taskId, 'taskId', 'wait');
      const limit = timeoutMs(optionsObject(options, 'wait').timeout, 'wait');
      this.#feed.anchor();
      try {
        const status = this.#status(taskId);
        if (status === null) throw this.#notFound(taskId, 'wait');
        if (isFinished(status)) resolve(status);
        else this.#feed.addWaiter(taskId, resolve, reject, limit);
      } finally {
        this.#feed.kick();
      }
    });
  }

  /**
   * An async iterator over the task's status: the current one, then the status
   * after each change (changes made while the consumer is busy are coalesced
   * into the newest), ending after the final one.
   * @param {string} taskId
   * @returns {AsyncIterableIterator<object>}
   * @throws {StoryflowTasksError} SFT_ERR_NOT_FOUND
   */
  watch(taskId) {
    requireText(taskId, 'taskId', 'watch');
    this.#feed.anchor();
    try {
      const status = this.#status(taskId);
      if (status === null) throw this.#notFound(taskId, 'watch');
      return new TaskWatch(this.#feed, taskId, status);
    } finally {
      this.#feed.kick();
    }
  }

  /**
   * The statuses of every task in the registry, in submission order, optionally
   * only those in one state. A Promise like the other lifecycle calls; the
   * answer is computed at once, so `listTasksSync` gives it without one.
   * @param {string} [status] one of the TASK_* constants
   * @returns {Promise<object[]>}
   * @throws {StoryflowTasksError} rejects with SFT_ERR_INVALID_ARGUMENT (unknown state)
   */
  listTasks(status = undefined) {
    return settleNow(() => this.listTasksSync(status));
  }

  /**
   * As `listTasks`, returning the array directly.
   * @param {string} [status] one of the TASK_* constants
   * @returns {object[]}
   * @throws {StoryflowTasksError} SFT_ERR_INVALID_ARGUMENT (unknown state)
   */
  listTasksSync(status = undefined) {
    const filter = status === undefined || status === null ? null : requireText(status, 'status', 'listTasks');
    const { code, value } = this.#native.listTasks(filter);
    this.#check(code, 'listTasks');
    return parseJson(value);
  }

  /**
   * Statistics: counts (per state), queue_depth, retained, submitted_total,
   * completed_total, failed_total, cancelled_total, mean_run_secs, max_run_secs,
   * pending_by_priority (`[{ priority, pending }]`, highest first, only
   * priorities with pending tasks).
   * @returns {Promise<object>}
   */
  stats() {
    return settleNow(() => this.statsSync());
  }

  /**
   * As `stats`, returning the object directly.
   * @returns {object}
   */
  statsSync() {
    const text = this.#native.getStats();
    if (text === null) {
      // NULL: the statistics could not be read (the store could not be opened); the library says why.
      throw new StoryflowTasksError(`stats: ${this.#native.lastErrorMessage() ?? 'the library returned no statistics'}`, null, null);
    }
    return parseJson(text);
  }

  /**
   * Applies settings before the first call that opens the store (a submit, a
   * registration, a status read, a wait, list, stats or events); a change
   * later rejects with SFT_ERR_INVALID_STATE. Keys: store ('memory', the
   * default, or 'sqlite:<path>'; else STORYFLOW_TASKS_STORE), max_attempts,
   * cleanup_threshold_secs, max_pending_tasks, max_retained_finished,
   * max_task_id_bytes, max_message_bytes, max_url_bytes, max_extra_json_bytes,
   * max_segments_per_task, max_errors_per_task, event_buffer_capacity.
   * @param {Record<string, number | string>} config
   * @returns {Promise<void>}
   * @throws {StoryflowTasksError} rejects with SFT_ERR_INVALID_ARGUMENT (unknown key, bad value), SFT_ERR_INVALID_STATE
   */
  configure(config) {
    return settleNow(() => this.configureSync(config));
  }

  /**
   * As `configure`, throwing instead of rejecting.
   * @param {Record<string, number | string>} config
   * @throws {TypeError|StoryflowTasksError}
   */
  configureSync(config) {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new TypeError(`configure: config must be an object of settings, got ${describe(config)}`);
    }
    this.#check(this.#native.configure(toJson(config, 'config', 'configure')), 'configure');
  }

  /**
   * The configuration in force, with every key.
   * @returns {Record<string, number | string>}
   */
  getConfig() {
    return parseJson(this.#native.getConfig());
  }

  /** The seq of the newest change-feed event (0 before the first). */
  lastEventSeq() {
    return this.#native.lastEventSeq();
  }

  /**
   * Shuts the process-wide manager down, for every caller in the process and
   * for good: later submits throw SFT_ERR_SHUT_DOWN, pending tasks become
   * CANCELLED, the running task is asked to cancel and waited for. Reads and
   * waits keep working. The wait runs off the main thread, so a running JS
   * task can still settle.
   * @param {{ timeout?: number }} [options] how long to wait for the running task, ms (default: no limit)
   * @returns {Promise<void>}
   * @throws {StoryflowTasksError} (rejects) SFT_ERR_TIMEOUT if the running task did not finish in time
   */
  async shutdown(options = undefined) {
    const limit = timeoutMs(optionsObject(options, 'shutdown').timeout, 'shutdown');
    // The library's shutdown asks the running task to stop before it waits; with a durable
    // store that request stays in this process (the task resumes elsewhere), so no event
    // brings it: do that part now, here, and abort what it asked to stop, then wait.
    this.#native.shutdownNow();
    this.#runner.abortRequested();
    const code = await new Promise((resolve) => this.#native.shutdownAsync(limit ?? WAIT_FOREVER, resolve));
    this.#feed.kick();
    if (code === Result.OK) return;
    const name = this.#native.resultName(code);
    const reason = code === Result.TIMEOUT ? `the running task did not finish within ${limit} ms` : 'the library reported an error';
    throw new StoryflowTasksError(`shutdown: ${reason} (${name})`, name, code);
  }
}

/**
 * The process-wide task manager (the same object as `new TaskManager()`).
 * @param {{ engine?: 'koffi' | 'ffi-napi', libraryPath?: string }} [options] see the TaskManager constructor
 * @returns {TaskManager}
 */
function getTaskManager(options = undefined) {
  return new TaskManager(options);
}

module.exports = {
  TaskManager,
  getTaskManager,
  StoryflowTasksError,
  InvalidArgumentError,
  TASK_PENDING,
  TASK_PROCESSING,
  TASK_COMPLETED,
  TASK_FAILED,
  TASK_CANCELLED,
  ENGINES: Object.keys(ENGINES),
  DEFAULT_ENGINE,
};
