/**
 * Reservation-object (dma_resv) and ww-mutex benchmarks, each against the
 * baseline a user would otherwise pick.
 *
 * 1. reserve + add + testSignaled on one object, single thread: per operation
 *    lock(null) → reserveFences(1) → addFence(new fence of one context, WRITE) →
 *    unlock → testSignaled(WRITE); the uncontended add+test path (the lock taken
 *    once per round); and the same with one fence re-added (no fence made per
 *    operation). Floor: a plain-JS reservation object (an array of
 *    {fence, usage}, the same replacement rule) with plain-JS fences.
 * 2. Iteration over N fences (N = 4, 64): locked `fences`, `fencesUnlocked`,
 *    `getFences` (+ put), against a loop over the plain-JS object's array.
 * 3. Uncontended lock + unlock of a DmaResv (null context, a context, a whole
 *    one-lock transaction, trylock) and of a WwMutex, against a boolean flag and
 *    a raw Atomics compareExchange/store spinlock on a SharedArrayBuffer.
 * 4. Contended lock: the main thread and one worker lock the same DmaResv (null
 *    context), increment a shared counter, unlock; against a raw futex-style
 *    Atomics mutex (CAS + wait/notify), with and without the spin dmabuf does.
 *    The counter is checked after every batch.
 *
 * Run through bench/run.ts, or alone: `node build-test/bench/resv.bench.js [--quick]`.
 */
import { pathToFileURL } from 'node:url';
import {
  DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_WRITE, DmaFence, DmaResv, WwAcquireCtx, WwMutex, type DmaFenceOps,
  type DmaResvLocked, type DmaResvUsage,
} from 'dmabuf';
import {
  absolute, bench, count, group, publish, ratio, suite, wants, wantsAny, type BenchOptions,
  type Result,
} from './harness.js';
import { Peer } from './peer.js';
import {
  C_ACK, C_COUNTER, C_DONE, C_ERROR, C_GO, C_LAST, C_N, C_STARTED, C_STOP, CTL_BYTES, futexSection, MAIN_ID,
  resvSection, SPIN_LOADS, type Reply, type Section, type Start,
} from './workers/resv-worker.js';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const OPS: DmaFenceOps = { getDriverName: () => 'bench', getTimelineName: () => 'resv-bench' };
const WRITE = DMA_RESV_USAGE_WRITE;
const BOOKKEEP = DMA_RESV_USAGE_BOOKKEEP;

/** A lock taken with a null context cannot fail; narrow the guard-or-errno result. */
function guard(r: DmaResvLocked | number): DmaResvLocked {
  if (typeof r === 'number') throw new Error(`dma_resv_lock returned ${r}`);
  return r;
}

/* ---- the floor: a plain-JS reservation object ---- */

/** A minimal single-thread fence in plain JS (number context and 32-bit seqno). */
class PlainFence {
  readonly context: number;
  readonly seqno: number;
  signaled = false;

  constructor(context: number, seqno: number) {
    this.context = context;
    this.seqno = seqno;
  }

  /** dma_fence_is_later_or_same (32-bit wrap-around). */
  isLaterOrSame(other: PlainFence): boolean {
    return this === other || ((this.seqno - other.seqno) | 0) > 0;
  }
}

interface PlainEntry {
  fence: PlainFence;
  usage: DmaResvUsage;
}

/** A plain-JS reservation object: the same reserve/add rules, a boolean for a lock. */
class PlainResv {
  readonly entries: PlainEntry[] = [];
  #limit = 0;
  #locked = false;

  lock(): void {
    if (this.#locked) throw new Error('plain resv: already locked');
    this.#locked = true;
  }

  unlock(): void {
    if (!this.#locked) throw new Error('plain resv: not locked');
    this.#limit = this.entries.length; // reservations end with the lock, as in dmabuf
    this.#locked = false;
  }

  reserveFences(n: number): void {
    if (!this.#locked) throw new Error('plain resv: not locked');
    this.#limit = Math.max(this.#limit, this.entries.length + n);
  }

  /** Reuse the first slot that is signalled, or of the same context with usage ≥ and an earlier fence; else append. */
  addFence(fence: PlainFence, usage: DmaResvUsage): void {
    if (!this.#locked) throw new Error('plain resv: not locked');
    const es = this.entries;
    for (let i = 0; i < es.length; i++) {
      const e = es[i]!;
      const old = e.fence;
      if ((old.context === fence.context && e.usage >= usage && fence.isLaterOrSame(old)) || old.signaled) {
        e.fence = fence;
        e.usage = usage;
        return;
      }
    }
    if (es.length >= this.#limit) throw new Error('plain resv: no fence slot reserved');
    es.push({ fence, usage });
  }

  testSignaled(usage: DmaResvUsage): boolean {
    for (const e of this.entries) if (e.usage <= usage && !e.fence.signaled) return false;
    return true;
  }
}

/* ---- 1. reserve + add + testSignaled ---- */

const ADD: BenchOptions = { iterations: 100_000, warmup: 20_000, rounds: 7, quickIterations: 2_000 };
const ADD_BATCH: BenchOptions = { ...ADD, batch: true };

const A = {
  full: '(a) lock(null) + reserveFences(1) + addFence(new fence) + unlock + testSignaled',
  path: '(b) uncontended add+test path: reserveFences(1) + addFence(new fence) + testSignaled, lock held',
  same: '(c) same as (b), re-adding one fence (no fence made per op)',
  floorFull: 'floor (a): plain JS resv + fence, same steps',
  floorPath: 'floor (b): plain JS resv + fence, lock held',
  floorSame: 'floor (c): plain JS resv, one fence re-added',
} as const;

async function addAndTest(): Promise<void> {
  group('reserve + add + testSignaled, one object, single thread (time per op)');
  if (!wantsAny(Object.values(A))) return;
  const ctx = DmaFence.contextAlloc(1);
  const pctx = 1;
  let pending = 0; // every testSignaled(WRITE) must see the pending fence just added
  const expectPending = (signaled: boolean): void => {
    if (signaled) throw new Error('testSignaled(WRITE) true with a pending WRITE fence');
    pending++;
  };

  const resv = DmaResv.create();
  let a: Result | undefined;
  let b: Result | undefined;
  let c: Result | undefined;
  try {
    a = await bench(A.full, (i) => {
      const f = DmaFence.init(OPS, ctx, i);
      const g = guard(resv.lock(null));
      g.reserveFences(1);
      g.addFence(f, WRITE);
      g.unlock();
      f.put(); // the object keeps its own reference
      expectPending(resv.testSignaled(WRITE));
    }, ADD);
    let seq = 1 << 20; // later than anything (a) added
    b = await bench(A.path, (n) => {
      const g = guard(resv.lock(null));
      for (let k = 0; k < n; k++) {
        const f = DmaFence.init(OPS, ctx, seq++);
        g.reserveFences(1);
        g.addFence(f, WRITE);
        f.put();
        expectPending(resv.testSignaled(WRITE));
      }
      g.unlock();
    }, ADD_BATCH);
    const one = DmaFence.init(OPS, ctx, 1 << 30);
    try {
      c = await bench(A.same, (n) => {
        const g = guard(resv.lock(null));
        for (let k = 0; k < n; k++) {
          g.reserveFences(1);
          g.addFence(one, WRITE);
          expectPending(resv.testSignaled(WRITE));
        }
        g.unlock();
      }, ADD_BATCH);
    } finally {
      one.put();
    }
    if (wants(A.full) || wants(A.path) || wants(A.same)) {
      const g = guard(resv.lock(null));
      const n = g.numFences;
      g.unlock();
      if (n !== 1) throw new Error(`(a)-(c): ${n} fences in the object, expected 1 (each add replaces the last)`);
    }
  } finally {
    resv.put();
  }

  const pr = new PlainResv();
  const fa = await bench(A.floorFull, (i) => {
    const f = new PlainFence(pctx, i);
    pr.lock();
    pr.reserveFences(1);
    pr.addFence(f, WRITE);
    pr.unlock();
    expectPending(pr.testSignaled(WRITE));
  }, ADD);
  let pseq = 1 << 20;
  const fb = await bench(A.floorPath, (n) => {
    pr.lock();
    for (let k = 0; k < n; k++) {
      const f = new PlainFence(pctx, pseq++);
      pr.reserveFences(1);
      pr.addFence(f, WRITE);
      expectPending(pr.testSignaled(WRITE));
    }
    pr.unlock();
  }, ADD_BATCH);
  const pone = new PlainFence(pctx, 1 << 30);
  const fc = await bench(A.floorSame, (n) => {
    pr.lock();
    for (let k = 0; k < n; k++) {
      pr.reserveFences(1);
      pr.addFence(pone, WRITE);
      expectPending(pr.testSignaled(WRITE));
    }
    pr.unlock();
  }, ADD_BATCH);
  if (pr.entries.length > 1) throw new Error(`floor: ${pr.entries.length} entries, expected 1`);

  ratio('(a)/floor (a)', a, fa);
  ratio('(b)/floor (b) uncontended add+test path', b, fb, { op: '<=', value: 3 });
  ratio('(c)/floor (c) without making a fence per op', c, fc);
}

/* ---- 2. iteration over N fences ---- */

const ITER_OPTS = (n: number): BenchOptions => n <= 4
  ? { iterations: 50_000, warmup: 10_000, rounds: 7, quickIterations: 1_000 }
  : { iterations: 5_000, warmup: 1_000, rounds: 7, quickIterations: 100 };

async function iterate(n: number): Promise<void> {
  group(`iteration over ${n} fences (time per walk over all ${n})`);
  const names = {
    locked: `locked fences(BOOKKEEP), N=${n}`,
    unlocked: `fencesUnlocked(BOOKKEEP), N=${n}`,
    get: `getFences(BOOKKEEP) + put each, N=${n}`,
    floor: `floor: for-of over a plain JS resv's array, N=${n}`,
  };
  if (!wantsAny(Object.values(names))) return;

  // N pending fences of N contexts (so none replaces another), usages cycling KERNEL..BOOKKEEP.
  // The object holds the only references, as after a driver dropped its own.
  const ctx0 = DmaFence.contextAlloc(n);
  const resv = DmaResv.create();
  const pr = new PlainResv();
  let sum = 0;
  const expect = (got: number, what: string): void => {
    if (got !== n) throw new Error(`${what}: visited ${got} fences, expected ${n}`);
  };
  try {
    {
      const g = guard(resv.lock(null));
      g.reserveFences(n);
      pr.lock();
      pr.reserveFences(n);
      for (let k = 0; k < n; k++) {
        const f = DmaFence.init(OPS, ctx0 + BigInt(k), 1);
        g.addFence(f, (k % 4) as DmaResvUsage);
        f.put();
        pr.addFence(new PlainFence(1000 + k, 1), (k % 4) as DmaResvUsage);
      }
      g.unlock();
      pr.unlock();
    }

    let locked: Result | undefined;
    if (wants(names.locked)) {
      const g = guard(resv.lock(null));
      try {
        locked = await bench(names.locked, () => {
          let seen = 0;
          for (const e of g.fences(BOOKKEEP)) {
            seen++;
            sum += e.usage;
          }
          expect(seen, names.locked);
        }, ITER_OPTS(n));
      } finally {
        g.unlock();
      }
    }
    const unlocked = await bench(names.unlocked, () => {
      let seen = 0;
      for (const e of resv.fencesUnlocked(BOOKKEEP)) {
        seen++;
        sum += e.usage;
      }
      expect(seen, names.unlocked);
    }, ITER_OPTS(n));
    const get = await bench(names.get, () => {
      const fs = resv.getFences(BOOKKEEP);
      expect(fs.length, names.get);
      for (const f of fs) f.put();
    }, ITER_OPTS(n));
    const floor = await bench(names.floor, () => {
      let seen = 0;
      for (const e of pr.entries) {
        if (e.usage > BOOKKEEP || e.fence.signaled) continue;
        seen++;
        sum += e.usage;
      }
      expect(seen, names.floor);
    }, ITER_OPTS(n));
    if (sum < 0) console.log(sum); // keep `sum` alive

    ratio(`locked fences/floor, N=${n}`, locked, floor);
    ratio(`fencesUnlocked/floor, N=${n}`, unlocked, floor);
    ratio(`getFences/floor, N=${n}`, get, floor);
  } finally {
    resv.put();
  }
}

/* ---- 3. uncontended lock + unlock ---- */

const LOCK: BenchOptions = { iterations: 200_000, warmup: 20_000, rounds: 7, quickIterations: 2_000 };

const L = {
  resvNull: '(a) DmaResv lock(null) + unlock',
  resvCtx: '(b) DmaResv lock(ctx) + unlock, one WwAcquireCtx reused',
  resvTx: '(c) DmaResv one-lock transaction: new WwAcquireCtx + lock + done + unlock + fini',
  resvTry: '(d) DmaResv trylock + unlock',
  wwNull: '(e) WwMutex lock(null) + unlock',
  wwCtx: '(f) WwMutex lock(ctx) + unlock, one WwAcquireCtx reused',
  flag: 'floor: plain JS boolean-flag lock + unlock',
  spin: 'floor: raw Atomics compareExchange/store spinlock (SharedArrayBuffer)',
} as const;

async function uncontended(): Promise<void> {
  group('uncontended lock + unlock, single thread (time per pair)');
  if (!wantsAny(Object.values(L))) return;
  // Every variant increments a counter inside the critical section, so all do the same work.
  let inside = 0;
  const resv = DmaResv.create();
  const ww = WwMutex.create();
  const ctx = new WwAcquireCtx();
  let a: Result | undefined;
  let b: Result | undefined;
  let c: Result | undefined;
  let d: Result | undefined;
  let e: Result | undefined;
  let f: Result | undefined;
  try {
    a = await bench(L.resvNull, () => {
      const g = guard(resv.lock(null));
      inside++;
      g.unlock();
    }, LOCK);
    b = await bench(L.resvCtx, () => {
      const g = guard(resv.lock(ctx));
      inside++;
      g.unlock();
    }, LOCK);
    c = await bench(L.resvTx, () => {
      const t = new WwAcquireCtx();
      const g = guard(resv.lock(t));
      t.done();
      inside++;
      g.unlock();
      t.fini();
    }, LOCK);
    d = await bench(L.resvTry, () => {
      const g = resv.trylock();
      if (g === null) throw new Error('trylock failed on a free object');
      inside++;
      g.unlock();
    }, LOCK);
    e = await bench(L.wwNull, () => {
      if (ww.lock(null) !== 0) throw new Error('ww_mutex_lock failed');
      inside++;
      ww.unlock();
    }, LOCK);
    f = await bench(L.wwCtx, () => {
      if (ww.lock(ctx) !== 0) throw new Error('ww_mutex_lock failed');
      inside++;
      ww.unlock();
    }, LOCK);
  } finally {
    ctx.fini();
    ww.put();
    resv.put();
  }
  const flag = { locked: false };
  const fl = await bench(L.flag, () => {
    if (flag.locked) throw new Error('flag lock already held');
    flag.locked = true;
    inside++;
    flag.locked = false;
  }, LOCK);
  const sl = new Int32Array(new SharedArrayBuffer(64));
  const sp = await bench(L.spin, () => {
    while (Atomics.compareExchange(sl, 0, 0, 1) !== 0);
    inside++;
    Atomics.store(sl, 0, 0);
  }, LOCK);
  if (inside < 0) console.log(inside); // keep it alive

  ratio('(a)/raw spinlock DmaResv lock(null)', a, sp);
  ratio('(b)/raw spinlock DmaResv lock(ctx)', b, sp);
  ratio('(c)/raw spinlock one-lock transaction', c, sp);
  ratio('(d)/raw spinlock DmaResv trylock', d, sp);
  ratio('(e)/raw spinlock WwMutex lock(null)', e, sp);
  ratio('(f)/raw spinlock WwMutex lock(ctx)', f, sp);
  ratio('(a)/boolean flag DmaResv lock(null)', a, fl);
  ratio('raw spinlock/boolean flag', sp, fl);
}

/* ---- 4. contended lock, main thread + one worker ---- */

const CONTENDED: BenchOptions = { iterations: 40_000, warmup: 10_000, rounds: 7, batch: true, quickIterations: 1_000 };

const C = {
  resv: '(a) DmaResv lock(null) + counter++ + unlock, 2 threads',
  futex: '(b) baseline: raw Atomics futex mutex (CAS + wait/notify), 2 threads',
  futexSpin: `(c) baseline: raw futex mutex, ${SPIN_LOADS} loads of spin before wait, 2 threads`,
} as const;

/** Block until ctl[at] !== prev; throws if the worker failed. */
function waitChange(ctl: Int32Array, at: number, prev: number): number {
  for (;;) {
    const v = Atomics.load(ctl, at);
    if (Atomics.load(ctl, C_ERROR)) throw new Error('worker loop failed');
    if (v !== prev) return v;
    Atomics.wait(ctl, at, prev, 1000);
  }
}

/**
 * Run `start` in a fresh worker; each batch of n pairs is split between this
 * thread (`mine`) and the worker, which start together at a barrier. The counter
 * must grow by exactly n per batch, and by every pair both sides made in total.
 */
async function contend(name: string, ctl: Int32Array, start: Start, mine: Section): Promise<Result | undefined> {
  if (!wants(name)) return undefined;
  const peer = new Peer<Start, Reply>(new URL('./workers/resv-worker.js', import.meta.url), 'resv worker');
  let gen = 0;
  let mainPairs = 0;
  let handoffs = 0;
  let res: Result | undefined;
  try {
    peer.post(start);
    const ready = await peer.next();
    if (ready.ev !== 'ready') throw new Error(`${name}: worker failed to start: ${ready.error ?? '?'}`);
    try {
      res = await bench(name, (n) => {
        const theirs = n >> 1;
        const before = ctl[C_COUNTER]!;
        const prevStarted = Atomics.load(ctl, C_STARTED);
        const prevDone = Atomics.load(ctl, C_DONE);
        gen++;
        Atomics.store(ctl, C_N, theirs);
        Atomics.store(ctl, C_GO, gen);
        Atomics.notify(ctl, C_GO);
        if (waitChange(ctl, C_STARTED, prevStarted) !== gen) throw new Error('worker out of step');
        Atomics.store(ctl, C_ACK, gen); // both go now
        handoffs += mine(n - theirs);
        mainPairs += n - theirs;
        if (waitChange(ctl, C_DONE, prevDone) !== gen) throw new Error('worker out of step');
        const after = Atomics.load(ctl, C_COUNTER);
        if (after - before !== n) throw new Error(`${name}: counter grew by ${after - before} for ${n} pairs: lost updates`);
      }, CONTENDED);
    } finally {
      Atomics.store(ctl, C_STOP, 1);
      Atomics.add(ctl, C_GO, 1);
      Atomics.notify(ctl, C_GO);
    }
    const done = await peer.next();
    if (done.ev !== 'done') throw new Error(`${name}: unexpected reply ${done.ev}`);
    if (done.error !== undefined) throw new Error(`${name}: worker failed: ${done.error}`);
    const total = mainPairs + done.pairs;
    if (ctl[C_COUNTER] !== total) throw new Error(`${name}: counter ${ctl[C_COUNTER]}, but ${total} pairs were made`);
    handoffs += done.handoffs;
    if (res) count(`${name.slice(0, 3)} lock hand-offs between threads per 1,000 pairs`, Math.round((handoffs / total) * 1000), 'hand-offs');
    return res;
  } finally {
    await peer.exited();
  }
}

function freshCtl(): Int32Array {
  const ctl = new Int32Array(new SharedArrayBuffer(CTL_BYTES));
  ctl[C_LAST] = 0;
  return ctl;
}

async function contended(): Promise<void> {
  group('contended lock, main thread + 1 worker (wall time / lock+unlock pairs of both threads)');
  if (!wantsAny(Object.values(C))) return;
  let a: Result | undefined;
  if (wants(C.resv)) {
    const resv = DmaResv.create();
    try {
      const ctl = freshCtl();
      a = await contend(C.resv, ctl, { cmd: 'start', mode: 'resv', ctl: ctl.buffer as SharedArrayBuffer, resv: resv.share() },
        resvSection(resv, ctl, MAIN_ID));
    } finally {
      resv.put();
    }
  }
  await turn();
  const ctlB = freshCtl();
  const b = await contend(C.futex, ctlB, { cmd: 'start', mode: 'futex', ctl: ctlB.buffer as SharedArrayBuffer },
    futexSection(ctlB, MAIN_ID, 0));
  await turn();
  const ctlC = freshCtl();
  const c = await contend(C.futexSpin, ctlC, { cmd: 'start', mode: 'futex-spin', ctl: ctlC.buffer as SharedArrayBuffer },
    futexSection(ctlC, MAIN_ID, SPIN_LOADS));
  absolute('(a) per lock+unlock pair under contention', a);
  ratio('(a)/(b) DmaResv vs raw futex mutex', a, b);
  ratio('(a)/(c) DmaResv vs raw futex mutex with the same spin', a, c);
}

/* ---- entry points ---- */

/** Run every reservation-object benchmark (bench/run.ts calls this). */
export async function run(): Promise<void> {
  suite('resv');
  console.log('resv');
  await addAndTest();
  await turn();
  await iterate(4);
  await turn();
  await iterate(64);
  await turn();
  await uncontended();
  await turn();
  await contended();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run();
  console.log(publish());
}
