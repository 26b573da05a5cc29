/**
 * DOC: waiting and waking across threads
 *
 * Two ways to sleep until something changes in the shared table:
 *
 * - On one word (a leaf fence's state): the sleeper counts itself in a "sleepers"
 *   word next to it before checking, and the waker notifies only if that count is
 *   non-zero, so signalling with nobody waiting never calls `Atomics.notify`.
 *   (Sequentially consistent atomics make the check-then-sleep race-free: either
 *   the sleeper sees the new value, or the waker sees the sleeper.)
 * - On many things at once (wait-any, poll of several fds, containers): the sleeper
 *   counts itself in H_MULTI and sleeps on the global epoch word H_EPOCH; every
 *   signal while H_MULTI > 0 bumps the epoch and wakes them, and each re-checks
 *   its own conditions. Spurious wake-ups happen only while someone multi-waits.
 *
 * Blocking waits use `Atomics.wait` (allowed on Node's main thread too); async
 * waits use `Atomics.waitAsync`. A pending `waitAsync` does not keep Node's event
 * loop alive, so async waiters take a keep-alive (a ref'd timer) until they settle.
 *
 * Time: timeouts are milliseconds (`Infinity` = MAX_SCHEDULE_TIMEOUT). Timestamps
 * and deadlines are CLOCK_MONOTONIC nanoseconds, the clock of
 * `process.hrtime.bigint()`, identical in every thread.
 */
import { H_EPOCH, H_MULTI, type World } from './world.js';

/* ---- clock ---- */

/**
 * Offset from this thread's `performance.now()` (ms since its time origin) to
 * CLOCK_MONOTONIC ns. Both read the same monotonic clock; the offset is taken
 * from the tightest of a few hrtime readings bracketed by two performance.now()
 * calls (after a warm-up: the first call of each is slow), so it is good to well
 * under a microsecond in every thread.
 */
const hrOffsetNs = calibrate();

function calibrate(): number {
  performance.now();
  process.hrtime.bigint();
  let best = Infinity;
  let offset = 0;
  for (let i = 0; i < 16; i++) {
    const a = performance.now();
    const h = process.hrtime.bigint();
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = Number(h) - ((a + b) / 2) * 1e6;
    }
  }
  return offset;
}

/** CLOCK_MONOTONIC now, in nanoseconds, as a double (exact to the ns for ~104 days of uptime). */
export function ktimeNowNs(): number {
  return performance.now() * 1e6 + hrOffsetNs;
}

/** Milliseconds on the same clock, for timeout arithmetic. */
export function nowMs(): number {
  return performance.now();
}

/* ---- keep-alive for async waits ---- */

let pendingAsync = 0;
let keepAliveTimer: ReturnType<typeof setInterval> | undefined;

/** Keep the event loop alive until the returned function is called (once). */
export function keepAlive(): () => void {
  if (pendingAsync++ === 0) keepAliveTimer = setInterval(() => {}, 1 << 30);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (--pendingAsync === 0 && keepAliveTimer) {
      clearInterval(keepAliveTimer);
      keepAliveTimer = undefined;
    }
  };
}

/* ---- opt-in adaptive spinning ---- */

let spinMaxMs = 0;
let spinMs = 0;

/**
 * Opt in to spinning for up to `maxMicros` µs before a leaf fence wait sleeps
 * (0, the default, turns it off), like Linux's busy-poll knob. Spinning costs a
 * core but skips the sleep/wake round trip when the signaller is about to fire.
 *
 * It adapts from what each wait shows: the fence's signal timestamp minus the time
 * the wait began is how long a spin would have needed (`spinLearn`). Needs that
 * fit under the maximum pull the budget toward 1.5× the need; needs beyond it
 * (spinning would not have helped) halve the budget, never below 1/8 of the
 * maximum, so a thread notices when hand-offs become fast again.
 */
export function setWaitSpin(maxMicros: number): void {
  if (typeof maxMicros !== 'number' || !(maxMicros >= 0) || maxMicros > 1e6) {
    throw new RangeError('setWaitSpin: microseconds must be between 0 and 1e6');
  }
  spinMaxMs = maxMicros / 1000;
  spinMs = spinMaxMs;
}

/** Spin while `i32[at] === expected`, within the current budget. True if it changed. */
export function spinWhile(i32: Int32Array, at: number, expected: number): boolean {
  if (spinMs <= 0) return false;
  const end = performance.now() + spinMs;
  do {
    for (let i = 0; i < 64; i++) if (Atomics.load(i32, at) !== expected) return true;
  } while (performance.now() < end);
  return false;
}

/** True if spinning is switched on (`setWaitSpin`). */
export function spinEnabled(): boolean {
  return spinMaxMs > 0;
}

/** Feed back how long, in ms, the last wait needed until its fence signalled. */
export function spinLearn(neededMs: number): void {
  if (spinMaxMs <= 0) return;
  if (neededMs <= spinMaxMs) spinMs += (Math.min(spinMaxMs, Math.max(neededMs * 1.5, spinMaxMs / 8)) - spinMs) / 4;
  else spinMs = Math.max(spinMaxMs / 8, spinMs / 2);
}

/* ---- aborting async waits ---- */

/** A promise that resolves to 'aborted' when `signal` aborts, and its clean-up. */
export interface AbortRace {
  readonly aborted: Promise<'aborted'> | undefined;
  dispose(): void;
}

/** Race helper for async waits: `aborted` is undefined when there is no signal. */
export function abortRace(signal: AbortSignal | undefined): AbortRace {
  if (!signal) return { aborted: undefined, dispose: () => {} };
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return { aborted, dispose: () => signal.removeEventListener('abort', onAbort!) };
}

/** Await `p`, or 'aborted' first if the race's signal aborts. */
export function orAborted<T>(p: Promise<T>, race: AbortRace): Promise<T | 'aborted'> {
  return race.aborted ? Promise.race([p, race.aborted]) : p;
}

/* ---- sleeping on one word ---- */

/**
 * Promise that settles when `i32[at]` may have changed from `expected` (true) or
 * after `timeoutMs` (false).
 */
export function sleepOnWordAsync(i32: Int32Array, at: number, expected: number, timeoutMs: number): Promise<boolean> {
  const r = Atomics.waitAsync(i32, at, expected, timeoutMs === Infinity ? undefined : timeoutMs);
  if (!r.async) return Promise.resolve(r.value !== 'timed-out');
  return r.value.then((v) => v !== 'timed-out');
}

/* ---- multi-waits on the epoch ---- */

/** Called after every signal: wakes multi-waiters, costs one load when there are none. */
export function bumpEpoch(w: World): void {
  if (Atomics.load(w.i32, H_MULTI) > 0) {
    Atomics.add(w.i32, H_EPOCH, 1);
    Atomics.notify(w.i32, H_EPOCH);
  }
}

/**
 * Block until `ready()` returns true or `timeoutMs` passes. `ready` is re-run after
 * every signal in the world. Returns the remaining milliseconds (> 0 may be
 * fractional) or 0 on timeout; with timeout 0 it checks once.
 */
export function multiWait(w: World, ready: () => boolean, timeoutMs: number): number {
  if (ready()) return timeoutMs === 0 ? 1 : timeoutMs;
  if (timeoutMs === 0) return 0;
  const deadline = nowMs() + timeoutMs;
  Atomics.add(w.i32, H_MULTI, 1);
  try {
    for (;;) {
      const epoch = Atomics.load(w.i32, H_EPOCH);
      if (ready()) return Math.max(deadline - nowMs(), Number.MIN_VALUE);
      const left = deadline - nowMs();
      if (left <= 0) return 0;
      Atomics.wait(w.i32, H_EPOCH, epoch, left);
    }
  } finally {
    Atomics.sub(w.i32, H_MULTI, 1);
  }
}

/** Async `multiWait`; `aborted()` is polled on every wake and on abort. */
export async function multiWaitAsync(
  w: World, ready: () => boolean, timeoutMs: number, abort?: AbortSignal,
): Promise<number | 'aborted'> {
  if (ready()) return timeoutMs === 0 ? 1 : timeoutMs;
  if (timeoutMs === 0) return 0;
  const deadline = nowMs() + timeoutMs;
  const release = keepAlive();
  Atomics.add(w.i32, H_MULTI, 1);
  const race = abortRace(abort);
  try {
    for (;;) {
      if (abort?.aborted) return 'aborted';
      const epoch = Atomics.load(w.i32, H_EPOCH);
      if (ready()) return Math.max(deadline - nowMs(), Number.MIN_VALUE);
      const left = deadline - nowMs();
      if (left <= 0) return 0;
      const r = Atomics.waitAsync(w.i32, H_EPOCH, epoch, left === Infinity ? undefined : left);
      if (r.async && (await orAborted(r.value, race)) === 'aborted') return 'aborted';
    }
  } finally {
    Atomics.sub(w.i32, H_MULTI, 1);
    race.dispose();
    release();
  }
}
