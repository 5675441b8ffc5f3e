'use strict';
// JS tasks and named handlers over the library's runner API: this thread
// registers as a runner, submits its tasks to it and tells it which handler
// names it serves, and is handed each task when the library's worker reaches it
// (FIFO with every other task). The function runs on this thread's event loop;
// the worker never calls into V8.
//
// One native sft_runner_next call is in flight at a time, on one libuv thread,
// and only while none of ours runs (the worker hands over one task at a time,
// so there is nothing to ask for meanwhile) and there is something to ask for:
// a JS task waiting its turn, or a registered handler. While a JS task waits,
// each call is issued at once and so holds the event loop: the process stays
// alive. Handlers alone do not hold it (like event listeners): between calls
// the next one waits on an unref'd timer, so a process with nothing else to do
// ends; the worker command holds its process itself. A running task's own work
// (timers, I/O) is what keeps the process alive while it runs, as for any Promise.
//
// A task that yielded (tm.yieldTask, or a handler's context.yield(), then it
// returned) goes back to the library's queue: a JS task's function is kept, and
// the library hands the same task id over again later, to run it again.

const { Result } = require('./native');
const { parseJson } = require('./json');
const { isFinished, parseStatus } = require('./status');

/** How long one native sft_runner_next lasts at most, so that the loop is never blocked and polling can stop. */
const NEXT_TIMEOUT_MS = 200;

/** The text a failed JS task leaves in its status `error` (the library shortens an over-long one). */
function failureMessage(error) {
  let text;
  try {
    text = error instanceof Error ? error.message || String(error) : String(error);
  } catch {
    text = '';
  }
  return text || 'the task failed without a message';
}

/** The reason a JS task's signal carries when its cancellation is requested. */
function cancellationReason(taskId) {
  return new Error(`cancellation of task ${JSON.stringify(taskId)} was requested`);
}

class TaskRunner {
  #native;
  #onChange;
  /** The runner id (a bigint), registered on the first submit. */
  #runner = null;
  /** JS tasks submitted and not handed over yet: id -> fn. */
  #functions = new Map();
  /** Named handlers this runner serves: name -> fn(payload, context). */
  #handlers = new Map();
  /** Tasks running: id -> { controller, fn }: the AbortController aborted when cancellation is requested, and a JS task's function. */
  #running = new Map();
  /** The running tasks that yielded: their finish puts a JS task's function back for the next hand-over. */
  #yielded = new Set();
  /** (taskId) => { shouldYield, yield }: what a handler's context offers to yield with. */
  #yieldControls;
  /** An sft_runner_next call is in flight, or its unref'd timer is set. */
  #polling = false;
  /** The timer of a lazy or retried poll, while set. */
  #timer = null;
  /** The manager shut down: nothing will be handed over any more. */
  #shutDown = false;
  #closeAtExit;

  /**
   * @param {ReturnType<import('./native').makeNative>} native
   * @param {() => void} onChange called when a task starts or settles (the change feed adjusts its hold on the process)
   * @param {boolean} closeAtExit close the runner when this thread exits: a worker thread's
   *   tasks then end (queued ones CANCELLED, a running one FAILED) instead of holding the
   *   process-wide worker; the main thread's exit ends the process and the library with it
   * @param {(taskId: string) => { shouldYield: () => boolean, yield: () => void }} yieldControls
   *   the yield calls of a handler's context, bound to its task
   */
  constructor(native, onChange, closeAtExit, yieldControls) {
    this.#native = native;
    this.#onChange = onChange;
    this.#closeAtExit = closeAtExit;
    this.#yieldControls = yieldControls;
  }

  /** How many of this thread's JS tasks run now (0 or 1). */
  get runningCount() {
    return this.#running.size;
  }

  /** How many of this thread's JS tasks wait their turn. */
  get queuedCount() {
    return this.#functions.size;
  }

  /** The ids of the JS tasks running now. */
  runningIds() {
    return [...this.#running.keys()];
  }

  /** The handler names this runner serves, in registration order. */
  handlerNames() {
    return [...this.#handlers.keys()];
  }

  /** Registers this thread as a runner on first use; returns the failure code, or OK. */
  #ensureRunner() {
    if (this.#runner !== null) return Result.OK;
    const { code, value } = this.#native.runnerRegister();
    if (code !== Result.OK) return code;
    this.#runner = value;
    if (this.#closeAtExit) process.on('exit', () => this.#native.runnerClose(this.#runner, 0));
    return Result.OK;
  }

  /**
   * Serves the named tasks of `name` with `fn(payload, { id, signal, attempt, checkpoint, yields, shouldYield, yield })`.
   * The library refuses a name already served in this process (SFT_ERR_DUPLICATE_ID).
   * @returns {number} the result code
   */
  addHandler(name, fn) {
    const registered = this.#ensureRunner();
    if (registered !== Result.OK) return registered;
    const code = this.#native.runnerAddHandler(this.#runner, name);
    if (code === Result.OK) {
      this.#handlers.set(name, fn);
      this.#poll();
    }
    return code;
  }

  /**
   * Submits `fn` as a runner task (taskId null: a new UUIDv4) with its submit options (JSON text, or null).
   * @returns {{ code: number, value: string | null }}
   */
  submit(taskId, fn, optionsJson) {
    const registered = this.#ensureRunner();
    if (registered !== Result.OK) return { code: registered, value: null };
    const submitted = this.#native.submitRunnerTask(this.#runner, taskId, optionsJson);
    if (submitted.code === Result.OK) {
      this.#functions.set(submitted.value, fn);
      this.#poll();
    }
    return submitted;
  }

  /** Drops the function of a task cancelled before it was handed over. */
  forget(taskId) {
    this.#functions.delete(taskId);
  }

  /**
   * Records that a running task of this runner yielded (the library accepted it), so that its finish keeps its function.
   * A JS task may be PROCESSING already and its hand-over not have reached this thread yet: its function is still queued.
   */
  noteYield(taskId) {
    if (this.#running.has(taskId) || this.#functions.has(taskId)) this.#yielded.add(taskId);
  }

  /** Aborts the signals of the running JS tasks and handlers the library asked to stop. */
  abortRequested() {
    for (const taskId of this.#running.keys()) {
      if (this.#native.isCancelRequested(taskId).value) this.abort(taskId);
    }
  }

  /** Aborts the signal of a running JS task or handler. */
  abort(taskId) {
    this.#running.get(taskId)?.controller.abort(cancellationReason(taskId));
  }

  /** Asks for the next hand-over if there is something to ask for: at once while a JS task waits, else lazily. */
  #poll() {
    // A JS task submitted while the lazy timer is set: that timer now holds the process.
    if (this.#timer !== null && this.#functions.size > 0) this.#timer.ref();
    if (this.#polling || this.#shutDown || this.#running.size > 0) return;
    if (this.#functions.size > 0) this.#next();
    else if (this.#handlers.size > 0) this.#later(0);
  }

  /** Polls after `delayMs` on a timer that holds the process only while a JS task waits its turn. */
  #later(delayMs) {
    this.#polling = true;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#polling = false;
      if (!this.#shutDown && this.#running.size === 0) this.#next();
    }, delayMs);
    if (this.#functions.size === 0) this.#timer.unref();
  }

  #next() {
    this.#polling = true;
    this.#native.runnerNextAsync(this.#runner, NEXT_TIMEOUT_MS, (code, json) => {
      this.#polling = false;
      if (code === Result.OK) {
        this.#take(parseJson(json));
      } else if (code === Result.SHUT_DOWN) {
        // The manager shut down and released every task it had for us.
        this.#functions.clear();
        this.#shutDown = true;
      } else if (code !== Result.TIMEOUT) {
        process.emitWarning(`storyflow-tasks: waiting for the next task failed with ${this.#native.resultName(code)}; retrying`);
        this.#later(NEXT_TIMEOUT_MS);
        return;
      }
      this.#poll();
    });
  }

  /**
   * Runs a task handed over (from a microtask, outside the native callback), or
   * forgets one released unrun. `handler` names a named task's handler; null
   * for a JS task, whose function this runner kept.
   */
  #take({ task_id: taskId, run, handler, payload, attempt, checkpoint, yields }) {
    const fn = this.#functions.get(taskId);
    this.#functions.delete(taskId);
    if (!run) {
      this.#yielded.delete(taskId);
      return;
    }
    const controller = new AbortController();
    this.#running.set(taskId, { controller, fn });
    this.#onChange();
    Promise.resolve()
      .then(() => {
        // Cancelled between the worker handing it over and now: the function has
        // not begun, so it never does (as for a pending task).
        if (this.#native.isCancelRequested(taskId).value) this.abort(taskId);
        if (handler !== null && handler !== undefined) {
          const handlerFn = this.#handlers.get(handler);
          if (handlerFn === undefined) throw new Error(`storyflow-tasks: this runner serves no handler named ${JSON.stringify(handler)}`);
          const context = { id: taskId, signal: controller.signal, attempt, checkpoint, yields, ...this.#yieldControls(taskId) };
          return controller.signal.aborted ? undefined : handlerFn(payload, context);
        }
        if (fn === undefined) throw new Error('storyflow-tasks: this runner holds no function for the task');
        return controller.signal.aborted ? undefined : fn(taskId, controller.signal);
      })
      .then(() => this.#finish(taskId, null), (error) => this.#finish(taskId, failureMessage(error)));
  }

  /**
   * Hands a task's outcome to the library, which then moves the worker on. A
   * yielded JS task's function goes back among the queued ones first: the
   * library hands the task over again once the tasks of higher priority ran.
   */
  #finish(taskId, message) {
    const { fn } = this.#running.get(taskId);
    this.#running.delete(taskId);
    const kept = this.#yielded.delete(taskId) && fn !== undefined;
    if (kept) this.#functions.set(taskId, fn);
    const code = this.#native.runnerFinish(this.#runner, taskId, message === null ? 0 : 1,
      message === null ? null : JSON.stringify(message));
    if (code !== Result.OK) {
      process.emitWarning(`storyflow-tasks: finishing task ${JSON.stringify(taskId)} failed: ` +
        `${this.#native.lastErrorMessage() ?? ''} (${this.#native.resultName(code)})`);
    }
    // Cancellation (or a passed deadline) wins over a yield: then the task ended and never comes back.
    if (kept) {
      const status = parseStatus(this.#native.getTaskStatus(taskId));
      if (status === null || isFinished(status)) this.#functions.delete(taskId);
    }
    this.#onChange();
    this.#poll();
  }
}

module.exports = { TaskRunner, NEXT_TIMEOUT_MS };
