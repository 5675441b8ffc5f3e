'use strict';
// Shared by the test files: the manager under test, child processes, and
// promises that tests settle themselves.

const path = require('node:path');
const { execFile, spawn } = require('node:child_process');
const readline = require('node:readline');

const PACKAGE_ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(__dirname, 'fixtures');

/** The engine this run tests: run_tests.sh runs every file once per engine. */
const ENGINE = process.env.STORYFLOW_TASKS_ENGINE || 'koffi';

/** A child that has not ended after this long is reported as hung (a guard, not a timing assertion). */
const CHILD_HANG_GUARD_MS = 60_000;

/**
 * Runs `node <fixture> ...args` with the engine under test and resolves with
 * how it ended; never rejects, so that a test can assert on a failure too.
 * @returns {Promise<{ code: number | null, signal: string | null, stdout: string, stderr: string, hung: boolean }>}
 */
function runFixture(fixture, args = [], env = {}) {
  return runNode([path.join(FIXTURES, fixture), ...args], env);
}

/** Runs node with `argv`, the engine under test in its environment, plus `env` (undefined values unset). */
function runNode(argv, env = {}, cwd = PACKAGE_ROOT) {
  return runCommand(process.execPath, argv, env, cwd);
}

/** Runs `file argv...` as runNode does; for npm, give the hang guard more room. */
function runCommand(file, argv, env = {}, cwd = PACKAGE_ROOT, timeout = CHILD_HANG_GUARD_MS) {
  const childEnv = { ...process.env, STORYFLOW_TASKS_ENGINE: ENGINE };
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[key];
    else childEnv[key] = value;
  }
  return new Promise((resolve) => {
    execFile(file, argv, { env: childEnv, cwd, timeout, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        const signal = error ? error.signal ?? null : null;
        resolve({ code, signal, stdout, stderr, hung: Boolean(error && error.killed) });
      });
  });
}

/** The last line of a child's stdout, parsed as JSON (fixtures report that way). */
function lastJsonLine(stdout) {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

/** A promise with its resolve/reject in hand. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Submits a JS task that reports when it starts and then runs until released;
 * `taskIdOrOptions` as submitTask takes it.
 * @returns {{ id: string, started: Promise<AbortSignal>, release: (value?: unknown) => void, fail: (error: unknown) => void }}
 */
function submitHeldTask(tm, taskIdOrOptions) {
  const started = deferred();
  const gate = deferred();
  const id = tm.submitTask((_id, signal) => {
    started.resolve(signal);
    // Like real work (a socket, a child process), the held task keeps the process alive
    // until it settles: while a JS task runs, the binding leaves that to the task itself.
    const work = setInterval(() => {}, 60_000);
    return gate.promise.finally(() => clearInterval(work));
  }, taskIdOrOptions);
  return { id, started: started.promise, release: gate.resolve, fail: gate.reject };
}

/** The worker command as npm links it. */
const WORKER_BIN = path.join(PACKAGE_ROOT, 'bin', 'storyflow-tasks.js');

/**
 * Starts `storyflow-tasks ...args` (the package's bin) as a child process that
 * the test follows line by line; killed with SIGKILL if still running after the hang guard.
 * @returns {{
 *   child: import('node:child_process').ChildProcess,
 *   line: (predicate: (line: string) => boolean) => Promise<string>,
 *   jsonLine: (predicate: (value: any) => boolean) => Promise<any>,
 *   exited: Promise<{ code: number | null, signal: string | null, stdout: string, stderr: string }>,
 * }}
 */
function startWorker(args, env = {}) {
  const childEnv = { ...process.env, STORYFLOW_TASKS_ENGINE: ENGINE, ...env };
  const child = spawn(process.execPath, [WORKER_BIN, ...args], { cwd: PACKAGE_ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const guard = setTimeout(() => child.kill('SIGKILL'), 2 * CHILD_HANG_GUARD_MS);
  const lines = [];
  const waiting = new Set();
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    stderr += chunk;
  });
  readline.createInterface({ input: child.stdout }).on('line', (text) => {
    stdout += `${text}\n`;
    lines.push(text);
    for (const waiter of waiting) {
      if (waiter.predicate(text)) {
        waiting.delete(waiter);
        waiter.resolve(text);
      }
    }
  });
  const exited = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      for (const waiter of waiting) waiter.reject(new Error(`the worker ended (code ${code}, signal ${signal}) before printing the line\n${stdout}${stderr}`));
      waiting.clear();
      resolve({ code, signal, stdout, stderr });
    });
  });
  /** The first line (printed already or to come) for which `predicate` holds. */
  const line = (predicate) => {
    const seen = lines.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    if (child.exitCode !== null || child.signalCode !== null) return Promise.reject(new Error(`the worker has ended\n${stdout}${stderr}`));
    return new Promise((resolve, reject) => waiting.add({ predicate, resolve, reject }));
  };
  const parse = (text) => {
    try {
      return JSON.parse(text);
    } catch {
      return undefined;
    }
  };
  const jsonLine = (predicate) => line((text) => {
    const value = parse(text);
    return value !== undefined && predicate(value);
  }).then(parse);
  return { child, line, jsonLine, exited };
}

module.exports = {
  PACKAGE_ROOT, ENGINE, WORKER_BIN, runFixture, runNode, runCommand, lastJsonLine, deferred, submitHeldTask, startWorker,
};
