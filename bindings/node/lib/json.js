'use strict';
// JSON in both directions without losing a digit.
//
// Out of the library: the status, list, event and config texts are serde_json
// output whose integers may exceed 2^53 (progress extras, segment ids). A plain
// JSON.parse would round them; here an integer outside Number.isSafeInteger
// becomes a BigInt and every other number a Number.
//
// Into the library: JSON.stringify turns NaN and Infinity into null and drops
// undefined, functions and symbols, and throws on a BigInt. `toJson` writes
// exactly what it is given or refuses it, naming where the value sits.

const { parse: parseLossless, isInteger } = require('lossless-json');
const { InvalidArgumentError } = require('./errors');

/**
 * A run of 16 digits: the shortest integer text that can exceed 2^53
 * (9007199254740991 has 16). Texts without one hold only safe integers, so
 * JSON.parse reads them exactly and much faster than a parser in JS.
 */
const MAYBE_UNSAFE_INTEGER = /\d{16}/;

/** A number text as a Number, or as a BigInt when a Number would not hold it exactly. */
function parseNumber(text) {
  const number = Number(text);
  return isInteger(text) && !Number.isSafeInteger(number) ? BigInt(text) : number;
}

/**
 * Parses JSON from the library; integers a Number cannot hold exactly come back as BigInt.
 * @param {string} text
 * @returns {any}
 */
function parseJson(text) {
  return MAYBE_UNSAFE_INTEGER.test(text) ? parseLossless(text, null, parseNumber) : JSON.parse(text);
}

/** `text` or null in, the parsed value or null out. */
function parseJsonOrNull(text) {
  return text === null ? null : parseJson(text);
}

/** A short description of a value for error messages. */
function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') {
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return name && name !== 'Object' ? `a ${name} object` : 'an object';
  }
  return typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`;
}

/** Whether `value` is an object literal (or Object.create(null)), not a class instance. */
function isPlainObject(value) {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * Writes `value` as JSON text, exactly: a BigInt as its digits, a Number as the
 * shortest text that reads back as the same double, strings with every character
 * (a lone surrogate as its \u escape, which the library then refuses by name).
 * Refuses what JSON cannot carry (NaN, ±Infinity, undefined, functions,
 * symbols, array holes, symbol keys, cycles, class instances such as Date or
 * Map) with an InvalidArgumentError naming the argument and the place inside it.
 * @param {unknown} value
 * @param {string} argument the argument's name, e.g. 'extra'
 * @param {string} operation the public method, e.g. 'updateTaskProgress'
 * @returns {string}
 */
function toJson(value, argument, operation) {
  const ancestors = new Set();
  const refuse = (path, why) => {
    throw new InvalidArgumentError(`${operation}: ${path} ${why}`);
  };

  function write(item, path) {
    switch (typeof item) {
      case 'string':
        return JSON.stringify(item);
      case 'boolean':
        return item ? 'true' : 'false';
      case 'bigint':
        return item.toString();
      case 'number':
        if (!Number.isFinite(item)) refuse(path, `is ${item}, which JSON cannot carry`);
        // A Number is a double: one beyond 2^53 goes out in exponent form, so that it stays
        // a float and comes back the same Number (a BigInt is how to send an exact integer).
        return Number.isSafeInteger(item) || !Number.isInteger(item) ? JSON.stringify(item) : item.toExponential();
      case 'object':
        if (item === null) return 'null';
        return writeContainer(item, path);
      default:
        return refuse(path, `is ${describe(item)}, which JSON cannot carry`);
    }
  }

  function writeContainer(item, path) {
    if (ancestors.has(item)) refuse(path, 'refers back to an object that contains it, which JSON cannot carry');
    const isArray = Array.isArray(item);
    if (!isArray && !isPlainObject(item)) {
      refuse(path, `is ${describe(item)}; only plain objects, arrays, strings, finite numbers, bigints, booleans and null go into JSON`);
    }
    if (Object.getOwnPropertySymbols(item).length > 0) refuse(path, 'has a symbol key, which JSON cannot carry');
    ancestors.add(item);
    try {
      if (isArray) {
        const parts = [];
        for (let i = 0; i < item.length; i++) {
          if (!Object.hasOwn(item, i)) refuse(`${path}[${i}]`, 'is a hole in the array, which JSON cannot carry');
          parts.push(write(item[i], `${path}[${i}]`));
        }
        return `[${parts.join(',')}]`;
      }
      const parts = [];
      for (const key of Object.keys(item)) {
        const inner = /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
        parts.push(`${JSON.stringify(key)}:${write(item[key], inner)}`);
      }
      return `{${parts.join(',')}}`;
    } finally {
      ancestors.delete(item);
    }
  }

  return write(value, argument);
}

module.exports = { parseJson, parseJsonOrNull, toJson, describe };
