/**
 * Reservation objects private until shared (src/dma-resv-private.ts): what
 * `DmaResv.create()` returns lives in plain fields until `share()`, `slot` or a
 * lock that must wait moves it into the shared table. These tests move objects
 * in every state a user can leave them in — fences in it (some signalled), locked
 * with and without a context, with a reservation pending, in the middle of both
 * iterations, contended by two async tasks of this thread — and check that
 * everything observable carries over: the slots and usages in order, the lock
 * holder and its context (-EALREADY, wait-die), the reservation, the readers,
 * another thread's view afterwards, ENOMEM leaving the object private and intact,
 * and liveObjects() accounting.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DmaFence, DmaResv,
  DmaResvLocked, liveObjects, WwAcquireCtx,
} from 'dmabuf';
import type { DmaFenceOps, DmaResvUsage } from 'dmabuf';
import { guard as hangGuard, settledValue } from './support/async.js';
import { pollLiveObjects, stubBaseline } from './support/leaks.js';
import { RpcClient, type Gate } from './support/worker-rpc.js';
import type { ResvCommand, SeenFence } from './workers/resv-worker.js';

const BASELINE = stubBaseline();

const EALREADY = -114;
const EDEADLK = -35;
const KERNEL = DMA_RESV_USAGE_KERNEL;
const WRITE = DMA_RESV_USAGE_WRITE;
const READ = DMA_RESV_USAGE_READ;
const BOOKKEEP = DMA_RESV_USAGE_BOOKKEEP;
const NAME = ['KERNEL', 'WRITE', 'READ', 'BOOKKEEP'] as const;
const ALL: readonly DmaResvUsage[] = [KERNEL, WRITE, READ, BOOKKEEP];

const OPS: DmaFenceOps = { getDriverName: () => 'priv-drv', getTimelineName: () => 'priv-tl' };

/** Puts what a test made, unlocking first, even after a failed assertion. */
class Refs {
  #undo: Array<() => void> = [];
  readonly names = new Map<DmaFence, string>();

  constructor(t: TestContext) {
    t.after(() => {
      for (const u of this.#undo.splice(0).reverse()) u();
    });
  }

  fence(name: string, seqno = 1, context: bigint = DmaFence.contextAlloc()): DmaFence {
    const f = DmaFence.init(OPS, context, seqno);
    this.names.set(f, name);
    this.#undo.push(() => f.put());
    return f;
  }

  resv(): DmaResv {
    const r = DmaResv.create();
    this.#undo.push(() => {
      try {
        r.locked().unlock();
      } catch {
        // not locked through this handle
      }
      r.put();
    });
    return r;
  }

  onEnd(fn: () => void): void {
    this.#undo.push(fn);
  }
}

function guard(r: DmaResv, ctx: WwAcquireCtx | null = null): DmaResvLocked {
  const g = r.lock(ctx);
  assert.ok(g instanceof DmaResvLocked, `lock() returned ${String(g)}`);
  return g;
}

function slots(refs: Refs, g: DmaResvLocked): string[] {
  const out: string[] = [];
  for (const e of g.fences(BOOKKEEP)) out.push(`${refs.names.get(e.fence) ?? '?'}:${NAME[e.usage]}`);
  return out;
}

function add(r: DmaResv, ...entries: Array<[DmaFence, DmaResvUsage]>): void {
  const g = guard(r);
  g.reserveFences(entries.length);
  for (const [f, u] of entries) g.addFence(f, u);
  g.unlock();
}

/** What every unlocked reader says about `r`, for comparing before and after a move. */
function readers(refs: Refs, r: DmaResv): unknown {
  const names = (fs: DmaFence[]): string[] => {
    const out = fs.map((f) => refs.names.get(f) ?? '?');
    for (const f of fs) f.put();
    return out;
  };
  return {
    test: ALL.map((u) => r.testSignaled(u)),
    get: ALL.map((u) => names(r.getFences(u))),
    unlocked: [...r.fencesUnlocked(BOOKKEEP)].map((e) => `${refs.names.get(e.fence) ?? '?'}:${NAME[e.usage]}`),
    wait0: r.waitTimeout(READ, 0),
  };
}

class ResvWorker extends RpcClient<ResvCommand & Gate> {
  constructor(t: TestContext) {
    super(new URL('./workers/resv-worker.js', import.meta.url));
    t.after(() => this.terminate());
  }
}

/* ---- fences carry over ---- */

test('moving an object with fences into the table (reading slot) keeps every slot, usage and reader answer', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const ctx = DmaFence.contextAlloc();
  const [k, w1, rd, bk, s] = [refs.fence('k'), refs.fence('w1', 1, ctx), refs.fence('rd'), refs.fence('bk'),
    refs.fence('s')];
  add(r, [k, KERNEL], [w1, WRITE], [s, READ], [rd, READ], [bk, BOOKKEEP]);
  assert.equal(s.signal(), 0); // a signalled fence stays in its slot until a reallocation
  const g = guard(r);
  const before = slots(refs, g);
  g.unlock();
  const read = readers(refs, r);

  assert.ok(Number.isInteger(r.slot) && r.slot >= 0, 'slot is a valid slot index');

  const g2 = guard(r);
  assert.deepEqual(slots(refs, g2), before);
  assert.deepEqual(before, ['k:KERNEL', 'w1:WRITE', 's:READ', 'rd:READ', 'bk:BOOKKEEP']);
  // The slot-reuse rule works on the moved fences: a later fence of w1's context replaces it in place.
  const w2 = refs.fence('w2', 2, ctx);
  g2.addFence(w2, WRITE);
  assert.deepEqual(slots(refs, g2), ['k:KERNEL', 'w2:WRITE', 's:READ', 'rd:READ', 'bk:BOOKKEEP']);
  g2.unlock();
  assert.deepEqual(readers(refs, r), JSON.parse(JSON.stringify(read).replaceAll('w1', 'w2')));
  for (const f of [k, w2, rd]) f.signal();
  assert.equal(r.testSignaled(READ), true, 'signals after the move are seen');
  assert.equal(r.testSignaled(BOOKKEEP), false);
  bk.signal();
  assert.equal(r.testSignaled(BOOKKEEP), true);
});

test('share() moves the object too, and the same slot is reported before and after', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  add(r, [refs.fence('a'), WRITE]);
  const token = r.share();
  const slot = r.slot;
  const again = DmaResv.receive(token);
  refs.onEnd(() => again.put());
  assert.equal(again.slot, slot);
  assert.equal(again.testSignaled(WRITE), false);
  assert.equal(r.slot, slot, 'moving happens once');
});

test('a private object counts as one live object; put() of it releases it and its fences', () => {
  const before = liveObjects();
  const r = DmaResv.create();
  assert.equal(liveObjects(), before + 1);
  const f = DmaFence.init(OPS, DmaFence.contextAlloc(), 1);
  add(r, [f, WRITE]);
  f.put(); // the object holds the only reference now
  assert.equal(liveObjects(), before + 2);
  r.put();
  assert.equal(liveObjects(), before, 'the object and the fence it held are gone');
  assert.throws(() => r.testSignaled(WRITE), { code: 'EINVAL' }, 'a handle used after put()');
});

/* ---- the lock carries over ---- */

test('moved while locked without a context: the guard keeps working, the lock stays held, unlock frees it', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const g = guard(r);
  g.reserveFences(1);
  g.addFence(refs.fence('a'), WRITE);
  const other = DmaResv.receive(r.share()); // a second handle on the (now shared) object
  refs.onEnd(() => other.put());
  assert.equal(other.isLocked(), true);
  assert.equal(other.trylock(), null);
  assert.equal(r.mutex.lockingCtx(), null);
  assert.equal(r.mutex.holderStamp, 0n);
  assert.deepEqual(slots(refs, g), ['a:WRITE']);
  assert.throws(() => r.lock(null), { code: 'EDEADLK' }, 'a blocking relock by this thread would never wake');
  g.unlock();
  assert.equal(other.isLocked(), false);
  const g2 = other.trylock();
  assert.ok(g2 instanceof DmaResvLocked);
  assert.deepEqual(slots(refs, g2), ['a:WRITE']);
  g2.unlock();
});

test('unlocked behind its guard (resv.mutex.unlock()): the guard is EPERM and changes nothing, private or moved', (t) => {
  const refs = new Refs(t);
  for (const move of [false, true]) {
    const r = refs.resv();
    const g = guard(r);
    g.reserveFences(1);
    g.addFence(refs.fence('a'), WRITE);
    if (move) void r.slot;
    r.mutex.unlock(); // ww_mutex_unlock(&obj->lock) directly, as a kernel caller could
    assert.equal(r.isLocked(), false);
    assert.throws(() => g.reserveFences(1), { code: 'EPERM' }, `move=${move}`);
    assert.throws(() => g.addFence(refs.fence('b'), WRITE), { code: 'EPERM' }, `move=${move}`);
    assert.throws(() => g.unlock(), { code: 'EPERM' }, `move=${move}`);
    assert.equal(r.isLocked(), false);
    const g2 = guard(r);
    assert.deepEqual(slots(refs, g2), ['a:WRITE'], 'the failed calls added nothing');
    g2.unlock();
  }
});

test('moved while locked by a context: still held by it (-EALREADY, locking ctx, stamp), and wait-die applies', (t) => {
  const refs = new Refs(t);
  const [r, held] = [refs.resv(), refs.resv()];
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  const g = guard(r, older);
  void r.slot;
  assert.equal(r.lock(older), EALREADY);
  assert.equal(older.held, 1);
  assert.equal(r.mutex.lockingCtx(), older);
  assert.equal(r.mutex.holderStamp, older.stamp);
  assert.equal(r.locked(), g);
  const gy = guard(held, younger);
  assert.equal(r.lock(younger), EDEADLK, 'a younger context holding a lock dies on the older holder');
  gy.unlock();
  g.unlock();
  assert.equal(older.held, 0);
  older.fini();
  const gs = r.lockSlow(younger);
  assert.equal(r.mutex.lockingCtx(), younger);
  gs.unlock();
  younger.fini();
});

test('a private object held by an older context gives -EDEADLK to a younger one, then lockSlow works', (t) => {
  const refs = new Refs(t);
  const [a, b] = [refs.resv(), refs.resv()];
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  const gb = guard(b, older); // both objects still private
  const ga = guard(a, younger);
  assert.equal(b.lock(younger), EDEADLK);
  ga.unlock();
  gb.unlock();
  older.fini();
  const g = b.lockSlow(younger);
  assert.equal(younger.held, 1);
  g.unlock();
  younger.fini();
});

test('moved with a reservation pending: the reserved appends still work under that lock and end with it', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const g = guard(r);
  g.reserveFences(2);
  g.addFence(refs.fence('a'), READ);
  void r.slot;
  g.addFence(refs.fence('b'), READ);
  assert.throws(() => g.addFence(refs.fence('c'), READ), { code: 'EINVAL' }, 'only two were reserved');
  assert.deepEqual(slots(refs, g), ['a:READ', 'b:READ']);
  g.unlock();
  const g2 = guard(r);
  assert.throws(() => g2.addFence(refs.fence('d'), READ), { code: 'EINVAL' }, 'reservations end with the lock');
  g2.unlock();
});

test('two async tasks of this thread contend for a private object: the second waits until the first unlocks',
  async (t) => {
    const refs = new Refs(t);
    const r = refs.resv();
    const first = await r.lockAsync(null);
    assert.ok(first instanceof DmaResvLocked);
    const ctx = new WwAcquireCtx();
    const second = r.lockAsync(ctx);
    assert.equal(await settledValue(second), 'pending');
    first.reserveFences(1);
    first.addFence(refs.fence('a'), WRITE);
    first.unlock();
    const g = await hangGuard(second, 'lockAsync of the second task');
    assert.ok(g instanceof DmaResvLocked);
    assert.equal(r.mutex.lockingCtx(), ctx);
    assert.deepEqual(slots(refs, g), ['a:WRITE']);
    g.unlock();
    ctx.fini();
  });

/* ---- iterations in progress ---- */

test('fencesUnlocked restarts when the object moves mid-walk; restarted marks the first fence of the new pass',
  (t) => {
    const refs = new Refs(t);
    const r = refs.resv();
    add(r, [refs.fence('a'), WRITE], [refs.fence('b'), READ], [refs.fence('c'), BOOKKEEP]);
    const trace: string[] = [];
    for (const e of r.fencesUnlocked(BOOKKEEP)) {
      trace.push(`${refs.names.get(e.fence) ?? '?'}${e.restarted ? '!' : ''}`);
      if (trace.length === 2) void r.slot; // moves the array into the table
    }
    assert.deepEqual(trace, ['a!', 'b', 'a!', 'b', 'c']);
  });

test('a locked iteration continues over the same slots when the object moves mid-walk', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  add(r, [refs.fence('a'), WRITE], [refs.fence('b'), READ], [refs.fence('c'), BOOKKEEP]);
  const g = guard(r);
  const seen: string[] = [];
  for (const e of g.fences(BOOKKEEP)) {
    seen.push(`${refs.names.get(e.fence) ?? '?'}:${NAME[e.usage]}`);
    if (seen.length === 1) void r.slot;
  }
  assert.deepEqual(seen, ['a:WRITE', 'b:READ', 'c:BOOKKEEP']);
  g.unlock();
});

/* ---- other threads ---- */

test('shared while locked with fences in it, then used from a worker: it sees the fences, waits for the lock, adds',
  async (t) => {
    const refs = new Refs(t);
    const w = new ResvWorker(t);
    const r = refs.resv();
    const a = refs.fence('a', 5);
    const g = guard(r);
    g.reserveFences(1);
    g.addFence(a, WRITE);
    await w.call({ op: 'receiveResv', resv: 'r', token: r.share() });
    assert.deepEqual(await w.call<SeenFence[]>({ op: 'fencesUnlocked', resv: 'r', usage: BOOKKEEP }), [
      { context: a.context, seqno: 5n, usage: WRITE, restarted: true },
    ]);
    const locking = w.call<bigint>({ op: 'lock', resv: 'r' }); // blocks the worker until this unlock
    assert.equal(await settledValue(locking), 'pending');
    g.unlock();
    const stamp = await locking;
    assert.equal(r.mutex.holderStamp, stamp, 'the worker holds it now');
    await w.call({ op: 'unlock', resv: 'r' });
    await w.call({ op: 'initFence', name: 'wf', context: null, seqno: 1 });
    await w.call({ op: 'addFence', resv: 'r', name: 'wf', usage: BOOKKEEP });
    a.signal();
    assert.equal(r.testSignaled(READ), true);
    assert.equal(r.testSignaled(BOOKKEEP), false, 'the worker\'s fence is seen here');
    await w.call({ op: 'signal', name: 'wf' });
    assert.equal(r.testSignaled(BOOKKEEP), true);
    await w.call({ op: 'put', name: 'wf' });
    await w.call({ op: 'putResv', resv: 'r' });
  });

test('a move the full table refuses is ENOMEM and leaves the object private and intact', () => {
  const script = `
    const { DmaFence, DmaResv, SwSyncTimeline, liveObjects } = await import('dmabuf');
    const ops = { getDriverName: () => 'd', getTimelineName: () => 't' };
    const r = DmaResv.create();
    const mine = [1, 2, 3].map((s) => DmaFence.init(ops, DmaFence.contextAlloc(), s));
    const g = r.lock(null);
    g.reserveFences(3);
    for (const f of mine) g.addFence(f, 1);
    g.unlock();
    const tl = SwSyncTimeline.create('full');
    const filler = [];
    try { for (;;) filler.push(tl.createFence(filler.length + 1)); } catch (e) { if (e.code !== 'ENOMEM') throw e; }
    let code = 'none';
    try { r.share(); } catch (e) { code = e.code; }
    const g2 = r.lock(null);
    const kept = [...g2.fences(3)].length;
    g2.unlock();
    const pending = !r.testSignaled(1);
    for (const f of filler.splice(0, 16)) f.put();
    const token = r.share();
    const again = DmaResv.receive(token);
    const afterMove = !again.testSignaled(1);
    for (const f of mine) f.signal();
    const signalled = again.testSignaled(3);
    for (const f of [...filler, ...mine]) f.put();
    again.put(); r.put(); tl.close();
    console.log(JSON.stringify({ code, kept, pending, afterMove, signalled, live: liveObjects() }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: new URL('../../', import.meta.url), env: { ...process.env, DMABUF_SLOTS: '256' }, encoding: 'utf8',
  });
  assert.deepEqual(JSON.parse(out), { code: 'ENOMEM', kept: 3, pending: true, afterMove: true, signalled: true, live: 0 });
});

test('no objects leaked by this file (liveObjects() back to the baseline)', async () => {
  assert.equal(await pollLiveObjects(BASELINE), BASELINE);
});
