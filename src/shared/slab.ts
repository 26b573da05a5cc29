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
  H_ALLOC_LOCK, H_BUMP, H_FREE_HEAD, onJoin, SLOT_WORDS, T_CACHE_HEAD, THREAD_BASE, THREAD_WORDS, tid, world,
  type World,
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
/**
 * Every kind's wait word is S_BODY and its sleeper count S_SLEEPERS. The count is
 * *not* reset when a slot is reused: an async sleeper of an earlier generation may
 * still be parked and will decrement it when it wakes, so only a count that spans
 * generations stays balanced (a reset would let it go negative and a later
 * signal skip its notify).
 */
export const S_SLEEPERS = S_BODY + 1;
/**
 * First word a kind may use for its data. Words S_BODY and S_SLEEPERS are the
 * wait word and sleeper count in *every* kind: a stale sleeper of a fence may
 * decrement S_SLEEPERS after the slot was reused by any other kind, so no kind
 * may keep data there.
 */
export const S_DATA = S_BODY + 2;

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
  WwMutex = 9,
  /** A GEM object of the vgem DRM device (vgem.ts). */
  Gem = 10,
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

/*
 * Allocation: each thread keeps up to CACHE_MAX free slots of its own, linked
 * through S_NEXT from its thread-registry entry, so the common create/free pair
 * takes no lock. It refills CACHE_BATCH slots at a time from the global free list
 * (or the never-used tail) under the allocator lock, and spills half back when
 * full. The cache lives in shared memory: the reaper returns a dead thread's.
 */
const CACHE_MAX = 64;
const CACHE_BATCH = 32;
let cacheHead = -1;
let cacheLen = 0;
let cacheAt = -1; // word index of this thread's T_CACHE_HEAD
onJoin((_w, t) => {
  cacheAt = THREAD_BASE + t * THREAD_WORDS + T_CACHE_HEAD;
});

/** Mirror the cache into the thread registry. Plain stores: only this thread touches it while alive. */
function publishCache(w: World): void {
  w.i32[cacheAt + 1] = cacheLen;
  w.i32[cacheAt] = cacheHead;
}

function refillCache(w: World): void {
  mutexLock(w, H_ALLOC_LOCK);
  for (let n = 0; n < CACHE_BATCH; n++) {
    let slot = w.i32[H_FREE_HEAD]!;
    if (slot >= 0) w.i32[H_FREE_HEAD] = w.i32[w.base(slot) + S_NEXT]!;
    else if (w.i32[H_BUMP]! < w.capacity) slot = Atomics.add(w.i32, H_BUMP, 1);
    else break;
    w.i32[w.base(slot) + S_NEXT] = cacheHead;
    cacheHead = slot;
    cacheLen++;
  }
  publishCache(w);
  mutexUnlock(w, H_ALLOC_LOCK);
}

/** Move `n` slots from the front of `head`'s list onto the global free list; returns the rest. */
function spill(w: World, head: number, n: number): number {
  mutexLock(w, H_ALLOC_LOCK);
  let s = head;
  for (let i = 0; i < n && s >= 0; i++) {
    const next = w.i32[w.base(s) + S_NEXT]!;
    w.i32[w.base(s) + S_NEXT] = w.i32[H_FREE_HEAD]!;
    w.i32[H_FREE_HEAD] = s;
    s = next;
  }
  mutexUnlock(w, H_ALLOC_LOCK);
  return s;
}

/** Reaper side: give dead thread `t`'s cached free slots back to everyone. */
export function reclaimCache(w: World, t: number): void {
  const at = THREAD_BASE + t * THREAD_WORDS + T_CACHE_HEAD;
  const head = Atomics.exchange(w.i32, at, -1);
  Atomics.store(w.i32, at + 1, 0);
  spill(w, head, Infinity);
}

/**
 * Allocate a slot of `kind` with one *internal* reference (the caller converts it
 * to a hold with `adoptAsHold` when a wrapper takes it). The header and the wait
 * word are zeroed; the body (from S_DATA) too unless `zeroBody` is false, for
 * kinds that write every body word they read (fences: the hot path).
 * The sleeper count is never touched (see S_SLEEPERS). Throws ENOMEM when full.
 */
export function allocSlot(w: World, kind: Kind, syscall: string, zeroBody = true): number {
  if (cacheHead < 0) refillCache(w);
  const slot = cacheHead;
  if (slot < 0) throw fail('ENOMEM', syscall, `shared object table is full (${w.capacity} slots; raise DMABUF_SLOTS)`);
  const b = w.base(slot);
  cacheHead = w.i32[b + S_NEXT]!;
  cacheLen--;
  publishCache(w);
  // Plain stores: no other thread can reach the slot until it is published through an atomic.
  const i32 = w.i32;
  i32[b + S_HOLD0] = 0;
  i32[b + S_HOLD1] = 0;
  i32[b + S_LOCK] = 0;
  i32[b + S_NEXT] = 0;
  i32[b + S_PREV] = 0;
  i32[b + S_BODY] = 0;
  if (zeroBody) i32.fill(0, b + S_DATA, b + SLOT_WORDS);
  i32[b + S_REFS] = 1;
  w.i32[b + S_KIND] = kind;
  return slot;
}

function freeSlot(w: World, slot: number): void {
  const b = w.base(slot);
  w.i32[b + S_KIND] = Kind.Free;
  w.i32[b + S_GEN] = (w.i32[b + S_GEN]! + 1) | 0;
  w.i32[b + S_NEXT] = cacheHead;
  cacheHead = slot;
  if (++cacheLen > CACHE_MAX) {
    cacheHead = spill(w, cacheHead, CACHE_MAX / 2);
    cacheLen -= CACHE_MAX / 2;
  }
  publishCache(w);
}

/** Take an internal reference (caller already holds one, directly or through an owner). */
export function ref(w: World, slot: number): void {
  Atomics.add(w.i32, w.base(slot) + S_REFS, 1);
}

/**
 * kref_get_unless_zero (dma_fence_get_rcu): an internal reference unless the count
 * already reached zero (the object is being released). For readers that reach an
 * object without holding a reference to it; they must re-check afterwards that it
 * is still the object they meant (the slot may have been reused).
 */
export function tryRef(w: World, slot: number): boolean {
  const at = w.base(slot) + S_REFS;
  for (;;) {
    const n = Atomics.load(w.i32, at);
    if (n <= 0) return false;
    if (Atomics.compareExchange(w.i32, at, n, n + 1) === n) return true;
  }
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
    // No JS call between the two atomics: a terminated worker stops only at a call or a
    // loop, so the reaper finds the holder bit set exactly when the count includes it.
    const b = w.base(slot);
    const t = tid();
    Atomics.add(w.i32, b + S_REFS, 1);
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
  // As in hold(): the bit and the count change with no JS call between them. (The release
  // of a last reference may still be cut short by a termination; that is not covered here.)
  const t = tid();
  const b = w.base(slot);
  Atomics.and(w.i32, b + (t < 32 ? S_HOLD0 : S_HOLD1), ~(1 << (t & 31)));
  if (Atomics.sub(w.i32, b + S_REFS, 1) === 1) release(w, slot);
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

const liveCounters: Array<(kind: Kind | undefined) => number> = [];

/** Count objects that live outside the table too (this thread's private fences). */
export function onCountLive(counter: (kind: Kind | undefined) => number): void {
  liveCounters.push(counter);
}

/**
 * Live objects, in total or of one kind: the leak check's measure. Every object in
 * the shared table (a scan), plus this thread's objects that have no slot yet.
 */
export function liveObjects(kind?: Kind): number {
  const w = world();
  let extra = 0;
  for (const c of liveCounters) extra += c(kind);
  const used = Atomics.load(w.i32, H_BUMP);
  let n = 0;
  for (let s = 0; s < used; s++) {
    const k = Atomics.load(w.i32, w.base(s) + S_KIND);
    if (k !== Kind.Free && (kind === undefined || k === kind)) n++;
  }
  return n + extra;
}

/** How much of the object table is in use. */
export interface TableStats {
  /** Slots in the table (DMABUF_SLOTS). */
  capacity: number;
  /**
   * Slots ever handed out: the part of the table that has been written, and so is
   * resident. Freed slots are reused before new ones are touched, so a workload
   * that frees what it allocates keeps this flat.
   */
  touched: number;
}

/** The object table's size and high-water mark (no scan). */
export function tableStats(): TableStats {
  const w = world();
  return { capacity: w.capacity, touched: Atomics.load(w.i32, H_BUMP) };
}

const encoder = new TextEncoder();
const nameCache = new Map<string, Int32Array>();
const NAME_CACHE_MAX = 1024;

/** `name` as NUL-terminated UTF-8 in `words` words, cut like strscpy; cached per distinct name. */
export function encodeName(name: string, words: number): Int32Array {
  const key = words === 8 ? name : `${words}:${name}`;
  let out = nameCache.get(key);
  if (out) return out;
  const bytes = new Uint8Array(words * 4);
  const enc = encoder.encode(name);
  let n = Math.min(enc.length, bytes.length - 1);
  while (n > 0 && (enc[n]! & 0xc0) === 0x80) n--; // never cut inside a UTF-8 sequence
  bytes.set(enc.subarray(0, n));
  out = new Int32Array(bytes.buffer);
  if (nameCache.size >= NAME_CACHE_MAX) nameCache.clear();
  nameCache.set(key, out);
  return out;
}

/** Copy a string into `words` words at word `at` as NUL-terminated UTF-8, cut like strscpy. */
export function writeName(w: World, at: number, words: number, name: string): void {
  w.i32.set(encodeName(name, words), at);
}

/** Copy a stored name between slots without decoding it. */
export function copyName(w: World, from: number, to: number, words: number): void {
  w.i32.copyWithin(to, from, from + words);
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
