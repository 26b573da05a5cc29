/**
 * Worker of test/dma-resv.test.ts and test/dma-resv-threads.test.ts, driven by
 * messages: the test posts a `ResvRequest` ({ req, op, ... }) and the worker
 * answers each with an `RpcReply` carrying the same `req`
 * (test/support/worker-rpc.ts). Blocking operations (lock, waitTimeout) block
 * this worker's thread, so their reply comes when they return. Reservation objects, fences, timelines and held locks are kept under
 * names chosen by the test.
 *
 * A request may carry `delayMs` (a `Gate`): the worker sleeps that long before acting. It
 * only makes it likely that the test's thread is already asleep in a wait when
 * the worker acts; no result depends on it.
 */
import {
  DmaFence, DmaResv, DmaResvLocked, SwSyncTimeline, WwAcquireCtx, type DmaFenceOps, type DmaResvUsage, type Packet,
} from 'dmabuf';
import { bumpCounter, randomOrder, xorshift } from '../support/stress.js';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

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

export type ResvRequest = ResvCommand & Gate & { req: number };

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
    const order = randomOrder(rnd, rs.length);
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
      bumpCounter(counters, i);
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

serve<ResvRequest>((r) => {
  passGate(r);
  return run(r);
});
