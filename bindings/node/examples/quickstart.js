'use strict';
const { getTaskManager, TASK_COMPLETED } = require('storyflow-tasks');

const tm = getTaskManager(); // koffi, unless STORYFLOW_TASKS_ENGINE=ffi-napi

// A JS task: runs on the main thread when the library's single worker reaches it,
// and holds the worker until its Promise settles.
const taskId = tm.submitTask(async (id, signal) => {
  const segments = [1, 2, 3];
  for (const [index, segmentId] of segments.entries()) {
    if (signal.aborted) return; // tm.cancel(id) was called
    await new Promise((resolve) => setTimeout(resolve, 20)); // stands in for TTS work
    tm.addCompletedSegment(id, segmentId, { audio_url: `/media/audio/${segmentId}.wav`, duration: 1.5 });
    tm.updateTaskProgress(id, index + 1, segments.length, { current_segment_id: segmentId });
  }
});

(async () => {
  for await (const status of tm.watch(taskId)) {
    console.log(`${status.status} ${status.progress.percentage ?? 0}%`);
  }
  const final = await tm.wait(taskId, { timeout: 10_000 });
  console.log(`done: ${final.status === TASK_COMPLETED}, ${final.completed_segments.length} segments`);
})();
