/**
 * dma_fence_array (kernel-contract §4.2, §2.3, §2.6–2.8): one fence for many.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dmaFenceArrayCreate, dmaFenceArrayMembers, dmaFenceChainInit, dmaFenceMatchContext, DmaFence, ERRNO, isContainer,
  isDmaFenceArray, isDmaFenceChain, liveObjects, SwSyncTimeline,
} from 'dmabuf';
import type { DmaFenceOps } from 'dmabuf';
import { guard, turn } from './support/async.js';
import { driverFence, ops, putAll } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';
import { RpcClient } from './support/worker-rpc.js';
import type { ContainerCommand, ContainerEvent } from './workers/container-worker.js';

installLeakCheck('every object created by this file was released');

for (const signalOnAny of [false, true]) {
  describe(`signal on ${signalOnAny ? 'any' : 'all'}`, () => {
    test(`is pending while no member has signalled`, () => {
      const a = driverFence();
      const b = driverFence();
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, signalOnAny);
      assert.equal(arr.getStatus(), 0);
      assert.equal(arr.isSignaled(), false);
      assert.equal(arr.waitTimeout(0), 0);
      // Members must signal eventually: an enabled array holds itself until they do (as in the kernel).
      a.signal();
      b.signal();
      assert.equal(arr.getStatus(), 1);
      putAll(arr, a, b);
    });

    test(signalOnAny ? 'signals as soon as one member signals' : 'stays pending until the last member signals', () => {
      const a = driverFence();
      const b = driverFence();
      const c = driverFence();
      const arr = dmaFenceArrayCreate([a, b, c], DmaFence.contextAlloc(1), 1, signalOnAny);
      b.signal();
      assert.equal(arr.getStatus(), signalOnAny ? 1 : 0);
      c.signal();
      assert.equal(arr.getStatus(), signalOnAny ? 1 : 0);
      a.signal();
      assert.equal(arr.getStatus(), 1);
      assert.equal(arr.isSignaled(), true);
      putAll(arr, a, b, c);
    });

    test('callbacks on the array run exactly once, when the array completes', async () => {
      const a = driverFence();
      const b = driverFence();
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, signalOnAny);
      const calls: DmaFence[] = [];
      let fired!: () => void;
      const done = new Promise<void>((resolve) => {
        fired = resolve;
      });
      assert.equal(arr.addCallback((f) => {
        calls.push(f);
        fired();
      }), 0);
      b.signal();
      await turn();
      if (!signalOnAny) {
        assert.equal(calls.length, 0, 'an all-array callback must not run before the last member signals');
        assert.equal(arr.getStatus(), 0);
        a.signal();
      }
      await guard(done);
      await turn();
      assert.equal(calls.length, 1);
      assert.equal(calls[0], arr);
      assert.equal(arr.getStatus(), 1);
      if (signalOnAny) a.signal();
      await turn();
      assert.equal(calls.length, 1, 'a callback runs once');
      putAll(arr, a, b);
    });

    test('an array whose members are all already signalled is born signalled', () => {
      const a = driverFence();
      const b = driverFence();
      a.signal();
      b.signal();
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, signalOnAny);
      assert.equal(arr.isSignaled(), true);
      assert.equal(arr.getStatus(), 1);
      assert.equal(arr.addCallback(() => assert.fail('must not be called')), -ERRNO.ENOENT);
      assert.equal(arr.waitTimeout(0), 1);
      putAll(arr, a, b);
    });

    test('waitTimeoutAsync resolves with the remaining time once the array completes', async () => {
      const a = driverFence();
      const b = driverFence();
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, signalOnAny);
      assert.equal(await arr.waitTimeoutAsync(0), 0);
      const p = arr.waitTimeoutAsync(30_000);
      a.signal();
      if (!signalOnAny) {
        await turn();
        assert.equal(arr.getStatus(), 0);
        b.signal();
      }
      const r = await guard(p);
      assert.ok(r > 0, `remaining time ${r}`);
      assert.equal(arr.getStatus(), 1);
      if (signalOnAny) b.signal();
      putAll(arr, a, b);
    });
  });
}

describe('error propagation', () => {
  test('an array whose members all succeed has error 0 and status 1', () => {
    const a = driverFence();
    const b = driverFence();
    const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
    a.signal();
    b.signal();
    assert.equal(arr.getStatus(), 1);
    assert.equal(arr.error, 0);
    putAll(arr, a, b);
  });

  test('the array carries the error of the member that signalled first with an error', () => {
    const ok = driverFence();
    const late = driverFence();
    const early = driverFence();
    // Members listed so that member order and signal order disagree.
    const arr = dmaFenceArrayCreate([ok, late, early], DmaFence.contextAlloc(1), 1, false);
    ok.signal();
    early.setError(-ERRNO.ETIME);
    early.signal();
    late.setError(-ERRNO.ENODATA);
    late.signalTimestamp(early.timestamp() + 1_000_000n);
    assert.equal(arr.getStatus(), -ERRNO.ETIME);
    assert.equal(arr.error, -ERRNO.ETIME);
    putAll(arr, ok, late, early);
  });

  test('a failed member among succeeding ones makes the all-array fail with its error', async () => {
    const a = driverFence();
    const b = driverFence();
    const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
    let status: number | undefined;
    assert.equal(arr.addCallback((f) => {
      status = f.getStatus();
    }), 0);
    b.setError(-ERRNO.ECANCELED);
    b.signal();
    a.signal();
    await guard((async () => {
      while (status === undefined) await turn();
    })());
    assert.equal(status, -ERRNO.ECANCELED);
    assert.equal(arr.getStatus(), -ERRNO.ECANCELED);
    putAll(arr, a, b);
  });

  test('a signal-on-any array completed by a succeeding member has error 0', () => {
    const a = driverFence();
    const b = driverFence();
    const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, true);
    a.signal();
    assert.equal(arr.getStatus(), 1);
    b.setError(-ERRNO.ETIME);
    b.signal();
    assert.equal(arr.getStatus(), 1);
    assert.equal(arr.error, 0);
    putAll(arr, a, b);
  });

  test('a signal-on-any array completed by a failing member carries its error', () => {
    const a = driverFence();
    const b = driverFence();
    const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, true);
    b.setError(-ERRNO.ENOENT);
    b.signal();
    assert.equal(arr.getStatus(), -ERRNO.ENOENT);
    putAll(arr, a, b);
  });

  test('a sw_sync member failed by closing its timeline fails the array with -ENOENT', () => {
    const tl = SwSyncTimeline.create('arr-err');
    const pt = tl.createFence(1);
    const other = driverFence();
    const arr = dmaFenceArrayCreate([pt, other], DmaFence.contextAlloc(1), 1, false);
    tl.close();
    other.signal();
    assert.equal(arr.getStatus(), -ERRNO.ENOENT);
    putAll(arr, pt, other);
  });
});

describe('creation rules', () => {
  test('creating an array of zero fences fails with EINVAL', () => {
    const before = liveObjects();
    assert.throws(() => dmaFenceArrayCreate([], DmaFence.contextAlloc(1), 1, false), { code: 'EINVAL' });
    assert.equal(liveObjects(), before);
  });

  test('an array cannot contain an array (EINVAL)', () => {
    const a = driverFence();
    const inner = dmaFenceArrayCreate([a], DmaFence.contextAlloc(1), 1, false);
    assert.equal(isContainer(inner), true);
    const before = liveObjects();
    assert.throws(() => dmaFenceArrayCreate([a, inner], DmaFence.contextAlloc(1), 1, false), { code: 'EINVAL' });
    assert.equal(liveObjects(), before);
    putAll(inner, a);
  });

  test('an array cannot contain a chain (EINVAL)', () => {
    const a = driverFence();
    const chain = dmaFenceChainInit(null, a, 1);
    assert.equal(isDmaFenceChain(chain), true);
    const before = liveObjects();
    assert.throws(() => dmaFenceArrayCreate([chain], DmaFence.contextAlloc(1), 1, false), { code: 'EINVAL' });
    assert.equal(liveObjects(), before);
    putAll(chain, a);
  });

  test('the array takes its own member references: the caller puts its own and the members live on', () => {
    const a = driverFence(7);
    const ctx = a.context;
    const arr = dmaFenceArrayCreate([a], DmaFence.contextAlloc(1), 1, false);
    a.put();
    const [m] = dmaFenceArrayMembers(arr);
    assert.ok(m);
    assert.equal(m.context, ctx);
    assert.equal(m.seqno, 7n);
    assert.equal(m.getStatus(), 0);
    m.signal();
    assert.equal(arr.getStatus(), 1);
    putAll(m, arr);
  });

  test('an array keeps the members it was created with after callbacks of released fences settle', async () => {
    const a = driverFence(101);
    const b = driverFence(102);
    // Fences with callbacks armed, signalled and released just before the arrays are made,
    // so the arrays may reuse their slots while the callbacks' wake-ups are still in flight.
    const stale = [driverFence(), driverFence(), driverFence(), driverFence()];
    for (const s of stale) assert.equal(s.addCallback(() => {}), 0);
    await turn();
    for (const s of stale) s.signal();
    for (const s of [...stale].reverse()) s.put();
    const arr1 = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
    const arr2 = dmaFenceArrayCreate([b, a], DmaFence.contextAlloc(1), 1, false);
    await turn();
    await turn();
    for (const [arr, want] of [[arr1, [a, b]], [arr2, [b, a]]] as const) {
      const members = dmaFenceArrayMembers(arr);
      assert.deepEqual(members.map((m) => m.seqno), want.map((m) => m.seqno));
      assert.equal(members[0], want[0]);
      assert.equal(members[1], want[1]);
      putAll(...members);
    }
    a.signal();
    assert.equal(arr1.getStatus(), 0);
    b.signal();
    assert.equal(arr1.getStatus(), 1);
    assert.equal(arr2.getStatus(), 1);
    putAll(arr1, arr2, a, b);
  });

  test('the array has the context and seqno it was given and names "dma_fence_array" / "unbound"', () => {
    const a = driverFence();
    const ctx = DmaFence.contextAlloc(1);
    const arr = dmaFenceArrayCreate([a], ctx, 42, false);
    assert.equal(isDmaFenceArray(arr), true);
    assert.equal(isDmaFenceArray(a), false);
    assert.equal(arr.context, ctx);
    assert.equal(arr.seqno, 42n);
    assert.equal(arr.driverName, 'dma_fence_array');
    assert.equal(arr.timelineName, 'unbound');
    putAll(arr, a);
  });
});

describe('seqno ordering', () => {
  test('arrays compare seqnos as 32-bit wrapping numbers', () => {
    const a = driverFence();
    const ctx = DmaFence.contextAlloc(1);
    const low = dmaFenceArrayCreate([a], ctx, 1, false);
    const high = dmaFenceArrayCreate([a], ctx, 0xffffffff, false);
    const wide = dmaFenceArrayCreate([a], ctx, 0x1_0000_0002n, false);
    const half = dmaFenceArrayCreate([a], ctx, 0x8000_0001, false);
    assert.equal(low.is64, false);
    assert.equal(low.isLater(high), true, '1 is later than 0xffffffff (wrap)');
    assert.equal(high.isLater(low), false);
    assert.equal(wide.isLater(low), true, 'upper 32 bits ignored: 2 > 1');
    assert.equal(wide.isLater(high), true);
    assert.equal(half.isLater(low), false, 'distance exactly 2^31 is not later');
    assert.equal(low.isLater(half), false, 'distance exactly 2^31 is not later either way');
    putAll(low, high, wide, half, a);
  });

  test('comparing arrays of different contexts fails with EINVAL', () => {
    const a = driverFence();
    const x = dmaFenceArrayCreate([a], DmaFence.contextAlloc(1), 2, false);
    const y = dmaFenceArrayCreate([a], DmaFence.contextAlloc(1), 1, false);
    assert.throws(() => x.isLater(y), { code: 'EINVAL' });
    putAll(x, y, a);
  });
});

describe('deadlines', () => {
  test('setDeadline on an array is forwarded to every member', () => {
    const seen: Array<[number, bigint]> = [];
    const rec = (id: number): DmaFenceOps => ({
      getDriverName: () => 'test',
      getTimelineName: () => 'tl',
      setDeadline: (_f, ns) => {
        seen.push([id, ns]);
      },
    });
    const a = driverFence(1, rec(1));
    const b = driverFence(1, rec(2));
    const tl = SwSyncTimeline.create('arr-deadline');
    const pt = tl.createFence(5);
    const arr = dmaFenceArrayCreate([a, b, pt], DmaFence.contextAlloc(1), 1, false);
    assert.equal(a.deadline, undefined);
    arr.setDeadline(5_000_000n);
    assert.deepEqual(seen.sort((x, y) => x[0] - y[0]), [[1, 5_000_000n], [2, 5_000_000n]]);
    assert.equal(a.deadline, 5_000_000n);
    assert.equal(b.deadline, 5_000_000n);
    assert.equal(pt.deadline, 5_000_000n);
    arr.setDeadline(3_000_000n);
    assert.equal(a.deadline, 3_000_000n, 'the earliest deadline is kept');
    assert.equal(pt.deadline, 3_000_000n);
    arr.setDeadline(9_000_000n);
    assert.equal(b.deadline, 3_000_000n, 'a later deadline does not replace an earlier one');
    putAll(arr, a, b, pt);
    tl.close();
  });
});

describe('members and contexts', () => {
  test('dmaFenceArrayMembers returns the members in order, as new references to the same fences', () => {
    const a = driverFence();
    const b = driverFence();
    const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
    const members = dmaFenceArrayMembers(arr);
    assert.equal(members.length, 2);
    assert.equal(members[0], a);
    assert.equal(members[1], b);
    putAll(...members);
    assert.equal(a.getStatus(), 0, 'our own references are still good after putting the members');
    putAll(arr, a, b);
  });

  test('dmaFenceArrayMembers of a plain fence is the fence itself', () => {
    const a = driverFence();
    const members = dmaFenceArrayMembers(a);
    assert.equal(members.length, 1);
    assert.equal(members[0], a);
    putAll(...members, a);
  });

  test('dmaFenceMatchContext is true when every member is in the context', () => {
    const ctx = DmaFence.contextAlloc(1);
    const a = DmaFence.init(ops, ctx, 1);
    const b = DmaFence.init(ops, ctx, 2);
    const c = driverFence();
    const same = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
    const mixed = dmaFenceArrayCreate([a, c], DmaFence.contextAlloc(1), 1, false);
    assert.equal(dmaFenceMatchContext(same, ctx), true);
    assert.equal(dmaFenceMatchContext(mixed, ctx), false);
    assert.equal(dmaFenceMatchContext(a, ctx), true);
    assert.equal(dmaFenceMatchContext(c, ctx), false);
    putAll(same, mixed, a, b, c);
  });

  test('dmaFenceMatchContext matches an array by its members, not its own context, and keeps no references', () => {
    const before = liveObjects();
    const ctx = DmaFence.contextAlloc(1);
    const a = DmaFence.init(ops, ctx, 1);
    const b = DmaFence.init(ops, ctx, 2);
    const c = DmaFence.init(ops, ctx, 3);
    const arr = dmaFenceArrayCreate([a, b, c], DmaFence.contextAlloc(1), 1, false);
    // The first member already differs: the answer is known before the others are looked at.
    assert.equal(dmaFenceMatchContext(arr, arr.context), false);
    putAll(arr, a, b, c);
    assert.equal(liveObjects(), before, 'array and members are released once their holders put them');
  });
});

/* ---- a blocking wait woken by another thread ---- */

/** A container-worker; every reply and its exit are hang-guarded. */
class WorkerClient extends RpcClient<ContainerCommand & { delayMs?: number }, ContainerEvent> {
  constructor() {
    super(new URL('./workers/container-worker.js', import.meta.url), { callGuardMs: 20_000, stopGuardMs: 20_000 });
  }
}

describe('waiting across threads', () => {
  test('a blocking waitTimeout on an array returns when another thread signals its members', async () => {
    const client = new WorkerClient();
    try {
      const tl = SwSyncTimeline.create('arr-wait');
      const a = tl.createFence(1);
      const b = tl.createFence(2);
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
      await client.call({ op: 'receiveTimeline', timeline: 'tl', token: tl.share() });
      assert.equal(arr.getStatus(), 0);
      // The worker increments twice after a short sleep each; the main thread blocks meanwhile.
      const inc1 = client.call({ op: 'inc', timeline: 'tl', n: 1, delayMs: 20 });
      const inc2 = client.call({ op: 'inc', timeline: 'tl', n: 1, delayMs: 20 });
      const r = arr.waitTimeout(30_000);
      assert.ok(r > 0, `waitTimeout returned ${r} (timeline at ${tl.value}, members ${a.getStatus()}/${b.getStatus()})`);
      assert.equal(arr.getStatus(), 1);
      assert.equal(a.getStatus(), 1);
      assert.equal(b.getStatus(), 1);
      assert.equal(tl.value, 2);
      await inc1;
      await inc2;
      putAll(arr, a, b);
      tl.close();
    } finally {
      await client.stop();
    }
  });

  test('a blocking waitTimeout on an array whose member another thread fails returns with the error', async () => {
    const client = new WorkerClient();
    try {
      const tl = SwSyncTimeline.create('arr-fail');
      const a = tl.createFence(1);
      const b = driverFence();
      b.signal();
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
      await client.call({ op: 'receiveTimeline', timeline: 'a', token: tl.share() });
      tl.close(); // the worker now holds the last handle: its exit fails the pending point with -ENOENT
      const exiting = client.call({ op: 'exit', delayMs: 20 }).catch(() => undefined);
      const r = arr.waitTimeout(30_000);
      assert.ok(r > 0, `waitTimeout returned ${r}`);
      assert.equal(arr.getStatus(), -ERRNO.ENOENT);
      await exiting;
      putAll(arr, a, b);
    } finally {
      await client.stop();
    }
  });
});
