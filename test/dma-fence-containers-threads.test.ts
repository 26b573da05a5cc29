/**
 * Fence containers across worker threads (kernel-contract §4, §2.7): arrays,
 * merges and chains live in shared memory, so a container built in one thread
 * completes in another when its fences signal anywhere.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dmaFenceArrayCreate, dmaFenceChainInit, DmaFence, isDmaFenceArray, isDmaFenceChain, SwSyncTimeline, unwrapMerge,
} from 'dmabuf';
import type { Packet } from 'dmabuf';
import { guard, turn } from './support/async.js';
import { installLeakCheck } from './support/leaks.js';
import { RpcClient } from './support/worker-rpc.js';
import type { ContainerCommand, ContainerEvent, ContainerWaitReport } from './workers/container-worker.js';

/** Hang guards only, never a result. */
const HANG_GUARD_MS = 30_000;

/** One container-worker, driven by request/reply messages; replies, events and its exit are hang-guarded. */
class WorkerClient extends RpcClient<ContainerCommand & { delayMs?: number }, ContainerEvent> {
  constructor() {
    super(new URL('./workers/container-worker.js', import.meta.url), {
      callGuardMs: HANG_GUARD_MS, eventGuardMs: HANG_GUARD_MS, stopGuardMs: HANG_GUARD_MS,
    });
  }
}

installLeakCheck('every object created by this file was released once the workers exited');

describe('a container built in the main thread, waited on in a worker', () => {
  for (const how of ['dmaFenceArrayCreate', 'unwrapMerge'] as const) {
    test(`a worker's blocking wait on an array (${how}) of two sw_sync timelines returns when the main thread signals both`, async () => {
      const client = new WorkerClient();
      try {
        const tlA = SwSyncTimeline.create('thr-a');
        const tlB = SwSyncTimeline.create('thr-b');
        const fa = tlA.createFence(1);
        const fb = tlB.createFence(1);
        const arr = how === 'unwrapMerge'
          ? unwrapMerge(fa, fb)
          : dmaFenceArrayCreate([fa, fb], DmaFence.contextAlloc(1), 1, false);
        assert.equal(isDmaFenceArray(arr), true);
        await client.call({ op: 'receiveFence', name: 'arr', token: arr.share() });
        assert.equal(await client.call({ op: 'status', name: 'arr' }), 0);

        const waiting = client.event();
        const report = client.call<ContainerWaitReport>({ op: 'wait', name: 'arr', timeoutMs: 30_000 });
        const ev = await waiting;
        assert.equal(ev.status, 0, 'the array was pending when the worker started to wait');
        tlA.inc(1);
        assert.equal(fa.getStatus(), 1);
        assert.equal(arr.getStatus(), 0, 'one timeline is not enough');
        tlB.inc(1);
        const r = await report;
        assert.equal(r.before, 0);
        assert.ok(r.ret > 0, `the worker's waitTimeout returned ${r.ret}`);
        assert.equal(r.after, 1);
        assert.equal(arr.getStatus(), 1);

        await client.call({ op: 'put', name: 'arr' });
        arr.put();
        fa.put();
        fb.put();
        tlA.close();
        tlB.close();
      } finally {
        await client.stop();
      }
    });
  }

  test('a worker\'s blocking wait on a chain of sw_sync points returns when the main thread reaches every point', async () => {
    const client = new WorkerClient();
    try {
      const tl = SwSyncTimeline.create('thr-chain');
      const points = [1, 2, 3].map((v) => tl.createFence(v));
      let head: DmaFence | null = null;
      for (const [i, p] of points.entries()) {
        const link: DmaFence = dmaFenceChainInit(head, p, i + 1);
        head?.put();
        head = link;
      }
      assert.ok(head);
      await client.call({ op: 'receiveFence', name: 'chain', token: head.share() });
      const waiting = client.event();
      const report = client.call<ContainerWaitReport>({ op: 'wait', name: 'chain', timeoutMs: 30_000 });
      assert.equal((await waiting).status, 0);
      tl.inc(1);
      tl.inc(1);
      assert.equal(head.getStatus(), 0);
      tl.inc(1);
      const r = await report;
      assert.ok(r.ret > 0, `the worker's waitTimeout returned ${r.ret}`);
      assert.equal(r.after, 1);
      await client.call({ op: 'put', name: 'chain' });
      head.put();
      for (const p of points) p.put();
      tl.close();
    } finally {
      await client.stop();
    }
  });
});

describe('a chain built in a worker, completed in the main thread', () => {
  test('a chain built in a worker and shared back completes in the main thread when the worker signals its points', async () => {
    const client = new WorkerClient();
    let head: DmaFence | undefined;
    try {
      const context = DmaFence.contextAlloc(1);
      for (const i of [1, 2, 3]) {
        await client.call({ op: 'initFence', name: `f${i}`, context, seqno: i });
        await client.call({ op: 'chainInit', name: `c${i}`, prev: i === 1 ? null : `c${i - 1}`, fence: `f${i}`, seqno: i });
      }
      const token = await client.call<Packet>({ op: 'shareFence', name: 'c3' });
      head = DmaFence.receive(token);
      assert.equal(isDmaFenceChain(head), true);
      assert.equal(head.seqno, 3n);
      assert.equal(head.driverName, 'dma_fence_chain');
      assert.equal(head.getStatus(), 0);

      let calls = 0;
      let fired!: () => void;
      const done = new Promise<void>((resolve) => {
        fired = resolve;
      });
      assert.equal(head.addCallback(() => {
        calls++;
        fired();
      }), 0);
      const waited = head.waitTimeoutAsync(30_000);

      // Out of order: the newest and the oldest point first.
      assert.equal(await client.call({ op: 'signal', name: 'f3' }), 0);
      assert.equal(head.getStatus(), 0);
      assert.equal(await client.call({ op: 'signal', name: 'f1' }), 0);
      assert.equal(head.getStatus(), 0);
      await turn();
      assert.equal(calls, 0, 'not before the middle point has signalled');
      assert.equal(await client.call({ op: 'signal', name: 'f2' }), 0);

      await guard(done, 'the callback', HANG_GUARD_MS);
      const r = await guard(waited, 'waitTimeoutAsync', HANG_GUARD_MS);
      assert.ok(r > 0, `waitTimeoutAsync returned ${r}`);
      assert.equal(calls, 1);
      assert.equal(head.getStatus(), 1);
      assert.equal(await client.call({ op: 'status', name: 'c3' }), 1);
    } finally {
      head?.put();
      await client.stop();
    }
  });

  test('a chain received from a worker outlives the worker that built it', async () => {
    const client = new WorkerClient();
    let head: DmaFence | undefined;
    try {
      const context = DmaFence.contextAlloc(1);
      await client.call({ op: 'initFence', name: 'f1', context, seqno: 1 });
      await client.call({ op: 'chainInit', name: 'c1', prev: null, fence: 'f1', seqno: 1 });
      await client.call({ op: 'signal', name: 'f1' });
      head = DmaFence.receive(await client.call<Packet>({ op: 'shareFence', name: 'c1' }));
    } finally {
      await client.stop();
    }
    assert.equal(head.getStatus(), 1);
    assert.equal(head.seqno, 1n);
    head.put();
  });
});
