'use strict';
// The worker command over a real SQLite file: worker processes started with
// the package's bin run the named tasks this test process submits and follows
// (wait, watch); a worker killed with SIGKILL mid-task leaves it to the next
// one, which resumes it with attempt 2, its segments and its checkpoint.
// Handlers: test/fixtures/narration-handlers.js.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sft = require('..');
const { ENGINE, WORKER_BIN, runNode, startWorker } = require('./helpers');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'storyflow-tasks-worker-'));
const STORE = `sqlite:${path.join(scratch, 'tasks.db')}`;
const HANDLERS = './test/fixtures/narration-handlers.js';

const tm = sft.getTaskManager();
tm.configureSync({ store: STORE });

test.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

/**
 * Why the library refuses the SQLite store, or null if it runs on it: a library
 * built before the store was wired into the manager refuses it at first use, and
 * the tests that need it then skip, naming the library's reason.
 */
function sqliteRefusal() {
  try {
    // A task for a handler nobody serves stays pending; cancelled at once.
    void tm.cancel(tm.submitNamed('store-probe', null));
    return null;
  } catch (error) {
    if (error instanceof sft.StoryflowTasksError && error.code === 'SFT_ERR_INVALID_STATE') return error.message;
    throw error;
  }
}
const refusal = sqliteRefusal();
/** A test that needs the SQLite store. */
const sqliteTest = (name, fn) => test(name, { skip: refusal === null ? false : `the library refuses the SQLite store: ${refusal}` }, fn);

/** Starts a worker on the test's store and waits for its start line. */
async function startServing(t, extraArgs = []) {
  const worker = startWorker(['worker', '--store', STORE, '--require', HANDLERS, ...extraArgs]);
  t.after(() => worker.child.kill('SIGKILL'));
  const started = await worker.line((text) => text.startsWith('storyflow-tasks worker '));
  return { ...worker, started };
}

/** Stops a worker with `signal` and returns how it ended. */
async function stop(worker, signal = 'SIGTERM') {
  worker.child.kill(signal);
  return worker.exited;
}

test('--help, usage mistakes and a module that registers nothing are clear', async () => {
  const help = await runNode([WORKER_BIN, '--help']);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: storyflow-tasks worker \[--store STORE\] --require MODULE/);
  assert.match(help.stdout, /SIGINT or SIGTERM/);

  const noModule = await runNode([WORKER_BIN, 'worker', '--store', STORE]);
  assert.equal(noModule.code, 2);
  assert.match(noModule.stderr, /no --require MODULE given/);
  const unknown = await runNode([WORKER_BIN, 'serve']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "serve"/);

  const empty = path.join(scratch, 'registers-nothing.js');
  fs.writeFileSync(empty, "'use strict';\n");
  const nothing = await runNode([WORKER_BIN, 'worker', '--store', STORE, '--require', empty]);
  assert.equal(nothing.code, 1);
  assert.match(nothing.stderr, /registered no handler/);
  const missing = await runNode([WORKER_BIN, 'worker', '--store', STORE, '--require', './no-such-module.js']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /could not load \.\/no-such-module\.js/);
});

sqliteTest('a store that cannot be opened is reported before any module runs', async () => {
  const unreachable = `sqlite:${path.join(scratch, 'no-such-dir', 'tasks.db')}`;
  const result = await runNode([WORKER_BIN, 'worker', '--store', unreachable, '--require', HANDLERS]);
  assert.equal(result.code, 1);
  assert.ok(result.stderr.includes('no-such-dir'), result.stderr);
  assert.doesNotMatch(result.stderr, /could not load/);
  assert.equal(result.stdout, '');
});

sqliteTest('a worker process runs the named tasks this process submits; wait and watch follow them', async (t) => {
  const worker = await startServing(t);
  assert.match(worker.started, new RegExp(`^storyflow-tasks worker \\d+: serving narrate, fail, stubborn, patient from ${STORE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(engine ${ENGINE}\\)`));

  const narration = tm.submitNamed('narrate', { sentences: 4 });
  const failing = tm.submitNamed('fail', { message: 'voice "narrator" not found' });
  const final = await tm.wait(narration);
  assert.equal(final.status, sft.TASK_COMPLETED, final.error);
  assert.equal(final.handler, 'narrate');
  assert.equal(final.attempt, 1);
  assert.deepEqual(final.checkpoint, { next: 4 });
  assert.deepEqual(final.completed_segments.map((s) => s.segment_id), [0, 1, 2, 3]);
  const started = await worker.jsonLine((line) => line.started === narration);
  assert.notEqual(started.pid, process.pid);

  const seen = [];
  for await (const status of tm.watch(failing)) seen.push(status.status);
  assert.equal(seen.at(-1), sft.TASK_FAILED);
  assert.equal(tm.getTaskStatus(failing).error, 'voice "narrator" not found');

  const ended = await stop(worker);
  assert.equal(ended.code, 0, ended.stderr);
  assert.match(ended.stderr, /SIGTERM: stopping/);
  assert.match(ended.stderr, /stopped/);
});

sqliteTest('SIGINT stops a worker gracefully: its running task stops there and resumes in the next worker', async (t) => {
  const first = await startServing(t);
  const id = tm.submitNamed('narrate', { sentences: 3, holdAt: 1 });
  await first.jsonLine((line) => line.holding === id);
  const ended = await stop(first, 'SIGINT');
  assert.equal(ended.code, 0, ended.stderr);
  // An interruption, not a cancellation: the task waits for the next worker, its segment kept.
  const left = tm.getTaskStatus(id);
  assert.equal(left.cancel_requested, false);
  assert.deepEqual(left.completed_segments.map((s) => s.segment_id), [0]);
  const second = await startServing(t);
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_COMPLETED, final.error);
  assert.equal(final.attempt, 2);
  assert.deepEqual(final.completed_segments.map((s) => s.segment_id), [0, 1, 2]);
  assert.equal((await stop(second)).code, 0);
});

sqliteTest('a worker killed with SIGKILL mid-task: the next worker resumes it with attempt 2, its segments and checkpoint', async (t) => {
  const first = await startServing(t);
  const id = tm.submitNamed('narrate', { sentences: 6, holdAt: 3 });
  await first.jsonLine((line) => line.holding === id);
  // Each segment and checkpoint was committed before its call returned.
  const before = tm.getTaskStatus(id);
  assert.equal(before.status, sft.TASK_PROCESSING);
  assert.deepEqual(before.checkpoint, { next: 3 });
  assert.deepEqual(before.completed_segments.map((s) => s.segment_id), [0, 1, 2]);
  const killed = await stop(first, 'SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');

  const second = await startServing(t);
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_COMPLETED, final.error);
  assert.equal(final.attempt, 2);
  assert.deepEqual(final.checkpoint, { next: 6 });
  assert.deepEqual(final.completed_segments.map((s) => s.segment_id), [0, 1, 2, 3, 4, 5]);
  const resumed = await second.jsonLine((line) => line.started === id);
  assert.equal(resumed.attempt, 2);
  assert.deepEqual(resumed.checkpoint, { next: 3 });
  assert.equal((await stop(second)).code, 0);
});

sqliteTest('a worker task that polls context.shouldYield() yields to a higher priority and resumes with its checkpoint', async (t) => {
  const worker = await startServing(t);
  const patient = tm.submitNamed('patient', { sentences: 5, pauseAt: 2 });
  await worker.jsonLine((line) => line.paused === patient);
  const urgent = tm.submitNamed('narrate', { sentences: 1 }, { priority: 10 });
  const final = await tm.wait(patient);
  const urgentFinal = await tm.wait(urgent);
  assert.equal(final.status, sft.TASK_COMPLETED, final.error);
  assert.deepEqual([final.yields, final.attempt, final.checkpoint], [1, 1, { next: 5 }]);
  assert.deepEqual(final.completed_segments.map((s) => s.segment_id), [0, 1, 2, 3, 4]);
  assert.deepEqual([urgentFinal.status, urgentFinal.priority], [sft.TASK_COMPLETED, 10]);
  // What the worker printed, in order: the urgent task ran between the two runs of the patient one.
  const ended = await stop(worker);
  assert.equal(ended.code, 0, ended.stderr);
  const events = ended.stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line));
  assert.deepEqual(events.map(({ pid: _pid, ...rest }) => rest), [
    { started: patient, attempt: 1, checkpoint: null, yields: 0 },
    { paused: patient, at: 2 },
    { yielded: patient, before: 2 },
    { started: urgent, attempt: 1, checkpoint: null, yields: 0 },
    { started: patient, attempt: 1, checkpoint: { next: 2 }, yields: 1 },
  ]);
});

sqliteTest('a running task that outlasts --shutdown-timeout: the worker exits, and the task resumes in the next one', async (t) => {
  const first = await startServing(t, ['--shutdown-timeout', '0']);
  const id = tm.submitNamed('stubborn', null);
  await first.jsonLine((line) => line.started === id);
  const ended = await stop(first);
  assert.equal(ended.code, 1);
  assert.match(ended.stderr, /did not end within 0 s: exiting; it resumes in another worker/);

  const second = await startServing(t);
  const final = await tm.wait(id);
  assert.equal(final.status, sft.TASK_COMPLETED, final.error);
  assert.equal(final.attempt, 2);
  assert.equal((await second.jsonLine((line) => line.started === id)).attempt, 2);
  assert.equal((await stop(second)).code, 0);
});
