/**
 * DOC: slot lists
 *
 * A list of numbers stored in shared memory as a chain of List slots
 * (LIST_PER_SLOT entries each). Containers use it for their members, reservation
 * objects for their fence arrays. The list stores numbers only; references to what
 * they name are the owner's business. A chain owns its tail: dropping the last
 * reference to the head frees every chunk (the head can be referenced by readers).
 */
import { allocSlot, Kind, onRelease, S_DATA, S_NEXT, unref } from './slab.js';
import type { World } from './world.js';

const LS_COUNT = S_DATA;
const LS_ENTRIES = S_DATA + 1;
export const LIST_PER_SLOT = 64 - LS_ENTRIES;

/** Store `entries` in new List slots; returns the head slot. @throws ENOMEM (nothing allocated then). */
export function listCreate(w: World, entries: readonly number[], syscall: string): number {
  const chain: number[] = [];
  try {
    do {
      const slot = allocSlot(w, Kind.List, syscall);
      w.i32[w.base(slot) + S_NEXT] = -1; // no tail yet: the release hook follows S_NEXT
      chain.push(slot);
    } while (chain.length * LIST_PER_SLOT < entries.length);
  } catch (e) {
    for (const s of chain) unref(w, s);
    throw e;
  }
  chain.forEach((slot, c) => {
    const b = w.base(slot);
    const part = entries.slice(c * LIST_PER_SLOT, (c + 1) * LIST_PER_SLOT);
    w.i32[b + S_NEXT] = c + 1 < chain.length ? chain[c + 1]! : -1;
    w.i32[b + LS_COUNT] = part.length;
    w.i32.set(part, b + LS_ENTRIES);
  });
  return chain[0]!;
}

/** The entries of list `head`, in order. */
export function listEntries(w: World, head: number): number[] {
  const out: number[] = [];
  for (let s = head; s >= 0; s = w.i32[w.base(s) + S_NEXT]!) {
    const b = w.base(s);
    const n = w.i32[b + LS_COUNT]!;
    for (let i = 0; i < n; i++) out.push(w.i32[b + LS_ENTRIES + i]!);
  }
  return out;
}

/** Entry `i` of list `head`, or -1 past the end. */
export function listAt(w: World, head: number, i: number): number {
  let s = head;
  while (s >= 0 && i >= LIST_PER_SLOT) {
    s = w.i32[w.base(s) + S_NEXT]!;
    i -= LIST_PER_SLOT;
  }
  if (s < 0) return -1;
  const b = w.base(s);
  return i < w.i32[b + LS_COUNT]! ? Atomics.load(w.i32, b + LS_ENTRIES + i) : -1;
}

/** Drop the owner's reference to list `head`; the chain is freed with its last reference. */
export function listFree(w: World, head: number): void {
  unref(w, head);
}

/** A list of `capacity` entries, all 0. @throws ENOMEM (nothing allocated then). */
export function listAlloc(w: World, capacity: number, syscall: string): number {
  return listCreate(w, new Array<number>(Math.max(1, capacity)).fill(0), syscall);
}

/** Set entry `i` of list `head` (within its capacity). */
export function listSet(w: World, head: number, i: number, value: number): void {
  let s = head;
  while (i >= LIST_PER_SLOT) {
    s = w.i32[w.base(s) + S_NEXT]!;
    i -= LIST_PER_SLOT;
  }
  Atomics.store(w.i32, w.base(s) + LS_ENTRIES + i, value);
}

/* A chunk owns the next one: freeing the head frees the chain, iteratively. */
onRelease(Kind.List, (w, slot) => {
  let next = w.i32[w.base(slot) + S_NEXT]!;
  w.i32[w.base(slot) + S_NEXT] = -1;
  while (next >= 0) {
    const b = w.base(next);
    if (Atomics.load(w.i32, b + 2 /* S_REFS */) !== 1) {
      unref(w, next);
      return;
    }
    const after = w.i32[b + S_NEXT]!;
    w.i32[b + S_NEXT] = -1; // freed below without recursing into the rest
    unref(w, next);
    next = after;
  }
});
