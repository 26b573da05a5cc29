/**
 * The one worker script of the fence and sw_sync tests, driven by messages.
 *
 * The test posts `Request`s ({ req, op, ... }); the worker answers each with an
 * `RpcReply` carrying the same `req` (test/support/worker-rpc.ts), and posts
 * `WorkerEvent`s on its own when something happens that the test waits for (a
 * callback ran, a blocking wait is about to start). Objects the worker holds are
 * kept under names chosen by the test (test/support/held-objects.ts).
 *
 * Any request may carry a `gate`: the worker then blocks until word 0 of that
 * SharedArrayBuffer becomes non-zero before it acts (optionally sleeping `delayMs`
 * more), so the test can block its own thread in a wait first and be woken by
 * this worker without any timing deciding the result.
 */
import { threadId } from 'node:worker_threads';
import { DmaFence, liveObjects, SwSyncTimeline } from 'dmabuf';
import type { Packet } from 'dmabuf';
import { blockingWait, HeldObjects, type WaitingEvent, type WaitReport } from '../support/held-objects.js';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

export type { WaitReport } from '../support/held-objects.js';

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

export type Request = Command & Gate & { req: number };

export type WorkerEvent =
  | WaitingEvent
  | {
    kind: 'event'; event: 'callback'; name: string; tag: string; threadId: number; status: number; error: number;
    isArg: boolean;
  };

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

const held = new HeldObjects();

const workerOps = {
  getDriverName: () => 'worker-drv',
  getTimelineName: () => 'worker-tl',
};

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

async function run(m: Request, emit: (e: WorkerEvent) => void): Promise<unknown> {
  passGate(m);
  switch (m.op) {
    case 'threadId':
      return threadId;
    case 'live':
      return liveObjects();
    case 'receiveFence':
      held.fences.set(m.name, DmaFence.receive(m.token));
      return undefined;
    case 'receiveTimeline':
      held.timelines.set(m.timeline, SwSyncTimeline.receive(m.token));
      return undefined;
    case 'tryReceiveFence': {
      const f = DmaFence.receive(m.token);
      f.put();
      return undefined;
    }
    case 'initFence':
      held.fences.set(m.name, DmaFence.init(workerOps, m.context, m.seqno));
      return undefined;
    case 'shareFence':
      return held.fence(m.name).share();
    case 'createTimeline':
      held.timelines.set(m.timeline, SwSyncTimeline.create(m.tlName));
      return undefined;
    case 'shareTimeline':
      return held.timeline(m.timeline).share();
    case 'createFence':
      held.fences.set(m.name, held.timeline(m.timeline).createFence(m.value));
      return undefined;
    case 'status':
      return held.fence(m.name).getStatus();
    case 'flags':
      return held.fence(m.name).flags;
    case 'deadline':
      return held.fence(m.name).deadline;
    case 'setDeadline':
      held.fence(m.name).setDeadline(m.ns);
      return undefined;
    case 'setError':
      held.fence(m.name).setError(m.error);
      return undefined;
    case 'signal':
      return held.fence(m.name).signal();
    case 'addCallback': {
      const f = held.fence(m.name);
      const name = m.name;
      const tag = m.tag;
      return f.addCallback((arg) => {
        emit({
          kind: 'event', event: 'callback', name, tag, threadId, status: arg.getStatus(), error: arg.error,
          isArg: arg === f,
        });
      });
    }
    case 'wait':
      return blockingWait(held.fence(m.name), m.name, m.timeoutMs, emit);
    case 'waitAsync': {
      const f = held.fence(m.name);
      const before = f.getStatus();
      const p = f.waitTimeoutAsync(m.timeoutMs);
      emit({ kind: 'event', event: 'waiting', name: m.name, status: before });
      const ret = await p;
      return { before, ret, after: f.getStatus() } satisfies WaitReport;
    }
    case 'inc':
      held.timeline(m.timeline).inc(m.n);
      return undefined;
    case 'value':
      return held.timeline(m.timeline).value;
    case 'put':
      held.fence(m.name).put();
      held.fences.delete(m.name);
      return undefined;
    case 'closeTimeline':
      held.timeline(m.timeline).close();
      held.timelines.delete(m.timeline);
      return undefined;
    case 'alternate':
      return alternate(held.timeline(m.timeline), m.parity, m.rounds, m.timeoutMs);
    case 'exit':
      held.releaseAll();
      process.exit(0);
  }
}

serve<Request, WorkerEvent>(run);
