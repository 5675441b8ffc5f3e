'use strict';
// What is process-wide or final runs in child processes: configure, shutdown,
// exit with tasks queued or running, the poller's hold on the process, worker
// threads, a lossy change feed, and where the library is loaded from.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { PACKAGE_ROOT, ENGINE, runFixture, runNode, lastJsonLine } = require('./helpers');

/** Asserts that a child ended by itself with `code`, not by a signal or the hang guard. */
function assertEndedWith(result, code) {
  const context = `code=${result.code} signal=${result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
  assert.equal(result.hung, false, `the child hung\n${context}`);
  assert.equal(result.signal, null, `the child died of a signal\n${context}`);
  assert.equal(result.code, code, context);
  assert.doesNotMatch(result.stderr, /Abort|Assertion failed|FATAL|terminate called|Segmentation/i, context);
}

test('configure: applied before the first submit, refused after it, bad settings change nothing', async () => {
  const result = await runFixture('configure.js');
  assertEndedWith(result, 0);
  assert.deepEqual(lastJsonLine(result.stdout), {
    unknownKey: 'InvalidArgumentError:SFT_ERR_INVALID_ARGUMENT',
    badValue: 'InvalidArgumentError:SFT_ERR_INVALID_ARGUMENT',
    wrongType: 'InvalidArgumentError:SFT_ERR_INVALID_ARGUMENT',
    notAnObject: 'TypeError:',
    unchangedAfterErrors: true,
    valid: 'ok',
    applied: true,
    queueFull: 'StoryflowTasksError:SFT_ERR_QUEUE_FULL',
    afterFirstSubmit: 'StoryflowTasksError:SFT_ERR_INVALID_STATE',
    afterFirstSubmitPromise: 'StoryflowTasksError:SFT_ERR_INVALID_STATE',
    samePromise: 'ok',
    stillApplied: true,
    longMessageCut: ' [shortened from',
  });
});

test('shutdown: pending JS tasks never run, the running one is aborted, later submits are refused', async () => {
  const result = await runFixture('shutdown.js', ['graceful']);
  assertEndedWith(result, 0);
  assert.deepEqual(lastJsonLine(result.stdout), {
    mode: 'graceful',
    abortSeen: true,
    shutdown: 'ok',
    queued: ['CANCELLED', 'CANCELLED', 'CANCELLED'],
    queuedErrors: ['cancelled by shutdown', 'cancelled by shutdown', 'cancelled by shutdown'],
    submitAfter: 'SFT_ERR_SHUT_DOWN',
    running: 'CANCELLED',
    queuedRan: 0,
    again: 'ok',
    statsWork: true,
    badTimeout: 'RangeError',
  });
});

test('shutdown with a timeout the running task outlasts rejects with SFT_ERR_TIMEOUT; the task still ends', async () => {
  const result = await runFixture('shutdown.js', ['timeout']);
  assertEndedWith(result, 0);
  const report = lastJsonLine(result.stdout);
  assert.equal(report.shutdown, 'SFT_ERR_TIMEOUT');
  assert.equal(report.running, 'CANCELLED');
  assert.equal(report.submitAfter, 'SFT_ERR_SHUT_DOWN');
  assert.equal(report.queuedRan, 0);
});

for (const mode of ['exit', 'natural']) {
  test(`a process that ends (${mode}) with a JS task running and others queued exits cleanly`, async () => {
    const result = await runFixture('exit-with-tasks.js', [mode]);
    assertEndedWith(result, 0);
    const report = lastJsonLine(result.stdout);
    assert.equal(report.mode, mode);
    assert.equal(report.counts.PROCESSING, 1);
    assert.equal(report.counts.PENDING, 5);
    assert.doesNotMatch(result.stdout, /not expected/);
  });
}

for (const mode of ['uncaught', 'unhandled']) {
  test(`an ${mode} error with tasks around ends the process with code 1, not an abort`, async () => {
    const result = await runFixture('exit-with-tasks.js', [mode]);
    assertEndedWith(result, 1);
    assert.match(result.stderr, new RegExp(`${mode} on purpose`));
    assert.equal(lastJsonLine(result.stdout).code, 1);
  });
}

test('queued JS tasks keep the process alive until they ran, then it ends', async () => {
  const result = await runFixture('fire-and-forget.js');
  assertEndedWith(result, 0);
  const report = lastJsonLine(result.stdout);
  assert.deepEqual(report.ran, ['a', 'b', 'c']);
  assert.equal(report.counts.COMPLETED, 3);
});

test('an event listener alone does not keep the process alive', async () => {
  const result = await runFixture('idle-listener.js');
  assertEndedWith(result, 0);
  assert.deepEqual(lastJsonLine(result.stdout), { status: 'COMPLETED', sawFinished: true });
});

test('a throwing listener is reported as uncaught, and waits still resolve', async () => {
  const result = await runFixture('listener-throws.js');
  assertEndedWith(result, 0);
  const report = lastJsonLine(result.stdout);
  assert.deepEqual(report.statuses, ['COMPLETED', 'COMPLETED']);
  assert.ok(report.uncaught >= 1);
  assert.equal(report.message, 'listener bug');
});

test('events dropped from a small feed buffer are reported as a gap and recovered from', async () => {
  const result = await runFixture('gap.js');
  assertEndedWith(result, 0);
  const report = lastJsonLine(result.stdout);
  assert.deepEqual(report.statuses, ['CANCELLED', 'COMPLETED', 'COMPLETED']);
  assert.equal(report.queuedRan, false);
  assert.ok(report.gaps >= 1);
  assert.equal(report.gapShape, true);
});

test(`worker threads: ${ENGINE === 'koffi' ? 'share the manager and exit cleanly' : 'ffi-napi is refused with a clear error'}`, async () => {
  const result = await runFixture('worker-thread.js');
  assertEndedWith(result, 0);
  const report = lastJsonLine(result.stdout);
  if (ENGINE === 'koffi') {
    assert.deepEqual(report, { runningInWorker: 'PROCESSING', queued: ['PENDING', 'PENDING'] });
  } else {
    assert.match(report.workerError, /ffi-napi engine can only be used on the main thread/);
  }
});

const printLoaded = `const tm = require(${JSON.stringify(PACKAGE_ROOT)}).getTaskManager();
console.log(JSON.stringify({ engine: tm.engine, libraryPath: tm.libraryPath }));`;

test('STORYFLOW_TASKS_LIB naming a missing file is a clear error naming it', async () => {
  const missing = path.join(PACKAGE_ROOT, 'no-such-dir', 'libstoryflow_tasks.so');
  const result = await runNode(['-e', printLoaded], { STORYFLOW_TASKS_LIB: missing });
  assertEndedWith(result, 1);
  assert.match(result.stderr, /library not found/);
  assert.ok(result.stderr.includes('STORYFLOW_TASKS_LIB'));
  assert.ok(result.stderr.includes(missing));
});

test('a file that is not a library is a clear error naming it', async () => {
  const result = await runNode(['-e', printLoaded], { STORYFLOW_TASKS_LIB: __filename });
  assertEndedWith(result, 1);
  assert.match(result.stderr, new RegExp(`${ENGINE} could not load`));
  assert.ok(result.stderr.includes(__filename));
});

test('an unknown engine is a clear error naming the choices', async () => {
  const result = await runNode(['-e', printLoaded], { STORYFLOW_TASKS_ENGINE: 'ctypes' });
  assertEndedWith(result, 1);
  assert.match(result.stderr, /unknown FFI engine "ctypes" \(from STORYFLOW_TASKS_ENGINE\); use one of "koffi", "ffi-napi"/);
});

test('the engine option wins over STORYFLOW_TASKS_ENGINE', async () => {
  const other = ENGINE === 'koffi' ? 'ffi-napi' : 'koffi';
  const code = `const tm = require(${JSON.stringify(PACKAGE_ROOT)}).getTaskManager({ engine: ${JSON.stringify(other)} });
console.log(JSON.stringify({ engine: tm.engine }));`;
  const result = await runNode(['-e', code]);
  assertEndedWith(result, 0);
  assert.equal(lastJsonLine(result.stdout).engine, other);
});

test('without STORYFLOW_TASKS_LIB the repository build is found', async () => {
  const packaged = path.join(PACKAGE_ROOT, 'libstoryflow_tasks.so');
  const built = path.resolve(PACKAGE_ROOT, '..', '..', 'target', 'release', 'libstoryflow_tasks.so');
  const result = await runNode(['-e', printLoaded], { STORYFLOW_TASKS_LIB: undefined });
  assertEndedWith(result, 0);
  assert.equal(lastJsonLine(result.stdout).libraryPath, fs.existsSync(packaged) ? packaged : built);
});

test('library strings are freed: reading hundreds of MB of statuses leaves memory flat', async () => {
  const result = await runFixture('string-leak.js');
  assertEndedWith(result, 0);
  const { readMb, growthMb } = lastJsonLine(result.stdout);
  assert.ok(readMb > 600, `read only ${readMb} MB`);
  // A leak would keep every string: growth of at least readMb.
  assert.ok(growthMb < readMb / 3, `resident set grew ${growthMb} MB while reading ${readMb} MB`);
});
