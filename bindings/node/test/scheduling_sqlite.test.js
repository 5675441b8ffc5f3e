'use strict';
// Priorities, cooperative yield and deadlines in an SQLite store: this test
// process's manager opens a fresh file (the tests are in scheduling-cases.js).

const test = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sft = require('..');
const { defineSchedulingTests } = require('./scheduling-cases');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'storyflow-tasks-scheduling-'));
const tm = sft.getTaskManager();
tm.configureSync({ store: `sqlite:${path.join(scratch, 'tasks.db')}` });
test.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

defineSchedulingTests(tm, 'sqlite', `sqlite:${path.join(scratch, 'child.db')}`);
