'use strict';
// Priorities, cooperative yield and deadlines, as tests that scheduling.test.js
// (the memory store) and scheduling_sqlite.test.js (an SQLite file) both define
// on their own process's manager, so the same code runs on both stores. The
// rules themselves (the order, a priority's range, the texts of a missed
// deadline) are the library's: these check that the package hands them through.
// No test waits for a duration: each wait ends on what it waits for.

const test = require('node:test');
const assert = require('node:assert/strict');
const sft = require('..');
const { deferred, lastJsonLine, runFixture, submitHeldTask } = require('./helpers');

const DEADLINE_PASSED_PENDING = 'its deadline passed before it started';
const DEADLINE_PASSED_RUNNING = 'its deadline passed while it was running';
/** How long a polling task waits between two checks, as a narration does between sentences. */
const SENTENCE_MS = 5;

const sentence = () => new Promise((resolve) => setTimeout(resolve, SENTENCE_MS));

/** Resolves once `condition()` holds, checking between sentences. */
async function until(condition) {
  while (!condition()) await sentence();
}

/** Asserts that `fn` throws a StoryflowTasksError with this result name. */
function assertLibraryError(fn, code) {
  assert.throws(fn, (error) => error instanceof sft.StoryflowTasksError && error.code === code, `expected ${code}`);
}

/** The keys `names` of a status. */
function pick(status, ...names) {
  return Object.fromEntries(names.map((name) => [name, status[name]]));
}

/**
 * A chapter of six sentences that asks `shouldYield()` between them and yields
 * when told to. On its first run it pauses before sentence 3 (resolving
 * `paused`) and polls until it is asked to yield, so the test can submit the
 * urgent task at that moment. Each run resumes from its checkpoint.
 */
function chapter(tm, log) {
  const paused = deferred();
  const seen = [];
  /** One run: `context` gives `id`, `yields`, `checkpoint`, `shouldYield()` and `yield()`. */
  async function run({ id, yields, checkpoint, attempt, shouldYield, yield: yieldNow }) {
    const start = checkpoint?.next ?? 0;
    log.push(`chapter from ${start}, yields ${yields}, attempt ${attempt}`);
    for (let i = start; i < 6; i++) {
      if (i === 3 && yields === 0) {
        seen.push(shouldYield());
        paused.resolve();
        await until(shouldYield);
      }
      if (shouldYield()) {
        seen.push(pick(tm.getTaskStatus(id), 'status', 'yield_requested'));
        log.push(`chapter yields before ${i}`);
        yieldNow();
        return;
      }
      await sentence();
      tm.addCompletedSegment(id, i, { audio_url: `/audio/${i}.wav`, duration: 0.2 });
      tm.setCheckpoint(id, { next: i + 1 });
    }
    log.push('chapter done');
  }
  return { run, paused: paused.promise, seen };
}

/** The common end of the yield tests: an urgent task arrives while the chapter waits, and the chapter resumes after it. */
async function yieldAndResume(tm, submitChapter) {
  const log = [];
  const book = chapter(tm, log);
  const events = [];
  const listener = (event) => events.push(event);
  tm.events.on('event', listener);
  const id = submitChapter(book);
  await book.paused;
  assert.deepEqual(pick(tm.getTaskStatus(id), 'status', 'yield_requested'), { status: 'PROCESSING', yield_requested: false });
  // Submitted before the urgent task, at the chapter's priority: the yielded chapter goes ahead of it.
  const other = tm.submitTask(() => void log.push('other'), { priority: 0 });
  const urgent = tm.submitTask(() => void log.push('urgent'), { priority: 10 });
  const final = await tm.wait(id);
  await tm.wait(other);
  const urgentFinal = await tm.wait(urgent);
  tm.events.off('event', listener);
  // The change feed says so: started, yielded (PENDING again), started, finished.
  assert.deepEqual(events.filter((event) => event.task_id === id && ['started', 'yielded', 'finished'].includes(event.kind))
    .map((event) => `${event.kind} ${event.status}`), ['started PROCESSING', 'yielded PENDING', 'started PROCESSING', 'finished COMPLETED']);
  assert.deepEqual(book.seen, [false, { status: 'PROCESSING', yield_requested: true }]);
  assert.deepEqual(log, [
    'chapter from 0, yields 0, attempt 1',
    'chapter yields before 3',
    'urgent',
    'chapter from 3, yields 1, attempt 1',
    'chapter done',
    'other',
  ]);
  assert.deepEqual(pick(final, 'status', 'yields', 'attempt', 'checkpoint', 'error', 'yield_requested'),
    { status: 'COMPLETED', yields: 1, attempt: 1, checkpoint: { next: 6 }, error: null, yield_requested: false });
  assert.deepEqual(final.completed_segments.map((segment) => segment.segment_id), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(pick(urgentFinal, 'status', 'yields', 'priority'), { status: 'COMPLETED', yields: 0, priority: 10 });
  return final;
}

/**
 * Defines the tests on `tm`, whose store is `storeName` ('memory' or 'sqlite');
 * a child process that a test starts uses the store `childStore` (a setting).
 * @param {import('..').TaskManager} tm
 * @param {string} storeName
 * @param {string} childStore
 */
function defineSchedulingTests(tm, storeName, childStore) {
  test(`${storeName}: higher priorities wait ahead and run first, FIFO within one; listing keeps submission order`, async () => {
    const ran = [];
    tm.registerHandler('record', (payload) => void ran.push(payload));
    const gate = submitHeldTask(tm);
    await gate.started;
    const submitted = [['low-1', 0], ['high-1', 10], ['low-2', 0], ['mid', 5], ['high-2', 10], ['negative', -3],
      ['named-high', 10], ['named-low', 0]];
    const ids = {};
    for (const [name, priority] of submitted) {
      const options = { taskId: `${storeName}-${name}`, priority };
      ids[name] = name.startsWith('named') ? tm.submitNamed('record', name, options) : tm.submitTask(() => void ran.push(name), options);
    }
    ids.positional = tm.submitTask(() => void ran.push('positional'), `${storeName}-positional`); // priority 0
    ids.bigint = tm.submitTask(() => void ran.push('bigint'), { priority: 7n });
    const order = ['high-1', 'high-2', 'named-high', 'bigint', 'mid', 'low-1', 'low-2', 'named-low', 'positional', 'negative'];
    for (const [position, name] of order.entries()) assert.equal(tm.getTaskStatus(ids[name]).queue_position, position, name);
    assert.deepEqual(pick(tm.getTaskStatus(ids.mid), 'priority', 'deadline', 'yield_requested', 'yields'),
      { priority: 5, deadline: null, yield_requested: false, yields: 0 });
    assert.equal(tm.getTaskStatus(ids.positional).task_id, `${storeName}-positional`);
    assert.equal(tm.getTaskStatus(ids['named-high']).priority, 10);
    assert.deepEqual(tm.statsSync().pending_by_priority, [
      { priority: 10, pending: 3 }, { priority: 7, pending: 1 }, { priority: 5, pending: 1 }, { priority: 0, pending: 4 },
      { priority: -3, pending: 1 },
    ]);
    assert.deepEqual(tm.listTasksSync(sft.TASK_PENDING).map((status) => status.task_id), Object.values(ids));
    gate.release();
    const gateFinal = await tm.wait(gate.id);
    for (const id of Object.values(ids)) await tm.wait(id);
    assert.deepEqual(ran, order);
    // The held task never polled: the waiting higher priorities did not disturb it.
    assert.deepEqual(pick(gateFinal, 'status', 'yields', 'priority'), { status: 'COMPLETED', yields: 0, priority: 0 });
    assert.deepEqual(tm.statsSync().pending_by_priority, []);
  });

  test(`${storeName}: options the library refuses throw InvalidArgumentError naming the key, and queue nothing`, () => {
    tm.registerHandler('never', () => {});
    const before = tm.statsSync().submitted_total;
    const listed = tm.listTasksSync().length;
    const refused = [
      ['priority', 1.5], ['priority', 'high'], ['priority', 2 ** 31], ['priority', -(2 ** 31) - 1], ['priority', 2n ** 40n],
      ['priority', true], ['priority', null], ['priority', NaN],
      ['deadline', -1], ['deadline', 'soon'], ['deadline', NaN], ['deadline', Infinity], ['deadline', new Date(Number.NaN)],
      ['deadline', new Date(-1000)], ['deadline', {}],
      ['priorty', 1], ['task_id', 'x'],
    ];
    for (const [key, value] of refused) {
      for (const submit of [(options) => tm.submitTask(() => {}, options), (options) => tm.submitNamed('never', null, options)]) {
        assert.throws(() => submit({ [key]: value }), (error) => error instanceof sft.InvalidArgumentError && error.message.includes(key),
          `${key}: ${String(value)}`);
      }
    }
    assert.throws(() => tm.submitTask(() => {}, 42), TypeError);
    assert.throws(() => tm.submitNamed('never', null, [1]), TypeError);
    assert.throws(() => tm.submitTask(() => {}, { taskId: 7 }), TypeError);
    assert.equal(tm.statsSync().submitted_total, before);
    assert.equal(tm.listTasksSync().length, listed);
  });

  test(`${storeName}: the extremes of the priority range, and options left undefined, are accepted`, async () => {
    const top = tm.submitTask(() => {}, { priority: 2 ** 31 - 1, deadline: undefined });
    const bottom = tm.submitTask(() => {}, { priority: -(2 ** 31), taskId: undefined });
    const none = tm.submitTask(() => {}, { deadline: null });
    assert.equal((await tm.wait(top)).priority, 2 ** 31 - 1);
    assert.equal((await tm.wait(bottom)).priority, -(2 ** 31));
    assert.deepEqual(pick(await tm.wait(none), 'priority', 'deadline'), { priority: 0, deadline: null });
  });

  test(`${storeName}: a JS task that polls isYieldRequested yields with yieldTask and runs again from its checkpoint`, async () => {
    await yieldAndResume(tm, (book) => tm.submitTask((id) => {
      // A JS task reads what it resumes from in its status.
      const { yields, checkpoint, attempt } = tm.getTaskStatus(id);
      return book.run({ id, yields, checkpoint, attempt, shouldYield: () => tm.isYieldRequested(id), yield: () => tm.yieldTask(id) });
    }, { priority: 0 }));
  });

  test(`${storeName}: a named handler yields with context.yield() and is handed the same payload, its checkpoint and yields`, async () => {
    const payloads = [];
    let book = null;
    tm.registerHandler('narrate-chapter', (payload, context) => {
      payloads.push({ payload, yields: context.yields, checkpoint: context.checkpoint });
      return book.run(context);
    });
    await yieldAndResume(tm, (made) => {
      book = made;
      return tm.submitNamed('narrate-chapter', { chapter: 'one' }, { priority: 0 });
    });
    assert.deepEqual(payloads, [
      { payload: { chapter: 'one' }, yields: 0, checkpoint: null },
      { payload: { chapter: 'one' }, yields: 1, checkpoint: { next: 3 } },
    ]);
  });

  test(`${storeName}: cancellation wins over a yield`, async () => {
    const id = tm.submitTask(async (taskId) => {
      await tm.cancel(taskId);
      tm.yieldTask(taskId);
    });
    assert.deepEqual(pick(await tm.wait(id), 'status', 'yields', 'cancel_requested'), { status: 'CANCELLED', yields: 0, cancel_requested: true });
  });

  test(`${storeName}: a yielded task cancelled, or past its deadline, before its next run never runs again`, async () => {
    const runs = [];
    const polite = (name) => async (id) => {
      runs.push(name);
      await until(() => tm.isYieldRequested(id));
      tm.yieldTask(id);
    };
    const cancelled = tm.submitTask(polite('cancelled'), { priority: 0 });
    await until(() => runs.length === 1);
    const first = submitHeldTask(tm, { priority: 10 });
    await first.started;
    assert.deepEqual(pick(tm.getTaskStatus(cancelled), 'status', 'yields', 'queue_position'), { status: 'PENDING', yields: 1, queue_position: 0 });
    assert.equal((await tm.cancel(cancelled)).status, sft.TASK_CANCELLED);
    first.release();
    await tm.wait(first.id);

    const late = tm.submitTask(polite('late'), { priority: 0, deadline: Date.now() / 1000 + 1 });
    await until(() => runs.length === 2);
    const second = submitHeldTask(tm, { priority: 10 });
    await second.started;
    const lateFinal = await tm.wait(late); // its deadline passes while it waits behind the held task
    second.release();
    await tm.wait(second.id);
    assert.deepEqual(pick(tm.getTaskStatus(cancelled), 'status', 'yields'), { status: 'CANCELLED', yields: 1 });
    assert.deepEqual(pick(lateFinal, 'status', 'yields', 'error'), { status: 'FAILED', yields: 1, error: DEADLINE_PASSED_PENDING });
    assert.deepEqual(runs, ['cancelled', 'late']);
  });

  test(`${storeName}: isYieldRequested and yieldTask on an unknown, a pending or a finished task`, async () => {
    assertLibraryError(() => tm.isYieldRequested('no-such-task'), 'SFT_ERR_NOT_FOUND');
    assertLibraryError(() => tm.yieldTask('no-such-task'), 'SFT_ERR_NOT_FOUND');
    assert.throws(() => tm.yieldTask('a\0b'), sft.InvalidArgumentError);
    const gate = submitHeldTask(tm);
    await gate.started;
    const pending = tm.submitTask(() => {}, { priority: 5 });
    assert.equal(tm.isYieldRequested(pending), false);
    assertLibraryError(() => tm.yieldTask(pending), 'SFT_ERR_INVALID_STATE');
    assert.equal(tm.isYieldRequested(gate.id), true);
    assert.equal(tm.getTaskStatus(gate.id).yield_requested, true);
    gate.release();
    await tm.wait(pending);
    assert.equal(tm.isYieldRequested(pending), false);
    assertLibraryError(() => tm.yieldTask(pending), 'SFT_ERR_INVALID_STATE');
  });

  test(`${storeName}: a deadline that passes while pending fails the task unstarted, even while the worker is busy`, async () => {
    const ran = [];
    tm.registerHandler('late', () => void ran.push('named'));
    const gate = submitHeldTask(tm);
    await gate.started;
    const soon = Date.now() / 1000 + 0.3;
    const date = new Date(soon * 1000);
    const ids = {
      seconds: tm.submitTask(() => void ran.push('seconds'), { deadline: soon }),
      date: tm.submitTask(() => void ran.push('date'), { deadline: date }),
      named: tm.submitNamed('late', null, { deadline: soon, priority: 3 }),
      pastAtSubmit: tm.submitTask(() => void ran.push('past'), { deadline: Date.now() / 1000 - 60 }),
    };
    const far = tm.submitTask(() => void ran.push('far'), { deadline: new Date(Date.now() + 3_600_000) });
    assert.equal(tm.getTaskStatus(ids.seconds).deadline, soon);
    assert.equal(tm.getTaskStatus(ids.date).deadline, date.getTime() / 1000);
    // Each wait ends while the held task still holds the worker: the deadline ends them, not the worker.
    for (const [name, id] of Object.entries(ids)) {
      assert.deepEqual(pick(await tm.wait(id), 'status', 'error', 'started_at', 'attempt'),
        { status: 'FAILED', error: DEADLINE_PASSED_PENDING, started_at: null, attempt: 0 }, name);
    }
    assert.equal(tm.getTaskStatus(far).status, sft.TASK_PENDING);
    gate.release();
    assert.deepEqual(pick(await tm.wait(far), 'status', 'error'), { status: 'COMPLETED', error: null });
    await tm.wait(gate.id);
    assert.deepEqual(ran, ['far']);
  });

  test(`${storeName}: a process whose JS task missed its deadline while waiting ends by itself`, async () => {
    const result = await runFixture('deadline-exit.js', [childStore]);
    assert.equal(result.hung, false, `the process did not end by itself\n${result.stdout}${result.stderr}`);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(lastJsonLine(result.stdout), { status: sft.TASK_FAILED, error: DEADLINE_PASSED_PENDING, ran: false });
  });

  test(`${storeName}: a deadline that passes while running aborts the signal, and the task ends CANCELLED`, async () => {
    const seen = [];
    const untilAborted = async (id, signal) => {
      seen.push(signal.aborted);
      await until(() => signal.aborted);
      seen.push(pick(tm.getTaskStatus(id), 'status', 'cancel_requested'), tm.isCancelRequested(id));
    };
    tm.registerHandler('long', (_payload, { id, signal }) => untilAborted(id, signal));
    const fn = tm.submitTask(untilAborted, { deadline: Date.now() / 1000 + 0.3 });
    const fnFinal = await tm.wait(fn);
    const named = tm.submitNamed('long', null, { deadline: new Date(Date.now() + 300) });
    const namedFinal = await tm.wait(named);
    const running = { status: 'PROCESSING', cancel_requested: true };
    assert.deepEqual(seen, [false, running, true, false, running, true]);
    for (const final of [fnFinal, namedFinal]) {
      assert.deepEqual(pick(final, 'status', 'error', 'cancel_requested'),
        { status: 'CANCELLED', error: DEADLINE_PASSED_RUNNING, cancel_requested: true });
    }
  });
}

module.exports = { defineSchedulingTests };
