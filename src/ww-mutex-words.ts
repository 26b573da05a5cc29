/**
 * DOC: the ww-mutex algorithm on shared words
 *
 * What ww-mutex.ts builds on: the words of a mutex in the shared table, the
 * lock steps (take, wait, die) every thread runs on them, the thread-local record
 * of what this thread holds, and the release of a dead thread's locks.
 *
 * Word layout. A ww-mutex is WW_MUTEX_WORDS (6) consecutive words starting at an
 * *even* word index `at` (the 64-bit fields must be 8-byte aligned) inside some
 * slot: a `WwMutex.create()` mutex owns a Kind.WwMutex slot and uses the words from
 * S_DATA; DmaResv embeds one in its own slot (`wwMutexAt`, `registerWwMutexScanner`).
 *
 * | word      | name          | meaning |
 * |-----------|---------------|---------|
 * | at + 0    | WW_OWNER      | bits 0-15: 0 = free, else owner tid + 1 (0xffff while the lock of a dead thread is being recovered); bit 16: WW_CONTENDED (a thread sleeps on this word: unlock must notify); bits 17-31: a sequence number bumped on every acquisition and every "re-check" wake-up, so a sleeper's expected value never matches an older state (no ABA) |
 * | at + 1    | WW_FLAGS      | WW_OWNER_DIED: the previous owner died holding the lock (set by recovery, cleared by the next unlock) |
 * | at + 2..3 | WW_STAMP      | int64 stamp of the holding context; 0 = free or locked without a context |
 * | at + 4..5 | WW_WAIT_MIN   | int64 smallest stamp among contexts waiting for the mutex; 0 = none |
 *
 * WW_WAIT_MIN is kept correct without a waiter list: a context waiter publishes
 * its stamp (atomic minimum) every time before it sleeps; a waiter that leaves
 * (acquired, died, interrupted) and finds its own stamp there resets the word to 0
 * and wakes every sleeper, which republish theirs. When a thread dies the reaper
 * resets every WW_WAIT_MIN the same way. In between the value may briefly be too
 * large (a younger context then waits where it could have died: fairness only,
 * deadlock freedom rests on the holder's stamp), never stale-small.
 *
 * Waiting: `Atomics.wait` (or `waitAsync`) on WW_OWNER with a RECHECK_MS timeout.
 * A sleeper sets WW_CONTENDED before its final checks; unlock notifies (everyone:
 * each waiter has its own die rule to apply) only if it is set. An acquisition by a
 * context publishes its stamp after taking the word and then wakes the sleepers if
 * WW_CONTENDED is set, so that younger waiters re-check and die.
 *
 * Dead owners: when a worker dies holding a ww-mutex, the reaper (shared/reaper.ts)
 * releases it: WW_OWNER_DIED is set, H_RECOVERED counts it (`lockRecoveries()`), a
 * 'DMABUF_LOCK_RECOVERED' process warning is emitted and the sleepers are woken.
 * The next locker gets the lock normally (0) and sees `ownerDied === true` until it
 * unlocks. As a second line, a sleeper re-checks the owner's liveness every
 * RECHECK_MS.
 */
import { ERRNO, fail } from './errors.js';
import { onReapLocks } from './shared/reaper.js';
import { Kind, S_DATA, S_KIND } from './shared/slab.js';
import { keepAlive } from './shared/wait.js';
import { H_BUMP, H_RECOVERED, MAX_THREADS, onJoin, SLOT_WORDS, threadAlive, type World } from './shared/world.js';
import { stateOf, type CtxState, type WwAcquireCtx } from './ww-acquire-ctx.js';

/* ---- word layout (offsets from the mutex's first word) ---- */

export const WW_OWNER = 0;
export const WW_FLAGS = 1;
/** int64, words 2-3. */
export const WW_STAMP = 2;
/** int64, words 4-5. */
export const WW_WAIT_MIN = 4;
/** Number of words a ww-mutex needs (from an even word index). */
export const WW_MUTEX_WORDS = 6;

export const WW_OWNER_MASK = 0xffff;
export const WW_CONTENDED = 1 << 16;
/** WW_FLAGS bit: the previous owner died holding the lock. */
export const WW_OWNER_DIED = 1;
const SEQ_UNIT = 1 << 17;
const SEQ_MASK = ~(WW_OWNER_MASK | WW_CONTENDED);
/** Owner value while a dead thread's lock is being released. */
const RECOVERING = WW_OWNER_MASK;
const RECHECK_MS = 50;
/** Loads before a blocking lock sleeps: critical sections under these locks are often short. */
const SPIN = 128;

/* ---- per-thread state ---- */

/** This thread's world (set when it joins). */
export let W: World;
/** This thread's tid + 1 (the owner value it writes). */
export let me = 0;
/** Mutexes (by first word) this thread holds, with the context that took each (null: none). */
export const holders = new Map<number, WwAcquireCtx | null>();
onJoin((w, t) => {
  W = w;
  me = t + 1;
});

/** True if this thread owns the ww-mutex whose words start at `at` (no handle needed). */
export function wwOwnedByMe(w: World, at: number): boolean {
  return (Atomics.load(w.i32, at + WW_OWNER) & WW_OWNER_MASK) === me;
}

/* ---- the lock algorithm on shared words ---- */

/** One lock call in progress. */
export interface Op {
  readonly ctx: WwAcquireCtx | null;
  readonly s: CtxState | null;
  readonly stamp: bigint;
  readonly blocking: boolean;
  readonly syscall: string;
  /** This call's stamp may be in WW_WAIT_MIN. */
  published: boolean;
}

/** `step` result: go to sleep on WW_OWNER with the value left in `expected`. */
const WAIT = 1;
let expected = 0;

/** The owner word of a free mutex after one more acquisition by `me`. */
export function takenValue(v: number, owner: number): number {
  return (((v & SEQ_MASK) + SEQ_UNIT) & SEQ_MASK) | owner;
}

/** Wake every sleeper on `at` so they re-check (bumps the sequence: in-flight sleeps fail). */
function wake(w: World, at: number): void {
  if (Atomics.add(w.i32, at + WW_OWNER, SEQ_UNIT) & WW_CONTENDED) Atomics.notify(w.i32, at + WW_OWNER);
}

/** Lower WW_WAIT_MIN to `stamp`; true if it changed. */
function publishMin(w: World, at: number, stamp: bigint): boolean {
  const k = (at + WW_WAIT_MIN) >> 1;
  for (;;) {
    const cur = Atomics.load(w.i64, k);
    if (cur !== 0n && cur <= stamp) return false;
    if (Atomics.compareExchange(w.i64, k, cur, stamp) === cur) return true;
  }
}

/** The call stops waiting: withdraw its stamp from WW_WAIT_MIN (others republish theirs). */
function leave(w: World, at: number, op: Op): void {
  if (!op.published) return;
  op.published = false;
  if (Atomics.compareExchange(w.i64, (at + WW_WAIT_MIN) >> 1, op.stamp, 0n) === op.stamp) wake(w, at);
}

/** Wait-die: must a context that holds locks give up on `at`? */
function mustDie(w: World, at: number, op: Op): boolean {
  if (op.s === null || op.s.held.size === 0) return false;
  const holder = Atomics.load(w.i64, (at + WW_STAMP) >> 1);
  if (holder !== 0n && holder < op.stamp) return true;
  const min = Atomics.load(w.i64, (at + WW_WAIT_MIN) >> 1);
  return min !== 0n && min < op.stamp;
}

function die(w: World, at: number, op: Op): number {
  leave(w, at, op);
  op.s!.contending = at;
  return -ERRNO.EDEADLK;
}

/** Bookkeeping after the owner word was taken. */
function acquired(w: World, at: number, op: Op): void {
  holders.set(at, op.ctx);
  if (op.s !== null) {
    Atomics.store(w.i64, (at + WW_STAMP) >> 1, op.stamp);
    op.s.held.add(at);
    op.s.contending = -1;
    const left = op.published && Atomics.compareExchange(w.i64, (at + WW_WAIT_MIN) >> 1, op.stamp, 0n) === op.stamp;
    op.published = false;
    // Sleepers that read the stamp before it was stored must re-check (younger ones die now).
    if (left || (Atomics.load(w.i32, at + WW_OWNER) & WW_CONTENDED)) wake(w, at);
  }
}

/**
 * Try to make progress: 0 (acquired), -EDEADLK (died), or WAIT with `expected`
 * set to the owner word to sleep on. Throws EDEADLK for a blocking self-deadlock.
 */
function step(w: World, at: number, op: Op): number {
  const i32 = w.i32;
  const o = at + WW_OWNER;
  for (;;) {
    const v = Atomics.load(i32, o);
    const owner = v & WW_OWNER_MASK;
    if (owner === 0) {
      if (op.s !== null && op.s.held.size > 0) {
        const min = Atomics.load(w.i64, (at + WW_WAIT_MIN) >> 1);
        if (min !== 0n && min < op.stamp) return die(w, at, op); // an older context is waiting
      }
      if (Atomics.compareExchange(i32, o, v, takenValue(v, me)) === v) {
        acquired(w, at, op);
        return 0;
      }
      continue;
    }
    if (owner === me && op.blocking) {
      // Only this thread could release it, and it is about to block.
      if (mustDie(w, at, op)) return die(w, at, op);
      leave(w, at, op);
      throw fail('EDEADLK', op.syscall, 'this thread already holds this ww-mutex (recursive locking)');
    }
    let cur = v;
    if (!(v & WW_CONTENDED)) {
      cur = v | WW_CONTENDED;
      if (Atomics.compareExchange(i32, o, v, cur) !== v) continue;
    }
    // From here on every change of owner or stamp wakes us or fails our sleep: read them now.
    if (op.s !== null) {
      op.published = true;
      if (publishMin(w, at, op.stamp)) {
        wake(w, at); // younger waiters with locks must die now
        continue;
      }
      if (mustDie(w, at, op)) return die(w, at, op);
    }
    expected = cur;
    return WAIT;
  }
}

/** After a sleep timed out: release the lock if its owner thread is dead. */
function recheckOwner(w: World, at: number, seen: number): void {
  const owner = (seen & WW_OWNER_MASK) - 1;
  if (owner >= 0 && owner < MAX_THREADS && !threadAlive(w, owner)) releaseWwIfOwnedBy(w, at, owner);
}

export function lockBlocking(w: World, at: number, op: Op, signal: AbortSignal | undefined): number {
  const s = op.s;
  if (s !== null) s.busy = true;
  try {
    let spun = 0;
    for (;;) {
      const r = step(w, at, op);
      if (r !== WAIT) return r;
      if (signal?.aborted) return -ERRNO.EINTR;
      if (spun < SPIN) {
        // Spin a little before sleeping (the word changes on every release).
        const e = expected;
        while (spun < SPIN && Atomics.load(w.i32, at + WW_OWNER) === e) spun++;
        if (spun < SPIN) continue;
      }
      if (Atomics.wait(w.i32, at + WW_OWNER, expected, RECHECK_MS) === 'timed-out') recheckOwner(w, at, expected);
    }
  } finally {
    leave(w, at, op);
    if (s !== null) s.busy = false;
  }
}

export async function lockAsync(w: World, at: number, op: Op, signal: AbortSignal | undefined): Promise<number> {
  const s = op.s;
  const first = step(w, at, op);
  if (first !== WAIT) return first;
  if (signal?.aborted) {
    leave(w, at, op);
    return -ERRNO.EINTR;
  }
  if (s !== null) s.busy = true;
  const release = keepAlive();
  let onAbort: (() => void) | undefined;
  const aborted = signal
    ? new Promise<'aborted'>((resolve) => {
      onAbort = () => resolve('aborted');
      signal.addEventListener('abort', onAbort, { once: true });
    })
    : undefined;
  try {
    for (;;) {
      const seen = expected;
      const r = Atomics.waitAsync(w.i32, at + WW_OWNER, seen, RECHECK_MS);
      let res: string = r.async ? '' : r.value;
      if (r.async) res = aborted ? await Promise.race([r.value, aborted]) : await r.value;
      if (res === 'aborted' || signal?.aborted) return -ERRNO.EINTR;
      if (res === 'timed-out') recheckOwner(w, at, seen);
      const n = step(w, at, op);
      if (n !== WAIT) return n;
    }
  } finally {
    leave(w, at, op);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    if (s !== null) s.busy = false;
    release();
  }
}

/**
 * Release the ww-mutex at word `at` if dead thread `deadTid` holds it (reaper
 * side; also used by sleepers that find the owner dead). Marks WW_OWNER_DIED,
 * counts the recovery in H_RECOVERED, wakes the sleepers and emits a
 * 'DMABUF_LOCK_RECOVERED' warning. Returns true if it released the lock.
 */
export function releaseWwIfOwnedBy(w: World, at: number, deadTid: number): boolean {
  const i32 = w.i32;
  const o = at + WW_OWNER;
  for (;;) {
    const v = Atomics.load(i32, o);
    if ((v & WW_OWNER_MASK) !== deadTid + 1) return false;
    // Take it over first, so that clearing the stamp cannot hit the next owner's.
    if (Atomics.compareExchange(i32, o, v, (v & SEQ_MASK) | (v & WW_CONTENDED) | RECOVERING) === v) break;
  }
  Atomics.or(i32, at + WW_FLAGS, WW_OWNER_DIED);
  Atomics.store(w.i64, (at + WW_STAMP) >> 1, 0n);
  let v: number;
  do v = Atomics.load(i32, o);
  while (Atomics.compareExchange(i32, o, v, v & SEQ_MASK) !== v);
  Atomics.add(i32, H_RECOVERED, 1);
  Atomics.notify(i32, o);
  process.emitWarning(`ww_mutex at word ${at} was held by thread ${deadTid}, which died; released`, {
    type: 'DmaBufWarning', code: 'DMABUF_LOCK_RECOVERED',
  });
  return true;
}

/** Reaper side: forget every waiter stamp (a dead thread's may be among them); live waiters republish. */
function resetWaitMin(w: World, at: number): void {
  const k = (at + WW_WAIT_MIN) >> 1;
  if (Atomics.load(w.i64, k) === 0n) return;
  Atomics.store(w.i64, k, 0n);
  wake(w, at);
}

const scanners: Array<{ kind: Kind; offset: number }> = [];

/**
 * Tell the reaper that every slot of `kind` has a ww-mutex at word `offset` of the
 * slot (even, ≥ S_DATA): a dead thread's locks there are released and its waiter
 * stamps forgotten. Registering the same pair twice is a no-op.
 */
export function registerWwMutexScanner(kind: Kind, offset: number): void {
  if (!Number.isInteger(offset) || offset < S_DATA || offset % 2 !== 0 || offset + WW_MUTEX_WORDS > SLOT_WORDS) {
    throw fail('EINVAL', 'ww_mutex_scanner', `bad ww-mutex offset ${offset}`);
  }
  if (!scanners.some((sc) => sc.kind === kind && sc.offset === offset)) scanners.push({ kind, offset });
}

registerWwMutexScanner(Kind.WwMutex, S_DATA);

onReapLocks((w, deadTid) => {
  const used = Atomics.load(w.i32, H_BUMP);
  for (let slot = 0; slot < used; slot++) {
    const b = w.base(slot);
    const kind = Atomics.load(w.i32, b + S_KIND);
    for (const sc of scanners) {
      if (sc.kind !== kind) continue;
      releaseWwIfOwnedBy(w, b + sc.offset, deadTid);
      resetWaitMin(w, b + sc.offset);
    }
  }
});

/** Zero the words of a ww-mutex at `at` (a new slot: `allocSlot` already zeroes bodies). */
export function initWwMutexWords(w: World, at: number): void {
  checkAt(at);
  w.i32.fill(0, at, at + WW_MUTEX_WORDS);
}

export function checkAt(at: number): void {
  if (!Number.isInteger(at) || at < 0 || at % 2 !== 0) throw fail('EINVAL', 'ww_mutex', `ww-mutex word ${at} is not even`);
}

/**
 * Release the mutex at `at`, held by this thread (checked by the caller): forget
 * it, clear the stamp and OWNER_DIED, free the owner word (keeping its sequence)
 * and wake the sleepers if any.
 */
export function wwUnlockWords(w: World, at: number): void {
  const ctx = holders.get(at);
  holders.delete(at);
  if (ctx) stateOf(ctx).held.delete(at);
  const o = at + WW_OWNER;
  Atomics.store(w.i64, (at + WW_STAMP) >> 1, 0n);
  if (Atomics.load(w.i32, at + WW_FLAGS) & WW_OWNER_DIED) Atomics.and(w.i32, at + WW_FLAGS, ~WW_OWNER_DIED);
  let v: number;
  do v = Atomics.load(w.i32, o);
  while (Atomics.compareExchange(w.i32, o, v, v & SEQ_MASK) !== v);
  if (v & WW_CONTENDED) Atomics.notify(w.i32, o);
}
