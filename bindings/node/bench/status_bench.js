'use strict';
// Per-call cost of getTaskStatus and submitTask on each FFI engine, measured
// side by side: child processes alternate koffi, ffi-napi, koffi, ... (the
// engine is fixed per process), each timing several batches of calls. Prints
// one JSON object of median/min/max nanoseconds per call over all batches.
//
//   node bench/status_bench.js [--runs 3] [--batches 5] [--calls 2000]
// Needs the library (make build) and both engines installed (npm ci).

const { execFileSync } = require('node:child_process');
const path = require('node:path');

const ENGINES = [['koffi', 'koffi'], ['ffi-napi', 'ffinapi']];

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`--${name} needs a positive integer`);
  return value;
}

/** In a child: times `batches` batches of `calls` calls of each operation; prints ns per call. */
function measure(batches, calls) {
  const { getTaskManager } = require('..');
  const tm = getTaskManager();
  let release;
  // Holds the worker so that every submitted task stays pending: the cost
  // measured is the call alone, not the tasks running alongside.
  const holder = tm.submitTask(() => new Promise((resolve) => {
    release = resolve;
  }));
  tm.updateTaskProgress(holder, 3, 10, { current_segment_id: 7 });
  tm.addCompletedSegment(holder, 7, { audio_url: '/media/audio/7.wav', duration: 2.5 });
  const nsPerCall = (fn) => {
    const start = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) fn();
    return Number(process.hrtime.bigint() - start) / calls;
  };
  const noop = () => {};
  nsPerCall(() => tm.getTaskStatus(holder));
  const result = { status: [], submit: [] };
  for (let b = 0; b < batches; b++) {
    result.status.push(nsPerCall(() => tm.getTaskStatus(holder)));
    result.submit.push(nsPerCall(() => tm.submitTask(noop)));
  }
  process.stdout.write(JSON.stringify(result));
  // Let the submitted tasks drain before exiting, so that the next run starts on an idle machine.
  const last = tm.listTasksSync('PENDING').at(-1);
  release?.();
  if (last) tm.wait(last.task_id);
}

function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median: Math.round(median), min: Math.round(sorted[0]), max: Math.round(sorted.at(-1)), unit: 'ns' };
}

function main() {
  if (process.argv[2] === '--child') {
    measure(Number(process.argv[3]), Number(process.argv[4]));
    return;
  }
  const runs = option('runs', 3);
  const batches = option('batches', 5);
  const calls = option('calls', 2000);
  const samples = {};
  for (let run = 0; run < runs; run++) {
    for (const [engine, key] of ENGINES) {
      const out = execFileSync(process.execPath, [__filename, '--child', String(batches), String(calls)], {
        env: { ...process.env, STORYFLOW_TASKS_ENGINE: engine },
        cwd: path.resolve(__dirname, '..'),
        encoding: 'utf8',
      });
      const { status, submit } = JSON.parse(out);
      (samples[`node_${key}_status_ns`] ??= []).push(...status);
      (samples[`node_${key}_submit_ns`] ??= []).push(...submit);
    }
  }
  const report = {};
  for (const name of ['node_koffi_status_ns', 'node_ffinapi_status_ns', 'node_koffi_submit_ns', 'node_ffinapi_submit_ns']) {
    report[name] = summary(samples[name]);
  }
  console.error(`${runs} runs per engine, alternating; ${batches} batches of ${calls} calls each`);
  console.log(JSON.stringify(report, null, 2));
}

main();
