'use strict';
// One interface over both engines: every call returns plain JS values, and every
// string the library hands out is decoded and then freed with sft_string_free
// right here, so nothing above this file ever sees a library pointer.

/** Result codes of the C API (SftResult). */
const Result = Object.freeze({
  OK: 0,
  NOT_FOUND: 1,
  INVALID_ARGUMENT: 2,
  DUPLICATE_ID: 3,
  QUEUE_FULL: 4,
  SHUT_DOWN: 5,
  INVALID_STATE: 6,
  TIMEOUT: 7,
  INTERNAL: 8,
});

/** `timeout_ms` meaning "no limit" (SFT_WAIT_FOREVER). */
const WAIT_FOREVER = -1;

/**
 * @typedef {object} EngineHandle what an engine module's open() returns
 * @property {Record<string, Function & {async: Function}>} fns the C functions by name
 * @property {() => any} newOutPointer storage for a `char **` out argument
 * @property {(out: any) => any} readOutPointer the pointer stored there
 * @property {() => any} newOutBool storage for a `bool *` out argument
 * @property {(out: any) => boolean} readOutBool the value stored there
 * @property {() => any} newOutUint64 storage for a `uint64_t *` out argument
 * @property {(out: any) => bigint} readOutUint64 the value stored there
 * @property {(pointer: any) => boolean} isNull whether a pointer is NULL
 * @property {(pointer: any) => string} readString decodes a NUL-terminated UTF-8 string
 * @property {(value: number|bigint) => any} asUint64 a uint64_t argument in the engine's form
 */

/**
 * Wraps an engine's raw functions into calls that take and return JS values.
 * @param {string} engineName 'koffi' or 'ffi-napi'
 * @param {EngineHandle} handle the loaded library
 */
function makeNative(engineName, handle) {
  const { fns, newOutPointer, readOutPointer, isNull, readString, asUint64 } = handle;

  /** Decodes a library string and frees it; NULL gives null. */
  function takeString(pointer) {
    if (isNull(pointer)) return null;
    try {
      return readString(pointer);
    } finally {
      fns.sft_string_free(pointer);
    }
  }

  /** Calls `fn(...args, out)` and returns `{ code, value }`, value the out string or null. */
  function callWithOutString(fn, ...args) {
    const out = newOutPointer();
    const code = fn(...args, out);
    return { code, value: takeString(readOutPointer(out)) };
  }

  return {
    engine: engineName,
    version: () => fns.sft_version(),
    resultName: (code) => fns.sft_result_name(code),
    lastErrorMessage: () => takeString(fns.sft_last_error_message()),
    runnerRegister() {
      const out = handle.newOutUint64();
      const code = fns.sft_runner_register(out);
      return { code, value: handle.readOutUint64(out) };
    },
    submitRunnerTask: (runner, taskId, optionsJson) =>
      callWithOutString(fns.sft_submit_runner_task_with_options, asUint64(runner), taskId, optionsJson),
    /** sft_runner_next on a libuv thread: `callback(code, assignmentJson)` runs on the main thread. */
    runnerNextAsync(runner, timeoutMs, callback) {
      const out = newOutPointer();
      fns.sft_runner_next.async(asUint64(runner), timeoutMs, out, (error, code) => {
        const json = takeString(readOutPointer(out));
        setImmediate(callback, error ? Result.INTERNAL : code, error ? null : json);
      });
    },
    runnerFinish: (runner, taskId, code, messageJson) => fns.sft_runner_finish(asUint64(runner), taskId, code, messageJson),
    runnerAddHandler: (runner, name) => fns.sft_runner_add_handler(asUint64(runner), name),
    submitNamed: (handler, payloadJson, taskId, optionsJson) =>
      callWithOutString(fns.sft_submit_named_with_options, handler, payloadJson, taskId, optionsJson),
    setCheckpoint: (taskId, checkpointJson) => fns.sft_set_checkpoint(taskId, checkpointJson),
    runnerClose: (runner, timeoutMs) => fns.sft_runner_close(asUint64(runner), timeoutMs),
    getTaskStatus: (taskId) => takeString(fns.sft_get_task_status(taskId)),
    updateTaskProgress: (taskId, current, total, extraJson) =>
      fns.sft_update_task_progress(taskId, asUint64(current), asUint64(total), extraJson),
    addCompletedSegment: (taskId, segmentJson) => fns.sft_add_completed_segment_from_json(taskId, segmentJson),
    addError: (taskId, errorJson) => fns.sft_add_error_from_json(taskId, errorJson),
    cancelTask: (taskId) => fns.sft_cancel_task(taskId),
    isCancelRequested(taskId) {
      const out = handle.newOutBool();
      const code = fns.sft_is_cancel_requested(taskId, out);
      return { code, value: handle.readOutBool(out) };
    },
    isYieldRequested(taskId) {
      const out = handle.newOutBool();
      const code = fns.sft_is_yield_requested(taskId, out);
      return { code, value: handle.readOutBool(out) };
    },
    yieldTask: (taskId) => fns.sft_yield_task(taskId),
    lastEventSeq: () => Number(fns.sft_last_event_seq()),
    /**
     * The change feed, as ONE native call on a libuv thread: `callback(code, json)`
     * runs on the main thread when events arrived or the timeout passed.
     *
     * Callbacks of async calls are re-queued with setImmediate: code run inside
     * ffi-napi's completion callback (and the ticks and microtasks it drains)
     * must not throw, or the C++ side aborts the process.
     */
    waitEventsAsync(afterSeq, maxEvents, timeoutMs, callback) {
      const out = newOutPointer();
      fns.sft_wait_events.async(asUint64(afterSeq), maxEvents, timeoutMs, out, (error, code) => {
        const json = takeString(readOutPointer(out));
        setImmediate(callback, error ? Result.INTERNAL : code, error ? null : json);
      });
    },
    listTasks: (statusFilter) => callWithOutString(fns.sft_list_tasks, statusFilter),
    getStats: () => takeString(fns.sft_get_stats()),
    configure: (configJson) => fns.sft_configure(configJson),
    getConfig: () => takeString(fns.sft_get_config()),
    /** sft_shutdown without waiting (timeout 0): everything it does but the wait, on this thread. */
    shutdownNow: () => fns.sft_shutdown(0),
    /** sft_shutdown on a libuv thread: it waits for the running task, which may be a JS task. */
    shutdownAsync(timeoutMs, callback) {
      fns.sft_shutdown.async(timeoutMs, (error, code) => setImmediate(callback, error ? Result.INTERNAL : code));
    },
  };
}

module.exports = { makeNative, Result, WAIT_FOREVER };
