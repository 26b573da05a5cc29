/**
 * dma_resv across real worker threads (kernel-contract §3, §3.4): reservation
 * objects, fences and sw_sync timelines shared with `share()`/`receive()`; a fence
 * added in a worker is seen at once by readers here and wakes waits here when it
 * signals; a worker holding the reservation lock excludes this thread; a stress of
 * three workers locking random subsets of eight shared objects with the wait-die
 * back-off protocol while adding and signalling fences (no lost update, every
 * fence signalled, slots reused); and recovery of a lock whose holder was
 * terminated.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DmaFence, DmaResv,
  DmaResvLocked, lockRecoveries, SwSyncTimeline, WwAcquireCtx,
} from 'dmabuf';
import { guard as hangGuard, settledValue, turn } from './support/async.js';
import { pollLiveObjects, stubBaseline } from './support/leaks.js';
import { RpcClient, type Gate } from './support/worker-rpc.js';
import type { ResvCommand, ResvStressResult } from './workers/resv-worker.js';

// The stub lives forever once created: create it before taking the baseline.
const BASELINE = stubBaseline();

const KERNEL = DMA_RESV_USAGE_KERNEL;
const WRITE = DMA_RESV_USAGE_WRITE;
const READ = DMA_RESV_USAGE_READ;
const BOOKKEEP = DMA_RESV_USAGE_BOOKKEEP;
const USAGES = [KERNEL, WRITE, READ, BOOKKEEP] as const;
const EINTR = -4;
const HANG_GUARD_MS = 120_000;

/* ---- helpers ---- */

/** `p` under this file's hang guard (never a result). */
function withHangGuard<T>(p: Promise<T>, what: string): Promise<T> {
  return hangGuard(p, what, HANG_GUARD_MS);
}

/** Client of test/workers/resv-worker.ts, terminated (its references and locks reaped) when the test ends. */
class ResvWorker extends RpcClient<ResvCommand & Gate> {
  constructor(t: TestContext) {
    super(new URL('./workers/resv-worker.js', import.meta.url));
    t.after(() => this.terminate());
  }
}

/** Reservation objects put (after unlocking them if this handle holds the lock) when the test ends. */
function resvs(t: TestContext, n: number): DmaResv[] {
  const rs = Array.from({ length: n }, () => DmaResv.create());
  t.after(() => {
    for (const r of rs) {
      try {
        r.locked().unlock();
      } catch {
        // not locked through this handle
      }
      r.put();
    }
  });
  return rs;
}

function guard(r: DmaResv, ctx: WwAcquireCtx | null = null): DmaResvLocked {
  const g = r.lock(ctx);
  assert.ok(g instanceof DmaResvLocked, `lock() returned ${String(g)}`);
  return g;
}

/** Wait for a promise (that may or may not be settled) without letting a rejection go unhandled. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/* ---- unlocked readers while the array is replaced ---- */

/*
 * First in this file on purpose: the decoys below are then this thread's first
 * allocations after the stub, so they occupy the lowest slots of the shared table,
 * slot 0 included. A reader that decodes an entry it must not read (a zero entry
 * of a half-published array names slot 0) then returns a decoy, which the context
 * check catches. With a correct implementation no decoy is ever seen, however the
 * threads interleave; the interleaving only decides whether a wrong one is caught.
 */
test('unlocked readers never see a fence that is not in the object while a worker replaces its array over and over',
  async (t) => {
    const decoys = SwSyncTimeline.create('decoys');
    const decoyFences = Array.from({ length: 64 }, (_, i) => decoys.createFence(i + 1)); // pending: never signalled
    t.after(() => {
      for (const f of decoyFences) f.put();
      decoys.close();
    });
    const WRITERS = 3;
    const [src, empty, ...targets] = resvs(t, 2 + WRITERS);
    const mine = [1, 2, 3].map((i) => DmaFence.init(
      { getDriverName: () => 'main', getTimelineName: () => 'main-tl' }, DmaFence.contextAlloc(), i));
    t.after(() => {
      for (const f of mine) f.put();
    });
    const g = guard(src!);
    g.reserveFences(mine.length);
    for (const f of mine) g.addFence(f, WRITE);
    g.unlock();
    const contexts = new Set(mine.map((f) => f.context));
    // More busy threads than cores: a writer is then sometimes preempted mid-update.
    const workers = targets.map(() => new ResvWorker(t));
    for (const [k, w] of workers.entries()) {
      for (const [name, x] of [['r', targets[k]!], ['src', src!], ['empty', empty!]] as const) {
        await w.call({ op: 'receiveResv', resv: name, token: x.share() });
      }
    }
    const run = Promise.all(workers.map((w) => w.call({
      op: 'copyLoop', resv: 'r', sources: ['src', 'empty'], iterations: 200_000,
    })));
    let finished = false;
    void run.then(() => {
      finished = true;
    }, () => {
      finished = true;
    });
    let foreignGet = 0;
    let foreignIter = 0;
    let passes = 0;
    const giveUp = Date.now() + HANG_GUARD_MS;
    while (!finished && Date.now() < giveUp) {
      for (let k = 0; k < 200; k++) {
        for (const r of targets) {
          const got = r.getFences(BOOKKEEP);
          for (const f of got) if (!contexts.has(f.context)) foreignGet++;
          for (const f of got) f.put();
          for (const e of r.fencesUnlocked(BOOKKEEP)) if (!contexts.has(e.fence.context)) foreignIter++;
        }
        passes++;
      }
      await turn();
    }
    await withHangGuard(run, 'the copy loops');
    t.diagnostic(`${passes} read passes`);
    assert.equal(foreignGet, 0, 'getFences returned fences that were never in the object');
    assert.equal(foreignIter, 0, 'fencesUnlocked yielded fences that were never in the object');
    for (const w of workers) for (const name of ['r', 'src', 'empty']) await w.call({ op: 'putResv', resv: name });
  });

/* ---- visibility and waking across threads ---- */

test('a WRITE fence a worker adds is seen at once here by testSignaled and waitTimeout(…, 0), for WRITE and weaker',
  async (t) => {
    const [r] = resvs(t, 1);
    const w = new ResvWorker(t);
    await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
    const context = await w.call<bigint>({ op: 'initFence', name: 'f', context: null, seqno: 3 });
    await w.call({ op: 'addFence', resv: 'r', name: 'f', usage: WRITE });
    assert.equal(r!.testSignaled(KERNEL), true);
    for (const u of [WRITE, READ, BOOKKEEP] as const) {
      assert.equal(r!.testSignaled(u), false);
      assert.equal(r!.waitTimeout(u, 0), 0);
    }
    assert.equal(r!.waitTimeout(KERNEL, 0), 1);
    const seen = r!.getFences(BOOKKEEP);
    assert.deepEqual(seen.map((f) => [f.context, f.seqno, f.driverName]), [[context, 3n, 'resv-worker']]);
    for (const f of seen) f.put();
    assert.equal(await w.call({ op: 'signal', name: 'f' }), 0);
    for (const u of USAGES) assert.equal(r!.testSignaled(u), true);
    assert.equal(r!.waitTimeout(READ, 0), 1);
    await w.call({ op: 'put', name: 'f' });
    await w.call({ op: 'putResv', resv: 'r' });
  });

test('a blocking waitTimeout here wakes when the worker signals its fence and returns the remaining time', async (t) => {
  const [r] = resvs(t, 1);
  const w = new ResvWorker(t);
  await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
  await w.call({ op: 'initFence', name: 'f', context: null, seqno: 1 });
  await w.call({ op: 'addFence', resv: 'r', name: 'f', usage: WRITE });
  // The delay only makes it likely that this thread is asleep when the worker signals.
  const signalled = w.call({ op: 'signal', name: 'f', delayMs: 50 });
  const left = r!.waitTimeout(READ, HANG_GUARD_MS);
  assert.ok(left > 0 && left <= HANG_GUARD_MS, `remaining ${left}`);
  assert.equal(await signalled, 0);
  assert.equal(r!.testSignaled(BOOKKEEP), true);
  await w.call({ op: 'put', name: 'f' });
  await w.call({ op: 'putResv', resv: 'r' });
});

test('waitTimeoutAsync here stays pending while the worker\'s fence is pending and resolves > 0 when it signals',
  async (t) => {
    const [r] = resvs(t, 1);
    const w = new ResvWorker(t);
    await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
    await w.call({ op: 'initFence', name: 'f', context: null, seqno: 1 });
    await w.call({ op: 'addFence', resv: 'r', name: 'f', usage: KERNEL });
    const p = r!.waitTimeoutAsync(KERNEL, HANG_GUARD_MS);
    assert.equal(await settledValue(p), 'pending');
    await w.call({ op: 'signal', name: 'f' });
    const left = await withHangGuard(p, 'the async wait');
    assert.ok(left > 0 && left <= HANG_GUARD_MS, `remaining ${left}`);
    await w.call({ op: 'put', name: 'f' });
    await w.call({ op: 'putResv', resv: 'r' });
  });

test('a worker\'s wait wakes when this thread signals a fence it added', async (t) => {
  const [r] = resvs(t, 1);
  const w = new ResvWorker(t);
  await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
  const f = DmaFence.init({ getDriverName: () => 'main', getTimelineName: () => 'main-tl' }, DmaFence.contextAlloc(), 1);
  t.after(() => f.put());
  const g = guard(r!);
  g.reserveFences(1);
  g.addFence(f, READ);
  g.unlock();
  assert.equal(await w.call({ op: 'waitTimeout', resv: 'r', usage: WRITE, timeoutMs: 0 }), 1, 'a READ fence: idle for WRITE');
  const waited = quiet(w.call<number>({ op: 'waitTimeout', resv: 'r', usage: READ, timeoutMs: HANG_GUARD_MS }));
  assert.equal(await settledValue(waited), 'pending');
  assert.equal(f.signal(), 0);
  const left = await withHangGuard(waited, 'the worker\'s wait');
  assert.ok(left > 0 && left <= HANG_GUARD_MS, `remaining ${left}`);
  await w.call({ op: 'putResv', resv: 'r' });
});

test('a fence shared with a worker (share/receive) and added there is the same fence here', async (t) => {
  const [r] = resvs(t, 1);
  const w = new ResvWorker(t);
  const f = DmaFence.init({ getDriverName: () => 'main', getTimelineName: () => 'main-tl' }, DmaFence.contextAlloc(), 5);
  t.after(() => f.put());
  await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
  await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
  await w.call({ op: 'addFence', resv: 'r', name: 'f', usage: BOOKKEEP });
  await w.call({ op: 'put', name: 'f' });
  const got = r!.getFences(BOOKKEEP);
  assert.equal(got.length, 1);
  assert.equal(got[0], f, 'this thread\'s view of the same fence');
  got[0]!.put();
  assert.equal(r!.testSignaled(READ), true);
  assert.equal(r!.testSignaled(BOOKKEEP), false);
  f.signal();
  assert.equal(await w.call({ op: 'testSignaled', resv: 'r', usage: BOOKKEEP }), true);
  await w.call({ op: 'putResv', resv: 'r' });
});

test('sw_sync points of a shared timeline: added in a worker, signalled by inc() here, and the other way round',
  async (t) => {
    const [r] = resvs(t, 1);
    const w = new ResvWorker(t);
    const tl = SwSyncTimeline.create('resv-tl');
    t.after(() => tl.close());
    await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
    await w.call({ op: 'receiveTimeline', timeline: 'tl', token: tl.share() });
    await w.call({ op: 'createPoint', name: 'p1', timeline: 'tl', value: 1 });
    await w.call({ op: 'addFence', resv: 'r', name: 'p1', usage: READ });
    await w.call({ op: 'put', name: 'p1' });
    assert.equal(r!.testSignaled(WRITE), true);
    assert.equal(r!.testSignaled(READ), false);
    tl.inc(1);
    assert.equal(r!.testSignaled(READ), true);
    assert.equal(await w.call({ op: 'testSignaled', resv: 'r', usage: READ }), true);

    const p2 = tl.createFence(2);
    t.after(() => p2.put());
    const g = guard(r!);
    g.reserveFences(1);
    g.addFence(p2, WRITE); // takes the signalled point's slot
    assert.equal(g.numFences, 1);
    g.unlock();
    const wait = r!.waitTimeoutAsync(WRITE, HANG_GUARD_MS);
    assert.equal(await settledValue(wait), 'pending');
    await w.call({ op: 'inc', timeline: 'tl', n: 1 });
    assert.ok((await withHangGuard(wait, 'the wait on a sw_sync point')) > 0);
    assert.equal(r!.testSignaled(BOOKKEEP), true);
    await w.call({ op: 'closeTimeline', timeline: 'tl' });
    await w.call({ op: 'putResv', resv: 'r' });
  });

/* ---- the reservation lock across threads ---- */

test('a worker holding the lock: locked here, trylock null, locked() EPERM; lockAsync waits for the worker\'s unlock',
  async (t) => {
    const [r] = resvs(t, 1);
    const w = new ResvWorker(t);
    await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
    const stamp = await w.call<bigint>({ op: 'lock', resv: 'r' });
    assert.equal(r!.isLocked(), true);
    assert.equal(r!.mutex.holderStamp, stamp);
    assert.equal(r!.trylock(), null);
    assert.throws(() => r!.locked(), { code: 'EPERM' });
    const ctx = new WwAcquireCtx();
    assert.equal(r!.lockInterruptible(ctx, AbortSignal.abort()), EINTR, 'blocking: the signal is seen before sleeping');
    const ac = new AbortController();
    const aborted = r!.lockAsync(ctx, { signal: ac.signal });
    assert.equal(await settledValue(aborted), 'pending');
    ac.abort();
    assert.equal(await aborted, EINTR);
    assert.equal(ctx.held, 0);
    const p = r!.lockAsync(ctx);
    assert.equal(await settledValue(p), 'pending');
    await w.call({ op: 'unlock', resv: 'r' });
    const g = await withHangGuard(p, 'lockAsync');
    assert.ok(g instanceof DmaResvLocked);
    assert.equal(r!.locked(), g);
    assert.equal(r!.mutex.lockingCtx(), ctx);
    g.unlock();
    ctx.fini();
    await w.call({ op: 'putResv', resv: 'r' });
  });

/* ---- stress ---- */

test('stress: 3 workers lock random subsets of 8 shared resvs with the back-off protocol, add and signal fences; '
  + 'no update lost, every fence signalled, slots reused', async (t) => {
  const N = 8;
  const ITERATIONS = 3000;
  const rs = resvs(t, N);
  const workers = [new ResvWorker(t), new ResvWorker(t), new ResvWorker(t)];
  const counters = new SharedArrayBuffer(4 * N);
  const names = rs.map((_, i) => `r${i}`);
  const contexts = new Set<bigint>();
  for (const w of workers) {
    for (let i = 0; i < N; i++) await w.call({ op: 'receiveResv', resv: names[i]!, token: rs[i]!.share() });
    contexts.add(await w.call<bigint>({ op: 'newContext' }));
  }
  const run = Promise.all(workers.map((w, k) => w.call<ResvStressResult>({
    op: 'stress', resvs: names, counters, iterations: ITERATIONS, seed: 0x2545f491 + k * 7919,
  })));
  let finished = false;
  void run.then(() => {
    finished = true;
  }, () => {
    finished = true;
  });
  // Meanwhile, read without the lock: every fence seen is one of the workers' (no freed or foreign slot).
  let reads = 0;
  const giveUp = Date.now() + HANG_GUARD_MS;
  while (!finished && Date.now() < giveUp) {
    for (const r of rs) {
      for (const f of r.getFences(BOOKKEEP)) {
        assert.ok(contexts.has(f.context), `a fence of context ${f.context} in a resv`);
        f.put();
      }
      r.testSignaled(BOOKKEEP);
    }
    reads++;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const results = await withHangGuard(run, 'the stress run');
  assert.ok(reads > 0);
  t.diagnostic(`back-offs ${results.map((res) => res.backoffs).join('/')}, unlocked read passes ${reads}`);
  const c = new Int32Array(counters);
  for (let i = 0; i < N; i++) {
    const locked = results.reduce((sum, res) => sum + res.locks[i]!, 0);
    assert.ok(locked > 0);
    assert.equal(c[i], locked, `resv ${i}: no lost update`);
  }
  assert.equal(results.reduce((sum, res) => sum + res.added, 0), results.reduce(
    (sum, res) => sum + res.locks.reduce((a, b) => a + b, 0), 0));
  for (const res of results) assert.equal(res.maxFences, 1, 'every add found only signalled slots and reused one');
  for (const [i, r] of rs.entries()) {
    assert.equal(r.isLocked(), false, `resv ${i} is unlocked`);
    for (const u of USAGES) assert.equal(r.testSignaled(u), true, `resv ${i}: every fence signalled`);
    const g = guard(r);
    const left: Array<[bigint, boolean]> = [];
    for (const e of g.fences(BOOKKEEP)) left.push([e.fence.context, e.fence.isSignaled()]);
    g.unlock();
    assert.equal(left.length, 1);
    for (const [ctx, signalled] of left) {
      assert.ok(contexts.has(ctx));
      assert.equal(signalled, true);
    }
  }
  for (const w of workers) for (const n of names) await w.call({ op: 'putResv', resv: n });
});

/* ---- dead lock holders ---- */

const ENDINGS: ReadonlyArray<[string, (w: ResvWorker) => Promise<void>]> = [
  ['terminated', (w) => w.terminate()],
  ['exiting normally', async (w) => {
    void w.call({ op: 'exit' }).catch(() => undefined); // no reply comes
    await w.exited;
  }],
];

for (const [how, end] of ENDINGS) {
  test(`a worker ${how} while holding a resv's lock: the next lock() here succeeds, ownerDied is true, `
    + 'lockRecoveries() grew', async (t) => {
    const [r] = resvs(t, 1);
    const w = new ResvWorker(t);
    await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
    await w.call({ op: 'lock', resv: 'r' });
    assert.equal(r!.isLocked(), true);
    const before = lockRecoveries();
    await end(w);
    const ctx = new WwAcquireCtx();
    const g = guard(r!, ctx);
    assert.equal(r!.mutex.ownerDied, true);
    assert.ok(lockRecoveries() > before);
    g.reserveFences(1); // the object is usable
    g.unlock();
    assert.equal(r!.mutex.ownerDied, false, 'cleared by the unlock of the next owner');
    ctx.fini();
    await turn(); // the recovery warning is emitted on the next tick
  });

  test(`slots reserved by a worker ${how} while holding the lock are not reserved for the next holder`, async (t) => {
    const [r] = resvs(t, 1);
    const w = new ResvWorker(t);
    await w.call({ op: 'receiveResv', resv: 'r', token: r!.share() });
    await w.call({ op: 'lock', resv: 'r' });
    await w.call({ op: 'reserve', resv: 'r', n: 4 });
    await end(w);
    const f = DmaFence.init({ getDriverName: () => 'main', getTimelineName: () => 'main-tl' }, DmaFence.contextAlloc(), 1);
    t.after(() => f.put());
    const g = guard(r!);
    assert.equal(r!.mutex.ownerDied, true);
    assert.throws(() => g.addFence(f, WRITE), { code: 'EINVAL' }, 'reservations do not survive the release of the lock');
    assert.equal(g.numFences, 0);
    g.unlock();
    await turn();
  });
}

/* ---- leak check ---- */

test('no objects leaked by this file (liveObjects() back to the baseline)', async () => {
  assert.equal(await pollLiveObjects(BASELINE), BASELINE);
});
