/**
 * DOC: trace logs → Chrome trace-event JSON (`dmabuf demo --trace FILE`)
 *
 * Pure functions: the tracepoint logs of the demo's threads (src/trace.ts) in,
 * the JSON object form of the Chrome trace-event format out, which Perfetto
 * (ui.perfetto.dev) and chrome://tracing open. `readChromeTrace` checks a file's
 * text before `dmabuf trace view` draws it.
 *
 * Layout (the `name` metadata events name every process and lane):
 * - pid 1 "threads": one tid per thread, in the order given (tid 1 first), named
 *   as the caller names it (main, camera, gpu1, …, display). Its events:
 *   - "X" waits, cat `dma_buf_wait` (name `wait buffer <ino>`; args ino, usage,
 *     op, ret) and `dma_fence_wait` (name `wait <fence>`; args the fence, ret),
 *     start to end; a wait still open when the trace ends runs to the end
 *     (args.unfinished);
 *   - "i" instants (thread scope), cat `dma_fence_init` (`created <fence>`) and
 *     `dma_fence_signaled` (`signalled <fence>`).
 * - pid 2 "buffers": one tid per buffer, BUFFER_TID_BASE + its inode number,
 *   named `buffer <ino>` (tids are unique across the file: Perfetto keys threads
 *   by tid alone and would split or merge lanes that share one).
 *   Its events are "X" spans, cat `dma_buf_add_fence`, one per fence added to
 *   the buffer: from the add to the fence's signal, joined by (context, seqno);
 *   name `<fence>`, args usage, context, seqno, driver, timeline, added_by,
 *   signalled_by (thread names; null and args.unfinished if it never signalled
 *   within the trace).
 *
 * `<fence>` is `<timeline name> <seqno>`. Timestamps are µs from the first event
 * (`otherData.ts_origin_us` is that moment in µs since the Unix epoch).
 *
 * Spans on one buffer lane overlap only when fences really are on the buffer at
 * the same time (several readers, say): the demo's never do, as each buffer has
 * one writer and one reader in turn. Perfetto then reports the overlap as
 * misnested slices; `dmabuf trace view` stacks such spans in rows.
 */
import type { TraceEvent, TraceFence, TraceLog } from '../trace.js';

/** One thread's log and the lane name to show for it. */
export interface ThreadTrace {
  name: string;
  log: TraceLog;
}

/** An event of the Chrome trace-event format (the fields used here). */
export interface ChromeEvent {
  name: string;
  ph: string;
  ts: number;
  pid: number;
  tid: number;
  cat?: string;
  dur?: number;
  s?: string;
  args?: Record<string, unknown>;
}

/** The object form of a Chrome trace-event file. */
export interface ChromeTrace {
  traceEvents: ChromeEvent[];
  displayTimeUnit: 'ms' | 'ns';
  otherData: Record<string, unknown>;
}

export const THREADS_PID = 1;
export const BUFFERS_PID = 2;
/** Buffer lanes' tids are this plus the inode; thread lanes' are 1, 2, … (far fewer than this). */
export const BUFFER_TID_BASE = 1000;

type Num = number | bigint;

/** A u64 for JSON: a number when exact, else its decimal string. */
const jsonNum = (v: Num): number | string => (typeof v === 'bigint' ? String(v) : v);
const fenceKey = (f: TraceFence): string => `${f.context}:${f.seqno}`;
const fenceName = (f: TraceFence): string => `${f.timeline} ${f.seqno}`;
const fenceArgs = (f: TraceFence): Record<string, unknown> => ({
  context: jsonNum(f.context), seqno: jsonNum(f.seqno), driver: f.driver, timeline: f.timeline,
});
/** µs with ns resolution: keeps the file short. */
const us = (v: number): number => Math.round(v * 1000) / 1000;

function meta(name: string, pid: number, tid: number, args: Record<string, unknown>): ChromeEvent {
  return { name, ph: 'M', ts: 0, pid, tid, args };
}

/** What a wait start or end is about: equal keys pair up. */
function waitKey(ev: TraceEvent): string {
  return ev.buffer ? `b:${ev.buffer.ino}:${ev.op}:${ev.usage}` : `f:${fenceKey(ev.fence!)}`;
}

function waitEvent(start: TraceEvent, end: TraceEvent | null, endTs: number, t0: number, tid: number): ChromeEvent {
  const ts = us(start.ts - t0);
  const dur = Math.max(0, us((end ? end.ts : endTs) - start.ts));
  // JSON has no Infinity: a wait without timeout that succeeded returns it (MAX_SCHEDULE_TIMEOUT left).
  const ret = end?.ret;
  const tail = end ? { ret: ret === undefined || Number.isFinite(ret) ? ret : String(ret) } : { unfinished: true };
  if (start.buffer) {
    const b = start.buffer;
    return {
      name: `wait buffer ${b.ino}`, cat: 'dma_buf_wait', ph: 'X', ts, dur, pid: THREADS_PID, tid,
      args: { ino: b.ino, buffer_name: b.name, exp_name: b.expName, usage: start.usage, op: start.op, ...tail },
    };
  }
  const f = start.fence!;
  return {
    name: `wait ${fenceName(f)}`, cat: 'dma_fence_wait', ph: 'X', ts, dur, pid: THREADS_PID, tid,
    args: { ...fenceArgs(f), ...tail },
  };
}

/** The events of one thread lane: waits paired start → end, instants for init and signal. */
function threadLane(log: TraceLog, tid: number, t0: number, endTs: number): ChromeEvent[] {
  const out: ChromeEvent[] = [];
  const open = new Map<string, TraceEvent[]>();
  for (const ev of log.events) {
    if (ev.name === 'dma_fence_init' || ev.name === 'dma_fence_signaled') {
      const verb = ev.name === 'dma_fence_init' ? 'created' : 'signalled';
      out.push({
        name: `${verb} ${fenceName(ev.fence!)}`, cat: ev.name, ph: 'i', s: 't', ts: us(ev.ts - t0), pid: THREADS_PID, tid,
        args: fenceArgs(ev.fence!),
      });
    } else if (ev.name === 'dma_fence_wait_start' || ev.name === 'dma_buf_wait_start') {
      const key = waitKey(ev);
      const stack = open.get(key) ?? [];
      stack.push(ev);
      open.set(key, stack);
    } else if (ev.name === 'dma_fence_wait_end' || ev.name === 'dma_buf_wait_end') {
      const start = open.get(waitKey(ev))?.pop(); // the latest open wait on the same thing
      if (start) out.push(waitEvent(start, ev, endTs, t0, tid));
    }
  }
  for (const stack of open.values()) for (const start of stack) out.push(waitEvent(start, null, endTs, t0, tid));
  return out;
}

interface Signal {
  ts: number;
  by: string;
}

/**
 * The signal that ends a fence's presence on a buffer after an add at `ts`: the
 * first one at or after it, else (a fence added already signalled) the last before.
 */
function signalFor(signals: Signal[] | undefined, ts: number): Signal | undefined {
  if (!signals) return undefined;
  return signals.find((s) => s.ts >= ts) ?? signals.at(-1);
}

/**
 * Convert the logs of `threads` to a Chrome trace (pure: the logs are not changed).
 * `otherData` is merged into the file's `otherData` (the run's parameters).
 */
export function toChromeTrace(threads: readonly ThreadTrace[], otherData: Record<string, unknown> = {}): ChromeTrace {
  const all = threads.flatMap((t) => t.log.events);
  // (A loop, not Math.min(...): a spread of 10^5 arguments overflows the stack.)
  let t0 = all.length ? Infinity : 0;
  let endTs = 0;
  for (const e of all) {
    if (e.ts < t0) t0 = e.ts;
    if (e.ts > endTs) endTs = e.ts;
  }
  const nameOf = new Map(threads.map((t) => [t.log.tid, t.name]));
  const events: ChromeEvent[] = [
    meta('process_name', THREADS_PID, 0, { name: 'threads' }), meta('process_sort_index', THREADS_PID, 0, { sort_index: 1 }),
    meta('process_name', BUFFERS_PID, 0, { name: 'buffers' }), meta('process_sort_index', BUFFERS_PID, 0, { sort_index: 2 }),
  ];
  threads.forEach((t, i) => {
    events.push(meta('thread_name', THREADS_PID, i + 1, { name: t.name }), meta('thread_sort_index', THREADS_PID, i + 1, { sort_index: i }));
    events.push(...threadLane(t.log, i + 1, t0, endTs));
  });

  const signals = new Map<string, Signal[]>();
  for (const e of all.filter((x) => x.name === 'dma_fence_signaled').sort((a, b) => a.ts - b.ts)) {
    const key = fenceKey(e.fence!);
    const list = signals.get(key) ?? [];
    list.push({ ts: e.ts, by: nameOf.get(e.tid) ?? `thread ${e.tid}` });
    signals.set(key, list);
  }
  const buffers = new Set<number>();
  for (const add of all.filter((e) => e.name === 'dma_buf_add_fence')) {
    const b = add.buffer!;
    const f = add.fence!;
    buffers.add(b.ino);
    const sig = signalFor(signals.get(fenceKey(f)), add.ts);
    events.push({
      name: fenceName(f), cat: 'dma_buf_add_fence', ph: 'X', ts: us(add.ts - t0),
      dur: Math.max(0, us((sig ? sig.ts : endTs) - add.ts)), pid: BUFFERS_PID, tid: BUFFER_TID_BASE + b.ino,
      args: {
        usage: add.usage, ...fenceArgs(f), added_by: nameOf.get(add.tid) ?? `thread ${add.tid}`,
        signalled_by: sig ? sig.by : null, ...(sig ? {} : { unfinished: true }), buffer_name: b.name, exp_name: b.expName,
      },
    });
  }
  for (const ino of [...buffers].sort((a, b) => a - b)) {
    const tid = BUFFER_TID_BASE + ino;
    events.push(meta('thread_name', BUFFERS_PID, tid, { name: `buffer ${ino}` }), meta('thread_sort_index', BUFFERS_PID, tid, { sort_index: ino }));
  }
  // Metadata first, then by time; an enclosing span before what it encloses (chrome://tracing nests in file order).
  events.sort((a, b) => (a.ph === 'M' ? 0 : 1) - (b.ph === 'M' ? 0 : 1) || a.ts - b.ts || (b.dur ?? 0) - (a.dur ?? 0));
  return {
    traceEvents: events,
    displayTimeUnit: 'ms',
    otherData: {
      producer: 'dmabuf', ts_origin_us: t0,
      threads: threads.map((t, i) => ({ name: t.name, thread_id: t.log.tid, tid: i + 1, events: t.log.events.length, dropped: t.log.dropped })),
      dropped: threads.reduce((n, t) => n + t.log.dropped, 0),
      ...otherData,
    },
  };
}

/** The command's errors are plain errors with a `code`, printed as `<code>: <message>` (main.ts). */
function notATrace(file: string, why: string): Error {
  return Object.assign(new Error(`${file} is not a Chrome trace-event file: ${why}`), { code: 'EINVAL' });
}

/**
 * Parse and check the text of a Chrome trace-event file (object form, or the bare
 * array form). @throws EINVAL naming `file` and what is wrong.
 */
export function readChromeTrace(text: string, file: string): ChromeTrace {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw notATrace(file, `not JSON (${(e as Error).message})`);
  }
  const obj = Array.isArray(json) ? { traceEvents: json } : json;
  if (typeof obj !== 'object' || obj === null || !Array.isArray((obj as ChromeTrace).traceEvents)) {
    throw notATrace(file, 'no traceEvents array');
  }
  const { traceEvents, otherData } = obj as Partial<ChromeTrace> & { traceEvents: unknown[] };
  traceEvents.forEach((e, i) => {
    const ev = e as Partial<ChromeEvent> | null;
    if (typeof ev !== 'object' || ev === null || typeof ev.ph !== 'string') throw notATrace(file, `event ${i} has no ph`);
    for (const k of ['pid', 'tid', 'ts'] as const) {
      if (ev.ph === 'M' && k === 'ts') continue;
      if (typeof ev[k] !== 'number' || !Number.isFinite(ev[k])) throw notATrace(file, `event ${i} has no numeric ${k}`);
    }
    if (ev.dur !== undefined && (typeof ev.dur !== 'number' || !(ev.dur >= 0))) throw notATrace(file, `event ${i} has a bad dur`);
  });
  return {
    traceEvents: traceEvents as ChromeEvent[], displayTimeUnit: 'ms',
    otherData: typeof otherData === 'object' && otherData !== null ? otherData : {},
  };
}
