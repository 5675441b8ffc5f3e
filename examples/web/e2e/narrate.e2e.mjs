// The page, end to end, in Debian's Chromium (headless) driven by playwright-core:
// a page of another origin cannot start a narration; then, on the app's own page,
// narrate -> progress -> a sentence playable in an audio element -> cancel; and a voice
// preview that jumps a long narration, which gives way and resumes.
// It starts the app itself (app.py on a free loopback port) and saves screenshots
// under target/web/. No browser is downloaded: /usr/bin/chromium (or $CHROMIUM_PATH).
//   node examples/web/e2e/narrate.e2e.mjs
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REPO_DIR = path.resolve(WEB_DIR, '..', '..');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const PYTHON = process.env.PYTHON || path.join(REPO_DIR, '.venv', 'bin', 'python');
const SHOT_DIR = path.join(REPO_DIR, 'target', 'web');
const READY_PREFIX = 'storyflow-web: ready on ';
const START_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 30_000;
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// The demo's story (23 sentences), one second apart: long enough to act on while it runs.
const STORY_FILE = path.join(REPO_DIR, 'examples', 'story.txt');
const PACE_SECONDS = '1';

if (!existsSync(CHROMIUM)) {
  console.log(`SKIP: the browser test needs Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
  process.exit(0);
}
const { chromium } = await import('playwright-core');

/** Starts app.py on a free port; resolves with its URL once it printed its ready line. */
function startApp(mediaDir) {
  const child = spawn(PYTHON, ['-u', path.join(WEB_DIR, 'app.py'), '--port', '0', '--media-dir', mediaDir, '--access-log'],
    { cwd: WEB_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = [];
  child.stderr.on('data', (chunk) => output.push(chunk.toString()));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`app.py was not ready within ${START_TIMEOUT_MS} ms:\n${output.join('')}`)),
      START_TIMEOUT_MS);
    createInterface({ input: child.stdout }).on('line', (line) => {
      output.push(`${line}\n`);
      if (line.startsWith(READY_PREFIX)) {
        clearTimeout(timer);
        resolve(line.slice(READY_PREFIX.length).trim());
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`app.py exited (${code}) before it was ready:\n${output.join('')}`));
    });
  });
  return { child, ready, output };
}

function stopApp(child) {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('exit', () => { clearTimeout(killer); resolve(); });
    child.kill('SIGTERM');
  });
}

/**
 * Another site, on another loopback port (so another origin): its page tries what any web
 * page can do without the server's consent, a no-cors text/plain POST and a JSON POST.
 */
function startOtherSite(targetUrl) {
  const page = `<!doctype html><meta charset="utf-8"><title>another site</title><script>
window.attempts = (async () => {
  const url = ${JSON.stringify(new URL('/api/stories/elsewhere/narrate', targetUrl).href)};
  const body = JSON.stringify({ text: 'A narration nobody asked for. '.repeat(50), pace_seconds: 5 });
  const outcomes = [];
  try {
    const opaque = await fetch(url, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body });
    outcomes.push(opaque.type);
  } catch (error) { outcomes.push('no-cors: ' + error.message); }
  try {
    await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    outcomes.push('cors: answered');
  } catch (error) { outcomes.push('cors: refused'); }
  return outcomes;
})();
</script>`;
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
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

const mediaDir = mkdtempSync(path.join(tmpdir(), 'storyflow-web-media-'));
const userDataDir = mkdtempSync(path.join(tmpdir(), 'storyflow-web-chromium-'));
mkdirSync(SHOT_DIR, { recursive: true });
const app = startApp(mediaDir);
let context;
try {
  const baseUrl = await app.ready;
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1100, height: 1000 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const pageErrors = [];
  const failedRequests = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    // A refused request is logged too; those are checked one by one below (failedRequests).
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) pageErrors.push(message.text());
  });
  page.on('response', (response) => {
    if (response.status() >= 400) failedRequests.push(`${response.status()} ${new URL(response.url()).pathname}`);
  });
  page.on('requestfailed', (request) => {
    // The page closes its EventSource on the final status, at times before the server ends the
    // stream; a media element may drop a preload it no longer needs. Any other failure counts.
    const aborted = request.failure()?.errorText === 'net::ERR_ABORTED'
      && ['eventsource', 'media'].includes(request.resourceType());
    if (!aborted) failedRequests.push(`failed ${new URL(request.url()).pathname} ${request.failure()?.errorText}`);
  });
  const taskStatus = async (taskId) => (await fetch(new URL(`/api/tasks/${taskId}`, baseUrl))).json();
  const finalStatus = async (taskId) => {
    for (;;) {
      const status = await taskStatus(taskId);
      if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(status.status)) return status;
      await new Promise((wake) => setTimeout(wake, 100));
    }
  };
  let taskId;
  let sentences;

  await step('the page loads', async () => {
    await page.goto(baseUrl);
    check((await page.title()).includes('StoryFlow'), `unexpected title ${await page.title()}`);
    check(await page.isEnabled('#narrate-button'), 'Narrate is disabled');
  });

  await step('a page of another origin cannot start a narration', async () => {
    const otherSite = await startOtherSite(baseUrl);
    try {
      const otherUrl = `http://127.0.0.1:${otherSite.address().port}/`;
      check(new URL(otherUrl).origin !== new URL(baseUrl).origin, 'the two sites share an origin');
      const other = await context.newPage();
      const sent = [];
      other.on('request', (request) => {
        if (request.url().includes('/narrate')) sent.push(`${request.method()} ${request.headers()['content-type']}`);
      });
      await other.goto(otherUrl);
      const outcomes = await other.evaluate(() => window.attempts);
      await other.close();
      // The no-cors POST reaches the server, which refuses it (403: its Origin); its answer is
      // not even handed to the page (Cross-Origin-Resource-Policy), so the fetch fails or is opaque.
      // The JSON one needs a preflight, which the server does not grant, so it is never sent.
      check(['opaque', 'no-cors: Failed to fetch'].includes(outcomes[0]) && outcomes[1] === 'cors: refused',
        `the other site's fetches: ${outcomes}`);
      check(sent.includes('POST text/plain'), `the other site's requests: ${sent.join(', ') || 'none'}`);
      // The access log line reaches this process through a pipe: wait for it (a bounded wait).
      const logged = () => app.output.join('').split('\n').filter((line) => line.includes('/api/stories/elsewhere/narrate'));
      for (let waited = 0; !logged().some((line) => line.includes('"POST')) && waited < 100; waited += 1) {
        await new Promise((wake) => setTimeout(wake, 100));
      }
      const answers = logged();
      check(answers.some((line) => line.includes('"POST')) && answers.every((line) => /" 403\b/.test(line)),
        `the server's answers to the other site: ${answers.join(' | ') || 'none in its access log'}`);
      // Through the API: had a narration of 'elsewhere' started, this would be 409 (still narrating).
      const probe = await fetch(new URL('/api/stories/elsewhere/narrate', baseUrl), {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ text: 'Checked.' }),
      });
      check(probe.status === 202, `the story 'elsewhere' is busy (${probe.status}): the other site started it`);
      const status = await finalStatus((await probe.json()).task_id);
      check(status.status === 'COMPLETED', `the API's own narration ended ${status.status}`);
    } finally {
      otherSite.close();
    }
  });

  await step('bad input is shown inline', async () => {
    await page.fill('#story-text', '   ');
    await page.click('#narrate-button');
    await page.waitForSelector('#request-error:not([hidden])');
    const message = await page.textContent('#request-error');
    check(message.includes('422') && message.includes('empty'), `request error: ${message}`);
    check(await page.isHidden('#task'), 'a task appeared for bad input');
  });

  await step('Narrate shows the progress bar and the sentence being spoken', async () => {
    // Every text the line ever shows is checked: it never calls a sentence with a player "being spoken".
    await page.evaluate(() => {
      window.untruths = [];
      const line = document.getElementById('current-segment');
      new MutationObserver(() => {
        const speaking = /^Speaking sentence (\d+) /.exec(line.textContent);
        if (speaking && document.querySelector(`#segments li[data-segment-id="${speaking[1]}"] audio`)) {
          window.untruths.push(line.textContent);
        }
      }).observe(line, { childList: true, characterData: true, subtree: true });
    });
    await page.fill('#story-id', 'aesop');
    await page.fill('#story-text', readFileSync(STORY_FILE, 'utf8'));
    await page.fill('#pace', PACE_SECONDS);
    await page.click('#narrate-button');
    await page.waitForSelector('#task:not([hidden])');
    check(await page.isHidden('#request-error'), `request error: ${await page.textContent('#request-error')}`);
    taskId = (await page.textContent('#task-id')).trim();
    check(taskId.startsWith('aesop-'), `task id ${taskId}`);
    sentences = await page.locator('#segments li').count();
    check(sentences === 23, `${sentences} rows for the 23 sentences of ${STORY_FILE}`);
    await page.waitForFunction(() => document.getElementById('progress-bar').value > 0);
    await page.waitForFunction(() => /^Speaking sentence \d+ of 23: “/.test(document.getElementById('current-segment').textContent));
    check((await page.textContent('#task-state')).startsWith('PROCESSING'), 'the badge does not say PROCESSING');
    check(await page.isEnabled('#cancel-button'), 'Cancel is disabled during the narration');
    check(await page.isDisabled('#narrate-button'), 'Narrate is enabled during the narration');
  });

  await step('a finished sentence plays in its audio element', async () => {
    await page.waitForSelector('#segments li[data-segment-id="1"] audio');
    const audio = await page.evaluate(async () => {
      const element = document.querySelector('#segments li[data-segment-id="1"] audio');
      if (element.readyState < HTMLMediaElement.HAVE_ENOUGH_DATA) {
        await new Promise((resolve, reject) => {
          element.addEventListener('canplaythrough', resolve, { once: true });
          element.addEventListener('error', () => reject(new Error(`media error ${element.error?.code}`)), { once: true });
        });
      }
      await element.play();
      return { src: element.currentSrc, duration: element.duration, error: element.error };
    });
    check(audio.error === null, `media error ${JSON.stringify(audio.error)}`);
    const status = await taskStatus(taskId);
    const first = status.completed_segments.find((segment) => segment.segment_id === 1);
    check(audio.src.endsWith(first.audio_url), `audio src ${audio.src} is not ${first.audio_url}`);
    check(Math.abs(audio.duration - first.duration) < 0.01, `the element's duration ${audio.duration} is not ${first.duration}`);
    await page.waitForFunction(() => {
      const element = document.querySelector('#segments li[data-segment-id="1"] audio');
      return element.currentTime > 0 || element.ended;
    });
  });

  await step('screenshot of the narration under way', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#segments li.done').length >= 3);
    await page.$eval('#story-text', (text) => { text.setSelectionRange(0, 0); text.scrollTop = 0; });
    await page.screenshot({ path: path.join(SHOT_DIR, 'screenshot.png') });
  });

  await step('Cancel stops the narration', async () => {
    await page.click('#cancel-button');
    await page.waitForFunction(() => document.getElementById('task-state').textContent === 'CANCELLED');
    const status = await taskStatus(taskId);
    check(status.status === 'CANCELLED', `status ${status.status}`);
    check(status.completed_segments.length + status.errors.length < sentences, 'every sentence was spoken: nothing was cancelled');
    const spokenRows = await page.locator('#segments li.done').count();
    check(spokenRows === status.completed_segments.length, `${spokenRows} players for ${status.completed_segments.length} segments`);
    const notSpoken = await page.locator('#segments li.waiting .segment-outcome', { hasText: 'not spoken' }).count();
    check(notSpoken > 0, 'no row says "not spoken"');
    const current = await page.textContent('#current-segment');
    check(current.startsWith('Stopped:'), `current segment line: ${current}`);
    const untruths = await page.evaluate(() => window.untruths);
    check(untruths.length === 0, `the page said a playable sentence was being spoken: ${untruths.join(' | ')}`);
    check(await page.isEnabled('#narrate-button'), 'Narrate is not enabled again');
    check(await page.isDisabled('#cancel-button'), 'Cancel is still enabled');
    await page.screenshot({ path: path.join(SHOT_DIR, 'cancelled.png') });
  });

  await step('a sentence that cannot be spoken shows its error inline, and the rest is spoken', async () => {
    await page.fill('#story-id', 'voices');
    await page.fill('#story-text', '[voice:no-such-voice] Nobody can say this. Everybody can say this.');
    await page.fill('#pace', '0');
    await page.click('#narrate-button');
    await page.waitForFunction(() => document.getElementById('task-state').textContent === 'COMPLETED');
    const message = await page.textContent('#segments li[data-segment-id="1"].failed .segment-outcome');
    check(message.includes("voice 'no-such-voice'"), `segment error: ${message}`);
    await page.waitForSelector('#segments li[data-segment-id="2"].done audio');
    check(await page.isHidden('#task-error'), 'a completed narration shows a task error');
  });

  await step('a narration that fails shows why inline', async () => {
    await page.fill('#story-text', '[voice:no-such-voice] Nobody can say this.');
    await page.click('#narrate-button');
    await page.waitForFunction(() => document.getElementById('task-state').textContent === 'FAILED');
    const message = await page.textContent('#task-error:not([hidden])');
    check(message.includes('none of the 1 sentences could be spoken'), `task error: ${message}`);
  });

  await step('a voice preview jumps a long narration: heard within a sentence, then the narration resumes', async () => {
    const sentencesOfLong = 8;
    await page.evaluate(() => {
      window.notes = [];
      for (const id of ['yield-note', 'task-state']) {
        const element = document.getElementById(id);
        new MutationObserver(() => window.notes.push(element.textContent))
          .observe(element, { childList: true, characterData: true, subtree: true });
      }
    });
    await page.fill('#story-id', 'long');
    await page.fill('#story-text', Array.from({ length: sentencesOfLong }, (_, n) => `Long sentence number ${n + 1}.`).join(' '));
    await page.fill('#pace', '0.5');
    await page.click('#narrate-button');
    await page.waitForFunction(() => document.getElementById('task-id').textContent.startsWith('long-'));
    const narrationId = (await page.textContent('#task-id')).trim();
    await page.waitForSelector('#segments li[data-segment-id="2"].done audio');
    const before = await taskStatus(narrationId);
    check(before.status === 'PROCESSING', `the narration is ${before.status} before the preview`);
    const doneBefore = before.completed_segments.length + before.errors.length;
    await page.selectOption('#preview-voice', 'en+f3');
    await page.click('#preview-button');
    await page.waitForFunction(() => /^Preview of en\+f3: started/.test(document.getElementById('preview-state').textContent));
    const previewId = await page.$eval('#preview-audio', (audio) => audio.dataset.taskId);
    await page.waitForFunction(() => {
      const audio = document.getElementById('preview-audio');
      return !audio.hidden && (audio.currentTime > 0 || audio.ended);
    });
    const preview = await taskStatus(previewId);
    check(preview.status === 'COMPLETED' && preview.priority === 10, `the preview: ${JSON.stringify(preview)}`);
    const final = await finalStatus(narrationId);
    check(final.status === 'COMPLETED', `the narration ended ${final.status}`);
    check(preview.completed_at < final.completed_at, 'the narration ended before the preview');
    check(final.yields === 1 && final.attempt === 1, `yields ${final.yields}, attempt ${final.attempt}: it did not give way once`);
    const ids = final.completed_segments.map((segment) => segment.segment_id);
    check(JSON.stringify(ids) === JSON.stringify(Array.from({ length: sentencesOfLong }, (_, n) => n + 1)),
      `sentences spoken: ${ids}`);
    // It gave way after the sentence it was speaking when the preview came (or the next, at most).
    check(final.checkpoint && final.checkpoint.resume_at <= doneBefore + 2,
      `it gave way at ${JSON.stringify(final.checkpoint)}; ${doneBefore} sentences were done at the preview`);
    await page.waitForFunction(() => document.getElementById('task-state').textContent === 'COMPLETED');
    const notes = await page.evaluate(() => window.notes);
    check(notes.some((text) => /^Resumed at sentence \d+: it waited once/.test(text)),
      `the page never showed the narration resuming: ${notes.join(' | ')}`);
    console.log(`# the page showed the narration waiting: ${notes.some((text) => text.startsWith('Waiting: it gave way'))}`);
    check((await page.textContent('#yield-note')).startsWith('It gave way once'), `note: ${await page.textContent('#yield-note')}`);
    check(await page.locator('#segments li.done audio').count() === sentencesOfLong, 'not every sentence has its player');
  });

  await step('no script error, and no refused request but the bad input', async () => {
    check(pageErrors.length === 0, `page errors: ${pageErrors.join(' | ')}`);
    const expected = ['422 /api/stories/the-fox/narrate'];
    check(JSON.stringify(failedRequests) === JSON.stringify(expected), `refused requests: ${failedRequests.join(', ')}`);
  });
} catch (error) {
  if (results.every(Boolean)) {
    results.push(false);
    console.log(`not ok - setting up the browser test\n  ${error.stack || error}`);
  }
} finally {
  if (!results.every(Boolean)) console.log(`app.py output:\n${app.output.join('').slice(-4000)}`);
  if (context) await context.close();
  await stopApp(app.child);
  rmSync(userDataDir, { recursive: true, force: true });
  rmSync(mediaDir, { recursive: true, force: true });
}

const passed = results.filter(Boolean).length;
console.log(`browser: ${passed} passed, ${results.length - passed} failed`);
console.log(`screenshots: ${path.relative(REPO_DIR, SHOT_DIR)}/screenshot.png, cancelled.png`);
process.exit(passed === results.length && passed > 0 ? 0 : 1);
