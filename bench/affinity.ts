/**
 * Pinning threads to CPUs for the cross-thread benchmarks (Linux only).
 *
 * Where the scheduler puts two ping-ponging threads decides what a sleeping round
 * trip costs more than anything the threads do: on this 2-core VM a raw
 * Atomics.wait/notify round trip takes ~50 µs between two cores and ~5 µs when
 * both threads share one (a wake-up is then a context switch), and the scheduler
 * moves threads between those placements from one round to the next. Pinning
 * every variant the same way compares like with like.
 *
 * Node has no sched_setaffinity, so this runs taskset(1) on the kernel thread id
 * (found through /proc/thread-self). Every function reports failure instead of
 * throwing; callers then measure unpinned and say so.
 */
import { execFileSync } from 'node:child_process';

/** The kernel thread id of the calling thread, or -1 if /proc is not there (shared with the pipeline stages). */
export { kernelTid } from '#cli/pipeline.js';

/** The CPU list thread `tid` may run on ("0,1", "0-3"), or undefined if it cannot be read. */
export function getAffinity(tid: number): string | undefined {
  if (tid < 0) return undefined;
  try {
    const out = execFileSync('taskset', ['-pc', String(tid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return /:\s*(\S+)\s*$/.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

/** Restrict thread `tid` to `cpus` (a taskset CPU list). True if it worked. */
export function setAffinity(tid: number, cpus: string): boolean {
  if (tid < 0) return false;
  try {
    execFileSync('taskset', ['-pc', cpus, String(tid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The CPUs in a taskset list, ascending ("0-2,5" → [0, 1, 2, 5]). */
export function parseCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(',')) {
    const [lo, hi] = part.split('-').map(Number);
    if (lo === undefined || !Number.isInteger(lo)) continue;
    for (let c = lo; c <= (hi ?? lo); c++) out.push(c);
  }
  return out;
}
