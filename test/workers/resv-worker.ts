/**
 * Worker of test/dma-resv.test.ts and test/dma-resv-threads.test.ts, driven by
 * messages: the test posts a `ResvRequest` ({ req, op, ... }) and the worker
 * answers each with a `ResvReply` carrying the same `req`. Blocking operations
 * (lock, waitTimeout) block this worker's thread, so their reply comes when they
 * return. Reservation objects, fences, timelines and held locks are kept under
 * names chosen by the test.
 *
 * A request may carry `delayMs`: the worker sleeps that long before acting. It
 * only makes it likely that the test's thread is already asleep in a wait when
 * the worker acts; no result depends on it.
 */
import { parentPort } from 'node:worker_threads';
import {
  DmaFence, DmaResv, DmaResvLocked, SwSyncTimeline, WwAcquireCtx, type DmaFenceOps, type DmaResvUsage, type Packet,
} from 'dmabuf';

export type ResvCommand =
  | { op: 'receiveResv'; resv: string; token: Packet }
  | { op: 'receiveFence'; name: string; token: Packet }
  | { op: 'receiveTimeline'; timeline: string; token: Packet }
  /** A thread-private fence (DmaFence.init); context null: a fresh one. Returns its context. */
  | { op: 'initFence'; name: string; context: bigint | null; seqno: number }
  | { op: 'createPoint'; name: string; timeline: string; value: number }
  /** lock(null), reserveFences(1), addFence, unlock. */
  | { op: 'addFence'; resv: string; name: string; usage: DmaResvUsage }
  | { op: 'signal'; name: string }
  | { op: 'inc'; timeline: string; n: number }
  | { op: 'testSignaled'; resv: string; usage: DmaResvUsage }
  | { op: 'waitTimeout'; resv: string; usage: DmaResvUsage; timeoutMs: number }
  /** The unsignalled fences ≤ usage, seen without the lock. */
  | { op: 'fencesUnlocked'; resv: string; usage: DmaResvUsage }
  /** Lock with a fresh acquire context and keep the guard. Returns the context's stamp. */
  | { op: 'lock'; resv: string }
  | { op: 'reserve'; resv: string; n: number }
  | { op: 'unlock'; resv: string }
  | { op: 'put'; name: string }
  | { op: 'putResv'; resv: string }
  | { op: 'closeTimeline'; timeline: string }
  /** Lock `resv`, copyFrom(sources[i % n]), unlock: `iterations` times. */
  | { op: 'copyLoop'; resv: string; sources: string[]; iterations: number }
  /** End this thread normally (process.exit in a worker), whatever it still holds. */
  | { op: 'exit' }
  /** Allocate this worker's own fence context for `stress`; returns it. */
  | { op: 'newContext' }
  | {
    op: 'stress';
    /** Reservation objects to use, by name; counters[i] belongs to resvs[i]. */
    resvs: string[];
    counters: SharedArrayBuffer;
    iterations: number;
    seed: number;
  };

export type ResvRequest = ResvCommand & { req: number; delayMs?: number };

export type ResvReply =
  | { req: number; ok: true; value: unknown }
  | { req: number; ok: false; code: string | undefined; message: string };

/** One fence seen by `fencesUnlocked`. */
export interface SeenFence {
  context: bigint;
  seqno: bigint;
  usage: DmaResvUsage;
  restarted: boolean;
}

export interface ResvStressResult {
  /** locks[i]: how many times this worker held resvs[i] (once per iteration that chose it). */
  locks: number[];
  /** How many times it had to back off (-EDEADLK, then lockSlow). */
  backoffs: number;
  /** Most fence slots any resv had right after one of this worker's addFence calls. */
  maxFences: number;
  /** Fences this worker added (all signalled before the unlock). */
  added: number;
}

const EDEADLK = -35;
const EALREADY = -114;

const port = parentPort;
if (!port) throw new Error('resv-worker.ts must run in a worker thread');

const ops: DmaFenceOps = { getDriverName: () => 'resv-worker', getTimelineName: () => 'worker-tl' };

const resvs = new Map<string, DmaResv>();
const fences = new Map<string, DmaFence>();
const timelines = new Map<string, SwSyncTimeline>();
/** Locks held through the `lock` op, with the context that took each. */
const held = new Map<string, { guard: DmaResvLocked; ctx: WwAcquireCtx }>();
let ownContext: bigint | null = null;
let ownSeqno = 0;

function get<T>(map: Map<string, T>, name: string, what: string): T {
  const v = map.get(name);
  if (v === undefined) throw new Error(`worker holds no ${what} named ${name}`);
  return v;
}

const resv = (name: string): DmaResv => get(resvs, name, 'resv');
const fence = (name: string): DmaFence => get(fences, name, 'fence');
const timeline = (name: string): SwSyncTimeline => get(timelines, name, 'timeline');

function guardOf(r: DmaResv, ctx: WwAcquireCtx | null): DmaResvLocked {
  const g = r.lock(ctx);
  if (!(g instanceof DmaResvLocked)) throw new Error(`lock returned ${g}`);
  return g;
}

/** xorshift32: a tiny seeded PRNG, so every run locks the same sequence of sets. */
function xorshift(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/**
 * Lock every resv of `order` with `ctx`, following the back-off protocol of
 * kernel-contract §3.4. Fills `guards` (index → guard); returns the back-off count.
 */
function lockAll(rs: DmaResv[], order: number[], ctx: WwAcquireCtx, guards: Map<number, DmaResvLocked>): number {
  let backoffs = 0;
  for (;;) {
    let contended = -1;
    for (const i of order) {
      const r = rs[i]!.lock(ctx);
      if (r instanceof DmaResvLocked) guards.set(i, r);
      else if (r === EDEADLK) {
        contended = i;
        break;
      } else if (r === EALREADY) {
        if (!guards.has(i)) throw new Error(`-EALREADY for resv ${i}, which this context does not hold`);
      } else throw new Error(`lock returned ${r}`);
    }
    if (contended < 0) return backoffs;
    backoffs++;
    for (const g of guards.values()) g.unlock();
    guards.clear();
    guards.set(contended, rs[contended]!.lockSlow(ctx));
  }
}

function stress(c: Extract<ResvCommand, { op: 'stress' }>): ResvStressResult {
  if (ownContext === null) throw new Error('stress needs newContext first');
  const rs = c.resvs.map(resv);
  const counters = new Int32Array(c.counters);
  const locks = rs.map(() => 0);
  const rnd = xorshift(c.seed);
  let backoffs = 0;
  let maxFences = 0;
  let added = 0;
  for (let it = 0; it < c.iterations; it++) {
    const order: number[] = [];
    for (let i = 0; i < rs.length; i++) if (rnd() < 0.5) order.push(i);
    if (order.length === 0) order.push(Math.floor(rnd() * rs.length));
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const ctx = new WwAcquireCtx();
    const guards = new Map<number, DmaResvLocked>();
    backoffs += lockAll(rs, order, ctx, guards);
    ctx.done();
    for (const i of order) {
      const g = guards.get(i)!;
      g.reserveFences(1);
      const f = DmaFence.init(ops, ownContext, ++ownSeqno);
      g.addFence(f, Math.floor(rnd() * 4) as DmaResvUsage);
      added++;
      maxFences = Math.max(maxFences, g.numFences);
      f.signal();
      f.put();
      // A deliberately non-atomic read-modify-write: only the locks keep it from losing updates.
      const v = counters[i]!;
      for (let k = 0; k < 20; k++) if (Atomics.load(counters, i) !== v) break;
      counters[i] = v + 1;
      locks[i]!++;
    }
    for (const g of guards.values()) g.unlock();
    ctx.fini();
  }
  return { locks, backoffs, maxFences, added };
}

function run(c: ResvCommand): unknown {
  switch (c.op) {
    case 'receiveResv':
      resvs.set(c.resv, DmaResv.receive(c.token));
      return null;
    case 'receiveFence':
      fences.set(c.name, DmaFence.receive(c.token));
      return null;
    case 'receiveTimeline':
      timelines.set(c.timeline, SwSyncTimeline.receive(c.token));
      return null;
    case 'initFence': {
      const f = DmaFence.init(ops, c.context ?? DmaFence.contextAlloc(), c.seqno);
      fences.set(c.name, f);
      return f.context;
    }
    case 'createPoint':
      fences.set(c.name, timeline(c.timeline).createFence(c.value));
      return null;
    case 'addFence': {
      const g = guardOf(resv(c.resv), null);
      try {
        g.reserveFences(1);
        g.addFence(fence(c.name), c.usage);
      } finally {
        g.unlock();
      }
      return null;
    }
    case 'signal':
      return fence(c.name).signal();
    case 'inc':
      timeline(c.timeline).inc(c.n);
      return null;
    case 'testSignaled':
      return resv(c.resv).testSignaled(c.usage);
    case 'waitTimeout':
      return resv(c.resv).waitTimeout(c.usage, c.timeoutMs);
    case 'fencesUnlocked': {
      const out: SeenFence[] = [];
      for (const e of resv(c.resv).fencesUnlocked(c.usage)) {
        out.push({ context: e.fence.context, seqno: e.fence.seqno, usage: e.usage, restarted: e.restarted });
      }
      return out;
    }
    case 'lock': {
      const ctx = new WwAcquireCtx();
      held.set(c.resv, { guard: guardOf(resv(c.resv), ctx), ctx });
      return ctx.stamp;
    }
    case 'reserve':
      get(held, c.resv, 'held lock').guard.reserveFences(c.n);
      return null;
    case 'unlock': {
      const h = get(held, c.resv, 'held lock');
      held.delete(c.resv);
      h.guard.unlock();
      h.ctx.fini();
      return null;
    }
    case 'put':
      fence(c.name).put();
      fences.delete(c.name);
      return null;
    case 'putResv':
      resv(c.resv).put();
      resvs.delete(c.resv);
      return null;
    case 'closeTimeline':
      timeline(c.timeline).close();
      timelines.delete(c.timeline);
      return null;
    case 'copyLoop': {
      const r = resv(c.resv);
      const sources = c.sources.map(resv);
      for (let i = 0; i < c.iterations; i++) {
        const g = guardOf(r, null);
        try {
          g.copyFrom(sources[i % sources.length]!);
        } finally {
          g.unlock();
        }
      }
      return null;
    }
    case 'exit':
      return process.exit(0);
    case 'newContext':
      ownContext = DmaFence.contextAlloc();
      return ownContext;
    case 'stress':
      return stress(c);
  }
}

const nap = new Int32Array(new SharedArrayBuffer(4));

port.on('message', (r: ResvRequest) => {
  let reply: ResvReply;
  try {
    if (r.delayMs) Atomics.wait(nap, 0, 0, r.delayMs);
    reply = { req: r.req, ok: true, value: run(r) };
  } catch (e) {
    const err = e as { code?: unknown; message?: unknown };
    reply = {
      req: r.req, ok: false, code: typeof err.code === 'string' ? err.code : undefined, message: String(err.message),
    };
  }
  port.postMessage(reply);
});
