/**
 * Fence containers across worker threads (kernel-contract §4, §2.7): arrays,
 * merges and chains live in shared memory, so a container built in one thread
 * completes in another when its fences signal anywhere.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import {
  dmaFenceArrayCreate, dmaFenceChainInit, DmaFence, isDmaFenceArray, isDmaFenceChain, liveObjects, SwSyncTimeline,
  unwrapMerge,
} from 'dmabuf';
import type { Packet } from 'dmabuf';
import type {
  ContainerCommand, ContainerEvent, ContainerReply, ContainerWaitReport,
} from './workers/container-worker.js';

/** Reject after `ms` unless `p` settles first: a hang guard, never a result. */
function guard<T>(p: Promise<T>, ms = 30_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang guard: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Let queued microtasks and immediates run (never decides a result). */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** One container-worker, driven by request/reply messages. */
class WorkerClient {
  readonly worker: Worker;
  readonly exited: Promise<number>;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #waiting: Array<(e: ContainerEvent) => void> = [];
  #gone = false;

  constructor() {
    this.worker = new Worker(new URL('./workers/container-worker.js', import.meta.url));
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.#gone = true;
        for (const p of this.#pending.values()) p.reject(Object.assign(new Error('worker exited'), { code: 'EXITED' }));
        this.#pending.clear();
        resolve(code);
      });
    });
    this.worker.on('message', (m: ContainerReply | ContainerEvent) => {
      if (m.kind === 'event') {
        this.#waiting.shift()?.(m);
        return;
      }
      const p = this.#pending.get(m.req);
      if (!p) return;
      this.#pending.delete(m.req);
      if (m.ok) p.resolve(m.value);
      else p.reject(Object.assign(new Error(m.message), { code: m.code }));
    });
  }

  /** Post a request; the promise settles with the worker's reply. */
  request<T = unknown>(cmd: ContainerCommand & { delayMs?: number }): Promise<T> {
    const req = this.#next++;
    const p = new Promise<unknown>((resolve, reject) => this.#pending.set(req, { resolve, reject }));
    this.worker.postMessage({ ...cmd, req });
    return guard(p) as Promise<T>;
  }

  /** The next 'waiting' event (the worker is about to block). */
  nextWaiting(): Promise<ContainerEvent> {
    return guard(new Promise((resolve) => this.#waiting.push(resolve)));
  }

  /** Ask the worker to put everything it holds and exit; resolves once it has. */
  async exit(): Promise<void> {
    if (!this.#gone) this.worker.postMessage({ op: 'exit', req: 0 });
    await guard(this.exited);
  }
}

let baseline = 0;
before(() => {
  DmaFence.getStub().put(); // the global stub lives forever: create it before the baseline
  baseline = liveObjects();
});

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
        await client.request({ op: 'receiveFence', name: 'arr', token: arr.share() });
        assert.equal(await client.request({ op: 'status', name: 'arr' }), 0);

        const waiting = client.nextWaiting();
        const report = client.request<ContainerWaitReport>({ op: 'wait', name: 'arr', timeoutMs: 30_000 });
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

        await client.request({ op: 'put', name: 'arr' });
        arr.put();
        fa.put();
        fb.put();
        tlA.close();
        tlB.close();
      } finally {
        await client.exit();
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
      await client.request({ op: 'receiveFence', name: 'chain', token: head.share() });
      const waiting = client.nextWaiting();
      const report = client.request<ContainerWaitReport>({ op: 'wait', name: 'chain', timeoutMs: 30_000 });
      assert.equal((await waiting).status, 0);
      tl.inc(1);
      tl.inc(1);
      assert.equal(head.getStatus(), 0);
      tl.inc(1);
      const r = await report;
      assert.ok(r.ret > 0, `the worker's waitTimeout returned ${r.ret}`);
      assert.equal(r.after, 1);
      await client.request({ op: 'put', name: 'chain' });
      head.put();
      for (const p of points) p.put();
      tl.close();
    } finally {
      await client.exit();
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
        await client.request({ op: 'initFence', name: `f${i}`, context, seqno: i });
        await client.request({ op: 'chainInit', name: `c${i}`, prev: i === 1 ? null : `c${i - 1}`, fence: `f${i}`, seqno: i });
      }
      const token = await client.request<Packet>({ op: 'shareFence', name: 'c3' });
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
      assert.equal(await client.request({ op: 'signal', name: 'f3' }), 0);
      assert.equal(head.getStatus(), 0);
      assert.equal(await client.request({ op: 'signal', name: 'f1' }), 0);
      assert.equal(head.getStatus(), 0);
      await turn();
      assert.equal(calls, 0, 'not before the middle point has signalled');
      assert.equal(await client.request({ op: 'signal', name: 'f2' }), 0);

      await guard(done);
      const r = await guard(waited);
      assert.ok(r > 0, `waitTimeoutAsync returned ${r}`);
      assert.equal(calls, 1);
      assert.equal(head.getStatus(), 1);
      assert.equal(await client.request({ op: 'status', name: 'c3' }), 1);
    } finally {
      head?.put();
      await client.exit();
    }
  });

  test('a chain received from a worker outlives the worker that built it', async () => {
    const client = new WorkerClient();
    let head: DmaFence | undefined;
    try {
      const context = DmaFence.contextAlloc(1);
      await client.request({ op: 'initFence', name: 'f1', context, seqno: 1 });
      await client.request({ op: 'chainInit', name: 'c1', prev: null, fence: 'f1', seqno: 1 });
      await client.request({ op: 'signal', name: 'f1' });
      head = DmaFence.receive(await client.request<Packet>({ op: 'shareFence', name: 'c1' }));
    } finally {
      await client.exit();
    }
    assert.equal(head.getStatus(), 1);
    assert.equal(head.seqno, 1n);
    head.put();
  });
});

after(() => {
  assert.equal(liveObjects(), baseline, 'every object created by this file was released once the workers exited');
});
