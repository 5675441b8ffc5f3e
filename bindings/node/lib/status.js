'use strict';
// Task states and the small helpers around status objects.

const { parseJsonOrNull } = require('./json');

const TASK_PENDING = 'PENDING';
const TASK_PROCESSING = 'PROCESSING';
const TASK_COMPLETED = 'COMPLETED';
const TASK_FAILED = 'FAILED';
const TASK_CANCELLED = 'CANCELLED';

const FINISHED_STATES = new Set([TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED]);

/** Whether a status object is final (COMPLETED, FAILED or CANCELLED). */
function isFinished(status) {
  return status !== null && FINISHED_STATES.has(status.status);
}

/** Parses a status JSON string from the library losslessly; null stays null. */
const parseStatus = parseJsonOrNull;

module.exports = { TASK_PENDING, TASK_PROCESSING, TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED, isFinished, parseStatus };
