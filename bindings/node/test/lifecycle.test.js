'use strict';
// Cancellation, wait, watch and the event emitter, all served by the
// one change-feed poller.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const sft = require('..');
const { deferred, submitHeldTask } = require('./helpers');

const tm = sft.getTaskManager();

/** Asserts that `promise` rejects with a StoryflowTasksError with this result name. */
async function assertRejectsWith(promise, code) {
  await assert.rejects(promise, (error) => error instanceof sft.StoryflowTasksError && error.code === code && error.message.includes(code),
    `expected a rejection with ${code}`);
}

test('cancel of a pending task: CANCELLED at once, its function never runs', async () => {
  const held = submitHeldTask(tm);
  let ran = false;
  const id = tm.submitTask(() => {
    ran = true;
  });
  await held.started;
  const status = await tm.cancel(id);
  assert.equal(status.status, sft.TASK_CANCELLED);
  assert.equal(tm.getTaskStatus(id).status, sft.TASK_CANCELLED);
  held.release();
  await tm.wait(held.id);
  await tm.wait(tm.submitTask(() => {}));
  assert.equal(ran, false);
});

test('cancel of a running JS task aborts its signal; the task ends CANCELLED', async () => {
  const started = deferred();
  const id = tm.submitTask((_taskId, signal) => new Promise((resolve) => {
    signal.addEventListener('abort', () => resolve('stopped early'));
    started.resolve(signal);
  }));
  const signal = await started.promise;
  assert.equal(tm.getTaskStatus(id).cancel_requested, false);
  const requested = await tm.cancel(id);
  assert.equal(requested.status, sft.TASK_PROCESSING);
  assert.equal(requested.cancel_requested, true);
  assert.equal(tm.isCancelRequested(id), true);
  assert.equal(signal.aborted, true);
  assert.match(signal.reason.message, /cancellation/);
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_CANCELLED);
});

test('a JS task cancelled before its function began never calls it, running or pending', async () => {
  let calls = 0;
  const id = tm.submitTask(() => {
    calls += 1;
  });
  // Same turn: the worker may have started it already (PROCESSING) or not (PENDING).
  const requested = await tm.cancel(id);
  assert.ok(requested.status === sft.TASK_CANCELLED || requested.cancel_requested);
  assert.equal((await tm.wait(id)).status, sft.TASK_CANCELLED);
  await tm.wait(tm.submitTask(() => {}));
  assert.equal(calls, 0);
});

test('cancel of a finished task rejects with SFT_ERR_INVALID_STATE; of an unknown one with SFT_ERR_NOT_FOUND', async () => {
  const id = tm.submitTask(() => {});
  const final = await tm.wait(id);
  await assertRejectsWith(tm.cancel(id), 'SFT_ERR_INVALID_STATE');
  assert.deepEqual(tm.getTaskStatus(id), final);
  await assertRejectsWith(tm.cancel('no-such-task'), 'SFT_ERR_NOT_FOUND');
  await assert.rejects(tm.cancel(5), TypeError);
});

test('wait with a timeout rejects with SFT_ERR_TIMEOUT and leaves the task running', async () => {
  const held = submitHeldTask(tm);
  await held.started;
  await assertRejectsWith(tm.wait(held.id, { timeout: 10 }), 'SFT_ERR_TIMEOUT');
  await assertRejectsWith(tm.wait(held.id, { timeout: 0 }), 'SFT_ERR_TIMEOUT');
  assert.equal(tm.getTaskStatus(held.id).status, sft.TASK_PROCESSING);
  const later = tm.wait(held.id, { timeout: 60_000 });
  held.release('done');
  assert.equal((await later).status, sft.TASK_COMPLETED);
});

test('wait of a finished task resolves at once; of an unknown one rejects', async () => {
  const id = tm.submitTask(() => {});
  const final = await tm.wait(id, { timeout: Infinity });
  assert.deepEqual(await tm.wait(id, { timeout: 0 }), final);
  await assertRejectsWith(tm.wait('no-such-task'), 'SFT_ERR_NOT_FOUND');
});

test('wait rejects bad options', async () => {
  const id = tm.submitTask(() => {});
  await assert.rejects(tm.wait(id, { timeout: -1 }), RangeError);
  await assert.rejects(tm.wait(id, { timeout: 2 ** 31 }), RangeError);
  await assert.rejects(tm.wait(id, { timeout: NaN }), TypeError);
  await assert.rejects(tm.wait(id, { timeout: '10' }), TypeError);
  await assert.rejects(tm.wait(id, 10), TypeError);
  await assert.rejects(tm.wait(null), TypeError);
  await tm.wait(id);
});

test('many waits share the one poller: the libuv thread pool stays free', async () => {
  const held = submitHeldTask(tm);
  await held.started;
  const waits = Array.from({ length: 64 }, () => tm.wait(held.id));
  // fs.readFile runs on the libuv thread pool (4 threads by default): it could
  // not finish if each pending wait held a pool thread.
  const text = await fs.promises.readFile(__filename, 'utf8');
  assert.ok(text.includes('many waits share the one poller'));
  held.release();
  const finals = await Promise.all(waits);
  assert.ok(finals.every((s) => s.status === sft.TASK_COMPLETED));
});

test('watch yields the current status, each change, and ends with the final status', async () => {
  const held = submitHeldTask(tm);
  const seen = [];
  const watching = (async () => {
    for await (const status of tm.watch(held.id)) {
      seen.push(status);
      if (status.status === sft.TASK_PROCESSING && status.progress.current === undefined) {
        tm.updateTaskProgress(held.id, 1, 2);
      } else if (status.progress.current === 1) {
        held.release();
      }
    }
  })();
  await watching;
  const revisions = seen.map((s) => s.revision);
  assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b));
  assert.equal(new Set(revisions).size, revisions.length, 'a revision was yielded twice');
  assert.ok(seen.some((s) => s.progress.current === 1));
  assert.equal(seen.at(-1).status, sft.TASK_COMPLETED);
});

test('watch of a finished task yields its final status once; of an unknown task throws', async () => {
  const id = tm.submitTask(() => {});
  const final = await tm.wait(id);
  const seen = [];
  for await (const status of tm.watch(id)) seen.push(status);
  assert.deepEqual(seen, [final]);
  assert.throws(() => tm.watch('no-such-task'), (e) => e.code === 'SFT_ERR_NOT_FOUND');
  assert.throws(() => tm.watch({}), TypeError);
});

test('breaking out of a watch stops it; two watches of one task each get the statuses', async () => {
  const held = submitHeldTask(tm);
  await held.started;
  const first = tm.watch(held.id);
  const second = tm.watch(held.id);
  assert.equal((await first.next()).value.status, sft.TASK_PROCESSING);
  assert.deepEqual(await first.return(), { value: undefined, done: true });
  assert.deepEqual(await first.next(), { value: undefined, done: true });
  assert.equal((await second.next()).value.status, sft.TASK_PROCESSING);
  const next = second.next();
  held.release();
  assert.equal((await next).value.status, sft.TASK_COMPLETED);
  assert.equal((await second.next()).done, true);
});

test('the event emitter delivers each task event in order', async () => {
  const events = [];
  const listener = (event) => events.push(event);
  tm.events.on('event', listener);
  try {
    const id = tm.submitTask((taskId) => {
      tm.updateTaskProgress(taskId, 1, 1);
      tm.addCompletedSegment(taskId, 1, { audio_url: '/1.wav', duration: 1 });
      tm.addError(taskId, 2, 'bad');
    });
    await tm.wait(id);
    // The wait resolved from the same batch or an earlier one than the emitter saw; the last event is there.
    const mine = events.filter((e) => e.task_id === id);
    assert.deepEqual(mine.map((e) => e.kind), ['submitted', 'started', 'progress', 'segment', 'error', 'finished']);
    assert.deepEqual(mine.map((e) => e.status), ['PENDING', 'PROCESSING', 'PROCESSING', 'PROCESSING', 'PROCESSING', 'COMPLETED']);
    for (let i = 1; i < mine.length; i++) {
      assert.ok(mine[i].seq > mine[i - 1].seq && mine[i].revision > mine[i - 1].revision);
    }
    assert.ok(tm.lastEventSeq() >= mine.at(-1).seq);
  } finally {
    tm.events.off('event', listener);
  }
});
