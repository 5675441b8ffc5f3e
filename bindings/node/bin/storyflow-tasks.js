#!/usr/bin/env node
'use strict';
// The worker command: runs named handlers in a process of their own, so that
// the API processes keep their event loop for requests (as `rq worker` and
// `celery worker` do for Python). It loads the modules that register the
// handlers, says in one line what it serves and from which store, and serves
// until SIGINT or SIGTERM.

const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { parseArgs } = require('node:util');
const { getTaskManager, StoryflowTasksError } = require('..');

const PROGRAM = 'storyflow-tasks';
const DEFAULT_SHUTDOWN_TIMEOUT_SECS = 30;

const USAGE = `Usage: ${PROGRAM} worker [--store STORE] --require MODULE [--require MODULE ...] [--shutdown-timeout SECS]

Runs the named handlers that MODULE registers (tm.registerHandler) for every
process of the store, one task at a time, until SIGINT or SIGTERM.

Options:
  --store STORE             'sqlite:<path>' (shared by every process that opens
                            the file) or 'memory'; default: STORYFLOW_TASKS_STORE,
                            else memory
  -r, --require MODULE      a module to load, as require() finds it from the
                            current directory ('./tasks.js', a package name);
                            repeatable
  --shutdown-timeout SECS   on SIGINT/SIGTERM, how long the running task has to
                            end after it is asked to stop; either way it is
                            interrupted, not finished, and resumes in the next
                            worker (default ${DEFAULT_SHUTDOWN_TIMEOUT_SECS})
  -h, --help                this text

A second SIGINT or SIGTERM exits at once.`;

/** A command-line mistake: reported with the usage hint, exit code 2. */
class UsageError extends Error {}

/** The options of `worker`, checked. */
function parseWorkerArgs(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        store: { type: 'string' },
        require: { type: 'string', short: 'r', multiple: true },
        'shutdown-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError(error.message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { help: true };
  if (positionals.length === 0) throw new UsageError('no command given: the command is `worker`');
  if (positionals[0] !== 'worker') throw new UsageError(`unknown command ${JSON.stringify(positionals[0])}: the command is \`worker\``);
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`);
  const modules = values.require ?? [];
  if (modules.length === 0) throw new UsageError('no --require MODULE given: name the module(s) that register the handlers');
  let shutdownTimeoutSecs = DEFAULT_SHUTDOWN_TIMEOUT_SECS;
  if (values['shutdown-timeout'] !== undefined) {
    shutdownTimeoutSecs = Number(values['shutdown-timeout']);
    if (!Number.isFinite(shutdownTimeoutSecs) || shutdownTimeoutSecs < 0 || shutdownTimeoutSecs * 1000 > 2 ** 31 - 1) {
      throw new UsageError(`--shutdown-timeout must be a number of seconds >= 0, got ${JSON.stringify(values['shutdown-timeout'])}`);
    }
  }
  return { help: false, store: values.store, modules, shutdownTimeoutSecs };
}

/** Loads a module as require() finds it from the current directory; an ES module by import(). */
async function loadModule(spec) {
  let file;
  try {
    file = require.resolve(spec, { paths: [process.cwd()] });
  } catch (error) {
    throw new Error(`could not load ${spec}: no such module from ${process.cwd()}`, { cause: error });
  }
  try {
    require(file);
  } catch (error) {
    if (error?.code !== 'ERR_REQUIRE_ESM') throw error;
    await import(pathToFileURL(file).href);
  }
}

/** Serves until a signal; resolves with the exit code. */
async function serve({ store, modules, shutdownTimeoutSecs }) {
  const tm = getTaskManager();
  if (store !== undefined) tm.configureSync({ store });
  // Opens the store now, so that a bad one is reported as such before any module runs.
  tm.statsSync();
  for (const spec of modules) {
    try {
      await loadModule(spec);
    } catch (error) {
      if (error?.message?.startsWith(`could not load ${spec}:`)) throw error;
      // The module's own failure: its stack says where.
      throw new Error(`could not load ${spec}: ${error?.stack ?? error}`, { cause: error });
    }
  }
  const names = tm.handlerNames();
  if (names.length === 0) {
    throw new Error(`${modules.join(', ')} registered no handler: call registerHandler(name, fn) of ` +
      `${path.resolve(__dirname, '..')} (this package) in them`);
  }
  console.log(`${PROGRAM} worker ${process.pid}: serving ${names.join(', ')} from ${tm.getConfig().store} ` +
    `(engine ${tm.engine}); stop with SIGINT or SIGTERM`);

  // Registered handlers do not hold the process by themselves: the worker does.
  const hold = setInterval(() => {}, 2 ** 31 - 1);
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal) => {
      if (stopping) {
        console.error(`${PROGRAM} worker ${process.pid}: ${signal} again: exiting now`);
        resolve(1);
        return;
      }
      stopping = true;
      console.error(`${PROGRAM} worker ${process.pid}: ${signal}: stopping; a running task is asked to stop ` +
        `and has ${shutdownTimeoutSecs} s to end`);
      tm.shutdown({ timeout: shutdownTimeoutSecs * 1000 }).then(() => {
        console.error(`${PROGRAM} worker ${process.pid}: stopped`);
        resolve(0);
      }, (error) => {
        const timedOut = error instanceof StoryflowTasksError && error.code === 'SFT_ERR_TIMEOUT';
        console.error(`${PROGRAM} worker ${process.pid}: ` + (timedOut
          ? `the running task did not end within ${shutdownTimeoutSecs} s: exiting; it resumes in another worker`
          : `stopping failed: ${error.message}`));
        resolve(1);
      }).finally(() => clearInterval(hold));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

async function main(argv) {
  let options;
  try {
    options = parseWorkerArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${PROGRAM}: ${error.message}\nTry \`${PROGRAM} --help\`.`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    return await serve(options);
  } catch (error) {
    console.error(`${PROGRAM} worker: ${error.message}`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code));
