/**
 * Worker of test/ww-mutex.test.ts, driven by messages: the test posts a `Request`
 * ({ req, op, ... }) and the worker answers each with an `RpcReply` carrying the
 * same `req` (test/support/worker-rpc.ts). Blocking operations (lock, lockSlow) block this worker's thread, so their
 * reply comes when they return. Mutexes and contexts are kept under names chosen
 * by the test.
 */
import { WwAcquireCtx, WwMutex, type Packet } from 'dmabuf';
import { bumpCounter, randomOrder, xorshift } from '../support/stress.js';
import { serve } from '../support/worker-rpc.js';

export type Command =
  | { op: 'receive'; m: string; token: Packet }
  | { op: 'newCtx'; ctx: string }
  | { op: 'lock'; m: string; ctx: string | null }
  | { op: 'lockSlow'; m: string; ctx: string }
  | { op: 'trylock'; m: string }
  | { op: 'unlock'; m: string }
  | { op: 'unlockAll'; ctx: string }
  | { op: 'held'; ctx: string }
  | { op: 'fini'; ctx: string }
  | { op: 'put'; m: string }
  | { op: 'exit' }
  | {
    op: 'stress';
    /** Mutexes to use, by name; counters[i] belongs to ms[i]. */
    ms: string[];
    counters: SharedArrayBuffer;
    iterations: number;
    /** A fixed lock order (indexes into ms), or random subsets in random order from `seed`. */
    order: number[] | null;
    seed: number;
  };

export type Request = Command & { req: number };

export interface StressResult {
  /** increments[i]: how often this worker incremented counters[i]. */
  increments: number[];
  /** How many times it had to back off (-EDEADLK, then lockSlow). */
  backoffs: number;
}

const mutexes = new Map<string, WwMutex>();
const contexts = new Map<string, WwAcquireCtx>();
/** Mutex names each context holds, as this worker tracked them. */
const ctxLocks = new Map<string, Set<string>>();

function mutex(name: string): WwMutex {
  const m = mutexes.get(name);
  if (!m) throw new Error(`no mutex ${name}`);
  return m;
}

function ctxOf(name: string): WwAcquireCtx {
  const c = contexts.get(name);
  if (!c) throw new Error(`no context ${name}`);
  return c;
}

/** Lock every mutex of `order` with `ctx`, following the back-off protocol. Returns the back-off count. */
function lockAll(ms: WwMutex[], order: number[], ctx: WwAcquireCtx): number {
  let backoffs = 0;
  const held: number[] = [];
  for (;;) {
    let contended = -1;
    for (const i of order) {
      const r = ms[i]!.lock(ctx);
      if (r === 0) held.push(i);
      else if (r === -35) {
        contended = i;
        break;
      } else if (r !== -114) throw new Error(`lock returned ${r}`);
    }
    if (contended < 0) return backoffs;
    backoffs++;
    for (const i of held.splice(0)) ms[i]!.unlock();
    ms[contended]!.lockSlow(ctx);
    held.push(contended);
  }
}

function stress(c: Extract<Command, { op: 'stress' }>): StressResult {
  const ms = c.ms.map(mutex);
  const counters = new Int32Array(c.counters);
  const increments = ms.map(() => 0);
  const rnd = xorshift(c.seed);
  let backoffs = 0;
  for (let it = 0; it < c.iterations; it++) {
    const order = c.order ?? randomOrder(rnd, ms.length);
    const ctx = new WwAcquireCtx();
    backoffs += lockAll(ms, order, ctx);
    ctx.done();
    for (const i of order) {
      bumpCounter(counters, i);
      increments[i]!++;
    }
    for (const i of order) ms[i]!.unlock();
    ctx.fini();
  }
  return { increments, backoffs };
}

function run(c: Command): unknown {
  switch (c.op) {
    case 'receive':
      mutexes.set(c.m, WwMutex.receive(c.token));
      return null;
    case 'newCtx': {
      const ctx = new WwAcquireCtx();
      contexts.set(c.ctx, ctx);
      ctxLocks.set(c.ctx, new Set());
      return ctx.stamp;
    }
    case 'lock': {
      const r = mutex(c.m).lock(c.ctx === null ? null : ctxOf(c.ctx));
      if (r === 0 && c.ctx !== null) ctxLocks.get(c.ctx)!.add(c.m);
      return r;
    }
    case 'lockSlow':
      mutex(c.m).lockSlow(ctxOf(c.ctx));
      ctxLocks.get(c.ctx)!.add(c.m);
      return null;
    case 'trylock':
      return mutex(c.m).trylock();
    case 'unlock':
      mutex(c.m).unlock();
      for (const set of ctxLocks.values()) set.delete(c.m);
      return null;
    case 'unlockAll': {
      const set = ctxLocks.get(c.ctx)!;
      for (const name of set) mutex(name).unlock();
      set.clear();
      return null;
    }
    case 'held':
      return ctxOf(c.ctx).held;
    case 'fini':
      ctxOf(c.ctx).fini();
      return null;
    case 'put':
      mutex(c.m).put();
      mutexes.delete(c.m);
      return null;
    case 'stress':
      return stress(c);
    case 'exit':
      setImmediate(() => process.exit(0)); // a normal exit, after this reply: exit hooks run
      return null;
  }
}

serve<Request>(run);
