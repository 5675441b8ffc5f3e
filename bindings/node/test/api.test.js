'use strict';
// The package's fixed surface: submit, status, progress, segments, errors,
// JS task semantics, and the errors bad input gets.

const test = require('node:test');
const assert = require('node:assert/strict');
const { isMainThread } = require('node:worker_threads');
const sft = require('..');
const { ENGINE, deferred, submitHeldTask } = require('./helpers');

const { getTaskManager, TaskManager, StoryflowTasksError, InvalidArgumentError } = sft;
const tm = getTaskManager();

/** Asserts that `fn` throws a StoryflowTasksError with this result name (an InvalidArgumentError for SFT_ERR_INVALID_ARGUMENT). */
function assertLibraryError(fn, code) {
  assert.throws(fn, (error) => error instanceof StoryflowTasksError && error.code === code && error.message.includes(code) &&
    (error instanceof InvalidArgumentError) === (code === 'SFT_ERR_INVALID_ARGUMENT'), `expected a StoryflowTasksError ${code}`);
}

test('runs on the engine this run asked for', () => {
  assert.equal(tm.engine, ENGINE);
  assert.match(tm.version, /^\d+\.\d+\.\d+/);
});

test('the manager is a singleton', () => {
  assert.equal(new TaskManager(), tm);
  assert.equal(getTaskManager(), tm);
  assert.equal(getTaskManager({ engine: ENGINE }), tm);
  assert.throws(() => getTaskManager({ engine: ENGINE === 'koffi' ? 'ffi-napi' : 'koffi' }), /cannot switch/);
});

test('the TASK_ constants are the wire state names', () => {
  assert.deepEqual([sft.TASK_PENDING, sft.TASK_PROCESSING, sft.TASK_COMPLETED, sft.TASK_FAILED, sft.TASK_CANCELLED],
    ['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED']);
});

test('a submitted task gets a UUID, the wire keys, and completes', async () => {
  const id = tm.submitTask(() => {});
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const status = tm.getTaskStatus(id);
  assert.deepEqual(Object.keys(status).sort(), ['attempt', 'cancel_requested', 'checkpoint', 'completed_at', 'completed_segments',
    'created_at', 'deadline', 'error', 'errors', 'handler', 'priority', 'progress', 'queue_position', 'revision', 'started_at', 'status',
    'task_id', 'yield_requested', 'yields'].sort());
  assert.equal(status.handler, null);
  assert.equal(status.task_id, id);
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_COMPLETED);
  assert.equal(final.error, null);
  assert.ok(final.completed_at >= final.started_at && final.started_at >= final.created_at);
});

test('getTaskStatus of an unknown id is null, and each call gives a fresh object', async () => {
  assert.equal(tm.getTaskStatus('no-such-task'), null);
  assert.equal(tm.getTaskStatus(''), null);
  const id = tm.submitTask(() => {});
  const first = tm.getTaskStatus(id);
  first.status = 'MUTATED';
  assert.notEqual(tm.getTaskStatus(id).status, 'MUTATED');
  await tm.wait(id);
});

test('a given task id round-trips exactly, quotes and non-ASCII included', async () => {
  const id = `tâche "ü" \\ ${Date.now()} 🎧\n`;
  assert.equal(tm.submitTask(() => {}, id), id);
  assert.equal((await tm.wait(id)).task_id, id);
});

test('a JS task runs on the main thread, later than submitTask, with its id and a signal', async () => {
  let submitted = false;
  const seen = deferred();
  const id = tm.submitTask((taskId, signal) => {
    seen.resolve({ submitted, taskId, mainThread: isMainThread, signal, status: tm.getTaskStatus(taskId).status });
  });
  submitted = true;
  const inside = await seen.promise;
  assert.equal(inside.submitted, true, 'fn was called inside submitTask');
  assert.equal(inside.taskId, id);
  assert.equal(inside.mainThread, true);
  assert.ok(inside.signal instanceof AbortSignal);
  assert.equal(inside.signal.aborted, false);
  assert.equal(inside.status, sft.TASK_PROCESSING);
  await tm.wait(id);
});

test('tasks run one at a time in FIFO order, each holding the worker until its Promise settles', async () => {
  const held = submitHeldTask(tm);
  const order = [];
  const ids = [1, 2, 3, 4, 5].map((n) => tm.submitTask(async () => {
    order.push(n);
    await new Promise((resolve) => setImmediate(resolve));
  }));
  await held.started;
  // The worker stays with the held task: the event loop turns, the others wait.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(tm.getTaskStatus(held.id).status, sft.TASK_PROCESSING);
  assert.deepEqual(ids.map((id) => tm.getTaskStatus(id).status), Array(5).fill(sft.TASK_PENDING));
  assert.deepEqual(ids.map((id) => tm.getTaskStatus(id).queue_position), [0, 1, 2, 3, 4]);
  assert.deepEqual(order, []);
  held.release();
  const finals = await Promise.all(ids.map((id) => tm.wait(id)));
  assert.deepEqual(order, [1, 2, 3, 4, 5]);
  const heldFinal = tm.getTaskStatus(held.id);
  assert.equal(heldFinal.status, sft.TASK_COMPLETED);
  assert.ok(finals[0].started_at >= heldFinal.completed_at);
  for (let i = 1; i < finals.length; i++) assert.ok(finals[i].started_at >= finals[i - 1].completed_at);
});

test('a sync function that returns a value completes the task', async () => {
  const id = tm.submitTask(() => 42);
  assert.equal((await tm.wait(id)).status, sft.TASK_COMPLETED);
});

test('a throw fails the task with the error message', async () => {
  const id = tm.submitTask(() => {
    throw new Error('voice model missing');
  });
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_FAILED);
  assert.equal(final.error, 'voice model missing');
});

test('a rejection fails the task with the rejection message', async () => {
  const id = tm.submitTask(async () => {
    await null;
    throw new RangeError('sample rate "44.1k" unsupported');
  });
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_FAILED);
  assert.equal(final.error, 'sample rate "44.1k" unsupported');
});

test('a non-Error rejection or an empty message still leaves a readable error', async () => {
  const byString = tm.submitTask(() => Promise.reject('plain string reason'));
  const byEmpty = tm.submitTask(() => {
    throw new TypeError('');
  });
  const byNul = tm.submitTask(() => {
    throw new Error('before\0after');
  });
  assert.equal((await tm.wait(byString)).error, 'plain string reason');
  assert.equal((await tm.wait(byEmpty)).error, 'TypeError');
  assert.equal((await tm.wait(byNul)).error, 'before\0after');
});

test('an error message over max_message_bytes is shortened by the library, says so, and the task still fails', async () => {
  const limit = tm.getConfig().max_message_bytes;
  const id = tm.submitTask(() => {
    throw new Error('é'.repeat(limit));
  });
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_FAILED);
  assert.ok(Buffer.byteLength(final.error) <= limit);
  assert.ok(final.error.startsWith('éé'));
  assert.ok(final.error.endsWith(` [shortened from ${2 * limit} bytes]`), final.error.slice(-40));
});

test('progress: percentage is floored and clamped, total 0 gives 0, extra keys keep their JSON types', async () => {
  const held = submitHeldTask(tm);
  const extra = { current_segment_id: 7, label: 'chapter "2"', ratio: 0.5, flag: true, nothing: null, list: [1, 'a'], nested: { k: [false] } };
  tm.updateTaskProgress(held.id, 1, 3, extra);
  assert.deepEqual(tm.getTaskStatus(held.id).progress, { current: 1, total: 3, percentage: 33, ...extra });
  tm.updateTaskProgress(held.id, 9, 4);
  assert.deepEqual(tm.getTaskStatus(held.id).progress, { current: 9, total: 4, percentage: 100 });
  tm.updateTaskProgress(held.id, 0, 0, null);
  assert.deepEqual(tm.getTaskStatus(held.id).progress, { current: 0, total: 0, percentage: 0 });
  tm.updateTaskProgress(held.id, 2n, 8n, { current_segment_id: 'intro' });
  assert.deepEqual(tm.getTaskStatus(held.id).progress, { current: 2, total: 8, percentage: 25, current_segment_id: 'intro' });
  held.release();
  await tm.wait(held.id);
});

test('segments and segment errors keep the segment id type (number vs string)', async () => {
  const held = submitHeldTask(tm);
  const id = held.id;
  tm.addCompletedSegment(id, 7, { audio_url: '/media/audio/7.wav', duration: 2.5 });
  tm.addCompletedSegment(id, '7', { audio_url: '/media/audio/7b.wav', duration: 0 });
  tm.addCompletedSegment(id, -3n, { audio_url: '', duration: 1e-3 });
  tm.addError(id, 3, 'voice not found');
  tm.addError(id, 'intro', 'timeout "TTS"');
  const status = tm.getTaskStatus(id);
  assert.deepEqual(status.completed_segments, [
    { segment_id: 7, audio_url: '/media/audio/7.wav', duration: 2.5 },
    { segment_id: '7', audio_url: '/media/audio/7b.wav', duration: 0 },
    { segment_id: -3, audio_url: '', duration: 1e-3 },
  ]);
  assert.equal(typeof status.completed_segments[0].segment_id, 'number');
  assert.equal(typeof status.completed_segments[1].segment_id, 'string');
  assert.deepEqual(status.errors, [{ segment_id: 3, error: 'voice not found' }, { segment_id: 'intro', error: 'timeout "TTS"' }]);
  held.release();
  await tm.wait(id);
});

test('a duplicate id is refused, and the existing task and the new function are untouched', async () => {
  const held = submitHeldTask(tm, `dup-${process.pid}-${Date.now()}`);
  await held.started; // running and held: its status changes no more until released
  const before = tm.getTaskStatus(held.id);
  let duplicateRan = false;
  assertLibraryError(() => tm.submitTask(() => {
    duplicateRan = true;
  }, held.id), 'SFT_ERR_DUPLICATE_ID');
  assert.deepEqual(tm.getTaskStatus(held.id), before);
  held.release();
  await tm.wait(held.id);
  // Another task behind it proves the worker moved past the point where the duplicate would have run.
  await tm.wait(tm.submitTask(() => {}));
  assert.equal(duplicateRan, false);
});

test('bad input to submitTask throws and submits nothing', () => {
  const before = tm.statsSync().submitted_total;
  assert.throws(() => tm.submitTask('not a function'), TypeError);
  assert.throws(() => tm.submitTask(undefined), TypeError);
  assert.throws(() => tm.submitTask(() => {}, 42), TypeError);
  assert.throws(() => tm.submitTask(() => {}, 'nul\0inside'), /NUL/);
  assert.throws(() => tm.submitTask(() => {}, 'lone \uD800 surrogate'), /surrogate/);
  assertLibraryError(() => tm.submitTask(() => {}, ''), 'SFT_ERR_INVALID_ARGUMENT');
  assertLibraryError(() => tm.submitTask(() => {}, 'x'.repeat(tm.getConfig().max_task_id_bytes + 1)), 'SFT_ERR_INVALID_ARGUMENT');
  assert.equal(tm.statsSync().submitted_total, before);
});

test('bad input to the mutations throws a clear error and leaves the task as it was', async () => {
  const held = submitHeldTask(tm);
  const id = held.id;
  await held.started;
  tm.updateTaskProgress(id, 1, 2, { current_segment_id: 1 });
  tm.addCompletedSegment(id, 1, { audio_url: '/a.wav', duration: 1 });
  const before = tm.getTaskStatus(id);
  const attempts = [
    [() => tm.updateTaskProgress(id, -1, 2), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1.5, 2), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, '1', 2), TypeError],
    [() => tm.updateTaskProgress(id, 1, 2n ** 64n), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, -1n, 2), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, [1]), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, 'json'), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { ratio: NaN }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { nested: { list: [Infinity] } }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { missing: undefined }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { fn: () => 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { symbol: Symbol('s') }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { when: new Date(0) }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { list: [1, , 3] }), 'SFT_ERR_INVALID_ARGUMENT'], // eslint-disable-line no-sparse-arrays
    [() => tm.updateTaskProgress(id, 1, 2, { [Symbol('key')]: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { percentage: 5 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.updateTaskProgress(id, 1, 2, { current: 5 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1.5, { audio_url: '/a.wav', duration: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, { id: 1 }, { audio_url: '/a.wav', duration: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, null, { audio_url: '/a.wav', duration: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, '', { audio_url: '/a.wav', duration: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1, null), TypeError],
    [() => tm.addCompletedSegment(id, 1, { duration: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1, { audio_url: '/a.wav', duration: '1' }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1, { audio_url: '/a.wav', duration: -1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1, { audio_url: '/a.wav', duration: NaN }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1, { audio_url: '/a.wav', duration: Infinity }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addCompletedSegment(id, 1, { audio_url: 'x'.repeat(tm.getConfig().max_url_bytes + 1), duration: 1 }), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addError(id, 1, 42), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addError(id, true, 'message'), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.addError(id, 1, 'lone \uD800'), 'SFT_ERR_INVALID_ARGUMENT'],
    [() => tm.getTaskStatus(7), TypeError],
    [() => tm.getTaskStatus('nul\0inside'), 'SFT_ERR_INVALID_ARGUMENT'],
  ];
  for (const [attempt, expected] of attempts) {
    if (typeof expected === 'string') assertLibraryError(attempt, expected);
    else assert.throws(attempt, expected, attempt.toString());
  }
  assert.deepEqual(tm.getTaskStatus(id), before);
  held.release();
  await tm.wait(id);
});

test('a value JSON cannot carry is refused naming the argument and where it sits', () => {
  const held = submitHeldTask(tm);
  const cycle = { name: 'loop' };
  cycle.self = cycle;
  const cases = [
    [{ ratio: NaN }, /extra\.ratio is NaN/],
    [{ a: { 'odd key': [0, -Infinity] } }, /extra\.a\["odd key"\]\[1\] is -Infinity/],
    [{ gone: undefined }, /extra\.gone is undefined/],
    [{ call: () => 1 }, /extra\.call is a function/],
    [{ map: new Map() }, /extra\.map is a Map object/],
    [cycle, /extra\.self refers back/],
  ];
  for (const [extra, message] of cases) {
    assert.throws(() => tm.updateTaskProgress(held.id, 1, 2, extra),
      (error) => error instanceof InvalidArgumentError && message.test(error.message) && error.message.startsWith('updateTaskProgress: '),
      String(message));
  }
  assert.throws(() => tm.submitTask(() => {}, 'a\0b'), (error) => error instanceof InvalidArgumentError && /taskId holds a NUL/.test(error.message));
  held.release();
  return tm.wait(held.id);
});

test('integers keep every digit both ways: a BigInt in, a BigInt out where a number would round', async () => {
  const held = submitHeldTask(tm);
  const extra = { big: 9007199254740993n, huge: -(10n ** 30n), safe: 9007199254740991, unsafeNumber: 2 ** 64, float: 0.1 };
  assert.equal(tm.updateTaskProgress(held.id, 2n ** 64n - 1n, 2n ** 63n, extra), true);
  const { progress } = tm.getTaskStatus(held.id);
  assert.equal(progress.current, 2n ** 64n - 1n);
  assert.equal(progress.total, 2n ** 63n);
  assert.equal(progress.big, 9007199254740993n);
  assert.equal(progress.safe, 9007199254740991);
  assert.equal(progress.huge, -(10n ** 30n));
  assert.equal(progress.unsafeNumber, 2 ** 64, 'a number beyond 2^53 stays a number (a double), not a bigint');
  assert.equal(progress.float, 0.1);
  tm.addCompletedSegment(held.id, 10n ** 30n, { audio_url: '/a.wav', duration: 1 });
  assert.equal(tm.getTaskStatus(held.id).completed_segments[0].segment_id, 10n ** 30n);
  held.release();
  await tm.wait(held.id);
});

test('mutations of an unknown or finished task return false, as the original design ignores them; applied ones return true', async () => {
  assert.equal(tm.updateTaskProgress('no-such-task', 1, 2), false);
  assert.equal(tm.addCompletedSegment('no-such-task', 1, { audio_url: '/a.wav', duration: 1 }), false);
  assert.equal(tm.addError('no-such-task', 1, 'message'), false);
  assertLibraryError(() => tm.isCancelRequested('no-such-task'), 'SFT_ERR_NOT_FOUND');
  const held = submitHeldTask(tm);
  assert.equal(tm.updateTaskProgress(held.id, 1, 2), true);
  assert.equal(tm.addCompletedSegment(held.id, 1, { audio_url: '/a.wav', duration: 1 }), true);
  assert.equal(tm.addError(held.id, 1, 'message'), true);
  held.release();
  const final = await tm.wait(held.id);
  // Final is final: a finished task takes no more changes, and says so with false.
  assert.equal(tm.updateTaskProgress(held.id, 2, 2), false);
  assert.equal(tm.addCompletedSegment(held.id, 2, { audio_url: '/b.wav', duration: 1 }), false);
  assert.equal(tm.addError(held.id, 2, 'late'), false);
  assert.deepEqual(tm.getTaskStatus(held.id), final);
});

test('listTasks lists in submission order and filters by state', async () => {
  const held = submitHeldTask(tm);
  const queued = tm.submitTask(() => {});
  await held.started;
  const listing = tm.listTasks();
  assert.ok(listing instanceof Promise);
  const all = (await listing).map((s) => s.task_id);
  assert.ok(all.indexOf(held.id) >= 0 && all.indexOf(held.id) < all.indexOf(queued));
  assert.deepEqual((await tm.listTasks(sft.TASK_PROCESSING)).map((s) => s.task_id), [held.id]);
  const pending = await tm.listTasks(sft.TASK_PENDING);
  assert.ok(pending.some((s) => s.task_id === queued));
  assert.ok(pending.every((s) => s.status === sft.TASK_PENDING));
  assert.deepEqual(tm.listTasksSync(sft.TASK_PENDING).map((s) => s.task_id), pending.map((s) => s.task_id));
  assert.equal((await tm.listTasks(null)).length, all.length);
  await assert.rejects(tm.listTasks('RUNNING'), (e) => e.code === 'SFT_ERR_INVALID_ARGUMENT' && /RUNNING/.test(e.message));
  await assert.rejects(tm.listTasks(1), TypeError);
  assert.throws(() => tm.listTasksSync('RUNNING'), (e) => e.code === 'SFT_ERR_INVALID_ARGUMENT');
  held.release();
  await tm.wait(queued);
});

test('stats count what happened', async () => {
  // Once a task submitted now has finished, every earlier test's task (ahead of it) has too.
  await tm.wait(tm.submitTask(() => {}));
  const before = await tm.stats();
  const ok = tm.submitTask(() => {});
  const bad = tm.submitTask(() => {
    throw new Error('no');
  });
  await Promise.all([tm.wait(ok), tm.wait(bad)]);
  const after = await tm.stats();
  assert.deepEqual(tm.statsSync().counts, after.counts);
  for (const key of ['counts', 'queue_depth', 'retained', 'submitted_total', 'completed_total', 'failed_total', 'cancelled_total', 'mean_run_secs', 'max_run_secs']) {
    assert.ok(key in after, key);
  }
  assert.equal(after.submitted_total - before.submitted_total, 2);
  assert.equal(after.completed_total - before.completed_total, 1);
  assert.equal(after.failed_total - before.failed_total, 1);
  assert.ok(after.counts.COMPLETED >= 1 && after.counts.FAILED >= 1);
  assert.ok(after.max_run_secs >= after.mean_run_secs);
});

test('getConfig gives every setting', () => {
  const config = tm.getConfig();
  assert.deepEqual(Object.keys(config).sort(), ['cleanup_threshold_secs', 'event_buffer_capacity', 'max_attempts', 'max_errors_per_task',
    'max_extra_json_bytes', 'max_message_bytes', 'max_pending_tasks', 'max_retained_finished', 'max_segments_per_task',
    'max_task_id_bytes', 'max_url_bytes', 'store', 'redis_namespace', 'machine_id'].sort());
  assert.equal(config.store, process.env.STORYFLOW_TASKS_STORE || 'memory');
  assert.equal(config.max_attempts, 3);
  assert.equal(config.redis_namespace, 'storyflow');
  assert.equal(config.machine_id, null);
});
