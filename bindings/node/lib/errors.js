'use strict';

/**
 * An error the library reported, or a wait that ran out of time.
 * `code` is the C result name (e.g. 'SFT_ERR_DUPLICATE_ID'), `result` its number.
 */
class StoryflowTasksError extends Error {
  /**
   * @param {string} message what went wrong, naming the operation
   * @param {string} code the SftResult name
   * @param {number} result the SftResult value
   * @param {ErrorOptions} [options]
   */
  constructor(message, code, result, options) {
    super(message, options);
    this.name = 'StoryflowTasksError';
    this.code = code;
    this.result = result;
  }
}

module.exports = { StoryflowTasksError };
