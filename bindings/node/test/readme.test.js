'use strict';
// The README's quick-start runs as written: its code is examples/quickstart.js,
// word for word, and running that file does what the README says it prints.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { PACKAGE_ROOT, runNode } = require('./helpers');

test('the README quick-start is examples/quickstart.js and prints what the README says', async () => {
  const readme = fs.readFileSync(path.join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const example = fs.readFileSync(path.join(PACKAGE_ROOT, 'examples', 'quickstart.js'), 'utf8');
  const jsBlocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((match) => match[1]);
  assert.ok(jsBlocks.includes(example), 'the README quick-start differs from examples/quickstart.js');
  assert.match(readme, /node bindings\/node\/examples\/quickstart\.js/);

  // As the README runs it: from the repository root.
  const result = await runNode([path.join('bindings', 'node', 'examples', 'quickstart.js')], {}, path.resolve(PACKAGE_ROOT, '..', '..'));
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trim().split('\n');
  assert.match(lines[0], /^(PENDING|PROCESSING) 0%$/);
  assert.equal(lines.at(-2), 'COMPLETED 100%');
  assert.equal(lines.at(-1), 'done: true, 3 segments');
});
