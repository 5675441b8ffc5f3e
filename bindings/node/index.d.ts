// Types of storyflow-tasks, the Node binding of libstoryflow_tasks.
// They need Node's own types (the @types/node package, which brings the ES2020
// library with it) and nothing else: no `lib` or `types` setting is required.
/// <reference types="node" />

import { EventEmitter } from 'node:events';

/** A task waits in the queue. */
export const TASK_PENDING: 'PENDING';
/** The worker runs the task. */
export const TASK_PROCESSING: 'PROCESSING';
/** The task ended well. */
export const TASK_COMPLETED: 'COMPLETED';
/** The task threw, rejected or returned a failure. */
export const TASK_FAILED: 'FAILED';
/** The task was cancelled before it ran, or stopped after its cancellation was requested. */
export const TASK_CANCELLED: 'CANCELLED';

/** A task state. */
export type TaskState = 'PENDING' | 'PROCESSING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

/** The FFI engines the binding runs on. */
export type EngineName = 'koffi' | 'ffi-napi';
/** The engine names, for validation or display. */
export const ENGINES: EngineName[];
/** The engine used when neither the option nor STORYFLOW_TASKS_ENGINE names one. */
export const DEFAULT_ENGINE: 'koffi';

/**
 * An integer as the package reads it from the library: a number when
 * Number.isSafeInteger holds it, else a bigint with every digit.
 */
export type Integer = number | bigint;

/**
 * A segment id keeps its JSON type: an integer stays an integer (a bigint
 * beyond 2^53), a string a string.
 */
export type SegmentId = Integer | string;

/**
 * A value as the package reads it from JSON (integers beyond 2^53 as bigint),
 * and what `extra` may hold: NaN, Infinity, undefined, functions, symbols and
 * class instances are refused with an InvalidArgumentError.
 */
export type JsonValue = string | number | bigint | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** `progress` of a status: `{}` until the first update. */
export interface TaskProgress {
  current?: Integer;
  total?: Integer;
  /** current*100/total, floored, clamped to 0..100; 0 when total is 0. */
  percentage?: number;
  /** Extra keys given with updateTaskProgress, with their JSON types. */
  [extra: string]: JsonValue | undefined;
}

/** One entry of `completed_segments`. */
export interface CompletedSegment {
  segment_id: SegmentId;
  audio_url: string;
  /** Seconds. */
  duration: number;
}

/** One entry of `errors`. */
export interface SegmentError {
  segment_id: SegmentId;
  error: string;
}

/** A task's status: the wire format every binding shares (snake_case keys). */
export interface TaskStatus {
  task_id: string;
  status: TaskState;
  progress: TaskProgress;
  completed_segments: CompletedSegment[];
  errors: SegmentError[];
  /** Unix epoch seconds. */
  created_at: number;
  started_at: number | null;
  completed_at: number | null;
  /** Why the task failed or was cancelled; null otherwise. */
  error: string | null;
  /** Grows on every change to the task. */
  revision: number;
  /** For a PENDING task, how many tasks run before it (0 = next); null otherwise. */
  queue_position: number | null;
  cancel_requested: boolean;
  /** The handler name of a named task; null for a function task. */
  handler: string | null;
  /** How many times the task was started: 0 before the first start, then 1, 2, ... (a resumed interrupted task). */
  attempt: number;
  /** The last value given to setCheckpoint; null if none. */
  checkpoint: JsonValue;
  /** Higher runs first; FIFO within one priority. 0 unless given at submit. */
  priority: number;
  /** Unix epoch seconds; null for no deadline. */
  deadline: number | null;
  /** Whether the task should yield now (isYieldRequested); false unless PROCESSING. */
  yield_requested: boolean;
  /** How often the task yielded. */
  yields: number;
}

/** The result given to addCompletedSegment. */
export interface SegmentResult {
  audio_url: string;
  /** Seconds, finite and >= 0. */
  duration: number;
}

/** Statistics of the process-wide manager. */
export interface TaskStats {
  /** Tasks in the registry per state. */
  counts: Record<TaskState, number>;
  queue_depth: number;
  retained: number;
  submitted_total: number;
  completed_total: number;
  failed_total: number;
  cancelled_total: number;
  mean_run_secs: number;
  max_run_secs: number;
  /** Pending tasks per priority, highest first; only priorities with pending tasks. */
  pending_by_priority: PriorityPending[];
}

/** One entry of `pending_by_priority`. */
export interface PriorityPending {
  priority: number;
  pending: number;
}

/**
 * How a task is scheduled, given at submit. The library checks the values and
 * refuses a bad one (or an unknown key) with an InvalidArgumentError naming it.
 */
export interface ScheduleOptions {
  /** An integer in -2^31..2^31-1; higher runs first, FIFO within one priority. Default 0. */
  priority?: number | bigint;
  /**
   * A Date, or Unix epoch seconds: a task still PENDING then never starts (FAILED),
   * a PROCESSING one is asked to cancel (CANCELLED). Default: none.
   */
  deadline?: Date | number | null;
}

/** The options a submit takes in place of a task id. */
export interface SubmitOptions extends ScheduleOptions {
  /** The id to use; by default a new UUIDv4. */
  taskId?: string | null;
}

/** Settings for configure() and what getConfig() returns. */
export interface TaskConfig {
  /** 'memory' (the default), 'sqlite:<path>' or 'redis://host:port[/db]'; when not set, STORYFLOW_TASKS_STORE. */
  store: string;
  /** How many starts an interrupted named task gets before it is FAILED. */
  max_attempts: number;
  /** The Redis store's key prefix (default 'storyflow'): services sharing a server use their own. */
  redis_namespace: string;
  /** The machine a Redis worker counts as (one running task per machine); null: STORYFLOW_TASKS_MACHINE, else /etc/machine-id, else the host name. */
  machine_id: string | null;
  cleanup_threshold_secs: number;
  max_pending_tasks: number;
  max_retained_finished: number;
  max_task_id_bytes: number;
  max_message_bytes: number;
  max_url_bytes: number;
  max_extra_json_bytes: number;
  max_segments_per_task: number;
  max_errors_per_task: number;
  event_buffer_capacity: number;
}

/** What a change-feed event is about. */
export type TaskEventKind = 'submitted' | 'started' | 'progress' | 'segment' | 'error' | 'cancel_requested' | 'yielded' | 'finished';

/** One change-feed event. */
export interface TaskEvent {
  seq: number;
  task_id: string;
  kind: TaskEventKind;
  status: TaskState;
  revision: number;
}

/** Emitted when events were dropped from the library's buffer before they were read. */
export interface FeedGap {
  /** The seq of the last event read before the gap. */
  afterSeq: number;
  /** The seq of the first event read after it. */
  nextSeq: number;
}

/** The emitter of task events (`tm.events`). Listeners alone do not keep the process alive. */
export interface TaskEventEmitter extends EventEmitter {
  on(event: 'event', listener: (event: TaskEvent) => void): this;
  on(event: 'gap', listener: (gap: FeedGap) => void): this;
  once(event: 'event', listener: (event: TaskEvent) => void): this;
  once(event: 'gap', listener: (gap: FeedGap) => void): this;
  off(event: 'event', listener: (event: TaskEvent) => void): this;
  off(event: 'gap', listener: (gap: FeedGap) => void): this;
}

/** Options of the first TaskManager construction (later ones must agree or be left out). */
export interface TaskManagerOptions {
  /** The FFI engine; default: STORYFLOW_TASKS_ENGINE, else 'koffi'. */
  engine?: EngineName;
  /** The library file; default: STORYFLOW_TASKS_LIB, the copy inside the package, the repository's target/release. */
  libraryPath?: string;
}

/** A timeout in milliseconds (0..2147483647); undefined, null or Infinity: no limit. */
export interface TimeoutOptions {
  timeout?: number | null;
}

/** A JS task: runs on the main thread when the worker reaches it; the worker stays with it until the result settles. */
export type TaskFunction = (taskId: string, signal: AbortSignal) => unknown;

/** What a handler is given beside its payload. */
export interface HandlerContext {
  /** The task id. */
  id: string;
  /** Aborted when cancellation of the task is requested. */
  signal: AbortSignal;
  /** 1 on the first start, 2, 3, ... when an interrupted task is resumed. */
  attempt: number;
  /** The last value given to setCheckpoint (kept across an interruption and a yield); null if none. */
  checkpoint: JsonValue;
  /** How often the task yielded before this run: 0 on its first run. */
  yields: number;
  /** Whether a task of a higher priority waits (tm.isYieldRequested of this task): poll it between sentences. */
  shouldYield(): boolean;
  /** Makes this run's end a yield (tm.yieldTask of this task): call it, then return. */
  yield(): void;
}

/**
 * A named handler: runs on the thread that registered it; a throw or rejection
 * fails the task. `Payload` is what its tasks are submitted with (parsed JSON).
 */
export type HandlerFunction<Payload = JsonValue> = (payload: Payload, context: HandlerContext) => unknown;

/** Names of the C API's result codes. */
export type ResultName =
  | 'SFT_ERR_NOT_FOUND'
  | 'SFT_ERR_INVALID_ARGUMENT'
  | 'SFT_ERR_DUPLICATE_ID'
  | 'SFT_ERR_QUEUE_FULL'
  | 'SFT_ERR_SHUT_DOWN'
  | 'SFT_ERR_INVALID_STATE'
  | 'SFT_ERR_TIMEOUT'
  | 'SFT_ERR_INTERNAL';

/** An error the library reported, or a wait that ran out of time. */
export class StoryflowTasksError extends Error {
  constructor(message: string, code: ResultName | null, result: number | null, options?: { cause?: unknown });
  /** The result name, e.g. 'SFT_ERR_DUPLICATE_ID'; null when the call gives no result code (a NULL string). */
  readonly code: ResultName | null;
  /** The result number, e.g. 3; null with `code`. */
  readonly result: number | null;
}

/**
 * A value refused: by the library (code SFT_ERR_INVALID_ARGUMENT), or before the
 * call because it cannot cross into C (a NUL or lone surrogate in a task id, a
 * count outside 0..2^64-1, a value JSON cannot carry in `extra`).
 */
export class InvalidArgumentError extends StoryflowTasksError {
  constructor(message: string, options?: { cause?: unknown });
  readonly code: 'SFT_ERR_INVALID_ARGUMENT';
}

/** The process-wide task manager: `new TaskManager() === getTaskManager()`. */
export class TaskManager {
  constructor(options?: TaskManagerOptions);
  /** The FFI engine in use. */
  readonly engine: EngineName;
  /** The library file loaded. */
  readonly libraryPath: string;
  /** The library version. */
  readonly version: string;
  /** Task events of every task of the process. */
  readonly events: TaskEventEmitter;

  /** Submits a JS task; returns its id (a new UUIDv4 unless a task id is given, positionally or as `taskId`). */
  submitTask(fn: TaskFunction, taskIdOrOptions?: string | null | SubmitOptions): string;
  /** Serves the named tasks of `name` in this process (a worker for the store's shared queue); SFT_ERR_DUPLICATE_ID if already served here. */
  registerHandler<Payload = JsonValue>(name: string, fn: HandlerFunction<Payload>): void;
  /** The handler names registered on this thread, in order. */
  handlerNames(): string[];
  /** Queues a named task for whichever process serves `name`; returns its id. */
  submitNamed(name: string, payload?: unknown, taskIdOrOptions?: string | null | SubmitOptions): string;
  /** Records the running task's checkpoint (any JSON value); false if the task is unknown or finished. */
  setCheckpoint(taskId: string, value: unknown): boolean;
  /** The task's status, or null if it is unknown. */
  getTaskStatus(taskId: string): TaskStatus | null;
  /**
   * Sets progress to current of total, with extra keys kept with their JSON types.
   * False if the task is unknown or finished; throws InvalidArgumentError for a refused value.
   */
  updateTaskProgress(taskId: string, current: Integer, total: Integer, extra?: Record<string, unknown> | null): boolean;
  /** Records a finished audio segment; false if the task is unknown or finished. */
  addCompletedSegment(taskId: string, segmentId: SegmentId, result: SegmentResult): boolean;
  /** Records a failed segment; false if the task is unknown or finished. */
  addError(taskId: string, segmentId: SegmentId, message: string): boolean;
  /** Whether cancellation of the task was requested. */
  isCancelRequested(taskId: string): boolean;
  /** Whether the running task should yield: a task of a higher priority waits that a worker can run now. */
  isYieldRequested(taskId: string): boolean;
  /** Makes the running task's end a yield (back to PENDING at the head of its priority, its work kept): call it, then return. */
  yieldTask(taskId: string): void;
  /** Cancels a pending task, or requests cancellation of a running one; resolves with the status right after (null only if the task already left the registry). */
  cancel(taskId: string): Promise<TaskStatus | null>;
  /** Resolves with the final status; rejects with SFT_ERR_TIMEOUT after `timeout` ms, SFT_ERR_NOT_FOUND for an unknown id. */
  wait(taskId: string, options?: TimeoutOptions): Promise<TaskStatus>;
  /** The current status, then each change (coalesced when the consumer lags), ending after the final one. */
  watch(taskId: string): AsyncIterableIterator<TaskStatus>;
  /** Every task's status in submission order, optionally only one state. */
  listTasks(status?: TaskState | null): Promise<TaskStatus[]>;
  /** As listTasks, synchronously. */
  listTasksSync(status?: TaskState | null): TaskStatus[];
  /** Statistics. */
  stats(): Promise<TaskStats>;
  /** As stats, synchronously. */
  statsSync(): TaskStats;
  /** Settings, before the first call that opens the store; rejects after it with SFT_ERR_INVALID_STATE. */
  configure(config: Partial<TaskConfig>): Promise<void>;
  /** As configure, throwing instead of rejecting. */
  configureSync(config: Partial<TaskConfig>): void;
  /** The settings in force. */
  getConfig(): TaskConfig;
  /** The seq of the newest change-feed event. */
  lastEventSeq(): number;
  /** Shuts the process-wide manager down for good; rejects with SFT_ERR_TIMEOUT if the running task outlasts `timeout`. */
  shutdown(options?: TimeoutOptions): Promise<void>;
}

/** The process-wide task manager. */
export function getTaskManager(options?: TaskManagerOptions): TaskManager;
