'use strict';
// The quick-start runs as written: the repository README shows
// examples/quickstart.js word for word, this package's README points to it and
// names the command, and running that file prints what the README says.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { PACKAGE_ROOT, runNode } = require('./helpers');

const REPOSITORY = path.resolve(PACKAGE_ROOT, '..', '..');

test('the quick-start is examples/quickstart.js, shown once, and prints what the README says', async () => {
  const rootReadme = fs.readFileSync(path.join(REPOSITORY, 'README.md'), 'utf8');
  const packageReadme = fs.readFileSync(path.join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const example = fs.readFileSync(path.join(PACKAGE_ROOT, 'examples', 'quickstart.js'), 'utf8');
  const jsBlocks = (text) => [...text.matchAll(/```js\n([\s\S]*?)```/g)].map((match) => match[1]);
  assert.ok(jsBlocks(rootReadme).includes(example), 'the repository README quick-start differs from examples/quickstart.js');
  assert.ok(!jsBlocks(packageReadme).includes(example), 'the package README repeats the quick-start: link to it instead');
  assert.match(packageReadme, /\]\(\.\.\/\.\.\/README\.md\)/);
  assert.match(packageReadme, /node bindings\/node\/examples\/quickstart\.js/);

  // As the README runs it: from the repository root.
  const result = await runNode([path.join('bindings', 'node', 'examples', 'quickstart.js')], {}, REPOSITORY);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trim().split('\n');
  assert.match(lines[0], /^(PENDING|PROCESSING) 0%$/);
  assert.equal(lines.at(-2), 'COMPLETED 100%');
  assert.equal(lines.at(-1), 'done: true, 3 segments');
});
