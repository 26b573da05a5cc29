/**
 * DOC: slot lists
 *
 * A fixed list of slot numbers stored in shared memory as a chain of List slots
 * (LIST_PER_SLOT entries each). Containers use it for their members. The list
 * stores numbers only; references are the owner's business.
 */
import { allocSlot, Kind, S_DATA, S_NEXT, unref } from './slab.js';
import type { World } from './world.js';

const LS_COUNT = S_DATA;
const LS_ENTRIES = S_DATA + 1;
export const LIST_PER_SLOT = 64 - LS_ENTRIES;

/** Store `entries` in new List slots; returns the head slot. @throws ENOMEM (nothing allocated then). */
export function listCreate(w: World, entries: readonly number[], syscall: string): number {
  const chain: number[] = [];
  try {
    do chain.push(allocSlot(w, Kind.List, syscall));
    while (chain.length * LIST_PER_SLOT < entries.length);
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
  return i < w.i32[b + LS_COUNT]! ? w.i32[b + LS_ENTRIES + i]! : -1;
}

/** Free the List slots of `head` (not the slots they name). */
export function listFree(w: World, head: number): void {
  const chain: number[] = [];
  for (let s = head; s >= 0; s = w.i32[w.base(s) + S_NEXT]!) chain.push(s);
  for (const s of chain) unref(w, s);
}
