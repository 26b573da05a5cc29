/**
 * DOC: shared mutex
 *
 * A futex-style mutex in one Int32 word of the shared table, usable from every
 * thread: 0 = free, otherwise `owner tid + 1` in the low bits and CONTENDED set
 * once somebody sleeps on it (so an uncontended unlock never calls notify).
 *
 * It plays the part of the kernel's spinlocks (timeline locks, allocator lock).
 * Like the kernel's spinlocks it spins briefly (SPIN rounds) before it sleeps.
 *
 * Differences forced by JS, documented here:
 * - Re-locking a mutex the thread already holds is reported as EDEADLK instead of
 *   hanging (the kernel would spin forever; lockdep reports it).
 * - A worker can be terminated while it holds a mutex. The reaper (reaper.ts)
 *   releases every lock of a dead thread; as a second line, a sleeper re-checks the
 *   owner's liveness every RECHECK_MS and takes the lock over if the owner died.
 *   Each recovery is counted in the header (H_RECOVERED).
 */
import { fail } from '../errors.js';
import { H_RECOVERED, threadAlive, tid, world, type World } from './world.js';

export const OWNER_MASK = 0xffff;
export const CONTENDED = 1 << 16;
const RECHECK_MS = 50;
/** Load-and-try rounds before sleeping: the sections these locks guard are a few hundred ns. */
const SPIN = 256;

/** Take the mutex at word `at`; blocks the calling thread while another holds it. */
export function mutexLock(w: World, at: number): void {
  const me = tid() + 1;
  if (Atomics.compareExchange(w.i32, at, 0, me) === 0) return;
  lockSlow(w, at, me);
}

function lockSlow(w: World, at: number, me: number): void {
  for (let i = 0; i < SPIN; i++) {
    const v = Atomics.load(w.i32, at);
    if (v === 0) {
      if (Atomics.compareExchange(w.i32, at, 0, me) === 0) return;
    } else if ((v & OWNER_MASK) === me) {
      throw fail('EDEADLK', 'lock', 'this thread already holds this lock (recursive locking)');
    }
  }
  for (;;) {
    const v = Atomics.load(w.i32, at);
    if (v === 0) {
      // Keep CONTENDED: others may still sleep here and must be woken on unlock.
      if (Atomics.compareExchange(w.i32, at, 0, me | CONTENDED) === 0) return;
      continue;
    }
    const owner = v & OWNER_MASK;
    if (owner === me) throw fail('EDEADLK', 'lock', 'this thread already holds this lock (recursive locking)');
    if (!(v & CONTENDED) && Atomics.compareExchange(w.i32, at, v, v | CONTENDED) !== v) continue;
    if (Atomics.wait(w.i32, at, v | CONTENDED, RECHECK_MS) === 'timed-out') recoverIfDead(w, at, v | CONTENDED);
  }
}

/** Release the mutex at `at`, waking one sleeper if any. */
export function mutexUnlock(w: World, at: number): void {
  const v = Atomics.exchange(w.i32, at, 0);
  if (v & CONTENDED) Atomics.notify(w.i32, at, 1);
}

/** Release the lock at `at` if its owner thread is no longer alive. */
export function recoverIfDead(w: World, at: number, seen: number): boolean {
  const owner = (seen & OWNER_MASK) - 1;
  if (owner < 0 || threadAlive(w, owner)) return false;
  if (Atomics.compareExchange(w.i32, at, seen, 0) !== seen) return false;
  Atomics.add(w.i32, H_RECOVERED, 1);
  Atomics.notify(w.i32, at);
  return true;
}

/** Release `at` if dead thread `deadTid` holds it (used by the reaper). */
export function releaseIfOwnedBy(w: World, at: number, deadTid: number): boolean {
  const v = Atomics.load(w.i32, at);
  if ((v & OWNER_MASK) !== deadTid + 1) return false;
  if (Atomics.compareExchange(w.i32, at, v, 0) !== v) return false;
  Atomics.add(w.i32, H_RECOVERED, 1);
  Atomics.notify(w.i32, at);
  return true;
}

/** How many locks have been recovered from dead threads in this world. */
export function lockRecoveries(): number {
  return Atomics.load(world().i32, H_RECOVERED);
}
