// The narration page: starts a narration (or follows one another page started, through any
// server of the store), follows it through Server-Sent Events, gives each finished sentence an
// audio player and plays them in order; previews a voice ahead of every narration.
'use strict';

const FINISHED = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);
const QUEUE_REFRESH_MS = 2000;
const byId = (id) => document.getElementById(id);

/** The narration being shown: its task, its sentences' rows, and the player queue. */
let narration = null;
/** The voice preview being spoken or played: its task and event stream. */
let preview = null;

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

/** The JSON body of a response, or a stand-in naming the HTTP status when it has none. */
async function answerOf(response) {
  try {
    return await response.json();
  } catch {
    return { detail: `${response.status} ${response.statusText}` };
  }
}

function describeFailure(response, answer) {
  const detail = typeof answer.detail === 'string' ? answer.detail : JSON.stringify(answer.detail);
  return `${response.status}: ${detail}`;
}

function setRunning(running) {
  byId('narrate-button').disabled = running;
  byId('cancel-button').disabled = !running;
}

/** The sentences not yet spoken nor failed, as the status says: where a resumed narration goes on. */
function nextSentence(status) {
  const done = new Set([...status.completed_segments, ...status.errors].map((segment) => String(segment.segment_id)));
  return narration.order.find((key) => !done.has(key));
}

function segmentRow(segment) {
  const row = document.createElement('li');
  row.dataset.segmentId = String(segment.segment_id);
  row.className = 'segment waiting';
  const text = document.createElement('span');
  text.className = 'segment-text';
  text.textContent = segment.text === null ? `Sentence ${segment.segment_id}`
    : segment.voice ? `[${segment.voice}] ${segment.text}` : segment.text;
  const outcome = document.createElement('div');
  outcome.className = 'segment-outcome';
  outcome.textContent = 'waiting';
  row.append(text, outcome);
  return row;
}

/** Adds the rows of these sentences (those not shown yet). */
function addRows(segments) {
  const list = byId('segments');
  for (const segment of segments) {
    const key = String(segment.segment_id);
    if (narration.rows.has(key)) continue;
    const row = segmentRow(segment);
    narration.rows.set(key, row);
    narration.order.push(key);
    if (segment.text !== null) narration.texts.set(key, segment.text);
    list.append(row);
  }
}

/**
 * Shows a narration and follows its events. `segments` are its sentences when this page started
 * it; a narration followed from the queue has none, and its rows come from the progress's total
 * (the sentences' texts as the progress names them, while they are spoken).
 */
function showNarration({ taskId, statusUrl, eventsUrl, segments }) {
  if (narration) narration.events.close();
  byId('segments').replaceChildren();
  narration = {
    taskId,
    statusUrl,
    order: [],
    rows: new Map(),
    texts: new Map(),
    shownSegments: new Set(),
    shownErrors: new Set(),
    finished: false,
    revision: -1,
    nextToPlay: 0,
    playing: null,
    events: new EventSource(eventsUrl),
  };
  addRows(segments || []);
  byId('task').hidden = false;
  byId('task-id').textContent = taskId;
  byId('task-state').textContent = 'PENDING';
  byId('task-state').className = 'badge';
  byId('progress-bar').value = 0;
  byId('progress-label').textContent = '0%';
  byId('current-segment').textContent = '';
  showError(byId('yield-note'), '');
  showError(byId('task-error'), '');
  const current = narration;
  current.events.addEventListener('status', (event) => {
    if (narration === current) renderStatus(JSON.parse(event.data));
  });
  current.events.addEventListener('error', () => {
    if (narration !== current) return;
    // EventSource reconnects by itself (resuming after the last revision it saw).
    byId('current-segment').textContent = current.events.readyState === EventSource.CLOSED
      ? 'Lost the connection to the server.' : 'Connection interrupted, reconnecting…';
  });
  setRunning(true);
  renderQueue(lastQueue);
}

function follow(taskId) {
  const statusUrl = `/api/tasks/${encodeURIComponent(taskId)}`;
  showNarration({ taskId, statusUrl, eventsUrl: `${statusUrl}/events`, segments: null });
}

/** Rows for a followed narration, once its progress says how many sentences it has. */
function ensureRows(status) {
  const progress = status.progress || {};
  const known = new Set(narration.order);
  const missing = [];
  for (let id = 1; id <= (progress.total || 0); id += 1) {
    if (!known.has(String(id))) missing.push({ segment_id: id, text: null, voice: null });
  }
  for (const item of [...status.completed_segments, ...status.errors]) {
    if (!known.has(String(item.segment_id))) missing.push({ segment_id: item.segment_id, text: null, voice: null });
  }
  missing.sort((a, b) => Number(a.segment_id) - Number(b.segment_id));
  addRows(missing);
  const speaking = progress.current_segment_id;
  if (speaking !== undefined && progress.current_text && !narration.texts.has(String(speaking))) {
    // A followed narration learns each sentence's text as it is spoken.
    narration.texts.set(String(speaking), progress.current_text);
    const row = narration.rows.get(String(speaking));
    if (row) row.querySelector('.segment-text').textContent = progress.current_text;
  }
}

function renderYield(status) {
  const note = byId('yield-note');
  const yields = status.yields || 0;
  if (!yields) {
    showError(note, '');
    return;
  }
  const times = yields === 1 ? 'once' : `${yields} times`;
  // The handler records where it gave way in its checkpoint; the segments say it too.
  const checkpoint = status.checkpoint && typeof status.checkpoint === 'object' ? status.checkpoint : {};
  const resumeAt = checkpoint.resume_at || (status.status === 'PENDING' ? nextSentence(status) : null);
  const where = resumeAt ? ` at sentence ${resumeAt}` : '';
  if (status.status === 'PENDING') {
    showError(note, `Waiting: it gave way to a request of a higher priority (a voice preview); it resumes${where} `
      + 'as soon as that is done.');
  } else if (status.status === 'PROCESSING') {
    showError(note, `Resumed${where}: it waited ${times} while a request of a higher priority was spoken.`);
  } else {
    showError(note, `It gave way ${times} to a request of a higher priority, and went on each time.`);
  }
}

function renderProgress(status) {
  const progress = status.progress || {};
  const percentage = Number.isInteger(progress.percentage) ? progress.percentage : 0;
  byId('progress-bar').value = percentage;
  byId('progress-label').textContent = progress.total
    ? `${progress.current} / ${progress.total} (${percentage}%)` : `${percentage}%`;
  const current = byId('current-segment');
  const spoken = status.completed_segments.length;
  const count = narration.order.length;
  if (status.status === 'PENDING') {
    current.textContent = status.queue_position === null
      ? 'Waiting for a worker that speaks narrations.'
      : `Waiting for the worker: ${status.queue_position} task(s) ahead.`;
  } else if (status.status === 'PROCESSING') {
    // The server names a sentence only while it is being synthesised; once it is playable
    // the progress counts it and names none until the next one starts.
    const id = progress.current_segment_id;
    const stopping = status.cancel_requested ? ' (stopping after this sentence)' : '';
    if (id !== undefined && !narration.shownSegments.has(String(id))) {
      const text = progress.current_text || narration.texts.get(String(id)) || '';
      current.textContent = `Speaking sentence ${id} of ${count}: “${text}”${stopping}`;
    } else if (progress.current) {
      current.textContent = `${progress.current} of ${count} sentences done`
        + (status.cancel_requested ? ', stopping.' : '; the next one follows the pause.');
    } else {
      current.textContent = 'Starting…';
    }
  } else {
    const seconds = status.completed_segments.reduce((sum, segment) => sum + segment.duration, 0);
    const outcome = { COMPLETED: 'Done', CANCELLED: 'Stopped', FAILED: 'Stopped' }[status.status];
    const note = progress.note ? ` (${progress.note})` : '';
    current.textContent = `${outcome}: ${spoken} of ${count} sentences spoken, `
      + `${seconds.toFixed(1)} s of audio.${note}`;
  }
  for (const row of narration.rows.values()) row.classList.remove('speaking');
  if (status.status === 'PROCESSING' && progress.current_segment_id !== undefined) {
    const row = narration.rows.get(String(progress.current_segment_id));
    if (row && row.classList.contains('waiting')) row.classList.add('speaking');
  }
}

function renderSegments(status) {
  for (const segment of status.completed_segments) {
    const key = String(segment.segment_id);
    const row = narration.rows.get(key);
    if (!row || narration.shownSegments.has(key)) continue;
    narration.shownSegments.add(key);
    const audio = document.createElement('audio');
    audio.controls = true;
    audio.preload = 'auto';
    audio.src = segment.audio_url;
    audio.addEventListener('play', () => pauseOthers(audio));
    audio.addEventListener('ended', () => playNext(key));
    const length = document.createElement('span');
    length.className = 'duration';
    length.textContent = `${segment.duration.toFixed(2)} s`;
    row.className = 'segment done';
    row.querySelector('.segment-outcome').replaceChildren(audio, length);
  }
  for (const error of status.errors) {
    const key = String(error.segment_id);
    const row = narration.rows.get(key);
    if (!row || narration.shownErrors.has(key)) continue;
    narration.shownErrors.add(key);
    row.className = 'segment failed';
    const outcome = row.querySelector('.segment-outcome');
    outcome.textContent = error.error;
    outcome.setAttribute('role', 'alert');
  }
}

function badgeText(status) {
  if (FINISHED.has(status.status)) return status.status;
  if (status.cancel_requested) return `${status.status} · cancelling`;
  if (status.status === 'PENDING' && status.yields) return 'PENDING · yielded';
  if (status.status === 'PROCESSING' && status.yields) return 'PROCESSING · resumed';
  return status.status;
}

function renderStatus(status) {
  // The DELETE's answer and the event stream race: an older status must not undo a newer one.
  if (status.revision <= narration.revision) return;
  narration.revision = status.revision;
  ensureRows(status);
  const badge = byId('task-state');
  badge.textContent = badgeText(status);
  badge.className = `badge ${status.status.toLowerCase()}`;
  renderSegments(status);
  renderProgress(status);
  renderYield(status);
  if (FINISHED.has(status.status)) {
    narration.finished = true;
    narration.events.close();
    setRunning(false);
    for (const row of narration.rows.values()) {
      if (row.classList.contains('waiting')) row.querySelector('.segment-outcome').textContent = 'not spoken';
    }
    if (status.status === 'FAILED') showError(byId('task-error'), `The narration failed: ${status.error}`);
  }
  pump();
}

// ----- playing the sentences in order ------------------------------------------------------

function pauseOthers(playing) {
  for (const audio of document.querySelectorAll('audio')) {
    if (audio !== playing && !audio.paused) audio.pause();
  }
  if (narration && playing.closest('#segments')) narration.playing = playing;
}

function playNext(endedKey) {
  if (!narration) return;
  narration.playing = null;
  const index = narration.order.indexOf(endedKey);
  if (index >= 0 && index + 1 > narration.nextToPlay) narration.nextToPlay = index + 1;
  pump();
}

/** Plays the next sentence in order once it is ready, skipping those that failed. */
function pump() {
  if (!narration || !byId('autoplay').checked) return;
  if (narration.playing && !narration.playing.paused && !narration.playing.ended) return;
  const previewAudio = byId('preview-audio');
  if (!previewAudio.paused && !previewAudio.ended) return; // the preview first; the narration follows it
  while (narration.nextToPlay < narration.order.length) {
    const key = narration.order[narration.nextToPlay];
    if (narration.shownErrors.has(key)) {
      narration.nextToPlay += 1;
      continue;
    }
    const audio = narration.rows.get(key).querySelector('audio');
    if (!audio) return; // not spoken yet: the status that brings it calls pump again
    narration.playing = audio;
    audio.play().catch(() => {
      // The browser refused to play without a gesture: leave the players to the listener.
      byId('autoplay').checked = false;
      narration.playing = null;
    });
    return;
  }
}

// ----- the voice preview ---------------------------------------------------------------------

function renderPreview(status) {
  if (status.revision <= preview.revision) return;
  preview.revision = status.revision;
  const state = byId('preview-state');
  const audio = byId('preview-audio');
  if (status.status === 'PENDING') {
    state.textContent = `Queued at priority ${preview.priority}, ahead of every narration…`;
  } else if (status.status === 'PROCESSING') {
    state.textContent = `Speaking the preview in ${preview.voice}…`;
  } else if (status.status === 'COMPLETED' && status.completed_segments.length) {
    const waited = status.started_at - status.created_at;
    state.textContent = `Preview of ${preview.voice}: started ${waited.toFixed(2)} s after it was queued.`;
    audio.src = status.completed_segments[0].audio_url;
    audio.hidden = false;
    audio.play().catch(() => {
      state.textContent += ' Press play to hear it.';
    });
  } else {
    const why = status.error || (status.errors[0] && status.errors[0].error) || status.status;
    showError(byId('preview-error'), `The preview of ${preview.voice} was not spoken: ${why}`);
    state.textContent = '';
  }
  if (FINISHED.has(status.status)) {
    preview.events.close();
    byId('preview-button').disabled = false;
  }
}

async function previewVoice() {
  const voice = byId('preview-voice').value;
  showError(byId('preview-error'), '');
  byId('preview-button').disabled = true;
  byId('preview-state').textContent = 'Sending…';
  try {
    const response = await fetch('/api/previews', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ voice }),
    });
    const answer = await answerOf(response);
    if (!response.ok) {
      showError(byId('preview-error'), describeFailure(response, answer));
      byId('preview-state').textContent = '';
      byId('preview-button').disabled = false;
      return;
    }
    if (preview) preview.events.close();
    const current = { taskId: answer.task_id, voice, priority: answer.priority, revision: -1,
      events: new EventSource(answer.events_url) };
    preview = current;
    byId('preview-audio').dataset.taskId = answer.task_id;
    current.events.addEventListener('status', (event) => {
      if (preview === current) renderPreview(JSON.parse(event.data));
    });
  } catch (error) {
    showError(byId('preview-error'), `Could not reach the server: ${error.message}`);
    byId('preview-state').textContent = '';
    byId('preview-button').disabled = false;
  }
}

// ----- the queue: the narrations of every server of the store --------------------------------

let lastQueue = [];

/** The queue's row of a task: made once, then updated in place, so that a button stays where it is. */
function queueItem(taskId) {
  const existing = byId('queue').querySelector(`li[data-task-id="${CSS.escape(taskId)}"]`);
  if (existing) return existing;
  const item = document.createElement('li');
  item.dataset.taskId = taskId;
  const id = document.createElement('code');
  id.textContent = taskId;
  const badge = document.createElement('span');
  const progress = document.createElement('span');
  progress.className = 'queue-progress';
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'secondary follow';
  button.addEventListener('click', () => follow(taskId));
  item.append(id, ' ', badge, ' ', progress, ' ', button);
  return item;
}

function renderQueue(statuses) {
  lastQueue = statuses;
  const list = byId('queue');
  const items = statuses.map((status) => {
    const item = queueItem(status.task_id);
    const [badge, progress, button] = item.querySelectorAll('span, button');
    badge.className = `badge ${status.status.toLowerCase()}`;
    badge.textContent = badgeText(status);
    const percentage = status.progress && Number.isInteger(status.progress.percentage) ? status.progress.percentage : 0;
    progress.textContent = status.status === 'PENDING' && status.queue_position !== null
      ? `${percentage}%, ${status.queue_position} ahead` : `${percentage}%`;
    const shown = Boolean(narration) && narration.taskId === status.task_id;
    button.textContent = shown ? 'Shown above' : 'Follow';
    button.disabled = shown;
    return item;
  });
  for (const item of [...list.children]) {
    if (!items.includes(item)) item.remove();
  }
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  byId('queue-empty').hidden = statuses.length > 0;
}

async function refreshQueue() {
  try {
    const response = await fetch('/api/narrations');
    if (response.ok) renderQueue((await response.json()).narrations);
  } catch {
    // The server is away for a moment: the next refresh tries again.
  }
}

// ----- the form -----------------------------------------------------------------------------

async function narrate(event) {
  event.preventDefault();
  const requestError = byId('request-error');
  showError(requestError, '');
  const storyId = byId('story-id').value.trim();
  const pace = byId('pace').value.trim();
  const body = { text: byId('story-text').value, voice: byId('voice').value };
  if (pace !== '') body.pace_seconds = Number(pace);
  byId('narrate-button').disabled = true;
  try {
    const response = await fetch(`/api/stories/${encodeURIComponent(storyId)}/narrate`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await answerOf(response);
    if (!response.ok) {
      showError(requestError, describeFailure(response, answer));
      byId('narrate-button').disabled = Boolean(narration && !narration.finished);
      return;
    }
    showNarration({ taskId: answer.task_id, statusUrl: answer.status_url, eventsUrl: answer.events_url,
      segments: answer.segments });
    refreshQueue();
  } catch (error) {
    showError(requestError, `Could not reach the server: ${error.message}`);
    byId('narrate-button').disabled = Boolean(narration && !narration.finished);
  }
}

async function cancel() {
  if (!narration) return;
  const requestError = byId('request-error');
  showError(requestError, '');
  byId('cancel-button').disabled = true;
  try {
    const response = await fetch(narration.statusUrl, { method: 'DELETE' });
    const answer = await answerOf(response);
    if (!response.ok) {
      showError(requestError, describeFailure(response, answer));
      return;
    }
    renderStatus(answer);
  } catch (error) {
    showError(requestError, `Could not reach the server: ${error.message}`);
    byId('cancel-button').disabled = false;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  byId('narrate-form').addEventListener('submit', narrate);
  byId('cancel-button').addEventListener('click', cancel);
  byId('autoplay').addEventListener('change', pump);
  byId('preview-button').addEventListener('click', previewVoice);
  byId('preview-audio').addEventListener('play', () => pauseOthers(byId('preview-audio')));
  byId('preview-audio').addEventListener('ended', pump);
  byId('queue-refresh').addEventListener('click', refreshQueue);
  // A link to a narration (/?task=ID) follows it.
  const linked = new URLSearchParams(window.location.search).get('task');
  if (linked) follow(linked);
  refreshQueue();
  setInterval(refreshQueue, QUEUE_REFRESH_MS);
});
