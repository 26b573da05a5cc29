/**
 * Worker script of the fence-container tests, driven by messages.
 *
 * The test posts `ContainerRequest`s ({ req, op, ... }); the worker answers each
 * with an `RpcReply` carrying the same `req` (test/support/worker-rpc.ts). Before a
 * blocking wait it posts a `ContainerEvent` ('waiting') so the test knows the wait
 * is about to start. Fences and timelines the worker holds are kept under names
 * chosen by the test (test/support/held-objects.ts); `exit` puts and closes all
 * of them and ends the thread.
 *
 * A request may carry `delayMs`: the worker sleeps that long before acting. It
 * only makes it likely that a blocked party really sleeps first; no result
 * depends on it.
 */
import { dmaFenceChainInit, DmaFence, liveObjects, SwSyncTimeline, unwrap } from 'dmabuf';
import type { Packet } from 'dmabuf';
import { blockingWait, HeldObjects, type WaitingEvent } from '../support/held-objects.js';
import { serve, sleep } from '../support/worker-rpc.js';

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

export type ContainerEvent = WaitingEvent;

/** Result of the `wait` op. */
export type { WaitReport as ContainerWaitReport } from '../support/held-objects.js';

const held = new HeldObjects();

const ops = {
  getDriverName: () => 'container-worker',
  getTimelineName: () => 'worker-tl',
};

function run(m: ContainerRequest, emit: (e: ContainerEvent) => void): unknown {
  if (m.delayMs) sleep(m.delayMs);
  switch (m.op) {
    case 'live':
      return liveObjects();
    case 'receiveFence':
      held.fences.set(m.name, DmaFence.receive(m.token));
      return undefined;
    case 'receiveTimeline':
      held.timelines.set(m.timeline, SwSyncTimeline.receive(m.token));
      return undefined;
    case 'initFence':
      held.fences.set(m.name, DmaFence.init(ops, m.context, m.seqno));
      return undefined;
    case 'chainInit': {
      const link = dmaFenceChainInit(m.prev === null ? null : held.fence(m.prev), held.fence(m.fence), m.seqno);
      held.fences.set(m.name, link);
      return { context: link.context, seqno: link.seqno };
    }
    case 'shareFence':
      return held.fence(m.name).share();
    case 'unwrap': {
      // Keep every leaf under `${prefix}${i}` (newest link first); reply with their seqnos.
      const seqnos: bigint[] = [];
      for (const leaf of unwrap(held.fence(m.name))) {
        held.fences.set(`${m.prefix}${seqnos.length}`, leaf.get());
        seqnos.push(leaf.seqno);
      }
      return seqnos;
    }
    case 'signal':
      return held.fence(m.name).signal();
    case 'status':
      return held.fence(m.name).getStatus();
    case 'wait':
      return blockingWait(held.fence(m.name), m.name, m.timeoutMs, emit);
    case 'inc':
      held.timeline(m.timeline).inc(m.n);
      return undefined;
    case 'put':
      held.fence(m.name).put();
      held.fences.delete(m.name);
      return undefined;
    case 'exit':
      held.releaseAll();
      process.exit(0);
  }
}

serve<ContainerRequest, ContainerEvent>(run);
