'use strict';
// `npm pack` / `npm publish` hooks: `copy` (prepack) puts the built library
// inside the package so that the tarball carries it; `remove` (postpack) takes
// it out again, so that a stale copy never shadows a fresh `make build` in the
// working tree (the package copy is looked at before target/release).

const fs = require('node:fs');
const path = require('node:path');
const { libraryFileName } = require('../lib/load');

const packageRoot = path.resolve(__dirname, '..');
const packaged = path.join(packageRoot, libraryFileName());

function copy() {
  const source = process.env.STORYFLOW_TASKS_LIB
    ? path.resolve(process.env.STORYFLOW_TASKS_LIB)
    : path.resolve(packageRoot, '..', '..', 'target', 'release', libraryFileName());
  if (!fs.existsSync(source)) {
    console.error(`pack-library: ${source} does not exist: run \`make build\` in the repository (or set STORYFLOW_TASKS_LIB) before packing`);
    process.exit(1);
  }
  fs.copyFileSync(source, packaged);
  console.error(`pack-library: packed ${source}`);
}

function remove() {
  fs.rmSync(packaged, { force: true });
}

const mode = process.argv[2];
if (mode === 'copy') copy();
else if (mode === 'remove') remove();
else {
  console.error('usage: node scripts/pack-library.js copy|remove');
  process.exit(2);
}
