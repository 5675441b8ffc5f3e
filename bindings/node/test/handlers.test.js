'use strict';
// Named handlers in the memory store: registerHandler, submitNamed and
// setCheckpoint in this process, run by the library's one worker in FIFO with
// JS tasks. (Across processes and a SQLite file: worker.test.js.)

const test = require('node:test');
const assert = require('node:assert/strict');
const sft = require('..');
const { deferred, runNode, PACKAGE_ROOT } = require('./helpers');

const { getTaskManager, StoryflowTasksError, InvalidArgumentError } = sft;
const tm = getTaskManager();

/** Asserts that `fn` throws a StoryflowTasksError with this result name. */
function assertLibraryError(fn, code, messagePart = code) {
  assert.throws(fn, (error) => error instanceof StoryflowTasksError && error.code === code && error.message.includes(messagePart),
    `expected a StoryflowTasksError ${code} mentioning ${messagePart}`);
}

test('a handler gets its payload losslessly, with id, attempt 1 and no checkpoint', async () => {
  const seen = deferred();
  tm.registerHandler('lossless', (payload, context) => seen.resolve({ payload, context }));
  const payload = { big: 2n ** 70n, negative: -(2n ** 64n), float: 0.1, text: 'bad\0voice \u00e9\u{1f600}', list: [1, 'x', null, true] };
  const id = tm.submitNamed('lossless', payload);
  // A pending wait holds the process; registered handlers alone do not.
  const finished = tm.wait(id);
  const { payload: received, context } = await seen.promise;
  assert.deepEqual(received, payload);
  assert.equal(context.id, id);
  assert.equal(context.attempt, 1);
  assert.equal(context.checkpoint, null);
  assert.ok(context.signal instanceof AbortSignal && !context.signal.aborted);
  const final = await finished;
  assert.equal(final.status, sft.TASK_COMPLETED);
  assert.equal(final.handler, 'lossless');
  assert.equal(final.attempt, 1);
  assert.equal(final.checkpoint, null);
});

test('a task submitted without payload gets null; a given task id is used', async () => {
  const seen = deferred();
  tm.registerHandler('no-payload', (payload) => seen.resolve(payload));
  const id = tm.submitNamed('no-payload', undefined, 'named-task-id-\u00e9');
  assert.equal(id, 'named-task-id-\u00e9');
  const finished = tm.wait(id);
  assert.equal(await seen.promise, null);
  assert.equal((await finished).status, sft.TASK_COMPLETED);
  assertLibraryError(() => tm.submitNamed('no-payload', null, id), 'SFT_ERR_DUPLICATE_ID');
});

test('an async handler records a checkpoint, read back losslessly; a finished task refuses one', async () => {
  tm.registerHandler('checkpoints', async (_payload, { id }) => {
    assert.equal(tm.setCheckpoint(id, { next: 1 }), true);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(tm.setCheckpoint(id, { next: 2, big: 2n ** 80n, text: 'a\0b' }), true);
    assert.deepEqual(tm.getTaskStatus(id).checkpoint, { next: 2, big: 2n ** 80n, text: 'a\0b' });
  });
  const id = tm.submitNamed('checkpoints', {});
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_COMPLETED, final.error);
  assert.deepEqual(final.checkpoint, { next: 2, big: 2n ** 80n, text: 'a\0b' });
  assert.equal(tm.setCheckpoint(id, { next: 3 }), false);
  assert.deepEqual(tm.getTaskStatus(id).checkpoint, { next: 2, big: 2n ** 80n, text: 'a\0b' });
  assert.equal(tm.setCheckpoint('no-such-task', 1), false);
});

test('setCheckpoint refuses what JSON cannot carry, before the call', () => {
  for (const value of [undefined, NaN, Infinity, () => {}, Symbol('s'), { nested: [1, undefined] }, new Date(0)]) {
    assert.throws(() => tm.setCheckpoint('any-task', value), InvalidArgumentError);
  }
  assert.throws(() => tm.setCheckpoint('bad\0id', 1), (error) => error instanceof InvalidArgumentError && /taskId/.test(error.message));
});

test('a handler that throws or rejects fails the task with its message, and is not retried', async () => {
  let calls = 0;
  tm.registerHandler('throws', () => {
    calls += 1;
    throw new Error('voice "narrator" not found');
  });
  tm.registerHandler('rejects', async () => {
    await null;
    throw new Error('synthesis failed\0 at sentence 3');
  });
  const thrown = await tm.wait(tm.submitNamed('throws', null));
  assert.equal(thrown.status, sft.TASK_FAILED);
  assert.equal(thrown.error, 'voice "narrator" not found');
  assert.equal(thrown.attempt, 1);
  assert.equal(calls, 1);
  const rejected = await tm.wait(tm.submitNamed('rejects', null));
  assert.equal(rejected.status, sft.TASK_FAILED);
  assert.equal(rejected.error, 'synthesis failed\0 at sentence 3');
});

test('cancelling a running named task aborts its signal and ends it CANCELLED', async () => {
  const started = deferred();
  tm.registerHandler('cancellable', (_payload, { signal }) => new Promise((_resolve, reject) => {
    const work = setInterval(() => {}, 60_000);
    signal.addEventListener('abort', () => {
      clearInterval(work);
      reject(signal.reason);
    }, { once: true });
    started.resolve(signal);
  }));
  const id = tm.submitNamed('cancellable', { chapter: 1 });
  const finished = tm.wait(id);
  const signal = await started.promise;
  const requested = await tm.cancel(id);
  assert.equal(requested.cancel_requested, true);
  const final = await finished;
  assert.equal(final.status, sft.TASK_CANCELLED);
  assert.equal(signal.aborted, true);
  assert.match(signal.reason.message, /cancellation of task .* was requested/);
});

test('a task whose handler nobody serves waits, without holding up the tasks behind it, until one registers', async () => {
  const unserved = tm.submitNamed('registered-later', { n: 1 });
  const behind = tm.submitTask(() => 'ran');
  tm.registerHandler('served-now', () => {});
  const namedBehind = tm.submitNamed('served-now', null);
  assert.equal((await tm.wait(behind)).status, sft.TASK_COMPLETED);
  assert.equal((await tm.wait(namedBehind)).status, sft.TASK_COMPLETED);
  const waiting = tm.getTaskStatus(unserved);
  assert.equal(waiting.status, sft.TASK_PENDING);
  assert.equal(waiting.handler, 'registered-later');
  assert.equal(waiting.attempt, 0);
  assert.equal(waiting.queue_position, null);

  const seen = deferred();
  const finished = tm.wait(unserved);
  tm.registerHandler('registered-later', (payload) => seen.resolve(payload));
  assert.deepEqual(await seen.promise, { n: 1 });
  const final = await finished;
  assert.equal(final.status, sft.TASK_COMPLETED);
  assert.equal(final.attempt, 1);
});

test('named tasks and JS tasks run one at a time in submission order', async () => {
  const order = [];
  let running = 0;
  let overlapped = false;
  const step = async (label) => {
    running += 1;
    overlapped ||= running > 1;
    order.push(label);
    await new Promise((resolve) => setImmediate(resolve));
    running -= 1;
  };
  tm.registerHandler('ordered', ({ label }) => step(label));
  const ids = [
    tm.submitNamed('ordered', { label: 'named 1' }),
    tm.submitTask(() => step('js 1')),
    tm.submitNamed('ordered', { label: 'named 2' }),
    tm.submitTask(() => step('js 2')),
  ];
  for (const id of ids) assert.equal((await tm.wait(id)).status, sft.TASK_COMPLETED);
  assert.deepEqual(order, ['named 1', 'js 1', 'named 2', 'js 2']);
  assert.equal(overlapped, false);
});

test('a second registration of a name is refused clearly; the first keeps serving', async () => {
  const first = deferred();
  tm.registerHandler('twice', () => first.resolve('first'));
  assertLibraryError(() => tm.registerHandler('twice', () => {}), 'SFT_ERR_DUPLICATE_ID', 'twice');
  assert.deepEqual(tm.handlerNames().filter((name) => name === 'twice'), ['twice']);
  const id = tm.submitNamed('twice', null);
  const finished = tm.wait(id);
  assert.equal(await first.promise, 'first');
  assert.equal((await finished).status, sft.TASK_COMPLETED);
});

test('bad arguments are refused before anything is queued', () => {
  const before = tm.statsSync().submitted_total;
  assert.throws(() => tm.registerHandler(7, () => {}), TypeError);
  assert.throws(() => tm.registerHandler('not-a-function', 'fn'), TypeError);
  assert.throws(() => tm.registerHandler('bad\0name', () => {}), (error) => error instanceof InvalidArgumentError && /name/.test(error.message));
  assert.throws(() => tm.submitNamed(undefined), TypeError);
  assert.throws(() => tm.submitNamed('bad\0name'), InvalidArgumentError);
  assert.throws(() => tm.submitNamed('lossless', { n: NaN }), (error) => error instanceof InvalidArgumentError && /payload\.n/.test(error.message));
  assert.throws(() => tm.submitNamed('lossless', null, 'bad\0id'), InvalidArgumentError);
  assert.equal(tm.statsSync().submitted_total, before);
  assert.ok(!tm.handlerNames().includes('not-a-function'));
});

test('registered handlers alone do not keep a process alive; a pending wait does until the handler ran', async () => {
  const script = `const tm = require(${JSON.stringify(PACKAGE_ROOT)}).getTaskManager();
tm.registerHandler('idle', () => {});
if (process.argv[1] === 'submit') {
  const id = tm.submitNamed('idle', { x: 1 });
  tm.wait(id).then((status) => console.log(JSON.stringify({ status: status.status, handler: status.handler })));
} else {
  console.log(JSON.stringify({ handlers: tm.handlerNames() }));
}`;
  const idle = await runNode(['-e', script, 'idle']);
  assert.equal(idle.code, 0, idle.stderr);
  assert.equal(idle.hung, false);
  assert.equal(idle.stdout.trim(), '{"handlers":["idle"]}');
  const submitted = await runNode(['-e', script, 'submit']);
  assert.equal(submitted.code, 0, submitted.stderr);
  assert.equal(submitted.stdout.trim(), '{"status":"COMPLETED","handler":"idle"}');
});
