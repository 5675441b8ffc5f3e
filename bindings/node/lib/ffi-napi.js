'use strict';
// The ffi-napi engine, through the maintained fork @2060.io/ffi-napi (upstream
// ffi-napi 4.0.3 does not compile on current Node) and its ref-napi types.

const ffi = require('@2060.io/ffi-napi');
const ref = require('@2060.io/ref-napi');
const { FUNCTIONS, engineType } = require('./signatures');

/**
 * Loads the library with ffi-napi.
 * @param {string} libraryPath the shared library file
 * @returns {import('./native').EngineHandle}
 */
function open(libraryPath) {
  const declarations = {};
  for (const { name, returns, params } of FUNCTIONS) {
    declarations[name] = [ref.coerceType(engineType(returns, 'ffi')), params.map((type) => ref.coerceType(engineType(type, 'ffi')))];
  }
  const fns = ffi.Library(libraryPath, declarations);
  return {
    fns,
    // Plain zeroed Buffers: several times cheaper than ref.alloc() and deref().
    newOutPointer: () => Buffer.alloc(ref.sizeof.pointer),
    readOutPointer: (out) => ref.readPointer(out, 0),
    newOutBool: () => Buffer.alloc(1),
    readOutBool: (out) => out[0] !== 0,
    newOutUint64: () => Buffer.alloc(8),
    readOutUint64: (out) => out.readBigUInt64LE(0),
    isNull: (pointer) => ref.isNull(pointer),
    readString: (pointer) => ref.readCString(pointer, 0),
    // ref-napi takes 64-bit integers beyond 2^53 as decimal strings.
    asUint64: (value) => (typeof value === 'bigint' ? value.toString() : value),
  };
}

module.exports = { name: 'ffi-napi', open };
