/**
 * `dmabuf/uapi` — the sw_sync debugfs interface (kernel-contract §5.4, uapi.md):
 * opening a timeline, SW_SYNC_IOC_CREATE_FENCE, SW_SYNC_IOC_INC, SW_SYNC_GET_DEADLINE,
 * closing the timeline, and the text of /sys/kernel/debug/sync/info.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as U from 'dmabuf/uapi';
import { liveObjects } from 'dmabuf';
import {
  closeAll, createFence, details, getDeadline, inc, installFdCleanup, merge, openTl, ready, setDeadline, status,
  summary, track, type FenceInfo,
} from './support/fds.js';

const BASELINE = liveObjects();

/** The opener's task name, as the kernel's get_task_comm sees it. */
const COMM = readFileSync('/proc/thread-self/comm', 'utf8').trim();

// fds a test opened and has not closed yet are closed after it, so one failure cannot cascade.
installFdCleanup();

const EMPTY_INFO = 'objs:\n--------------\nfences:\n--------------\n';

/** SYNC_IOC_FILE_INFO with room for every leaf. */
function leaves(fd: number): FenceInfo[] {
  return details(fd).fences;
}

/** The context number in a sync_file's default name `sw_sync-<comm><context>-<seqno>`. */
function contextOf(fd: number): bigint {
  const m = /^sw_sync-(.*)-(-?\d+)$/.exec(summary(fd).name);
  assert.ok(m, `default name of fd ${fd}`);
  assert.ok(m[1]!.startsWith(NAME));
  return BigInt(m[1]!.slice(NAME.length));
}

/** The name this implementation gives a new timeline (the obj_name of its points). */
function newTimelineName(): string {
  const tl = openTl();
  const f = createFence(tl, 1);
  const name = leaves(f)[0]!.obj_name;
  closeAll(f, tl);
  return name;
}

/** The timeline name used in expected texts (checked against COMM by its own test). */
const NAME = newTimelineName();
const NAME_RE = NAME.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe('open of the sw_sync device nodes', () => {
  test("a new timeline is named after the opener's task name (comm)", () => {
    assert.equal(NAME, COMM);
  });

  test('/dev/sw_sync and /sys/kernel/debug/sync/sw_sync both open a timeline fd', () => {
    const a = openTl();
    const b = openTl('/sys/kernel/debug/sync/sw_sync');
    assert.notEqual(a, b);
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    assert.equal(status(fa), 0);
    assert.equal(status(fb), 0);
    closeAll(fa, fb, a, b);
  });

  test('each open creates a new timeline with its own counter and fence context', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    assert.notEqual(contextOf(fa), contextOf(fb));
    inc(a, 1);
    assert.equal(status(fa), 1);
    assert.equal(status(fb), 0, 'the other timeline did not move');
    closeAll(fa, fb, a, b);
  });

  test('open flags are accepted (O_RDWR default, O_RDONLY, O_CLOEXEC)', () => {
    const a = openTl('/dev/sw_sync', U.O_RDONLY);
    const b = openTl('/dev/sw_sync', U.O_RDWR | U.O_CLOEXEC);
    const f = createFence(a, 0);
    assert.equal(status(f), 1);
    closeAll(f, a, b);
  });

  test('an unknown path fails with ENOENT', () => {
    assert.throws(() => U.open('/dev/sw_sync2'), { code: 'ENOENT', syscall: 'open' });
    assert.throws(() => U.open('/sys/kernel/debug/sync/info2'), { code: 'ENOENT' });
  });
});

describe('SW_SYNC_IOC_CREATE_FENCE', () => {
  test('returns a new sync_file fd in .fence whose leaf is a pending sw_sync point named after the opener', () => {
    const tl = openTl();
    const f = createFence(tl, 5);
    assert.ok(f >= 3 && f !== tl);
    const s = summary(f);
    assert.equal(s.status, 0);
    assert.equal(s.num_fences, 1);
    assert.match(s.name, new RegExp(`^sw_sync-${NAME_RE}\\d+-5$`));
    const [leaf] = leaves(f);
    assert.deepEqual(leaf, { obj_name: NAME, driver_name: 'sw_sync', status: 0, flags: 0, timestamp_ns: 0n });
    closeAll(f, tl);
  });

  test('points of one timeline share its context and carry their value as seqno', () => {
    const tl = openTl();
    const f3 = createFence(tl, 3);
    const f7 = createFence(tl, 7);
    assert.equal(contextOf(f3), contextOf(f7));
    assert.match(summary(f3).name, /-3$/);
    assert.match(summary(f7).name, /-7$/);
    closeAll(f3, f7, tl);
  });

  test('the same pending value gives the same fence again, in a new sync_file', () => {
    const tl = openTl();
    const a = createFence(tl, 4);
    const b = createFence(tl, 4);
    assert.notEqual(a, b, 'a new fd');
    // A deadline set through one sync_file is seen through the other: one fence.
    const d = process.hrtime.bigint() + 5_000_000_000n;
    setDeadline(a, d);
    assert.equal(getDeadline(tl, b), d);
    // Merging both gives one leaf.
    const m = merge(a, b);
    assert.equal(summary(m).num_fences, 1);
    assert.equal(getDeadline(tl, m), d);
    closeAll(m, a, b, tl);
  });

  test('a value that is no longer pending creates a new fence', () => {
    const tl = openTl();
    const a = createFence(tl, 2);
    setDeadline(a, 1000n);
    inc(tl, 2);
    const b = createFence(tl, 2);
    assert.equal(status(b), 1);
    assert.throws(() => getDeadline(tl, b), { code: 'ENOENT' }, 'not the fence that had the deadline');
    closeAll(a, b, tl);
  });

  test('an already reached value gives a fence born signalled, with a timestamp', () => {
    const tl = openTl();
    const zero = createFence(tl, 0);
    assert.equal(status(zero), 1, 'value 0 is reached by a new timeline');
    inc(tl, 10);
    const past = createFence(tl, 3);
    const same = createFence(tl, 10);
    for (const fd of [past, same]) {
      assert.equal(status(fd), 1);
      assert.equal(ready(fd), U.POLLIN);
      const [leaf] = leaves(fd);
      assert.equal(leaf!.status, 1);
      assert.ok(leaf!.timestamp_ns > 0n);
    }
    closeAll(zero, past, same, tl);
  });

  test('the name field is ignored', () => {
    const tl = openTl();
    const data = { value: 9, name: 'my-fence-name', fence: -1 };
    U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, data);
    const s = summary(data.fence);
    assert.match(s.name, new RegExp(`^sw_sync-${NAME_RE}\\d+-9$`));
    assert.equal(leaves(data.fence)[0]!.obj_name, NAME);
    const long = { value: 9, name: 'n'.repeat(100), fence: -1 };
    U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, long);
    assert.equal(summary(long.fence).name, s.name);
    closeAll(data.fence, long.fence, tl);
  });

  test('value is a u32: -1 is the point 0xffffffff', () => {
    const tl = openTl();
    inc(tl, 5);
    // 0xffffffff is 32-bit-before 5, so it is already reached.
    const f = createFence(tl, -1);
    assert.match(summary(f).name, /-4294967295$/);
    assert.equal(status(f), 1);
    closeAll(f, tl);
  });

  test('a missing value reads as 0 (a shorter struct)', () => {
    const tl = openTl();
    const data: { fence?: number } = {};
    U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, data);
    assert.match(summary(data.fence!).name, /-0$/);
    closeAll(data.fence!, tl);
  });
});

describe('SW_SYNC_IOC_INC', () => {
  test('signals every point the counter reaches, and only those', () => {
    const tl = openTl();
    const f1 = createFence(tl, 1);
    const f2 = createFence(tl, 2);
    const f5 = createFence(tl, 5);
    inc(tl, 2);
    assert.deepEqual([status(f1), status(f2), status(f5)], [1, 1, 0]);
    inc(tl, 0);
    assert.equal(status(f5), 0);
    inc(tl, 3);
    assert.equal(status(f5), 1);
    closeAll(f1, f2, f5, tl);
  });

  test('signalled points get increasing timestamps in seqno order', () => {
    const tl = openTl();
    const f2 = createFence(tl, 2);
    const f1 = createFence(tl, 1);
    inc(tl, 2);
    const t1 = leaves(f1)[0]!.timestamp_ns;
    const t2 = leaves(f2)[0]!.timestamp_ns;
    assert.ok(t1 > 0n && t2 >= t1);
    closeAll(f1, f2, tl);
  });

  test('-1 is converted to 0xffffffff as C converts it (applied in INT_MAX chunks)', () => {
    const a = openTl();
    const b = openTl();
    const lowA = createFence(a, 10);
    inc(a, -1);
    inc(b, 0xffffffff);
    assert.equal(status(lowA), 1);
    assert.equal(
      U.readFile('/sys/kernel/debug/sync/info'),
      `objs:\n--------------\n${NAME}: -1\n\n${NAME}: -1\n\nfences:\n--------------\n`,
    );
    closeAll(lowA, a, b);
  });

  test('a non-number argument fails with EFAULT and leaves the counter unchanged', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    for (const bad of [undefined, null, '1', 1.5, NaN, Infinity, {}, [1], true]) {
      assert.throws(() => U.ioctl(tl, U.SW_SYNC_IOC_INC, bad), { code: 'EFAULT', syscall: 'ioctl' }, String(bad));
    }
    assert.equal(status(f), 0);
    assert.equal(
      U.readFile('/sys/kernel/debug/sync/info'),
      `objs:\n--------------\n${NAME}: 0\n  fence active: 1 / 0\n\nfences:\n--------------\n`,
    );
    closeAll(f, tl);
  });
});

describe('SW_SYNC_GET_DEADLINE', () => {
  test('ENOENT when no deadline was ever set', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const data = { deadline_ns: 0, pad: 0, fence_fd: f };
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, data), { code: 'ENOENT', syscall: 'ioctl' });
    assert.equal(data.deadline_ns, 0, 'nothing written back');
    closeAll(f, tl);
  });

  test('returns the earliest of several SYNC_IOC_SET_DEADLINE calls, as a bigint', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const now = process.hrtime.bigint();
    setDeadline(f, now + 3_000_000n);
    assert.equal(getDeadline(tl, f), now + 3_000_000n);
    setDeadline(f, now + 1_000_000n);
    setDeadline(f, now + 2_000_000n);
    assert.equal(getDeadline(tl, f), now + 1_000_000n);
    assert.equal(U.ioctl(f, U.SYNC_IOC_SET_DEADLINE, { deadline_ns: Number(now), pad: 0 }), 0, 'a number is accepted');
    assert.equal(getDeadline(tl, f), now);
    closeAll(f, tl);
  });

  test('returns a deadline beyond 2^53 ns exactly', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    const far = (1n << 60n) + 1n;
    setDeadline(f, far);
    assert.equal(getDeadline(tl, f), far);
    closeAll(f, tl);
  });

  test('works through any timeline fd for any sw_sync point', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    setDeadline(fa, 12345n);
    assert.equal(getDeadline(b, fa), 12345n);
    closeAll(fa, a, b);
  });

  test('a deadline set after the point signalled is not recorded', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    inc(tl, 1);
    setDeadline(f, 777n);
    assert.throws(() => getDeadline(tl, f), { code: 'ENOENT' });
    closeAll(f, tl);
  });

  test('a deadline set while pending is still reported after the point signalled', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    setDeadline(f, 4242n);
    inc(tl, 1);
    assert.equal(getDeadline(tl, f), 4242n);
    closeAll(f, tl);
  });

  test('EINVAL for a non-zero deadline_ns or pad on input', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    setDeadline(f, 100n);
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 1, pad: 0, fence_fd: f }), { code: 'EINVAL' });
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 1n, pad: 0, fence_fd: f }), { code: 'EINVAL' });
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 0, pad: 1, fence_fd: f }), { code: 'EINVAL' });
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 0, pad: -1, fence_fd: f }), { code: 'EINVAL' });
    closeAll(f, tl);
  });

  test('EINVAL when fence_fd is not a sync_file: a timeline fd, a closed fd, a standard stream, -1', () => {
    const tl = openTl();
    const other = openTl();
    const closed = createFence(tl, 1);
    U.close(closed);
    for (const fd of [other, tl, closed, 0, 1, 2, -1, 900]) {
      assert.throws(() => U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 0, pad: 0, fence_fd: fd }), { code: 'EINVAL' }, `fd ${fd}`);
    }
    closeAll(tl, other);
  });

  test('EINVAL for a merged (array) fence, even after a deadline was set through it', () => {
    const a = openTl();
    const b = openTl();
    const fa = createFence(a, 1);
    const fb = createFence(b, 1);
    const m = merge(fa, fb, 'both');
    assert.equal(summary(m).num_fences, 2);
    setDeadline(m, 555n);
    assert.throws(() => U.ioctl(a, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 0, pad: 0, fence_fd: m }), { code: 'EINVAL' });
    // The array forwarded the deadline to its members.
    assert.equal(getDeadline(a, fa), 555n);
    assert.equal(getDeadline(a, fb), 555n);
    closeAll(m, fa, fb, a, b);
  });

  test('is only a timeline ioctl: on a sync_file it is ENOTTY', () => {
    const tl = openTl();
    const f = createFence(tl, 1);
    assert.throws(() => U.ioctl(f, U.SW_SYNC_GET_DEADLINE, { deadline_ns: 0, pad: 0, fence_fd: f }), { code: 'ENOTTY' });
    closeAll(f, tl);
  });
});

describe('other requests on a timeline fd', () => {
  test('unknown requests fail with ENOTTY', () => {
    const tl = openTl();
    for (const req of [0, 0x1234, U.SYNC_IOC_MERGE, U.SYNC_IOC_FILE_INFO, U.SYNC_IOC_SET_DEADLINE, U.DMA_BUF_IOCTL_SYNC]) {
      assert.throws(() => U.ioctl(tl, req, {}), { code: 'ENOTTY', syscall: 'ioctl' }, `request 0x${req.toString(16)}`);
    }
    // Same number, other magic / size: not the sw_sync ioctl.
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_IOC_INC + 1, 1), { code: 'ENOTTY' });
    U.close(tl);
  });
});

describe('closing the timeline', () => {
  test('signals pending points with -ENOENT; signalled points stay 1', () => {
    const tl = openTl();
    const done = createFence(tl, 1);
    const pending = createFence(tl, 2);
    const pending2 = createFence(tl, 100);
    inc(tl, 1);
    U.close(tl);
    assert.equal(status(done), 1);
    assert.equal(status(pending), -2);
    assert.equal(status(pending2), -2);
    const [leaf] = leaves(pending);
    assert.equal(leaf!.status, -2);
    assert.ok(leaf!.timestamp_ns > 0n);
    assert.equal(leaves(done)[0]!.status, 1);
    assert.equal(ready(pending), U.POLLIN, 'signalled with an error is still POLLIN');
    closeAll(done, pending, pending2);
  });

  test('only the last fd of the timeline releases it: a dup keeps points pending', () => {
    const tl = openTl();
    const copy = track(U.dup(tl));
    const f = createFence(tl, 1);
    U.close(tl);
    assert.equal(status(f), 0);
    inc(copy, 1);
    assert.equal(status(f), 1, 'the dup still drives the timeline');
    const g = createFence(copy, 5);
    U.close(copy);
    assert.equal(status(g), -2);
    closeAll(f, g);
  });

  test('the timeline fd is gone after close: EBADF', () => {
    const tl = openTl();
    U.close(tl);
    assert.throws(() => U.ioctl(tl, U.SW_SYNC_IOC_INC, 1), { code: 'EBADF' });
    assert.throws(() => U.close(tl), { code: 'EBADF' });
  });
});

describe('/sys/kernel/debug/sync/info', () => {
  test('lists no timeline when none is open', () => {
    assert.equal(U.readFile('/sys/kernel/debug/sync/info'), EMPTY_INFO);
  });

  test('prints each timeline as <name>: <value> with its pending points in seqno order, in kernel format', () => {
    const a = openTl();
    inc(a, 2);
    const p5 = createFence(a, 5);
    const p3 = createFence(a, 3);
    const p1 = createFence(a, 1); // born signalled: not listed
    const p7 = createFence(a, 7);
    const b = openTl('/sys/kernel/debug/sync/sw_sync');
    const q10 = createFence(b, 10);
    assert.equal(
      U.readFile('/sys/kernel/debug/sync/info'),
      'objs:\n--------------\n'
        + `${NAME}: 2\n  fence active: 3 / 2\n  fence active: 5 / 2\n  fence active: 7 / 2\n\n`
        + `${NAME}: 0\n  fence active: 10 / 0\n\n`
        + 'fences:\n--------------\n',
    );
    inc(a, 3);
    assert.equal(
      U.readFile('/sys/kernel/debug/sync/info'),
      'objs:\n--------------\n'
        + `${NAME}: 5\n  fence active: 7 / 5\n\n`
        + `${NAME}: 0\n  fence active: 10 / 0\n\n`
        + 'fences:\n--------------\n',
    );
    closeAll(p5, p3, p1, p7, q10, a, b);
    assert.equal(U.readFile('/sys/kernel/debug/sync/info'), EMPTY_INFO);
  });

  test('a closed timeline stays listed while a point holds it, the point shown as error@<sec>.<nsec>', () => {
    const tl = openTl();
    inc(tl, 1);
    const p = createFence(tl, 4);
    U.close(tl);
    const ts = leaves(p)[0]!.timestamp_ns;
    const sec = ts / 1_000_000_000n;
    const nsec = String(ts % 1_000_000_000n).padStart(9, '0');
    assert.equal(
      U.readFile('/sys/kernel/debug/sync/info'),
      `objs:\n--------------\n${NAME}: 1\n  fence error@${sec}.${nsec}: 4 / 1\n\nfences:\n--------------\n`,
    );
    U.close(p);
    assert.equal(U.readFile('/sys/kernel/debug/sync/info'), EMPTY_INFO, 'freed with its last point');
  });

  test('seqnos print unsigned and the counter signed', () => {
    const tl = openTl();
    inc(tl, 0x7fffffff);
    inc(tl, 2); // the int counter wraps to -0x7fffffff
    const p = createFence(tl, 0x80000005);
    assert.equal(
      U.readFile('/sys/kernel/debug/sync/info'),
      `objs:\n--------------\n${NAME}: -2147483647\n  fence active: 2147483653 / -2147483647\n\nfences:\n--------------\n`,
    );
    closeAll(p, tl);
  });
});

test('every object of this file was released (leak check)', () => {
  assert.equal(liveObjects(), BASELINE);
});
