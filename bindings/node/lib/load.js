'use strict';
// Finds the shared library and loads it with the chosen FFI engine.

const fs = require('node:fs');
const path = require('node:path');
const { isMainThread } = require('node:worker_threads');
const { makeNative } = require('./native');

const PACKAGE_ROOT = path.resolve(__dirname, '..');

/** The engines and the npm packages each one needs. */
const ENGINES = Object.freeze({
  koffi: { module: './koffi', packages: ['koffi'] },
  'ffi-napi': { module: './ffi-napi', packages: ['@2060.io/ffi-napi', '@2060.io/ref-napi'] },
});

/** The default engine: maintained, and far cheaper per call than ffi-napi. */
const DEFAULT_ENGINE = 'koffi';

/** The library's file name on this platform. */
function libraryFileName(platform = process.platform) {
  if (platform === 'win32') return 'storyflow_tasks.dll';
  if (platform === 'darwin') return 'libstoryflow_tasks.dylib';
  return 'libstoryflow_tasks.so';
}

/**
 * The engine to use: the option, else STORYFLOW_TASKS_ENGINE, else koffi.
 * @param {string | undefined} requested the `engine` option
 * @returns {string}
 */
function chooseEngine(requested) {
  const fromEnv = process.env.STORYFLOW_TASKS_ENGINE;
  const name = requested ?? (fromEnv ? fromEnv : DEFAULT_ENGINE);
  if (!Object.hasOwn(ENGINES, name)) {
    const source = requested !== undefined ? 'the engine option' : 'STORYFLOW_TASKS_ENGINE';
    throw new Error(`storyflow-tasks: unknown FFI engine ${JSON.stringify(name)} (from ${source}); ` +
      `use one of ${Object.keys(ENGINES).map((e) => JSON.stringify(e)).join(', ')}`);
  }
  return name;
}

/**
 * Where the library is looked for, in order: the `libraryPath` option or
 * STORYFLOW_TASKS_LIB when given (then nowhere else), else the copy inside the
 * package, else the repository's target/release.
 * @param {string | undefined} requested the `libraryPath` option
 * @returns {{ place: string, file: string, exclusive: boolean }[]}
 */
function libraryCandidates(requested) {
  if (requested !== undefined) {
    return [{ place: 'the libraryPath option', file: path.resolve(requested), exclusive: true }];
  }
  const fromEnv = process.env.STORYFLOW_TASKS_LIB;
  if (fromEnv) {
    return [{ place: 'STORYFLOW_TASKS_LIB', file: path.resolve(fromEnv), exclusive: true }];
  }
  const name = libraryFileName();
  return [
    { place: 'the copy inside the package', file: path.join(PACKAGE_ROOT, name), exclusive: false },
    { place: "the repository's target/release", file: path.resolve(PACKAGE_ROOT, '..', '..', 'target', 'release', name), exclusive: false },
  ];
}

/** The first library file that exists, or an error naming every place looked at. */
function findLibrary(requested) {
  const candidates = libraryCandidates(requested);
  const found = candidates.find((candidate) => fs.existsSync(candidate.file));
  if (found) return found.file;
  const looked = candidates.map((c) => `${c.place} (${c.file})`).join(', ');
  const hint = candidates[0].exclusive
    ? 'fix the path'
    : 'set STORYFLOW_TASKS_LIB to the library file, or run `make build` in the repository';
  throw new Error(`storyflow-tasks: library not found; looked at ${looked}: ${hint}`);
}

/** Requires an engine module, explaining which packages are missing if it fails. */
function requireEngine(name) {
  const engine = ENGINES[name];
  try {
    return require(engine.module);
  } catch (error) {
    if (error && error.code === 'MODULE_NOT_FOUND') {
      throw new Error(`storyflow-tasks: the ${name} engine needs the npm package(s) ${engine.packages.join(' and ')}, ` +
        `which could not be loaded (${error.message.split('\n')[0]}); install them, or choose another engine`, { cause: error });
    }
    throw error;
  }
}

/**
 * Loads the library with the chosen engine.
 * @param {{ engine?: string, libraryPath?: string }} options
 * @returns {{ native: ReturnType<typeof makeNative>, engine: string, libraryPath: string }}
 */
function loadNative(options = {}) {
  const engine = chooseEngine(options.engine);
  if (engine === 'ffi-napi' && !isMainThread) {
    // @2060.io/ffi-napi crashes the process when a Worker that loaded it ends.
    throw new Error('storyflow-tasks: the ffi-napi engine can only be used on the main thread ' +
      '(ffi-napi crashes when a worker thread that loaded it ends); use the koffi engine in worker threads');
  }
  const libraryPath = findLibrary(options.libraryPath);
  const engineModule = requireEngine(engine);
  let handle;
  try {
    handle = engineModule.open(libraryPath);
  } catch (error) {
    throw new Error(`storyflow-tasks: ${engine} could not load ${libraryPath}: ${error.message}`, { cause: error });
  }
  return { native: makeNative(engine, handle), engine, libraryPath };
}

module.exports = { loadNative, chooseEngine, libraryCandidates, libraryFileName, ENGINES, DEFAULT_ENGINE };
