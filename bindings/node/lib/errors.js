'use strict';

const { Result } = require('./native');

/**
 * An error the library reported, or a wait that ran out of time.
 * `code` is the C result name (e.g. 'SFT_ERR_DUPLICATE_ID'), `result` its number.
 */
class StoryflowTasksError extends Error {
  /**
   * @param {string} message what went wrong, naming the operation
   * @param {string | null} code the SftResult name; null when the call gives no result code
   * @param {number | null} result the SftResult value, null with code
   * @param {ErrorOptions} [options]
   */
  constructor(message, code, result, options) {
    super(message, options);
    this.name = 'StoryflowTasksError';
    this.code = code;
    this.result = result;
  }
}

/**
 * A value refused, by the library (SFT_ERR_INVALID_ARGUMENT) or before the call
 * by the binding because the C side could not carry it (a NUL in a task id, a
 * count beyond 2^64-1, NaN in `extra`): the same error either way.
 */
class InvalidArgumentError extends StoryflowTasksError {
  /**
   * @param {string} message what was refused, naming the operation and the argument
   * @param {ErrorOptions} [options]
   */
  constructor(message, options) {
    super(message.endsWith('(SFT_ERR_INVALID_ARGUMENT)') ? message : `${message} (SFT_ERR_INVALID_ARGUMENT)`,
      'SFT_ERR_INVALID_ARGUMENT', Result.INVALID_ARGUMENT, options);
    this.name = 'InvalidArgumentError';
  }
}

/** The error for a result code other than SFT_OK: `message` already names the operation. */
function libraryError(message, code, result) {
  return result === Result.INVALID_ARGUMENT ? new InvalidArgumentError(message) : new StoryflowTasksError(message, code, result);
}

module.exports = { StoryflowTasksError, InvalidArgumentError, libraryError };
