/**
 * Unwrap and merge (kernel-contract §4.3, §2.3, §2.9).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dedupArray, dmaFenceArrayCreate, dmaFenceArrayMembers, dmaFenceChainInit, DmaFence, isDmaFenceArray,
  isDmaFenceChain, liveObjects, SwSyncTimeline, unwrap, unwrapMerge,
} from 'dmabuf';
import { driverFence, ops, putAll } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';

/** The leaves `unwrap` yields, as the objects yielded (the caller must hold them to compare identities). */
function leaves(head: DmaFence): DmaFence[] {
  const out: DmaFence[] = [];
  for (const leaf of unwrap(head)) out.push(leaf);
  return out;
}

function newArray(fences: DmaFence[]): DmaFence {
  return dmaFenceArrayCreate(fences, DmaFence.contextAlloc(1), 1, false);
}

installLeakCheck('every object created by this file was released');

describe('unwrap', () => {
  test('a plain fence unwraps to itself', () => {
    const f = driverFence();
    assert.deepEqual(leaves(f), [f]);
    assert.equal(leaves(f)[0], f);
    f.put();
  });

  test('an array unwraps to its members, in order', () => {
    const [a, b, c] = [driverFence(), driverFence(), driverFence()];
    const arr = newArray([a!, b!, c!]);
    const got = leaves(arr);
    assert.equal(got.length, 3);
    assert.equal(got[0], a);
    assert.equal(got[1], b);
    assert.equal(got[2], c);
    putAll(arr, a!, b!, c!);
  });

  test('a chain of arrays unwraps to every leaf, newest link first', () => {
    const [a, b, c, d, e] = [driverFence(), driverFence(), driverFence(), driverFence(), driverFence()];
    const arr1 = newArray([a!, b!]);
    const arr2 = newArray([c!, d!]);
    const c1 = dmaFenceChainInit(null, arr1, 1);
    const c2 = dmaFenceChainInit(c1, arr2, 2);
    const c3 = dmaFenceChainInit(c2, e!, 3);
    const got = leaves(c3);
    assert.equal(got.length, 5);
    assert.equal(got[0], e);
    assert.equal(got[1], c);
    assert.equal(got[2], d);
    assert.equal(got[3], a);
    assert.equal(got[4], b);
    for (const leaf of got) {
      assert.equal(isDmaFenceArray(leaf), false);
      assert.equal(isDmaFenceChain(leaf), false);
    }
    putAll(c3, c2, c1, arr2, arr1, a!, b!, c!, d!, e!);
  });

  test('links whose fences signalled are collected and not visited', () => {
    const [a, b, c, d] = [driverFence(), driverFence(), driverFence(), driverFence()];
    const arr1 = newArray([a!, b!]);
    const arr2 = newArray([c!, d!]);
    const c1 = dmaFenceChainInit(null, arr1, 1);
    const c2 = dmaFenceChainInit(c1, arr2, 2);
    c1.put(); // only c2 keeps the old link now
    a!.signal();
    b!.signal();
    const got = leaves(c2);
    assert.equal(got.length, 2);
    assert.equal(got[0], c);
    assert.equal(got[1], d);
    c!.signal();
    d!.signal();
    putAll(c2, arr2, arr1, a!, b!, c!, d!);
  });

  test('breaking out of unwrap early leaks nothing', () => {
    const before = liveObjects();
    const [a, b, c, d] = [driverFence(), driverFence(), driverFence(), driverFence()];
    const arr1 = newArray([a!, b!]);
    const arr2 = newArray([c!, d!]);
    const c1 = dmaFenceChainInit(null, arr1, 1);
    const c2 = dmaFenceChainInit(c1, arr2, 2);
    putAll(c1, arr1, arr2, a!, b!); // the chain alone keeps the rest
    let n = 0;
    let kept: DmaFence | undefined;
    for (const leaf of unwrap(c2)) {
      n++;
      if (n === 3) {
        kept = leaf.get(); // the first leaf of the older link
        break;
      }
    }
    assert.equal(n, 3);
    assert.ok(kept);
    c2.put();
    assert.equal(kept.getStatus(), 0, 'a leaf kept with get() outlives the chain');
    kept.put();
    putAll(c!, d!);
    assert.equal(liveObjects(), before);
  });

  test('breaking out of unwrap of an array on its first member leaks nothing', () => {
    const before = liveObjects();
    const [a, b] = [driverFence(), driverFence()];
    const arr = newArray([a!, b!]);
    for (const leaf of unwrap(arr)) {
      assert.equal(leaf, a);
      break;
    }
    putAll(arr, a!, b!);
    assert.equal(liveObjects(), before);
  });
});

describe('unwrapMerge', () => {
  test('merging only signalled fences gives a new signalled stub with the latest leaf timestamp', () => {
    const [a, b, c] = [driverFence(), driverFence(), driverFence()];
    a!.signalTimestamp(1_000n);
    b!.signalTimestamp(5_000n);
    c!.signalTimestamp(3_000n);
    const arr = newArray([b!, c!]);
    const merged = unwrapMerge(a!, arr);
    assert.notEqual(merged, a);
    assert.notEqual(merged, b);
    assert.notEqual(merged, c);
    assert.notEqual(merged, arr);
    assert.equal(isDmaFenceArray(merged), false);
    assert.equal(merged.isSignaled(), true);
    assert.equal(merged.getStatus(), 1);
    assert.equal(merged.timestamp(), 5_000n);
    const stub = DmaFence.getStub();
    assert.notEqual(merged, stub, 'a private stub, not the global one');
    stub.put();
    putAll(merged, arr, a!, b!, c!);
  });

  test('merging with exactly one unsignalled leaf returns that same fence', () => {
    const [a, b, c] = [driverFence(), driverFence(), driverFence()];
    a!.signal();
    c!.signal();
    const arr = newArray([b!, c!]);
    const merged = unwrapMerge(a!, arr);
    assert.equal(merged, b, 'the same per-thread fence object');
    merged.put(); // a new reference: ours is still good
    assert.equal(b!.getStatus(), 0);
    b!.signal();
    putAll(arr, a!, b!, c!);
  });

  test('merging several unsignalled fences gives an array of the latest fence per context, by context', () => {
    const ctxA = DmaFence.contextAlloc(1);
    const ctxB = DmaFence.contextAlloc(1);
    assert.ok(ctxA < ctxB);
    const a1 = DmaFence.init(ops, ctxA, 1);
    const a2 = DmaFence.init(ops, ctxA, 2);
    const b1 = DmaFence.init(ops, ctxB, 1);
    const b3 = DmaFence.init(ops, ctxB, 3);
    const arr = newArray([a1, b3]);
    const merged = unwrapMerge(b1, a2, arr);
    assert.equal(isDmaFenceArray(merged), true);
    assert.ok(merged.context > ctxB, 'a new context');
    assert.equal(merged.seqno, 1n);
    const members = dmaFenceArrayMembers(merged);
    assert.equal(members.length, 2);
    assert.equal(members[0], a2);
    assert.equal(members[1], b3);
    putAll(...members);
    // Signal on all.
    a2.signal();
    assert.equal(merged.getStatus(), 0);
    b3.signal();
    assert.equal(merged.getStatus(), 1);
    a1.signal();
    b1.signal();
    putAll(merged, arr, a1, a2, b1, b3);
  });

  test('merging keeps the later fence of a context by 32-bit wrapping order', () => {
    const ctx = DmaFence.contextAlloc(1);
    const old = DmaFence.init(ops, ctx, 0xffff_fffe);
    const wrapped = DmaFence.init(ops, ctx, 1);
    const other = driverFence();
    const merged = unwrapMerge(wrapped, other, old);
    const members = dmaFenceArrayMembers(merged);
    assert.equal(members.length, 2);
    assert.equal(members[0], wrapped, 'seqno 1 is later than 0xfffffffe on a 32-bit timeline');
    assert.equal(members[1], other);
    putAll(...members);
    for (const f of [old, wrapped, other]) f.signal();
    putAll(merged, old, wrapped, other);
  });

  test('merging several fences of one context gives the latest fence itself', () => {
    const ctx = DmaFence.contextAlloc(1);
    const f1 = DmaFence.init(ops, ctx, 1);
    const f2 = DmaFence.init(ops, ctx, 2);
    const f3 = DmaFence.init(ops, ctx, 3);
    const merged = unwrapMerge(f2, f3, f1);
    assert.equal(merged, f3);
    putAll(merged, f1, f2, f3);
  });

  test('merging flattens chains and arrays of sw_sync points and drops their signalled leaves', () => {
    const tlA = SwSyncTimeline.create('merge-a');
    const tlB = SwSyncTimeline.create('merge-b');
    const a1 = tlA.createFence(1);
    const a2 = tlA.createFence(2);
    const b1 = tlB.createFence(1);
    const arr = newArray([a1, b1]);
    const c1 = dmaFenceChainInit(null, arr, 1);
    const c2 = dmaFenceChainInit(c1, a2, 2);
    tlA.inc(1); // a1 signalled
    const merged = unwrapMerge(c2);
    assert.equal(isDmaFenceArray(merged), true);
    const members = dmaFenceArrayMembers(merged);
    const byContext = [tlA.context, tlB.context].sort((x, y) => (x < y ? -1 : 1));
    assert.deepEqual(members.map((m) => m.context), byContext);
    assert.ok(members.includes(a2));
    assert.ok(members.includes(b1));
    putAll(...members);
    tlA.inc(1);
    tlB.inc(1);
    assert.equal(merged.getStatus(), 1);
    putAll(merged, c2, c1, arr, a1, a2, b1);
    tlA.close();
    tlB.close();
  });

  test('merging a fence with itself gives that fence (pending) or a signalled stub (signalled)', () => {
    const f = driverFence();
    const m1 = unwrapMerge(f, f);
    assert.equal(m1, f);
    m1.put();
    f.signal();
    const m2 = unwrapMerge(f, f);
    assert.notEqual(m2, f);
    assert.equal(m2.getStatus(), 1);
    assert.equal(m2.timestamp(), f.timestamp());
    putAll(m2, f);
  });

  test('merging an array with itself gives a new array of its members, once each', () => {
    const [a, b] = [driverFence(), driverFence()];
    const arr = newArray([a!, b!]);
    const merged = unwrapMerge(arr, arr);
    assert.equal(isDmaFenceArray(merged), true);
    assert.notEqual(merged, arr);
    const members = dmaFenceArrayMembers(merged);
    assert.equal(members.length, 2);
    const sorted = [a!, b!].sort((x, y) => (x.context < y.context ? -1 : 1));
    assert.equal(members[0], sorted[0]);
    assert.equal(members[1], sorted[1]);
    putAll(...members);
    a!.signal();
    b!.signal();
    assert.equal(merged.getStatus(), 1);
    putAll(merged, arr, a!, b!);
  });

  test('merging nothing fails with EINVAL', () => {
    const before = liveObjects();
    assert.throws(() => unwrapMerge(), { code: 'EINVAL' });
    assert.equal(liveObjects(), before);
  });
});

describe('dedupArray', () => {
  test('sorts by context ascending and keeps the latest fence of each context, putting the others', () => {
    const before = liveObjects();
    const ctxA = DmaFence.contextAlloc(1);
    const ctxB = DmaFence.contextAlloc(1);
    const ctxC = DmaFence.contextAlloc(1);
    const a1 = DmaFence.init(ops, ctxA, 1);
    const a2 = DmaFence.init(ops, ctxA, 2);
    const b1 = DmaFence.init(ops, ctxB, 1);
    const b3 = DmaFence.init(ops, ctxB, 3);
    const c1 = DmaFence.init(ops, ctxC, 1);
    // The caller hands over references: take one for each entry.
    const out = dedupArray([c1.get(), b1.get(), a1.get(), b3.get(), a2.get()]);
    assert.equal(out.length, 3);
    assert.equal(out[0], a2);
    assert.equal(out[1], b3);
    assert.equal(out[2], c1);
    putAll(...out);
    putAll(a1, a2, b1, b3, c1);
    assert.equal(liveObjects(), before, 'the dropped duplicates were put');
  });

  test('the later fence wins regardless of input order', () => {
    const ctx = DmaFence.contextAlloc(1);
    const f1 = DmaFence.init(ops, ctx, 1);
    const f2 = DmaFence.init(ops, ctx, 2);
    const x = dedupArray([f1.get(), f2.get()]);
    const y = dedupArray([f2.get(), f1.get()]);
    assert.deepEqual(x, [f2]);
    assert.deepEqual(y, [f2]);
    putAll(...x, ...y, f1, f2);
  });

  test('without duplicates it only sorts by context', () => {
    const [a, b, c] = [driverFence(), driverFence(), driverFence()];
    const out = dedupArray([c!.get(), a!.get(), b!.get()]);
    assert.equal(out.length, 3);
    assert.equal(out[0], a);
    assert.equal(out[1], b);
    assert.equal(out[2], c);
    putAll(...out, a!, b!, c!);
  });

  test('the same fence twice is kept once', () => {
    const before = liveObjects();
    const f = driverFence();
    const out = dedupArray([f.get(), f.get()]);
    assert.deepEqual(out, [f]);
    putAll(...out);
    f.put();
    assert.equal(liveObjects(), before);
  });
});
