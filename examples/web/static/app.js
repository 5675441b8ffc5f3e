// The narration page: starts a narration, follows it through Server-Sent Events,
// gives each finished sentence an audio player and plays them in order.
'use strict';

const FINISHED = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);
const byId = (id) => document.getElementById(id);

/** The narration being shown: its task, its sentences' rows, and the player queue. */
let narration = null;

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

function segmentRow(segment) {
  const row = document.createElement('li');
  row.dataset.segmentId = String(segment.segment_id);
  row.className = 'segment waiting';
  const text = document.createElement('span');
  text.className = 'segment-text';
  text.textContent = segment.voice ? `[${segment.voice}] ${segment.text}` : segment.text;
  const outcome = document.createElement('div');
  outcome.className = 'segment-outcome';
  outcome.textContent = 'waiting';
  row.append(text, outcome);
  return row;
}

function startNarration(answer) {
  if (narration) narration.events.close();
  const list = byId('segments');
  list.replaceChildren();
  const rows = new Map();
  for (const segment of answer.segments) {
    const row = segmentRow(segment);
    rows.set(String(segment.segment_id), row);
    list.append(row);
  }
  narration = {
    taskId: answer.task_id,
    statusUrl: answer.status_url,
    order: answer.segments.map((segment) => String(segment.segment_id)),
    rows,
    texts: new Map(answer.segments.map((segment) => [String(segment.segment_id), segment.text])),
    shownSegments: new Set(),
    shownErrors: new Set(),
    finished: false,
    revision: -1,
    nextToPlay: 0,
    playing: null,
    events: new EventSource(answer.events_url),
  };
  byId('task').hidden = false;
  byId('task-id').textContent = answer.task_id;
  byId('task-state').textContent = 'PENDING';
  byId('task-state').className = 'badge';
  byId('progress-bar').value = 0;
  byId('progress-label').textContent = '0%';
  byId('current-segment').textContent = '';
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
}

function renderProgress(status) {
  const progress = status.progress || {};
  const percentage = Number.isInteger(progress.percentage) ? progress.percentage : 0;
  byId('progress-bar').value = percentage;
  byId('progress-label').textContent = progress.total
    ? `${progress.current} / ${progress.total} (${percentage}%)` : `${percentage}%`;
  const current = byId('current-segment');
  const spoken = status.completed_segments.length;
  if (status.status === 'PENDING') {
    current.textContent = `Waiting for the worker: ${status.queue_position} narration(s) ahead.`;
  } else if (status.status === 'PROCESSING') {
    // The server names a sentence only while it is being synthesised; once it is playable
    // the progress counts it and names none until the next one starts.
    const id = progress.current_segment_id;
    const stopping = status.cancel_requested ? ' (stopping after this sentence)' : '';
    if (id !== undefined && !narration.shownSegments.has(String(id))) {
      const text = progress.current_text || narration.texts.get(String(id)) || '';
      current.textContent = `Speaking sentence ${id} of ${narration.order.length}: “${text}”${stopping}`;
    } else if (progress.current) {
      current.textContent = `${progress.current} of ${narration.order.length} sentences done`
        + (status.cancel_requested ? ', stopping.' : '; the next one follows the pause.');
    } else {
      current.textContent = 'Starting…';
    }
  } else {
    const seconds = status.completed_segments.reduce((sum, segment) => sum + segment.duration, 0);
    const outcome = { COMPLETED: 'Done', CANCELLED: 'Stopped', FAILED: 'Stopped' }[status.status];
    const note = progress.note ? ` (${progress.note})` : '';
    current.textContent = `${outcome}: ${spoken} of ${narration.order.length} sentences spoken, `
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

function renderStatus(status) {
  // The DELETE's answer and the event stream race: an older status must not undo a newer one.
  if (status.revision <= narration.revision) return;
  narration.revision = status.revision;
  const badge = byId('task-state');
  badge.textContent = status.cancel_requested && !FINISHED.has(status.status) ? `${status.status} · cancelling` : status.status;
  badge.className = `badge ${status.status.toLowerCase()}`;
  renderSegments(status);
  renderProgress(status);
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
  for (const audio of document.querySelectorAll('#segments audio')) {
    if (audio !== playing && !audio.paused) audio.pause();
  }
  if (narration) narration.playing = playing;
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
    startNarration(answer);
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
});
