/**
 * DOC: slots, references and holders
 *
 * The object table is a slab of fixed-size slots. Every slot starts with the same
 * header words; the rest belongs to the object's kind.
 *
 * Reference counting follows the kernel's kref, with one addition so that a dead
 * thread's references can be reclaimed:
 * - *internal* references (one object pointing at another: a sync_file at its
 *   fence, an array at its members) are plain counts in S_REFS (`ref`/`unref`);
 * - a *thread* that holds an object (a JS wrapper, an fd) counts once in S_REFS,
 *   however many local references it has, and sets its bit in the holder mask
 *   (S_HOLD0/S_HOLD1). The local count lives in a per-thread array (`hold`/`unhold`).
 * When a worker dies, the reaper clears its bit in every slot and drops the one
 * reference each bit stood for.
 *
 * The last reference runs the kind's release hook (registered by the module that
 * owns the kind, so this layer knows nothing of fences or files), then the slot is
 * freed: its generation is bumped and anyone sleeping on it is woken.
 */
import { fail } from '../errors.js';
import { mutexLock, mutexUnlock } from './mutex.js';
import {
  H_ALLOC_LOCK, H_BUMP, H_FREE_HEAD, H_LIVE, H_LIVE_BY_KIND, onJoin, SLOT_WORDS, tid, world, type World,
} from './world.js';

/* Common slot header. */
export const S_KIND = 0;
export const S_GEN = 1;
export const S_REFS = 2;
export const S_HOLD0 = 3;
export const S_HOLD1 = 4;
export const S_LOCK = 5;
export const S_NEXT = 6;
export const S_PREV = 7;
/** First word the kind may use. Word 8 is 8-byte aligned. */
export const S_BODY = 8;

/** Object kinds. Fence kinds share the fence layout (dma-fence.ts). */
export const enum Kind {
  Free = 0,
  Fence = 1,
  Timeline = 2,
  File = 3,
  List = 4,
  Packet = 5,
  Resv = 6,
  Buffer = 7,
  Attachment = 8,
}

type ReleaseHook = (w: World, slot: number) => void;
const releaseHooks: Array<ReleaseHook | undefined> = [];

/** Register what to do when the last reference to a slot of `kind` goes. */
export function onRelease(kind: Kind, hook: ReleaseHook): void {
  releaseHooks[kind] = hook;
}

let localRefs = new Int32Array(0);
onJoin((w) => {
  localRefs = new Int32Array(w.capacity);
});

/**
 * Allocate a slot of `kind` with one *internal* reference (the caller converts it
 * to a hold with `adoptAsHold` when a wrapper takes it). Body words are zero.
 * Throws ENOMEM when the table is full.
 */
export function allocSlot(w: World, kind: Kind, syscall: string): number {
  mutexLock(w, H_ALLOC_LOCK);
  let slot = w.i32[H_FREE_HEAD]!;
  if (slot >= 0) {
    w.i32[H_FREE_HEAD] = w.i32[w.base(slot) + S_NEXT]!;
  } else if (w.i32[H_BUMP]! < w.capacity) {
    slot = w.i32[H_BUMP]!;
    w.i32[H_BUMP] = slot + 1;
  }
  mutexUnlock(w, H_ALLOC_LOCK);
  if (slot < 0) throw fail('ENOMEM', syscall, `shared object table is full (${w.capacity} slots; raise DMABUF_SLOTS)`);
  const b = w.base(slot);
  w.i32.fill(0, b + S_REFS, b + SLOT_WORDS);
  Atomics.store(w.i32, b + S_REFS, 1);
  Atomics.store(w.i32, b + S_KIND, kind);
  Atomics.add(w.i32, H_LIVE, 1);
  Atomics.add(w.i32, H_LIVE_BY_KIND + kind, 1);
  return slot;
}

function freeSlot(w: World, slot: number): void {
  const b = w.base(slot);
  const kind = w.i32[b + S_KIND]!;
  Atomics.store(w.i32, b + S_KIND, Kind.Free);
  Atomics.add(w.i32, b + S_GEN, 1);
  Atomics.sub(w.i32, H_LIVE, 1);
  Atomics.sub(w.i32, H_LIVE_BY_KIND + kind, 1);
  mutexLock(w, H_ALLOC_LOCK);
  w.i32[b + S_NEXT] = w.i32[H_FREE_HEAD]!;
  w.i32[H_FREE_HEAD] = slot;
  mutexUnlock(w, H_ALLOC_LOCK);
}

/** Take an internal reference (caller already holds one, directly or through an owner). */
export function ref(w: World, slot: number): void {
  Atomics.add(w.i32, w.base(slot) + S_REFS, 1);
}

/** Drop an internal reference; the last one releases the object. */
export function unref(w: World, slot: number): void {
  if (Atomics.sub(w.i32, w.base(slot) + S_REFS, 1) === 1) release(w, slot);
}

function release(w: World, slot: number): void {
  const kind = w.i32[w.base(slot) + S_KIND]!;
  releaseHooks[kind]?.(w, slot);
  freeSlot(w, slot);
}

/** Add a local reference of this thread. The first one counts in the shared refcount. */
export function hold(w: World, slot: number): void {
  if (localRefs[slot]++ === 0) {
    const b = w.base(slot);
    Atomics.add(w.i32, b + S_REFS, 1);
    const t = tid();
    Atomics.or(w.i32, b + (t < 32 ? S_HOLD0 : S_HOLD1), 1 << (t & 31));
  }
}

/** Convert one internal reference (e.g. fresh from `allocSlot`) into a local hold. */
export function adoptAsHold(w: World, slot: number): void {
  if (localRefs[slot]++ === 0) {
    const t = tid();
    Atomics.or(w.i32, w.base(slot) + (t < 32 ? S_HOLD0 : S_HOLD1), 1 << (t & 31));
  } else {
    unref(w, slot); // this thread already counted once
  }
}

/** Drop a local reference; returns true if it was this thread's last one. */
export function unhold(w: World, slot: number): boolean {
  const n = --localRefs[slot]!;
  if (n > 0) return false;
  if (n < 0) {
    localRefs[slot] = 0;
    throw fail('EINVAL', 'put', `slot ${slot} released more often than it was held`);
  }
  const t = tid();
  Atomics.and(w.i32, w.base(slot) + (t < 32 ? S_HOLD0 : S_HOLD1), ~(1 << (t & 31)));
  unref(w, slot);
  return true;
}

/** This thread's local reference count on `slot`. */
export function localHolds(slot: number): number {
  return localRefs[slot] ?? 0;
}

/** Every slot this thread holds (for self-cleanup at thread exit). */
export function heldSlots(): number[] {
  const out: number[] = [];
  for (let s = 0; s < localRefs.length; s++) if (localRefs[s]! > 0) out.push(s);
  return out;
}

/** Drop every local reference this thread has (thread exit). */
export function dropAllHolds(w: World): void {
  for (const s of heldSlots()) {
    localRefs[s] = 1;
    unhold(w, s);
  }
}

/**
 * Reaper side: clear dead thread `t`'s holder bit everywhere and drop the
 * reference each bit stood for. Returns how many objects it let go of.
 */
export function reclaimHolds(w: World, t: number): number {
  const word = t < 32 ? S_HOLD0 : S_HOLD1;
  const bit = 1 << (t & 31);
  let n = 0;
  const used = Atomics.load(w.i32, H_BUMP);
  for (let s = 0; s < used; s++) {
    const at = w.base(s) + word;
    if (!(Atomics.load(w.i32, at) & bit)) continue;
    if (!(Atomics.and(w.i32, at, ~bit) & bit)) continue;
    n++;
    unref(w, s);
  }
  return n;
}

/** Kind of `slot` (Kind.Free if unused). */
export function slotKind(w: World, slot: number): Kind {
  return Atomics.load(w.i32, w.base(slot) + S_KIND) as Kind;
}

/** Generation of `slot`: changes every time the slot is freed. */
export function slotGen(w: World, slot: number): number {
  return Atomics.load(w.i32, w.base(slot) + S_GEN);
}

/** Shared reference count of `slot` (for tests and debug listings). */
export function slotRefs(w: World, slot: number): number {
  return Atomics.load(w.i32, w.base(slot) + S_REFS);
}

/** Live objects, in total or of one kind: the leak check's measure. */
export function liveObjects(kind?: Kind): number {
  const w = world();
  return Atomics.load(w.i32, kind === undefined ? H_LIVE : H_LIVE_BY_KIND + kind);
}

/** Copy a string into `words` words at `at` as NUL-terminated UTF-8, cut like strscpy. */
export function writeName(w: World, at: number, words: number, name: string): void {
  const bytes = at * 4;
  const max = words * 4;
  w.u8.fill(0, bytes, bytes + max);
  const enc = new TextEncoder().encode(name);
  let n = Math.min(enc.length, max - 1);
  while (n > 0 && (enc[n]! & 0xc0) === 0x80) n--; // never cut inside a UTF-8 sequence
  w.u8.set(enc.subarray(0, n), bytes);
}

const decoder = new TextDecoder();
/** Read a NUL-terminated name written by `writeName`. */
export function readName(w: World, at: number, words: number): string {
  const bytes = at * 4;
  let end = bytes;
  const max = bytes + words * 4;
  while (end < max && w.u8[end] !== 0) end++;
  return decoder.decode(w.u8.slice(bytes, end));
}
