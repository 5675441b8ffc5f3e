'use strict';
// The koffi engine: declares the C functions of lib/signatures.js with koffi
// (3.x, pointers are BigInt) and gives lib/native.js the few pointer helpers
// that differ between engines.

const koffi = require('koffi');
const { FUNCTIONS, engineType } = require('./signatures');

/**
 * Loads the library with koffi.
 * @param {string} libraryPath the shared library file
 * @returns {import('./native').EngineHandle}
 */
function open(libraryPath) {
  const lib = koffi.load(libraryPath);
  const fns = {};
  for (const { name, returns, params } of FUNCTIONS) {
    const koffiParams = params.map((type) => engineType(type, 'koffi')).join(', ');
    fns[name] = lib.func(`${engineType(returns, 'koffi')} ${name}(${koffiParams || 'void'})`);
  }
  return {
    fns,
    newOutPointer: () => [null],
    readOutPointer: (out) => out[0],
    newOutBool: () => [false],
    readOutBool: (out) => out[0] === true,
    newOutUint64: () => [0],
    readOutUint64: (out) => BigInt(out[0]),
    isNull: (pointer) => pointer === null || pointer === 0n,
    readString: (pointer) => koffi.decode.string(pointer),
    asUint64: (value) => value,
  };
}

module.exports = { name: 'koffi', open };
