/**
 * DOC: tracepoints — fence lifetimes as events (include/trace/events/dma_fence.h)
 *
 * The kernel's dma_fence tracepoints, plus two of the buffer layer, recorded per
 * thread into a bounded buffer that the caller takes out (`traceTake`). Each
 * event has a timestamp, the recording thread and the fence's identity (context,
 * seqno, driver and timeline name: what the kernel's `dma_fence` event class
 * records), or the buffer's.
 *
 * | event | fires in | fields |
 * |---|---|---|
 * | `dma_fence_init` | the creating thread: `DmaFence.init`, sw_sync points (also one that is dropped for an existing point of the same value, as in the kernel), arrays, chains, stubs | fence |
 * | `dma_fence_signaled` | the signalling thread: `signal*`, a sw_sync `inc`/close, a point born signalled, a container or driver op found done | fence |
 * | `dma_fence_wait_start` / `_end` | the waiting thread, around `dma_fence_wait_timeout` (blocking or promise form, after the argument checks, also when it returns at once) | fence; `ret` on the end |
 * | `dma_buf_add_fence` | the importing thread: `importSyncFile` / DMA_BUF_IOCTL_IMPORT_SYNC_FILE, once per fence added | buffer, fence, usage |
 * | `dma_buf_wait_start` / `_end` | the waiting thread, around a buffer's wait on its reservation object: `beginCpuAccess` (DMA_BUF_IOCTL_SYNC START) and a static importer's `map` | buffer, usage, op; `ret` on the end |
 *
 * The buffer events are not the kernel's: it has no tracepoint for either. A
 * reservation object does not know its buffer, so the dma-buf layer records them;
 * a wait on a bare `DmaResv` shows as the `dma_fence_wait_*` of each fence it
 * sleeps on (as in the kernel), and so does the inside of a buffer wait.
 * `waitAnyTimeout` and the uapi's multi-fd `poll` record nothing (no tracepoint
 * in the kernel either).
 *
 * Contract:
 * - Per thread. Each thread has its own switch and buffer (module state is per
 *   thread): a worker records only when it calls `traceEnable` itself. Off by default.
 * - Off, a tracepoint is one test of the module-level boolean `tracing`: no call,
 *   no allocation (the fence paths it sits on take ~100 ns).
 * - On, events go into a buffer of `capacity` events; once it is full, later
 *   events are dropped and counted (ftrace with `overwrite` 0). `traceTake` hands
 *   the events and the count over and starts an empty buffer.
 * - `ts` is microseconds since the Unix epoch (`performance.timeOrigin +
 *   performance.now()`), comparable between the threads of one process; `tid`
 *   is `worker_threads.threadId` (the main thread is 0).
 * - A signal is stamped no later than the moment another thread can see it
 *   (just before the state is published; for sw_sync, before the counter moves,
 *   since a point counts as signalled once the counter passes it): whatever a
 *   thread does on seeing a signal is recorded after the signal, even when the
 *   signalling thread is preempted between the two.
 */
import { threadId } from 'node:worker_threads';
import { fail } from './errors.js';

/** Fences as the kernel's `dma_fence` event class records them. Numbers where exact, bigints above 2^53. */
export interface TraceFence {
  context: number | bigint;
  seqno: number | bigint;
  driver: string;
  timeline: string;
}

/** A buffer: its file's inode number (bufinfo's `ino`), user-set name (or null) and exporter name. */
export interface TraceBuffer {
  ino: number;
  name: string | null;
  expName: string;
}

export type TraceEventName =
  | 'dma_fence_init' | 'dma_fence_signaled' | 'dma_fence_wait_start' | 'dma_fence_wait_end'
  | 'dma_buf_add_fence' | 'dma_buf_wait_start' | 'dma_buf_wait_end';

/** The reservation usage of an added fence or of a wait (DMA_RESV_USAGE_*, by name). */
export type TraceUsage = 'kernel' | 'write' | 'read' | 'bookkeep';

/** One recorded event. Which optional fields are set depends on `name` (see the table above). */
export interface TraceEvent {
  name: TraceEventName;
  /** µs since the Unix epoch. */
  ts: number;
  /** `worker_threads.threadId` of the recording thread. */
  tid: number;
  fence?: TraceFence;
  buffer?: TraceBuffer;
  usage?: TraceUsage;
  /** What a buffer wait is for. */
  op?: 'begin_cpu_access' | 'map_attachment';
  /** A wait's result: remaining ms (> 0), 0 on timeout, a negative errno. */
  ret?: number;
}

/** What `traceTake` hands over: this thread's events in the order recorded, and how many were dropped. */
export interface TraceLog {
  tid: number;
  events: TraceEvent[];
  dropped: number;
}

/** Events kept per thread unless `traceEnable` says otherwise (about 10 MB of events). */
export const TRACE_DEFAULT_CAPACITY = 65536;

/**
 * @internal Is this thread recording? Tracepoints test this and nothing else when
 * off: `if (tracing) traceRecord(...)`. A live binding: importers see changes.
 */
export let tracing = false;

let capacity = TRACE_DEFAULT_CAPACITY;
let events: TraceEvent[] = [];
let dropped = 0;
const ORIGIN = performance.timeOrigin;

/**
 * Start recording in this thread (again), keeping what was recorded and not taken.
 * `capacity`: events kept until `traceTake` (default TRACE_DEFAULT_CAPACITY).
 * @throws EINVAL if `capacity` is not a positive integer (nothing changes then).
 */
export function traceEnable(opts: { capacity?: number } = {}): void {
  const cap = opts.capacity ?? TRACE_DEFAULT_CAPACITY;
  if (!Number.isSafeInteger(cap) || cap < 1) throw fail('EINVAL', 'trace_enable', `capacity ${String(cap)} is not a positive integer`);
  capacity = cap;
  tracing = true;
}

/** Stop recording in this thread; what was recorded stays until `traceTake`. */
export function traceDisable(): void {
  tracing = false;
}

/** True while this thread records. */
export function traceIsEnabled(): boolean {
  return tracing;
}

/**
 * Hand over this thread's recorded events and drop count and start empty; the
 * switch stays as it is. The events are plain data (structured-cloneable: post
 * them to another thread as they are).
 */
export function traceTake(): TraceLog {
  const log = { tid: threadId, events, dropped };
  events = [];
  dropped = 0;
  return log;
}

/** @internal the trace clock now: µs since the Unix epoch. */
export function traceNow(): number {
  return (ORIGIN + performance.now()) * 1000;
}

/**
 * @internal Record one event in this thread (callers test `tracing` first), at
 * `ts` (default now): a caller may stamp an event with the moment it took effect.
 */
export function traceRecord(name: TraceEventName, fields: Omit<TraceEvent, 'name' | 'ts' | 'tid'>, ts = traceNow()): void {
  if (events.length >= capacity) {
    dropped++;
    return;
  }
  events.push({ name, ts, tid: threadId, ...fields });
}
