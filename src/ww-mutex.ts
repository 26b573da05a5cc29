/**
 * DOC: ww_mutex — wait-die mutexes with acquire contexts, shared between threads
 *
 * The reservation lock of dma_resv (kernel-contract §3.4): a sleeping mutex that
 * several threads can lock, plus *acquire contexts* (`WwAcquireCtx`,
 * `ww_acquire_init`) that let one transaction lock many of them in any order
 * without deadlocking. The class is the kernel's `reservation_ww_class`, a
 * **wait-die** class; it is the only class, so "mixing classes" cannot happen.
 *
 * Wait-die: every context gets a stamp from one global 64-bit counter in the
 * shared table header (H_WW_STAMP; smaller = older). When a context that already
 * holds at least one lock wants a mutex that is held by an older context, or that
 * an older context is already waiting for, it "dies": `lock()` returns -EDEADLK at
 * once. A context holding no locks never dies; it waits. So a context only ever
 * waits for younger ones while it holds something, and the oldest transaction
 * always makes progress. Back-off protocol after -EDEADLK for mutex X: unlock
 * everything the context holds, `lockSlow(X)` (sleeps until X is taken), then lock
 * the rest again (-EALREADY for X counts as success); finally `ctx.done()`.
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
 * Ownership is per thread, as the kernel's is per task; a context belongs to the
 * thread that made it. Within one thread, async lock calls (`lockAsync`) may wait
 * for a mutex that another async task of the same thread holds (the lock is needed
 * across `await` points). A *blocking* call that would wait for a mutex its own
 * thread holds can never be woken, so it throws EDEADLK (as plain mutexes do,
 * shared/mutex.ts) — unless the wait-die rule makes it return -EDEADLK first.
 *
 * Errors (kernel-contract §8; the kernel WARNs under DEBUG_WW_MUTEXES):
 * - EINVAL (thrown, nothing changes): context misuse — after -EDEADLK locking a
 *   different mutex than the contended one, or the contended one while still
 *   holding locks; `lockSlow` without a preceding -EDEADLK on that mutex or with
 *   locks held; locking after `done()` or `fini()`; `done()`/`fini()` twice;
 *   `fini()` with locks held; a second lock operation on a context while one is
 *   still pending (async).
 * - EDEADLK (thrown): a blocking lock would wait for its own thread (self-deadlock).
 *   Distinct from the *returned* -EDEADLK of wait-die.
 * - EPERM (thrown): `unlock()` or `assertHeld()` by a thread (or context) that does
 *   not hold the mutex — the kernel's lockdep assertion / DEBUG_MUTEXES check.
 * - EBUSY (thrown): dropping this thread's last handle of a mutex it holds
 *   (`mutex_destroy` of a locked mutex).
 *
 * Interruption: `lockAsync`/`lockSlowAsync` with an AbortSignal settle with -EINTR
 * as soon as the signal aborts while they sleep. The blocking `lockInterruptible`
 * and `lockSlowInterruptible` can only see the signal before sleeping (a blocked
 * thread runs no JS): an already-aborted signal makes them return -EINTR instead of
 * sleeping. As in the kernel, a pending signal does not stop an acquisition that
 * needs no sleep (a free mutex is still taken, -EALREADY/-EDEADLK still returned).
 * `lock`, `lockSlow` and async calls without a signal are uninterruptible.
 *
 * Dead owners: when a worker dies holding a ww-mutex, the reaper (shared/reaper.ts)
 * releases it: WW_OWNER_DIED is set, H_RECOVERED counts it (`lockRecoveries()`), a
 * 'DMABUF_LOCK_RECOVERED' process warning is emitted and the sleepers are woken.
 * The next locker gets the lock normally (0) and sees `ownerDied === true` until it
 * unlocks. As a second line, a sleeper re-checks the owner's liveness every
 * RECHECK_MS.
 */
import { ERRNO, fail } from './errors.js';
import { packSlots, unpackSlots, type Packet } from './shared/packet.js';
import { onReapLocks } from './shared/reaper.js';
import { adoptAsHold, allocSlot, hold, Kind, localHolds, S_DATA, S_KIND, slotKind, unhold } from './shared/slab.js';
import { keepAlive } from './shared/wait.js';
import {
  H_BUMP, H_RECOVERED, H_WW_STAMP, MAX_THREADS, onJoin, SLOT_WORDS, threadAlive, world, type World,
} from './shared/world.js';

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

let W: World;
/** This thread's tid + 1 (the owner value it writes). */
let me = 0;
let views: Array<WwMutex | undefined> = [];
/** Mutexes (by first word) this thread holds, with the context that took each (null: none). */
const holders = new Map<number, WwAcquireCtx | null>();
onJoin((w, t) => {
  W = w;
  me = t + 1;
  views = new Array<WwMutex | undefined>(w.capacity);
});

/* ---- acquire contexts ---- */

interface CtxState {
  readonly stamp: bigint;
  /** First words of the mutexes this context holds. */
  readonly held: Set<number>;
  /** First word of the mutex that returned -EDEADLK, until it is acquired; -1 if none. */
  contending: number;
  done: boolean;
  finished: boolean;
  /** A lock operation of this context is in progress (async ones span awaits). */
  busy: boolean;
}

let stateOf!: (ctx: WwAcquireCtx) => CtxState;

/**
 * An acquire context (`struct ww_acquire_ctx`): one locking transaction of the
 * thread that creates it. `new WwAcquireCtx()` is `ww_acquire_init` with the
 * reservation class: it takes a fresh stamp from the global counter.
 */
export class WwAcquireCtx {
  readonly #s: CtxState;

  static {
    stateOf = (ctx) => ctx.#s;
  }

  constructor() {
    const w = W ?? world();
    // The header word starts at 0: the first stamp handed out is 1 (0 means "no context").
    const stamp = Atomics.add(w.i64, H_WW_STAMP >> 1, 1n) + 1n;
    this.#s = { stamp, held: new Set(), contending: -1, done: false, finished: false, busy: false };
  }

  /** The stamp: smaller is older. Unique in the shared table. */
  get stamp(): bigint {
    return this.#s.stamp;
  }

  /** How many mutexes this context holds (`ctx->acquired`). */
  get held(): number {
    return this.#s.held.size;
  }

  /** True after `done()`. */
  get isDone(): boolean {
    return this.#s.done;
  }

  /** True after `fini()`. */
  get isFinished(): boolean {
    return this.#s.finished;
  }

  /**
   * ww_acquire_done: mark that this transaction takes no more locks. Locking a
   * mutex it does not hold afterwards throws EINVAL.
   * @throws EINVAL if called twice or after `fini()`.
   */
  done(): void {
    const s = this.#s;
    if (s.finished) throw fail('EINVAL', 'ww_acquire_done', 'acquire context already finished');
    if (s.done) throw fail('EINVAL', 'ww_acquire_done', 'ww_acquire_done called twice');
    s.done = true;
  }

  /**
   * ww_acquire_fini: end the transaction. Every lock must have been released.
   * @throws EINVAL (context unchanged) with locks still held, while a lock call is
   * pending, or if already finished.
   */
  fini(): void {
    const s = this.#s;
    if (s.finished) throw fail('EINVAL', 'ww_acquire_fini', 'acquire context already finished');
    if (s.busy) throw fail('EINVAL', 'ww_acquire_fini', 'a lock operation of this context is still pending');
    if (s.held.size > 0) {
      throw fail('EINVAL', 'ww_acquire_fini', `${s.held.size} lock(s) of this context are still held`);
    }
    s.finished = true;
    s.done = true;
  }
}

function ctxState(ctx: WwAcquireCtx | null, syscall: string): CtxState | null {
  if (ctx === null) return null;
  if (!(ctx instanceof WwAcquireCtx)) throw new TypeError(`${syscall}: ctx must be a WwAcquireCtx or null`);
  return stateOf(ctx);
}

/**
 * The DEBUG_WW_MUTEXES checks for locking `at` with context state `s` (not
 * lockSlow). Returns -EALREADY if the context already holds it, 0 to go on.
 */
function checkLock(s: CtxState, at: number, syscall: string): number {
  if (s.finished) throw fail('EINVAL', syscall, 'acquire context already finished');
  if (s.busy) throw fail('EINVAL', syscall, 'a lock operation of this context is still pending');
  if (s.held.has(at)) return -ERRNO.EALREADY;
  if (s.done) throw fail('EINVAL', syscall, 'locking after ww_acquire_done');
  if (s.contending !== -1) {
    if (s.contending !== at) {
      throw fail('EINVAL', syscall, 'after -EDEADLK the next lock must be the contended mutex');
    }
    if (s.held.size > 0) {
      throw fail('EINVAL', syscall, `after -EDEADLK every lock must be released first (${s.held.size} held)`);
    }
  }
  return 0;
}

function checkLockSlow(s: CtxState, at: number, syscall: string): void {
  if (s.finished) throw fail('EINVAL', syscall, 'acquire context already finished');
  if (s.busy) throw fail('EINVAL', syscall, 'a lock operation of this context is still pending');
  if (s.contending !== at) {
    throw fail('EINVAL', syscall, s.contending === -1
      ? 'lock_slow without a preceding -EDEADLK'
      : 'lock_slow on a different mutex than the one that returned -EDEADLK');
  }
  if (s.held.size > 0) {
    throw fail('EINVAL', syscall, `lock_slow with ${s.held.size} lock(s) still held`);
  }
  if (s.done) throw fail('EINVAL', syscall, 'locking after ww_acquire_done');
}

/* ---- the lock algorithm on shared words ---- */

/** One lock call in progress. */
interface Op {
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
function takenValue(v: number, owner: number): number {
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

function lockBlocking(w: World, at: number, op: Op, signal: AbortSignal | undefined): number {
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

async function lockAsync(w: World, at: number, op: Op, signal: AbortSignal | undefined): Promise<number> {
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

function checkAt(at: number): void {
  if (!Number.isInteger(at) || at < 0 || at % 2 !== 0) throw fail('EINVAL', 'ww_mutex', `ww-mutex word ${at} is not even`);
}

/* ---- the mutex ---- */

export interface WwLockOptions {
  /** Interruptible: an abort settles a pending lock with -EINTR. */
  signal?: AbortSignal;
}

const PRIVATE = Symbol('ww_mutex.private');
const DEAD_SLOT = -1;
/** `#slot` of a mutex still private to its thread (no words in the table yet). */
const PRIVATE_SLOT = -2;
/**
 * Keys that stand for private mutexes in contexts' `held` sets (where shared ones
 * use their first word): negative, and never -1 (`contending`'s "none").
 */
let nextPrivateKey = -2;

let migrateImpl!: (m: WwMutex, slot: number, at: number) => void;

/**
 * A ww-mutex: this thread's view of the mutex words in a shared slot. A mutex
 * made by `create()` owns its slot (references: `get`/`put`/`share`/`receive`, as
 * fences); one embedded in another object (`wwMutexAt`) lives as long as that
 * object and has no references of its own.
 *
 * Private until shared (`wwMutexPrivate`, for objects that are private to their
 * thread themselves): the mutex is two plain fields — held by this thread or not,
 * and through which context — since no other thread can reach it. Taking it when
 * free, unlocking and every inspection stay private. Anything that has to wait
 * for it (another async task of this thread holds it) or to apply wait-die
 * against its holder first asks its owner to move it into the table (the
 * `share` callback, which calls `wwMutexMigrate`); the shared algorithm then
 * decides. Same results either way.
 *
 * Return values follow the kernel: 0, -EALREADY (114), -EDEADLK (35), -EINTR (4).
 */
export class WwMutex implements Disposable {
  #slot: number;
  /** First word; for a private mutex its key in contexts' `held` sets. */
  #at: number;
  readonly #embedded: boolean;
  /* Private form (#slot === PRIVATE_SLOT). */
  #pHeld = false;
  #pCtx: WwAcquireCtx | null = null;
  #share: (() => void) | null = null;

  static {
    migrateImpl = (m, slot, at) => m.#migrate(slot, at);
  }

  /** @internal use `WwMutex.create()`, `WwMutex.receive()`, `wwMutexAt()` or `wwMutexPrivate()`. */
  constructor(key: symbol, slot: number, at: number, embedded: boolean, share: (() => void) | null = null) {
    if (key !== PRIVATE) throw new TypeError('use WwMutex.create() to create a ww-mutex');
    this.#slot = slot;
    this.#at = at;
    this.#embedded = embedded;
    this.#share = share;
  }

  /** Move a private mutex into the (zeroed) words at `at` of `slot`, keeping its holder and context. */
  #migrate(slot: number, at: number): void {
    if (this.#slot !== PRIVATE_SLOT) throw fail('EINVAL', 'ww_mutex', 'ww-mutex is already shared');
    checkAt(at);
    const key = this.#at;
    if (this.#pHeld) {
      const ctx = this.#pCtx;
      Atomics.store(W.i32, at + WW_OWNER, takenValue(0, me));
      holders.set(at, ctx);
      if (ctx !== null) {
        const s = stateOf(ctx);
        s.held.delete(key);
        s.held.add(at);
        Atomics.store(W.i64, (at + WW_STAMP) >> 1, s.stamp);
      }
    }
    this.#slot = slot;
    this.#at = at;
    this.#pHeld = false;
    this.#pCtx = null;
    this.#share = null;
  }

  get #private(): boolean {
    return this.#slot === PRIVATE_SLOT;
  }

  /**
   * Private form: take the mutex if it is free (true). If this thread holds it, a
   * blocking call that would not die throws EDEADLK as the shared algorithm does;
   * anything else moves the mutex into the table first (false: go the shared way).
   */
  #takePrivate(ctx: WwAcquireCtx | null, s: CtxState | null, blocking: boolean, syscall: string): boolean {
    if (!this.#pHeld) {
      this.#pHeld = true;
      this.#pCtx = ctx;
      if (s !== null) {
        s.held.add(this.#at);
        s.contending = -1;
      }
      return true;
    }
    const holder = this.#pCtx === null ? 0n : stateOf(this.#pCtx).stamp;
    const dies = s !== null && s.held.size > 0 && holder !== 0n && holder < s.stamp;
    if (blocking && !dies) throw fail('EDEADLK', syscall, 'this thread already holds this ww-mutex (recursive locking)');
    this.#share!(); // contention within this thread: wait (async) or die on shared words
    return false;
  }

  /** ww_mutex_init (reservation class): a new unlocked mutex in its own slot, held by this thread. */
  static create(): WwMutex {
    const w = W ?? world();
    const slot = allocSlot(w, Kind.WwMutex, 'ww_mutex_init');
    adoptAsHold(w, slot);
    const m = new WwMutex(PRIVATE, slot, w.base(slot) + S_DATA, false);
    views[slot] = m;
    return m;
  }

  /**
   * Receive a token made by `share()`: this thread's view, holding the reference
   * the token carried. @throws EINVAL if it is not a ww-mutex token or was already received.
   */
  static receive(token: unknown): WwMutex {
    const slots = unpackSlots(token, 'ww_mutex_receive');
    const w = W ?? world();
    if (slots.length !== 1 || slotKind(w, slots[0]!) !== Kind.WwMutex) {
      for (const s of slots) unhold(w, s);
      throw fail('EINVAL', 'ww_mutex_receive', 'token does not carry one ww-mutex');
    }
    const slot = slots[0]!;
    let m = views[slot];
    if (!m) {
      m = new WwMutex(PRIVATE, slot, w.base(slot) + S_DATA, false);
      views[slot] = m;
    }
    return m;
  }

  /** @internal the slot the mutex words live in (a private mutex is shared now). */
  get slot(): number {
    this.#check();
    if (this.#private) this.#share!();
    return this.#slot;
  }

  /** @internal word index of the mutex's first word (a private mutex is shared now). */
  get at(): number {
    this.#check();
    if (this.#private) this.#share!();
    return this.#at;
  }

  /* ---- references ---- */

  /** One more reference of this thread; returns this same object. */
  get(): this {
    this.#checkOwn('ww_mutex_get');
    hold(W, this.#slot);
    return this;
  }

  /**
   * Drop one reference. When this thread drops its last one the object becomes unusable.
   * @throws EBUSY (nothing changes) if that would drop this thread's last reference while it holds the lock.
   */
  put(): void {
    this.#checkOwn('ww_mutex_put');
    const slot = this.#slot;
    if (localHolds(slot) === 1) {
      if ((Atomics.load(W.i32, this.#at + WW_OWNER) & WW_OWNER_MASK) === me) {
        throw fail('EBUSY', 'ww_mutex_put', 'ww-mutex is still locked by this thread');
      }
      views[slot] = undefined;
      this.#slot = DEAD_SLOT;
    }
    unhold(W, slot);
  }

  [Symbol.dispose](): void {
    this.put();
  }

  /**
   * A structured-cloneable token carrying one reference to another thread (post it
   * with `postMessage`); the sender keeps its own. @throws ENOMEM when the table is full.
   */
  share(): Packet {
    this.#checkOwn('ww_mutex_share');
    return packSlots([this.#slot], 'ww_mutex_share');
  }

  #check(): void {
    if (this.#slot === DEAD_SLOT) throw fail('EINVAL', 'ww_mutex', 'ww-mutex used after its last put()');
  }

  #checkOwn(syscall: string): void {
    this.#check();
    if (this.#embedded) throw fail('EINVAL', syscall, 'an embedded ww-mutex has no references of its own');
  }

  #op(ctx: WwAcquireCtx | null, s: CtxState | null, blocking: boolean, syscall: string): Op {
    return { ctx, s, stamp: s === null ? 0n : s.stamp, blocking, syscall, published: false };
  }

  /* ---- locking ---- */

  /**
   * ww_mutex_lock / dma_resv_lock. With `ctx` null: a plain sleeping mutex, 0.
   * With a context: 0 when acquired; -EALREADY if `ctx` already holds it (nothing
   * changes); -EDEADLK at once if `ctx` holds at least one lock and the mutex is held
   * by an older context or an older context is waiting for it (back off: unlock all,
   * `lockSlow`). A context holding nothing never gets -EDEADLK: it waits.
   * Uninterruptible.
   * @throws EINVAL on context misuse, EDEADLK if it would wait for its own thread.
   */
  lock(ctx: WwAcquireCtx | null): number {
    return this.#lockBlocking(ctx, undefined, 'ww_mutex_lock');
  }

  /**
   * ww_mutex_lock_interruptible, blocking: as `lock`, plus -EINTR if `signal` is
   * already aborted when it would have to sleep (a blocked thread cannot see a
   * later abort; use `lockAsync` for that).
   */
  lockInterruptible(ctx: WwAcquireCtx | null, signal?: AbortSignal): number {
    return this.#lockBlocking(ctx, signal, 'ww_mutex_lock_interruptible');
  }

  #lockBlocking(ctx: WwAcquireCtx | null, signal: AbortSignal | undefined, syscall: string): number {
    this.#check();
    const s = ctxState(ctx, syscall);
    if (s !== null) {
      const r = checkLock(s, this.#at, syscall);
      if (r !== 0) return r;
    }
    if (this.#private && this.#takePrivate(ctx, s, true, syscall)) return 0;
    return lockBlocking(W, this.#at, this.#op(ctx, s, true, syscall), signal);
  }

  /**
   * Promise form of `lock`/`lockInterruptible`: settles with 0, -EALREADY, -EDEADLK,
   * or -EINTR when `opts.signal` aborts while it waits (nothing is held then). Keeps
   * the event loop alive while pending. May wait for a mutex held by another async
   * task of this thread. Misuse rejects (EINVAL) without changing anything.
   */
  async lockAsync(ctx: WwAcquireCtx | null, opts: WwLockOptions = {}): Promise<number> {
    this.#check();
    const s = ctxState(ctx, 'ww_mutex_lock_interruptible');
    if (s !== null) {
      const r = checkLock(s, this.#at, 'ww_mutex_lock_interruptible');
      if (r !== 0) return r;
    }
    if (this.#private && this.#takePrivate(ctx, s, false, 'ww_mutex_lock_interruptible')) return 0;
    return lockAsync(W, this.#at, this.#op(ctx, s, false, 'ww_mutex_lock_interruptible'), opts.signal);
  }

  /**
   * ww_mutex_lock_slow: only right after this mutex returned -EDEADLK to `ctx` and
   * `ctx` released every lock. Sleeps until acquired; cannot fail.
   * @throws EINVAL on misuse (no -EDEADLK before, another mutex, locks still held);
   * EDEADLK if this thread itself holds the mutex (it would sleep forever).
   */
  lockSlow(ctx: WwAcquireCtx): void {
    this.#check();
    const s = ctxState(ctx, 'ww_mutex_lock_slow');
    if (s === null) throw new TypeError('ww_mutex_lock_slow: a context is required');
    checkLockSlow(s, this.#at, 'ww_mutex_lock_slow');
    if (this.#private && this.#takePrivate(ctx, s, true, 'ww_mutex_lock_slow')) return;
    lockBlocking(W, this.#at, this.#op(ctx, s, true, 'ww_mutex_lock_slow'), undefined);
  }

  /**
   * ww_mutex_lock_slow_interruptible, blocking: 0, or -EINTR if `signal` is already
   * aborted when it would have to sleep. Same preconditions as `lockSlow`.
   */
  lockSlowInterruptible(ctx: WwAcquireCtx, signal?: AbortSignal): number {
    this.#check();
    const s = ctxState(ctx, 'ww_mutex_lock_slow_interruptible');
    if (s === null) throw new TypeError('ww_mutex_lock_slow_interruptible: a context is required');
    checkLockSlow(s, this.#at, 'ww_mutex_lock_slow_interruptible');
    if (this.#private && this.#takePrivate(ctx, s, true, 'ww_mutex_lock_slow_interruptible')) return 0;
    return lockBlocking(W, this.#at, this.#op(ctx, s, true, 'ww_mutex_lock_slow_interruptible'), signal);
  }

  /**
   * Promise form of `lockSlow`: settles with 0, or -EINTR if `opts.signal` aborts
   * while it waits (the context stays "after -EDEADLK": call it again). Without a
   * signal it cannot fail. Misuse rejects with EINVAL.
   */
  async lockSlowAsync(ctx: WwAcquireCtx, opts: WwLockOptions = {}): Promise<number> {
    this.#check();
    const s = ctxState(ctx, 'ww_mutex_lock_slow_interruptible');
    if (s === null) throw new TypeError('ww_mutex_lock_slow_interruptible: a context is required');
    checkLockSlow(s, this.#at, 'ww_mutex_lock_slow_interruptible');
    if (this.#private && this.#takePrivate(ctx, s, false, 'ww_mutex_lock_slow_interruptible')) return 0;
    return lockAsync(W, this.#at, this.#op(ctx, s, false, 'ww_mutex_lock_slow_interruptible'), opts.signal);
  }

  /** ww_mutex_trylock(lock, NULL) / dma_resv_trylock: true if taken. No context, never blocks. */
  trylock(): boolean {
    this.#check();
    if (this.#private) {
      if (this.#pHeld) return false;
      this.#pHeld = true;
      this.#pCtx = null;
      return true;
    }
    const i32 = W.i32;
    const o = this.#at + WW_OWNER;
    for (;;) {
      const v = Atomics.load(i32, o);
      if ((v & WW_OWNER_MASK) !== 0) return false;
      if (Atomics.compareExchange(i32, o, v, takenValue(v, me)) === v) {
        holders.set(this.#at, null);
        return true;
      }
    }
  }

  /**
   * ww_mutex_unlock / dma_resv_unlock: release it (and drop it from its context).
   * Clears `ownerDied`. @throws EPERM if this thread does not hold it.
   */
  unlock(): void {
    this.#check();
    if (this.#private) {
      if (!this.#pHeld) throw fail('EPERM', 'ww_mutex_unlock', 'this thread does not hold this ww-mutex');
      const ctx = this.#pCtx;
      this.#pHeld = false;
      this.#pCtx = null;
      if (ctx !== null) stateOf(ctx).held.delete(this.#at);
      return;
    }
    const w = W;
    const at = this.#at;
    const o = at + WW_OWNER;
    if ((Atomics.load(w.i32, o) & WW_OWNER_MASK) !== me) {
      throw fail('EPERM', 'ww_mutex_unlock', 'this thread does not hold this ww-mutex');
    }
    const ctx = holders.get(at);
    holders.delete(at);
    if (ctx) stateOf(ctx).held.delete(at);
    Atomics.store(w.i64, (at + WW_STAMP) >> 1, 0n);
    if (Atomics.load(w.i32, at + WW_FLAGS) & WW_OWNER_DIED) Atomics.and(w.i32, at + WW_FLAGS, ~WW_OWNER_DIED);
    let v: number;
    do v = Atomics.load(w.i32, o);
    while (Atomics.compareExchange(w.i32, o, v, v & SEQ_MASK) !== v);
    if (v & WW_CONTENDED) Atomics.notify(w.i32, o);
  }

  /* ---- inspection ---- */

  /** ww_mutex_is_locked / dma_resv_is_locked: held by any thread. */
  isLocked(): boolean {
    this.#check();
    if (this.#private) return this.#pHeld;
    return (Atomics.load(W.i32, this.#at + WW_OWNER) & WW_OWNER_MASK) !== 0;
  }

  /** True if this thread holds it (with or without a context). */
  isHeldByMe(): boolean {
    // Small, private case first: every guard operation asks (the JIT inlines it).
    return this.#slot === PRIVATE_SLOT ? this.#pHeld : this.#isHeldShared();
  }

  #isHeldShared(): boolean {
    this.#check();
    return (Atomics.load(W.i32, this.#at + WW_OWNER) & WW_OWNER_MASK) === me;
  }

  /**
   * dma_resv_locking_ctx: the context holding the mutex if it belongs to this
   * thread; null if it is free, locked without a context, or held by another thread.
   */
  lockingCtx(): WwAcquireCtx | null {
    if (!this.isHeldByMe()) return null;
    if (this.#private) return this.#pCtx;
    return holders.get(this.#at) ?? null;
  }

  /** Stamp of the holding context (any thread); 0n if free or locked without one. */
  get holderStamp(): bigint {
    this.#check();
    if (this.#private) return this.#pHeld && this.#pCtx !== null ? stateOf(this.#pCtx).stamp : 0n;
    return Atomics.load(W.i64, (this.#at + WW_STAMP) >> 1);
  }

  /** The previous owner died holding the lock; cleared by the unlock of whoever took it next. */
  get ownerDied(): boolean {
    this.#check();
    if (this.#private) return false; // no other thread ever saw it, so none died holding it
    return (Atomics.load(W.i32, this.#at + WW_FLAGS) & WW_OWNER_DIED) !== 0;
  }

  /**
   * dma_resv_assert_held (lockdep): throws EPERM unless this thread holds the mutex,
   * and — if `ctx` is given — holds it through `ctx`.
   */
  assertHeld(ctx?: WwAcquireCtx): void {
    if (!this.isHeldByMe()) throw fail('EPERM', 'ww_mutex_assert_held', 'ww-mutex is not held by this thread');
    if (ctx !== undefined && (this.#private ? this.#pCtx : holders.get(this.#at)) !== ctx) {
      throw fail('EPERM', 'ww_mutex_assert_held', 'ww-mutex is not held through this acquire context');
    }
  }
}

/**
 * @internal A view of the ww-mutex whose words start at word `at` (even) inside
 * `slot`, for objects that embed one (DmaResv). The owner of the slot keeps it
 * alive; the view has no references (`get`/`put`/`share` throw EINVAL). Register
 * the slot kind with `registerWwMutexScanner` so dead threads' locks are released.
 */
export function wwMutexAt(slot: number, at: number): WwMutex {
  const w = W ?? world();
  checkAt(at);
  if (!Number.isInteger(slot) || slot < 0 || slot >= w.capacity || at < w.base(slot) + S_DATA
    || at + WW_MUTEX_WORDS > w.base(slot) + SLOT_WORDS) {
    throw fail('EINVAL', 'ww_mutex', `word ${at} is not inside the data of slot ${slot}`);
  }
  return new WwMutex(PRIVATE, slot, at, true);
}

/**
 * @internal A new, free ww-mutex private to this thread, for an object that is
 * private itself and embeds it (DmaResv). `share` is called when the mutex must
 * become shared: it must allocate the object's slot and call `wwMutexMigrate`.
 * No references of its own, as `wwMutexAt`.
 */
export function wwMutexPrivate(share: () => void): WwMutex {
  return new WwMutex(PRIVATE, PRIVATE_SLOT, nextPrivateKey--, true, share);
}

/**
 * @internal Move private mutex `m` (`wwMutexPrivate`) into the words at
 * `at` (even, zeroed) of `slot`, which its owner just allocated: the same mutex
 * from now on, shared, still held by this thread through the same context if it
 * was. @throws EINVAL if `m` is already shared.
 */
export function wwMutexMigrate(m: WwMutex, slot: number, at: number): void {
  migrateImpl(m, slot, at);
}
