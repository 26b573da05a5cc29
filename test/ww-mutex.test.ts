/**
 * ww-mutex with acquire contexts (kernel-contract §3.4, §8, §9), as documented in
 * src/ww-mutex.ts: stamps, -EALREADY, wait-die (-EDEADLK only for contexts that
 * hold locks), the back-off protocol with lockSlow, the DEBUG_WW_MUTEXES misuse
 * errors, trylock and plain (context-less) locking, interruptible async locking,
 * and the same across worker threads: opposite lock orders, a randomised stress
 * with a lost-update check, and recovery of a lock whose owner was terminated.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DmaFence, liveObjects, lockRecoveries, WwAcquireCtx, WwMutex } from 'dmabuf';
import { guard, settledValue, turn } from './support/async.js';
import { pollLiveObjects } from './support/leaks.js';
import { RpcClient } from './support/worker-rpc.js';
import type { Command, StressResult } from './workers/ww-worker.js';

const EALREADY = -114;
const EDEADLK = -35;
const EINTR = -4;
const HANG_GUARD_MS = 120_000;

const BASELINE = liveObjects();

/* ---- helpers ---- */

/** A mutex that is put when the test ends (after unlocking it if this thread still holds it). */
function mutexes(t: { after(fn: () => void): void }, n: number): WwMutex[] {
  const ms = Array.from({ length: n }, () => WwMutex.create());
  t.after(() => {
    for (const m of ms) {
      while (m.isHeldByMe()) m.unlock();
      m.put();
    }
  });
  return ms;
}

/** Client of test/workers/ww-worker.ts. */
class WwWorker extends RpcClient<Command> {
  constructor() {
    super(new URL('./workers/ww-worker.js', import.meta.url));
  }
}

/** `p` under this file's hang guard (never a result). */
function withHangGuard<T>(p: Promise<T>, what: string): Promise<T> {
  return guard(p, what, HANG_GUARD_MS);
}

/* ---- contexts and stamps ---- */

test('acquire contexts get increasing, unique stamps (smaller = older)', () => {
  const a = new WwAcquireCtx();
  const b = new WwAcquireCtx();
  assert.equal(typeof a.stamp, 'bigint');
  assert.ok(a.stamp > 0n);
  assert.ok(b.stamp > a.stamp);
  assert.equal(a.held, 0);
  a.fini();
  b.fini();
});

test('a worker context made later is younger than one made here earlier (one global counter)', async (t) => {
  const w = new WwWorker();
  t.after(() => w.terminate());
  const mine = new WwAcquireCtx();
  const theirs = await w.call<bigint>({ op: 'newCtx', ctx: 'c' });
  assert.ok(theirs > mine.stamp);
  mine.fini();
});

/* ---- single context ---- */

test('lock with a context returns 0, then -EALREADY for the same context without changing anything', (t) => {
  const [m] = mutexes(t, 1);
  const ctx = new WwAcquireCtx();
  assert.equal(m!.lock(ctx), 0);
  assert.equal(ctx.held, 1);
  assert.equal(m!.lock(ctx), EALREADY);
  assert.equal(ctx.held, 1);
  assert.equal(m!.isLocked(), true);
  assert.equal(m!.lockingCtx(), ctx);
  assert.equal(m!.holderStamp, ctx.stamp);
  m!.unlock();
  assert.equal(ctx.held, 0);
  assert.equal(m!.isLocked(), false);
  assert.equal(m!.lockingCtx(), null);
  assert.equal(m!.holderStamp, 0n);
  ctx.fini();
});

test('a context can hold many mutexes and release them in any order', (t) => {
  const ms = mutexes(t, 4);
  const ctx = new WwAcquireCtx();
  for (const m of ms) assert.equal(m.lock(ctx), 0);
  ctx.done();
  assert.equal(ctx.held, 4);
  for (const m of ms) m.assertHeld(ctx);
  for (const i of [2, 0, 3, 1]) ms[i]!.unlock();
  assert.equal(ctx.held, 0);
  ctx.fini();
});

/* ---- wait-die ---- */

test('a younger context holding a lock gets -EDEADLK at once when an older context holds the target', (t) => {
  const [a, b] = mutexes(t, 2);
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  assert.equal(a!.lock(older), 0);
  assert.equal(b!.lock(younger), 0);
  assert.equal(a!.lock(younger), EDEADLK);
  assert.equal(younger.held, 1, 'dying takes nothing and releases nothing');
  assert.equal(a!.lockingCtx(), older);
  b!.unlock();
  a!.unlock();
  older.fini();
  younger.fini();
});

test('a context holding no locks never gets -EDEADLK: it waits until the older holder unlocks', async (t) => {
  const [a] = mutexes(t, 1);
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  assert.equal(a!.lock(older), 0);
  const p = a!.lockAsync(younger);
  assert.equal(await settledValue(p), 'pending');
  a!.unlock();
  assert.equal(await p, 0);
  assert.equal(a!.lockingCtx(), younger);
  a!.unlock();
  older.fini();
  younger.fini();
});

test('an older context holding a lock does not die for a younger holder: it waits', async (t) => {
  const [a, b] = mutexes(t, 2);
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  assert.equal(b!.lock(younger), 0);
  assert.equal(a!.lock(older), 0);
  const p = b!.lockAsync(older);
  assert.equal(await settledValue(p), 'pending');
  b!.unlock();
  assert.equal(await p, 0);
  assert.equal(older.held, 2);
  a!.unlock();
  b!.unlock();
  older.fini();
  younger.fini();
});

test('a younger context holding a lock dies when an older context is already waiting, even for a younger holder',
  async (t) => {
    const [m, x] = mutexes(t, 2);
    const oldest = new WwAcquireCtx();
    const middle = new WwAcquireCtx();
    const youngest = new WwAcquireCtx();
    assert.equal(m!.lock(youngest), 0);
    const waiting = m!.lockAsync(oldest); // holds nothing: waits
    assert.equal(await settledValue(waiting), 'pending');
    assert.equal(x!.lock(middle), 0);
    assert.equal(m!.lock(middle), EDEADLK);
    m!.unlock();
    assert.equal(await waiting, 0);
    m!.unlock();
    x!.unlock();
    for (const c of [oldest, middle, youngest]) c.fini();
  });

test('a waiting younger context holding a lock dies as soon as an older context starts waiting', async (t) => {
  const [m, x] = mutexes(t, 2);
  const oldest = new WwAcquireCtx();
  const middle = new WwAcquireCtx();
  const youngest = new WwAcquireCtx();
  assert.equal(m!.lock(youngest), 0);
  assert.equal(x!.lock(middle), 0);
  const middleWaits = m!.lockAsync(middle); // the holder is younger: middle waits
  assert.equal(await settledValue(middleWaits), 'pending');
  const oldestWaits = m!.lockAsync(oldest);
  assert.equal(await middleWaits, EDEADLK, 'woken to die without any unlock');
  assert.equal(await settledValue(oldestWaits), 'pending');
  m!.unlock();
  assert.equal(await oldestWaits, 0);
  m!.unlock();
  x!.unlock();
  for (const c of [oldest, middle, youngest]) c.fini();
});

test('the full back-off protocol: unlock all, lockSlow the contended mutex, retry the rest; all end up held',
  async (t) => {
    const [a, b, c] = mutexes(t, 3);
    const older = new WwAcquireCtx();
    const younger = new WwAcquireCtx();
    assert.equal(b!.lock(older), 0);
    // The younger transaction wants a, b, c in that order.
    assert.equal(a!.lock(younger), 0);
    assert.equal(b!.lock(younger), EDEADLK);
    a!.unlock();
    assert.equal(younger.held, 0);
    const slow = b!.lockSlowAsync(younger);
    assert.equal(await settledValue(slow), 'pending');
    // The older transaction gets what the younger let go of.
    assert.equal(a!.lock(older), 0);
    a!.unlock();
    b!.unlock();
    older.fini();
    assert.equal(await slow, 0);
    for (const m of [a!, b!, c!]) assert.ok([0, EALREADY].includes(m.lock(younger)));
    assert.equal(b!.lock(younger), EALREADY);
    younger.done();
    assert.equal(younger.held, 3);
    for (const m of [a!, b!, c!]) {
      m.assertHeld(younger);
      m.unlock();
    }
    younger.fini();
  });

test('blocking lockSlow after -EDEADLK takes a free mutex and clears the contended state', (t) => {
  const [a, b] = mutexes(t, 2);
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  assert.equal(b!.lock(older), 0);
  assert.equal(a!.lock(younger), 0);
  assert.equal(b!.lock(younger), EDEADLK);
  a!.unlock();
  b!.unlock();
  b!.lockSlow(younger);
  assert.equal(a!.lock(younger), 0, 'after lockSlow any mutex may be locked again');
  a!.unlock();
  b!.unlock();
  older.fini();
  younger.fini();
});

/* ---- misuse (DEBUG_WW_MUTEXES rows of §8) ---- */

/** A younger context that just got -EDEADLK on `b` while holding `a`; `older` holds `b`. */
function deadlocked(t: { after(fn: () => void): void }): {
  a: WwMutex; b: WwMutex; c: WwMutex; older: WwAcquireCtx; younger: WwAcquireCtx;
} {
  const [a, b, c] = mutexes(t, 3);
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  assert.equal(b!.lock(older), 0);
  assert.equal(a!.lock(younger), 0);
  assert.equal(b!.lock(younger), EDEADLK);
  return { a: a!, b: b!, c: c!, older, younger };
}

test('after -EDEADLK, locking a different mutex than the contended one is EINVAL and changes nothing', (t) => {
  const { a, b, c, older, younger } = deadlocked(t);
  a.unlock();
  assert.throws(() => c.lock(younger), { code: 'EINVAL' });
  assert.equal(c.isLocked(), false);
  assert.equal(younger.held, 0);
  b.unlock();
  b.lockSlow(younger); // the protocol still works afterwards
  assert.equal(c.lock(younger), 0);
  b.unlock();
  c.unlock();
  older.fini();
  younger.fini();
});

test('after -EDEADLK, keeping locks and calling lockSlow (or lock) on the contended mutex is EINVAL', async (t) => {
  const { a, b, older, younger } = deadlocked(t);
  assert.throws(() => b.lockSlow(younger), { code: 'EINVAL' });
  assert.throws(() => b.lock(younger), { code: 'EINVAL' });
  await assert.rejects(b.lockAsync(younger), { code: 'EINVAL' });
  await assert.rejects(b.lockSlowAsync(younger), { code: 'EINVAL' });
  assert.equal(younger.held, 1);
  assert.equal(b.lockingCtx(), older);
  a.unlock();
  b.unlock();
  b.lockSlow(younger);
  assert.equal(b.lockingCtx(), younger);
  b.unlock();
  older.fini();
  younger.fini();
});

test('lockSlow without a preceding -EDEADLK, or on another mutex than the contended one, is EINVAL', (t) => {
  const [m, n] = mutexes(t, 2);
  const ctx = new WwAcquireCtx();
  assert.throws(() => m!.lockSlow(ctx), { code: 'EINVAL' });
  assert.equal(m!.isLocked(), false);
  const { a, b, c, older, younger } = deadlocked(t);
  a.unlock();
  assert.throws(() => c.lockSlow(younger), { code: 'EINVAL' });
  assert.throws(() => n!.lockSlow(younger), { code: 'EINVAL' });
  b.unlock();
  b.lockSlow(younger);
  b.unlock();
  for (const x of [ctx, older, younger]) x.fini();
});

test('locking a new mutex after done() is EINVAL; -EALREADY is still returned for a held one', (t) => {
  const [a, b] = mutexes(t, 2);
  const ctx = new WwAcquireCtx();
  assert.equal(a!.lock(ctx), 0);
  ctx.done();
  assert.equal(ctx.isDone, true);
  assert.throws(() => b!.lock(ctx), { code: 'EINVAL' });
  assert.equal(b!.isLocked(), false);
  assert.equal(a!.lock(ctx), EALREADY);
  assert.throws(() => ctx.done(), { code: 'EINVAL' });
  a!.unlock();
  ctx.fini();
});

test('fini() with locks held is EINVAL and leaves the context usable; locking after fini() is EINVAL', (t) => {
  const [a] = mutexes(t, 1);
  const ctx = new WwAcquireCtx();
  assert.equal(a!.lock(ctx), 0);
  assert.throws(() => ctx.fini(), { code: 'EINVAL' });
  assert.equal(ctx.held, 1);
  assert.equal(a!.lockingCtx(), ctx);
  a!.unlock();
  ctx.fini();
  assert.equal(ctx.isFinished, true);
  assert.throws(() => a!.lock(ctx), { code: 'EINVAL' });
  assert.throws(() => ctx.fini(), { code: 'EINVAL' });
  assert.equal(a!.isLocked(), false);
});

test('a second lock call on a context while its async lock is pending is EINVAL', async (t) => {
  const [a, b] = mutexes(t, 2);
  const holder = new WwAcquireCtx();
  const ctx = new WwAcquireCtx();
  assert.equal(a!.lock(holder), 0);
  const p = a!.lockAsync(ctx);
  assert.throws(() => b!.lock(ctx), { code: 'EINVAL' });
  assert.throws(() => ctx.fini(), { code: 'EINVAL' });
  a!.unlock();
  assert.equal(await p, 0);
  assert.equal(b!.lock(ctx), 0);
  a!.unlock();
  b!.unlock();
  holder.fini();
  ctx.fini();
});

test('unlock() and assertHeld() by a thread that does not hold the mutex are EPERM', (t) => {
  const [m] = mutexes(t, 1);
  assert.throws(() => m!.unlock(), { code: 'EPERM' });
  assert.throws(() => m!.assertHeld(), { code: 'EPERM' });
  const ctx = new WwAcquireCtx();
  const other = new WwAcquireCtx();
  assert.equal(m!.lock(ctx), 0);
  m!.assertHeld();
  m!.assertHeld(ctx);
  assert.throws(() => m!.assertHeld(other), { code: 'EPERM' });
  m!.unlock();
  assert.throws(() => m!.unlock(), { code: 'EPERM' });
  ctx.fini();
  other.fini();
});

test('a blocking lock that would wait for a mutex of its own thread throws EDEADLK instead of hanging', (t) => {
  const [m, x] = mutexes(t, 2);
  const older = new WwAcquireCtx();
  const younger = new WwAcquireCtx();
  assert.equal(m!.lock(younger), 0);
  assert.throws(() => m!.lock(older), { code: 'EDEADLK' }, 'an older context with no locks would wait');
  assert.equal(x!.lock(older), 0);
  assert.throws(() => m!.lock(older), { code: 'EDEADLK' }, 'an older context with locks would wait too');
  assert.throws(() => m!.lock(null), { code: 'EDEADLK' });
  assert.equal(older.held, 1);
  x!.unlock();
  m!.unlock();
  older.fini();
  younger.fini();
});

test('put() of the last handle of a mutex this thread holds is EBUSY; a handle used after its last put() is EINVAL', () => {
  const m = WwMutex.create();
  assert.equal(m.lock(null), 0);
  assert.throws(() => m.put(), { code: 'EBUSY' });
  m.get();
  m.put(); // not the last one: fine while locked
  m.unlock();
  m.put();
  assert.throws(() => m.lock(null), { code: 'EINVAL' });
});

test('receive() of something that is not a ww-mutex token is EINVAL', () => {
  assert.throws(() => WwMutex.receive({}), { code: 'EINVAL' });
  const f = DmaFence.init({ getDriverName: () => 'd', getTimelineName: () => 't' }, DmaFence.contextAlloc(), 1);
  assert.throws(() => WwMutex.receive(f.share()), { code: 'EINVAL' });
  f.put();
});

/* ---- no context: trylock and plain locking ---- */

test('trylock takes a free mutex without a context and fails (false) on a held one, never blocking', (t) => {
  const [m] = mutexes(t, 1);
  assert.equal(m!.trylock(), true);
  assert.equal(m!.isLocked(), true);
  assert.equal(m!.lockingCtx(), null);
  assert.equal(m!.holderStamp, 0n);
  assert.equal(m!.trylock(), false);
  m!.assertHeld();
  m!.unlock();
  const ctx = new WwAcquireCtx();
  assert.equal(m!.lock(ctx), 0);
  assert.equal(m!.trylock(), false);
  m!.unlock();
  ctx.fini();
});

test('lock(null) is a plain sleeping mutex: 0, no context, and contexts wait for it without dying', async (t) => {
  const [m, x] = mutexes(t, 2);
  assert.equal(m!.lock(null), 0);
  assert.equal(m!.lockingCtx(), null);
  const ctx = new WwAcquireCtx();
  assert.equal(x!.lock(ctx), 0);
  const p = m!.lockAsync(ctx); // holder has no stamp: nobody older holds it, so the context waits
  assert.equal(await settledValue(p), 'pending');
  const plain = m!.lockAsync(null);
  m!.unlock();
  assert.equal(await p, 0);
  assert.equal(await settledValue(plain), 'pending');
  m!.unlock();
  assert.equal(await plain, 0);
  m!.unlock();
  x!.unlock();
  ctx.fini();
});

/* ---- interruptible ---- */

test('lockAsync aborted while waiting settles with -EINTR and leaves nothing held', async (t) => {
  const [m] = mutexes(t, 1);
  const holder = new WwAcquireCtx();
  const ctx = new WwAcquireCtx();
  assert.equal(m!.lock(holder), 0);
  const ac = new AbortController();
  const p = m!.lockAsync(ctx, { signal: ac.signal });
  assert.equal(await settledValue(p), 'pending');
  ac.abort();
  assert.equal(await p, EINTR);
  assert.equal(ctx.held, 0);
  assert.equal(m!.lockingCtx(), holder);
  m!.unlock();
  assert.equal(m!.isLocked(), false);
  assert.equal(m!.lock(ctx), 0, 'the context is usable after -EINTR');
  m!.unlock();
  holder.fini();
  ctx.fini();
});

test('an interrupted older waiter is forgotten: a younger context with locks then waits instead of dying',
  async (t) => {
    const [m, x] = mutexes(t, 2);
    const oldest = new WwAcquireCtx();
    const middle = new WwAcquireCtx();
    const youngest = new WwAcquireCtx();
    assert.equal(m!.lock(youngest), 0);
    const ac = new AbortController();
    const p = m!.lockAsync(oldest, { signal: ac.signal });
    assert.equal(await settledValue(p), 'pending');
    ac.abort();
    assert.equal(await p, EINTR);
    assert.equal(x!.lock(middle), 0);
    const q = m!.lockAsync(middle);
    assert.equal(await settledValue(q), 'pending', 'no older context waits any more');
    m!.unlock();
    assert.equal(await q, 0);
    m!.unlock();
    x!.unlock();
    for (const c of [oldest, middle, youngest]) c.fini();
  });

test('an already-aborted signal gives -EINTR only when the lock would have to sleep', async (t) => {
  const [m] = mutexes(t, 1);
  const ctx = new WwAcquireCtx();
  const aborted = AbortSignal.abort();
  assert.equal(await m!.lockAsync(ctx, { signal: aborted }), 0, 'a free mutex is taken');
  assert.equal(await m!.lockAsync(ctx, { signal: aborted }), EALREADY);
  m!.unlock();
  const holder = new WwAcquireCtx();
  assert.equal(m!.lock(holder), 0);
  assert.equal(await m!.lockAsync(ctx, { signal: aborted }), EINTR);
  assert.equal(await m!.lockAsync(null, { signal: aborted }), EINTR);
  assert.equal(ctx.held, 0);
  m!.unlock();
  holder.fini();
  ctx.fini();
});

test('lockSlowAsync aborted while waiting gives -EINTR and keeps the context ready for lockSlow', async (t) => {
  const { a, b, older, younger } = deadlocked(t);
  a.unlock();
  const ac = new AbortController();
  const p = b.lockSlowAsync(younger, { signal: ac.signal });
  assert.equal(await settledValue(p), 'pending');
  ac.abort();
  assert.equal(await p, EINTR);
  assert.equal(younger.held, 0);
  b.unlock();
  assert.equal(await b.lockSlowAsync(younger), 0);
  b.unlock();
  older.fini();
  younger.fini();
});

/* ---- across threads ---- */

test('a mutex shared with a worker: its holder blocks ours, trylock fails, unlock by us is EPERM', async (t) => {
  const w = new WwWorker();
  t.after(() => w.terminate());
  const [m] = mutexes(t, 1);
  await w.call({ op: 'receive', m: 'm', token: m!.share() });
  assert.equal(await w.call({ op: 'lock', m: 'm', ctx: null }), 0);
  assert.equal(m!.isLocked(), true);
  assert.equal(m!.trylock(), false);
  assert.equal(m!.lockingCtx(), null, 'held by another thread');
  assert.throws(() => m!.unlock(), { code: 'EPERM' });
  const ctx = new WwAcquireCtx();
  const aborted = AbortSignal.abort();
  assert.equal(m!.lockInterruptible(ctx, aborted), EINTR, 'blocking: the signal is seen before sleeping');
  const p = m!.lockAsync(ctx);
  assert.equal(await settledValue(p), 'pending');
  await w.call({ op: 'unlock', m: 'm' });
  assert.equal(await p, 0);
  assert.equal(await w.call({ op: 'trylock', m: 'm' }), false);
  m!.unlock();
  assert.equal(await w.call({ op: 'trylock', m: 'm' }), true);
  await w.call({ op: 'unlock', m: 'm' });
  await w.call({ op: 'put', m: 'm' });
  ctx.fini();
});

test('cross-thread wait-die: the younger worker context dies, backs off with a blocking lockSlow, then gets both',
  async (t) => {
    const w = new WwWorker();
    t.after(() => w.terminate());
    const [a, b] = mutexes(t, 2);
    await w.call({ op: 'receive', m: 'a', token: a!.share() });
    await w.call({ op: 'receive', m: 'b', token: b!.share() });
    const older = new WwAcquireCtx();
    await w.call({ op: 'newCtx', ctx: 'y' }); // younger: made after `older`
    assert.equal(a!.lock(older), 0);
    assert.equal(await w.call({ op: 'lock', m: 'b', ctx: 'y' }), 0);
    assert.equal(await w.call({ op: 'lock', m: 'a', ctx: 'y' }), EDEADLK);
    await w.call({ op: 'unlockAll', ctx: 'y' });
    const slow = w.call({ op: 'lockSlow', m: 'a', ctx: 'y' }); // blocks the worker until we unlock a
    assert.equal(b!.lock(older), 0, 'the older context gets what the younger let go of');
    assert.equal(await settledValue(slow), 'pending');
    a!.unlock();
    b!.unlock();
    older.fini();
    await withHangGuard(slow, 'lockSlow in the worker');
    assert.equal(await w.call({ op: 'lock', m: 'a', ctx: 'y' }), EALREADY);
    assert.equal(await w.call({ op: 'lock', m: 'b', ctx: 'y' }), 0);
    assert.equal(await w.call({ op: 'held', ctx: 'y' }), 2);
    assert.equal(a!.isLocked() && b!.isLocked(), true);
    await w.call({ op: 'unlockAll', ctx: 'y' });
    await w.call({ op: 'fini', ctx: 'y' });
    await w.call({ op: 'put', m: 'a' });
    await w.call({ op: 'put', m: 'b' });
  });

test('an older context here waits (no -EDEADLK) for a mutex a younger worker context holds', async (t) => {
  const w = new WwWorker();
  t.after(() => w.terminate());
  const [a, b] = mutexes(t, 2);
  await w.call({ op: 'receive', m: 'b', token: b!.share() });
  const older = new WwAcquireCtx();
  await w.call({ op: 'newCtx', ctx: 'y' });
  assert.equal(await w.call({ op: 'lock', m: 'b', ctx: 'y' }), 0);
  assert.equal(b!.holderStamp > older.stamp, true);
  assert.equal(a!.lock(older), 0);
  const p = b!.lockAsync(older);
  assert.equal(await settledValue(p), 'pending');
  await w.call({ op: 'unlockAll', ctx: 'y' });
  assert.equal(await p, 0);
  assert.equal(older.held, 2);
  a!.unlock();
  b!.unlock();
  older.fini();
  await w.call({ op: 'fini', ctx: 'y' });
  await w.call({ op: 'put', m: 'b' });
});

async function shareAll(w: WwWorker, ms: WwMutex[]): Promise<string[]> {
  const names = ms.map((_, i) => `m${i}`);
  for (let i = 0; i < ms.length; i++) await w.call({ op: 'receive', m: names[i]!, token: ms[i]!.share() });
  return names;
}

test('two workers locking overlapping sets in opposite orders with the back-off protocol both finish, no lost update',
  async (t) => {
    const ms = mutexes(t, 4);
    const workers = [new WwWorker(), new WwWorker()];
    t.after(async () => {
      for (const w of workers) await w.terminate();
    });
    const counters = new SharedArrayBuffer(4 * ms.length);
    const iterations = 400;
    const orders = [[0, 1, 2, 3], [3, 2, 1, 0]];
    const names = await shareAll(workers[0]!, ms);
    await shareAll(workers[1]!, ms);
    const results = await withHangGuard(Promise.all(workers.map((w, k) => w.call<StressResult>({
      op: 'stress', ms: names, counters, iterations, order: orders[k]!, seed: 1,
    }))), 'opposite-order locking');
    const c = new Int32Array(counters);
    for (let i = 0; i < ms.length; i++) {
      assert.equal(c[i], 2 * iterations);
      assert.equal(results[0]!.increments[i]! + results[1]!.increments[i]!, 2 * iterations);
    }
    for (const m of ms) assert.equal(m.isLocked(), false);
    for (const w of workers) for (const n of names) await w.call({ op: 'put', m: n });
  });

test('stress: 3 workers lock random subsets of 8 shared mutexes in random order; every update counted, all finish',
  async (t) => {
    const ms = mutexes(t, 8);
    const workers = [new WwWorker(), new WwWorker(), new WwWorker()];
    t.after(async () => {
      for (const w of workers) await w.terminate();
    });
    const counters = new SharedArrayBuffer(4 * ms.length);
    const names = await shareAll(workers[0]!, ms);
    for (const w of workers.slice(1)) await shareAll(w, ms);
    const results = await withHangGuard(Promise.all(workers.map((w, k) => w.call<StressResult>({
      op: 'stress', ms: names, counters, iterations: 3000, order: null, seed: 0x9e3779b9 + k * 7919,
    }))), 'the stress run');
    const c = new Int32Array(counters);
    for (let i = 0; i < ms.length; i++) {
      const done = results.reduce((sum, r) => sum + r.increments[i]!, 0);
      assert.ok(done > 0);
      assert.equal(c[i], done, `mutex ${i}: no lost update`);
    }
    for (const m of ms) assert.equal(m.isLocked(), false);
    for (const w of workers) for (const n of names) await w.call({ op: 'put', m: n });
  });

/* ---- dead owners ---- */

function captureRecoveryWarnings(t: { after(fn: () => void): void }): string[] {
  const codes: string[] = [];
  const onWarning = (w: Error & { code?: string }): void => {
    if (w.code === 'DMABUF_LOCK_RECOVERED') codes.push(w.code);
  };
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  return codes;
}

test('a worker terminated while holding a ww-mutex: the next lock() here returns 0 and sees ownerDied', async (t) => {
  const warnings = captureRecoveryWarnings(t);
  const [m] = mutexes(t, 1);
  const w = new WwWorker();
  await w.call({ op: 'receive', m: 'm', token: m!.share() });
  await w.call({ op: 'newCtx', ctx: 'c' });
  assert.equal(await w.call({ op: 'lock', m: 'm', ctx: 'c' }), 0);
  const before = lockRecoveries();
  await w.terminate();
  const ctx = new WwAcquireCtx();
  assert.equal(m!.lock(ctx), 0);
  assert.equal(m!.ownerDied, true);
  assert.ok(lockRecoveries() > before);
  m!.unlock();
  assert.equal(m!.ownerDied, false, 'cleared by the unlock of the next owner');
  ctx.fini();
  await turn(); // warnings are emitted on the next tick
  assert.ok(warnings.length >= 1);
});

test('a worker that exits normally while holding a ww-mutex releases it (ownerDied), even if its tid is reused', async (t) => {
  const [m] = mutexes(t, 1);
  const w = new WwWorker();
  await w.call({ op: 'receive', m: 'm', token: m!.share() });
  assert.equal(await w.call({ op: 'lock', m: 'm', ctx: null }), 0);
  await w.call({ op: 'exit' });
  await w.exited;
  // A new worker may take the dead one's tid at once: the lock must not look held by it.
  const next = new WwWorker();
  t.after(() => next.terminate());
  await next.call({ op: 'receive', m: 'm', token: m!.share() });
  assert.equal(m!.trylock(), true, 'released by the exiting thread itself');
  assert.equal(m!.ownerDied, true);
  m!.unlock();
});

test('a waiter here is woken when the worker holding the mutex is terminated', async (t) => {
  const [m] = mutexes(t, 1);
  const w = new WwWorker();
  await w.call({ op: 'receive', m: 'm', token: m!.share() });
  assert.equal(await w.call({ op: 'lock', m: 'm', ctx: null }), 0);
  const ctx = new WwAcquireCtx();
  const p = m!.lockAsync(ctx);
  assert.equal(await settledValue(p), 'pending');
  await w.terminate();
  assert.equal(await withHangGuard(p, 'the waiter'), 0);
  assert.equal(m!.ownerDied, true);
  assert.equal(m!.lockingCtx(), ctx);
  m!.unlock();
  ctx.fini();
});

/* ---- leak check ---- */

test('no objects leaked by this file (liveObjects() back to the baseline)', async () => {
  assert.equal(await pollLiveObjects(BASELINE), BASELINE);
});
