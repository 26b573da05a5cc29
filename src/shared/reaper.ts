/**
 * DOC: thread exit ("process exit" for a worker)
 *
 * A worker that exits has its references dropped as a process exit drops fds:
 *
 * - Normal exit: the worker's own `process.on('exit')` runs the exit hooks (the
 *   fd table closes every fd, so file release runs in order), releases any lock it
 *   still holds (as for a dead owner: flagged and reported), and drops every
 *   remaining hold.
 * - Termination (`worker.terminate()`, an uncaught error): the worker runs no more
 *   JS, so another thread does it. Every joined thread listens to Node's
 *   `process.on('worker')` event for the Workers it creates and, on their `'exit'`,
 *   reaps the dead thread: first it releases every lock the thread held (so release
 *   hooks below cannot deadlock on them), then clears the thread's holder bit in
 *   every slot and drops the reference each bit stood for, then frees the tid.
 *
 * Limitation (JS forces it): only the thread that created a Worker sees its exit.
 * A Worker created by a thread that never loaded this library is reaped only if it
 * exits normally.
 */
import { isMainThread, threadId } from 'node:worker_threads';
import { releaseIfOwnedBy } from './mutex.js';
import { dropAllHolds, reclaimCache, reclaimHolds, S_LOCK } from './slab.js';
import {
  H_ALLOC_LOCK, H_ARENA_LOCK, H_BUMP, H_CHAIN_LOCK, H_CMA_LOCK, H_DMABUF_LOCK, H_VGEM_LOCK, H_TIMELINE_LOCK, onJoin, T_STATE, THREAD_ALIVE, THREAD_BASE, THREAD_FREE,
  THREAD_REAPING, THREAD_WORDS, tidOfNodeThread, world, type World,
} from './world.js';

type ReapHook = (w: World, deadTid: number) => void;
const lockScanners: ReapHook[] = [];
const exitHooks: Array<() => void> = [];

/** Register extra lock words to release when a thread dies (e.g. ww-mutexes). */
export function onReapLocks(hook: ReapHook): void {
  lockScanners.push(hook);
}

/** Register work this thread does on its own normal exit, before its holds drop. */
export function onThreadExit(hook: () => void): void {
  exitHooks.push(hook);
}

/** Release every lock thread `t` still holds (plain mutexes and the registered ww-mutexes). */
function releaseLocksOf(w: World, t: number): void {
  releaseIfOwnedBy(w, H_ALLOC_LOCK, t);
  releaseIfOwnedBy(w, H_TIMELINE_LOCK, t);
  releaseIfOwnedBy(w, H_CHAIN_LOCK, t);
  releaseIfOwnedBy(w, H_ARENA_LOCK, t);
  for (const at of [H_DMABUF_LOCK, H_CMA_LOCK, H_VGEM_LOCK]) releaseIfOwnedBy(w, at, t);
  const used = Atomics.load(w.i32, H_BUMP);
  for (let s = 0; s < used; s++) releaseIfOwnedBy(w, w.base(s) + S_LOCK, t);
  for (const scan of lockScanners) scan(w, t);
}

/** Reap thread `t` of world `w`. Returns the number of objects let go of. */
export function reapThread(w: World, t: number): number {
  const at = THREAD_BASE + t * THREAD_WORDS + T_STATE;
  if (Atomics.compareExchange(w.i32, at, THREAD_ALIVE, THREAD_REAPING) !== THREAD_ALIVE) return 0;
  releaseLocksOf(w, t);
  const n = reclaimHolds(w, t);
  reclaimCache(w, t);
  Atomics.store(w.i32, at, THREAD_FREE);
  return n;
}

function reapNodeThread(nodeTid: number): void {
  const w = world();
  const t = tidOfNodeThread(w, nodeTid);
  if (t >= 0) reapThread(w, t);
}

let installed = false;
onJoin((w, myTid) => {
  if (installed) return;
  installed = true;
  process.on('worker', (worker) => {
    const nodeTid = worker.threadId; // -1 once it has exited, so capture it now
    worker.once('exit', () => reapNodeThread(nodeTid));
  });
  if (!isMainThread) {
    process.once('exit', () => {
      for (const hook of exitHooks) {
        try {
          hook();
        } catch {
          // exit must go on; the reaper below drops what is left
        }
      }
      releaseLocksOf(w, myTid); // a lock held at exit is released as a dead owner's would be
      dropAllHolds(w);
      reclaimCache(w, myTid);
      const at = THREAD_BASE + myTid * THREAD_WORDS + T_STATE;
      if (tidOfNodeThread(w, threadId) === myTid) Atomics.store(w.i32, at, THREAD_FREE);
    });
  }
});
