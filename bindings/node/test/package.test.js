'use strict';
// `npm pack` yields a package that carries the library (without its debug
// information) and the licences: installed elsewhere, it loads its own copy
// with STORYFLOW_TASKS_LIB unset and runs a task.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { PACKAGE_ROOT, ENGINE, runCommand, runNode, lastJsonLine } = require('./helpers');

const REPOSITORY = path.resolve(PACKAGE_ROOT, '..', '..');

const NPM_GUARD_MS = 300_000;

test('npm pack carries the library, and the installed package loads it with STORYFLOW_TASKS_LIB unset', async (t) => {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'storyflow-tasks-pack-'));
  t.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

  const packed = await runCommand('npm', ['pack', '--json', '--pack-destination', scratch], {}, PACKAGE_ROOT, NPM_GUARD_MS);
  assert.equal(packed.code, 0, packed.stderr);
  const [{ filename, files }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')));
  const names = files.map((f) => f.path).sort();
  for (const expected of ['index.js', 'index.d.ts', 'README.md', 'LICENSE-MIT', 'LICENSE-APACHE', 'package.json', 'libstoryflow_tasks.so',
    'bin/storyflow-tasks.js', 'lib/feed.js', 'lib/runner.js', 'lib/json.js', 'lib/signatures.js', 'lib/koffi.js', 'lib/ffi-napi.js']) {
    assert.ok(names.includes(expected), `${expected} missing from ${names.join(', ')}`);
  }
  assert.ok(names.every((name) => !name.startsWith('test/') && !name.startsWith('bench/') && !name.startsWith('node_modules/')), names.join(', '));
  for (const copied of ['libstoryflow_tasks.so', 'LICENSE-MIT', 'LICENSE-APACHE']) {
    assert.equal(fs.existsSync(path.join(PACKAGE_ROOT, copied)), false, `postpack left ${copied} in the working tree`);
  }

  const consumer = path.join(scratch, 'consumer');
  fs.mkdirSync(consumer);
  // allowScripts: npm 11 may skip dependency install scripts not listed there.
  const allowScripts = { koffi: true, '@2060.io/ffi-napi': true, '@2060.io/ref-napi': true };
  fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, allowScripts }));
  // koffi ships its native code in a prebuilt package; ffi-napi compiles against /usr/include/node.
  const install = ['install', '--no-audit', '--no-fund', '--prefer-offline', '--no-package-lock', path.join(scratch, filename)];
  if (ENGINE === 'koffi') install.push('--ignore-scripts');
  const installed = await runCommand('npm', install, { npm_config_nodedir: '/usr' }, consumer, NPM_GUARD_MS);
  assert.equal(installed.code, 0, installed.stderr);

  const installedRoot = path.join(consumer, 'node_modules', 'storyflow-tasks');
  for (const licence of ['LICENSE-MIT', 'LICENSE-APACHE']) {
    assert.equal(fs.readFileSync(path.join(installedRoot, licence), 'utf8'), fs.readFileSync(path.join(REPOSITORY, licence), 'utf8'));
  }
  const sections = execFileSync('readelf', ['-S', '-W', path.join(installedRoot, 'libstoryflow_tasks.so')], { encoding: 'utf8' });
  assert.match(sections, /\.dynsym/);
  assert.doesNotMatch(sections, /\.debug_/, 'the packed library still carries debug information');

  const script = `const sft = require('storyflow-tasks');
const tm = sft.getTaskManager();
const id = tm.submitTask(async () => { await null; });
tm.wait(id).then((status) => console.log(JSON.stringify({ libraryPath: tm.libraryPath, engine: tm.engine, status: status.status })));`;
  const result = await runNode(['-e', script], { STORYFLOW_TASKS_LIB: undefined }, consumer);
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(lastJsonLine(result.stdout), {
    libraryPath: path.join(fs.realpathSync(consumer), 'node_modules', 'storyflow-tasks', 'libstoryflow_tasks.so'),
    engine: ENGINE,
    status: 'COMPLETED',
  });

  // npm links the worker command, as `npx storyflow-tasks` runs it.
  const help = await runCommand(path.join(consumer, 'node_modules', '.bin', 'storyflow-tasks'), ['--help'], {}, consumer);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: storyflow-tasks worker /);
});
