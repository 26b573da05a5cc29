/**
 * DOC: dma_resv — reservation objects, private until shared
 *
 * A reservation object holds the fences of a buffer's users, each with a *usage*
 * (kernel-contract §3): KERNEL (0) < WRITE (1) < READ (2) < BOOKKEEP (3). A query
 * for usage U covers every fence of usage ≤ U, so a pending READ fence leaves
 * `testSignaled(WRITE)` true. `dmaResvUsageRw(write)` is the usage to *wait on*
 * for a new access (a writer waits for READ and below, a reader for WRITE).
 *
 * Writers hold the reservation lock, a wait-die ww-mutex (ww-mutex.ts). The
 * operations that need it are reachable only through the guard `lock()` returns
 * (`DmaResvLocked`), which re-checks at run time that this thread still holds the
 * lock — the type system carries the rule as far as it can.
 *
 * - `reserveFences(n)` (fallible) before `addFence` (infallible once reserved):
 *   growing reallocates the fence array (to max(used + n, 2 × capacity); 4 at
 *   least), copying the unsignalled fences in order and dropping signalled ones.
 *   Reservations do not survive an unlock (the kernel's CONFIG_DEBUG_MUTEXES
 *   behaviour, always on here): an append without one throws EINVAL, no corruption.
 * - `addFence(f, usage)` reuses the first slot whose fence is signalled, or is of
 *   the same context with a usage ≥ `usage` (numerically) while `f` is later or the
 *   same; otherwise it appends. Containers are refused (EINVAL): unwrap them.
 * - Readers need no lock: `fencesUnlocked` (restarts when the array is replaced,
 *   `restarted` marks the first fence of every pass), `getFences`, `getSingleton`,
 *   `testSignaled`, `waitTimeout`, `setDeadline`.
 *
 * Two forms, one behaviour. `create()` makes an object private to its thread:
 * plain fields, a plain lock, no atomics (dma-resv-private.ts), as `DmaFence.init`
 * makes private fences. The first thing that needs it shared — `share()`, reading
 * `slot` (how buffers reference it from shared memory), a lock call that must wait
 * for another async task of this thread — moves it, fences, lock holder and
 * reservations included, into the shared table (dma-resv-slot.ts), where a fence
 * added in a worker is seen by a wait in the main thread at once. A handle from
 * `fromSlot`/`receive` is on the shared form from the start.
 */
import { DmaFence, fenceAddable, type WaitOptions } from './dma-fence.js';
import { dmaFenceArrayCreate, isContainer } from './dma-fence-array.js';
import { PrivateFences } from './dma-resv-private.js';
import { initResvSlot, RV_WW, SlotFences, type ResvFences } from './dma-resv-slot.js';
import { fail } from './errors.js';
import { packSlots, unpackSlots, type Packet } from './shared/packet.js';
import { adoptAsHold, allocSlot, hold, Kind, onCountLive, slotKind, unhold, unref } from './shared/slab.js';
import { world } from './shared/world.js';
import { wwOwnedByMe } from './ww-mutex-words.js';
import {
  wwMutexAt, wwMutexMigrate, wwMutexPrivate, type WwAcquireCtx, type WwLockOptions, type WwMutex,
} from './ww-mutex.js';

export const DMA_RESV_USAGE_KERNEL = 0;
export const DMA_RESV_USAGE_WRITE = 1;
export const DMA_RESV_USAGE_READ = 2;
export const DMA_RESV_USAGE_BOOKKEEP = 3;
export type DmaResvUsage = 0 | 1 | 2 | 3;
/** The usages by name, as dma_resv_describe prints them (and trace events carry them). */
export const USAGE_NAMES = ['kernel', 'write', 'read', 'bookkeep'] as const;

/** dma_resv_usage_rw: the usage a new read (false) or write (true) must wait on. */
/**
 * @internal True if this thread holds the lock of the shared reservation object in
 * `slot` — the check a dma-buf call makes without building a handle for it.
 */
export function dmaResvSlotHeldByMe(slot: number): boolean {
  const w = world();
  return wwOwnedByMe(w, w.base(slot) + RV_WW);
}

export function dmaResvUsageRw(write: boolean): DmaResvUsage {
  return write ? DMA_RESV_USAGE_READ : DMA_RESV_USAGE_WRITE;
}

function checkUsage(usage: unknown, syscall: string): void {
  // 0..3 exactly (-0 too, as `=== 0` accepts it); small, so hot paths can inline it.
  if (typeof usage !== 'number' || usage !== (usage & 3)) throw badUsage(usage, syscall);
}

function badUsage(usage: unknown, syscall: string): Error {
  return fail('EINVAL', syscall, `usage ${String(usage)} is not KERNEL, WRITE, READ or BOOKKEEP`);
}

/** The error of an addFence whose arguments failed the fast check. */
function addFenceError(fence: unknown, usage: unknown): Error {
  if (!(fence instanceof DmaFence)) return new TypeError('dma_resv_add_fence: not a DmaFence');
  if (typeof usage !== 'number' || usage !== (usage & 3)) return badUsage(usage, 'dma_resv_add_fence');
  return fail('EINVAL', 'dma_resv_add_fence', 'containers cannot be added; unwrap them first');
}

function badReserve(n: unknown): Error {
  return fail('EINVAL', 'dma_resv_reserve_fences', `cannot reserve ${String(n)} fences`);
}

function notHeld(syscall: string): Error {
  return fail('EPERM', syscall, 'reservation lock not held');
}

/** Reservation objects of this thread still in private form: counted by liveObjects() like slots. */
let privateLive = 0;
onCountLive((kind) => (kind === undefined || kind === Kind.Resv ? privateLive : 0));

/** `#slot` of an object still private to its thread. */
const PRIVATE_SLOT = -2;
/** `#slot` of a handle after put(). */
const DEAD_SLOT = -1;

let fencesOf!: (resv: DmaResv) => ResvFences;
/** `fencesOf` without the put() check, for guards (a handle cannot be put while its guard is live). */
let heldFencesOf!: (resv: DmaResv) => ResvFences;

let guardDone!: (resv: DmaResv) => void;
/** The guard's lock is no longer held as a private object's lock (unlocked, or the object moved into the table). */
let guardLeftPrivate!: (guard: DmaResvLocked) => void;

/* ---- the object ---- */

/** One (fence, usage) pair of an iteration. */
export interface DmaResvEntry {
  fence: DmaFence;
  usage: DmaResvUsage;
}

/** An unlocked iteration's entry: `restarted` is true for the first fence of every (re)start. */
export interface DmaResvUnlockedEntry extends DmaResvEntry {
  restarted: boolean;
}

/** A reservation object: this thread's handle (one reference). */
export class DmaResv implements Disposable {
  #slot: number;
  readonly #ww: WwMutex;
  #fences: ResvFences;
  #guard: DmaResvLocked | undefined;

  static {
    fencesOf = (resv) => {
      resv.#check();
      return resv.#fences;
    };
    heldFencesOf = (resv) => resv.#fences;
    guardDone = (resv) => {
      resv.#guard = undefined;
    };
  }

  private constructor(slot: number) {
    this.#slot = slot;
    if (slot === PRIVATE_SLOT) {
      this.#ww = wwMutexPrivate(() => this.#migrate(), () => this.#leftPrivate());
      this.#fences = new PrivateFences();
      privateLive++;
    } else {
      const w = world();
      const b = w.base(slot);
      this.#ww = wwMutexAt(slot, b + RV_WW);
      this.#fences = new SlotFences(w, b);
    }
  }

  /**
   * dma_resv_init: a new, empty, unlocked reservation object, private to this
   * thread until something shares it (the table's ENOMEM can only happen then).
   */
  static create(): DmaResv {
    world(); // join the table first, as every other constructor does
    return new DmaResv(PRIVATE_SLOT);
  }

  /** @internal a new handle on resv slot `slot` (takes a hold). */
  static fromSlot(slot: number): DmaResv {
    hold(world(), slot);
    return new DmaResv(slot);
  }

  /**
   * @internal a handle on resv slot `slot` that takes no hold, for a caller that
   * keeps the object alive by other means for as long as it uses the handle (a
   * buffer's own reference to its resv: DmaBuf.borrow). Never put() it.
   */
  static borrowSlot(slot: number): DmaResv {
    return new DmaResv(slot);
  }

  /** @internal the slot; a private object moves into the shared table now. @throws ENOMEM. */
  get slot(): number {
    this.#check();
    this.#migrate();
    return this.#slot;
  }

  /**
   * Move a private object into the shared table: its fences (they get slots too),
   * its reservations and its lock, held or not, by whichever context. A no-op once
   * shared. @throws ENOMEM (nothing changes then).
   */
  #migrate(): void {
    if (this.#slot !== PRIVATE_SLOT) return;
    const w = world();
    const slot = allocSlot(w, Kind.Resv, 'dma_resv_share');
    const b = w.base(slot);
    initResvSlot(w, b);
    try {
      (this.#fences as PrivateFences).moveTo(w, b);
    } catch (e) {
      unref(w, slot);
      throw e;
    }
    wwMutexMigrate(this.#ww, slot, b + RV_WW);
    adoptAsHold(w, slot);
    this.#slot = slot;
    this.#fences = new SlotFences(w, b);
    privateLive--;
    this.#leftPrivate();
  }

  #leftPrivate(): void {
    if (this.#guard) guardLeftPrivate(this.#guard);
  }

  #check(): void {
    // -1: DEAD_SLOT, a literal on this hot path (a module constant costs a TDZ check in bytecode).
    if (this.#slot === -1) throw fail('EINVAL', 'dma_resv', 'reservation object used after put()');
  }

  /** A token carrying one reference to this object to another thread. */
  share(): Packet {
    return packSlots([this.slot], 'dma_resv_share');
  }

  /** Receive a token made by `share()`. @throws EINVAL if it does not carry one reservation object. */
  static receive(token: unknown): DmaResv {
    const w = world();
    const slots = unpackSlots(token, 'dma_resv_receive');
    if (slots.length !== 1 || slotKind(w, slots[0]!) !== Kind.Resv) {
      for (const s of slots) unhold(w, s);
      throw fail('EINVAL', 'dma_resv_receive', 'token does not carry one reservation object');
    }
    return new DmaResv(slots[0]!);
  }

  /** Drop this handle. @throws EBUSY if this thread still holds its lock through this handle. */
  put(): void {
    this.#check();
    if (this.#guard) throw fail('EBUSY', 'dma_resv_put', 'reservation object is still locked by this thread');
    const slot = this.#slot;
    this.#slot = DEAD_SLOT;
    if (slot !== PRIVATE_SLOT) {
      unhold(world(), slot);
      return;
    }
    // The only handle of a private object: dma_resv_fini.
    privateLive--;
    (this.#fences as PrivateFences).fini();
  }

  [Symbol.dispose](): void {
    if (this.#slot !== DEAD_SLOT) this.put();
  }

  /* ---- locking ---- */

  #locked(r: number): DmaResvLocked | number {
    if (r !== 0) return r;
    // Reservations never outlive a holder, also one that died holding the lock (whose
    // unlock never ran): every new holder starts with none. (Read #fences only now:
    // the lock call may have moved the object into the table.)
    this.#fences.clamp();
    const fast = this.#slot === PRIVATE_SLOT ? (this.#fences as PrivateFences) : null;
    this.#guard = new DmaResvLocked(GUARD, this, this.#ww, fast);
    return this.#guard;
  }

  /**
   * dma_resv_lock. With a context: 0 → the guard; -EALREADY (this context holds it:
   * use `locked()`), -EDEADLK (wait-die: back off, then `lockSlow`). Without a context
   * it is a plain sleeping mutex.
   */
  lock(ctx: WwAcquireCtx | null): DmaResvLocked | number {
    this.#check();
    return this.#locked(this.#ww.lock(ctx));
  }

  /** dma_resv_lock_interruptible (blocking: the signal is seen before sleeping). Adds -EINTR. */
  lockInterruptible(ctx: WwAcquireCtx | null, signal?: AbortSignal): DmaResvLocked | number {
    this.#check();
    return this.#locked(this.#ww.lockInterruptible(ctx, signal));
  }

  /** Promise form of `lockInterruptible`; aborting `signal` settles it with -EINTR. */
  async lockAsync(ctx: WwAcquireCtx | null, opts: WwLockOptions = {}): Promise<DmaResvLocked | number> {
    this.#check();
    return this.#locked(await this.#ww.lockAsync(ctx, opts));
  }

  /** dma_resv_lock_slow: after -EDEADLK and with nothing held; sleeps until taken. */
  lockSlow(ctx: WwAcquireCtx): DmaResvLocked {
    this.#check();
    this.#ww.lockSlow(ctx);
    return this.#locked(0) as DmaResvLocked;
  }

  /** Promise form of `lockSlow` (interruptible): the guard, or -EINTR. */
  async lockSlowAsync(ctx: WwAcquireCtx, opts: WwLockOptions = {}): Promise<DmaResvLocked | number> {
    this.#check();
    return this.#locked(await this.#ww.lockSlowAsync(ctx, opts));
  }

  /** dma_resv_trylock: the guard, or null. Never blocks. */
  trylock(): DmaResvLocked | null {
    this.#check();
    return this.#ww.trylock() ? (this.#locked(0) as DmaResvLocked) : null;
  }

  /** dma_resv_is_locked (by anyone). */
  isLocked(): boolean {
    return this.#ww.isLocked();
  }

  /** The guard of this handle's lock. @throws EPERM if this handle does not hold it. */
  locked(): DmaResvLocked {
    if (!this.#guard || !this.#ww.isHeldByMe()) throw fail('EPERM', 'dma_resv_assert_held', 'reservation lock not held');
    return this.#guard;
  }

  /** The embedded ww-mutex (for inspection: `ownerDied`, `holderStamp`). */
  get mutex(): WwMutex {
    return this.#ww;
  }

  /* ---- readers: no lock needed ---- */

  /**
   * dma_resv_for_each_fence_unlocked: the unsignalled fences with usage ≤ `usage`.
   * Each yielded fence is a reference the iterator drops when it advances (call
   * `get()` to keep one). If the array is replaced meanwhile the walk restarts;
   * `restarted` marks the first fence of every pass, so accumulators must reset.
   * (Moving a private object into the table replaces its array too.)
   */
  *fencesUnlocked(usage: DmaResvUsage): Generator<DmaResvUnlockedEntry> {
    checkUsage(usage, 'dma_resv_iter_first_unlocked');
    this.#check();
    // A pass ends early (false) when the object moved into the table meanwhile; a
    // handle put() meanwhile has nothing more to walk.
    while (this.#slot !== DEAD_SLOT && !(yield* this.#fences.walk(usage)));
  }

  /** dma_resv_get_fences: a snapshot of the unsignalled fences ≤ `usage`, each a new reference. */
  getFences(usage: DmaResvUsage): DmaFence[] {
    checkUsage(usage, 'dma_resv_get_fences');
    this.#check();
    return this.#fences.entries(usage).map(([f]) => f);
  }

  /**
   * dma_resv_get_singleton: null for no fence, that fence for one, else a new
   * dma_fence_array over them (new context, seqno 1, signal on all). A new reference.
   */
  getSingleton(usage: DmaResvUsage): DmaFence | null {
    const fences = this.getFences(usage);
    if (fences.length === 0) return null;
    if (fences.length === 1) return fences[0]!;
    try {
      return dmaFenceArrayCreate(fences, DmaFence.contextAlloc(1), 1, false);
    } finally {
      for (const f of fences) f.put();
    }
  }

  /**
   * dma_resv_test_signaled: true iff no unsignalled fence with usage ≤ `usage`
   * (driver ops peeked, as dma_fence_is_signaled does).
   */
  testSignaled(usage: DmaResvUsage): boolean {
    checkUsage(usage, 'dma_resv_test_signaled');
    this.#check();
    return this.#fences.test(usage);
  }

  /**
   * dma_resv_wait_timeout, blocking: waits in turn for every unsignalled fence ≤
   * `usage`, passing the time left on. @returns remaining ms (> 0; `timeout`, or 1
   * with timeout 0, when nothing was pending), 0 on timeout, -ERESTARTSYS if interrupted.
   */
  waitTimeout(usage: DmaResvUsage, timeoutMs: number, opts: WaitOptions = {}): number {
    // Nothing pending (the common case of a CPU-access bracket): no snapshot, no references.
    if (this.testSignaled(usage)) return timeoutMs === 0 ? 1 : timeoutMs;
    let left = timeoutMs;
    for (const f of this.getFences(usage)) {
      try {
        if (left <= 0) continue; // put the rest
        const r = f.waitTimeout(left === Infinity ? Infinity : left, opts);
        left = r <= 0 ? r : Math.min(left, r);
      } finally {
        f.put();
      }
    }
    return left === timeoutMs && timeoutMs === 0 ? (this.testSignaled(usage) ? 1 : 0) : left;
  }

  /** Promise form of `waitTimeout`. */
  async waitTimeoutAsync(usage: DmaResvUsage, timeoutMs: number, opts: WaitOptions = {}): Promise<number> {
    if (this.testSignaled(usage)) return timeoutMs === 0 ? 1 : timeoutMs;
    let left = timeoutMs;
    const fences = this.getFences(usage);
    try {
      for (const f of fences) {
        if (left <= 0) break;
        const r = await f.waitTimeoutAsync(left, opts);
        left = r <= 0 ? r : Math.min(left, r);
      }
    } finally {
      for (const f of fences) f.put();
    }
    return left === timeoutMs && timeoutMs === 0 ? (this.testSignaled(usage) ? 1 : 0) : left;
  }

  /** dma_resv_set_deadline: forward to every unsignalled fence ≤ `usage`. */
  setDeadline(usage: DmaResvUsage, deadlineNs: bigint): void {
    for (const f of this.getFences(usage)) {
      f.setDeadline(deadlineNs);
      f.put();
    }
  }
}

const GUARD = Symbol('dma_resv.guard');

/**
 * The reservation lock, held: the operations that need it. Obtained from
 * `DmaResv.lock()` and friends; `unlock()` (or `[Symbol.dispose]`) ends it and
 * clamps reservations. Every method re-checks that this thread still holds the
 * lock (the kernel's lockdep assertion) and throws EPERM if not.
 */
export class DmaResvLocked implements Disposable {
  readonly resv: DmaResv;
  readonly #ww: WwMutex;
  #live = true;
  /**
   * The fences of a private object while this guard's lock is held. A private
   * object has one handle and one mutex object, whose every unlock — through this
   * guard or behind its back on `resv.mutex` — and the move into the table clear
   * this field: non-null is proof that the lock is held, with no further check.
   */
  #privateHeld: PrivateFences | null;

  static {
    guardLeftPrivate = (guard) => {
      guard.#privateHeld = null;
    };
  }

  /** @internal */
  constructor(key: symbol, resv: DmaResv, ww: WwMutex, privateHeld: PrivateFences | null) {
    if (key !== GUARD) throw new TypeError('use DmaResv.lock() to lock a reservation object');
    this.resv = resv;
    this.#ww = ww;
    this.#privateHeld = privateHeld;
  }

  /** The object's fences, in its current form, once the lock is known to be held. */
  #held(syscall: string): ResvFences {
    return this.#privateHeld ?? this.#heldShared(syscall); // small: every locked operation inlines it
  }

  #heldShared(syscall: string): ResvFences {
    if (!this.#live || !this.#ww.isHeldByMe()) throw notHeld(syscall);
    return heldFencesOf(this.resv);
  }

  /** dma_resv_unlock: also ends any reservation (the debug clamp, always on). */
  unlock(): void {
    this.#held('dma_resv_unlock').clamp();
    this.#live = false;
    this.#privateHeld = null;
    guardDone(this.resv);
    this.#ww.unlock();
  }

  [Symbol.dispose](): void {
    if (this.#live) this.unlock();
  }

  /**
   * dma_resv_reserve_fences: room for `n` more `addFence` appends until unlock.
   * @throws EINVAL for n < 1; ENOMEM when the table is full (nothing changes then).
   */
  reserveFences(n: number): void {
    const fences = this.#held('dma_resv_reserve_fences');
    if (!Number.isSafeInteger(n) || n < 1) throw badReserve(n);
    fences.reserve(n);
  }

  /**
   * dma_resv_add_fence: add `fence` with `usage`, reusing a slot when the kernel's
   * rules allow, else appending into a reserved slot.
   * @throws EINVAL for a container fence, a bad usage, or an append without a
   * reserved slot (nothing changes then).
   */
  addFence(fence: DmaFence, usage: DmaResvUsage): void {
    const fences = this.#held('dma_resv_add_fence');
    // One condition, one throw site: the add path stays small enough for the JIT to inline.
    if (!fenceAddable(fence) || typeof usage !== 'number' || usage !== (usage & 3)) {
      throw addFenceError(fence, usage);
    }
    fences.add(fence, usage);
  }

  /** dma_resv_replace_fences: every fence of `context` becomes `fence` with `usage`. */
  replaceFences(context: bigint, fence: DmaFence, usage: DmaResvUsage): void {
    const fences = this.#held('dma_resv_replace_fences');
    checkUsage(usage, 'dma_resv_replace_fences');
    if (isContainer(fence)) throw fail('EINVAL', 'dma_resv_replace_fences', 'containers cannot be added; unwrap them first');
    fences.replace(context, fence, usage);
  }

  /**
   * dma_resv_for_each_fence (locked): every fence with usage ≤ `usage`, signalled
   * ones included, in slot order. Each yielded fence is a reference the iterator
   * drops when it advances.
   */
  *fences(usage: DmaResvUsage): Generator<DmaResvEntry> {
    checkUsage(usage, 'dma_resv_iter_first');
    this.#held('dma_resv_iter_first');
    for (let i = 0; i < fencesOf(this.resv).count; i++) {
      // The object may move into the table between two steps: look it up each time.
      const fences = this.#held('dma_resv_iter_next');
      const u = fences.usageAt(i);
      if (u > usage) continue;
      const fence = fences.fenceAt(i);
      try {
        yield { fence, usage: u };
      } finally {
        fence.put();
      }
    }
  }

  /**
   * dma_resv_copy_fences: this object's fences become a snapshot of `src`'s
   * unsignalled ones (all usages). @throws ENOMEM (this object unchanged then).
   */
  copyFrom(src: DmaResv): void {
    const fences = this.#held('dma_resv_copy_fences');
    fences.copy(fencesOf(src).entries(DMA_RESV_USAGE_BOOKKEEP));
  }

  /** dma_resv_describe: one line per fence ≤ READ: `\t<usage> fence:<driver> <timeline> seq <n> (un)signalled`. */
  describe(): string {
    let out = '';
    for (const { fence, usage } of this.fences(DMA_RESV_USAGE_READ)) {
      out += `\t${USAGE_NAMES[usage]} fence:${fence.describe()}\n`;
    }
    return out;
  }

  /** Number of fence entries (for tests and debug listings). */
  get numFences(): number {
    return fencesOf(this.resv).count;
  }
}
