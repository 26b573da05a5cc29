/**
 * The main job, for now: a relay of fences around a ring of worker threads,
 * through the Linux uapi only (sw_sync timelines, sync_file fds, poll, fd
 * passing). Each worker waits for its inbound point, then signals the next
 * timeline; the main thread closes the ring. It prints the round-trip figures
 * and the kernel-format debugfs listing, then checks that nothing leaked.
 *
 *   npm start -- [workers=3] [laps=20000]
 */
import { Worker } from 'node:worker_threads';
import { liveObjects } from 'dmabuf';
import * as U from 'dmabuf/uapi';

const workers = Number(process.argv[2] ?? 3);
const laps = Number(process.argv[3] ?? 20000);
if (!Number.isInteger(workers) || workers < 1 || workers > 16 || !Number.isInteger(laps) || laps < 1) {
  console.error('EINVAL: usage: npm start -- [workers 1..16] [laps >= 1]');
  process.exit(2);
}

// timeline i is signalled by hop i-1 and waited on by hop i (hop 0 is the main thread)
const timelines = Array.from({ length: workers + 1 }, () => U.open('/dev/sw_sync'));
const threads = Array.from({ length: workers }, (_, i) => {
  const w = new Worker(new URL('./workers/relay-worker.js', import.meta.url));
  w.postMessage({ laps, packet: U.sendFds([timelines[i + 1]!, timelines[(i + 2) % (workers + 1)]!]) });
  return new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('exit', () => resolve());
  });
});

function waitPoint(timeline: number, value: number): void {
  const pt = { value, fence: -1 };
  U.ioctl(timeline, U.SW_SYNC_IOC_CREATE_FENCE, pt);
  U.poll([{ fd: pt.fence, events: U.POLLIN }], -1);
  U.close(pt.fence);
}

const t0 = process.hrtime.bigint();
for (let lap = 1; lap <= laps; lap++) {
  U.ioctl(timelines[1]!, U.SW_SYNC_IOC_INC, 1); // start the lap
  waitPoint(timelines[0]!, lap); // the last worker closes the ring
}
const ns = Number(process.hrtime.bigint() - t0);
await Promise.all(threads);

const hops = laps * (workers + 1);
console.log(`relay: ${workers} workers, ${laps} laps, ${hops} cross-thread fence hand-offs`);
console.log(`  ${(ns / hops / 1000).toFixed(2)} µs per hop, ${(hops / (ns / 1e9)).toFixed(0)} hops/s`);
console.log('\n/sys/kernel/debug/sync/info while the timelines are open:');
console.log(U.readFile('/sys/kernel/debug/sync/info'));
for (const fd of timelines) U.close(fd);
const live = liveObjects();
console.log(`shared objects left after closing every fd: ${live}`);
if (live !== 0) process.exitCode = 1;
