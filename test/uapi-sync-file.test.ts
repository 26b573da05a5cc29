/**
 * `dmabuf/uapi` — sync_file ioctls (kernel-contract §5.1–5.3, §4.3 merge rules),
 * struct decoding (uapi.md "Details" 2–4), fd rules (uapi.md "Details" 8): dup,
 * close, numbering, EBADF/ENOTTY.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { liveObjects } from 'dmabuf';
import {
  closeAll, createFence, details, getDeadline, inc, installFdCleanup, merge, openTl, ready, setDeadline, status,
  summary, track,
} from './support/fds.js';

const BASELINE = liveObjects();

// Every fd a test opens is closed after it, even when it fails.
installFdCleanup();

/** The fd the next open/dup would get (probed with dup of a probe fd, then closed again). */
function nextFd(probe: number): number {
  const fd = U.dup(probe);
  U.close(fd);
  return fd;
}

/** The timeline name of a new sw_sync timeline (the opener's comm, as this library records it). */
function timelineName(): string {
  const tl = openTl();
  const f = createFence(tl, 1);
  const name = details(f).fences[0]!.obj_name;
  closeAll(f, tl);
  return name;
}
const TL_NAME = timelineName();

const WRONG_TYPES: ReadonlyArray<[string, unknown]> = [
  ['a string', '1'],
  ['NaN', NaN],
  ['a fraction', 1.5],
  ['an object', {}],
  ['null', null],
  ['a boolean', true],
  ['Infinity', Infinity],
];

/* ---- SYNC_IOC_MERGE ---- */

describe('SYNC_IOC_MERGE', () => {
  test('returns a new sync_file fd in .fence; both inputs stay valid', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const m = merge(fa, fb, 'm');
    assert.ok(![a, b, fa, fb].includes(m));
    assert.equal(summary(m).num_fences, 2);
    assert.equal(summary(m).name, 'm');
    assert.equal(status(fa), 0);
    assert.equal(status(fb), 0);
    const again = merge(fa, fb, 'again');
    assert.equal(summary(again).num_fences, 2);
    closeAll(m, again);
    assert.equal(summary(fa).num_fences, 1, 'inputs still usable after the merged fds are gone');
    closeAll(fa, fb, a, b);
  });

  test('flags or pad non-zero → EINVAL, and no fd is created', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const next = nextFd(fa);
    const before = liveObjects();
    for (const bad of [{ flags: 1, pad: 0 }, { flags: 0, pad: 1 }, { flags: 0x80000000, pad: 0 }, { flags: 0, pad: -1 }]) {
      const data = { name: 'x', fd2: fa, fence: -1, ...bad };
      assert.throws(() => U.ioctl(fa, U.SYNC_IOC_MERGE, data), { code: 'EINVAL', syscall: 'ioctl' });
      assert.equal(data.fence, -1, 'fence not written');
    }
    assert.equal(liveObjects(), before);
    assert.equal(nextFd(fa), next);
    closeAll(fa, a);
  });

  test('fd2 not a sync_file → ENOENT: a timeline fd, a closed fd, fd 1, -1, a never-opened fd', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const closed = createFence(a, 2);
    closeAll(closed);
    const before = liveObjects();
    for (const fd2 of [a, closed, 0, 1, 2, -1, 1000, 1 << 30]) {
      const data = { name: '', fd2, fence: -1, flags: 0, pad: 0 };
      assert.throws(() => U.ioctl(fa, U.SYNC_IOC_MERGE, data), { code: 'ENOENT', syscall: 'ioctl' }, `fd2 ${fd2}`);
      assert.equal(data.fence, -1);
    }
    assert.equal(liveObjects(), before);
    closeAll(fa, a);
  });

  test('the name is cut to 31 bytes', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const long = merge(fa, fa, 'abcdefghijklmnopqrstuvwxyz0123456789');
    assert.equal(summary(long).name, 'abcdefghijklmnopqrstuvwxyz01234');
    const exact = merge(fa, fa, 'x'.repeat(31));
    assert.equal(summary(exact).name, 'x'.repeat(31));
    const nul = merge(fa, fa, 'ab\0cd');
    assert.equal(summary(nul).name, 'ab', 'a C string ends at its NUL');
    closeAll(long, exact, nul, fa, a);
  });

  test('an empty or missing name gives the default name of the merged fence', () => {
    const a = openTl();
    const fa = createFence(a, 3);
    const m = merge(fa, fa, '');
    assert.equal(summary(m).name, summary(fa).name, 'the same fence, so the same default name');
    const data: { fd2: number; fence?: number } = { fd2: fa };
    U.ioctl(fa, U.SYNC_IOC_MERGE, data);
    track(data.fence!);
    assert.equal(summary(data.fence!).name, summary(fa).name);
    closeAll(m, data.fence!, fa, a);
  });

  test('a sync_file merged with itself gives its own fence again', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const m = merge(fa, fa, 'self');
    assert.equal(summary(m).num_fences, 1);
    setDeadline(m, 999n);
    assert.equal(getDeadline(a, fa), 999n, 'the deadline reached the original point');
    inc(a, 1);
    assert.equal(status(m), 1);
    closeAll(m, fa, a);
  });

  test('leaves are ordered by context, whatever the argument order', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const ba = merge(fb, fa, 'ba');
    const ab = merge(fa, fb, 'ab');
    inc(b, 1); // only b's leaf signals: it must be entry 1 (b was opened later, so has the larger context)
    for (const m of [ba, ab]) {
      const d = details(m);
      assert.deepEqual(d.fences.map((f) => f.status), [0, 1]);
    }
    closeAll(ba, ab, fa, fb, a, b);
  });

  test('two points of one timeline merge to the later one', () => {
    const a = openTl();
    const f3 = createFence(a, 3);
    const f5 = createFence(a, 5);
    for (const m of [merge(f3, f5), merge(f5, f3)]) {
      assert.equal(summary(m).num_fences, 1);
      assert.match(summary(m).name, /-5$/);
      closeAll(m);
    }
    const m = merge(f3, f5, 'later');
    setDeadline(m, 31n);
    assert.equal(getDeadline(a, f5), 31n, 'the merged fence is the point at 5');
    assert.throws(() => getDeadline(a, f3), { code: 'ENOENT' });
    inc(a, 3);
    assert.equal(status(m), 0);
    inc(a, 2);
    assert.equal(status(m), 1);
    closeAll(m, f3, f5, a);
  });

  test('signalled leaves are dropped', () => {
    const a = openTl();
    const b = openTl();
    const c = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const fc = createFence(c, 1);
    const abc = merge(fa, fb, 'ab');
    const all = merge(abc, fc, 'abc');
    assert.equal(summary(all).num_fences, 3);
    inc(b, 1);
    const rest = merge(all, all, 'rest');
    assert.equal(summary(rest).num_fences, 2, "b's leaf was signalled");
    inc(a, 1);
    const one = merge(rest, fa, 'one');
    assert.equal(summary(one).num_fences, 1);
    setDeadline(one, 77n);
    assert.equal(getDeadline(c, fc), 77n, "c's point is all that is left");
    closeAll(abc, all, rest, one, fa, fb, fc, a, b, c);
  });

  test('all leaves signalled → a new signalled fence carrying the latest timestamp', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    inc(a, 1);
    inc(b, 1);
    const ta = details(fa).fences[0]!.timestamp_ns;
    const tb = details(fb).fences[0]!.timestamp_ns;
    const latest = ta > tb ? ta : tb;
    const m = merge(fa, fb, 'done');
    const d = details(m);
    assert.equal(d.status, 1);
    assert.equal(d.fences.length, 1);
    assert.equal(d.fences[0]!.status, 1);
    assert.equal(d.fences[0]!.timestamp_ns, latest);
    assert.equal(ready(m), U.POLLIN);
    assert.throws(() => getDeadline(a, m), { code: 'EINVAL' }, 'a stub, not a sw_sync point');
    closeAll(m, fa, fb, a, b);
  });

  test('a merged fence becomes signalled only when all of its leaves have', () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 2), createFence(b, 1), 'm');
    inc(a, 2);
    assert.equal(status(m), 0);
    inc(b, 1);
    assert.equal(status(m), 1);
    closeAll(m, a, b);
  });

  test('on a closed fd → EBADF', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const gone = createFence(a, 2);
    closeAll(gone);
    assert.throws(() => U.ioctl(gone, U.SYNC_IOC_MERGE, { name: '', fd2: fa, fence: -1, flags: 0, pad: 0 }), { code: 'EBADF' });
    closeAll(fa, a);
  });
});

/* ---- SYNC_IOC_FILE_INFO ---- */

describe('SYNC_IOC_FILE_INFO', () => {
  test('num_fences 0 → status of the whole fence, name and leaf count; the array is not touched', () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 1), createFence(b, 1), 'pair');
    const sentinel = ['untouched'];
    const info = { name: '', status: 99, flags: 0, num_fences: 0, pad: 0, sync_fence_info: sentinel };
    assert.equal(U.ioctl(m, U.SYNC_IOC_FILE_INFO, info), 0);
    assert.equal(info.status, 0);
    assert.equal(info.name, 'pair');
    assert.equal(info.num_fences, 2);
    assert.deepEqual(sentinel, ['untouched']);
    // No array at all is fine too.
    const bare = { num_fences: 0 } as { num_fences: number; status?: number };
    assert.equal(U.ioctl(m, U.SYNC_IOC_FILE_INFO, bare), 0);
    assert.equal(bare.num_fences, 2);
    assert.equal(bare.status, 0);
    closeAll(m, a, b);
  });

  test('num_fences smaller than the leaf count → EINVAL, nothing written', () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 1), createFence(b, 1), 'pair');
    const arr: unknown[] = [];
    const info = { name: 'keep', status: 99, flags: 0, num_fences: 1, pad: 0, sync_fence_info: arr };
    assert.throws(() => U.ioctl(m, U.SYNC_IOC_FILE_INFO, info), { code: 'EINVAL', syscall: 'ioctl' });
    assert.deepEqual(info, { name: 'keep', status: 99, flags: 0, num_fences: 1, pad: 0, sync_fence_info: [] });
    closeAll(m, a, b);
  });

  test('num_fences large enough → one fresh entry per leaf; num_fences out = the count; later indices untouched', () => {
    const a = openTl();
    const fa = createFence(a, 4);
    const old = { obj_name: 'old' };
    const arr: unknown[] = [old, 'after'];
    const info = { name: '', status: 99, flags: 0, num_fences: 5, pad: 0, sync_fence_info: arr };
    assert.equal(U.ioctl(fa, U.SYNC_IOC_FILE_INFO, info), 0);
    assert.equal(info.num_fences, 1);
    assert.equal(info.status, 0);
    assert.deepEqual(arr[0], { obj_name: TL_NAME, driver_name: 'sw_sync', status: 0, flags: 0, timestamp_ns: 0n });
    assert.notEqual(arr[0], old, 'a fresh object replaced the old one');
    assert.equal(arr[1], 'after');
    assert.deepEqual(old, { obj_name: 'old' });
    closeAll(fa, a);
  });

  test('entries: status 0 and timestamp_ns 0n while pending; 1 and the signal time (bigint) once signalled', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const pending = details(fa).fences[0]!;
    assert.equal(pending.status, 0);
    assert.equal(pending.timestamp_ns, 0n);
    const before = process.hrtime.bigint();
    inc(a, 1);
    const after = process.hrtime.bigint();
    const done = details(fa).fences[0]!;
    assert.equal(done.status, 1);
    assert.equal(done.flags, 0);
    assert.equal(typeof done.timestamp_ns, 'bigint');
    assert.ok(done.timestamp_ns >= before && done.timestamp_ns <= after, 'CLOCK_MONOTONIC of process.hrtime.bigint()');
    assert.equal(typeof details(fa).status, 'number');
    closeAll(fa, a);
  });

  test('an entry of a point failed by closing its timeline has status -ENOENT and a timestamp', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    closeAll(a);
    const [e] = details(fa).fences;
    assert.equal(e!.status, -2);
    assert.ok(e!.timestamp_ns > 0n);
    closeAll(fa);
  });

  test('aggregate status with entries: starts at 1, the first leaf (by context) with status ≤ 0 fixes it', () => {
    const a = openTl();
    const b = openTl();
    const c = openTl();
    const m = merge(merge(createFence(a, 1), createFence(b, 1)), createFence(c, 1), 'three');
    assert.equal(details(m).status, 0, 'all pending');
    inc(a, 1);
    assert.equal(details(m).status, 0, '[1, 0, 0]');
    closeAll(c);
    assert.equal(details(m).status, 0, '[1, 0, -2]: the pending leaf comes first');
    closeAll(b);
    assert.equal(details(m).status, -2, '[1, -2, -2]');
    closeAll(m, a);
  });

  test('aggregate status: an error before a pending leaf wins over it; all signalled without error → 1', () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 1), createFence(b, 1), 'two');
    closeAll(a);
    assert.deepEqual(details(m).fences.map((f) => f.status), [-2, 0]);
    assert.equal(details(m).status, -2);
    closeAll(m);
    const c = openTl();
    const d = openTl();
    const m2 = merge(createFence(c, 1), createFence(d, 1), 'ok');
    inc(c, 1);
    inc(d, 1);
    assert.equal(details(m2).status, 1);
    assert.equal(summary(m2).status, 1);
    closeAll(m2, b, c, d);
  });

  test('status of the whole merged fence (num_fences 0) is the first error once all leaves signalled', () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 1), createFence(b, 1), 'two');
    assert.equal(ready(m), 0, 'the first poll enables signalling');
    closeAll(a);
    assert.equal(summary(m).status, 0, 'the array waits for all of its members');
    inc(b, 1);
    assert.equal(summary(m).status, -2);
    assert.equal(ready(m), U.POLLIN);
    closeAll(m, b);
  });

  test('flags or pad non-zero → EINVAL', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    for (const bad of [{ flags: 1 }, { pad: 1 }, { flags: -1 }, { pad: 0x80000000 }]) {
      const info = { name: '', status: 99, num_fences: 0, ...bad };
      assert.throws(() => U.ioctl(fa, U.SYNC_IOC_FILE_INFO, info), { code: 'EINVAL' });
      assert.equal(info.status, 99);
    }
    closeAll(fa, a);
  });

  test('no array for num_fences > 0 → EFAULT, nothing written', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    for (const bad of [undefined, 'array', 5, {}]) {
      const info = { name: '', status: 99, flags: 0, num_fences: 1, pad: 0, sync_fence_info: bad };
      assert.throws(() => U.ioctl(fa, U.SYNC_IOC_FILE_INFO, info), { code: 'EFAULT' });
      assert.equal(info.status, 99);
      assert.equal(info.name, '');
    }
    closeAll(fa, a);
  });

  test('the default name is <driver>-<timeline><context>-<seqno>', () => {
    const a = openTl();
    const b = openTl();
    const f7 = createFence(a, 7);
    const f8 = createFence(a, 8);
    const g = createFence(b, 0x7fffffff);
    const pattern = /^sw_sync-(.*?)(\d+)-(\d+)$/;
    const n7 = pattern.exec(summary(f7).name);
    const n8 = pattern.exec(summary(f8).name);
    const ng = pattern.exec(summary(g).name);
    assert.ok(n7 && n8 && ng);
    assert.equal(summary(f7).name, `sw_sync-${TL_NAME}${n7[2]}-7`);
    assert.equal(n7[2], n8[2], 'one context per timeline');
    assert.notEqual(n7[2], ng[2]);
    assert.ok(BigInt(ng[2]!) > BigInt(n7[2]!), 'contexts are allocated in increasing order');
    assert.equal(ng[3], String(0x7fffffff));
    // A merged array with no user name: dma_fence_array / unbound, a new context, seqno 1.
    const m = merge(f7, g, '');
    const nm = /^dma_fence_array-unbound(\d+)-1$/.exec(summary(m).name);
    assert.ok(nm, summary(m).name);
    assert.ok(BigInt(nm[1]!) > BigInt(ng[2]!));
    closeAll(m, f7, f8, g, a, b);
  });

  test('entries of a merged fence name each leaf: obj_name is the timeline, driver_name sw_sync', () => {
    const a = openTl();
    const b = openTl();
    const m = merge(createFence(a, 1), createFence(b, 2), 'x');
    assert.deepEqual(details(m).fences, [
      { obj_name: TL_NAME, driver_name: 'sw_sync', status: 0, flags: 0, timestamp_ns: 0n },
      { obj_name: TL_NAME, driver_name: 'sw_sync', status: 0, flags: 0, timestamp_ns: 0n },
    ]);
    closeAll(m, a, b);
  });
});

/* ---- SYNC_IOC_SET_DEADLINE ---- */

describe('SYNC_IOC_SET_DEADLINE', () => {
  test('forwards the deadline to the fence (read back with SW_SYNC_GET_DEADLINE)', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const d = process.hrtime.bigint() + 1_000_000n;
    assert.equal(U.ioctl(fa, U.SYNC_IOC_SET_DEADLINE, { deadline_ns: d, pad: 0 }), 0);
    assert.equal(getDeadline(a, fa), d);
    closeAll(fa, a);
  });

  test('pad non-zero → EINVAL, nothing recorded', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    for (const pad of [1, 1n, -1, 1n << 63n]) {
      assert.throws(() => U.ioctl(fa, U.SYNC_IOC_SET_DEADLINE, { deadline_ns: 5n, pad }), { code: 'EINVAL' }, String(pad));
    }
    assert.throws(() => getDeadline(a, fa), { code: 'ENOENT' });
    closeAll(fa, a);
  });

  test('on a merged fence reaches every member', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const m = merge(fa, fb, 'm');
    setDeadline(m, 1234n);
    assert.equal(getDeadline(a, fa), 1234n);
    assert.equal(getDeadline(b, fb), 1234n);
    closeAll(m, fa, fb, a, b);
  });
});

/* ---- struct decoding: wrong JS types ---- */

describe('a struct field of the wrong JS type → EFAULT, nothing changed', () => {
  test('SYNC_IOC_MERGE: fd2, flags, pad, name; the argument itself', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const next = nextFd(fa);
    const before = liveObjects();
    for (const field of ['fd2', 'flags', 'pad', 'name']) {
      for (const [what, v] of WRONG_TYPES) {
        if (field === 'name' && typeof v === 'string') continue;
        const data: Record<string, unknown> = { name: 'n', fd2: fa, fence: -1, flags: 0, pad: 0, [field]: v };
        assert.throws(() => U.ioctl(fa, U.SYNC_IOC_MERGE, data), { code: 'EFAULT', syscall: 'ioctl' }, `${field} = ${what}`);
        assert.equal(data['fence'], -1);
      }
    }
    for (const arg of [undefined, null, 5, 'x', [fa]]) {
      assert.throws(() => U.ioctl(fa, U.SYNC_IOC_MERGE, arg), { code: 'EFAULT' }, String(arg));
    }
    assert.equal(liveObjects(), before, 'no file or fence was created');
    assert.equal(nextFd(fa), next, 'no fd was created');
    closeAll(fa, a);
  });

  test('EFAULT comes before EINVAL/ENOENT: the struct is copied in first', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    assert.throws(() => U.ioctl(fa, U.SYNC_IOC_MERGE, { fd2: 'x', flags: 1 }), { code: 'EFAULT' });
    assert.throws(() => U.ioctl(fa, U.SYNC_IOC_MERGE, { fd2: a, pad: 0.5 }), { code: 'EFAULT' });
    assert.throws(() => U.ioctl(fa, U.SYNC_IOC_FILE_INFO, { flags: 1, num_fences: 'x' }), { code: 'EFAULT' });
    assert.throws(() => U.ioctl(a, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 1, fence_fd: 'x' }), { code: 'EFAULT' });
    closeAll(fa, a);
  });

  test('SYNC_IOC_FILE_INFO: flags, pad, num_fences; out-fields not written', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    for (const field of ['flags', 'pad', 'num_fences']) {
      for (const [what, v] of WRONG_TYPES) {
        const arr: unknown[] = [];
        const info: Record<string, unknown> = { name: 'keep', status: 99, flags: 0, num_fences: 0, pad: 0, sync_fence_info: arr, [field]: v };
        assert.throws(() => U.ioctl(fa, U.SYNC_IOC_FILE_INFO, info), { code: 'EFAULT' }, `${field} = ${what}`);
        assert.equal(info['status'], 99);
        assert.equal(info['name'], 'keep');
        assert.equal(arr.length, 0);
      }
    }
    closeAll(fa, a);
  });

  test('SYNC_IOC_SET_DEADLINE: deadline_ns, pad; no deadline recorded', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    for (const field of ['deadline_ns', 'pad']) {
      for (const [what, v] of WRONG_TYPES) {
        const data: Record<string, unknown> = { deadline_ns: 5n, pad: 0, [field]: v };
        assert.throws(() => U.ioctl(fa, U.SYNC_IOC_SET_DEADLINE, data), { code: 'EFAULT' }, `${field} = ${what}`);
      }
    }
    assert.throws(() => U.ioctl(fa, U.SYNC_IOC_SET_DEADLINE, undefined), { code: 'EFAULT' });
    assert.throws(() => getDeadline(a, fa), { code: 'ENOENT' });
    closeAll(fa, a);
  });

  test('SW_SYNC_IOC_CREATE_FENCE: value; no fd or fence created, counter unchanged', () => {
    const a = openTl();
    const probe = createFence(a, 1);
    const next = nextFd(probe);
    const before = liveObjects();
    for (const [what, v] of WRONG_TYPES) {
      const data: Record<string, unknown> = { value: v, name: '', fence: -1 };
      assert.throws(() => U.ioctl(a, U.SW_SYNC_IOC_CREATE_FENCE, data), { code: 'EFAULT' }, `value = ${what}`);
      assert.equal(data['fence'], -1);
    }
    for (const arg of [undefined, null, 3, 'x']) {
      assert.throws(() => U.ioctl(a, U.SW_SYNC_IOC_CREATE_FENCE, arg), { code: 'EFAULT' }, String(arg));
    }
    assert.equal(liveObjects(), before);
    assert.equal(nextFd(probe), next);
    assert.equal(status(probe), 0);
    closeAll(probe, a);
  });

  test('SW_SYNC_IOC_INC: the argument; counter unchanged', () => {
    const a = openTl();
    const f = createFence(a, 1);
    for (const [what, v] of WRONG_TYPES) {
      assert.throws(() => U.ioctl(a, U.SW_SYNC_IOC_INC, v), { code: 'EFAULT' }, what);
    }
    assert.throws(() => U.ioctl(a, U.SW_SYNC_IOC_INC), { code: 'EFAULT' }, 'no argument');
    assert.equal(status(f), 0);
    inc(a, 1);
    assert.equal(status(f), 1, 'the counter was still 0');
    closeAll(f, a);
  });

  test('SW_SYNC_GET_DEADLINE: deadline_ns, pad, fence_fd; deadline_ns not written', () => {
    const a = openTl();
    const f = createFence(a, 1);
    setDeadline(f, 10n);
    for (const field of ['deadline_ns', 'pad', 'fence_fd']) {
      for (const [what, v] of WRONG_TYPES) {
        const data: Record<string, unknown> = { deadline_ns: 0, pad: 0, fence_fd: f, [field]: v };
        assert.throws(() => U.ioctl(a, U.SW_SYNC_GET_DEADLINE, data), { code: 'EFAULT' }, `${field} = ${what}`);
        if (field !== 'deadline_ns') assert.equal(data['deadline_ns'], 0);
      }
    }
    closeAll(f, a);
  });

  test('missing fields read as zero (a shorter struct)', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const data: { fd2: number; fence?: number } = { fd2: fa };
    assert.equal(U.ioctl(fa, U.SYNC_IOC_MERGE, data), 0);
    track(data.fence!);
    assert.equal(summary(data.fence!).num_fences, 1);
    const info: { num_fences?: number; status?: number; name?: string } = {};
    assert.equal(U.ioctl(fa, U.SYNC_IOC_FILE_INFO, info), 0, 'num_fences, flags and pad read as 0');
    assert.equal(info.num_fences, 1);
    assert.equal(info.status, 0);
    assert.equal(U.ioctl(fa, U.SYNC_IOC_SET_DEADLINE, { deadline_ns: 8n }), 0, 'pad reads as 0');
    assert.equal(getDeadline(a, fa), 8n);
    closeAll(data.fence!, fa, a);
  });
});

/* ---- fds: ENOTTY, EBADF, dup, numbering ---- */

describe('fd rules', () => {
  test('unknown requests on a sync_file → ENOTTY', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    for (const req of [0, 1, 0x3e00, U.SW_SYNC_IOC_CREATE_FENCE, U.SW_SYNC_IOC_INC, U.DMA_BUF_IOCTL_SYNC, 0xc0303e02, 0xffffffff]) {
      assert.throws(() => U.ioctl(fa, req, {}), { code: 'ENOTTY', syscall: 'ioctl' }, `0x${req.toString(16)}`);
    }
    closeAll(fa, a);
  });

  test('any ioctl on fds 0–2 → ENOTTY', () => {
    for (const fd of [0, 1, 2]) {
      for (const req of [U.SYNC_IOC_MERGE, U.SYNC_IOC_FILE_INFO, U.SYNC_IOC_SET_DEADLINE, U.SW_SYNC_IOC_INC, 0x1234]) {
        assert.throws(() => U.ioctl(fd, req, {}), { code: 'ENOTTY', errno: 25, syscall: 'ioctl' }, `fd ${fd}`);
      }
    }
  });

  test('closed, never-opened and negative fds → EBADF for ioctl, close and dup', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    closeAll(fa);
    for (const fd of [fa, 999, 1 << 20, -1]) {
      assert.throws(() => U.ioctl(fd, U.SYNC_IOC_FILE_INFO, { num_fences: 0 }), { code: 'EBADF', errno: 9, syscall: 'ioctl' });
      assert.throws(() => U.close(fd), { code: 'EBADF', syscall: 'close' });
      assert.throws(() => U.dup(fd), { code: 'EBADF', syscall: 'dup' });
    }
    closeAll(a);
  });

  test('dup() gives a new fd for the same file; closing one keeps the file alive', () => {
    const a = openTl();
    const fa = createFence(a, 1);
    const copy = track(U.dup(fa));
    assert.notEqual(copy, fa);
    closeAll(fa);
    assert.equal(summary(copy).num_fences, 1);
    assert.equal(status(copy), 0);
    inc(a, 1);
    assert.equal(status(copy), 1);
    assert.equal(ready(copy), U.POLLIN);
    closeAll(copy, a);
  });

  test('the file is released with its last fd', () => {
    const before = liveObjects();
    const a = openTl();
    const fa = createFence(a, 1);
    const copy = track(U.dup(fa));
    const m = merge(fa, copy, 'm');
    closeAll(fa, copy, m, a);
    assert.equal(liveObjects(), before);
  });

  test('fd numbers: the lowest free number, starting at 3', () => {
    const a = openTl();
    assert.equal(a, 3);
    const b = openTl();
    const c = openTl();
    assert.deepEqual([b, c], [4, 5]);
    closeAll(b);
    const d = openTl();
    assert.equal(d, 4, 'the freed number is reused');
    closeAll(a);
    const e = track(U.dup(c));
    assert.equal(e, 3);
    const f = createFence(c, 1);
    assert.equal(f, 6);
    closeAll(d);
    const g = merge(f, f, 'g');
    assert.equal(g, 4);
    closeAll(c, e, f, g);
    assert.equal(openTl(), 3);
    closeAll(3);
  });
});

test('every object of this file was released (leak check)', () => {
  assert.equal(liveObjects(), BASELINE);
});
