/**
 * `dmabuf/uapi` — poll(2) and pollAsync on sync_files and other fds
 * (uapi.md "Functions" and "Details" 8; kernel-contract §5.2 poll()).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as U from 'dmabuf/uapi';
import { liveObjects } from 'dmabuf';
import { guard, turns } from './support/async.js';
import { closeAll, createFence, inc, installFdCleanup, merge as mergeNamed, openTl } from './support/fds.js';
import { pollLiveObjects } from './support/leaks.js';
import { RpcClient, type Gate } from './support/worker-rpc.js';
import type { Command, PollingEvent } from './workers/uapi-worker.js';

const BASELINE = liveObjects();
const HANG_GUARD_MS = 20_000;

installFdCleanup();

/* ---- helpers ---- */

function merge(fd: number, fd2: number): number {
  return mergeNamed(fd, fd2, 'merged');
}

function entries(...fds: number[]): U.PollFd[] {
  return fds.map((fd) => ({ fd, events: U.POLLIN, revents: -1 }));
}

function revents(p: U.PollFd[]): number[] {
  return p.map((e) => e.revents ?? -1);
}

/* ---- a worker that signals ---- */

class UapiWorker extends RpcClient<Command & Gate, PollingEvent> {
  constructor() {
    super(new URL('./workers/uapi-worker.js', import.meta.url), { callGuardMs: HANG_GUARD_MS });
  }
}

/* ---- tests ---- */

describe('poll with timeout 0 (check)', () => {
  test('a pending sync_file is not ready: 0, revents 0', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const p = entries(f);
    assert.equal(U.poll(p, 0), 0);
    assert.deepEqual(revents(p), [0]);
    closeAll(f, tl);
  });

  test('a signalled sync_file is ready: 1, revents POLLIN', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    inc(tl, 1);
    const p = entries(f);
    assert.equal(U.poll(p, 0), 1);
    assert.deepEqual(revents(p), [U.POLLIN]);
    closeAll(f, tl);
  });

  test('a signalled sync_file polled without POLLIN in events reports nothing', () => {
    const tl = openTl();
    const f = createFence(tl, 0);
    const p = [{ fd: f, events: U.POLLOUT, revents: -1 }, { fd: f, events: 0, revents: -1 }];
    assert.equal(U.poll(p, 0), 0);
    assert.deepEqual(revents(p), [0, 0]);
    closeAll(f, tl);
  });

  test('an empty array returns 0', () => {
    assert.equal(U.poll([], 0), 0);
  });

  test('a timeline fd (no poll op) reports the default mask: readable and writable', () => {
    const tl = openTl();
    const p = [{ fd: tl, events: U.POLLIN | U.POLLOUT, revents: -1 }];
    assert.equal(U.poll(p, 0), 1);
    assert.deepEqual(revents(p), [U.POLLIN | U.POLLOUT]);
    closeAll(tl);
  });
});

describe('poll with a timeout', () => {
  test('a positive timeout that expires returns 0 with revents 0 (one fd)', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const p = entries(f);
    assert.equal(U.poll(p, 30), 0);
    assert.deepEqual(revents(p), [0]);
    assert.equal(U.poll(entries(f), 0), 0, 'still pending');
    closeAll(f, tl);
  });

  test('a positive timeout that expires returns 0 with revents 0 (several fds)', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const p = entries(fa, fb);
    assert.equal(U.poll(p, 30), 0);
    assert.deepEqual(revents(p), [0, 0]);
    closeAll(fa, fb, a, b);
  });

  test('an already signalled fence returns at once even with timeout -1', () => {
    const tl = openTl();
    const f = createFence(tl, 0);
    const p = entries(f);
    assert.equal(U.poll(p, -1), 1);
    assert.deepEqual(revents(p), [U.POLLIN]);
    closeAll(f, tl);
  });

  describe('timeout -1 waits until another thread signals', () => {
    let w: UapiWorker;
    before(() => {
      w = new UapiWorker();
    });
    after(async () => {
      await w.terminate();
    });

    for (const shape of ['one sync_file', 'two sync_files, one signalled by the worker']) {
      test(shape, async () => {
        const tl = openTl();
        const other = openTl();
        const f = createFence(tl, 1);
        const g = createFence(other, 1);
        const [wtl] = (await w.call({ op: 'receive', packet: U.sendFds([tl]) })) as number[];
        const gate = new SharedArrayBuffer(4);
        const incDone = w.call({ op: 'inc', tl: wtl!, n: 1, gate, delayMs: 20 });
        const p = shape === 'one sync_file' ? entries(f) : entries(g, f);
        assert.equal(U.poll(p, 0), 0, 'pending before the worker acts');
        Atomics.store(new Int32Array(gate), 0, 1);
        Atomics.notify(new Int32Array(gate), 0);
        const n = U.poll(p, -1);
        assert.equal(n, 1);
        assert.deepEqual(revents(p), shape === 'one sync_file' ? [U.POLLIN] : [0, U.POLLIN]);
        await incDone;
        await w.call({ op: 'close', fds: [wtl!] });
        closeAll(f, g, tl, other);
      });
    }
  });
});

describe('poll entries that are not open sync_files', () => {
  test('a closed fd gets POLLNVAL and counts as ready, whatever its events', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const gone = createFence(tl, 2);
    closeAll(gone);
    const p = [
      { fd: gone, events: U.POLLIN, revents: -1 },
      { fd: f, events: U.POLLIN, revents: -1 },
      { fd: 777, events: 0, revents: -1 },
    ];
    assert.equal(U.poll(p, 0), 2);
    assert.deepEqual(revents(p), [U.POLLNVAL, 0, U.POLLNVAL]);
    assert.equal(U.poll(p, -1), 2, 'POLLNVAL ends a wait at once');
    closeAll(f, tl);
  });

  test('a negative fd is skipped: revents 0, not counted', () => {
    const tl = openTl();
    const done = createFence(tl, 0);
    const p = [
      { fd: -1, events: U.POLLIN, revents: -1 },
      { fd: done, events: U.POLLIN, revents: -1 },
      { fd: -100, events: U.POLLIN | U.POLLOUT, revents: -1 },
    ];
    assert.equal(U.poll(p, 0), 1);
    assert.deepEqual(revents(p), [0, U.POLLIN, 0]);
    const alone = [{ fd: -1, events: U.POLLIN, revents: -1 }];
    assert.equal(U.poll(alone, 20), 0, 'nothing to wait for: the timeout expires');
    assert.deepEqual(revents(alone), [0]);
    closeAll(done, tl);
  });
});

describe('poll of several sync_files', () => {
  test('only the signalled ones are reported', () => {
    const a = openTl();
    const b = openTl();
    const fa1 = createFence(a, 1);
    const fa3 = createFence(a, 3);
    const fb = createFence(b, 1);
    inc(a, 2);
    const p = entries(fa1, fa3, fb, fa1);
    assert.equal(U.poll(p, 0), 2);
    assert.deepEqual(revents(p), [U.POLLIN, 0, 0, U.POLLIN]);
    inc(b, 1);
    assert.equal(U.poll(p, 0), 3);
    assert.deepEqual(revents(p), [U.POLLIN, 0, U.POLLIN, U.POLLIN]);
    closeAll(fa1, fa3, fb, a, b);
  });

  test('a merged (array) fence becomes ready only when its last member signals', () => {
    const a = openTl();
    const b = openTl();
    const c = openTl();
    const m = merge(merge(createFence(a, 1), createFence(b, 1)), createFence(c, 1));
    const p = entries(m);
    assert.equal(U.poll(p, 0), 0);
    inc(b, 1);
    assert.equal(U.poll(p, 0), 0);
    inc(a, 1);
    assert.equal(U.poll(p, 0), 0);
    inc(c, 1);
    assert.equal(U.poll(p, 0), 1);
    assert.deepEqual(revents(p), [U.POLLIN]);
    closeAll(m, a, b, c);
  });

  test('a sync_file signalled with an error is POLLIN, never POLLERR', () => {
    const a = openTl();
    const b = openTl();
    const f = createFence(a, 1);
    const m = merge(createFence(b, 1), createFence(a, 2));
    closeAll(a); // f and a's member of m fail with -ENOENT
    inc(b, 1);
    const p = [
      { fd: f, events: U.POLLIN, revents: -1 },
      { fd: f, events: U.POLLIN | U.POLLERR | U.POLLHUP | U.POLLOUT, revents: -1 },
      { fd: m, events: U.POLLIN, revents: -1 },
    ];
    assert.equal(U.poll(p, 0), 3);
    assert.deepEqual(revents(p), [U.POLLIN, U.POLLIN, U.POLLIN]);
    closeAll(f, m, b);
  });
});

describe('pollAsync', () => {
  test('timeout 0 gives the same results as poll', async () => {
    const tl = openTl();
    const pending = createFence(tl, 2);
    const done = createFence(tl, 0);
    const gone = createFence(tl, 3);
    closeAll(gone);
    const p = [...entries(pending, done, gone), { fd: -1, events: U.POLLIN, revents: -1 }];
    const n = await U.pollAsync(p, 0);
    const q = [...entries(pending, done, gone), { fd: -1, events: U.POLLIN, revents: -1 }];
    assert.equal(n, U.poll(q, 0));
    assert.equal(n, 2);
    assert.deepEqual(revents(p), revents(q));
    assert.deepEqual(revents(p), [0, U.POLLIN, U.POLLNVAL, 0]);
    closeAll(pending, done, tl);
  });

  test('a positive timeout that expires resolves to 0 with revents 0', async () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const p = entries(f);
    assert.equal(await guard(U.pollAsync(p, 30), 'pollAsync(30)'), 0);
    assert.deepEqual(revents(p), [0]);
    const a = openTl();
    const q = entries(f, createFence(a, 1));
    assert.equal(await guard(U.pollAsync(q, 30), 'pollAsync(30) of two'), 0);
    assert.deepEqual(revents(q), [0, 0]);
    closeAll(f, tl, a);
  });

  test('does not block: a -1 wait is resolved by a signal from this same thread', async () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const p = entries(f);
    let settled = false;
    const pending = U.pollAsync(p, -1).then((n) => {
      settled = true;
      return n;
    });
    await turns();
    assert.equal(settled, false);
    assert.equal(U.poll(entries(f), 0), 0, 'still pending');
    inc(tl, 1);
    assert.equal(await guard(pending, 'pollAsync(-1)'), 1);
    assert.deepEqual(revents(p), [U.POLLIN]);
    closeAll(f, tl);
  });

  test('a merged fence: resolves when the last member signals, not before', async () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 1), createFence(b, 1));
    const p = entries(m);
    let settled = false;
    const pending = U.pollAsync(p, -1).then((n) => {
      settled = true;
      return n;
    });
    inc(a, 1);
    await turns();
    assert.equal(settled, false);
    assert.equal(U.poll(entries(m), 0), 0);
    inc(b, 1);
    assert.equal(await guard(pending, 'pollAsync(-1) of a merged fence'), 1);
    assert.deepEqual(revents(p), [U.POLLIN]);
    closeAll(m, a, b);
  });

  test('several fds: resolves with only the ready ones', async () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const p = entries(fa, fb);
    const pending = U.pollAsync(p, -1);
    await turns();
    inc(b, 1);
    assert.equal(await guard(pending, 'pollAsync(-1) of two'), 1);
    assert.deepEqual(revents(p), [0, U.POLLIN]);
    closeAll(fa, fb, a, b);
  });

  test('resolves when another thread signals', async () => {
    const w = new UapiWorker();
    const tl = openTl();
    const f = createFence(tl, 1);
    const [wtl] = (await w.call({ op: 'receive', packet: U.sendFds([tl]) })) as number[];
    const p = entries(f);
    const pending = U.pollAsync(p, -1);
    await w.call({ op: 'inc', tl: wtl!, n: 1 });
    assert.equal(await guard(pending, 'pollAsync(-1)'), 1);
    assert.deepEqual(revents(p), [U.POLLIN]);
    await w.call({ op: 'close', fds: [wtl!] });
    await w.terminate();
    closeAll(f, tl);
  });

  test('keeps the event loop alive while pending (a child process that only awaits pollAsync)', async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const workerHref = new URL('./workers/uapi-worker.js', import.meta.url).href;
    // The child's only work is a pollAsync(-1) on a fence that an unref'd Worker signals
    // after it starts; without a keep-alive the child would exit before that.
    const script = `
      import * as U from 'dmabuf/uapi';
      import { Worker } from 'node:worker_threads';
      const tl = U.open('/dev/sw_sync');
      const d = { value: 1, name: '', fence: -1 };
      U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, d);
      const fds = [{ fd: d.fence, events: U.POLLIN, revents: -1 }];
      U.pollAsync(fds, -1).then((n) => {
        process.stdout.write(JSON.stringify({ n, revents: fds[0].revents }));
        U.close(d.fence);
        U.close(tl);
      });
      const w = new Worker(new URL(${JSON.stringify(workerHref)}), { execArgv: [] });
      w.unref();
      // The worker's first fd is 3 (lowest free from 3).
      w.postMessage({ req: 1, op: 'receive', packet: U.sendFds([tl]) });
      w.postMessage({ req: 2, op: 'inc', tl: 3, n: 1, delayMs: 300 });
    `;
    const out = await new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve) => {
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { cwd: root, timeout: HANG_GUARD_MS },
        (err, stdout, stderr) => resolve({ stdout, stderr, code: err ? (err as { code?: number }).code ?? -1 : 0 }),
      );
    });
    assert.equal(out.stderr, '');
    assert.equal(out.code, 0);
    assert.deepEqual(JSON.parse(out.stdout || 'null'), { n: 1, revents: U.POLLIN });
  });
});

describe('bad poll input', () => {
  test('fds not an array → EFAULT', async () => {
    for (const bad of [undefined, null, 3, 'fds', { fd: 3, events: 1 }]) {
      assert.throws(() => U.poll(bad as never, 0), { code: 'EFAULT', syscall: 'poll' }, String(bad));
      await assert.rejects(U.pollAsync(bad as never, 0), { code: 'EFAULT', syscall: 'poll' }, String(bad));
    }
  });

  test('an entry with a string fd (or that is not an object) → EFAULT, revents untouched', async () => {
    const tl = openTl();
    const f = createFence(tl, 0);
    const p = [{ fd: f, events: U.POLLIN, revents: -1 }, { fd: '3' as unknown as number, events: U.POLLIN, revents: -1 }];
    assert.throws(() => U.poll(p, 0), { code: 'EFAULT' });
    await assert.rejects(U.pollAsync(p, 0), { code: 'EFAULT' });
    assert.deepEqual(revents(p), [-1, -1]);
    for (const entry of [null, 5, { fd: 1.5, events: 1 }, { fd: f, events: 'x' }]) {
      assert.throws(() => U.poll([entry as never], 0), { code: 'EFAULT' }, JSON.stringify(entry));
    }
    closeAll(f, tl);
  });

  test('timeout NaN → EINVAL', async () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    assert.throws(() => U.poll(entries(f), NaN), { code: 'EINVAL', syscall: 'poll' });
    await assert.rejects(U.pollAsync(entries(f), NaN), { code: 'EINVAL', syscall: 'poll' });
    closeAll(f, tl);
  });
});

test('every object of this file was released (leak check)', async () => {
  // worker exits are reaped from their 'exit' handler
  assert.equal(await pollLiveObjects(BASELINE, 2000), BASELINE);
});
