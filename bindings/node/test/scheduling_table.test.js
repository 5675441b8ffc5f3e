'use strict';
// The cross-language scheduling table on the memory store (the runner is
// scheduling-table.js; scheduling_table_sqlite.test.js runs it on SQLite).

const sft = require('..');
const { defineTableTests } = require('./scheduling-table');

defineTableTests(sft.getTaskManager(), 'memory');
