'use strict';
// The cross-language scheduling table on an SQLite store: this test process's
// manager opens a fresh file (the runner is scheduling-table.js).

const test = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sft = require('..');
const { defineTableTests } = require('./scheduling-table');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'storyflow-tasks-scheduling-table-'));
const tm = sft.getTaskManager();
tm.configureSync({ store: `sqlite:${path.join(scratch, 'tasks.db')}` });
test.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

defineTableTests(tm, 'sqlite');
