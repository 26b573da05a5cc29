/**
 * dma_resv (kernel-contract §3, §8), as documented in src/dma-resv.ts: usages and
 * their ordering, signalling, the locked and unlocked iterators, getFences,
 * testSignaled, the three-way waits, deadlines, fences a driver reports done
 * through ops.signaled, reserveFences (reservations never survive an unlock), the
 * addFence slot-reuse rules of current kernels (≈6.7+), replaceFences,
 * getSingleton, copyFrom, the references readers hold, describe(), misuse of the
 * lock guard, the wait-die ww-mutex embedded in every object, and a thread-private
 * fence becoming visible to another thread once it is added. The objects are
 * private to this thread here; dma-resv-shared.test.ts runs it all again on
 * objects in the shared table.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, dmaFenceArrayCreate,
  dmaFenceArrayMembers, dmaFenceChainInit, DmaFence, DmaResv, DmaResvLocked, dmaResvUsageRw, isDmaFenceArray,
  liveObjects, WwAcquireCtx,
} from 'dmabuf';
import type { DmaFenceOps, DmaResvUsage } from 'dmabuf';
import { settledValue } from './support/async.js';
import { pollLiveObjects, stubBaseline } from './support/leaks.js';
import { RpcClient, type Gate } from './support/worker-rpc.js';
import type { ResvCommand, SeenFence } from './workers/resv-worker.js';

// The stub lives forever once created: create it before taking the baseline.
const BASELINE = stubBaseline();

const EALREADY = -114;
const EDEADLK = -35;
const ERESTARTSYS = -512;
const HANG_GUARD_MS = 60_000;

const KERNEL = DMA_RESV_USAGE_KERNEL;
const WRITE = DMA_RESV_USAGE_WRITE;
const READ = DMA_RESV_USAGE_READ;
const BOOKKEEP = DMA_RESV_USAGE_BOOKKEEP;
/** Every usage, strongest first (KERNEL < WRITE < READ < BOOKKEEP). */
const USAGES = [KERNEL, WRITE, READ, BOOKKEEP] as const;
const NAME = ['KERNEL', 'WRITE', 'READ', 'BOOKKEEP'] as const;

/* ---- helpers ---- */

/**
 * The form the objects of this file take: dma-resv-shared.test.ts runs every test
 * again with DMABUF_TEST_RESV_FORM=shared, where each object is moved into the
 * shared table (by reading `slot`) right after `create()`.
 */
const SHARED_FORM = process.env['DMABUF_TEST_RESV_FORM'] === 'shared';

function newResv(): DmaResv {
  const r = DmaResv.create();
  if (SHARED_FORM) assert.ok(r.slot >= 0);
  return r;
}

function ops(extra: Partial<DmaFenceOps> = {}): DmaFenceOps {
  return { getDriverName: () => 'resv-drv', getTimelineName: () => 'resv-tl', ...extra };
}

/** Unlocks and puts every registered object at the end of the test, even after a failed assertion. */
class Refs {
  #undo: Array<() => void> = [];
  /** Names of the fences made by `fence()`, for readable slot listings. */
  readonly names = new Map<DmaFence, string>();

  constructor(t: TestContext) {
    t.after(() => {
      for (const u of this.#undo.splice(0).reverse()) u();
    });
  }

  /** A new thread-private fence on a fresh context (or `context`), named `name`. */
  fence(name: string, seqno: number | bigint = 1, context: bigint = DmaFence.contextAlloc()): DmaFence {
    const f = DmaFence.init(ops(), context, seqno);
    this.names.set(f, name);
    return this.adopt(f);
  }

  adopt<T extends DmaFence>(f: T): T {
    this.#undo.push(() => f.put());
    return f;
  }

  resv(): DmaResv {
    const r = newResv();
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

  ctx(): WwAcquireCtx {
    const c = new WwAcquireCtx();
    this.#undo.push(() => {
      if (!c.isFinished && c.held === 0) c.fini();
    });
    return c;
  }

  onEnd(fn: () => void): void {
    this.#undo.push(fn);
  }
}

/** `resv.lock(ctx)`, asserting that it returned the guard. */
function guard(r: DmaResv, ctx: WwAcquireCtx | null = null): DmaResvLocked {
  const g = r.lock(ctx);
  assert.ok(g instanceof DmaResvLocked, `lock() returned ${String(g)}`);
  return g;
}

/** Lock, reserve one slot per fence, add them in order, unlock. */
function add(r: DmaResv, ...entries: Array<[DmaFence, DmaResvUsage]>): void {
  const g = guard(r);
  try {
    g.reserveFences(entries.length);
    for (const [f, u] of entries) g.addFence(f, u);
  } finally {
    g.unlock();
  }
}

/** The slots a locked iteration yields, as `name:USAGE`. */
function slots(refs: Refs, g: DmaResvLocked, usage: DmaResvUsage = BOOKKEEP): string[] {
  const out: string[] = [];
  for (const e of g.fences(usage)) out.push(`${refs.names.get(e.fence) ?? '?'}:${NAME[e.usage]}`);
  return out;
}

/** The slots of `r` (locking it), as `name:USAGE`. */
function slotsOf(refs: Refs, r: DmaResv, usage: DmaResvUsage = BOOKKEEP): string[] {
  const g = guard(r);
  try {
    return slots(refs, g, usage);
  } finally {
    g.unlock();
  }
}

/** The names of `fences`, putting each (they are new references). */
function namesOf(refs: Refs, fences: DmaFence[]): string[] {
  const out = fences.map((f) => refs.names.get(f) ?? '?');
  for (const f of fences) f.put();
  return out;
}

/**
 * The fixture of the iteration tests: five fences on five contexts, in this slot
 * order, the third signalled after all were added.
 */
const MIXED: ReadonlyArray<[string, DmaResvUsage]> = [
  ['b', BOOKKEEP], ['k', KERNEL], ['rs', READ], ['w', WRITE], ['r', READ],
];

function mixed(refs: Refs): { r: DmaResv; byName: Map<string, DmaFence> } {
  const r = refs.resv();
  const byName = new Map<string, DmaFence>();
  for (const [name] of MIXED) byName.set(name, refs.fence(name));
  add(r, ...MIXED.map(([name, u]): [DmaFence, DmaResvUsage] => [byName.get(name)!, u]));
  assert.equal(byName.get('rs')!.signal(), 0); // after the adds: a signalled slot would be reused
  return { r, byName };
}

/** Client of test/workers/resv-worker.ts. */
class ResvWorker extends RpcClient<ResvCommand & Gate> {
  constructor() {
    super(new URL('./workers/resv-worker.js', import.meta.url));
  }
}

/* ---- usages ---- */

test('usages are ordered KERNEL (0) < WRITE (1) < READ (2) < BOOKKEEP (3)', () => {
  assert.deepEqual([KERNEL, WRITE, READ, BOOKKEEP], [0, 1, 2, 3]);
});

test('dmaResvUsageRw gives the usage to wait on: READ for a new write, WRITE for a new read', () => {
  assert.equal(dmaResvUsageRw(true), READ);
  assert.equal(dmaResvUsageRw(false), WRITE);
});

test('a pending READ fence leaves testSignaled(WRITE) true and testSignaled(READ) false', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const f = refs.fence('r');
  add(r, [f, READ]);
  assert.equal(r.testSignaled(WRITE), true);
  assert.equal(r.testSignaled(KERNEL), true);
  assert.equal(r.testSignaled(READ), false);
  assert.equal(r.testSignaled(BOOKKEEP), false);
  assert.equal(r.testSignaled(dmaResvUsageRw(false)), true, 'a new reader need not wait for a reader');
  assert.equal(r.testSignaled(dmaResvUsageRw(true)), false, 'a new writer must wait for a reader');
});

test('a usage outside 0..3 is EINVAL for queries and for addFence', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const bad = 4 as unknown as DmaResvUsage;
  assert.throws(() => r.testSignaled(bad), { code: 'EINVAL' });
  assert.throws(() => r.getFences(bad), { code: 'EINVAL' });
  assert.throws(() => [...r.fencesUnlocked(bad)], { code: 'EINVAL' });
  const g = guard(r);
  g.reserveFences(1);
  assert.throws(() => g.addFence(refs.fence('f'), bad), { code: 'EINVAL' });
  assert.throws(() => [...g.fences(bad)], { code: 'EINVAL' });
  assert.equal(g.numFences, 0);
  g.unlock();
});

test('an empty reservation object is idle for every usage: no fences, no singleton, waits return at once', async (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  for (const u of USAGES) {
    assert.equal(r.testSignaled(u), true);
    assert.deepEqual(r.getFences(u), []);
    assert.deepEqual([...r.fencesUnlocked(u)], []);
    assert.equal(r.getSingleton(u), null);
    assert.equal(r.waitTimeout(u, 0), 1, 'timeout 0 and nothing pending: 1');
    assert.equal(r.waitTimeout(u, 40), 40, 'nothing to wait for: the whole timeout');
    assert.equal(await r.waitTimeoutAsync(u, 0), 1);
    assert.equal(await r.waitTimeoutAsync(u, 40), 40);
    assert.equal(await r.waitTimeoutAsync(u, 40, { signal: AbortSignal.abort() }), 40, 'nothing to interrupt');
  }
  const g = guard(r);
  assert.deepEqual(slots(refs, g), []);
  assert.equal(g.describe(), '');
  g.unlock();
});

/* ---- per usage: signalling and the queries ---- */

for (const u of USAGES) {
  test(`a pending ${NAME[u]} fence is seen by queries for ${NAME[u]} and weaker usages only, until it is signalled`,
    (t) => {
      const refs = new Refs(t);
      const r = refs.resv();
      const f = refs.fence('f');
      add(r, [f, u]);
      for (const q of USAGES) {
        assert.equal(r.testSignaled(q), q < u, `testSignaled(${NAME[q]})`);
        assert.deepEqual(namesOf(refs, r.getFences(q)), q < u ? [] : ['f'], `getFences(${NAME[q]})`);
      }
      assert.equal(f.signal(), 0);
      for (const q of USAGES) {
        assert.equal(r.testSignaled(q), true, `testSignaled(${NAME[q]}) after the signal`);
        assert.deepEqual(r.getFences(q), []);
      }
      assert.deepEqual(slotsOf(refs, r), [`f:${NAME[u]}`], 'the signalled fence stays in its slot');
    });
}

for (const q of USAGES) {
  const expectLocked = MIXED.filter(([, u]) => u <= q).map(([n, u]) => `${n}:${NAME[u]}`);
  const expectUnlocked = MIXED.filter(([n, u]) => u <= q && n !== 'rs').map(([n]) => n);

  test(`locked fences(${NAME[q]}) yields every slot with usage ≤ ${NAME[q]} in slot order, signalled ones included`,
    (t) => {
      const refs = new Refs(t);
      const { r } = mixed(refs);
      const g = guard(r);
      assert.deepEqual(slots(refs, g, q), expectLocked);
      g.unlock();
    });

  test(`fencesUnlocked(${NAME[q]}) yields only the unsignalled fences ≤ ${NAME[q]}, restarted true on the first only`,
    (t) => {
      const refs = new Refs(t);
      const { r } = mixed(refs);
      const seen: string[] = [];
      const restarted: boolean[] = [];
      for (const e of r.fencesUnlocked(q)) {
        assert.ok(e.usage <= q);
        assert.equal(e.fence.isSignaled(), false);
        seen.push(refs.names.get(e.fence) ?? '?');
        restarted.push(e.restarted);
      }
      assert.deepEqual(seen, expectUnlocked);
      assert.deepEqual(restarted, expectUnlocked.map((_, i) => i === 0));
    });

  test(`getFences(${NAME[q]}) returns new references to the unsignalled fences ≤ ${NAME[q]}`, (t) => {
    const refs = new Refs(t);
    const { r, byName } = mixed(refs);
    const got = r.getFences(q);
    assert.deepEqual(got.map((f) => refs.names.get(f)), expectUnlocked, 'the same fences (this thread\'s views)');
    for (const f of got) f.put();
    for (const name of expectUnlocked) assert.equal(byName.get(name)!.isSignaled(), false, 'our references survive');
  });

  test(`testSignaled(${NAME[q]}) is false while an unsignalled fence ≤ ${NAME[q]} exists`, (t) => {
    const refs = new Refs(t);
    const { r, byName } = mixed(refs);
    assert.equal(r.testSignaled(q), expectUnlocked.length === 0);
    for (const name of expectUnlocked) {
      assert.equal(r.testSignaled(q), false);
      byName.get(name)!.signal();
    }
    assert.equal(r.testSignaled(q), true);
  });

  test(`waitTimeout(${NAME[q]}): 1 with timeout 0 when idle, 0 while a fence ≤ ${NAME[q]} is pending`, (t) => {
    const refs = new Refs(t);
    const { r, byName } = mixed(refs);
    const idle = expectUnlocked.length === 0;
    assert.equal(r.waitTimeout(q, 0), idle ? 1 : 0);
    assert.equal(r.waitTimeout(q, 1), idle ? 1 : 0, 'a short wait on a fence nobody signals times out: 0');
    for (const name of expectUnlocked) byName.get(name)!.signal();
    assert.equal(r.waitTimeout(q, 0), 1);
    assert.equal(r.waitTimeout(q, 30), 30, 'nothing left to wait for: the whole timeout');
  });

  test(`setDeadline(${NAME[q]}) forwards the deadline to the unsignalled fences ≤ ${NAME[q]} only`, (t) => {
    const refs = new Refs(t);
    const hooked: string[] = [];
    const r = refs.resv();
    const fences = USAGES.map((u) => {
      const f = refs.adopt(DmaFence.init(ops({ setDeadline: () => void hooked.push(NAME[u]) }), DmaFence.contextAlloc(), 1));
      return [f, u] as [DmaFence, DmaResvUsage];
    });
    add(r, ...fences);
    const ns = 987_654_321n;
    r.setDeadline(q, ns);
    for (const [f, u] of fences) assert.equal(f.deadline, u <= q ? ns : undefined, `deadline of the ${NAME[u]} fence`);
    assert.deepEqual(hooked, USAGES.filter((u) => u <= q).map((u) => NAME[u]));
  });
}

for (const u of USAGES) {
  test(`waitTimeoutAsync(${NAME[u]}) stays pending on a ${NAME[u]} fence and returns the remaining time (> 0) once it signals`,
    async (t) => {
      const refs = new Refs(t);
      const r = refs.resv();
      const f = refs.fence('f');
      add(r, [f, u]);
      assert.equal(await r.waitTimeoutAsync(u, 0), 0, 'timeout 0 with a fence pending: 0');
      assert.equal(await r.waitTimeoutAsync(u, 1), 0, 'timed out: 0');
      const p = r.waitTimeoutAsync(u, HANG_GUARD_MS);
      assert.equal(await settledValue(p), 'pending');
      assert.equal(f.signal(), 0);
      const left = await p;
      assert.ok(left > 0 && left <= HANG_GUARD_MS, `remaining ${left}`);
      assert.equal(await r.waitTimeoutAsync(u, 0), 1);
    });

  test(`waitTimeoutAsync(${NAME[u]}) with an aborted signal returns -ERESTARTSYS (-512), before or while waiting`,
    async (t) => {
      const refs = new Refs(t);
      const r = refs.resv();
      const f = refs.fence('f');
      add(r, [f, u]);
      assert.equal(await r.waitTimeoutAsync(u, HANG_GUARD_MS, { signal: AbortSignal.abort() }), ERESTARTSYS);
      const ac = new AbortController();
      const p = r.waitTimeoutAsync(u, HANG_GUARD_MS, { signal: ac.signal });
      assert.equal(await settledValue(p), 'pending');
      ac.abort();
      assert.equal(await p, ERESTARTSYS);
      assert.equal(f.isSignaled(), false, 'the interrupted wait did not complete anything');
      assert.equal(r.waitTimeout(u, HANG_GUARD_MS, { signal: AbortSignal.abort() }), ERESTARTSYS,
        'the blocking form sees an already-aborted signal');
    });
}

/*
 * dma_fence_is_signaled peeks the driver's `signaled` op (§2.6), and every unlocked
 * reader of §3.3 skips the fences it reports as signalled (the kernel's unlocked
 * iterator tests each fence with dma_fence_is_signaled). Each query runs first, on
 * a fresh object, so no earlier query has signalled the fence already.
 */
const PEEKING_QUERIES: ReadonlyArray<[string, (r: DmaResv) => Promise<void>]> = [
  ['testSignaled is true', async (r) => assert.equal(r.testSignaled(BOOKKEEP), true)],
  ['getFences returns nothing', async (r) => {
    const got = r.getFences(BOOKKEEP);
    for (const f of got) f.put();
    assert.equal(got.length, 0);
  }],
  ['getSingleton is null', async (r) => {
    const s = r.getSingleton(BOOKKEEP);
    s?.put();
    assert.equal(s, null);
  }],
  ['waitTimeout(…, 0) returns 1', async (r) => assert.equal(r.waitTimeout(BOOKKEEP, 0), 1)],
  ['waitTimeoutAsync(…, 0) returns 1', async (r) => assert.equal(await r.waitTimeoutAsync(BOOKKEEP, 0), 1)],
  ['fencesUnlocked yields nothing', async (r) => assert.deepEqual([...r.fencesUnlocked(BOOKKEEP)], [])],
  ['copyFrom copies nothing', async (r) => {
    const dst = newResv();
    const g = guard(dst);
    g.copyFrom(r);
    const n = g.numFences;
    g.unlock();
    dst.put();
    assert.equal(n, 0);
  }],
];

for (const [what, query] of PEEKING_QUERIES) {
  test(`a fence its driver reports done (ops.signaled) counts as signalled without the lock: ${what}`, async (t) => {
    const refs = new Refs(t);
    let done = false;
    const r = refs.resv();
    const f = refs.adopt(DmaFence.init(ops({ signaled: () => done }), DmaFence.contextAlloc(), 1));
    add(r, [f, WRITE]);
    assert.equal(r.testSignaled(BOOKKEEP), false);
    done = true;
    await query(r);
    assert.equal(f.isSignaled(), true);
  });
}

/* ---- reserveFences ---- */

test('reserveFences(0) and negative counts are EINVAL and reserve nothing', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const g = guard(r);
  for (const n of [0, -1, -100]) assert.throws(() => g.reserveFences(n), { code: 'EINVAL' }, `reserveFences(${n})`);
  assert.throws(() => g.addFence(refs.fence('f'), WRITE), { code: 'EINVAL' }, 'nothing was reserved');
  assert.equal(g.numFences, 0);
  g.unlock();
});

test('an addFence that must append without a reserved slot is EINVAL and changes nothing', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const a = refs.fence('a');
  add(r, [a, WRITE]);
  const g = guard(r);
  const b = refs.fence('b');
  assert.throws(() => g.addFence(b, READ), { code: 'EINVAL' });
  assert.equal(g.numFences, 1);
  assert.deepEqual(slots(refs, g), ['a:WRITE']);
  g.unlock();
  assert.equal(r.testSignaled(BOOKKEEP), false);
  assert.equal(a.signal(), 0);
  assert.equal(r.testSignaled(BOOKKEEP), true, 'b was not added');
});

test('reserveFences(n) allows exactly n appends under this lock', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const g = guard(r);
  g.reserveFences(3);
  for (const name of ['a', 'b', 'c']) g.addFence(refs.fence(name), READ);
  assert.throws(() => g.addFence(refs.fence('d'), READ), { code: 'EINVAL' });
  g.reserveFences(1);
  g.addFence(refs.fence('e'), READ);
  assert.deepEqual(slots(refs, g), ['a:READ', 'b:READ', 'c:READ', 'e:READ']);
  g.unlock();
});

test('reservations do not survive an unlock', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const g = guard(r);
  g.reserveFences(4);
  g.addFence(refs.fence('a'), WRITE);
  g.unlock();
  const g2 = guard(r);
  assert.throws(() => g2.addFence(refs.fence('b'), WRITE), { code: 'EINVAL' });
  assert.deepEqual(slots(refs, g2), ['a:WRITE']);
  g2.reserveFences(1);
  g2.addFence(refs.fence('c'), WRITE);
  assert.deepEqual(slots(refs, g2), ['a:WRITE', 'c:WRITE']);
  g2.unlock();
});

test('growing the fence array keeps the unsignalled fences in order and drops the signalled ones', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const [a, b, c] = [refs.fence('a'), refs.fence('b'), refs.fence('c')];
  add(r, [a, WRITE], [b, READ], [c, BOOKKEEP]);
  b.signal();
  const g = guard(r);
  assert.deepEqual(slots(refs, g), ['a:WRITE', 'b:READ', 'c:BOOKKEEP'], 'a signalled fence stays until a reallocation');
  g.reserveFences(200); // far more than a small array holds: reallocates
  assert.deepEqual(slots(refs, g), ['a:WRITE', 'c:BOOKKEEP']);
  assert.equal(g.numFences, 2);
  for (let i = 0; i < 200; i++) g.addFence(refs.fence(`n${i}`), BOOKKEEP);
  assert.equal(g.numFences, 202);
  assert.throws(() => g.addFence(refs.fence('over'), BOOKKEEP), { code: 'EINVAL' });
  g.unlock();
});

/* ---- addFence: the slot-reuse rules (kernel-contract §3.3, current) ---- */

test('addFence reuses the slot of a signalled fence for a fence of another context', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const [a, b, c] = [refs.fence('a'), refs.fence('b'), refs.fence('c')];
  add(r, [a, WRITE], [b, READ]);
  a.signal();
  add(r, [c, BOOKKEEP]);
  assert.deepEqual(slotsOf(refs, r), ['c:BOOKKEEP', 'b:READ'], 'c took the signalled slot, with its own usage');
});

for (const oldU of USAGES) {
  for (const newU of USAGES) {
    if (newU <= oldU) {
      test(`same context, a later fence with usage ${NAME[newU]} over ${NAME[oldU]} (equal or stronger) replaces it in place`,
        (t) => {
          const refs = new Refs(t);
          const r = refs.resv();
          const ctx = DmaFence.contextAlloc();
          const other = refs.fence('x');
          const [f1, f2] = [refs.fence('f1', 1, ctx), refs.fence('f2', 2, ctx)];
          add(r, [f1, oldU], [other, KERNEL]);
          add(r, [f2, newU]);
          assert.deepEqual(slotsOf(refs, r), [`f2:${NAME[newU]}`, 'x:KERNEL']);
          assert.equal(r.testSignaled(BOOKKEEP), false);
          f2.signal();
          other.signal();
          assert.equal(r.testSignaled(BOOKKEEP), true, 'f1 is no longer in the object');
        });
    } else {
      test(`same context, a later fence with usage ${NAME[newU]} over ${NAME[oldU]} (weaker) is appended`, (t) => {
        const refs = new Refs(t);
        const r = refs.resv();
        const ctx = DmaFence.contextAlloc();
        const [f1, f2] = [refs.fence('f1', 1, ctx), refs.fence('f2', 2, ctx)];
        add(r, [f1, oldU]);
        add(r, [f2, newU]);
        assert.deepEqual(slotsOf(refs, r), [`f1:${NAME[oldU]}`, `f2:${NAME[newU]}`]);
      });
    }
  }
}

test('same context and usage, but the new fence is older: appended, the later one stays', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const ctx = DmaFence.contextAlloc();
  const [f5, f3] = [refs.fence('f5', 5, ctx), refs.fence('f3', 3, ctx)];
  add(r, [f5, WRITE]);
  add(r, [f3, WRITE]);
  assert.deepEqual(slotsOf(refs, r), ['f5:WRITE', 'f3:WRITE']);
});

test('same context: a fence at seqno 1 is later than one at 0xffffffff (32-bit wrap) and replaces it', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const ctx = DmaFence.contextAlloc();
  const [old, wrapped] = [refs.fence('old', 0xffffffff, ctx), refs.fence('wrapped', 1, ctx)];
  add(r, [old, READ]);
  add(r, [wrapped, READ]);
  assert.deepEqual(slotsOf(refs, r), ['wrapped:READ']);
});

test('the same fence added again with a stronger usage is promoted in place', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const f = refs.fence('f');
  add(r, [f, READ]);
  assert.equal(r.testSignaled(WRITE), true);
  add(r, [f, WRITE]);
  assert.deepEqual(slotsOf(refs, r), ['f:WRITE']);
  assert.equal(r.testSignaled(WRITE), false);
  add(r, [f, KERNEL]);
  assert.deepEqual(slotsOf(refs, r), ['f:KERNEL']);
});

test('the same fence added again with a weaker usage is appended: it appears twice, never demoted', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const f = refs.fence('f');
  add(r, [f, WRITE]);
  add(r, [f, BOOKKEEP]);
  assert.deepEqual(slotsOf(refs, r), ['f:WRITE', 'f:BOOKKEEP']);
  assert.equal(r.testSignaled(WRITE), false, 'still seen as a WRITE fence');
  assert.deepEqual(namesOf(refs, r.getFences(BOOKKEEP)), ['f', 'f']);
  f.signal();
  assert.equal(r.testSignaled(BOOKKEEP), true);
});

test('fences of different contexts are appended, whatever their usages and seqnos', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  add(r, [refs.fence('a', 9), WRITE]);
  add(r, [refs.fence('b', 1), WRITE]);
  add(r, [refs.fence('c', 100), KERNEL]);
  assert.deepEqual(slotsOf(refs, r), ['a:WRITE', 'b:WRITE', 'c:KERNEL']);
});

test('containers are refused with EINVAL and change nothing: an array, a chain, a singleton array', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const [a, b] = [refs.fence('a'), refs.fence('b')];
  add(r, [a, WRITE], [b, READ]);
  const array = refs.adopt(dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(), 1, false));
  const chain = refs.adopt(dmaFenceChainInit(null, refs.fence('c'), 1));
  const singleton = refs.adopt(r.getSingleton(READ)!);
  assert.equal(isDmaFenceArray(singleton), true);
  const g = guard(r);
  g.reserveFences(3);
  for (const container of [array, chain, singleton]) {
    for (const u of USAGES) assert.throws(() => g.addFence(container, u), { code: 'EINVAL' });
  }
  assert.deepEqual(slots(refs, g), ['a:WRITE', 'b:READ']);
  g.unlock();
});

/* ---- replaceFences ---- */

test('replaceFences puts the fence into every slot of that context with the new usage, without a reservation', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const ctx = DmaFence.contextAlloc();
  const [a1, b, a2] = [refs.fence('a1', 1, ctx), refs.fence('b'), refs.fence('a2', 2, ctx)];
  add(r, [a1, WRITE], [b, READ], [a2, BOOKKEEP]); // a2 is weaker: appended
  const rep = refs.fence('rep');
  const g = guard(r);
  g.replaceFences(ctx, rep, KERNEL);
  assert.deepEqual(slots(refs, g), ['rep:KERNEL', 'b:READ', 'rep:KERNEL']);
  g.replaceFences(DmaFence.contextAlloc(), refs.fence('unused'), KERNEL); // no fence of that context: nothing
  assert.deepEqual(slots(refs, g), ['rep:KERNEL', 'b:READ', 'rep:KERNEL']);
  g.unlock();
  assert.equal(r.testSignaled(KERNEL), false);
  rep.signal();
  assert.equal(r.testSignaled(WRITE), true, 'a1 and a2 were dropped');
  assert.equal(r.testSignaled(READ), false);
});

/* ---- getSingleton ---- */

test('getSingleton: null with no fence ≤ usage, that same fence for one, an array of the unsignalled ones for more',
  (t) => {
    const refs = new Refs(t);
    const r = refs.resv();
    const [w, rd, bk, done] = [refs.fence('w'), refs.fence('rd'), refs.fence('bk'), refs.fence('done')];
    add(r, [done, WRITE], [w, WRITE], [rd, READ], [bk, BOOKKEEP]);
    done.signal();
    assert.equal(r.getSingleton(KERNEL), null);
    const one = r.getSingleton(WRITE);
    assert.equal(one, w, 'the fence itself (this thread\'s view)');
    one!.put();
    for (const [u, members] of [[READ, ['w', 'rd']], [BOOKKEEP, ['w', 'rd', 'bk']]] as const) {
      const s = refs.adopt(r.getSingleton(u)!);
      assert.equal(isDmaFenceArray(s), true);
      assert.equal(s.seqno, 1n);
      assert.ok(![w, rd, bk, done].some((f) => f.context === s.context), 'a new context');
      assert.deepEqual(namesOf(refs, dmaFenceArrayMembers(s)), members);
      assert.equal(s.isSignaled(), false);
    }
    const s = refs.adopt(r.getSingleton(READ)!);
    w.signal();
    assert.equal(s.isSignaled(), false, 'signals on all members');
    rd.signal();
    assert.equal(s.isSignaled(), true);
    assert.equal(r.getSingleton(READ), null);
  });

/* ---- copyFrom ---- */

test('copyFrom makes the destination\'s fences a snapshot of the source\'s unsignalled fences with their usages',
  (t) => {
    const refs = new Refs(t);
    const src = refs.resv();
    const dst = refs.resv();
    const [a, b, c, k, d, e] = ['a', 'b', 'c', 'k', 'd', 'e'].map((n) => refs.fence(n)) as
      [DmaFence, DmaFence, DmaFence, DmaFence, DmaFence, DmaFence];
    add(src, [a, WRITE], [b, READ], [c, BOOKKEEP], [k, KERNEL]);
    b.signal();
    add(dst, [d, READ], [e, WRITE]);
    const g = guard(dst);
    g.copyFrom(src); // src is not locked
    assert.deepEqual(slots(refs, g), ['a:WRITE', 'c:BOOKKEEP', 'k:KERNEL']);
    g.unlock();
    assert.deepEqual(slotsOf(refs, src), ['a:WRITE', 'b:READ', 'c:BOOKKEEP', 'k:KERNEL'], 'the source is unchanged');
    d.signal();
    e.signal();
    assert.equal(dst.testSignaled(BOOKKEEP), false);
    a.signal();
    c.signal();
    k.signal();
    assert.equal(dst.testSignaled(BOOKKEEP), true);
  });

test('copyFrom an empty source empties the destination', (t) => {
  const refs = new Refs(t);
  const src = refs.resv();
  const dst = refs.resv();
  add(dst, [refs.fence('d'), WRITE]);
  const g = guard(dst);
  g.copyFrom(src);
  assert.deepEqual(slots(refs, g), []);
  assert.equal(g.numFences, 0);
  g.unlock();
  assert.equal(dst.testSignaled(BOOKKEEP), true);
});

test('after copyFrom, reserved appends beyond the copied fences are all kept', (t) => {
  const refs = new Refs(t);
  const src = refs.resv();
  const dst = refs.resv();
  add(src, [refs.fence('s'), WRITE]);
  const g = guard(dst);
  g.copyFrom(src);
  g.reserveFences(10);
  const names = Array.from({ length: 10 }, (_, i) => `n${i}`);
  for (const n of names) g.addFence(refs.fence(n), READ);
  assert.equal(g.numFences, 11);
  assert.deepEqual(slots(refs, g), ['s:WRITE', ...names.map((n) => `${n}:READ`)]);
  g.unlock();
  assert.equal(namesOf(refs, dst.getFences(READ)).length, 11);
});

/* ---- the unlocked iterator restarts ---- */

test('fencesUnlocked restarts when the array is replaced meanwhile; restarted marks the first fence of every pass',
  (t) => {
    const refs = new Refs(t);
    const r = refs.resv();
    const other = refs.resv();
    add(r, [refs.fence('a1'), WRITE], [refs.fence('a2'), WRITE], [refs.fence('a3'), WRITE]);
    add(other, [refs.fence('b1'), READ], [refs.fence('b2'), READ]);
    const trace: string[] = [];
    let acc: string[] = [];
    let replaced = false;
    for (const e of r.fencesUnlocked(BOOKKEEP)) {
      if (e.restarted) acc = []; // accumulators reset on a (re)start
      const name = refs.names.get(e.fence) ?? '?';
      acc.push(name);
      trace.push(`${name}${e.restarted ? '!' : ''}`);
      if (!replaced) {
        replaced = true;
        const g = guard(r);
        g.copyFrom(other); // replaces r's array while the walk is in progress
        g.unlock();
      }
    }
    assert.deepEqual(trace, ['a1!', 'b1!', 'b2']);
    assert.deepEqual(acc, ['b1', 'b2']);
  });

/* ---- references held by readers ---- */

test('fences yielded by fencesUnlocked and returned by getFences stay valid after the object drops them', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
  const context = f.context;
  add(r, [f, WRITE]);
  f.put(); // only the object holds it now
  const replacement = refs.fence('replacement');
  const kept = r.getFences(WRITE);
  let seen = 0;
  for (const e of r.fencesUnlocked(WRITE)) {
    const g = guard(r);
    g.replaceFences(context, replacement, WRITE); // the object drops its reference
    g.unlock();
    assert.equal(e.fence.context, context, 'the iterator\'s reference keeps it alive');
    assert.equal(e.fence.isSignaled(), false);
    seen++;
  }
  assert.equal(seen, 1);
  assert.equal(kept.length, 1);
  assert.equal(kept[0]!.context, context);
  assert.equal(kept[0]!.signal(), 0, 'getFences\' reference keeps it usable');
  const withKept = liveObjects();
  kept[0]!.put();
  assert.equal(liveObjects(), withKept - 1, 'the last reference freed it');
});

/* ---- describe ---- */

test('describe() prints one line per fence of usage ≤ READ: "\\t<usage> fence:<driver> <timeline> seq <n> (un)signalled"',
  (t) => {
    const refs = new Refs(t);
    const r = refs.resv();
    const [k, w, rd, bk] = [refs.fence('k', 1), refs.fence('w', 2), refs.fence('rd', 3), refs.fence('bk', 4)];
    add(r, [k, KERNEL], [w, WRITE], [rd, READ], [bk, BOOKKEEP]);
    k.signal();
    const g = guard(r);
    const lines = g.describe().split('\n');
    assert.equal(lines.pop(), '', 'every line ends with a newline');
    assert.deepEqual(lines, [
      '\tkernel fence:resv-drv resv-tl seq 1 signalled',
      '\twrite fence:resv-drv resv-tl seq 2 unsignalled',
      '\tread fence:resv-drv resv-tl seq 3 unsignalled',
    ]);
    g.unlock();
  });

/* ---- the guard ---- */

test('every operation of a guard after its unlock is EPERM, even once the object is locked again', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const src = refs.resv();
  const f = refs.fence('f');
  const g = guard(r);
  g.reserveFences(1);
  g.unlock();
  const misuse = (stale: DmaResvLocked): void => {
    assert.throws(() => stale.reserveFences(1), { code: 'EPERM' });
    assert.throws(() => stale.addFence(f, WRITE), { code: 'EPERM' });
    assert.throws(() => stale.replaceFences(f.context, f, WRITE), { code: 'EPERM' });
    assert.throws(() => [...stale.fences(BOOKKEEP)], { code: 'EPERM' });
    assert.throws(() => stale.copyFrom(src), { code: 'EPERM' });
    assert.throws(() => stale.describe(), { code: 'EPERM' });
    assert.throws(() => stale.unlock(), { code: 'EPERM' });
  };
  misuse(g);
  assert.equal(r.isLocked(), false);
  const g2 = guard(r);
  misuse(g);
  assert.equal(g2.numFences, 0);
  assert.equal(r.locked(), g2);
  g2.unlock();
});

test('locked() is EPERM unless this handle holds the lock', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  assert.throws(() => r.locked(), { code: 'EPERM' });
  const g = guard(r);
  assert.equal(r.locked(), g);
  assert.equal(g.resv, r);
  g.unlock();
  assert.throws(() => r.locked(), { code: 'EPERM' });
});

test('put() of a reservation object while this handle holds its lock is EBUSY and changes nothing', (t) => {
  const refs = new Refs(t);
  const r = newResv();
  const g = guard(r);
  g.reserveFences(1);
  assert.throws(() => r.put(), { code: 'EBUSY' });
  assert.equal(r.isLocked(), true);
  g.addFence(refs.fence('f'), WRITE);
  g.unlock();
  assert.equal(r.testSignaled(WRITE), false);
  r.put();
  assert.throws(() => r.lock(null), { code: 'EINVAL' }, 'a handle used after put()');
});

test('receive() of a token that does not carry a reservation object is EINVAL', (t) => {
  const refs = new Refs(t);
  assert.throws(() => DmaResv.receive({}), { code: 'EINVAL' });
  assert.throws(() => DmaResv.receive(refs.fence('f').share()), { code: 'EINVAL' });
});

test('a second handle from share()/receive() in the same thread sees the same fences and lock', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const again = DmaResv.receive(r.share());
  refs.onEnd(() => again.put());
  const f = refs.fence('f');
  add(again, [f, READ]);
  assert.equal(r.testSignaled(READ), false);
  const g = guard(r);
  assert.equal(again.isLocked(), true);
  assert.throws(() => again.locked(), { code: 'EPERM' }, 'the lock is held through the other handle');
  assert.equal(again.trylock(), null);
  g.unlock();
  f.signal();
  assert.equal(again.testSignaled(BOOKKEEP), true);
});

/* ---- the ww-mutex of the reservation object ---- */

test('lock() twice with one acquire context returns -EALREADY; locked() returns the guard', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const ctx = refs.ctx();
  const g = guard(r, ctx);
  assert.equal(r.lock(ctx), EALREADY);
  assert.equal(ctx.held, 1);
  assert.equal(r.locked(), g);
  assert.equal(r.mutex.lockingCtx(), ctx);
  assert.equal(r.mutex.holderStamp, ctx.stamp);
  g.unlock();
  assert.equal(ctx.held, 0);
  assert.equal(r.isLocked(), false);
  ctx.fini();
});

test('a younger context holding a resv gets -EDEADLK at once for a resv an older context holds', (t) => {
  const refs = new Refs(t);
  const [a, b] = [refs.resv(), refs.resv()];
  const older = refs.ctx();
  const younger = refs.ctx();
  const gb = guard(b, older);
  const ga = guard(a, younger);
  assert.equal(b.lock(younger), EDEADLK);
  assert.equal(younger.held, 1, 'dying takes nothing and releases nothing');
  assert.equal(b.locked(), gb);
  ga.unlock();
  gb.unlock();
  older.fini();
  younger.fini();
});

test('the back-off protocol on resvs: unlock all, lockSlow the contended one, lock the rest; all end up held', (t) => {
  const refs = new Refs(t);
  const [a, b, c] = [refs.resv(), refs.resv(), refs.resv()];
  const older = refs.ctx();
  const younger = refs.ctx();
  const gbOld = guard(b, older);
  // The younger transaction wants a, b, c in that order.
  const ga = guard(a, younger);
  assert.equal(b.lock(younger), EDEADLK);
  ga.unlock();
  assert.equal(younger.held, 0);
  // The older transaction gets what the younger let go of, then finishes.
  const gaOld = guard(a, older);
  gaOld.unlock();
  gbOld.unlock();
  older.fini();
  const guards = [b.lockSlow(younger)];
  for (const r of [a, b, c]) {
    const g = r.lock(younger);
    if (g instanceof DmaResvLocked) guards.push(g);
    else assert.equal(g, EALREADY);
  }
  younger.done();
  assert.equal(younger.held, 3);
  assert.equal(guards.length, 3);
  for (const r of [a, b, c]) {
    assert.equal(r.mutex.lockingCtx(), younger);
    const g = r.locked();
    g.reserveFences(1); // the guards work
    g.unlock();
  }
  younger.fini();
});

test('trylock() returns a guard when free and null when held; lock(null) is a plain mutex', (t) => {
  const refs = new Refs(t);
  const r = refs.resv();
  const g = r.trylock();
  assert.ok(g instanceof DmaResvLocked);
  assert.equal(r.mutex.lockingCtx(), null);
  assert.equal(r.trylock(), null);
  g.unlock();
  const p = guard(r, null);
  assert.equal(r.mutex.holderStamp, 0n);
  assert.equal(r.trylock(), null);
  p.unlock();
  assert.equal(r.isLocked(), false);
});

/* ---- thread-private fences become shared ---- */

test('a thread-private fence (DmaFence.init) added to a resv is visible to another thread, pending until signalled',
  async (t) => {
    const refs = new Refs(t);
    const w = new ResvWorker();
    refs.onEnd(() => void w.worker.terminate());
    const r = refs.resv();
    const f = refs.fence('private', 7);
    add(r, [f, WRITE]);
    await w.call({ op: 'receiveResv', resv: 'r', token: r.share() });
    assert.equal(await w.call({ op: 'testSignaled', resv: 'r', usage: WRITE }), false);
    assert.equal(await w.call({ op: 'testSignaled', resv: 'r', usage: KERNEL }), true);
    assert.deepEqual(await w.call<SeenFence[]>({ op: 'fencesUnlocked', resv: 'r', usage: BOOKKEEP }), [
      { context: f.context, seqno: 7n, usage: WRITE, restarted: true },
    ]);
    assert.equal(await w.call({ op: 'waitTimeout', resv: 'r', usage: READ, timeoutMs: 0 }), 0);
    assert.equal(f.signal(), 0);
    assert.equal(await w.call({ op: 'testSignaled', resv: 'r', usage: BOOKKEEP }), true);
    assert.equal(await w.call({ op: 'waitTimeout', resv: 'r', usage: READ, timeoutMs: 0 }), 1);
    await w.call({ op: 'putResv', resv: 'r' });
    await w.terminate();
  });

/* ---- leak check ---- */

test('no objects leaked by this file (liveObjects() back to the baseline)', async () => {
  assert.equal(await pollLiveObjects(BASELINE), BASELINE);
});
