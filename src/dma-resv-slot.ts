/**
 * DOC: a reservation object in shared memory
 *
 * The form a `DmaResv` takes once it is shared (dma-resv.ts): one Kind.Resv slot
 * holding its ww-mutex, and its fence array as a chain of list slots, each entry
 * `fence slot << 2 | usage`. `SlotFences` runs every fence operation of the
 * object on that slot; a private object (dma-resv-private.ts) runs the same
 * operations on plain fields, and `ResvFences` is what both offer.
 *
 * Lock-free readers stand in for the kernel's RCU with references: they take one
 * on the array (increment-if-nonzero, then check it is still the array) and on
 * each fence (then check the entry still names it), so nothing they read is freed
 * under them. A sequence lock around replacing the array and its count keeps a
 * reader from trusting a new array with the old count.
 */
import {
  DmaFence, fenceAdoptSlot, fenceFromSlot, fenceRef, fenceSlotIsSignaled, fenceViewIfAny,
} from './dma-fence.js';
import { slotIsLaterOrSame, slotSameContext, slotSignaled } from './dma-fence-slot.js';
import { fail } from './errors.js';
import { LIST_PER_SLOT, listAlloc, listAt, listFree, listSet } from './shared/list.js';
import { Kind, onRelease, S_DATA, slotKind, tryRef, unref } from './shared/slab.js';
import type { World } from './shared/world.js';
import type { DmaResvUnlockedEntry, DmaResvUsage } from './dma-resv.js';
import { registerWwMutexScanner, WW_MUTEX_WORDS } from './ww-mutex.js';

/* Slot layout (Kind.Resv). */
export const RV_WW = S_DATA; // WW_MUTEX_WORDS words, even index
export const RV_ARRAY = RV_WW + WW_MUTEX_WORDS; // head of the fence array chain, -1 none
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

/**
 * The fence operations of a reservation object, in either form. The caller has
 * validated the arguments and, for the writers, checked that this thread holds
 * the lock.
 */
export interface ResvFences {
  /** Entries in use (lock held, or for debug listings). */
  readonly count: number;
  /** Usage of entry `i` (lock held). */
  usageAt(i: number): DmaResvUsage;
  /** Fence of entry `i`, a new reference (lock held). */
  fenceAt(i: number): DmaFence;
  /** dma_resv_test_signaled. */
  test(usage: DmaResvUsage): boolean;
  /** The unsignalled (fence, usage) pairs with usage ≤ `usage`, each fence a new reference. */
  entries(usage: DmaResvUsage): Array<[DmaFence, DmaResvUsage]>;
  /** One pass of the unlocked iterator; returns false if it must start over on the object's current form. */
  walk(usage: DmaResvUsage): Generator<DmaResvUnlockedEntry, boolean>;
  /** Reservations end: appends allowed only up to the current count. */
  clamp(): void;
  reserve(n: number): void;
  add(fence: DmaFence, usage: DmaResvUsage): void;
  replace(context: bigint, fence: DmaFence, usage: DmaResvUsage): void;
  /** Make `entries` (references the call consumes, also when it throws) the whole array. */
  copy(entries: Array<[DmaFence, DmaResvUsage]>): void;
}

/* ---- the growth policy (both forms follow it, so both drop signalled fences at the same moments) ---- */

/** Capacity in whole list chunks, like the allocator bucket. */
export function chunked(capacity: number): number {
  return Math.ceil(capacity / LIST_PER_SLOT) * LIST_PER_SLOT;
}

/** Capacity to grow to for `n` more entries (kernel: max(used + n, 2 × max); first at least max(4, 2^k ≥ n)). */
export function growTo(num: number, max: number, n: number): number {
  return chunked(Math.max(num + n, 2 * max, max === 0 ? Math.max(4, nextPow2(n)) : 0));
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export function noSlotReserved(): Error {
  return fail('EINVAL', 'dma_resv_add_fence', 'no fence slot reserved (call reserveFences() under this lock first)');
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

/** Initialise the fence words of a new resv slot (body zeroed by allocSlot): no array. */
export function initResvSlot(w: World, b: number): void {
  w.i32[b + RV_ARRAY] = -1;
}

/**
 * Fill the fence words of a new, unpublished resv slot with `fences` (references
 * the slot takes over: the caller drops its own) and their usages.
 * @throws ENOMEM (nothing allocated then).
 */
export function fillResvSlot(
  w: World, b: number, fences: readonly DmaFence[], usages: readonly DmaResvUsage[], max: number, limit: number,
): void {
  if (max === 0) return;
  const arr = listAlloc(w, max, 'dma_resv_share');
  for (let i = 0; i < fences.length; i++) listSet(w, arr, i, (fenceRef(fences[i]!) << 2) | usages[i]!);
  w.i32[b + RV_ARRAY] = arr;
  w.i32[b + RV_NUM] = fences.length;
  w.i32[b + RV_MAX] = max;
  w.i32[b + RV_LIMIT] = limit;
}

/** The fences of a shared reservation object: its slot, from this thread. */
export class SlotFences implements ResvFences {
  readonly #w: World;
  readonly #b: number;

  constructor(w: World, b: number) {
    this.#w = w;
    this.#b = b;
  }

  get count(): number {
    return this.#w.i32[this.#b + RV_NUM]!;
  }

  usageAt(i: number): DmaResvUsage {
    return entryUsage(listAt(this.#w, this.#w.i32[this.#b + RV_ARRAY]!, i));
  }

  fenceAt(i: number): DmaFence {
    return fenceFromSlot(entryFence(listAt(this.#w, this.#w.i32[this.#b + RV_ARRAY]!, i)));
  }

  /**
   * Reads without taking references, as the kernel reads under RCU: fences in a
   * resv are leaves (containers are refused), so a state read is one word, and the
   * read is kept only if the array was not replaced and the entry still names the
   * fence afterwards (then the array held the fence throughout). A fence some other
   * thread is signalling right now (claimed, not yet published) still counts as
   * pending for this instant.
   */
  test(usage: DmaResvUsage): boolean {
    const w = this.#w;
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

  entries(usage: DmaResvUsage): Array<[DmaFence, DmaResvUsage]> {
    return snapshot(this.#w, this.#b, usage).map(([f, u]) => [fenceAdoptSlot(f), u]);
  }

  *walk(usage: DmaResvUsage): Generator<DmaResvUnlockedEntry, boolean> {
    const w = this.#w;
    const b = this.#b;
    restart: for (;;) {
      const seq = readSeq(w, b);
      const got = acquireArray(w, b, seq);
      if (!got) continue;
      const { arr, num } = got;
      if (arr < 0) return true;
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
        return true;
      } finally {
        unref(w, arr);
      }
    }
  }

  clamp(): void {
    // RV_LIMIT is read and written only by the lock holder: plain stores.
    this.#w.i32[this.#b + RV_LIMIT] = this.#w.i32[this.#b + RV_NUM]!;
  }

  reserve(n: number): void {
    const w = this.#w;
    const b = this.#b;
    const num = w.i32[b + RV_NUM]!;
    const max = w.i32[b + RV_MAX]!;
    if (max - num < n) this.#grow(growTo(num, max, n));
    const limit = w.i32[b + RV_NUM]! + n;
    if (limit > w.i32[b + RV_LIMIT]!) w.i32[b + RV_LIMIT] = limit;
  }

  /** Replace the array by one of `capacity` (whole chunks), keeping the unsignalled fences in order. */
  #grow(capacity: number): void {
    const w = this.#w;
    const b = this.#b;
    const next = listAlloc(w, capacity, 'dma_resv_reserve_fences');
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
    w.i32[b + RV_MAX] = capacity;
    w.i32[b + RV_LIMIT] = Math.min(w.i32[b + RV_LIMIT]!, kept);
    if (old >= 0) listFree(w, old);
    for (const f of dropped) unref(w, f);
  }

  add(fence: DmaFence, usage: DmaResvUsage): void {
    const w = this.#w;
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
    if (num >= w.i32[b + RV_LIMIT]!) throw noSlotReserved();
    fenceRef(fence);
    listSet(w, arr, num, (f << 2) | usage);
    Atomics.store(w.i32, b + RV_NUM, num + 1);
  }

  replace(context: bigint, fence: DmaFence, usage: DmaResvUsage): void {
    const w = this.#w;
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

  copy(entries: Array<[DmaFence, DmaResvUsage]>): void {
    const w = this.#w;
    const capacity = chunked(Math.max(4, entries.length));
    let next: number;
    try {
      for (const [f] of entries) void f.slot; // a private fence moves into the table now (may be ENOMEM)
      next = listAlloc(w, capacity, 'dma_resv_copy_fences');
    } catch (e) {
      for (const [f] of entries) f.put();
      throw e;
    }
    entries.forEach(([f, u], i) => listSet(w, next, i, (fenceRef(f) << 2) | u));
    for (const [f] of entries) f.put();
    const b = this.#b;
    const old = w.i32[b + RV_ARRAY]!;
    const oldNum = w.i32[b + RV_NUM]!;
    const oldFences: number[] = [];
    for (let i = 0; i < oldNum; i++) oldFences.push(entryFence(listAt(w, old, i)));
    publishArray(w, b, next, entries.length);
    w.i32[b + RV_MAX] = capacity;
    w.i32[b + RV_LIMIT] = entries.length;
    if (old >= 0) listFree(w, old);
    for (const f of oldFences) unref(w, f);
  }
}
