/**
 * Worker script of the fence-container tests, driven by messages.
 *
 * The test posts `ContainerRequest`s ({ req, op, ... }); the worker answers each
 * with a `ContainerReply` carrying the same `req`. Before a blocking wait it posts
 * a `ContainerEvent` ('waiting') so the test knows the wait is about to start.
 * Fences and timelines the worker holds live in two maps under names chosen by
 * the test; `exit` puts and closes all of them and ends the thread.
 *
 * A request may carry `delayMs`: the worker sleeps that long before acting. It
 * only makes it likely that a blocked party really sleeps first; no result
 * depends on it.
 */
import { parentPort } from 'node:worker_threads';
import { dmaFenceChainInit, DmaFence, liveObjects, SwSyncTimeline, unwrap } from 'dmabuf';
import type { Packet } from 'dmabuf';

export type ContainerCommand =
  | { op: 'live' }
  | { op: 'receiveFence'; name: string; token: Packet }
  | { op: 'receiveTimeline'; timeline: string; token: Packet }
  | { op: 'initFence'; name: string; context: bigint; seqno: number }
  | { op: 'chainInit'; name: string; prev: string | null; fence: string; seqno: number }
  | { op: 'shareFence'; name: string }
  | { op: 'unwrap'; name: string; prefix: string }
  | { op: 'signal'; name: string }
  | { op: 'status'; name: string }
  | { op: 'wait'; name: string; timeoutMs: number }
  | { op: 'inc'; timeline: string; n: number }
  | { op: 'put'; name: string }
  | { op: 'exit' };

export type ContainerRequest = ContainerCommand & { req: number; delayMs?: number };

export type ContainerReply =
  | { kind: 'reply'; req: number; ok: true; value: unknown }
  | { kind: 'reply'; req: number; ok: false; code: string | undefined; message: string };

export interface ContainerEvent {
  kind: 'event';
  event: 'waiting';
  name: string;
  status: number;
}

/** Result of the `wait` op. */
export interface ContainerWaitReport {
  /** getStatus() just before the wait started. */
  before: number;
  ret: number;
  /** getStatus() after the wait returned. */
  after: number;
}

const port = parentPort;
if (!port) throw new Error('container-worker.ts must run in a worker thread');

const fences = new Map<string, DmaFence>();
const timelines = new Map<string, SwSyncTimeline>();

const ops = {
  getDriverName: () => 'container-worker',
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

function post(m: ContainerReply | ContainerEvent): void {
  port!.postMessage(m);
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function run(m: ContainerRequest): unknown {
  if (m.delayMs) sleep(m.delayMs);
  switch (m.op) {
    case 'live':
      return liveObjects();
    case 'receiveFence':
      fences.set(m.name, DmaFence.receive(m.token));
      return undefined;
    case 'receiveTimeline':
      timelines.set(m.timeline, SwSyncTimeline.receive(m.token));
      return undefined;
    case 'initFence':
      fences.set(m.name, DmaFence.init(ops, m.context, m.seqno));
      return undefined;
    case 'chainInit': {
      const link = dmaFenceChainInit(m.prev === null ? null : fence(m.prev), fence(m.fence), m.seqno);
      fences.set(m.name, link);
      return { context: link.context, seqno: link.seqno };
    }
    case 'shareFence':
      return fence(m.name).share();
    case 'unwrap': {
      // Keep every leaf under `${prefix}${i}` (newest link first); reply with their seqnos.
      const seqnos: bigint[] = [];
      for (const leaf of unwrap(fence(m.name))) {
        fences.set(`${m.prefix}${seqnos.length}`, leaf.get());
        seqnos.push(leaf.seqno);
      }
      return seqnos;
    }
    case 'signal':
      return fence(m.name).signal();
    case 'status':
      return fence(m.name).getStatus();
    case 'wait': {
      const f = fence(m.name);
      const before = f.getStatus();
      post({ kind: 'event', event: 'waiting', name: m.name, status: before });
      const ret = f.waitTimeout(m.timeoutMs);
      return { before, ret, after: f.getStatus() } satisfies ContainerWaitReport;
    }
    case 'inc':
      timeline(m.timeline).inc(m.n);
      return undefined;
    case 'put':
      fence(m.name).put();
      fences.delete(m.name);
      return undefined;
    case 'exit':
      for (const f of fences.values()) f.put();
      fences.clear();
      for (const t of timelines.values()) t.close();
      timelines.clear();
      process.exit(0);
  }
}

port.on('message', (m: ContainerRequest) => {
  try {
    post({ kind: 'reply', req: m.req, ok: true, value: run(m) });
  } catch (e) {
    const err = e as { code?: unknown; message?: unknown };
    post({
      kind: 'reply', req: m.req, ok: false, code: typeof err.code === 'string' ? err.code : undefined,
      message: String(err.message ?? e),
    });
  }
});
