/**
 * dma_fence_chain (kernel-contract §4.1, §2.3, §2.8): timeline points.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chainLinks, dmaFenceArrayCreate, dmaFenceChainContained, dmaFenceChainFindSeqno, dmaFenceChainInit,
  dmaFenceChainPrevSeqno, dmaFenceChainWalk, DmaFence, ERRNO, isContainer, isDmaFenceChain, liveObjects,
} from 'dmabuf';
import type { DmaFenceOps } from 'dmabuf';
import { guard, turn } from './support/async.js';
import { driverFence, ops, putAll } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';

interface Chain {
  /** The contained fences, oldest first (the test holds one reference to each). */
  fences: DmaFence[];
  /** The links, oldest first (the test holds one reference to each). */
  links: DmaFence[];
}

/** Points 1..n over fresh driver fences, every link continuing the previous one's context. */
function buildChain(n: number, o: DmaFenceOps = ops): Chain {
  const fences: DmaFence[] = [];
  const links: DmaFence[] = [];
  for (let i = 1; i <= n; i++) {
    const f = driverFence(i, o);
    fences.push(f);
    links.push(dmaFenceChainInit(links[links.length - 1] ?? null, f, i));
  }
  return { fences, links };
}

/** Seqnos of the links `chainLinks` visits from `head`. */
function linkSeqnos(head: DmaFence): bigint[] {
  const out: bigint[] = [];
  for (const link of chainLinks(head)) out.push(link.seqno);
  return out;
}

installLeakCheck('every object created by this file was released');

describe('dmaFenceChainInit: contexts and seqnos', () => {
  test('a first link starts a new context with its seqno, prev_seqno 0 and 64-bit ordering', () => {
    const f = driverFence(9);
    const ctxBefore = DmaFence.contextAlloc(1);
    const c = dmaFenceChainInit(null, f, 5);
    const ctxAfter = DmaFence.contextAlloc(1);
    assert.equal(isDmaFenceChain(c), true);
    assert.equal(isContainer(c), true);
    assert.equal(isDmaFenceChain(f), false);
    assert.ok(c.context > ctxBefore && c.context < ctxAfter, 'a freshly allocated context');
    assert.equal(c.seqno, 5n);
    assert.equal(dmaFenceChainPrevSeqno(c), 0n);
    assert.equal(c.is64, true);
    putAll(c, f);
  });

  test('a later link continues its predecessor\'s context and records prev_seqno', () => {
    const f1 = driverFence();
    const f2 = driverFence();
    const c1 = dmaFenceChainInit(null, f1, 5);
    const c2 = dmaFenceChainInit(c1, f2, 7);
    assert.equal(c2.context, c1.context);
    assert.equal(c2.seqno, 7n);
    assert.equal(dmaFenceChainPrevSeqno(c2), 5n);
    assert.equal(c2.isLater(c1), true);
    assert.equal(c1.isLater(c2), false);
    putAll(c2, c1, f1, f2);
  });

  test('a link whose seqno is not later starts a new context and keeps the predecessor\'s seqno', () => {
    const f1 = driverFence();
    const f2 = driverFence();
    const f3 = driverFence();
    const c1 = dmaFenceChainInit(null, f1, 7);
    const lower = dmaFenceChainInit(c1, f2, 3);
    assert.notEqual(lower.context, c1.context);
    assert.equal(lower.seqno, 7n, 'a point never goes backwards: max(prev, seqno)');
    assert.equal(dmaFenceChainPrevSeqno(lower), 0n);
    const same = dmaFenceChainInit(c1, f3, 7);
    assert.notEqual(same.context, c1.context);
    assert.notEqual(same.context, lower.context);
    assert.equal(same.seqno, 7n);
    assert.equal(dmaFenceChainPrevSeqno(same), 0n);
    putAll(same, lower, c1, f1, f2, f3);
  });

  test('a link after a plain fence starts a new context with its own seqno', () => {
    const plain = driverFence(100);
    const f = driverFence();
    const c = dmaFenceChainInit(plain, f, 3);
    assert.notEqual(c.context, plain.context);
    assert.equal(c.seqno, 3n);
    assert.equal(dmaFenceChainPrevSeqno(c), 0n);
    putAll(c, plain, f);
  });

  test('chains order seqnos as 64-bit numbers (above 2^32, and across the 32-bit half-range)', () => {
    const fs = [driverFence(), driverFence(), driverFence(), driverFence()];
    const c1 = dmaFenceChainInit(null, fs[0]!, 2);
    // Low 32 bits 1 < 2, yet 2^32 + 1 is later: the context continues.
    const c2 = dmaFenceChainInit(c1, fs[1]!, 0x1_0000_0001n);
    assert.equal(c2.context, c1.context);
    assert.equal(c2.seqno, 0x1_0000_0001n);
    assert.equal(dmaFenceChainPrevSeqno(c2), 2n);
    assert.equal(c2.isLater(c1), true);
    assert.equal(c1.isLater(c2), false);
    // Distance 2^31 is "not later" for 32-bit fences, but later for 64-bit ones.
    const c3 = dmaFenceChainInit(c2, fs[2]!, 0x1_8000_0001n);
    assert.equal(c3.context, c1.context);
    assert.equal(c3.isLater(c2), true);
    // The largest u64 is still later.
    const c4 = dmaFenceChainInit(c3, fs[3]!, 0xffff_ffff_ffff_ffffn);
    assert.equal(c4.context, c1.context);
    assert.equal(c4.seqno, 0xffff_ffff_ffff_ffffn);
    assert.equal(dmaFenceChainPrevSeqno(c4), 0x1_8000_0001n);
    assert.equal(c4.isLater(c1), true);
    assert.equal(c1.isLater(c4), false);
    putAll(c4, c3, c2, c1, ...fs);
  });

  test('a chain link cannot contain a chain (EINVAL) and nothing is allocated', () => {
    const f = driverFence();
    const inner = dmaFenceChainInit(null, f, 1);
    const before = liveObjects();
    assert.throws(() => dmaFenceChainInit(null, inner, 2), { code: 'EINVAL' });
    assert.throws(() => dmaFenceChainInit(inner, inner, 2), { code: 'EINVAL' });
    assert.equal(liveObjects(), before);
    putAll(inner, f);
  });

  test('a chain link may contain an array', () => {
    const a = driverFence();
    const arr = dmaFenceArrayCreate([a], DmaFence.contextAlloc(1), 1, false);
    const c = dmaFenceChainInit(null, arr, 1);
    const contained = dmaFenceChainContained(c);
    assert.equal(contained, arr);
    a.signal();
    assert.equal(c.getStatus(), 1);
    putAll(contained, c, arr, a);
  });

  test('the link takes its own references: the caller puts its own and the link lives on', () => {
    const f1 = driverFence(11);
    const f2 = driverFence(12);
    const c1 = dmaFenceChainInit(null, f1, 1);
    const c2 = dmaFenceChainInit(c1, f2, 2);
    const ctx1 = f1.context;
    putAll(f1, f2, c1);
    const prev = dmaFenceChainWalk(c2);
    assert.ok(prev);
    assert.equal(prev.seqno, 1n);
    const contained = dmaFenceChainContained(prev);
    assert.equal(contained.context, ctx1);
    assert.equal(contained.seqno, 11n);
    assert.equal(c2.getStatus(), 0);
    putAll(contained, prev, c2);
  });

  test('dmaFenceChainContained of a plain fence is the fence itself', () => {
    const f = driverFence();
    const c = dmaFenceChainContained(f);
    assert.equal(c, f);
    putAll(c, f);
  });

  test('links are named "dma_fence_chain" / "unbound"', () => {
    const f = driverFence();
    const c = dmaFenceChainInit(null, f, 1);
    assert.equal(c.driverName, 'dma_fence_chain');
    assert.equal(c.timelineName, 'unbound');
    putAll(c, f);
  });
});

describe('signalling', () => {
  test('a link is signalled only when its fence and every older one are', () => {
    const { fences: [f1, f2, f3], links: [c1, c2, c3] } = buildChain(3);
    f3!.signal();
    assert.equal(c3!.getStatus(), 0, 'the newest fence alone does not complete the point');
    f1!.signal();
    assert.equal(c1!.getStatus(), 1);
    assert.equal(c2!.getStatus(), 0);
    assert.equal(c3!.getStatus(), 0);
    f2!.signal();
    assert.equal(c2!.getStatus(), 1);
    assert.equal(c3!.getStatus(), 1);
    putAll(c3!, c2!, c1!, f1!, f2!, f3!);
  });

  test('callbacks and waits on the head complete once every point has signalled, in any order', async () => {
    const { fences: [f1, f2, f3], links } = buildChain(3);
    const head = links[2]!;
    let calls = 0;
    let arg: DmaFence | undefined;
    let fired!: () => void;
    const done = new Promise<void>((resolve) => {
      fired = resolve;
    });
    assert.equal(head.addCallback((f) => {
      calls++;
      arg = f;
      fired();
    }), 0);
    const waited = head.waitTimeoutAsync(30_000);
    f3!.signal();
    await turn();
    f1!.signal();
    await turn();
    assert.equal(calls, 0, 'not before the middle point has signalled');
    assert.equal(head.getStatus(), 0);
    f2!.signal();
    await guard(done);
    const r = await guard(waited);
    assert.ok(r > 0, `waitTimeoutAsync returned ${r}`);
    await turn();
    assert.equal(calls, 1);
    assert.equal(arg, head);
    assert.equal(head.getStatus(), 1);
    assert.equal(head.addCallback(() => assert.fail('must not be called')), -ERRNO.ENOENT);
    assert.equal(head.waitTimeout(0), 1);
    putAll(...links, f1!, f2!, f3!);
  });

  test('a pending chain reports 0 from waitTimeout(0)', () => {
    const { fences, links } = buildChain(2);
    assert.equal(links[1]!.waitTimeout(0), 0);
    for (const f of fences) f.signal(); // enabled fences must signal eventually
    assert.equal(links[1]!.getStatus(), 1);
    putAll(...links, ...fences);
  });

  test('setDeadline on a chain is forwarded to every contained fence', () => {
    const seen: bigint[] = [];
    const rec: DmaFenceOps = {
      getDriverName: () => 'test',
      getTimelineName: () => 'tl',
      setDeadline: (f, ns) => {
        seen.push(f.seqno * 1000n + ns);
      },
    };
    const { fences, links } = buildChain(3, rec);
    links[2]!.setDeadline(7n);
    assert.deepEqual(seen.sort(), [1007n, 2007n, 3007n]);
    for (const f of fences) assert.equal(f.deadline, 7n);
    for (const link of links) {
      assert.doesNotThrow(() => link.get().put(), `setDeadline kept our reference to link ${link.seqno}`);
    }
    putAll(...links, ...fences);
  });
});

describe('walking and garbage collection', () => {
  test('chainLinks visits every link from the head down, as the same fence objects', () => {
    const { fences, links } = buildChain(3);
    const seen: DmaFence[] = [];
    for (const link of chainLinks(links[2]!)) seen.push(link);
    assert.deepEqual(seen.map((l) => l.seqno), [3n, 2n, 1n]);
    assert.equal(seen[0], links[2]);
    assert.equal(seen[1], links[1]);
    assert.equal(seen[2], links[0]);
    putAll(...links, ...fences);
  });

  test('dmaFenceChainWalk returns the next older link as a new reference, and null at the end or for a plain fence', () => {
    const { fences, links } = buildChain(2);
    const prev = dmaFenceChainWalk(links[1]!);
    assert.equal(prev, links[0]);
    assert.equal(dmaFenceChainWalk(links[0]!), null);
    assert.equal(dmaFenceChainWalk(fences[0]!), null);
    prev!.put();
    assert.equal(links[0]!.seqno, 1n, 'the walk did not consume the caller\'s reference');
    putAll(...links, ...fences);
  });

  test('walking from the head after every older point signalled collects them', () => {
    const { fences, links } = buildChain(3);
    const head = links[2]!;
    putAll(links[0]!, links[1]!); // only the head keeps the older links now
    fences[0]!.signal();
    fences[1]!.signal();
    const before = liveObjects();
    assert.equal(dmaFenceChainWalk(head), null, 'signalled predecessors are unlinked');
    assert.equal(liveObjects(), before - 2, 'the two unlinked links were released');
    assert.deepEqual(linkSeqnos(head), [3n]);
    assert.equal(head.getStatus(), 0);
    fences[2]!.signal();
    assert.equal(head.getStatus(), 1);
    putAll(head, ...fences);
  });

  test('a signalled point in the middle is skipped and released, older pending ones stay', () => {
    const { fences, links } = buildChain(3);
    const head = links[2]!;
    putAll(links[0]!, links[1]!);
    fences[1]!.signal();
    const before = liveObjects();
    const prev = dmaFenceChainWalk(head);
    assert.ok(prev);
    assert.equal(prev.seqno, 1n, 'point 2 was skipped');
    assert.equal(liveObjects(), before - 1, 'the skipped link was released');
    prev.put();
    assert.deepEqual(linkSeqnos(head), [3n, 1n]);
    for (const f of fences) f.signal();
    assert.equal(head.getStatus(), 1);
    putAll(head, ...fences);
  });

  test('chainLinks collects an oldest point that signalled, once the walk reaches it', () => {
    const { fences, links } = buildChain(3);
    const head = links[2]!;
    putAll(links[0]!, links[1]!);
    fences[0]!.signal();
    const before = liveObjects();
    assert.deepEqual(linkSeqnos(head), [3n, 2n]);
    assert.equal(liveObjects(), before - 1, 'point 1 was unlinked and released');
    for (const f of fences) f.signal();
    putAll(head, ...fences);
  });

  test('breaking out of chainLinks early leaks nothing, and a link kept with get() outlives the loop', () => {
    const before = liveObjects();
    const { fences, links } = buildChain(4);
    const head = links[3]!;
    putAll(...links.slice(0, 3));
    let kept: DmaFence | undefined;
    let visited = 0;
    for (const link of chainLinks(head)) {
      visited++;
      if (link.seqno === 3n) kept = link.get();
      if (link.seqno === 2n) break;
    }
    assert.equal(visited, 3);
    assert.ok(kept);
    head.put();
    assert.equal(kept.seqno, 3n, 'the kept link is still usable after the head is gone');
    assert.equal(kept.getStatus(), 0);
    kept.put();
    putAll(...fences);
    assert.equal(liveObjects(), before);
  });

  test('breaking out of chainLinks on the first link leaks nothing', () => {
    const before = liveObjects();
    const { fences, links } = buildChain(2);
    for (const link of chainLinks(links[1]!)) {
      assert.equal(link, links[1]);
      break;
    }
    putAll(...links, ...fences);
    assert.equal(liveObjects(), before);
  });
});

describe('dmaFenceChainFindSeqno', () => {
  test('point 0 returns the fence itself as a new reference', () => {
    const { fences, links } = buildChain(2);
    const r = dmaFenceChainFindSeqno(links[1]!, 0);
    assert.equal(r.ret, 0);
    assert.equal(r.fence, links[1]);
    r.fence!.put();
    const plain = dmaFenceChainFindSeqno(fences[0]!, 0);
    assert.equal(plain.ret, 0);
    assert.equal(plain.fence, fences[0]);
    plain.fence!.put();
    putAll(...links, ...fences);
  });

  test('a point beyond the head, or any point on a plain fence, is -EINVAL', () => {
    const { fences, links } = buildChain(3);
    const r = dmaFenceChainFindSeqno(links[2]!, 4);
    assert.equal(r.ret, -ERRNO.EINVAL);
    assert.equal(r.fence, null);
    const plain = dmaFenceChainFindSeqno(fences[0]!, 1);
    assert.equal(plain.ret, -ERRNO.EINVAL);
    assert.equal(plain.fence, null);
    putAll(...links, ...fences);
  });

  test('finds the link whose completion signals the point (the first with prev_seqno < point)', () => {
    const { fences, links } = buildChain(3);
    for (const point of [1, 2, 3]) {
      const r = dmaFenceChainFindSeqno(links[2]!, BigInt(point));
      assert.equal(r.ret, 0);
      assert.equal(r.fence, links[point - 1], `point ${point}`);
      r.fence!.put();
    }
    putAll(...links, ...fences);
  });

  test('with gaps between points, a point between two links is signalled by the later link', () => {
    const fs = [driverFence(), driverFence(), driverFence()];
    const c10 = dmaFenceChainInit(null, fs[0]!, 10);
    const c20 = dmaFenceChainInit(c10, fs[1]!, 20);
    const c30 = dmaFenceChainInit(c20, fs[2]!, 30);
    const r15 = dmaFenceChainFindSeqno(c30, 15);
    assert.equal(r15.ret, 0);
    assert.equal(r15.fence, c20);
    const r20 = dmaFenceChainFindSeqno(c30, 20);
    assert.equal(r20.fence, c20);
    const r21 = dmaFenceChainFindSeqno(c30, 21);
    assert.equal(r21.fence, c30);
    const r5 = dmaFenceChainFindSeqno(c30, 5);
    assert.equal(r5.fence, c10);
    putAll(r15.fence, r20.fence, r21.fence, r5.fence, c30, c20, c10, ...fs);
  });

  test('returns null (ret 0) once the point and everything older was signalled and collected', () => {
    const { fences, links } = buildChain(3);
    const head = links[2]!;
    putAll(links[0]!, links[1]!);
    fences[0]!.signal();
    fences[1]!.signal();
    const r = dmaFenceChainFindSeqno(head, 2);
    assert.equal(r.ret, 0);
    assert.equal(r.fence, null);
    const r3 = dmaFenceChainFindSeqno(head, 3);
    assert.equal(r3.ret, 0);
    assert.equal(r3.fence, head, 'the pending head still signals point 3');
    r3.fence!.put();
    fences[2]!.signal();
    putAll(head, ...fences);
  });
});

describe('long chains', () => {
  const N = 10_000;

  test(`a chain of ${N} pending links is released without deep recursion`, () => {
    const before = liveObjects();
    let head: DmaFence | null = null;
    for (let i = 1; i <= N; i++) {
      const f = driverFence(i);
      const link: DmaFence = dmaFenceChainInit(head, f, i);
      head?.put();
      f.put();
      head = link;
    }
    assert.ok(head);
    assert.equal(head.seqno, BigInt(N));
    assert.equal(head.getStatus(), 0);
    assert.equal(liveObjects(), before + 2 * N);
    head.put();
    assert.equal(liveObjects(), before);
  });

  test(`a chain of ${N} links signals when every point has, is walked in full, and is released`, () => {
    const before = liveObjects();
    const fences: DmaFence[] = [];
    let head: DmaFence | null = null;
    for (let i = 1; i <= N; i++) {
      const f = driverFence(i);
      fences.push(f);
      const link: DmaFence = dmaFenceChainInit(head, f, i);
      head?.put();
      head = link;
    }
    assert.ok(head);
    let count = 0;
    for (const link of chainLinks(head)) {
      if (count === 0) assert.equal(link, head);
      count++;
    }
    assert.equal(count, N);
    for (let i = N - 1; i >= 0; i--) fences[i]!.signal(); // newest first: the head completes last
    assert.equal(head.getStatus(), 1);
    head.put();
    putAll(...fences);
    assert.equal(liveObjects(), before);
  });
});
