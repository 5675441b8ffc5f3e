'use strict';
// The package's one signature table (lib/signatures.js) and its result codes
// (lib/native.js) against include/storyflow_tasks.h, parsed here: a function
// the header changes or drops, or a renumbered result, fails this test instead
// of corrupting a call at run time.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { PACKAGE_ROOT } = require('./helpers');
const { FUNCTIONS, TYPES, parsePrototype } = require('../lib/signatures');
const { Result } = require('../lib/native');
const { loadNative } = require('../lib/load');

const HEADER = path.resolve(PACKAGE_ROOT, '..', '..', 'include', 'storyflow_tasks.h');

/** The header's text without comments and preprocessor lines. */
function headerCode() {
  return fs.readFileSync(HEADER, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, ' ')
    .replace(/\/\/.*$/gm, ' ')
    .replace(/^\s*#.*$/gm, ' ');
}

/** Every function the header declares, by name: { name, returns, params }. */
function headerFunctions() {
  const declarations = headerCode().match(/[\w\s*]+?\bsft_\w+\s*\([^)]*\)\s*;/g) ?? [];
  return new Map(declarations.map((text) => {
    const parsed = parsePrototype(text);
    return [parsed.name, parsed];
  }));
}

test('the header parses into the functions it declares', () => {
  const declared = headerFunctions();
  assert.ok(declared.size >= 20, `only ${declared.size} functions found in ${HEADER}`);
  assert.deepEqual(declared.get('sft_cancel_task'), { name: 'sft_cancel_task', returns: 'SftResult', params: ['const char *'] });
});

test('every function of the signature table is declared by the header with the same types', () => {
  const declared = headerFunctions();
  for (const fn of FUNCTIONS) {
    const inHeader = declared.get(fn.name);
    assert.ok(inHeader, `${fn.name} is not declared in ${HEADER}`);
    assert.deepEqual(fn, inHeader, `${fn.name}: the table and the header differ`);
  }
});

test('every C type of the table has both engine spellings', () => {
  for (const fn of FUNCTIONS) {
    for (const type of [fn.returns, ...fn.params]) {
      assert.ok(Object.hasOwn(TYPES, type), `${fn.name}: no engine type for ${type}`);
    }
  }
});

test('the result codes are the SftResult enum of the header, names and values', () => {
  const body = /enum\s+SftResult[^{]*\{([^}]*)\}/.exec(headerCode());
  assert.ok(body, 'enum SftResult not found');
  const inHeader = Object.fromEntries([...body[1].matchAll(/\b(SFT_\w+)\s*=\s*(\d+)/g)].map(([, name, value]) => [name, Number(value)]));
  const ours = Object.fromEntries(Object.entries(Result).map(([key, value]) => [key === 'OK' ? 'SFT_OK' : `SFT_ERR_${key}`, value]));
  assert.deepEqual(ours, inHeader);
});

test('the loaded library names each result code as the table does', () => {
  const { native } = loadNative();
  for (const [key, value] of Object.entries(Result)) {
    assert.equal(native.resultName(value), key === 'OK' ? 'SFT_OK' : `SFT_ERR_${key}`);
  }
});
