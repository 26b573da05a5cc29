/**
 * Driver API of sw_sync timelines (kernel-contract §5.4, 32-bit seqno rules of
 * §2.3), as documented in src/sw-sync.ts: points, inc, wrap-around, chunked
 * increments, close() with -ENOENT, deadlines, the debugfs info text, and
 * timelines shared with real worker threads (including terminated ones and the
 * two-worker alternation stress case).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import {
  DMA_FENCE_FLAG_SEQNO64, DMA_FENCE_FLAG_USER_BITS, DmaFence, ERRNO, liveObjects, SW_SYNC_HAS_DEADLINE_BIT,
  SwSyncTimeline, syncInfoText,
} from 'dmabuf';
import { turn as tick } from './support/async.js';
import { pollLiveObjects, Refs, stubBaseline } from './support/leaks.js';
import { RpcClient, type Gate } from './support/worker-rpc.js';
import type { AlternateReport, Command, WaitReport, WorkerEvent } from './workers/fence-worker.js';

/* ---- helpers ---- */

// The stub lives forever once created: create it before taking the baseline.
const BASELINE = stubBaseline();

const U32_MAX = 0xffffffff;
const INT_MAX = 0x7fffffff;
const HANG_GUARD_MS = 20_000;
const INFO_HEAD = 'objs:\n--------------\n';
const INFO_TAIL = 'fences:\n--------------\n';

/** A fresh timeline and a function creating (and registering) its points. */
function timeline(refs: Refs, name = 'tl'): [SwSyncTimeline, (v: number) => DmaFence] {
  const tl = refs.timeline(SwSyncTimeline.create(name));
  return [tl, (v: number) => refs.fence(tl.createFence(v))];
}

async function pollStatus(f: DmaFence, ms = 5_000): Promise<number> {
  const end = Date.now() + ms;
  while (f.getStatus() === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return f.getStatus();
}

/** The lines of `syncInfoText()` for timeline `name` (its name line to its blank line). */
function infoBlock(name: string): string[] | undefined {
  const lines = syncInfoText().split('\n');
  const at = lines.findIndex((l) => l.startsWith(`${name}: `));
  if (at < 0) return undefined;
  const end = lines.indexOf('', at);
  return lines.slice(at, end);
}

/** Client of test/workers/fence-worker.ts. */
class FenceWorker extends RpcClient<Command & Gate, WorkerEvent> {
  constructor() {
    super(new URL('./workers/fence-worker.js', import.meta.url), { eventGuardMs: HANG_GUARD_MS });
  }
}

/* ---- timelines and points ---- */

describe('sw_sync timelines and points (§5.4)', () => {
  test('create() opens a timeline at value 0 on a fresh fence context', (t) => {
    const refs = new Refs(t);
    const [a] = timeline(refs, 'alpha');
    const [b] = timeline(refs, 'beta');
    assert.equal(a.name, 'alpha');
    assert.equal(a.value, 0);
    assert.notEqual(a.context, 0n);
    assert.notEqual(a.context, b.context);
    const next = DmaFence.contextAlloc();
    assert.ok(next > a.context && next > b.context, 'the contexts came from the global counter');
  });

  test("create() without a name uses the opening thread's task name (comm)", (t) => {
    const refs = new Refs(t);
    const tl = refs.timeline(SwSyncTimeline.create());
    assert.ok(tl.name.length > 0 && Buffer.byteLength(tl.name) <= 15, JSON.stringify(tl.name));
    if (existsSync('/proc/thread-self/comm')) {
      assert.equal(tl.name, readFileSync('/proc/thread-self/comm', 'utf8').replace(/\n$/, ''));
    }
  });

  test('a point is a 32-bit fence: seqno = value, the timeline context, driver "sw_sync", timeline name', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs, 'points');
    tl.inc(0x80000000);
    const p = pt(U32_MAX);
    assert.equal(p.seqno, 0xffffffffn);
    assert.equal(p.context, tl.context);
    assert.equal(p.driverName, 'sw_sync');
    assert.equal(p.timelineName, 'points');
    assert.equal(p.is64, false);
    assert.equal(p.flags & DMA_FENCE_FLAG_SEQNO64, 0);
    assert.equal(p.describe(), `sw_sync points seq ${U32_MAX} unsignalled`);
  });

  test('createFence() returns the same fence object for a value that is still pending', (t) => {
    const refs = new Refs(t);
    const [, pt] = timeline(refs);
    const before = liveObjects();
    const a = pt(5);
    const b = pt(5);
    assert.equal(a, b);
    assert.equal(liveObjects(), before + 1, 'one fence, not two');
    a.setDeadline(123n);
    assert.equal(b.deadline, 123n);
  });

  test('createFence() of a value already reached is born signalled and is not tracked', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs, 'born');
    tl.inc(3);
    const a = pt(2);
    const b = pt(2);
    const c = pt(3);
    const d = pt(4);
    assert.equal(a.getStatus(), 1);
    assert.equal(c.getStatus(), 1);
    assert.equal(typeof a.timestamp(), 'bigint');
    assert.notEqual(a, b, 'a signalled point is not reused');
    assert.equal(d.getStatus(), 0);
    assert.deepEqual(infoBlock('born'), ['born: 3', '  fence active: 4 / 3']);
    assert.equal(pt(0).getStatus(), 1);
  });

  test('createFence() and inc() throw TypeError for values that are not u32', (t) => {
    const refs = new Refs(t);
    const [tl] = timeline(refs);
    const before = liveObjects();
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) {
      assert.throws(() => tl.createFence(bad), TypeError, `createFence(${bad})`);
      assert.throws(() => tl.inc(bad), TypeError, `inc(${bad})`);
    }
    assert.equal(tl.value, 0);
    assert.equal(liveObjects(), before);
  });

  test('inc() signals every point up to the counter, in seqno order, inside inc()', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs);
    const order: number[] = [];
    const pts = new Map<number, DmaFence>();
    for (const v of [5, 3, 9, 1, 4, 7, 2]) {
      const p = pt(v);
      pts.set(v, p);
      assert.equal(p.addCallback((f) => order.push(Number(f.seqno))), 0);
    }
    tl.inc(4);
    assert.deepEqual(order, [1, 2, 3, 4], 'callbacks ran before inc() returned, in seqno order');
    assert.equal(tl.value, 4);
    for (const v of [5, 7, 9]) assert.equal(pts.get(v)!.getStatus(), 0, `point ${v} still pending`);
    tl.inc(0);
    assert.deepEqual(order, [1, 2, 3, 4]);
    tl.inc(5);
    assert.deepEqual(order, [1, 2, 3, 4, 5, 7, 9]);
    for (const p of pts.values()) assert.equal(p.getStatus(), 1);
    const ts = [...pts.entries()].sort((x, y) => x[0] - y[0]).map(([, p]) => p.timestamp());
    for (let i = 1; i < ts.length; i++) assert.ok(ts[i]! >= ts[i - 1]!, 'timestamps follow the signal order');
  });

  test('a callback run by inc() may put its point and create the next one on the same timeline', (t) => {
    const refs = new Refs(t);
    const [tl] = timeline(refs, 'rearm');
    const before = liveObjects();
    let next: DmaFence | undefined;
    const p = tl.createFence(1);
    p.addCallback((f) => {
      f.put(); // the callback's owner drops its point ...
      next = tl.createFence(2); // ... and re-arms on the same timeline, still inside inc()
    });
    tl.inc(1);
    assert.ok(next, 'the callback ran inside inc()');
    assert.equal(next.getStatus(), 0);
    assert.deepEqual(infoBlock('rearm'), ['rearm: 1', '  fence active: 2 / 1']);
    assert.equal(liveObjects(), before + 1, 'point 1 is freed by the time inc() returns; point 2 lives');
    tl.inc(1);
    assert.equal(next.getStatus(), 1);
    next.put();
    assert.equal(liveObjects(), before);
  });

  test('points of one timeline order with the 32-bit rule; points of two timelines cannot be compared', (t) => {
    const refs = new Refs(t);
    const [, pt] = timeline(refs);
    const [, other] = timeline(refs);
    const a = pt(1);
    const b = pt(U32_MAX);
    assert.equal(a.isLater(b), true);
    assert.equal(b.isLater(a), false);
    assert.equal(DmaFence.later(a, b), a);
    assert.throws(() => a.isLater(other(2)), { code: 'EINVAL' });
  });

  test('the counter and the seqnos wrap at 32 bits', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs, 'wrap');
    tl.inc(INT_MAX);
    tl.inc(INT_MAX);
    assert.equal(tl.value, -2, 'the counter is a signed 32-bit int: 0xFFFFFFFE');
    const order: number[] = [];
    const pts = new Map<number, DmaFence>();
    for (const v of [1, 0, U32_MAX, 2]) {
      const p = pt(v);
      pts.set(v, p);
      assert.equal(p.getStatus(), 0, `point ${v} is ahead of 0xFFFFFFFE`);
      p.addCallback((f) => order.push(Number(f.seqno)));
    }
    assert.equal(pt(0xfffffffe).getStatus(), 1, 'the current value is reached');
    assert.equal(pt(0x80000000).getStatus(), 1, 'behind (2^31 - 2 before the counter): reached');
    assert.equal(pt(0x7ffffffe).getStatus(), 1, 'exactly 2^31 away: reached');
    assert.deepEqual(infoBlock('wrap'), [
      'wrap: -2', `  fence active: ${U32_MAX} / -2`, '  fence active: 0 / -2', '  fence active: 1 / -2',
      '  fence active: 2 / -2',
    ], 'pending points are kept in wrap-around order');
    tl.inc(1);
    assert.equal(tl.value, -1);
    assert.deepEqual(order, [U32_MAX]);
    tl.inc(2);
    assert.equal(tl.value, 1);
    assert.deepEqual(order, [U32_MAX, 0, 1]);
    assert.equal(pts.get(2)!.getStatus(), 0);
    tl.inc(1);
    assert.deepEqual(order, [U32_MAX, 0, 1, 2]);
  });

  test('a point exactly 2^31 ahead of the counter counts as reached (distance 2^31 is not later)', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs);
    assert.equal(pt(0x80000000).getStatus(), 1);
    assert.equal(pt(INT_MAX).getStatus(), 0, '2^31 - 1 ahead is pending');
    tl.inc(10);
    assert.equal(pt(0x8000000a).getStatus(), 1);
    assert.equal(pt(0x80000009).getStatus(), 0);
  });

  test('inc() above INT_MAX is applied in INT_MAX chunks', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs, 'chunks');
    const one = pt(1);
    const seen: number[] = [];
    one.addCallback((f) => seen.push(f.getStatus()));
    tl.inc(U32_MAX);
    // INT_MAX + INT_MAX + 1: the first chunk reaches point 1; a single add of
    // 0xFFFFFFFF would have left the counter at -1, before point 1, with it pending.
    assert.equal(tl.value, -1);
    assert.deepEqual(seen, [1]);
    assert.equal(one.getStatus(), 1);
    const five = pt(5);
    assert.equal(five.getStatus(), 0, '5 is after -1');
    tl.inc(0x80000000); // INT_MAX + 1
    assert.equal(tl.value, INT_MAX);
    assert.equal(five.getStatus(), 1);
  });

  test('close() signals pending points with -ENOENT (-2); signalled points keep status 1', (t) => {
    const refs = new Refs(t);
    const tl = SwSyncTimeline.create('closing');
    const done = refs.fence(tl.createFence(1));
    const p2 = refs.fence(tl.createFence(2));
    const p3 = refs.fence(tl.createFence(3));
    tl.inc(1);
    const log: string[] = [];
    p3.addCallback((f) => log.push(`3:${f.getStatus()}`));
    p2.addCallback((f) => log.push(`2:${f.getStatus()}`));
    tl.close();
    assert.deepEqual(log, ['2:-2', '3:-2'], 'callbacks ran inside close(), in seqno order');
    assert.equal(p2.getStatus(), -ERRNO.ENOENT);
    assert.equal(p3.error, -2);
    assert.equal(done.getStatus(), 1);
    assert.equal(done.error, 0);
    assert.equal(p2.addCallback(() => assert.fail('ran')), -2);
  });

  test('a closed handle throws EBADF; disposing it again is harmless', (t) => {
    const refs = new Refs(t);
    const tl = SwSyncTimeline.create('ebadf');
    tl.close();
    assert.throws(() => tl.value, { code: 'EBADF' });
    assert.throws(() => tl.createFence(1), { code: 'EBADF' });
    assert.throws(() => tl.inc(1), { code: 'EBADF' });
    assert.throws(() => tl.share(), { code: 'EBADF' });
    assert.throws(() => tl.close(), { code: 'EBADF' });
    tl[Symbol.dispose]();
    refs.releaseAll();
  });

  test('points outlive their closed timeline; everything is freed with the last point', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const tl = SwSyncTimeline.create('outlive');
    const p = tl.createFence(7);
    tl.close();
    assert.ok(liveObjects() > before);
    assert.equal(p.getStatus(), -2);
    assert.equal(p.timelineName, 'outlive');
    assert.equal(p.seqno, 7n);
    p.put();
    assert.equal(liveObjects(), before);
    refs.releaseAll();
  });

  test('with two handles, closing one leaves points pending; the last close fails them', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const a = SwSyncTimeline.create('two-handles');
    const b = SwSyncTimeline.receive(a.share());
    assert.notEqual(a, b);
    assert.equal(b.context, a.context);
    const p = refs.fence(a.createFence(4));
    a.close();
    assert.equal(p.getStatus(), 0);
    b.inc(1);
    assert.equal(b.value, 1);
    b.close();
    assert.equal(p.getStatus(), -2);
    refs.releaseAll();
    assert.equal(liveObjects(), before);
  });

  test('SwSyncTimeline.receive() of a used or foreign token throws EINVAL', (t) => {
    const refs = new Refs(t);
    const before = liveObjects();
    const [tl, pt] = timeline(refs);
    const token = tl.share();
    refs.timeline(SwSyncTimeline.receive(token));
    assert.throws(() => SwSyncTimeline.receive(token), { code: 'EINVAL' });
    assert.throws(() => SwSyncTimeline.receive({}), { code: 'EINVAL' });
    assert.throws(() => SwSyncTimeline.receive(pt(1).share()), { code: 'EINVAL' });
    refs.releaseAll();
    assert.equal(liveObjects(), before);
  });

  test('a point can be waited for: 0 while pending, resolved by inc()', async (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs);
    const p = pt(2);
    assert.equal(p.waitTimeout(0), 0);
    const w = p.waitTimeoutAsync(HANG_GUARD_MS);
    tl.inc(1);
    await tick();
    assert.equal(p.getStatus(), 0);
    tl.inc(1);
    const r = await w;
    assert.ok(r > 0 && r <= HANG_GUARD_MS);
    assert.equal(p.waitTimeout(0), 1);
  });
});

/* ---- deadlines ---- */

describe('sw_sync deadlines (§5.4, §2.8)', () => {
  test('SW_SYNC_HAS_DEADLINE_BIT is the first implementation bit (USER_BITS)', () => {
    assert.equal(SW_SYNC_HAS_DEADLINE_BIT, DMA_FENCE_FLAG_USER_BITS);
  });

  test('setDeadline() on a point sets SW_SYNC_HAS_DEADLINE_BIT and keeps the earliest deadline', (t) => {
    const refs = new Refs(t);
    const [, pt] = timeline(refs);
    const p = pt(1);
    const q = pt(2);
    assert.equal(p.flags & SW_SYNC_HAS_DEADLINE_BIT, 0);
    assert.equal(p.deadline, undefined);
    p.setDeadline(2_000_000n);
    assert.notEqual(p.flags & SW_SYNC_HAS_DEADLINE_BIT, 0);
    assert.equal(p.deadline, 2_000_000n);
    p.setDeadline(3_000_000n);
    assert.equal(p.deadline, 2_000_000n);
    p.setDeadline(1_000_000n);
    assert.equal(p.deadline, 1_000_000n);
    assert.equal(q.flags & SW_SYNC_HAS_DEADLINE_BIT, 0, 'other points are untouched');
    assert.equal(q.deadline, undefined);
    assert.equal(p.getStatus(), 0);
  });

  test('setDeadline() on a signalled point is ignored', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs);
    const p = pt(1);
    p.setDeadline(500n);
    tl.inc(1);
    p.setDeadline(100n);
    assert.equal(p.deadline, 500n);
    const q = pt(1);
    q.setDeadline(100n);
    assert.equal(q.flags & SW_SYNC_HAS_DEADLINE_BIT, 0);
    assert.equal(q.deadline, undefined);
  });
});

/* ---- debugfs info ---- */

describe('syncInfoText() (§5.4)', () => {
  test('with no timeline open it is only the two headers', async () => {
    assert.equal(await pollLiveObjects(BASELINE), BASELINE, 'no timelines left from other tests');
    assert.equal(syncInfoText(), `${INFO_HEAD}${INFO_TAIL}`);
  });

  test('lists each timeline as "<name>: <value>", its pending points, and a blank line', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs, 'info');
    pt(7);
    pt(5);
    pt(2);
    tl.inc(3);
    pt(1);
    assert.equal(syncInfoText(), `${INFO_HEAD}info: 3\n  fence active: 5 / 3\n  fence active: 7 / 3\n\n${INFO_TAIL}`);
  });

  test('lists timelines in creation order, an empty one with no point lines', (t) => {
    const refs = new Refs(t);
    const [, a] = timeline(refs, 'first');
    timeline(refs, 'second');
    a(1);
    assert.equal(syncInfoText(), `${INFO_HEAD}first: 0\n  fence active: 1 / 0\n\nsecond: 0\n\n${INFO_TAIL}`);
  });

  test('prints the counter as a signed int and seqnos as unsigned', (t) => {
    const refs = new Refs(t);
    const [tl, pt] = timeline(refs, 'signed');
    tl.inc(U32_MAX);
    pt(5);
    assert.equal(pt(U32_MAX).getStatus(), 1);
    assert.deepEqual(infoBlock('signed'), ['signed: -1', '  fence active: 5 / -1']);
    tl.inc(INT_MAX);
    pt(0x80000005);
    assert.deepEqual(infoBlock('signed'), [`signed: ${INT_MAX - 1}`, `  fence active: ${0x80000005} / ${INT_MAX - 1}`]);
  });

  test('a closed timeline whose points are still held shows them as "error@<sec>.<nsec>"', (t) => {
    const refs = new Refs(t);
    const tl = SwSyncTimeline.create('closed');
    const p = refs.fence(tl.createFence(4));
    tl.inc(1);
    tl.close();
    const block = infoBlock('closed');
    assert.ok(block, 'the timeline lives on while its points do');
    assert.equal(block.length, 2);
    assert.equal(block[0], 'closed: 1');
    assert.match(block[1]!, /^ {2}fence error@\d+\.\d{9}: 4 \/ 1$/);
    const ts = p.timestamp();
    assert.equal(block[1], `  fence error@${ts / 1_000_000_000n}.${String(ts % 1_000_000_000n).padStart(9, '0')}: 4 / 1`);
    refs.releaseAll();
    assert.equal(infoBlock('closed'), undefined, 'gone with its last point');
  });
});

/* ---- across worker threads ---- */

describe('sw_sync timelines across worker threads', () => {
  test('a timeline shared to a worker can be incremented there, waking a waitTimeoutAsync() here', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const [tl, pt] = timeline(refs, 'shared');
    const p = pt(1);
    await w.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
    const waiting = p.waitTimeoutAsync(HANG_GUARD_MS);
    await tick();
    assert.equal(p.getStatus(), 0);
    await w.call({ op: 'inc', timeline: 't', n: 1 });
    const r = await waiting;
    assert.ok(r > 0 && r <= HANG_GUARD_MS, `remaining ${r}`);
    assert.equal(p.getStatus(), 1);
    assert.equal(tl.value, 1);
    assert.equal(await w.call({ op: 'value', timeline: 't' }), 1);
    await w.stop();
  });

  test('inc() here wakes a worker blocked in waitTimeout() on a point', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const [tl] = timeline(refs);
    await w.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
    await w.call({ op: 'createFence', name: 'p', timeline: 't', value: 3 });
    const same = refs.fence(tl.createFence(3)); // the worker's pending point
    const done = w.call<WaitReport>({ op: 'wait', name: 'p', timeoutMs: HANG_GUARD_MS });
    await w.event((e) => e.event === 'waiting');
    tl.inc(2);
    assert.equal(same.getStatus(), 0, 'point 3 not reached yet');
    tl.inc(1);
    const rep = await done;
    assert.equal(rep.before, 0);
    assert.ok(rep.ret > 0 && rep.ret <= HANG_GUARD_MS, `worker's wait returned ${rep.ret}`);
    assert.equal(rep.after, 1);
    await w.stop();
  });

  test('a point created in a worker for a value pending here is the same fence', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const [tl, pt] = timeline(refs);
    const p = pt(9);
    p.setDeadline(4_242n);
    await w.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
    await w.call({ op: 'createFence', name: 'p', timeline: 't', value: 9 });
    assert.equal(await w.call({ op: 'deadline', name: 'p' }), 4_242n);
    assert.notEqual(Number(await w.call({ op: 'flags', name: 'p' })) & SW_SYNC_HAS_DEADLINE_BIT, 0);
    await w.stop();
  });

  test('callbacks a worker adds on a point run in that worker when this thread increments', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const workerThread = await w.call<number>({ op: 'threadId' });
    const [tl, pt] = timeline(refs);
    const p = pt(2);
    await w.call({ op: 'receiveFence', name: 'p', token: p.share() });
    assert.equal(await w.call({ op: 'addCallback', name: 'p', tag: 'a' }), 0);
    assert.equal(await w.call({ op: 'addCallback', name: 'p', tag: 'b' }), 0);
    tl.inc(2);
    const a = await w.event((e) => e.event === 'callback');
    const b = await w.event((e) => e.event === 'callback');
    assert.ok(a.event === 'callback' && b.event === 'callback');
    assert.deepEqual([a.tag, b.tag], ['a', 'b']);
    assert.equal(a.threadId, workerThread);
    assert.equal(a.status, 1);
    await w.stop();
  });

  test('closing the timeline here while a worker holds a point makes the worker see -ENOENT (-2)', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    const tl = SwSyncTimeline.create('close-under');
    const p = tl.createFence(5);
    await w.call({ op: 'receiveFence', name: 'p', token: p.share() });
    p.put();
    assert.equal(await w.call({ op: 'status', name: 'p' }), 0);
    const done = w.call<WaitReport>({ op: 'wait', name: 'p', timeoutMs: HANG_GUARD_MS });
    await w.event((e) => e.event === 'waiting');
    tl.close();
    const rep = await done;
    assert.equal(rep.before, 0);
    assert.ok(rep.ret > 0, `worker's wait returned ${rep.ret}`);
    assert.equal(rep.after, -2);
    assert.equal(await w.call({ op: 'status', name: 'p' }), -ERRNO.ENOENT);
    await w.stop();
    refs.releaseAll();
  });

  test('syncInfoText() here lists a timeline created in a worker', async (t) => {
    const refs = new Refs(t);
    const w = refs.worker(new FenceWorker());
    await w.call({ op: 'createTimeline', timeline: 't', tlName: 'from-worker' });
    await w.call({ op: 'createFence', name: 'p', timeline: 't', value: 6 });
    await w.call({ op: 'inc', timeline: 't', n: 2 });
    assert.deepEqual(infoBlock('from-worker'), ['from-worker: 2', '  fence active: 6 / 2']);
    await w.stop();
    assert.equal(infoBlock('from-worker'), undefined);
  });

  test("a terminated worker's references are reclaimed; its points fail with -2 once this thread closes too",
    async (t) => {
      const refs = new Refs(t);
      const before = liveObjects();
      const w = new FenceWorker();
      const tl = SwSyncTimeline.create('reaped');
      const mine = tl.createFence(5);
      const kept = liveObjects();
      const shared = DmaFence.init(
        { getDriverName: () => 'd', getTimelineName: () => 't' }, DmaFence.contextAlloc(), 1);
      await w.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
      await w.call({ op: 'receiveFence', name: 'mine', token: mine.share() });
      await w.call({ op: 'receiveFence', name: 'shared', token: shared.share() });
      await w.call({ op: 'createFence', name: 'own', timeline: 't', value: 8 });
      await w.call({ op: 'initFence', name: 'ownDriver', context: DmaFence.contextAlloc(), seqno: 1 });
      shared.put();
      assert.ok(liveObjects() > kept);
      await w.worker.terminate();
      await w.exited;
      assert.equal(await pollLiveObjects(kept), kept, "the worker's holds were dropped");
      assert.equal(mine.getStatus(), 0, 'this thread still holds the timeline open');
      assert.equal(tl.value, 0);
      tl.close();
      assert.equal(mine.getStatus(), -2);
      mine.put();
      assert.equal(liveObjects(), before);
      refs.releaseAll();
    });

  test('a terminated worker holding the last handle of a timeline closes it: pending points get -2',
    async (t) => {
      const refs = new Refs(t);
      const before = liveObjects();
      const w = new FenceWorker();
      const tl = SwSyncTimeline.create('reaped-last');
      const p = tl.createFence(3);
      await w.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
      tl.close();
      await w.call({ op: 'inc', timeline: 't', n: 1 });
      assert.equal(p.getStatus(), 0);
      await w.worker.terminate();
      await w.exited;
      assert.equal(await pollStatus(p), -2);
      p.put();
      assert.equal(await pollLiveObjects(before), before);
      refs.releaseAll();
    });

  test('a worker terminated while blocked in waitTimeout() on a point is reaped; the timeline keeps working',
    async (t) => {
      const refs = new Refs(t);
      const before = liveObjects();
      const w = new FenceWorker();
      const tl = SwSyncTimeline.create('reaped-waiter');
      await w.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
      await w.call({ op: 'createFence', name: 'p', timeline: 't', value: 2 });
      void w.call({ op: 'wait', name: 'p', timeoutMs: 60_000 }).catch(() => undefined);
      await w.event((e) => e.event === 'waiting');
      await w.worker.terminate();
      await w.exited;
      const p = tl.createFence(2);
      assert.equal(p.getStatus(), 0);
      tl.inc(2);
      assert.equal(p.getStatus(), 1);
      assert.equal(tl.value, 2);
      p.put();
      tl.close();
      assert.equal(await pollLiveObjects(before), before);
      refs.releaseAll();
    });

  test('two workers alternating strictly on one timeline for 65,536 rounds each end at 131,072',
    { timeout: 180_000 }, async (t) => {
      const refs = new Refs(t);
      const ROUNDS = 65_536;
      const a = refs.worker(new FenceWorker());
      const b = refs.worker(new FenceWorker());
      const [tl] = timeline(refs, 'pingpong');
      await a.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
      await b.call({ op: 'receiveTimeline', timeline: 't', token: tl.share() });
      // A waits for point 2k (reached by B's k-th inc) and increments to 2k+1;
      // B waits for point 2k+1 and increments to 2k+2. Each checks that the
      // counter is exactly its point when its wait returns: strict alternation.
      const [ra, rb] = await Promise.all([
        a.call<AlternateReport>({ op: 'alternate', timeline: 't', parity: 0, rounds: ROUNDS, timeoutMs: HANG_GUARD_MS }),
        b.call<AlternateReport>({ op: 'alternate', timeline: 't', parity: 1, rounds: ROUNDS, timeoutMs: HANG_GUARD_MS }),
      ]);
      for (const [who, r] of [['A', ra], ['B', rb]] as const) {
        assert.equal(r.timedOut, false, `${who} timed out`);
        assert.equal(r.rounds, ROUNDS, `${who} rounds`);
        assert.equal(r.mismatches, 0, `${who} saw the counter off its point`);
      }
      t.diagnostic(`rounds in which the point was still pending when created: A ${ra.waited}, B ${rb.waited}`);
      assert.equal(tl.value, 131_072);
      await Promise.all([a.stop(), b.stop()]);
      assert.deepEqual(infoBlock('pingpong'), ['pingpong: 131072'], 'no point left pending');
    });
});

/* ---- leak check ---- */

test('no objects leaked by this file (liveObjects() back to the baseline)', async () => {
  assert.equal(await pollLiveObjects(BASELINE), BASELINE);
});
