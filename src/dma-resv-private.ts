/**
 * DOC: a reservation object private to its thread
 *
 * `DmaResv.create()` makes an object that no other thread can reach yet, so
 * nothing about it needs synchronising: its fences live in two plain arrays
 * (`PrivateFences`: the `DmaFence` objects, each held with a reference of this
 * thread, and their usages) and its lock is the private form of the ww-mutex
 * (ww-mutex.ts). The first thing that needs it shared — `share()`, reading
 * `slot` (a buffer referencing it from shared memory), a lock that must wait for
 * another async task of this thread — moves it into the table (`moveTo`), once:
 * from then on it is the shared form (dma-resv-slot.ts). Fences inside stay
 * private as long as the object does; moving the object moves them too.
 *
 * Every operation gives the same results in both forms: the same slot-reuse rule,
 * the same capacity (whole list chunks, so a reallocation drops signalled fences
 * at the same moments), reservations clamped on lock and unlock, the unlocked
 * walk restarting when the array is replaced. What cannot differ is by
 * construction: only this thread's JS runs between two steps of a walk.
 */
import { type DmaFence, fenceSupersedes } from './dma-fence.js';
import type { World } from './shared/world.js';
import type { DmaResvUnlockedEntry, DmaResvUsage } from './dma-resv.js';
import { chunked, fillResvSlot, growTo, noSlotReserved, type ResvFences } from './dma-resv-slot.js';

/** The fences of a reservation object that is still private to this thread. */
export class PrivateFences implements ResvFences {
  /** Entry i is (fences[i], usages[i]); the arrays are exactly as long as the entries in use. */
  #fences: DmaFence[] = [];
  #usages: DmaResvUsage[] = [];
  /** Capacity, as the shared array would have it. */
  #max = 0;
  /** Appends allowed while the count is below this (reserveFences; clamped on lock and unlock). */
  #limit = 0;
  /** Bumped whenever the array is replaced (a reallocation, a copy, the move into the table). */
  #seq = 0;
  /** Moved into the table, or finished by put(): empty from now on; a walk in progress ends its pass. */
  #moved = false;

  get count(): number {
    return this.#fences.length;
  }

  usageAt(i: number): DmaResvUsage {
    return this.#usages[i]!;
  }

  fenceAt(i: number): DmaFence {
    return this.#fences[i]!.get();
  }

  test(usage: DmaResvUsage): boolean {
    // isSignaled() may run callbacks, which may change the arrays: re-read them on every step.
    for (let i = 0; i < this.#fences.length; i++) {
      if (this.#usages[i]! <= usage && !this.#fences[i]!.isSignaled()) return false;
    }
    return true;
  }

  entries(usage: DmaResvUsage): Array<[DmaFence, DmaResvUsage]> {
    const out: Array<[DmaFence, DmaResvUsage]> = [];
    for (let i = 0; i < this.#fences.length; i++) {
      const u = this.#usages[i]!;
      const f = this.#fences[i]!;
      if (u <= usage && !f.isSignaled()) out.push([f.get(), u]);
    }
    return out;
  }

  *walk(usage: DmaResvUsage): Generator<DmaResvUnlockedEntry, boolean> {
    restart: for (;;) {
      const seq = this.#seq;
      // As the shared walk: the entries counted at the start of a pass (appends come after them).
      const num = this.#fences.length;
      let restarted = true;
      for (let i = 0; i < num; i++) {
        if (this.#seq !== seq) {
          if (this.#moved) return false;
          continue restart;
        }
        const u = this.#usages[i]!;
        if (u > usage) continue;
        const fence = this.#fences[i]!.get();
        try {
          if (fence.isSignaled()) continue;
          yield { fence, usage: u, restarted };
          restarted = false;
        } finally {
          fence.put();
        }
      }
      return true;
    }
  }

  clamp(): void {
    this.#limit = this.#fences.length;
  }

  reserve(n: number): void {
    if (this.#max - this.#fences.length < n) this.#grow(n);
    const limit = this.#fences.length + n;
    if (limit > this.#limit) this.#limit = limit;
  }

  /** The reallocation of the shared form for `n` more: keep the unsignalled fences in order, drop the signalled ones. */
  #grow(n: number): void {
    const fences = this.#fences;
    const capacity = growTo(fences.length, this.#max, n);
    const usages = this.#usages;
    const dropped: DmaFence[] = [];
    const keptF: DmaFence[] = [];
    const keptU: DmaResvUsage[] = [];
    for (let i = 0; i < fences.length; i++) {
      if (fences[i]!.isSignaled()) dropped.push(fences[i]!);
      else {
        keptF.push(fences[i]!);
        keptU.push(usages[i]!);
      }
    }
    this.#replaceArray(keptF, keptU, capacity);
    this.#limit = Math.min(this.#limit, keptF.length);
    for (const f of dropped) f.put();
  }

  #replaceArray(fences: DmaFence[], usages: DmaResvUsage[], capacity: number): void {
    this.#fences = fences;
    this.#usages = usages;
    this.#max = capacity;
    this.#seq++;
  }

  add(fence: DmaFence, usage: DmaResvUsage): void {
    fence.get(); // first: a fence used after its last put() is EINVAL before anything changes
    const fences = this.#fences;
    for (let i = 0; i < fences.length; i++) {
      const old = fences[i]!;
      if ((this.#usages[i]! >= usage && fenceSupersedes(fence, old)) || old.isSignaled()) {
        fences[i] = fence;
        this.#usages[i] = usage;
        old.put();
        return;
      }
    }
    this.#append(fence, usage);
  }

  #append(fence: DmaFence, usage: DmaResvUsage): void {
    if (this.#fences.length >= this.#limit) {
      fence.put();
      throw noSlotReserved();
    }
    this.#fences.push(fence);
    this.#usages.push(usage);
  }

  replace(context: bigint, fence: DmaFence, usage: DmaResvUsage): void {
    for (let i = 0; i < this.#fences.length; i++) {
      const old = this.#fences[i]!;
      if (old.context !== context) continue;
      this.#fences[i] = fence.get();
      this.#usages[i] = usage;
      old.put();
    }
  }

  copy(entries: Array<[DmaFence, DmaResvUsage]>): void {
    const old = this.#fences;
    this.#replaceArray(entries.map(([f]) => f), entries.map(([, u]) => u), chunked(Math.max(4, entries.length)));
    this.#limit = entries.length;
    for (const f of old) f.put();
  }

  /**
   * Move the fences into the new, unpublished resv slot at base `b`: the slot
   * takes a reference on each (a private fence moves into the table now) and this
   * thread's references are dropped. @throws ENOMEM (nothing changes then).
   */
  moveTo(w: World, b: number): void {
    for (const f of this.#fences) void f.slot; // every fence gets its slot first: ENOMEM changes nothing
    fillResvSlot(w, b, this.#fences, this.#usages, this.#max, this.#limit);
    this.#drop();
  }

  /** dma_resv_fini of the private form: drop every fence. */
  fini(): void {
    this.#drop();
  }

  #drop(): void {
    const old = this.#fences;
    this.#replaceArray([], [], 0);
    this.#limit = 0;
    this.#moved = true;
    for (const f of old) f.put();
  }
}
