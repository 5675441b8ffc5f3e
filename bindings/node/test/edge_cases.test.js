'use strict';
// The cross-language edge-case table (tests/cases/edge_cases.json), run in
// Node: one test per case that lists "node", asserting the exact value that
// comes back. The C and Python suites run the same table, so the three
// languages cannot drift apart. Each answer is also written, one line per case
// (`case <name>: <result> <value>`), to target/edge_cases_node.txt at the
// repository root (target/edge_cases_node_ffi-napi.txt for the ffi-napi engine).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const sft = require('..');
const { parseJson, toJson } = require('../lib/json');
const { PACKAGE_ROOT, ENGINE, deferred } = require('./helpers');

const REPOSITORY = path.resolve(PACKAGE_ROOT, '..', '..');
const TABLE = path.join(REPOSITORY, 'tests', 'cases', 'edge_cases.json');
const REPORT = path.join(REPOSITORY, 'target', ENGINE === 'koffi' ? 'edge_cases_node.txt' : `edge_cases_node_${ENGINE}.txt`);

const tm = sft.getTaskManager();
// The table holds integers beyond 2^53 and strings that only a lossless parse keeps.
const { cases } = parseJson(fs.readFileSync(TABLE, 'utf8'));
const lines = [];

/** A table value as the JS value it stands for ($int, $float, $text, $lone_surrogate, $js, $repeat). */
function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value === null || typeof value !== 'object') return value;
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0].startsWith('$')) {
    const tagged = value[keys[0]];
    switch (keys[0]) {
      case '$int': {
        const big = BigInt(tagged);
        return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
      case '$float':
        return { nan: NaN, inf: Infinity, '-inf': -Infinity }[tagged];
      case '$text':
        return tagged;
      case '$lone_surrogate':
        return String.fromCharCode(Number.parseInt(tagged, 16));
      case '$repeat':
        return tagged.text.repeat(tagged.times);
      case '$js':
        return { undefined, symbol: Symbol('edge'), function: () => 1, nan: NaN }[tagged];
      default:
        throw new Error(`unknown tag ${keys[0]}`);
    }
  }
  return Object.fromEntries(keys.map((key) => [key, decode(value[key])]));
}

/** A task held PROCESSING until released or failed. */
async function runningTask(taskId) {
  const started = deferred();
  const gate = deferred();
  tm.submitTask(() => {
    started.resolve();
    const work = setInterval(() => {}, 60_000);
    return gate.promise.finally(() => clearInterval(work));
  }, taskId);
  await started.promise;
  return { release: () => gate.resolve(), fail: (error) => gate.reject(error) };
}

/** Puts task `taskId` in the state the case starts from; returns what to release afterwards. */
async function setUp(state, taskId) {
  if (state === 'unknown') return { cleanUp: async () => {} };
  if (state === 'running') {
    const held = await runningTask(taskId);
    return { held, cleanUp: async () => { held.release(); await tm.wait(taskId); } };
  }
  if (state === 'completed' || state === 'failed') {
    tm.submitTask(() => {
      if (state === 'failed') throw new Error('failed on purpose');
    }, taskId);
    await tm.wait(taskId);
    return { cleanUp: async () => {} };
  }
  // pending or cancelled: queued behind a task held running.
  const blockerId = `${taskId}-blocker`;
  const blocker = await runningTask(blockerId);
  tm.submitTask(() => {}, taskId);
  if (state === 'cancelled') await tm.cancel(taskId);
  return { cleanUp: async () => { blocker.release(); await tm.wait(blockerId); await tm.wait(taskId); } };
}

/** The table's name for how a call ended. */
function outcomeOf(error) {
  if (error instanceof sft.InvalidArgumentError) return 'invalid_argument';
  if (error instanceof sft.StoryflowTasksError) return error.code.replace(/^SFT_ERR_/, '').toLowerCase();
  return `error:${error?.name}`;
}

/** Applies the case's op; resolves with { result, message }. */
async function apply(edgeCase, setup, args) {
  const id = edgeCase.task_id;
  try {
    switch (edgeCase.op) {
      case 'submit':
        tm.submitTask(() => {}, args.task_id);
        await tm.wait(args.task_id);
        return { result: 'ok' };
      case 'update_progress':
        return { result: tm.updateTaskProgress(id, args.current, args.total, args.extra) ? 'ok' : 'false' };
      case 'add_completed_segment':
        return { result: tm.addCompletedSegment(id, args.segment_id, { audio_url: args.audio_url, duration: args.duration }) ? 'ok' : 'false' };
      case 'add_error':
        return { result: tm.addError(id, args.segment_id, args.message) ? 'ok' : 'false' };
      case 'fail':
        setup.held.fail(new Error(args.message));
        await tm.wait(id);
        return { result: 'ok' };
      case 'get_status':
        return { result: tm.getTaskStatus(id) === null ? 'not_found' : 'ok' };
      default:
        throw new Error(`unknown op ${edgeCase.op}`);
    }
  } catch (error) {
    return { result: outcomeOf(error), message: String(error?.message) };
  }
}

/** The task's status, or null, also for an id the binding refuses to pass (a NUL in it). */
function statusOf(taskId) {
  try {
    return tm.getTaskStatus(taskId);
  } catch {
    return null;
  }
}

/** A long value cut for the report line (the assertions use it whole). */
function abridged(text) {
  return text.length <= 160 ? text : `${text.slice(0, 60)}…${text.slice(-60)} (${Buffer.byteLength(text)} bytes)`;
}

/** The value at `where` of a status object. */
function at(status, where) {
  return where.reduce((value, key) => value?.[key], status);
}

for (const edgeCase of cases.filter((c) => c.languages.includes('node'))) {
  test(`edge case: ${edgeCase.name}`, async () => {
    const { expect } = edgeCase;
    const args = decode(edgeCase.args);
    const setup = await setUp(edgeCase.task, edgeCase.task_id);
    let shown = '-';
    try {
      const before = statusOf(edgeCase.task_id);
      const { result, message } = await apply(edgeCase, setup, args);
      const after = statusOf(edgeCase.op === 'submit' && result === 'ok' ? args.task_id : edgeCase.task_id);
      if (message !== undefined) shown = JSON.stringify(message);
      if (expect.path !== undefined && after !== null) shown = toJson(at(after, expect.path), 'value', 'edge case');
      lines.push(`case ${edgeCase.name}: ${result} ${abridged(shown)}`);

      assert.equal(result, expect.result, message);
      if (expect.message_contains !== undefined) assert.ok(message?.includes(expect.message_contains), message);
      if (expect.unchanged) assert.deepEqual(after, before);
      if (expect.path !== undefined) {
        const value = at(after, expect.path);
        const wire = expect.wire_node ?? expect.wire;
        if (wire !== undefined) assert.deepEqual(value, parseJson(wire));
        if (expect.wire_ends_with !== undefined) assert.ok(shown.endsWith(expect.wire_ends_with), shown.slice(-60));
        if (expect.wire_max_bytes !== undefined) assert.ok(Buffer.byteLength(shown) <= expect.wire_max_bytes, `${Buffer.byteLength(shown)} bytes`);
      }
    } finally {
      await setup.cleanUp();
    }
  });
}

test.after(() => {
  fs.mkdirSync(path.dirname(REPORT), { recursive: true });
  fs.writeFileSync(REPORT, `${lines.join('\n')}\n`);
});
