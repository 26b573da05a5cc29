/**
 * Seeded fuzzing of dmabuf/uapi: random calls with random arguments of every JS
 * type. Every call must either succeed or throw a DmaBufError carrying a Linux
 * errno (never a TypeError, a RangeError or a crash), and when every fd is closed
 * nothing may be left in the shared table. A failure prints its seed to replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDmaBufError, liveObjects, ERRNO } from 'dmabuf';
import * as U from 'dmabuf/uapi';
import { xorshift } from './support/stress.js';

const REQUESTS = [
  U.SW_SYNC_IOC_CREATE_FENCE, U.SW_SYNC_IOC_INC, U.SW_SYNC_GET_DEADLINE, U.SYNC_IOC_MERGE, U.SYNC_IOC_FILE_INFO,
  U.SYNC_IOC_SET_DEADLINE, U.DMA_BUF_IOCTL_SYNC, 0, 0xdeadbeef, -1,
];
const FIELDS = ['value', 'name', 'fence', 'fd2', 'flags', 'pad', 'num_fences', 'sync_fence_info', 'deadline_ns',
  'fence_fd', 'status'];
const KNOWN_ERRNOS = new Set(Object.values(ERRNO));

function fuzzRun(seed: number, steps: number): void {
  const r = xorshift(seed); // seeded, so a failure replays
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const open: number[] = [];
  const scalar = (): unknown => pick([
    () => Math.floor(r() * 8), () => -1, () => 0xffffffff, () => 2 ** 40, () => 1.5, () => Number.NaN, () => Infinity,
    () => BigInt(Math.floor(r() * 10)), () => -1n, () => 'x', () => '', () => null, () => undefined, () => ({}),
    () => [], () => true, () => Symbol('s'), () => (open.length ? pick(open) : 3), () => 'a'.repeat(40),
  ])();
  const struct = (): unknown => {
    if (r() < 0.1) return scalar();
    const o: Record<string, unknown> = {};
    for (const f of FIELDS) if (r() < 0.4) o[f] = f === 'sync_fence_info' && r() < 0.5 ? [] : scalar();
    return o;
  };
  const fd = (): unknown => (open.length && r() < 0.7 ? pick(open) : scalar());
  // poll timeouts stay finite below: a negative one waits forever
  const calls: Array<() => unknown> = [
    () => open.push(U.open(pick(['/dev/sw_sync', '/sys/kernel/debug/sync/sw_sync', '/dev/nope', 7 as never]))),
    () => {
      const arg = struct();
      const ret = U.ioctl(fd() as number, pick(REQUESTS), arg);
      if (typeof arg === 'object' && arg !== null && typeof (arg as { fence?: unknown }).fence === 'number') {
        const out = (arg as { fence: number }).fence;
        if (out >= 3 && !open.includes(out)) open.push(out); // an ioctl that made a new fd
      }
      return ret;
    },
    () => U.poll([{ fd: fd() as number, events: U.POLLIN }, struct() as U.PollFd], pick([0, 0, 1, Number.NaN])),
    () => open.push(U.dup(fd() as number)),
    () => {
      const f = fd();
      U.close(f as number);
      const i = open.indexOf(f as number);
      if (i >= 0) open.splice(i, 1);
    },
    () => {
      const packet = U.sendFds(r() < 0.8 ? open.slice(0, 3) : (scalar() as number[]));
      for (const f of U.receiveFds(packet)) open.push(f);
      return U.receiveFds(packet); // a second receive must fail with EINVAL
    },
    () => U.receiveFds(struct() as U.FdPacket),
    () => U.readFile(pick(['/sys/kernel/debug/sync/info', '/nope', 5 as never])),
    () => U.readdir(pick(['/dev/dma_heap', '/nope', null as never])),
  ];
  for (let step = 0; step < steps; step++) {
    try {
      pick(calls)();
    } catch (e) {
      if (!isDmaBufError(e)) throw new Error(`seed ${seed} step ${step}: not a DmaBufError: ${String(e)}`);
      if (!KNOWN_ERRNOS.has(e.errno as never)) throw new Error(`seed ${seed} step ${step}: unknown errno ${e.errno}`);
    }
  }
  for (const f of open) {
    try {
      U.close(f);
    } catch {
      // closed twice through dup'd numbers: fine
    }
  }
}

test('20 seeds x 2,000 random uapi calls: only errno errors, and nothing left after closing every fd', () => {
  const baseline = liveObjects();
  for (let seed = 1; seed <= 20; seed++) {
    fuzzRun(seed * 7919, 2_000);
    assert.equal(liveObjects(), baseline, `seed ${seed * 7919} left objects behind`);
  }
});
