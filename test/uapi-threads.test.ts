/**
 * `dmabuf/uapi` across worker_threads (uapi.md "Threads", "Details" 9 and 11):
 * fds passed with sendFds/receiveFds, signalling and polling from either side,
 * merging in a worker, release on the last close in any thread, and thread exit.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { liveObjects } from 'dmabuf';
import { guard } from './support/async.js';
import { closeAll, createFence, inc, installFdCleanup, openTl, ready, status, summary, track } from './support/fds.js';
import { pollLiveObjects } from './support/leaks.js';
import { openGate, RpcClient, type Gate } from './support/worker-rpc.js';
import type { Command, PollingEvent, PollReport } from './workers/uapi-worker.js';

const BASELINE = liveObjects();
const HANG_GUARD_MS = 20_000;

/* ---- fd and worker bookkeeping ---- */

const workers = new Set<UapiWorker>();

installFdCleanup();
afterEach(async () => {
  for (const w of workers) await w.terminate();
  workers.clear();
});

/* ---- helpers ---- */

/** liveObjects() once it is back to `expected`, or after ~2 s (reaping runs in the 'exit' handler). */
function settledLive(expected: number): Promise<number> {
  return pollLiveObjects(expected, 2000);
}

class UapiWorker extends RpcClient<Command & Gate, PollingEvent> {
  constructor() {
    super(new URL('./workers/uapi-worker.js', import.meta.url), {
      callGuardMs: HANG_GUARD_MS, eventGuardMs: HANG_GUARD_MS,
    });
    workers.add(this);
  }

  /** The `polling` event of request `req` (posted just before the worker starts to wait). */
  polling(req: number): Promise<PollingEvent> {
    return this.event((e) => e.req === req);
  }

  /** Send this thread's `fds` to the worker: its numbers for them. */
  receive(fds: number[]): Promise<number[]> {
    return this.call<number[]>({ op: 'receive', packet: U.sendFds(fds) });
  }

  /** Ask the worker for its fds `fds` and install them here. */
  async fetch(fds: number[], close = false): Promise<number[]> {
    const packet = await this.call<U.FdPacket>({ op: 'send', fds, close });
    return U.receiveFds(packet).map(track);
  }

  override async terminate(): Promise<void> {
    await super.terminate();
    workers.delete(this);
  }
}

/* ---- tests ---- */

describe('signalling across threads', () => {
  test("a worker's INC on a timeline fd sent to it wakes a blocking poll in the main thread", async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const [wtl] = await w.receive([tl]);
    const gate = new SharedArrayBuffer(4);
    const incDone = w.call({ op: 'inc', tl: wtl!, n: 1, gate, delayMs: 20 });
    const p = [{ fd: f, events: U.POLLIN, revents: -1 }];
    assert.equal(U.poll(p, 0), 0, 'pending before the worker acts');
    openGate(gate);
    assert.equal(U.poll(p, -1), 1);
    assert.equal(p[0]!.revents, U.POLLIN);
    assert.equal(await incDone, 0);
    assert.equal(status(f), 1);
    await w.call({ op: 'close', fds: [wtl!] });
    closeAll(f, tl);
    await w.terminate();
  });

  test("a worker's INC resolves a pollAsync in the main thread", async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 2);
    const [wtl] = await w.receive([tl]);
    const p = [{ fd: f, events: U.POLLIN, revents: -1 }];
    let settled = false;
    const pending = U.pollAsync(p, -1).then((n) => {
      settled = true;
      return n;
    });
    await w.call({ op: 'inc', tl: wtl!, n: 1 });
    assert.equal(ready(f), 0, 'point 2 not reached by the first INC');
    assert.equal(settled, false);
    await w.call({ op: 'inc', tl: wtl!, n: 1 });
    assert.equal(await guard(pending, 'pollAsync'), 1);
    assert.equal(p[0]!.revents, U.POLLIN);
    await w.call({ op: 'close', fds: [wtl!] });
    closeAll(f, tl);
    await w.terminate();
  });

  test("the main thread's INC wakes a blocking poll in a worker", async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const [wf] = await w.receive([f]);
    const { req, reply } = w.start({ op: 'poll', fds: [wf!], timeoutMs: HANG_GUARD_MS });
    const ev = await w.polling(req);
    assert.equal(ev.readyBefore, 0);
    inc(tl, 1);
    assert.deepEqual((await reply) as PollReport, { n: 1, revents: [U.POLLIN] });
    await w.call({ op: 'close', fds: [wf!] });
    closeAll(f, tl);
    await w.terminate();
  });

  test("the main thread's INC resolves a pollAsync in a worker", async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const g = createFence(tl, 5);
    const [wf, wg] = await w.receive([f, g]);
    const { req, reply } = w.start({ op: 'pollAsync', fds: [wg!, wf!], timeoutMs: -1 });
    const ev = await w.polling(req);
    assert.equal(ev.readyBefore, 0);
    inc(tl, 1);
    assert.deepEqual((await reply) as PollReport, { n: 1, revents: [0, U.POLLIN] });
    await w.call({ op: 'close', fds: [wf!, wg!] });
    closeAll(f, g, tl);
    await w.terminate();
  });

  test("a worker's fds are its own: numbered from 3 whatever the main thread holds", async () => {
    const w = new UapiWorker();
    const a = openTl();
    const b = openTl();
    const fb = createFence(b, 1);
    assert.ok(fb > 4);
    const [wfb, wa] = await w.receive([fb, a]);
    assert.deepEqual([wfb, wa], [3, 4]);
    assert.equal(await w.call({ op: 'status', fd: wfb! }), 0);
    await assert.rejects(w.call({ op: 'status', fd: fb }), { code: 'EBADF' }, "the main thread's number means nothing there");
    await w.call({ op: 'close', fds: [wfb!, wa!] });
    closeAll(fb, a, b);
    await w.terminate();
  });
});

describe('sync_files in a worker', () => {
  test('a sync_file sent to a worker can be polled and merged there; the merged fd sent back works here', async () => {
    const w = new UapiWorker();
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const [wa, wb] = await w.receive([fa, fb]);
    const { req, reply } = w.start({ op: 'poll', fds: [wa!, wb!], timeoutMs: 0 });
    await w.polling(req);
    assert.deepEqual((await reply) as PollReport, { n: 0, revents: [0, 0] });
    const wm = (await w.call({ op: 'merge', fd: wa!, fd2: wb!, name: 'from-worker' })) as number;
    assert.equal(await w.call({ op: 'numFences', fd: wm }), 2);
    const [m] = await w.fetch([wm], true);
    await w.call({ op: 'close', fds: [wa!, wb!] });
    const s = summary(m!);
    assert.deepEqual(s, { name: 'from-worker', status: 0, num_fences: 2 });
    assert.equal(ready(m!), 0);
    inc(a, 1);
    assert.equal(ready(m!), 0);
    inc(b, 1);
    assert.equal(ready(m!), U.POLLIN);
    assert.equal(status(m!), 1);
    closeAll(m!, fa, fb, a, b);
    await w.terminate();
  });

  test('a timeline and fence created in a worker and sent to the main thread are driven from here', async () => {
    const w = new UapiWorker();
    const wtl = (await w.call({ op: 'open' })) as number;
    const wf = (await w.call({ op: 'createFence', tl: wtl, value: 3 })) as number;
    const [tl, f] = await w.fetch([wtl, wf], true);
    assert.equal(status(f!), 0, 'the worker closed its fds, the timeline lives on here');
    inc(tl!, 3);
    assert.equal(status(f!), 1);
    closeAll(f!, tl!);
    await w.terminate();
  });
});

describe('release on the last close in any thread', () => {
  test("a timeline whose only fd is in a worker: its pending points fail with -ENOENT when the worker closes it", async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const [wtl] = await w.receive([tl]);
    closeAll(tl);
    assert.equal(status(f), 0, 'the worker still holds the timeline');
    await w.call({ op: 'close', fds: [wtl!] });
    assert.equal(status(f), -2);
    assert.equal(ready(f), U.POLLIN);
    closeAll(f);
    await w.terminate();
  });

  test('a sync_file whose last fd is closed in a worker is released', async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const before = liveObjects();
    const f = createFence(tl, 1);
    const [wf] = await w.receive([f]);
    closeAll(f);
    assert.ok(liveObjects() > before);
    await w.call({ op: 'close', fds: [wf!] });
    assert.equal(liveObjects(), before);
    closeAll(tl);
    await w.terminate();
  });

  test('a worker that exits normally while holding fds drops them', async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    await w.receive([tl, f]);
    const wtl2 = (await w.call({ op: 'open' })) as number;
    await w.call({ op: 'createFence', tl: wtl2, value: 1 });
    closeAll(tl);
    w.worker.postMessage({ op: 'exit', req: -1 });
    assert.equal(await guard(w.exited, 'worker exit'), 0);
    workers.delete(w);
    const end = Date.now() + 2000;
    while (status(f) === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    assert.equal(status(f), -2, 'the timeline was closed by the exit');
    closeAll(f);
    assert.equal(await settledLive(BASELINE), BASELINE);
  });

  test('a worker that is terminated while holding fds drops them', async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const [wtl] = await w.receive([tl, f]);
    const wtl2 = (await w.call({ op: 'open' })) as number;
    await w.call({ op: 'createFence', tl: wtl2, value: 1 });
    await w.call({ op: 'createFence', tl: wtl!, value: 7 });
    closeAll(tl);
    await w.terminate();
    await guard(w.exited, 'worker exit');
    const end = Date.now() + 2000;
    while (status(f) === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    assert.equal(status(f), -2, 'the timeline was closed when the worker was reaped');
    closeAll(f);
    assert.equal(await settledLive(BASELINE), BASELINE);
  });
});

describe('fd packets', () => {
  test('receiveFds of the same packet twice → EINVAL (same thread)', () => {
    const tl = openTl();
    const packet = U.sendFds([tl]);
    const [copy] = U.receiveFds(packet).map(track);
    assert.notEqual(copy, tl);
    assert.throws(() => U.receiveFds(packet), { code: 'EINVAL' });
    closeAll(copy!, tl);
  });

  test('receiveFds of a packet a worker already received → EINVAL', async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const packet = U.sendFds([tl]);
    const [wtl] = (await w.call({ op: 'receive', packet })) as number[];
    assert.throws(() => U.receiveFds(packet), { code: 'EINVAL' });
    await assert.rejects(w.call({ op: 'receive', packet }), { code: 'EINVAL' });
    await w.call({ op: 'close', fds: [wtl!] });
    closeAll(tl);
    await w.terminate();
  });

  test('receiveFds of something that is not a packet → EINVAL', () => {
    for (const bad of [undefined, null, 3, {}, { __dmabuf: 'packet' }]) {
      assert.throws(() => U.receiveFds(bad as never), { code: 'EINVAL' }, String(bad));
    }
  });

  test('sendFds of a closed or never-opened fd → EBADF, and nothing is sent', () => {
    const tl = openTl();
    const gone = createFence(tl, 1);
    closeAll(gone);
    const before = liveObjects();
    assert.throws(() => U.sendFds([tl, gone]), { code: 'EBADF' });
    assert.throws(() => U.sendFds([555]), { code: 'EBADF' });
    assert.throws(() => U.sendFds([-1]), { code: 'EBADF' });
    assert.equal(liveObjects(), before);
    closeAll(tl);
  });

  test('sendFds leaves the sender its fds', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const packet = U.sendFds([tl, f]);
    assert.equal(status(f), 0);
    inc(tl, 1);
    assert.equal(status(f), 1);
    U.receiveFds(packet).forEach((fd) => closeAll(track(fd)));
    closeAll(f, tl);
  });

  test('a packet keeps its objects alive after the sender closed its fds', async () => {
    const w = new UapiWorker();
    const before = liveObjects();
    const tl = openTl();
    const f = createFence(tl, 1);
    const packet = U.sendFds([tl, f]);
    closeAll(tl, f);
    assert.ok(liveObjects() > before, 'the packet holds them');
    const [wtl, wf] = (await w.call({ op: 'receive', packet })) as number[];
    assert.equal(await w.call({ op: 'status', fd: wf! }), 0, 'the timeline was not released: its point is still pending');
    await w.call({ op: 'inc', tl: wtl!, n: 1 });
    assert.equal(await w.call({ op: 'status', fd: wf! }), 1);
    await w.call({ op: 'close', fds: [wtl!, wf!] });
    assert.equal(liveObjects(), before);
    await w.terminate();
  });

  test('one worker can receive several packets', async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const [w1] = await w.receive([tl]);
    const [w2] = await w.receive([f]);
    const [w3] = await w.receive([f]);
    assert.deepEqual([w1, w2, w3], [3, 4, 5]);
    await w.call({ op: 'inc', tl: w1!, n: 1 });
    assert.equal(await w.call({ op: 'status', fd: w3! }), 1);
    await w.call({ op: 'close', fds: [w1!, w2!, w3!] });
    closeAll(f, tl);
    await w.terminate();
  });
});

test('every object of this file was released (leak check)', async () => {
  assert.equal(await settledLive(BASELINE), BASELINE);
});
