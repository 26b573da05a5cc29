/**
 * Driver API of dma_fence (kernel-contract §2), as documented in src/dma-fence.ts:
 * creation and contexts, seqno ordering, signalling, errors and status, callbacks
 * and signalling enablement, waits, deadlines, stubs, references, describe(),
 * share()/receive(), and the same behaviour across real worker threads.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  DMA_FENCE_FLAG_ENABLE_SIGNAL, DMA_FENCE_FLAG_SEQNO64, DmaFence, ERRNO, liveObjects, SwSyncTimeline,
} from 'dmabuf';
import type { DmaFenceOps } from 'dmabuf';
import { turn as tick } from './support/async.js';
import { pollLiveObjects, Refs, stubBaseline } from './support/leaks.js';
import { gate, RpcClient, type Gate } from './support/worker-rpc.js';
import type { Command, WaitReport, WorkerEvent } from './workers/fence-worker.js';

/* ---- helpers ---- */

// The stub lives forever once created: create it before taking the baseline.
const BASELINE = stubBaseline();

const U32_MAX = 0xffffffff;
const U64_MAX = (1n << 64n) - 1n;
const HANG_GUARD_MS = 20_000;

function ops(extra: Partial<DmaFenceOps> = {}): DmaFenceOps {
  return { getDriverName: () => 'test-drv', getTimelineName: () => 'test-tl', ...extra };
}

function newFence(refs: Refs, seqno: number | bigint = 1, context = DmaFence.contextAlloc(), o = ops()): DmaFence {
  return refs.fence(DmaFence.init(o, context, seqno));
}

/** Two fences on one fresh context. */
function pair(refs: Refs, s1: number | bigint, s2: number | bigint, is64 = false): [DmaFence, DmaFence] {
  const ctx = DmaFence.contextAlloc();
  const init = is64 ? DmaFence.init64 : DmaFence.init;
  return [refs.fence(init(ops(), ctx, s1)), refs.fence(init(ops(), ctx, s2))];
}

function signalledFence(refs: Refs): DmaFence {
  const f = newFence(refs);
  assert.equal(f.signal(), 0);
  return f;
}

/** Client of test/workers/fence-worker.ts. */
class FenceWorker extends RpcClient<Command & Gate, WorkerEvent> {
  constructor() {
    super(new URL('./workers/fence-worker.js', import.meta.url), { eventGuardMs: HANG_GUARD_MS });
  }
}

/* ---- creation and contexts (§2.2) ---- */

describe('contexts and init (§2.2)', () => {
  test('contextAlloc() returns fresh, consecutive ids that are never 0', () => {
    const a = DmaFence.contextAlloc();
    const b = DmaFence.contextAlloc(3);
    const c = DmaFence.contextAlloc(1);
    assert.equal(typeof a, 'bigint');
    assert.ok(a >= 1n, 'context 0 belongs to the stub');
    assert.equal(b, a + 1n);
    assert.equal(c, b + 3n, 'contextAlloc(3) reserved three ids');
  });

  test('contextAlloc(0) throws EINVAL and consumes no id', () => {
    const a = DmaFence.contextAlloc();
    assert.throws(() => DmaFence.contextAlloc(0), { code: 'EINVAL' });
    assert.throws(() => DmaFence.contextAlloc(-1), { code: 'EINVAL' });
    assert.equal(DmaFence.contextAlloc(), a + 1n);
  });

  test('init() creates a pending 32-bit fence with the given context, seqno and names', (t) => {
    const refs = new Refs(t);
    const ctx = DmaFence.contextAlloc();
    const before = liveObjects();
    const f = refs.fence(DmaFence.init(ops(), ctx, 42));
    assert.equal(liveObjects(), before + 1);
    assert.equal(f.context, ctx);
    assert.equal(f.seqno, 42n);
    assert.equal(f.driverName, 'test-drv');
    assert.equal(f.timelineName, 'test-tl');
    assert.equal(f.isSignaled(), false);
    assert.equal(f.getStatus(), 0);
    assert.equal(f.error, 0);
    assert.equal(f.is64, false);
    assert.equal(f.flags & DMA_FENCE_FLAG_SEQNO64, 0);
    assert.equal(f.flags & DMA_FENCE_FLAG_ENABLE_SIGNAL, 0);
    assert.equal(f.deadline, undefined);
    refs.releaseAll();
    assert.equal(liveObjects(), before);
  });

  test('init64() sets the SEQNO64 flag and keeps a full 64-bit seqno', (t) => {
    const refs = new Refs(t);
    const f = refs.fence(DmaFence.init64(ops(), DmaFence.contextAlloc(), U64_MAX));
    assert.equal(f.is64, true);
    assert.notEqual(f.flags & DMA_FENCE_FLAG_SEQNO64, 0);
    assert.equal(f.seqno, U64_MAX);
    assert.equal(f.getStatus(), 0);
  });

  test('init() keeps the upper 32 bits of a seqno (seqno is 64-bit even when compared as 32-bit)', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs, 0x1_0000_0005n);
    assert.equal(f.seqno, 0x1_0000_0005n);
  });

  test('init() and init64() throw TypeError without both name ops, creating nothing', () => {
    const before = liveObjects();
    const ctx = DmaFence.contextAlloc();
    const noDriver = { getTimelineName: () => 't' } as unknown as DmaFenceOps;
    const noTimeline = { getDriverName: () => 'd' } as unknown as DmaFenceOps;
    assert.throws(() => DmaFence.init(noDriver, ctx, 1), TypeError);
    assert.throws(() => DmaFence.init(noTimeline, ctx, 1), TypeError);
    assert.throws(() => DmaFence.init64(noDriver, ctx, 1), TypeError);
    assert.throws(() => DmaFence.init64(noTimeline, ctx, 1), TypeError);
    assert.throws(() => DmaFence.init(null as unknown as DmaFenceOps, ctx, 1), TypeError);
    assert.equal(liveObjects(), before);
  });
});

/* ---- ordering (§2.3) ---- */

describe('seqno ordering (§2.3)', () => {
  const later32 = (t: TestContext, a: number | bigint, b: number | bigint): boolean => {
    const refs = new Refs(t);
    const [fa, fb] = pair(refs, a, b);
    const r = fa.isLater(fb);
    refs.releaseAll();
    return r;
  };
  const later64 = (t: TestContext, a: number | bigint, b: number | bigint): boolean => {
    const refs = new Refs(t);
    const [fa, fb] = pair(refs, a, b, true);
    const r = fa.isLater(fb);
    refs.releaseAll();
    return r;
  };

  test('isLater() on 32-bit fences: plain order', (t) => {
    assert.equal(later32(t, 2, 1), true);
    assert.equal(later32(t, 1, 2), false);
    assert.equal(later32(t, 5, 5), false);
    assert.equal(later32(t, 0x7fffffff, 0), true);
  });

  test('isLater() on 32-bit fences wraps around: is_later(1, 0xFFFFFFFF) is true', (t) => {
    assert.equal(later32(t, 1, U32_MAX), true);
    assert.equal(later32(t, U32_MAX, 1), false);
    assert.equal(later32(t, 0, U32_MAX), true);
  });

  test('isLater() on 32-bit fences: a distance of exactly 2^31 is not later either way', (t) => {
    assert.equal(later32(t, 0x80000000, 0), false);
    assert.equal(later32(t, 0, 0x80000000), false);
    assert.equal(later32(t, 0x80000005, 5), false);
    assert.equal(later32(t, 5, 0x80000005), false);
  });

  test('isLater() on 32-bit fences ignores the upper 32 bits', (t) => {
    assert.equal(later32(t, 0x1_0000_0001n, 0x2_0000_0000n), true);
    assert.equal(later32(t, 0x2_0000_0000n, 0x1_0000_0001n), false);
    assert.equal(later32(t, 0x1_0000_0005n, 5), false);
    assert.equal(later32(t, 5, 0x1_0000_0005n), false);
    assert.equal(later32(t, 3, 0x7_0000_0002n), true);
  });

  test('isLater() on init64 fences compares unsigned 64-bit values, without wrap', (t) => {
    assert.equal(later64(t, 2, 1), true);
    assert.equal(later64(t, 1, 2), false);
    assert.equal(later64(t, 0, U64_MAX), false);
    assert.equal(later64(t, U64_MAX, 0), true);
    assert.equal(later64(t, 1, U32_MAX), false);
    assert.equal(later64(t, 0x80000000, 0), true);
    assert.equal(later64(t, 0x1_0000_0003n, 5), true);
    assert.equal(later64(t, 0x1_0000_0000n, 0xffffffffn), true);
    assert.equal(later64(t, 7, 7), false);
  });

  test('isLater() uses the mode of the fence it is called on', (t) => {
    const refs = new Refs(t);
    const ctx = DmaFence.contextAlloc();
    const f64 = refs.fence(DmaFence.init64(ops(), ctx, 1));
    const f32 = refs.fence(DmaFence.init(ops(), ctx, U32_MAX));
    assert.equal(f64.isLater(f32), false, '64-bit: 1 < 0xFFFFFFFF');
    assert.equal(f32.isLater(f64), false, '32-bit: 0xFFFFFFFF is before 1 after wrap');
    const g32 = refs.fence(DmaFence.init(ops(), ctx, 0x1_0000_0000n));
    assert.equal(g32.isLater(f32), true, '32-bit: 0 is after 0xFFFFFFFF');
  });

  test('isLater() across contexts throws EINVAL', (t) => {
    const refs = new Refs(t);
    const a = newFence(refs, 2);
    const b = newFence(refs, 1);
    assert.throws(() => a.isLater(b), { code: 'EINVAL' });
    assert.throws(() => b.isLater(a), { code: 'EINVAL' });
    assert.throws(() => a.isLaterOrSame(b), { code: 'EINVAL' });
  });

  test('isLaterOrSame() is true for the same fence or a later one only', (t) => {
    const refs = new Refs(t);
    const [a, b] = pair(refs, 5, 4);
    const [c, d] = pair(refs, 9, 9);
    assert.equal(a.isLaterOrSame(a), true);
    assert.equal(a.isLaterOrSame(b), true);
    assert.equal(b.isLaterOrSame(a), false);
    assert.equal(c.isLaterOrSame(d), false, 'equal seqnos but different fences are not "same"');
    const [w1, w2] = pair(refs, 0, U32_MAX);
    assert.equal(w1.isLaterOrSame(w2), true, 'wraps like isLater');
  });

  test('DmaFence.later() returns the later fence of either argument order', (t) => {
    const refs = new Refs(t);
    const [a, b] = pair(refs, 10, 11);
    assert.equal(DmaFence.later(a, b), b);
    assert.equal(DmaFence.later(b, a), b);
    const [c, d] = pair(refs, 1, U32_MAX);
    assert.equal(DmaFence.later(c, d), c, 'wrap-around applies');
  });

  test('DmaFence.later() returns null when the later fence is signalled', (t) => {
    const refs = new Refs(t);
    const [a, b] = pair(refs, 10, 11);
    a.signal();
    assert.equal(DmaFence.later(a, b), b, 'the earlier one being signalled does not matter');
    b.signal();
    assert.equal(DmaFence.later(a, b), null);
    assert.equal(DmaFence.later(b, a), null);
  });

  test('DmaFence.later() across contexts throws EINVAL', (t) => {
    const refs = new Refs(t);
    const a = newFence(refs, 1);
    const b = newFence(refs, 2);
    assert.throws(() => DmaFence.later(a, b), { code: 'EINVAL' });
  });
});

/* ---- signalling (§2.4) ---- */

describe('signalling (§2.4)', () => {
  test('signal() returns 0, then -EINVAL (-22) when already signalled', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(f.signal(), 0);
    assert.equal(f.isSignaled(), true);
    assert.equal(f.getStatus(), 1);
    assert.equal(f.signal(), -22);
    assert.equal(f.signal(), -ERRNO.EINVAL);
    assert.equal(f.getStatus(), 1);
  });

  test('checkAndSignal() signals and returns false, then returns true', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(f.checkAndSignal(), false);
    assert.equal(f.isSignaled(), true);
    assert.equal(f.checkAndSignal(), true);
    const g = newFence(refs);
    g.signal();
    assert.equal(g.checkAndSignal(), true);
    assert.equal(g.signal(), -22);
  });

  test('signalTimestamp() stores the given timestamp; a second signal changes nothing', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(f.signalTimestamp(1_234_567_890_123n), 0);
    assert.equal(f.timestamp(), 1_234_567_890_123n);
    assert.equal(f.signalTimestamp(5n), -22);
    assert.equal(f.signal(), -22);
    assert.equal(f.timestamp(), 1_234_567_890_123n);
  });

  test('signalTimestamp() and allocatePrivateStub() keep a 64-bit ktime exactly (200 days of uptime)', (t) => {
    const refs = new Refs(t);
    const ts = 17_280_000_000_000_001n; // > 2^53 ns: CLOCK_MONOTONIC after ~104 days
    const f = newFence(refs);
    assert.equal(f.signalTimestamp(ts), 0);
    assert.equal(f.timestamp(), ts);
    const stub = refs.fence(DmaFence.allocatePrivateStub(ts + 2n));
    assert.equal(stub.timestamp(), ts + 2n);
  });

  test('timestamp() throws EINVAL before the fence is signalled', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.throws(() => f.timestamp(), { code: 'EINVAL' });
    assert.equal(f.getStatus(), 0, 'asking for the timestamp does not signal');
  });

  test('signal() records a CLOCK_MONOTONIC timestamp (the clock of process.hrtime.bigint())', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const before = process.hrtime.bigint();
    f.signal();
    const after = process.hrtime.bigint();
    const ts = f.timestamp();
    const slack = 1_000_000n; // float rounding of the stored value, not timing
    assert.ok(ts >= before - slack && ts <= after + slack, `${before} <= ${ts} <= ${after}`);
  });
});

/* ---- errors and status (§2.5) ---- */

describe('errors and status (§2.5)', () => {
  test('setError() before signal: status stays 0 until signalled, then is the error', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    f.setError(-ERRNO.ENODATA);
    assert.equal(f.getStatus(), 0);
    assert.equal(f.isSignaled(), false);
    f.signal();
    assert.equal(f.getStatus(), -61);
    assert.equal(f.error, -61);
  });

  test('setError() accepts the bounds -1 and -4095; the last error set wins', (t) => {
    const refs = new Refs(t);
    const a = newFence(refs);
    a.setError(-1);
    a.signal();
    assert.equal(a.getStatus(), -1);
    const b = newFence(refs);
    b.setError(-ERRNO.ETIME);
    b.setError(-4095);
    b.signal();
    assert.equal(b.getStatus(), -4095);
  });

  test('setError() after signal throws EINVAL and changes nothing', (t) => {
    const refs = new Refs(t);
    const f = signalledFence(refs);
    assert.throws(() => f.setError(-ERRNO.ECANCELED), { code: 'EINVAL' });
    assert.equal(f.error, 0);
    assert.equal(f.getStatus(), 1);
  });

  test('setError() with 0, a positive value or one below -4095 throws EINVAL and changes nothing', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    for (const bad of [0, 1, ERRNO.EINVAL, -4096, -100_000]) {
      assert.throws(() => f.setError(bad), { code: 'EINVAL' }, `setError(${bad})`);
      assert.equal(f.error, 0, `error after setError(${bad})`);
      assert.equal(f.getStatus(), 0);
    }
    f.signal();
    assert.equal(f.getStatus(), 1, 'signalled without error');
  });

  test('getStatus() is 0 pending, 1 signalled, the negative error when signalled with one', (t) => {
    const refs = new Refs(t);
    const a = newFence(refs);
    const b = newFence(refs);
    assert.equal(a.getStatus(), 0);
    a.signal();
    assert.equal(a.getStatus(), 1);
    b.setError(-ERRNO.ECANCELED);
    b.signal();
    assert.equal(b.getStatus(), -125);
  });
});

/* ---- callbacks and enablement (§2.6) ---- */

describe('callbacks and signalling enablement (§2.6)', () => {
  test('callbacks run once, in registration (FIFO) order, with the fence as argument', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const log: string[] = [];
    const args: unknown[] = [];
    for (const name of ['a', 'b', 'c', 'd']) {
      assert.equal(f.addCallback((arg) => {
        log.push(name);
        args.push(arg);
      }), 0);
    }
    f.signal();
    assert.deepEqual(log, ['a', 'b', 'c', 'd']);
    assert.ok(args.every((a) => a === f));
    f.signal();
    f.isSignaled();
    f.getStatus();
    f.waitTimeout(0);
    assert.deepEqual(log, ['a', 'b', 'c', 'd'], 'no callback ran twice');
  });

  test('a callback added in the signalling thread runs synchronously inside signal()', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const log: string[] = [];
    f.addCallback((arg) => log.push(`cb status=${arg.getStatus()}`));
    log.push('before');
    f.signal();
    log.push('after');
    assert.deepEqual(log, ['before', 'cb status=1', 'after']);
  });

  test('inside a callback the fence is already signalled: signal() gives -EINVAL, addCallback() -ENOENT', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const log: string[] = [];
    f.addCallback((x) => {
      log.push(`signal=${x.signal()}`);
      log.push(`add=${x.addCallback(() => log.push('nested ran'))}`);
    });
    f.addCallback(() => log.push('second'));
    assert.equal(f.signal(), 0);
    assert.deepEqual(log, ['signal=-22', 'add=-2', 'second']);
  });

  test('callbacks see the error of a fence signalled with one', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    let seen = 0;
    f.addCallback((arg) => {
      seen = arg.getStatus();
    });
    f.setError(-ERRNO.ETIME);
    f.signal();
    assert.equal(seen, -62);
  });

  test('addCallback() returns -ENOENT (-2) after signal and never calls the function', async (t) => {
    const refs = new Refs(t);
    const f = signalledFence(refs);
    let calls = 0;
    assert.equal(f.addCallback(() => calls++), -2);
    assert.equal(f.addCallback(() => calls++), -ERRNO.ENOENT);
    await tick();
    f.signal();
    assert.equal(calls, 0);
  });

  test('addCallback() throws TypeError for a non-function', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.throws(() => f.addCallback(null as unknown as () => void), TypeError);
  });

  test('removeCallback() returns true for a queued callback, which then never runs', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const log: string[] = [];
    const a = (): void => void log.push('a');
    const b = (): void => void log.push('b');
    const c = (): void => void log.push('c');
    f.addCallback(a);
    f.addCallback(b);
    f.addCallback(c);
    assert.equal(f.removeCallback(b), true);
    assert.equal(f.removeCallback(b), false, 'already removed');
    f.signal();
    assert.deepEqual(log, ['a', 'c']);
  });

  test('removeCallback() returns false for a callback never added or one that already ran', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    let ran = 0;
    const cb = (): void => void ran++;
    assert.equal(f.removeCallback(cb), false);
    f.addCallback(cb);
    f.signal();
    assert.equal(ran, 1);
    assert.equal(f.removeCallback(cb), false);
  });

  test('enableSignaling op: not called by init, isSignaled() or getStatus()', (t) => {
    const refs = new Refs(t);
    let calls = 0;
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => (calls++, true) }));
    f.isSignaled();
    f.getStatus();
    f.setDeadline(1n);
    assert.equal(calls, 0);
    assert.equal(f.flags & DMA_FENCE_FLAG_ENABLE_SIGNAL, 0);
  });

  test('enableSignaling op: called once, with the fence, on the first addCallback()', (t) => {
    const refs = new Refs(t);
    const seen: unknown[] = [];
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: (x) => (seen.push(x), true) }));
    assert.equal(f.addCallback(() => {}), 0);
    assert.equal(seen.length, 1);
    assert.equal(seen[0], f);
    assert.notEqual(f.flags & DMA_FENCE_FLAG_ENABLE_SIGNAL, 0);
    f.addCallback(() => {});
    f.enableSwSignaling();
    assert.equal(f.waitTimeout(0), 0);
    assert.equal(seen.length, 1);
    assert.equal(f.getStatus(), 0, 'returning true leaves the fence pending');
  });

  test('enableSignaling op: called once on the first waitTimeout()', (t) => {
    const refs = new Refs(t);
    let calls = 0;
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => (calls++, true) }));
    assert.equal(f.waitTimeout(0), 0);
    assert.equal(calls, 1);
    assert.equal(f.waitTimeout(0), 0);
    f.addCallback(() => {});
    assert.equal(calls, 1);
  });

  test('enableSignaling op: called once on the first enableSwSignaling(), which is idempotent', (t) => {
    const refs = new Refs(t);
    let calls = 0;
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => (calls++, true) }));
    f.enableSwSignaling();
    f.enableSwSignaling();
    assert.equal(calls, 1);
    assert.notEqual(f.flags & DMA_FENCE_FLAG_ENABLE_SIGNAL, 0);
    assert.equal(f.getStatus(), 0);
  });

  test('enableSignaling op: called once on the first waitTimeoutAsync()', async (t) => {
    const refs = new Refs(t);
    let calls = 0;
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => (calls++, true) }));
    const p = f.waitTimeoutAsync(HANG_GUARD_MS);
    assert.equal(calls, 1);
    f.signal();
    assert.ok((await p) > 0);
    assert.equal(calls, 1);
  });

  test('enableSignaling op returning false signals the fence at once (addCallback → -ENOENT)', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => false }));
    let calls = 0;
    assert.equal(f.addCallback(() => calls++), -2);
    assert.equal(calls, 0);
    assert.equal(f.getStatus(), 1);
    assert.equal(typeof f.timestamp(), 'bigint');
  });

  test('enableSignaling op returning false: a wait returns as for a signalled fence', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => false }));
    assert.equal(f.waitTimeout(50), 50);
    assert.equal(f.isSignaled(), true);
    const g = newFence(refs, 1, DmaFence.contextAlloc(), ops({ enableSignaling: () => false }));
    g.enableSwSignaling();
    assert.equal(g.isSignaled(), true);
  });

  test('enableSignaling op may set an error when it returns false', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({
      enableSignaling: (x) => {
        x.setError(-ERRNO.ETIME);
        return false;
      },
    }));
    f.enableSwSignaling();
    assert.equal(f.getStatus(), -62);
  });

  test('signaled op: isSignaled() turns true when the peek does, and the fence is then signalled', (t) => {
    const refs = new Refs(t);
    let done = false;
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ signaled: () => done }));
    const log: string[] = [];
    f.addCallback(() => log.push('cb'));
    assert.equal(f.isSignaled(), false);
    assert.throws(() => f.timestamp(), { code: 'EINVAL' });
    done = true;
    assert.equal(f.isSignaled(), true);
    assert.deepEqual(log, ['cb'], 'callbacks ran when the peek signalled the fence');
    assert.equal(typeof f.timestamp(), 'bigint');
    assert.equal(f.signal(), -22, 'already signalled');
    assert.equal(f.checkAndSignal(), true);
    done = false; // a broken peek cannot un-signal
    assert.equal(f.isSignaled(), true);
    assert.equal(f.getStatus(), 1);
  });

  test('signaled op: getStatus() peeks too, and the op may set an error when it returns true', (t) => {
    const refs = new Refs(t);
    let done = false;
    const a = newFence(refs, 1, DmaFence.contextAlloc(), ops({ signaled: () => done }));
    assert.equal(a.getStatus(), 0);
    done = true;
    assert.equal(a.getStatus(), 1);
    const b = newFence(refs, 1, DmaFence.contextAlloc(), ops({
      signaled: (x) => {
        x.setError(-ERRNO.ECANCELED);
        return true;
      },
    }));
    assert.equal(b.getStatus(), -125);
    assert.equal(b.signal(), -22);
  });
});

/* ---- waiting (§2.7) ---- */

describe('waitTimeout / waitTimeoutAsync (§2.7)', () => {
  test('waitTimeout() on a signalled fence returns the timeout, or 1 when the timeout is 0', (t) => {
    const refs = new Refs(t);
    const f = signalledFence(refs);
    assert.equal(f.waitTimeout(1000), 1000);
    assert.equal(f.waitTimeout(0), 1);
    assert.equal(f.waitTimeout(Infinity), Infinity);
    assert.equal(f.wait(), 0);
  });

  test('waitTimeout(0) on a pending fence returns 0 and does not signal it', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(f.waitTimeout(0), 0);
    assert.equal(f.getStatus(), 0);
  });

  test('waitTimeout() returns 0 when the time runs out', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(f.waitTimeout(20), 0);
    assert.equal(f.getStatus(), 0);
  });

  test('waitTimeout() with a negative timeout throws EINVAL', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.throws(() => f.waitTimeout(-1), { code: 'EINVAL' });
    const g = signalledFence(refs);
    assert.throws(() => g.waitTimeout(-5), { code: 'EINVAL' });
  });

  test('waitTimeout() and wait() with an aborted AbortSignal return -ERESTARTSYS (-512)', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const signal = AbortSignal.abort();
    assert.equal(f.waitTimeout(HANG_GUARD_MS, { signal }), -512);
    assert.equal(f.waitTimeout(0, { signal }), -ERRNO.ERESTARTSYS);
    assert.equal(f.wait({ signal }), -512);
    assert.equal(f.getStatus(), 0);
  });

  test('waitTimeout() on a signalled fence returns the timeout even with an aborted signal', (t) => {
    const refs = new Refs(t);
    const f = signalledFence(refs);
    assert.equal(f.waitTimeout(100, { signal: AbortSignal.abort() }), 100);
  });

  test('waitTimeout() with intr: false ignores an aborted signal', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(f.waitTimeout(10, { intr: false, signal: AbortSignal.abort() }), 0);
  });

  test('waitTimeoutAsync() on a signalled fence resolves with the timeout, or 1 for 0', async (t) => {
    const refs = new Refs(t);
    const f = signalledFence(refs);
    assert.equal(await f.waitTimeoutAsync(1000), 1000);
    assert.equal(await f.waitTimeoutAsync(0), 1);
    assert.equal(await f.waitAsync(), 0);
  });

  test('waitTimeoutAsync() resolves with the remaining time when another party signals', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    let settled = false;
    const p = f.waitTimeoutAsync(HANG_GUARD_MS).then((r) => {
      settled = true;
      return r;
    });
    await tick();
    assert.equal(settled, false);
    assert.equal(f.getStatus(), 0);
    f.signal();
    const r = await p;
    assert.ok(r > 0 && r <= HANG_GUARD_MS, `remaining ${r}`);
  });

  test('waitAsync() resolves 0 when another party signals', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const p = f.waitAsync();
    await tick();
    f.signal();
    assert.equal(await p, 0);
  });

  test('waitTimeoutAsync() with 0 on a pending fence resolves 0; a timed-out one resolves 0', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(await f.waitTimeoutAsync(0), 0);
    assert.equal(await f.waitTimeoutAsync(20), 0);
    assert.equal(f.getStatus(), 0);
  });

  test('waitTimeoutAsync() with a negative timeout rejects with EINVAL', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    await assert.rejects(f.waitTimeoutAsync(-1), { code: 'EINVAL' });
  });

  test('waitTimeoutAsync() / waitAsync() end with -512 when the AbortController aborts', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const ac = new AbortController();
    const p1 = f.waitTimeoutAsync(HANG_GUARD_MS, { signal: ac.signal });
    const p2 = f.waitAsync({ signal: ac.signal });
    await tick();
    ac.abort();
    assert.equal(await p1, -512);
    assert.equal(await p2, -ERRNO.ERESTARTSYS);
    assert.equal(f.getStatus(), 0, 'aborting a wait does not signal');
    assert.equal(f.signal(), 0);
  });

  test('waitTimeoutAsync() with an already aborted signal resolves -512', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.equal(await f.waitTimeoutAsync(HANG_GUARD_MS, { signal: AbortSignal.abort() }), -512);
  });

  test('waits on fences that reuse the slots of freed fences with armed callbacks still wake (no lost wake-up)',
    { timeout: 15_000 }, async (t) => {
      const refs = new Refs(t);
      // Old fences whose callback delivery is armed (an async waiter on their state
      // word) are signalled and freed; new fences take their slots while those stale
      // waiters have not settled yet. Waiting on the new fences must still wake.
      const N = 16;
      const old = Array.from({ length: N }, () => DmaFence.init(ops(), DmaFence.contextAlloc(), 1));
      let ran = 0;
      for (const f of old) f.addCallback(() => void ran++);
      await tick(); // end of job: delivery from other threads is armed now
      const oldSlots = new Set(old.map((f) => f.slot));
      for (const f of old) {
        f.signal();
        f.put();
      }
      assert.equal(ran, N);
      const fresh = Array.from({ length: N }, () => newFence(refs));
      const reused = fresh.filter((f) => oldSlots.has(f.slot)).length;
      const waits = fresh.map((f) => f.waitAsync()); // forever: only the test timeout guards a lost wake-up
      await tick();
      await tick(); // the stale waiters of the old fences settle here
      for (const f of fresh) f.signal();
      assert.deepEqual(await Promise.all(waits), fresh.map(() => 0));
      t.diagnostic(`${reused} of ${N} slots were reused`);
    });

  test('waitTimeoutAsync() with intr: false is not ended by an abort', async (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const ac = new AbortController();
    const p = f.waitTimeoutAsync(HANG_GUARD_MS, { intr: false, signal: ac.signal });
    ac.abort();
    await tick();
    f.signal();
    const r = await p;
    assert.ok(r > 0, `remaining ${r}`);
  });
});

describe('waitAnyTimeout / waitAnyTimeoutAsync (§2.7)', () => {
  test('waitAnyTimeout() throws EINVAL for an empty list or a negative timeout', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.throws(() => DmaFence.waitAnyTimeout([], 10), { code: 'EINVAL' });
    assert.throws(() => DmaFence.waitAnyTimeout([], 0), { code: 'EINVAL' });
    assert.throws(() => DmaFence.waitAnyTimeout([f], -1), { code: 'EINVAL' });
  });

  test('waitAnyTimeout(…, 0): 0 when none is signalled, else 1 with the first signalled index', (t) => {
    const refs = new Refs(t);
    const fs = [newFence(refs), newFence(refs), newFence(refs), newFence(refs)];
    const none = DmaFence.waitAnyTimeout(fs, 0);
    assert.equal(none.ret, 0);
    assert.equal(none.idx, -1);
    fs[3]!.signal();
    fs[1]!.signal();
    assert.deepEqual(DmaFence.waitAnyTimeout(fs, 0), { ret: 1, idx: 1 });
  });

  test('waitAnyTimeout() with an already signalled fence returns the timeout and its index', (t) => {
    const refs = new Refs(t);
    const fs = [newFence(refs), newFence(refs), newFence(refs)];
    fs[2]!.signal();
    assert.deepEqual(DmaFence.waitAnyTimeout(fs, 500), { ret: 500, idx: 2 });
    fs[0]!.signal();
    assert.deepEqual(DmaFence.waitAnyTimeout(fs, 500), { ret: 500, idx: 0 });
  });

  test('waitAnyTimeout() returns 0 when the time runs out, and enabled signalling on every fence', (t) => {
    const refs = new Refs(t);
    let calls = 0;
    const o = ops({ enableSignaling: () => (calls++, true) });
    const fs = [newFence(refs, 1, DmaFence.contextAlloc(), o), newFence(refs, 1, DmaFence.contextAlloc(), o)];
    const r = DmaFence.waitAnyTimeout(fs, 20);
    assert.equal(r.ret, 0);
    assert.equal(r.idx, -1);
    assert.equal(calls, 2);
    for (const f of fs) assert.equal(f.getStatus(), 0);
  });

  test('waitAnyTimeout() with an aborted signal returns -512', (t) => {
    const refs = new Refs(t);
    const fs = [newFence(refs), newFence(refs)];
    assert.equal(DmaFence.waitAnyTimeout(fs, HANG_GUARD_MS, { signal: AbortSignal.abort() }).ret, -512);
  });

  test('waitAnyTimeoutAsync() resolves with the index of the fence another party signals', async (t) => {
    const refs = new Refs(t);
    const fs = [newFence(refs), newFence(refs), newFence(refs)];
    const p = DmaFence.waitAnyTimeoutAsync(fs, HANG_GUARD_MS);
    await tick();
    assert.equal(DmaFence.waitAnyTimeout(fs, 0).ret, 0);
    fs[1]!.signal();
    const r = await p;
    assert.equal(r.idx, 1);
    assert.ok(r.ret > 0 && r.ret <= HANG_GUARD_MS, `remaining ${r.ret}`);
  });

  test('waitAnyTimeoutAsync(): same conventions for empty lists, 0 and signalled fences', async (t) => {
    const refs = new Refs(t);
    await assert.rejects(DmaFence.waitAnyTimeoutAsync([], 10), { code: 'EINVAL' });
    const fs = [newFence(refs), newFence(refs)];
    await assert.rejects(DmaFence.waitAnyTimeoutAsync(fs, -1), { code: 'EINVAL' });
    assert.deepEqual(await DmaFence.waitAnyTimeoutAsync(fs, 0), { ret: 0, idx: -1 });
    assert.equal((await DmaFence.waitAnyTimeoutAsync(fs, 20)).ret, 0);
    fs[1]!.signal();
    assert.deepEqual(await DmaFence.waitAnyTimeoutAsync(fs, 0), { ret: 1, idx: 1 });
    assert.deepEqual(await DmaFence.waitAnyTimeoutAsync(fs, 300), { ret: 300, idx: 1 });
  });

  test('waitAnyTimeoutAsync() ends with -512 when aborted', async (t) => {
    const refs = new Refs(t);
    const fs = [newFence(refs), newFence(refs)];
    const ac = new AbortController();
    const p = DmaFence.waitAnyTimeoutAsync(fs, HANG_GUARD_MS, { signal: ac.signal });
    await tick();
    ac.abort();
    assert.equal((await p).ret, -512);
    assert.equal((await DmaFence.waitAnyTimeoutAsync(fs, HANG_GUARD_MS, { signal: AbortSignal.abort() })).ret, -512);
  });
});

/* ---- deadlines (§2.8) ---- */

describe('deadlines (§2.8)', () => {
  test('setDeadline() forwards every hint to the op and the deadline getter keeps the earliest', (t) => {
    const refs = new Refs(t);
    const hints: bigint[] = [];
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ setDeadline: (_f, d) => void hints.push(d) }));
    assert.equal(f.deadline, undefined);
    f.setDeadline(5_000_000_000n);
    assert.equal(f.deadline, 5_000_000_000n);
    f.setDeadline(7_000_000_000n);
    assert.equal(f.deadline, 5_000_000_000n);
    f.setDeadline(3_000_000_000n);
    assert.equal(f.deadline, 3_000_000_000n);
    assert.deepEqual(hints, [5_000_000_000n, 7_000_000_000n, 3_000_000_000n]);
    assert.equal(f.getStatus(), 0, 'a deadline is only a hint');
  });

  test('setDeadline() keeps 64-bit deadlines exactly', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const d = 17_280_000_000_000_001n;
    f.setDeadline(d + 1n);
    f.setDeadline(d);
    assert.equal(f.deadline, d);
    f.setDeadline(d + 1n);
    assert.equal(f.deadline, d, 'd + 1 is later: the earliest is kept');
  });

  test('setDeadline() is ignored once the fence is signalled', (t) => {
    const refs = new Refs(t);
    let hints = 0;
    const f = newFence(refs, 1, DmaFence.contextAlloc(), ops({ setDeadline: () => void hints++ }));
    f.setDeadline(9_000n);
    f.signal();
    f.setDeadline(1_000n);
    assert.equal(f.deadline, 9_000n);
    assert.equal(hints, 1);
    const g = signalledFence(refs);
    g.setDeadline(1_000n);
    assert.equal(g.deadline, undefined);
  });

  test('setDeadline() throws TypeError for a non-bigint deadline', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    assert.throws(() => f.setDeadline(5 as unknown as bigint), TypeError);
    assert.equal(f.deadline, undefined);
  });
});

/* ---- stubs, references, release (§2.9) ---- */

describe('stubs, references and release (§2.9)', () => {
  test('getStub() is one signalled fence on context 0, the same one every call', () => {
    const before = liveObjects();
    const a = DmaFence.getStub();
    const b = DmaFence.getStub();
    assert.equal(a, b, 'one view of one slot per thread');
    assert.equal(a.slot, b.slot);
    assert.equal(liveObjects(), before, 'no new object');
    assert.equal(a.context, 0n);
    assert.equal(a.seqno, 0n);
    assert.equal(a.driverName, 'stub');
    assert.equal(a.timelineName, 'stub');
    assert.equal(a.isSignaled(), true);
    assert.equal(a.getStatus(), 1);
    assert.equal(a.timestamp(), b.timestamp());
    assert.equal(a.addCallback(() => assert.fail('stub callback ran')), -2);
    assert.equal(a.signal(), -22);
    a.put();
    b.put();
    const c = DmaFence.getStub();
    assert.equal(c.getStatus(), 1, 'the stub survives its users');
    c.put();
    assert.equal(liveObjects(), before);
  });

  test('allocatePrivateStub(ts) is a new, independent, signalled fence with timestamp ts', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const a = refs.fence(DmaFence.allocatePrivateStub(123_456_789n));
    const b = refs.fence(DmaFence.allocatePrivateStub(42n));
    assert.equal(liveObjects(), before + 2);
    assert.notEqual(a, b);
    assert.equal(a.isSignaled(), true);
    assert.equal(a.getStatus(), 1);
    assert.equal(a.timestamp(), 123_456_789n);
    assert.equal(b.timestamp(), 42n);
    assert.equal(a.addCallback(() => assert.fail('ran')), -2);
    const stub = DmaFence.getStub();
    assert.notEqual(a, stub);
    stub.put();
    refs.releaseAll();
    assert.equal(liveObjects(), before);
  });

  test('get() returns the same object and needs its own put()', () => {
    const before = liveObjects();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    assert.equal(f.get(), f);
    f.put();
    assert.equal(f.getStatus(), 0, 'still usable after dropping one of two references');
    assert.equal(liveObjects(), before + 1);
    f.get();
    f[Symbol.dispose]();
    f.put();
    assert.equal(liveObjects(), before);
  });

  test('put() after the last put() throws EINVAL; so does using the fence', () => {
    const before = liveObjects();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    f.put();
    assert.equal(liveObjects(), before);
    assert.throws(() => f.put(), { code: 'EINVAL' });
    assert.throws(() => f.signal(), { code: 'EINVAL' });
    assert.throws(() => f.get(), { code: 'EINVAL' });
    assert.throws(() => f.share(), { code: 'EINVAL' });
    assert.throws(() => f.addCallback(() => {}), { code: 'EINVAL' });
    assert.throws(() => f.waitTimeout(0), { code: 'EINVAL' });
    assert.equal(liveObjects(), before);
  });

  test('the release op runs once, when the last reference is dropped', () => {
    let released = 0;
    const seen: unknown[] = [];
    const f = DmaFence.init(ops({ release: (x) => void (released++, seen.push(x)) }), DmaFence.contextAlloc(), 1);
    f.get();
    f.signal();
    f.put();
    assert.equal(released, 0);
    f.put();
    assert.equal(released, 1);
    assert.equal(seen[0], f);
  });

  test('last put() of an unsignalled fence with pending callbacks signals it with -EDEADLK (-35)', () => {
    const before = liveObjects();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    const seen: Array<[number, number]> = [];
    f.addCallback((x) => void seen.push([x.getStatus(), x.error]));
    f.addCallback((x) => void seen.push([x.getStatus(), x.error]));
    f.put();
    assert.deepEqual(seen, [[-35, -35], [-ERRNO.EDEADLK, -ERRNO.EDEADLK]], 'both callbacks ran, once, with -EDEADLK');
    assert.equal(liveObjects(), before);
  });

  test('put() with pending callbacks but another reference left does not signal', () => {
    const before = liveObjects();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    f.get();
    let status: number | undefined;
    f.addCallback((x) => {
      status = x.getStatus();
    });
    f.put();
    assert.equal(status, undefined);
    assert.equal(f.getStatus(), 0);
    f.put();
    assert.equal(status, -35, 'the last put signals with -EDEADLK');
    assert.equal(liveObjects(), before);
  });

  test('the last put() of a fence whose callbacks were all removed does not run them', () => {
    const before = liveObjects();
    let ran = 0;
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    const cb = (): void => void ran++;
    f.addCallback(cb);
    assert.equal(f.removeCallback(cb), true);
    f.put();
    assert.equal(ran, 0);
    assert.equal(liveObjects(), before);
  });
});

/* ---- describe() ---- */

describe('describe() (§2.9)', () => {
  test('describe() is "<driver> <timeline> seq <seqno> unsignalled|signalled"', (t) => {
    const refs = new Refs(t);
    const f = refs.fence(DmaFence.init(ops({ getDriverName: () => 'i915', getTimelineName: () => 'ring0' }),
      DmaFence.contextAlloc(), 77));
    assert.equal(f.describe(), 'i915 ring0 seq 77 unsignalled');
    f.signal();
    assert.equal(f.describe(), 'i915 ring0 seq 77 signalled');
    const g = refs.fence(DmaFence.init64(ops(), DmaFence.contextAlloc(), U64_MAX));
    assert.equal(g.describe(), `test-drv test-tl seq ${U64_MAX} unsignalled`);
  });
});

/* ---- share / receive in one thread ---- */

describe('share() and receive()', () => {
  test('receive() of a share() token gives this thread the fence with one more reference', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const f = refs.fence(DmaFence.init(ops(), DmaFence.contextAlloc(), 3));
    const token = f.share();
    const g = refs.fence(DmaFence.receive(token));
    assert.equal(g, f, 'one view per fence per thread');
    assert.equal(g.seqno, 3n);
    f.signal();
    assert.equal(g.getStatus(), 1);
    refs.releaseAll();
    assert.equal(liveObjects(), before, 'the token and both references are gone');
  });

  test('a token keeps the fence alive after the sender drops its reference', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 8);
    f.signalTimestamp(99n);
    const token = f.share();
    f.put();
    assert.ok(liveObjects() > before);
    const g = refs.fence(DmaFence.receive(token));
    assert.equal(g.seqno, 8n);
    assert.equal(g.timestamp(), 99n);
    refs.releaseAll();
    assert.equal(liveObjects(), before);
  });

  test('receive() of a token already received throws EINVAL', (t) => {
    const refs = new Refs(t);
    const f = newFence(refs);
    const token = f.share();
    refs.fence(DmaFence.receive(token));
    assert.throws(() => DmaFence.receive(token), { code: 'EINVAL' });
  });

  test('receive() of something that is not a fence token throws EINVAL and leaks nothing', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    assert.throws(() => DmaFence.receive({}), { code: 'EINVAL' });
    assert.throws(() => DmaFence.receive(null), { code: 'EINVAL' });
    const tl = refs.timeline(SwSyncTimeline.create('not-a-fence'));
    assert.throws(() => DmaFence.receive(tl.share()), { code: 'EINVAL' });
    refs.releaseAll();
    assert.equal(liveObjects(), before);
  });
});

/* ---- across worker threads ---- */

describe('fences across worker threads', () => {
  test('a fence shared to a worker and signalled here wakes a blocking waitTimeout() there', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const f = newFence(refs);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    const done = w.call<WaitReport>({ op: 'wait', name: 'f', timeoutMs: HANG_GUARD_MS });
    const ev = await w.event((e) => e.event === 'waiting' && e.name === 'f');
    assert.equal(ev.event === 'waiting' && ev.status, 0);
    assert.equal(f.signal(), 0);
    const rep = await done;
    assert.equal(rep.before, 0, 'the fence was pending when the worker started to wait');
    assert.ok(rep.ret > 0 && rep.ret <= HANG_GUARD_MS, `worker's wait returned ${rep.ret}`);
    assert.equal(rep.after, 1);
    await w.stop();
  });

  test('one signal wakes every worker blocked in waitTimeout() on the fence', async (t) => {
    const refs = new Refs(t);
    const ws = [0, 1, 2].map(() => refs.worker(new FenceWorker()));
    const f = newFence(refs);
    for (const w of ws) await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    const done = ws.map((w) => w.call<WaitReport>({ op: 'wait', name: 'f', timeoutMs: HANG_GUARD_MS }));
    for (const w of ws) await w.event((e) => e.event === 'waiting');
    f.signal();
    for (const rep of await Promise.all(done)) {
      assert.equal(rep.before, 0);
      assert.ok(rep.ret > 0, `a worker's wait returned ${rep.ret}`);
      assert.equal(rep.after, 1);
    }
    await Promise.all(ws.map((w) => w.stop()));
  });

  test('a fence created in a worker and signalled there wakes a blocking waitTimeout() here', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const ctx = DmaFence.contextAlloc();
    await w.call({ op: 'initFence', name: 'g', context: ctx, seqno: 5 });
    const f = refs.fence(DmaFence.receive(await w.call({ op: 'shareFence', name: 'g' })));
    assert.equal(f.context, ctx);
    assert.equal(f.seqno, 5n);
    assert.equal(f.driverName, 'worker-drv');
    assert.equal(f.timelineName, 'worker-tl');
    const g = gate();
    const signalled = w.call<number>({ op: 'signal', name: 'g', gate: g.sab, delayMs: 20 });
    assert.equal(f.getStatus(), 0, 'pending before this thread blocks');
    g.open();
    const ret = f.waitTimeout(HANG_GUARD_MS); // blocks this thread until the worker signals
    assert.ok(ret > 0 && ret <= HANG_GUARD_MS, `waitTimeout returned ${ret}`);
    assert.equal(f.getStatus(), 1);
    assert.equal(await signalled, 0);
    await w.stop();
  });

  test('a worker blocked in waitTimeout() sees the error set here before the signal', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const f = newFence(refs);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    const done = w.call<WaitReport>({ op: 'wait', name: 'f', timeoutMs: HANG_GUARD_MS });
    await w.event((e) => e.event === 'waiting');
    f.setError(-ERRNO.ECANCELED);
    f.signal();
    const rep = await done;
    assert.ok(rep.ret > 0);
    assert.equal(rep.after, -125);
    await w.stop();
  });

  test('an error set in a worker before the signal is the status here; setError() after it is EINVAL there',
    async (t) => {
      const refs = new Refs(t);
      const w = refs.worker(new FenceWorker());
      const f = newFence(refs);
      await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
      await w.call({ op: 'setError', name: 'f', error: -ERRNO.ETIME });
      assert.equal(f.getStatus(), 0);
      f.signal();
      assert.equal(f.getStatus(), -62);
      await assert.rejects(w.call({ op: 'setError', name: 'f', error: -ERRNO.EINVAL }), { code: 'EINVAL' });
      assert.equal(f.error, -62);
      await w.stop();
    });

  test("a worker's waitTimeoutAsync() resolves when this thread signals", async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const f = newFence(refs);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    const done = w.call<WaitReport>({ op: 'waitAsync', name: 'f', timeoutMs: HANG_GUARD_MS });
    await w.event((e) => e.event === 'waiting');
    f.signal();
    const rep = await done;
    assert.equal(rep.before, 0);
    assert.ok(rep.ret > 0 && rep.ret <= HANG_GUARD_MS, `remaining ${rep.ret}`);
    assert.equal(rep.after, 1);
    await w.stop();
  });

  test('callbacks added in a worker run in that worker, FIFO, when this thread signals', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const workerThread = await w.call<number>({ op: 'threadId' });
    const f = newFence(refs);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    assert.equal(await w.call({ op: 'addCallback', name: 'f', tag: 'first' }), 0);
    assert.equal(await w.call({ op: 'addCallback', name: 'f', tag: 'second' }), 0);
    const local: string[] = [];
    f.addCallback(() => local.push('main'));
    f.signal();
    assert.deepEqual(local, ['main'], "this thread's callback ran inside signal()");
    const first = await w.event((e) => e.event === 'callback');
    const second = await w.event((e) => e.event === 'callback');
    for (const [ev, tag] of [[first, 'first'], [second, 'second']] as const) {
      assert.ok(ev.event === 'callback');
      assert.equal(ev.tag, tag);
      assert.equal(ev.threadId, workerThread, 'ran in the worker');
      assert.equal(ev.status, 1);
      assert.equal(ev.isArg, true);
    }
    assert.equal(await w.call({ op: 'addCallback', name: 'f', tag: 'late' }), -2);
    await w.stop();
    assert.equal(w.unclaimedEvents.length, 0, 'no callback ran twice, none ran after signal');
  });

  test("callbacks of this thread run here when a worker signals", async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const f = newFence(refs);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    const log: number[] = [];
    let resolve!: () => void;
    const ran = new Promise<void>((r) => {
      resolve = r;
    });
    f.addCallback((x) => {
      log.push(x.getStatus());
      resolve();
    });
    assert.equal(await w.call({ op: 'signal', name: 'f' }), 0);
    await ran;
    assert.deepEqual(log, [1]);
    assert.equal(f.signal(), -22);
    await w.stop();
    assert.deepEqual(log, [1]);
  });

  test('a blocking waitAnyTimeout() here wakes with the index of the fence a worker signals', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const fs = [newFence(refs), newFence(refs), newFence(refs)];
    await w.call({ op: 'receiveFence', name: 'f1', token: fs[1]!.share() });
    const g = gate();
    const signalled = w.call<number>({ op: 'signal', name: 'f1', gate: g.sab, delayMs: 20 });
    assert.equal(DmaFence.waitAnyTimeout(fs, 0).ret, 0);
    g.open();
    const r = DmaFence.waitAnyTimeout(fs, HANG_GUARD_MS);
    assert.equal(r.idx, 1);
    assert.ok(r.ret > 0 && r.ret <= HANG_GUARD_MS, `returned ${r.ret}`);
    assert.equal(await signalled, 0);
    await w.stop();
  });

  test("a worker's deadline and enable requests are recorded in the shared fence", async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const f = newFence(refs);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    await w.call({ op: 'setDeadline', name: 'f', ns: 8_000n });
    assert.equal(f.deadline, 8_000n);
    f.setDeadline(9_000n);
    assert.equal(await w.call({ op: 'deadline', name: 'f' }), 8_000n, 'the earliest is kept for everyone');
    assert.equal(f.flags & DMA_FENCE_FLAG_ENABLE_SIGNAL, 0);
    assert.equal(await w.call({ op: 'addCallback', name: 'f', tag: 'x' }), 0);
    assert.notEqual(f.flags & DMA_FENCE_FLAG_ENABLE_SIGNAL, 0);
    f.signal();
    await w.event((e) => e.event === 'callback');
    await w.stop();
  });

  test('put() with callbacks pending while a worker holds the fence: no -EDEADLK, callbacks run on its signal',
    async (t) => {
      const refs = new Refs(t);
      const w = refs.worker(new FenceWorker());
      const before = liveObjects();
      const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
      await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
      const seen: number[] = [];
      let resolve!: () => void;
      const ran = new Promise<void>((r) => {
        resolve = r;
      });
      f.addCallback((x) => {
        seen.push(x.getStatus());
        resolve();
      });
      f.put(); // this thread's last reference; the worker still holds the fence
      assert.deepEqual(seen, []);
      assert.equal(await w.call({ op: 'status', name: 'f' }), 0, 'not signalled with -EDEADLK');
      assert.equal(await w.call({ op: 'signal', name: 'f' }), 0);
      await ran;
      assert.deepEqual(seen, [1]);
      await w.call({ op: 'put', name: 'f' });
      assert.equal(await pollLiveObjects(before), before);
      await w.stop();
    });

  test('a token received by a worker cannot be received again here (EINVAL)', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const f = newFence(refs);
    const token = f.share();
    await w.call({ op: 'receiveFence', name: 'f', token });
    assert.throws(() => DmaFence.receive(token), { code: 'EINVAL' });
    await assert.rejects(w.call({ op: 'tryReceiveFence', token }), { code: 'EINVAL' });
    await w.stop();
  });

  test("a terminated worker's fence references are reclaimed", async (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const w = new FenceWorker();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    await w.call({ op: 'initFence', name: 'own', context: DmaFence.contextAlloc(), seqno: 1 });
    f.put();
    // The worker's own fence is private to it (never shared, so not in the shared table; its
    // heap goes with the thread); the fence it received is shared and held only by the worker now.
    assert.ok(liveObjects() >= before + 1);
    await w.worker.terminate();
    await w.exited;
    assert.equal(await pollLiveObjects(before), before);
    refs.releaseAll();
  });
});

/* ---- private until shared ---- */

describe('a driver fence is private to its thread until something shares it', () => {
  test('liveObjects() counts a private fence, and its last put() releases it', () => {
    const before = liveObjects();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    assert.equal(liveObjects(), before + 1);
    f.signal();
    f.put();
    assert.equal(liveObjects(), before);
  });

  test('state set while private (error, deadline, enable, references) is what another thread sees', async () => {
    const before = liveObjects();
    const w = new FenceWorker();
    const ctx = DmaFence.contextAlloc();
    const f = DmaFence.init64(ops(), ctx, 2n ** 40n + 7n);
    f.get();
    f.get(); // three references while private
    f.setError(-ERRNO.ECANCELED);
    f.setDeadline(5_000n);
    f.setDeadline(3_000n);
    f.enableSwSignaling();
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() }); // takes its slot now
    assert.equal(await w.call({ op: 'deadline', name: 'f' }), 3_000n);
    const flags = (await w.call({ op: 'flags', name: 'f' })) as number;
    assert.ok(flags & DMA_FENCE_FLAG_ENABLE_SIGNAL);
    assert.ok(flags & DMA_FENCE_FLAG_SEQNO64);
    assert.equal(await w.call({ op: 'status', name: 'f' }), 0);
    f.signal();
    assert.equal(await w.call({ op: 'status', name: 'f' }), -ERRNO.ECANCELED);
    f.put();
    f.put();
    assert.equal(f.seqno, 2n ** 40n + 7n, 'one reference of the three is left');
    f.put();
    await w.call({ op: 'put', name: 'f' });
    await w.stop();
    assert.equal(await pollLiveObjects(before), before);
  });

  test('a fence signalled while private arrives signalled, with its timestamp', async () => {
    const w = new FenceWorker();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    f.signalTimestamp(123_456_789n);
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    assert.equal(await w.call({ op: 'status', name: 'f' }), 1);
    assert.equal(f.timestamp(), 123_456_789n);
    f.put();
    await w.call({ op: 'put', name: 'f' });
    await w.stop();
  });

  test('callbacks queued while private run in this thread when another thread signals after sharing', async () => {
    const w = new FenceWorker();
    const f = DmaFence.init(ops(), DmaFence.contextAlloc(), 1);
    const ran = new Promise<number>((resolve) => {
      assert.equal(f.addCallback((g) => resolve(g.getStatus())), 0);
    });
    await w.call({ op: 'receiveFence', name: 'f', token: f.share() });
    await w.call({ op: 'signal', name: 'f' });
    assert.equal(await ran, 1);
    f.put();
    await w.call({ op: 'put', name: 'f' });
    await w.stop();
  });
});

/* ---- leak check ---- */

test('no objects leaked by this file (liveObjects() back to the baseline)', async () => {
  assert.equal(await pollLiveObjects(BASELINE), BASELINE);
});
