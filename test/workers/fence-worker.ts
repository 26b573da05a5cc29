/**
 * The one worker script of the fence and sw_sync tests, driven by messages.
 *
 * The test posts `Request`s ({ req, op, ... }); the worker answers each with a
 * `Reply` carrying the same `req`, and posts `WorkerEvent`s on its own when
 * something happens that the test waits for (a callback ran, a blocking wait is
 * about to start). Objects the worker holds are kept in two maps under names
 * chosen by the test.
 *
 * Any request may carry a `gate`: the worker then blocks until word 0 of that
 * SharedArrayBuffer becomes non-zero before it acts (optionally sleeping `delayMs`
 * more), so the test can block its own thread in a wait first and be woken by
 * this worker without any timing deciding the result.
 */
import { parentPort, threadId } from 'node:worker_threads';
import { DmaFence, liveObjects, SwSyncTimeline } from 'dmabuf';
import type { Packet } from 'dmabuf';

export type Command =
  | { op: 'threadId' }
  | { op: 'live' }
  | { op: 'receiveFence'; name: string; token: Packet }
  | { op: 'receiveTimeline'; timeline: string; token: Packet }
  | { op: 'tryReceiveFence'; token: Packet }
  | { op: 'initFence'; name: string; context: bigint; seqno: number }
  | { op: 'shareFence'; name: string }
  | { op: 'createTimeline'; timeline: string; tlName: string }
  | { op: 'shareTimeline'; timeline: string }
  | { op: 'createFence'; name: string; timeline: string; value: number }
  | { op: 'status'; name: string }
  | { op: 'flags'; name: string }
  | { op: 'deadline'; name: string }
  | { op: 'setDeadline'; name: string; ns: bigint }
  | { op: 'setError'; name: string; error: number }
  | { op: 'signal'; name: string }
  | { op: 'addCallback'; name: string; tag: string }
  | { op: 'wait'; name: string; timeoutMs: number }
  | { op: 'waitAsync'; name: string; timeoutMs: number }
  | { op: 'inc'; timeline: string; n: number }
  | { op: 'value'; timeline: string }
  | { op: 'put'; name: string }
  | { op: 'closeTimeline'; timeline: string }
  | { op: 'alternate'; timeline: string; parity: 0 | 1; rounds: number; timeoutMs: number }
  | { op: 'exit' };

export interface Gate {
  /** Block until Int32 word 0 of `gate` is non-zero before acting. */
  gate?: SharedArrayBuffer;
  /** Then sleep this long (ms) before acting. */
  delayMs?: number;
}

export type Request = Command & Gate & { req: number };

export type Reply =
  | { kind: 'reply'; req: number; ok: true; value: unknown }
  | { kind: 'reply'; req: number; ok: false; code: string | undefined; message: string };

export type WorkerEvent =
  | { kind: 'event'; event: 'waiting'; name: string; status: number }
  | {
    kind: 'event'; event: 'callback'; name: string; tag: string; threadId: number; status: number; error: number;
    isArg: boolean;
  };

/** Result of the `wait` / `waitAsync` ops. */
export interface WaitReport {
  /** getStatus() just before the wait started. */
  before: number;
  ret: number;
  /** getStatus() after the wait returned. */
  after: number;
}

/** Result of the `alternate` op. */
export interface AlternateReport {
  rounds: number;
  /** Rounds in which the counter was not exactly the awaited point when the wait returned. */
  mismatches: number;
  /** Rounds whose point was still pending when created (the worker really waited). */
  waited: number;
  timedOut: boolean;
  finalValue: number;
}

const port = parentPort;
if (!port) throw new Error('fence-worker.ts must run in a worker thread');

const fences = new Map<string, DmaFence>();
const timelines = new Map<string, SwSyncTimeline>();

const workerOps = {
  getDriverName: () => 'worker-drv',
  getTimelineName: () => 'worker-tl',
};

function fence(name: string): DmaFence {
  const f = fences.get(name);
  if (!f) throw new Error(`worker holds no fence named ${name}`);
  return f;
}

function timeline(name: string): SwSyncTimeline {
  const t = timelines.get(name);
  if (!t) throw new Error(`worker holds no timeline named ${name}`);
  return t;
}

function post(m: Reply | WorkerEvent): void {
  port!.postMessage(m);
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function passGate(g: Gate): void {
  if (g.gate) {
    const word = new Int32Array(g.gate);
    const deadline = Date.now() + 30_000; // hang guard only
    while (Atomics.load(word, 0) === 0 && Date.now() < deadline) Atomics.wait(word, 0, 0, 1000);
  }
  if (g.delayMs) sleep(g.delayMs);
}

function alternate(tl: SwSyncTimeline, parity: 0 | 1, rounds: number, timeoutMs: number): AlternateReport {
  const r: AlternateReport = { rounds: 0, mismatches: 0, waited: 0, timedOut: false, finalValue: 0 };
  for (let k = 0; k < rounds; k++) {
    // Worker 0 waits for point 2k (reached by the other's k-th inc), worker 1 for 2k+1.
    const target = 2 * k + parity;
    const pt = tl.createFence(target);
    if (pt.getStatus() === 0) r.waited++;
    const ret = pt.waitTimeout(timeoutMs);
    pt.put();
    if (ret <= 0) {
      r.timedOut = true;
      break;
    }
    if (tl.value !== target) r.mismatches++;
    tl.inc(1);
    r.rounds++;
  }
  r.finalValue = tl.value;
  return r;
}

async function run(m: Request): Promise<unknown> {
  passGate(m);
  switch (m.op) {
    case 'threadId':
      return threadId;
    case 'live':
      return liveObjects();
    case 'receiveFence':
      fences.set(m.name, DmaFence.receive(m.token));
      return undefined;
    case 'receiveTimeline':
      timelines.set(m.timeline, SwSyncTimeline.receive(m.token));
      return undefined;
    case 'tryReceiveFence': {
      const f = DmaFence.receive(m.token);
      f.put();
      return undefined;
    }
    case 'initFence':
      fences.set(m.name, DmaFence.init(workerOps, m.context, m.seqno));
      return undefined;
    case 'shareFence':
      return fence(m.name).share();
    case 'createTimeline':
      timelines.set(m.timeline, SwSyncTimeline.create(m.tlName));
      return undefined;
    case 'shareTimeline':
      return timeline(m.timeline).share();
    case 'createFence':
      fences.set(m.name, timeline(m.timeline).createFence(m.value));
      return undefined;
    case 'status':
      return fence(m.name).getStatus();
    case 'flags':
      return fence(m.name).flags;
    case 'deadline':
      return fence(m.name).deadline;
    case 'setDeadline':
      fence(m.name).setDeadline(m.ns);
      return undefined;
    case 'setError':
      fence(m.name).setError(m.error);
      return undefined;
    case 'signal':
      return fence(m.name).signal();
    case 'addCallback': {
      const f = fence(m.name);
      const name = m.name;
      const tag = m.tag;
      return f.addCallback((arg) => {
        post({
          kind: 'event', event: 'callback', name, tag, threadId, status: arg.getStatus(), error: arg.error,
          isArg: arg === f,
        });
      });
    }
    case 'wait': {
      const f = fence(m.name);
      const before = f.getStatus();
      post({ kind: 'event', event: 'waiting', name: m.name, status: before });
      const ret = f.waitTimeout(m.timeoutMs);
      return { before, ret, after: f.getStatus() } satisfies WaitReport;
    }
    case 'waitAsync': {
      const f = fence(m.name);
      const before = f.getStatus();
      const p = f.waitTimeoutAsync(m.timeoutMs);
      post({ kind: 'event', event: 'waiting', name: m.name, status: before });
      const ret = await p;
      return { before, ret, after: f.getStatus() } satisfies WaitReport;
    }
    case 'inc':
      timeline(m.timeline).inc(m.n);
      return undefined;
    case 'value':
      return timeline(m.timeline).value;
    case 'put':
      fence(m.name).put();
      fences.delete(m.name);
      return undefined;
    case 'closeTimeline':
      timeline(m.timeline).close();
      timelines.delete(m.timeline);
      return undefined;
    case 'alternate':
      return alternate(timeline(m.timeline), m.parity, m.rounds, m.timeoutMs);
    case 'exit':
      for (const f of fences.values()) f.put();
      fences.clear();
      for (const t of timelines.values()) t.close();
      timelines.clear();
      process.exit(0);
  }
}

port.on('message', (m: Request) => {
  run(m).then(
    (value) => post({ kind: 'reply', req: m.req, ok: true, value }),
    (e: unknown) => {
      const err = e as { code?: unknown; message?: unknown };
      post({
        kind: 'reply', req: m.req, ok: false, code: typeof err.code === 'string' ? err.code : undefined,
        message: String(err.message ?? e),
      });
    },
  );
});
