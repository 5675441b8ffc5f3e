'use strict';
// Priorities, cooperative yield and deadlines in the memory store (the tests
// are in scheduling-cases.js; scheduling_sqlite.test.js runs them on SQLite).

const sft = require('..');
const { defineSchedulingTests } = require('./scheduling-cases');

defineSchedulingTests(sft.getTaskManager(), 'memory', 'memory');
