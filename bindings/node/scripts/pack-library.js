'use strict';
// `npm pack` / `npm publish` hooks: `copy` (prepack) puts the built library,
// stripped of its debug information, and the repository's licence files inside
// the package so that the tarball carries them; `remove` (postpack) takes them
// out again, so that a stale copy never shadows a fresh `make build` in the
// working tree (the package copy is looked at before target/release).

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { libraryFileName } = require('../lib/load');

const packageRoot = path.resolve(__dirname, '..');
const repositoryRoot = path.resolve(packageRoot, '..', '..');
const packaged = path.join(packageRoot, libraryFileName());
const LICENCES = ['LICENSE-MIT', 'LICENSE-APACHE'];

function fail(message) {
  console.error(`pack-library: ${message}`);
  process.exit(1);
}

function copy() {
  const source = process.env.STORYFLOW_TASKS_LIB
    ? path.resolve(process.env.STORYFLOW_TASKS_LIB)
    : path.join(repositoryRoot, 'target', 'release', libraryFileName());
  if (!fs.existsSync(source)) fail(`${source} does not exist: run \`make build\` in the repository (or set STORYFLOW_TASKS_LIB) before packing`);
  for (const licence of LICENCES) {
    const file = path.join(repositoryRoot, licence);
    if (!fs.existsSync(file)) fail(`${file} does not exist: pack from a checkout of the repository`);
    fs.copyFileSync(file, path.join(packageRoot, licence));
  }
  // The release profile keeps debug information for the repository's own tools;
  // users of the package need none of it (it is most of the file).
  try {
    execFileSync('strip', ['--strip-debug', '-o', packaged, source], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (error) {
    fail(`strip --strip-debug ${source} failed (${error.message}): install binutils`);
  }
  console.error(`pack-library: packed ${source} (debug information stripped) and ${LICENCES.join(', ')}`);
}

function remove() {
  for (const file of [packaged, ...LICENCES.map((licence) => path.join(packageRoot, licence))]) fs.rmSync(file, { force: true });
}

const mode = process.argv[2];
if (mode === 'copy') copy();
else if (mode === 'remove') remove();
else {
  console.error('usage: node scripts/pack-library.js copy|remove');
  process.exit(2);
}
