// Compiled by types.test.js with `tsc --strict --noEmit`: every public name of
// index.d.ts used the way the README shows, so that the types match the surface.

import {
  TaskManager, getTaskManager, StoryflowTasksError, InvalidArgumentError, ENGINES, DEFAULT_ENGINE, Integer, JsonValue, SegmentId,
  TASK_PENDING, TASK_PROCESSING, TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED,
  TaskStatus, TaskEvent, FeedGap, TaskStats, TaskConfig, TaskState, EngineName, HandlerContext, HandlerFunction,
  SubmitOptions, ScheduleOptions, PriorityPending,
} from '..';

async function useEverything(): Promise<void> {
  const tm: TaskManager = getTaskManager({ engine: 'koffi' });
  const same: boolean = new TaskManager() === tm;
  const engine: EngineName = tm.engine;
  const names: EngineName[] = ENGINES;
  const defaultEngine: 'koffi' = DEFAULT_ENGINE;
  const path: string = tm.libraryPath;
  const version: string = tm.version;
  const states: TaskState[] = [TASK_PENDING, TASK_PROCESSING, TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED];

  const id: string = tm.submitTask(async (taskId: string, signal: AbortSignal) => {
    if (signal.aborted) return;
    const applied: boolean = tm.updateTaskProgress(taskId, 1, 2, { current_segment_id: 7, big: 2n ** 70n });
    tm.updateTaskProgress(taskId, 1n, 2n);
    tm.addCompletedSegment(taskId, 7, { audio_url: '/7.wav', duration: 1.5 });
    const recorded: boolean = tm.addCompletedSegment(taskId, 2n ** 60n, { audio_url: '/big.wav', duration: 1 });
    console.log(applied, recorded);
    tm.addCompletedSegment(taskId, 'intro', { audio_url: '/intro.wav', duration: 0 });
    tm.addError(taskId, 3, 'voice not found');
  }, 'my-id');
  tm.submitTask(() => 42);
  const urgent: SubmitOptions = { taskId: 'preview-1', priority: 10, deadline: new Date(Date.now() + 60_000) };
  tm.submitTask((taskId: string) => {
    if (tm.isYieldRequested(taskId)) tm.yieldTask(taskId);
  }, urgent);
  tm.submitTask(() => undefined, { priority: -1n, deadline: Date.now() / 1000 + 60 });
  tm.submitTask(() => undefined, { deadline: null });
  const schedule: ScheduleOptions = { priority: 5 };
  tm.submitNamed('narrate', { sentences: ['a'] }, { ...schedule, taskId: null });

  tm.registerHandler('narrate', async (payload: JsonValue, { id: taskId, signal, attempt, checkpoint }: HandlerContext) => {
    const first: number = attempt;
    const resumeAt: JsonValue = checkpoint;
    if (!signal.aborted) tm.setCheckpoint(taskId, { next: 3, big: 2n ** 70n });
    console.log(payload, first, resumeAt);
  });
  tm.registerHandler('patient', async (_payload: JsonValue, context: HandlerContext) => {
    const before: number = context.yields;
    const asked: boolean = context.shouldYield();
    if (asked) context.yield();
    console.log(before);
  });
  const typed: HandlerFunction<{ sentences: string[] }> = (payload) => console.log(payload.sentences.length);
  tm.registerHandler('typed', typed);
  const served: string[] = tm.handlerNames();
  const namedId: string = tm.submitNamed('narrate', { sentences: ['a', 'b'] }, 'chapter-1');
  tm.submitNamed('narrate');
  const checkpointed: boolean = tm.setCheckpoint(namedId, null);
  console.log(served, checkpointed);

  const status: TaskStatus | null = tm.getTaskStatus(id);
  if (status !== null) {
    const segmentId: SegmentId | undefined = status.completed_segments[0]?.segment_id;
    const current: Integer | undefined = status.progress.current;
    const extra: JsonValue | undefined = status.progress.current_segment_id;
    const wide: number | bigint | string | undefined = segmentId;
    console.log(current, extra, wide);
    const position: number | null = status.queue_position;
    const percentage: number | undefined = status.progress.percentage;
    console.log(segmentId, position, percentage, status.cancel_requested, status.error, status.revision);
    const handler: string | null = status.handler;
    const attempt: number = status.attempt;
    const checkpoint: JsonValue = status.checkpoint;
    console.log(handler, attempt, checkpoint);
    const priority: number = status.priority;
    const deadline: number | null = status.deadline;
    const yieldRequested: boolean = status.yield_requested;
    const yields: number = status.yields;
    console.log(priority, deadline, yieldRequested, yields);
  }
  const requested: boolean = tm.isCancelRequested(id);
  const afterCancel: TaskStatus | null = await tm.cancel(id);
  const final: TaskStatus = await tm.wait(id, { timeout: 1000 });
  await tm.wait(id);
  for await (const change of tm.watch(id)) console.log(change.status);
  const listed: TaskStatus[] = await tm.listTasks(TASK_PENDING);
  const listedNow: TaskStatus[] = tm.listTasksSync(TASK_PENDING);
  const stats: TaskStats = await tm.stats();
  const statsNow: TaskStats = tm.statsSync();
  const pending: number = stats.counts.PENDING;
  const byPriority: PriorityPending[] = stats.pending_by_priority;
  console.log(byPriority.map((entry) => entry.priority * entry.pending));
  const config: TaskConfig = tm.getConfig();
  await tm.configure({ max_pending_tasks: 10 });
  await tm.configure({ store: 'sqlite:/tmp/tasks.db', max_attempts: 3 });
  tm.configureSync({ max_pending_tasks: 10 });
  const seq: number = tm.lastEventSeq();
  tm.events.on('event', (event: TaskEvent) => console.log(event.kind, event.seq));
  tm.events.on('gap', (gap: FeedGap) => console.log(gap.afterSeq, gap.nextSeq));
  await tm.shutdown({ timeout: 5000 });
  try {
    tm.submitTask(() => undefined);
  } catch (error) {
    if (error instanceof InvalidArgumentError) {
      const code: 'SFT_ERR_INVALID_ARGUMENT' = error.code;
      console.log(code);
    } else if (error instanceof StoryflowTasksError) {
      const code: string | null = error.code;
      const result: number | null = error.result;
      console.log(code, result);
    }
  }
  console.log(same, engine, names, defaultEngine, path, version, states, requested, afterCancel, final, listed, listedNow, statsNow, pending, config, seq);
}

void useEverything;
