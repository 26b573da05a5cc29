/**
 * DOC: dma_resv — reservation objects, shared between threads
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
 * Shared memory: the object, its lock and its fence array live in the shared
 * table, so a fence added in a worker is seen by a wait in the main thread at once.
 * The array is a chain of list slots, each entry `fence slot << 2 | usage`. Lock-
 * free readers stand in for the kernel's RCU with references: they take one on the
 * array (increment-if-nonzero, then check it is still the array) and on each fence
 * (then check the entry still names it), so nothing they read is freed under them.
 */
import {
  DmaFence, fenceAdoptSlot, fenceFromSlot, fenceRef, fenceSlotIsSignaled, fenceViewIfAny, type WaitOptions,
} from './dma-fence.js';
import {
  slotIsLaterOrSame, slotSameContext, slotSignaled,
} from './dma-fence-slot.js';
import { dmaFenceArrayCreate, isContainer } from './dma-fence-array.js';
import { fail } from './errors.js';
import { LIST_PER_SLOT, listAlloc, listAt, listFree, listSet } from './shared/list.js';
import { packSlots, unpackSlots, type Packet } from './shared/packet.js';
import {
  adoptAsHold, allocSlot, hold, Kind, onRelease, S_DATA, slotKind, tryRef, unhold, unref,
} from './shared/slab.js';
import { world, type World } from './shared/world.js';
import {
  initWwMutexWords, registerWwMutexScanner, WW_MUTEX_WORDS, wwMutexAt, type WwAcquireCtx, type WwLockOptions,
  type WwMutex,
} from './ww-mutex.js';

export const DMA_RESV_USAGE_KERNEL = 0;
export const DMA_RESV_USAGE_WRITE = 1;
export const DMA_RESV_USAGE_READ = 2;
export const DMA_RESV_USAGE_BOOKKEEP = 3;
export type DmaResvUsage = 0 | 1 | 2 | 3;
const USAGE_NAMES = ['kernel', 'write', 'read', 'bookkeep'] as const;

/** dma_resv_usage_rw: the usage a new read (false) or write (true) must wait on. */
export function dmaResvUsageRw(write: boolean): DmaResvUsage {
  return write ? DMA_RESV_USAGE_READ : DMA_RESV_USAGE_WRITE;
}

/* Slot layout (Kind.Resv). */
const RV_WW = S_DATA; // WW_MUTEX_WORDS words, even index
const RV_ARRAY = RV_WW + WW_MUTEX_WORDS; // head of the fence array chain, -1 none
const RV_NUM = RV_ARRAY + 1; // entries in use
const RV_MAX = RV_ARRAY + 2; // capacity of the array
const RV_LIMIT = RV_ARRAY + 3; // num + reserved: appends allowed below it (reset on unlock)
/**
 * Sequence lock of the (array, count) pair: odd while a writer replaces the array,
 * so a reader never trusts a new array with the old count (whose extra entries are
 * zeros). Readers start on an even value and re-check it after reading both.
 */
const RV_SEQ = RV_ARRAY + 4;

registerWwMutexScanner(Kind.Resv, RV_WW);

function checkUsage(usage: unknown, syscall: string): DmaResvUsage {
  if (usage !== 0 && usage !== 1 && usage !== 2 && usage !== 3) {
    throw fail('EINVAL', syscall, `usage ${String(usage)} is not KERNEL, WRITE, READ or BOOKKEEP`);
  }
  return usage;
}

/* ---- the fence array (entries `fence << 2 | usage`) ---- */

function entryFence(e: number): number {
  return e >>> 2;
}

function entryUsage(e: number): DmaResvUsage {
  return (e & 3) as DmaResvUsage;
}

/** Wait out a writer's array replacement; returns the (even) sequence to validate against. */
function readSeq(w: World, b: number): number {
  for (;;) {
    const seq = Atomics.load(w.i32, b + RV_SEQ);
    if (!(seq & 1)) return seq;
  }
}

/**
 * A reference on the current array of `resv` and its count, consistent with
 * sequence `seq` (or null: retry with a new sequence; arr -1: no array).
 */
function acquireArray(w: World, b: number, seq: number): { arr: number; num: number } | null {
  const arr = Atomics.load(w.i32, b + RV_ARRAY);
  const num = Atomics.load(w.i32, b + RV_NUM);
  if (Atomics.load(w.i32, b + RV_SEQ) !== seq) return null;
  if (arr < 0) return { arr, num: 0 };
  if (!tryRef(w, arr)) return null;
  if (Atomics.load(w.i32, b + RV_ARRAY) !== arr || slotKind(w, arr) !== Kind.List) {
    unref(w, arr);
    return null;
  }
  return { arr, num };
}

/** Writers (lock held): publish a new array and count as one step for lock-free readers. */
function publishArray(w: World, b: number, arr: number, num: number): void {
  Atomics.add(w.i32, b + RV_SEQ, 1); // odd: replacing
  Atomics.store(w.i32, b + RV_ARRAY, arr);
  Atomics.store(w.i32, b + RV_NUM, num);
  Atomics.add(w.i32, b + RV_SEQ, 1); // even again
}

/** A reference on the fence of entry `i` of `arr` if it still holds `e`; else false. */
function refEntryFence(w: World, arr: number, i: number, e: number): boolean {
  const f = entryFence(e);
  if (!tryRef(w, f)) return false;
  if (listAt(w, arr, i) === e) return true;
  unref(w, f);
  return false;
}

/** Snapshot of unsignalled (fence, usage) pairs with usage ≤ `usage`, each with a reference. */
function snapshot(w: World, b: number, usage: DmaResvUsage): Array<[number, DmaResvUsage]> {
  for (;;) {
    const seq = readSeq(w, b);
    const got = acquireArray(w, b, seq);
    if (!got) continue;
    const out: Array<[number, DmaResvUsage]> = [];
    if (got.arr >= 0) {
      for (let i = 0; i < got.num; i++) {
        const e = listAt(w, got.arr, i);
        if (e < 0 || entryUsage(e) > usage) continue;
        if (!refEntryFence(w, got.arr, i, e)) continue;
        // dma_fence_is_signaled, driver ops included (this thread's view, if any).
        if (fenceSlotIsSignaled(w, entryFence(e))) unref(w, entryFence(e));
        else out.push([entryFence(e), entryUsage(e)]);
      }
      unref(w, got.arr);
    }
    if (Atomics.load(w.i32, b + RV_SEQ) === seq) return out;
    for (const [f] of out) unref(w, f); // the array was replaced meanwhile: start over
  }
}

onRelease(Kind.Resv, (w, slot) => {
  // dma_resv_fini: drop every fence reference and the array.
  const b = w.base(slot);
  const arr = w.i32[b + RV_ARRAY]!;
  if (arr < 0) return;
  const num = w.i32[b + RV_NUM]!;
  for (let i = 0; i < num; i++) unref(w, entryFence(listAt(w, arr, i)));
  listFree(w, arr);
});

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
  #b: number;
  #ww: WwMutex;
  #guard: DmaResvLocked | undefined;

  private constructor(slot: number) {
    this.#slot = slot;
    this.#b = world().base(slot);
    this.#ww = wwMutexAt(slot, this.#b + RV_WW);
  }

  /** dma_resv_init: a new, empty, unlocked reservation object. @throws ENOMEM. */
  static create(): DmaResv {
    const w = world();
    const slot = allocSlot(w, Kind.Resv, 'dma_resv_init');
    const b = w.base(slot);
    initWwMutexWords(w, b + RV_WW);
    w.i32[b + RV_ARRAY] = -1;
    adoptAsHold(w, slot);
    return new DmaResv(slot);
  }

  /** @internal a new handle on resv slot `slot` (takes a hold). */
  static fromSlot(slot: number): DmaResv {
    hold(world(), slot);
    return new DmaResv(slot);
  }

  /** @internal the slot. */
  get slot(): number {
    this.#check();
    return this.#slot;
  }

  #check(): void {
    if (this.#slot < 0) throw fail('EINVAL', 'dma_resv', 'reservation object used after put()');
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
    this.#slot = -1;
    unhold(world(), slot);
  }

  [Symbol.dispose](): void {
    if (this.#slot >= 0) this.put();
  }

  /* ---- locking ---- */

  #locked(r: number): DmaResvLocked | number {
    if (r !== 0) return r;
    // Reservations never outlive a holder, also one that died holding the lock (whose
    // unlock never ran): every new holder starts with none.
    const w = world();
    w.i32[this.#b + RV_LIMIT] = w.i32[this.#b + RV_NUM]!;
    this.#guard = new DmaResvLocked(GUARD, this, this.#b, this.#ww, () => {
      this.#guard = undefined;
    });
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
   */
  *fencesUnlocked(usage: DmaResvUsage): Generator<DmaResvUnlockedEntry> {
    checkUsage(usage, 'dma_resv_iter_first_unlocked');
    const w = world();
    const b = this.#b;
    restart: for (;;) {
      const seq = readSeq(w, b);
      const got = acquireArray(w, b, seq);
      if (!got) continue;
      const { arr, num } = got;
      if (arr < 0) return;
      let restarted = true;
      try {
        for (let i = 0; i < num; i++) {
          if (Atomics.load(w.i32, b + RV_SEQ) !== seq) continue restart;
          const e = listAt(w, arr, i);
          if (e < 0 || entryUsage(e) > usage || !refEntryFence(w, arr, i, e)) continue;
          const fence = fenceAdoptSlot(entryFence(e));
          try {
            if (fence.isSignaled()) continue;
            yield { fence, usage: entryUsage(e), restarted };
            restarted = false;
          } finally {
            fence.put();
          }
        }
        return;
      } finally {
        unref(w, arr);
      }
    }
  }

  /** dma_resv_get_fences: a snapshot of the unsignalled fences ≤ `usage`, each a new reference. */
  getFences(usage: DmaResvUsage): DmaFence[] {
    checkUsage(usage, 'dma_resv_get_fences');
    return snapshot(world(), this.#b, usage).map(([f]) => fenceAdoptSlot(f));
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
   * dma_resv_test_signaled: true iff no unsignalled fence with usage ≤ `usage`.
   * Reads without taking references, as the kernel reads under RCU: fences in a
   * resv are leaves (containers are refused), so a state read is one word, and the
   * read is kept only if the array was not replaced and the entry still names the
   * fence afterwards (then the array held the fence throughout). A fence some other
   * thread is signalling right now (claimed, not yet published) still counts as
   * pending for this instant.
   */
  testSignaled(usage: DmaResvUsage): boolean {
    checkUsage(usage, 'dma_resv_test_signaled');
    const w = world();
    const b = this.#b;
    retry: for (;;) {
      const seq = readSeq(w, b);
      const arr = Atomics.load(w.i32, b + RV_ARRAY);
      const num = Atomics.load(w.i32, b + RV_NUM);
      if (Atomics.load(w.i32, b + RV_SEQ) !== seq) continue;
      if (arr < 0) return true;
      for (let i = 0; i < num; i++) {
        const e = listAt(w, arr, i);
        if (e < 0 || entryUsage(e) > usage) continue;
        const f = entryFence(e);
        // Only the state word, or this thread's own view (driver ops live there): on a slot
        // reused mid-read, kind-specific words could be garbage before the validation below.
        const done = f < w.capacity && (slotSignaled(w, f) || fenceViewIfAny(f)?.isSignaled() === true);
        if (Atomics.load(w.i32, b + RV_SEQ) !== seq || listAt(w, arr, i) !== e) continue retry;
        if (!done) return false;
      }
      if (Atomics.load(w.i32, b + RV_SEQ) === seq) return true;
    }
  }

  /**
   * dma_resv_wait_timeout, blocking: waits in turn for every unsignalled fence ≤
   * `usage`, passing the time left on. @returns remaining ms (> 0; `timeout`, or 1
   * with timeout 0, when nothing was pending), 0 on timeout, -ERESTARTSYS if interrupted.
   */
  waitTimeout(usage: DmaResvUsage, timeoutMs: number, opts: WaitOptions = {}): number {
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
  #b: number;
  #ww: WwMutex;
  #onUnlock: () => void;
  #live = true;

  /** @internal */
  constructor(key: symbol, resv: DmaResv, b: number, ww: WwMutex, onUnlock: () => void) {
    if (key !== GUARD) throw new TypeError('use DmaResv.lock() to lock a reservation object');
    this.resv = resv;
    this.#b = b;
    this.#ww = ww;
    this.#onUnlock = onUnlock;
  }

  #held(syscall: string): World {
    if (!this.#live || !this.#ww.isHeldByMe()) throw fail('EPERM', syscall, 'reservation lock not held');
    return world();
  }

  /** dma_resv_unlock: also ends any reservation (the debug clamp, always on). */
  unlock(): void {
    const w = this.#held('dma_resv_unlock');
    w.i32[this.#b + RV_LIMIT] = w.i32[this.#b + RV_NUM]!;
    this.#live = false;
    this.#onUnlock();
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
    const w = this.#held('dma_resv_reserve_fences');
    if (!Number.isSafeInteger(n) || n < 1) throw fail('EINVAL', 'dma_resv_reserve_fences', `cannot reserve ${n} fences`);
    const b = this.#b;
    const num = w.i32[b + RV_NUM]!;
    const max = w.i32[b + RV_MAX]!;
    if (max - num < n) this.#grow(w, Math.max(num + n, 2 * max, max === 0 ? Math.max(4, nextPow2(n)) : 0));
    // RV_LIMIT is read and written only by the lock holder: plain stores.
    const limit = w.i32[b + RV_NUM]! + n;
    if (limit > w.i32[b + RV_LIMIT]!) w.i32[b + RV_LIMIT] = limit;
  }

  /** Replace the array by one of `capacity`, keeping the unsignalled fences in order. */
  #grow(w: World, capacity: number): void {
    const b = this.#b;
    const chunks = Math.ceil(capacity / LIST_PER_SLOT) * LIST_PER_SLOT; // use whole chunks, like the allocator bucket
    const next = listAlloc(w, chunks, 'dma_resv_reserve_fences');
    const old = w.i32[b + RV_ARRAY]!;
    const num = w.i32[b + RV_NUM]!;
    const dropped: number[] = [];
    let kept = 0;
    for (let i = 0; i < num; i++) {
      const e = listAt(w, old, i);
      if (fenceSlotIsSignaled(w, entryFence(e))) dropped.push(entryFence(e));
      else listSet(w, next, kept++, e);
    }
    publishArray(w, b, next, kept);
    w.i32[b + RV_MAX] = chunks;
    w.i32[b + RV_LIMIT] = Math.min(w.i32[b + RV_LIMIT]!, kept);
    if (old >= 0) listFree(w, old);
    for (const f of dropped) unref(w, f);
  }

  /**
   * dma_resv_add_fence: add `fence` with `usage`, reusing a slot when the kernel's
   * rules allow, else appending into a reserved slot.
   * @throws EINVAL for a container fence, a bad usage, or an append without a
   * reserved slot (nothing changes then).
   */
  addFence(fence: DmaFence, usage: DmaResvUsage): void {
    const w = this.#held('dma_resv_add_fence');
    if (!(fence instanceof DmaFence)) throw new TypeError('dma_resv_add_fence: not a DmaFence');
    checkUsage(usage, 'dma_resv_add_fence');
    if (isContainer(fence)) throw fail('EINVAL', 'dma_resv_add_fence', 'containers cannot be added; unwrap them first');
    const b = this.#b;
    const f = fence.slot;
    const arr = w.i32[b + RV_ARRAY]!;
    const num = w.i32[b + RV_NUM]!;
    for (let i = 0; i < num; i++) {
      const e = listAt(w, arr, i);
      const old = entryFence(e);
      const replace = (slotSameContext(w, f, old) && entryUsage(e) >= usage && slotIsLaterOrSame(w, f, old))
        || fenceSlotIsSignaled(w, old);
      if (!replace) continue;
      fenceRef(fence);
      listSet(w, arr, i, (f << 2) | usage);
      unref(w, old);
      return;
    }
    if (num >= w.i32[b + RV_LIMIT]!) {
      throw fail('EINVAL', 'dma_resv_add_fence', 'no fence slot reserved (call reserveFences() under this lock first)');
    }
    fenceRef(fence);
    listSet(w, arr, num, (f << 2) | usage);
    Atomics.store(w.i32, b + RV_NUM, num + 1);
  }

  /** dma_resv_replace_fences: every fence of `context` becomes `fence` with `usage`. */
  replaceFences(context: bigint, fence: DmaFence, usage: DmaResvUsage): void {
    const w = this.#held('dma_resv_replace_fences');
    checkUsage(usage, 'dma_resv_replace_fences');
    if (isContainer(fence)) throw fail('EINVAL', 'dma_resv_replace_fences', 'containers cannot be added; unwrap them first');
    const b = this.#b;
    const arr = w.i32[b + RV_ARRAY]!;
    const num = w.i32[b + RV_NUM]!;
    for (let i = 0; i < num; i++) {
      const e = listAt(w, arr, i);
      const old = fenceFromSlot(entryFence(e));
      const same = old.context === context;
      old.put();
      if (!same) continue;
      listSet(w, arr, i, (fenceRef(fence) << 2) | usage);
      unref(w, entryFence(e));
    }
  }

  /**
   * dma_resv_for_each_fence (locked): every fence with usage ≤ `usage`, signalled
   * ones included, in slot order. Each yielded fence is a reference the iterator
   * drops when it advances.
   */
  *fences(usage: DmaResvUsage): Generator<DmaResvEntry> {
    checkUsage(usage, 'dma_resv_iter_first');
    const w = this.#held('dma_resv_iter_first');
    const b = this.#b;
    for (let i = 0; i < w.i32[b + RV_NUM]!; i++) {
      this.#held('dma_resv_iter_next');
      const e = listAt(w, w.i32[b + RV_ARRAY]!, i);
      if (entryUsage(e) > usage) continue;
      const fence = fenceFromSlot(entryFence(e));
      try {
        yield { fence, usage: entryUsage(e) };
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
    const w = this.#held('dma_resv_copy_fences');
    const entries = snapshot(w, w.base(src.slot), DMA_RESV_USAGE_BOOKKEEP);
    let next: number;
    try {
      next = listAlloc(w, Math.max(4, entries.length), 'dma_resv_copy_fences');
    } catch (e) {
      for (const [f] of entries) unref(w, f);
      throw e;
    }
    entries.forEach(([f, u], i) => listSet(w, next, i, (f << 2) | u));
    const b = this.#b;
    const old = w.i32[b + RV_ARRAY]!;
    const oldNum = w.i32[b + RV_NUM]!;
    const oldFences: number[] = [];
    for (let i = 0; i < oldNum; i++) oldFences.push(entryFence(listAt(w, old, i)));
    publishArray(w, b, next, entries.length);
    w.i32[b + RV_MAX] = Math.ceil(Math.max(4, entries.length) / LIST_PER_SLOT) * LIST_PER_SLOT;
    w.i32[b + RV_LIMIT] = entries.length;
    if (old >= 0) listFree(w, old);
    for (const f of oldFences) unref(w, f);
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
    return world().i32[this.#b + RV_NUM]!;
  }
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
