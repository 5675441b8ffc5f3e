'use strict';
// index.d.ts types the whole surface: a strict TypeScript program using every
// public name compiles, and one misusing them does not. tsconfig.json gives
// only the ES5 library and no automatic `types`: index.d.ts itself declares
// what it needs beyond that (Node's types, which bring ES2020).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { PACKAGE_ROOT, runNode } = require('./helpers');

const TSC = path.join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

test('index.d.ts: the surface compiles under tsc --strict', async () => {
  const result = await runNode([TSC, '-p', path.join(__dirname, 'tsconfig.json')]);
  assert.equal(result.code, 0, result.stdout + result.stderr);
});

test('index.d.ts: misuse is a type error', async (t) => {
  const dir = fs.mkdtempSync(path.join(__dirname, '.types-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'misuse.ts'), `import { getTaskManager } from '../..';
const tm = getTaskManager();
tm.submitTask('not a function');
tm.addCompletedSegment('id', { id: 1 }, { audio_url: '/a.wav', duration: 1 });
const wrong: number = tm.getTaskStatus('id');
const rounded: number | undefined = tm.getTaskStatus('id')?.progress.current;
tm.registerHandler('narrate', (payload: string, context: { id: number }) => payload);
`);
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    extends: '../tsconfig.json', files: ['misuse.ts'],
  }));
  const result = await runNode([TSC, '-p', path.join(dir, 'tsconfig.json')]);
  assert.notEqual(result.code, 0);
  assert.equal(result.stdout.match(/error TS/g)?.length, 5, result.stdout);
});
