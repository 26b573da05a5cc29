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
 * Private form (`wwMutexPrivate`): a mutex embedded in an object that is still
 * private to its thread is two plain fields until the object moves into the table
 * (see the WwMutex class comment). The algorithm on shared words, the word layout
 * and the recovery of dead owners are in ww-mutex-words.ts; acquire contexts in
 * ww-acquire-ctx.ts.
 */
import { fail } from './errors.js';
import { packSlots, unpackSlots, type Packet } from './shared/packet.js';
import { adoptAsHold, allocSlot, hold, Kind, localHolds, S_DATA, slotKind, unhold } from './shared/slab.js';
import { onJoin, SLOT_WORDS, world } from './shared/world.js';
import { checkLock, checkLockSlow, ctxState, stateOf, type CtxState, WwAcquireCtx } from './ww-acquire-ctx.js';
import {
  checkAt, holders, lockAsync, lockBlocking, me, takenValue, W, WW_FLAGS, WW_MUTEX_WORDS, WW_OWNER, WW_OWNER_DIED,
  WW_OWNER_MASK, WW_STAMP, wwUnlockWords, type Op,
} from './ww-mutex-words.js';

export { WwAcquireCtx } from './ww-acquire-ctx.js';
export {
  initWwMutexWords, registerWwMutexScanner, releaseWwIfOwnedBy, WW_CONTENDED, WW_FLAGS, WW_MUTEX_WORDS, WW_OWNER,
  WW_OWNER_DIED, WW_OWNER_MASK, WW_STAMP, WW_WAIT_MIN,
} from './ww-mutex-words.js';

let views: Array<WwMutex | undefined> = [];
onJoin((w) => {
  views = new Array<WwMutex | undefined>(w.capacity);
});

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
  /** Private form: called by every unlock (its owner's lock-held fast path ends there). */
  #unlocked: (() => void) | null = null;

  static {
    migrateImpl = (m, slot, at) => m.#migrate(slot, at);
  }

  /** @internal use `WwMutex.create()`, `WwMutex.receive()`, `wwMutexAt()` or `wwMutexPrivate()`. */
  constructor(
    key: symbol, slot: number, at: number, embedded: boolean, share: (() => void) | null = null,
    unlocked: (() => void) | null = null,
  ) {
    if (key !== PRIVATE) throw new TypeError('use WwMutex.create() to create a ww-mutex');
    this.#slot = slot;
    this.#at = at;
    this.#embedded = embedded;
    this.#share = share;
    this.#unlocked = unlocked;
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
    this.#unlocked = null;
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
      this.#unlocked?.();
      return;
    }
    if ((Atomics.load(W.i32, this.#at + WW_OWNER) & WW_OWNER_MASK) !== me) {
      throw fail('EPERM', 'ww_mutex_unlock', 'this thread does not hold this ww-mutex');
    }
    wwUnlockWords(W, this.#at);
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
    return this.#slot === -2 ? this.#pHeld : this.#isHeldShared(); // -2: PRIVATE_SLOT (a literal: no TDZ check)
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
 * become shared: it must allocate the object's slot and call `wwMutexMigrate`;
 * `unlocked` after every unlock while it is private. No references of its own,
 * as `wwMutexAt`.
 */
export function wwMutexPrivate(share: () => void, unlocked: () => void): WwMutex {
  return new WwMutex(PRIVATE, PRIVATE_SLOT, nextPrivateKey--, true, share, unlocked);
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
