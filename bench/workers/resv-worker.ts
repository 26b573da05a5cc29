/**
 * The worker side of the contended-lock benchmarks (bench/resv.bench.ts).
 *
 * The main thread posts one `Start` (one variant per worker); the worker sets up
 * and answers `{ ev: 'ready' }`. Then, for every batch, the main thread stores the
 * worker's share of lock/unlock pairs in C_N and bumps the generation C_GO; both
 * sides meet at a start barrier (C_STARTED, C_ACK) so that they really run at the
 * same time, each does its pairs (lock, increment the shared counter with plain
 * non-atomic loads and stores, unlock), and the worker reports the end of its
 * share in C_DONE. C_STOP plus one more C_GO bump ends the loop: the worker drops
 * what it holds, answers `{ ev: 'done', pairs, handoffs }`, closes its port and
 * exits by itself.
 *
 * Imported by the main thread too, for the protocol's types, word indexes and the
 * raw-Atomics mutex; the message loop only starts inside a Worker.
 */
import { isMainThread, parentPort } from 'node:worker_threads';
import { DmaResv, type Packet } from 'dmabuf';

/* ---- control words (Int32Array over `ctl`) ---- */

/** Batch generation, bumped by the main thread (the worker sleeps on it between batches). */
export const C_GO = 0;
/** The worker's lock/unlock pairs in the current batch. */
export const C_N = 1;
/** Set to the generation by the worker when it is awake and about to start. */
export const C_STARTED = 2;
/** Set to the generation by the main thread once it saw C_STARTED: both start now. */
export const C_ACK = 3;
/** Set to the generation by the worker when its share of the batch is done. */
export const C_DONE = 4;
/** Set (with a C_GO bump) by the main thread to end the worker's loop. */
export const C_STOP = 5;
/** Set by the worker when its loop failed (it then releases the main thread). */
export const C_ERROR = 6;
/** The counter both sides increment under the lock (plain loads and stores). */
export const C_COUNTER = 8;
/** Who incremented last (1 main, 2 worker): a change is a hand-off of the lock. */
export const C_LAST = 9;
/** The raw futex mutex word, on its own 64-byte line. */
export const C_MUTEX = 16;
export const CTL_BYTES = 128;

export const MAIN_ID = 1;
export const WORKER_ID = 2;

export type Mode = 'resv' | 'futex' | 'futex-spin';

export type Start =
  | { cmd: 'start'; mode: 'resv'; ctl: SharedArrayBuffer; resv: Packet }
  | { cmd: 'start'; mode: 'futex' | 'futex-spin'; ctl: SharedArrayBuffer };

export type Reply =
  | { ev: 'ready' }
  | { ev: 'done'; pairs: number; handoffs: number; error?: string };

/* ---- the raw baseline: a futex-style mutex (Drepper, "Futexes are tricky", mutex 2) ---- */

/** Loads a spinning locker makes before it sleeps (the same budget as dmabuf's ww-mutex). */
export const SPIN_LOADS = 128;

/**
 * Lock the word `at`: 0 free, 1 locked, 2 locked with (possible) sleepers. With
 * `spin` > 0, first poll up to `spin` loads for it to come free.
 */
export function futexLock(m: Int32Array, at: number, spin: number): void {
  let c = Atomics.compareExchange(m, at, 0, 1);
  if (c === 0) return;
  for (let k = 0; k < spin; k++) {
    if (Atomics.load(m, at) === 0) {
      c = Atomics.compareExchange(m, at, 0, 1);
      if (c === 0) return;
    }
  }
  if (c !== 2) c = Atomics.exchange(m, at, 2);
  while (c !== 0) {
    Atomics.wait(m, at, 2);
    c = Atomics.exchange(m, at, 2);
  }
}

/** Unlock the word `at`; a notify only if someone may sleep on it. */
export function futexUnlock(m: Int32Array, at: number): void {
  if (Atomics.sub(m, at, 1) !== 1) {
    Atomics.store(m, at, 0);
    Atomics.notify(m, at, 1);
  }
}

/**
 * The start barrier, worker side: publish that it is running, then spin until the
 * main thread has seen it (a bounded wait: the main thread is waking up). False if
 * the main thread stopped instead.
 */
function meet(ctl: Int32Array, gen: number): boolean {
  Atomics.store(ctl, C_STARTED, gen);
  Atomics.notify(ctl, C_STARTED);
  while (Atomics.load(ctl, C_ACK) !== gen) {
    if (Atomics.load(ctl, C_STOP)) return false;
  }
  return true;
}

/** One side's share of a batch: `n` lock / increment / unlock, counting hand-offs. */
export type Section = (n: number) => number;

/** A `Section` for the DmaResv lock (null context). */
export function resvSection(resv: DmaResv, ctl: Int32Array, id: number): Section {
  return (n) => {
    let handoffs = 0;
    for (let k = 0; k < n; k++) {
      const g = resv.lock(null);
      if (typeof g === 'number') throw new Error(`dma_resv_lock returned ${g}`);
      ctl[C_COUNTER] = ctl[C_COUNTER]! + 1;
      if (ctl[C_LAST] !== id) {
        ctl[C_LAST] = id;
        handoffs++;
      }
      g.unlock();
    }
    return handoffs;
  };
}

/** A `Section` for the raw futex mutex, spinning `spin` loads before sleeping. */
export function futexSection(ctl: Int32Array, id: number, spin: number): Section {
  return (n) => {
    let handoffs = 0;
    for (let k = 0; k < n; k++) {
      futexLock(ctl, C_MUTEX, spin);
      ctl[C_COUNTER] = ctl[C_COUNTER]! + 1;
      if (ctl[C_LAST] !== id) {
        ctl[C_LAST] = id;
        handoffs++;
      }
      futexUnlock(ctl, C_MUTEX);
    }
    return handoffs;
  };
}

/* ---- the worker ---- */

function loop(ctl: Int32Array, section: Section, ready: () => void): { pairs: number; handoffs: number } {
  let pairs = 0;
  let handoffs = 0;
  let gen = Atomics.load(ctl, C_GO);
  ready();
  for (;;) {
    Atomics.wait(ctl, C_GO, gen);
    const next = Atomics.load(ctl, C_GO);
    if (next === gen) continue; // spurious
    gen = next;
    if (Atomics.load(ctl, C_STOP)) break;
    const n = Atomics.load(ctl, C_N);
    if (!meet(ctl, gen)) break;
    handoffs += section(n);
    pairs += n;
    Atomics.store(ctl, C_DONE, gen);
    Atomics.notify(ctl, C_DONE);
  }
  return { pairs, handoffs };
}

function start(msg: Start): void {
  const port = parentPort!;
  const ctl = new Int32Array(msg.ctl);
  const ready = (): void => port.postMessage({ ev: 'ready' } satisfies Reply);
  let resv: DmaResv | undefined;
  let result = { pairs: 0, handoffs: 0 };
  let error: string | undefined;
  try {
    let section: Section;
    if (msg.mode === 'resv') {
      resv = DmaResv.receive(msg.resv);
      section = resvSection(resv, ctl, WORKER_ID);
    } else {
      section = futexSection(ctl, WORKER_ID, msg.mode === 'futex-spin' ? SPIN_LOADS : 0);
    }
    result = loop(ctl, section, ready);
  } catch (e) {
    error = e instanceof Error ? (e.stack ?? e.message) : String(e);
    Atomics.store(ctl, C_ERROR, 1);
    Atomics.store(ctl, C_STARTED, -1); // release a main thread waiting at either end of a batch
    Atomics.notify(ctl, C_STARTED);
    Atomics.store(ctl, C_DONE, -1);
    Atomics.notify(ctl, C_DONE);
  }
  try {
    resv?.put(); // EBUSY if the loop failed holding the lock: the reaper releases it when this thread exits
  } catch (e) {
    error ??= e instanceof Error ? (e.stack ?? e.message) : String(e);
  }
  const done: Reply = error === undefined ? { ev: 'done', ...result } : { ev: 'done', ...result, error };
  port.postMessage(done);
  port.close(); // nothing else keeps this thread alive: it exits by itself
}

if (!isMainThread && parentPort) {
  parentPort.once('message', (msg: Start) => start(msg));
}
