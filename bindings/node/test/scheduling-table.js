'use strict';
// The cross-language scheduling table (tests/cases/scheduling.json), run in
// Node: one test per case that lists "node", defined by
// scheduling_table.test.js (the memory store) and
// scheduling_table_sqlite.test.js (an SQLite file). The table's tasks are C
// external tasks, PROCESSING once the worker reaches them and holding it until
// the table finishes them; here each is a JS task whose every run holds the
// worker until the table finishes it. A `yield` step calls tm.yieldTask(id)
// for the task, then finishes the run, as the C runner calls sft_yield_task
// and sft_finish_task. Each answer is written (`case <name> (<store>): ok`, or
// the step that differed) to target/scheduling_node_<store>.txt at the
// repository root (…_ffi-napi.txt for the ffi-napi engine).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const sft = require('..');
const { parseJson } = require('../lib/json');
const { PACKAGE_ROOT, ENGINE } = require('./helpers');

const REPOSITORY = path.resolve(PACKAGE_ROOT, '..', '..');
const TABLE = path.join(REPOSITORY, 'tests', 'cases', 'scheduling.json');
const FINISHED = new Set([sft.TASK_COMPLETED, sft.TASK_FAILED, sft.TASK_CANCELLED]);

/** JSON equality: numbers by value (1 and 1.0 are one JSON number anyway), everything else by type and value. */
function same(actual, expected) {
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((item, i) => same(actual[i], item));
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return false;
    const keys = Object.keys(expected);
    return keys.length === Object.keys(actual).length && keys.every((key) => Object.hasOwn(actual, key) && same(actual[key], expected[key]));
  }
  return actual === expected;
}

/** The fields of `expect` that `found` does not hold, described. */
function mismatches(found, expect) {
  if (found === null) return ['there is no such task'];
  return Object.entries(expect).filter(([key, value]) => !Object.hasOwn(found, key) || !same(found[key], value))
    .map(([key, value]) => `${key} is ${JSON.stringify(found[key])}, not ${JSON.stringify(value)}`);
}

/** An error in the table's words: the lower-case result name. */
function outcomeOf(error) {
  if (error instanceof sft.StoryflowTasksError && error.code !== null) return error.code.replace(/^SFT_ERR_/, '').toLowerCase();
  return `threw ${error?.name}: ${error?.message}`;
}

/** A table task: each run holds the worker until `finish()` lets it return. */
class HeldTask {
  #release = null;
  #early = 0;

  run() {
    // Like real work, a held run keeps the process alive until it returns.
    const work = setInterval(() => {}, 60_000);
    return new Promise((resolve) => {
      if (this.#early > 0) {
        this.#early--;
        resolve();
      } else {
        this.#release = resolve;
      }
    }).finally(() => clearInterval(work));
  }

  /** Lets the current run return (or the next one, if it has not begun yet). */
  finish() {
    if (this.#release === null) {
      this.#early++;
      return;
    }
    const release = this.#release;
    this.#release = null;
    release();
  }
}

class Table {
  /** @param {import('..').TaskManager} tm */
  constructor(tm) {
    this.tm = tm;
    /** @type {Map<string, HeldTask>} */
    this.held = new Map();
  }

  /**
   * Follows the task's changes until `done(status)` holds or it is final; its status then.
   * Each condition waited for lasts once it holds, so coalesced changes lose none.
   */
  async until(taskId, done) {
    let last = this.tm.getTaskStatus(taskId);
    if (last === null) return null;
    for await (const status of this.tm.watch(taskId)) {
      last = status;
      if (done(status)) break;
    }
    return last;
  }

  /** Lets the running task return, and waits until its run's end is recorded (final, or yielded). */
  async endRun(taskId) {
    const before = this.tm.getTaskStatus(taskId);
    const held = this.held.get(taskId);
    if (before === null || held === undefined) return `${taskId} is not a task of the table`;
    held.finish();
    const after = await this.until(taskId, (status) => status.yields > before.yields || FINISHED.has(status.status));
    return after === null ? `${taskId} left the registry` : null;
  }

  /** Runs one step; null if it went as the table says, else what differed. */
  async step(step) {
    const { tm } = this;
    const { expect } = step;
    if (step.submit !== undefined) {
      const options = { ...(step.options ?? {}), taskId: step.submit };
      if (options.deadline_in !== undefined) {
        options.deadline = Date.now() / 1000 + options.deadline_in;
        delete options.deadline_in;
      }
      const held = new HeldTask();
      let outcome = 'ok';
      let message = '';
      try {
        tm.submitTask(() => held.run(), options);
        this.held.set(step.submit, held);
      } catch (error) {
        outcome = outcomeOf(error);
        message = String(error?.message);
      }
      const wanted = step.expect_error ?? 'ok';
      if (outcome !== wanted) return `submit ${step.submit}: ${outcome} (${message}), expected ${wanted}`;
      if (step.message_contains !== undefined && !message.includes(step.message_contains)) {
        return `submit ${step.submit}: ${JSON.stringify(message)} lacks ${JSON.stringify(step.message_contains)}`;
      }
      return null;
    }
    if (step.started !== undefined) {
      const status = await this.until(step.started, (s) => s.status === sft.TASK_PROCESSING);
      return status?.status === sft.TASK_PROCESSING ? null : `never started: ${JSON.stringify(status?.status)}`;
    }
    if (step.finish !== undefined) return this.endRun(step.finish);
    if (step.yield !== undefined) {
      try {
        tm.yieldTask(step.yield);
      } catch (error) {
        const outcome = outcomeOf(error);
        return outcome === step.expect_error ? null : `yield ${step.yield}: ${outcome}`;
      }
      if (step.expect_error !== undefined) return `yield ${step.yield}: ok, expected ${step.expect_error}`;
      return this.endRun(step.yield);
    }
    if (step.cancel !== undefined) {
      await tm.cancel(step.cancel);
      return null;
    }
    if (step.status !== undefined) return mismatches(tm.getTaskStatus(step.status), expect).join('; ') || null;
    if (step.until !== undefined) {
      const status = await this.until(step.until, (s) => mismatches(s, expect).length === 0);
      return mismatches(status, expect).join('; ') || null;
    }
    if (step.finished !== undefined) return mismatches(await tm.wait(step.finished), expect).join('; ') || null;
    if (step.yield_requested !== undefined) {
      const requested = tm.isYieldRequested(step.yield_requested);
      return requested === expect ? null : `isYieldRequested is ${requested}, not ${expect}`;
    }
    if (step.missing !== undefined) {
      const status = tm.getTaskStatus(step.missing);
      return status === null ? null : `${step.missing} exists: ${status.status}`;
    }
    if (step.stats !== undefined) return mismatches(tm.statsSync(), step.stats).join('; ') || null;
    return `unknown step ${JSON.stringify(step)}`;
  }

  /** Runs a case's steps in order; null if each went as the table says, else the first that did not. */
  async runCase(testCase) {
    this.held = new Map();
    try {
      for (const [index, step] of testCase.steps.entries()) {
        let problem;
        try {
          problem = await this.step(step);
        } catch (error) {
          problem = `threw ${error?.name}: ${error?.message}`;
        }
        if (problem !== null) return `step ${index} ${JSON.stringify(step)}: ${problem}`;
      }
      return null;
    } finally {
      await this.release();
    }
  }

  /** Ends every task a failed case left behind, so that the next case has the worker. */
  async release() {
    for (const [taskId, held] of this.held) {
      const status = this.tm.getTaskStatus(taskId);
      if (status === null || FINISHED.has(status.status)) continue;
      await this.tm.cancel(taskId);
      if (status.status === sft.TASK_PROCESSING) {
        held.finish();
        await this.tm.wait(taskId);
      }
    }
  }
}

/**
 * Defines one test per Node case of the table, run on `tm`, whose store is `storeName`.
 * @param {import('..').TaskManager} tm
 * @param {string} storeName
 */
function defineTableTests(tm, storeName) {
  const { cases } = parseJson(fs.readFileSync(TABLE, 'utf8'));
  const nodeCases = cases.filter((c) => c.languages.includes('node'));
  const table = new Table(tm);
  const lines = [];
  const report = path.join(REPOSITORY, 'target', `scheduling_node_${storeName}${ENGINE === 'koffi' ? '' : `_${ENGINE}`}.txt`);

  test(`${storeName}: the table has Node cases, each named once`, () => {
    assert.ok(nodeCases.length >= 5);
    assert.equal(new Set(nodeCases.map((c) => c.name)).size, nodeCases.length);
  });

  for (const testCase of nodeCases) {
    test(`${storeName}: scheduling case: ${testCase.name}`, async () => {
      const problem = await table.runCase(testCase);
      lines.push(`case ${testCase.name} (${storeName}): ${problem === null ? 'ok' : `FAILED ${problem}`}`);
      assert.equal(problem, null);
    });
  }

  test.after(() => {
    fs.mkdirSync(path.dirname(report), { recursive: true });
    fs.writeFileSync(report, `${lines.join('\n')}\n`);
  });
}

module.exports = { defineTableTests };
