// The deployment over several machines, in Debian's Chromium (headless) driven by playwright-core:
// `make serve` over a redis:// store runs two API processes (each on its own port, no handler) and
// two worker processes (each with a machine identity of its own). This test starts its own
// redis-server (Debian's package) on 127.0.0.1 on a free port, with its append-only file in a
// temporary directory, then examples/web/serve.sh over it, and checks, through the pages:
//   - the page works against either API process;
//   - a narration submitted through API process 1 is followed, and heard, on the page of API process 2;
//   - the two workers speak two narrations at once;
//   - a voice preview asked for on that page while both workers are busy is heard before either
//     narration ends: a narration gives way after its sentence, the page shows it resuming, and
//     both narrations end COMPLETED with every sentence spoken once.
// It stops redis-server and the servers after. No browser is downloaded: /usr/bin/chromium (or $CHROMIUM_PATH).
//   node examples/web/e2e/topology.e2e.mjs
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REPO_DIR = path.resolve(WEB_DIR, '..', '..');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const READY_PREFIX = 'storyflow-web: ready on ';
const WORKER_PREFIX = 'storyflow_tasks worker (pid ';
const START_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 60_000;
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Long enough to act on while they run: 16 sentences each, 0.6 s apart (some 10 s).
const SENTENCES = 16;
const PACE = '0.6';
const storyText = (word) => Array.from({ length: SENTENCES }, (_, n) => `${word} sentence number ${n + 1}.`).join(' ');

for (const [need, what] of [[CHROMIUM, "Chromium (Debian: apt-get install chromium)"],
  [REDIS_SERVER, 'redis-server (Debian: apt-get install redis-server; make deps installs it)']]) {
  if (!existsSync(need)) {
    console.log(`SKIP: the topology browser test needs ${what} at ${need}`);
    process.exit(0);
  }
}
const { chromium } = await import('playwright-core');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** One PING over the Redis protocol: resolves true on +PONG. */
function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write('PING\r\n'));
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
    socket.on('data', (data) => { socket.destroy(); resolve(data.toString().startsWith('+PONG')); });
    socket.on('error', () => resolve(false));
  });
}

/** redis-server on 127.0.0.1:port, its append-only file (and nothing else) in `dir`. */
async function startRedis(port, dir) {
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction',
    '--protected-mode', 'yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = [];
  child.stdout.on('data', (chunk) => output.push(chunk.toString()));
  child.stderr.on('data', (chunk) => output.push(chunk.toString()));
  for (let waited = 0; waited < START_TIMEOUT_MS; waited += 100) {
    if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}):\n${output.join('')}`);
    if (await redisAnswers(port)) return { child, output };
    await new Promise((wake) => setTimeout(wake, 100));
  }
  throw new Error(`redis-server did not answer within ${START_TIMEOUT_MS} ms:\n${output.join('')}`);
}

/** examples/web/serve.sh over the store; resolves with the API URLs once both processes and both workers are up. */
function startServe(store, mediaDir) {
  const child = spawn(path.join(WEB_DIR, 'serve.sh'), ['--port', '0', '--store', store, '--media-dir', mediaDir,
    '--pace', PACE], { cwd: REPO_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = [];
  child.stderr.on('data', (chunk) => output.push(chunk.toString()));
  const urls = [];
  let workers = 0;
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve.sh was not ready within ${START_TIMEOUT_MS} ms:\n${output.join('')}`)),
      START_TIMEOUT_MS);
    createInterface({ input: child.stdout }).on('line', (line) => {
      output.push(`${line}\n`);
      if (line.startsWith(READY_PREFIX)) urls.push(line.slice(READY_PREFIX.length).trim());
      if (line.startsWith(WORKER_PREFIX)) workers += 1;
      if (urls.length === 2 && workers === 2) {
        clearTimeout(timer);
        resolve(urls);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve.sh exited (${code}) before it was ready:\n${output.join('')}`));
    });
  });
  return { child, ready, output };
}

function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null || !(child.pid > 0)) return Promise.resolve();
  return new Promise((resolve) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', () => { clearTimeout(killer); resolve(); });
    child.kill('SIGTERM');
  });
}

const results = [];
async function step(name, body) {
  try {
    await body();
    results.push(true);
    console.log(`ok - ${name}`);
  } catch (error) {
    results.push(false);
    console.log(`not ok - ${name}\n  ${String(error.stack || error).split('\n').join('\n  ')}`);
    throw error;
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const spokenOnce = (status) => {
  const ids = [...status.completed_segments, ...status.errors].map((segment) => segment.segment_id).sort((a, b) => a - b);
  return JSON.stringify(ids) === JSON.stringify(Array.from({ length: SENTENCES }, (_, n) => n + 1));
};

const workDir = mkdtempSync(path.join(tmpdir(), 'storyflow-topology-'));
const redisDir = path.join(workDir, 'redis');
const mediaDir = path.join(workDir, 'media');
const userDataDir = path.join(workDir, 'chromium');
let redis;
let serve;
let context;
try {
  mkdirSync(redisDir);
  mkdirSync(userDataDir);
  const redisPort = await freePort();
  redis = await startRedis(redisPort, redisDir);
  const store = process.env.TOPOLOGY_STORE || `redis://127.0.0.1:${redisPort}`;
  serve = startServe(store, mediaDir);
  const [first, second] = await serve.ready;
  check(first !== second, `the two API processes share one address: ${first}`);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, viewport: { width: 1100, height: 1000 },
  });
  const pageErrors = [];
  const watchPage = (page) => {
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (message) => { if (message.type() === 'error') pageErrors.push(message.text()); });
    page.on('response', (response) => {
      if (response.status() >= 400) pageErrors.push(`${response.status()} ${new URL(response.url()).pathname}`);
    });
    return page;
  };
  const pageA = watchPage(context.pages()[0] || await context.newPage());
  const pageB = watchPage(await context.newPage());
  // A second page of API process 2: a page that follows a running narration does not start another.
  const pageC = watchPage(await context.newPage());
  const statusThrough = async (base, taskId) => (await fetch(new URL(`/api/tasks/${taskId}`, base))).json();
  const finalStatus = async (base, taskId) => {
    for (;;) {
      const status = await statusThrough(base, taskId);
      if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(status.status)) return status;
      await new Promise((wake) => setTimeout(wake, 100));
    }
  };
  // Every text a page's yield note and badge show, for the checks at the end.
  const recordNotes = (page) => page.evaluate(() => {
    window.notes = [];
    for (const id of ['yield-note', 'task-state']) {
      const element = document.getElementById(id);
      new MutationObserver(() => window.notes.push(element.textContent))
        .observe(element, { childList: true, characterData: true, subtree: true });
    }
  });
  const narrateOn = async (page, storyId, word) => {
    await page.bringToFront();
    await page.fill('#story-id', storyId);
    await page.fill('#story-text', storyText(word));
    await page.fill('#pace', PACE);
    await page.click('#narrate-button');
    await page.waitForFunction((prefix) => document.getElementById('task-id').textContent.startsWith(prefix), `${storyId}-`);
    return (await page.textContent('#task-id')).trim();
  };
  let firstId;
  let secondId;

  await step('the page works against either API process', async () => {
    for (const [page, base] of [[pageA, first], [pageB, second], [pageC, second]]) {
      await page.goto(base);
      check((await page.title()).includes('StoryFlow'), `${base}: title ${await page.title()}`);
      check(await page.isEnabled('#narrate-button'), `${base}: Narrate is disabled`);
      check(await page.isEnabled('#preview-button'), `${base}: Preview voice is disabled`);
    }
  });

  await step('a narration submitted through API process 1 is followed and heard on the page of API process 2', async () => {
    firstId = await narrateOn(pageA, 'through-one', 'First');
    await pageB.bringToFront();
    await pageB.click('#queue-refresh');
    await pageB.waitForSelector(`#queue li[data-task-id="${firstId}"] button.follow`);
    await pageB.click(`#queue li[data-task-id="${firstId}"] button.follow`);
    await pageB.waitForFunction((id) => document.getElementById('task-id').textContent === id, firstId);
    await pageB.waitForFunction(() => document.getElementById('progress-bar').value > 0);
    await pageB.waitForSelector('#segments li[data-segment-id="1"].done audio');
    const rows = await pageB.locator('#segments li').count();
    check(rows === SENTENCES, `the page of API process 2 shows ${rows} rows for ${SENTENCES} sentences`);
    const heard = await pageB.evaluate(async () => {
      const element = document.querySelector('#segments li[data-segment-id="1"] audio');
      if (element.readyState < HTMLMediaElement.HAVE_ENOUGH_DATA) {
        await new Promise((resolve, reject) => {
          element.addEventListener('canplaythrough', resolve, { once: true });
          element.addEventListener('error', () => reject(new Error(`media error ${element.error?.code}`)), { once: true });
        });
      }
      return { src: element.currentSrc, duration: element.duration };
    });
    check(heard.src.startsWith(second), `the audio comes from ${heard.src}, not API process 2 (${second})`);
    check(heard.duration > 0, `the first sentence lasts ${heard.duration} s`);
    const throughOther = await statusThrough(second, firstId);
    check(throughOther.handler === 'narrate' && throughOther.attempt === 1, `status through API process 2: ${JSON.stringify(throughOther)}`);
    check((await pageB.textContent('#task-state')).startsWith('PROCESSING'), 'the page of API process 2 does not say PROCESSING');
  });

  await step('the two worker processes speak two narrations at once', async () => {
    // Pages A and B show the first narration, page C the second one, which it starts.
    await recordNotes(pageB);
    await pageC.bringToFront();
    secondId = await narrateOn(pageC, 'through-two', 'Second');
    await recordNotes(pageC);
    for (;;) {
      const [one, two] = await Promise.all([statusThrough(first, firstId), statusThrough(second, secondId)]);
      check(one.status === 'PROCESSING', `the first narration is ${one.status} before the second started: `
        + `${JSON.stringify(one)} ${JSON.stringify(two)}`);
      if (two.status === 'PROCESSING' && two.completed_segments.length >= 1) break;
      await new Promise((wake) => setTimeout(wake, 100));
    }
  });

  await step('a voice preview asked for while both workers are busy is heard before either narration ends', async () => {
    const before = await Promise.all([statusThrough(first, firstId), statusThrough(second, secondId)]);
    const doneBefore = before.map((status) => status.completed_segments.length + status.errors.length);
    check(before.every((status) => status.status === 'PROCESSING'), `before the preview: ${before.map((s) => s.status)}`);
    await pageB.bringToFront();
    await pageB.selectOption('#preview-voice', 'en+f3');
    await pageB.click('#preview-button');
    await pageB.waitForFunction(() => /^Preview of en\+f3: started/.test(document.getElementById('preview-state').textContent));
    const previewId = await pageB.$eval('#preview-audio', (audio) => audio.dataset.taskId);
    await pageB.waitForFunction(() => {
      const audio = document.getElementById('preview-audio');
      return !audio.hidden && (audio.currentTime > 0 || audio.ended);
    });
    const preview = await statusThrough(first, previewId);
    check(preview.status === 'COMPLETED' && preview.handler === 'preview-voice' && preview.priority === 10,
      `the preview: ${JSON.stringify(preview)}`);
    const finals = [await finalStatus(first, firstId), await finalStatus(second, secondId)];
    for (const final of finals) {
      check(final.status === 'COMPLETED', `${final.task_id} ended ${final.status}`);
      check(spokenOnce(final), `${final.task_id} did not speak each sentence once: ${JSON.stringify(final.completed_segments.map((s) => s.segment_id))}`);
      check(preview.completed_at < final.completed_at, `${final.task_id} ended before the preview did`);
    }
    const spans = finals.map((final) => [final.started_at, final.completed_at]);
    check(spans[0][0] < spans[1][1] && spans[1][0] < spans[0][1], `the narrations did not overlap: ${JSON.stringify(spans)}`);
    const yielded = finals.filter((final) => final.yields >= 1);
    check(yielded.length >= 1, 'neither narration gave way to the preview, yet both workers were busy');
    for (const final of yielded) {
      const index = finals.indexOf(final);
      // It gave way after the sentence it was speaking when the preview came, or after the next one
      // at most (the count read just before the click).
      check(final.checkpoint && final.checkpoint.resume_at <= doneBefore[index] + 2,
        `${final.task_id} gave way at ${JSON.stringify(final.checkpoint)}, ${doneBefore[index]} sentences done at the preview`);
      const page = index === 0 ? pageB : pageC;
      const notes = await page.evaluate(() => window.notes);
      check(notes.some((text) => /^Resumed at sentence \d+: it waited/.test(text) || text === 'PROCESSING · resumed'),
        `the page of ${final.task_id} never showed it resuming: ${notes.join(' | ')}`);
      const seenWaiting = notes.some((text) => text.startsWith('Waiting: it gave way') || text === 'PENDING · yielded');
      console.log(`# ${final.task_id} yielded ${final.yields} time(s); its page showed it waiting: ${seenWaiting}`);
      await page.waitForFunction(() => /^It gave way (once|\d+ times)/.test(document.getElementById('yield-note').textContent));
    }
    const files = readdirSync(path.join(mediaDir, firstId)).filter((name) => name.endsWith('.wav')).sort();
    check(files.length === SENTENCES, `${firstId} has ${files.length} WAV files`);
  });

  await step('no script error and no refused request on either page', async () => {
    check(pageErrors.length === 0, `page errors: ${pageErrors.join(' | ')}`);
  });
} catch (error) {
  if (results.every(Boolean)) {
    results.push(false);
    console.log(`not ok - setting up the topology test\n  ${error.stack || error}`);
  }
} finally {
  if (!results.every(Boolean)) {
    if (serve) console.log(`serve.sh output:\n${serve.output.join('').slice(-6000)}`);
    if (redis) console.log(`redis-server output:\n${redis.output.join('').slice(-2000)}`);
  }
  if (context) await context.close();
  if (serve) await stop(serve.child);
  if (redis) await stop(redis.child);
  rmSync(workDir, { recursive: true, force: true });
}

const passed = results.filter(Boolean).length;
console.log(`topology: ${passed} passed, ${results.length - passed} failed`);
process.exit(passed === results.length && passed > 0 ? 0 : 1);
