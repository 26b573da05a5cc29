/**
 * DOC: objects in flight between threads
 *
 * A packet carries references to shared objects from one thread to another, the
 * way SCM_RIGHTS carries fds: while in flight the packet itself holds a reference
 * to every object (so the sender may drop its own at once), and it can be received
 * exactly once. The token is a plain structured-cloneable object: post it to a
 * Worker (or back) with `postMessage`. It names the shared table by its id only
 * (not its memory, which would be cloned on every post): the receiver must have
 * joined that table (every Worker created after dmabuf was loaded has; see
 * world.ts for the others).
 *
 * A packet that is never received keeps its objects alive (as an fd stuck in a
 * socket buffer would); there is no JS hook that sees a message being dropped.
 */
import { fail } from '../errors.js';
import { adoptAsHold, allocSlot, Kind, onRelease, ref, S_DATA, S_NEXT, slotGen, slotKind, unref } from './slab.js';
import { H_TABLE_ID, world, type World } from './world.js';

const PK_STATE = S_DATA + 0;
const PK_COUNT = S_DATA + 1;
const PK_ENTRIES = S_DATA + 2;
const PER_SLOT = 64 - PK_ENTRIES;
/** SCM_MAX_FD: the most objects one packet may carry. */
export const MAX_PACKET_OBJECTS = 253;

const UNRECEIVED = 0;
const RECEIVED = 1;

/** The structured-cloneable token of a packet. */
export interface Packet {
  readonly __dmabuf: 'packet';
  /** The shared table's 64-bit id, low and high words. */
  readonly table0: number;
  readonly table1: number;
  readonly slot: number;
  readonly gen: number;
  readonly count: number;
}

/**
 * Pack references to `slots` (the caller holds each; the packet takes its own).
 * @throws EINVAL for more than MAX_PACKET_OBJECTS, ENOMEM when the table is full.
 */
export function packSlots(slots: readonly number[], syscall: string): Packet {
  if (slots.length > MAX_PACKET_OBJECTS) throw fail('EINVAL', syscall, `at most ${MAX_PACKET_OBJECTS} objects per packet`);
  const w = world();
  const chain: number[] = [];
  try {
    do chain.push(allocSlot(w, Kind.Packet, syscall));
    while (chain.length * PER_SLOT < slots.length);
  } catch (e) {
    for (const s of chain) unref(w, s);
    throw e;
  }
  for (let c = 0; c < chain.length; c++) {
    const b = w.base(chain[c]!);
    const from = c * PER_SLOT;
    const n = Math.min(PER_SLOT, slots.length - from);
    w.i32[b + S_NEXT] = c + 1 < chain.length ? chain[c + 1]! : -1;
    w.i32[b + PK_COUNT] = n;
    for (let i = 0; i < n; i++) {
      const s = slots[from + i]!;
      ref(w, s);
      w.i32[b + PK_ENTRIES + i] = s;
    }
  }
  const head = chain[0]!;
  // A plain object (freezing costs more than the rest of packing): the receiver checks every field anyway.
  return {
    __dmabuf: 'packet', table0: w.i32[H_TABLE_ID]!, table1: w.i32[H_TABLE_ID + 1]!, slot: head, gen: slotGen(w, head),
    count: slots.length,
  };
}

function isPacket(p: unknown): p is Packet {
  if (typeof p !== 'object' || p === null) return false;
  const o = p as Record<string, unknown>;
  return o['__dmabuf'] === 'packet' && Number.isInteger(o['table0']) && Number.isInteger(o['table1']) && Number.isInteger(o['slot'])
    && Number.isInteger(o['gen']) && Number.isInteger(o['count']);
}

/**
 * Receive a packet: this thread now holds every object in it (one hold each).
 * @returns the object slots, in the order they were packed.
 * @throws EINVAL if it is not a packet, belongs to another table (this thread never
 * joined the sender's), or was already received.
 */
export function unpackSlots(p: unknown, syscall: string): number[] {
  if (!isPacket(p)) throw fail('EINVAL', syscall, 'not an fd packet');
  const w = world();
  if (!w.hasId(p.table0, p.table1)) {
    throw fail('EINVAL', syscall, 'packet comes from another shared table: this thread was started before its parent '
      + 'loaded dmabuf (import it before creating Workers, or post worldMemory() and call adoptWorld() first)');
  }
  if (p.slot < 0 || p.slot >= w.capacity || slotKind(w, p.slot) !== Kind.Packet || slotGen(w, p.slot) !== p.gen) {
    throw fail('EINVAL', syscall, 'packet was already received');
  }
  const b = w.base(p.slot);
  if (Atomics.compareExchange(w.i32, b + PK_STATE, UNRECEIVED, RECEIVED) !== UNRECEIVED) {
    throw fail('EINVAL', syscall, 'packet was already received');
  }
  const out: number[] = [];
  for (let s = p.slot; s >= 0; s = w.i32[w.base(s) + S_NEXT]!) {
    const sb = w.base(s);
    const n = w.i32[sb + PK_COUNT]!;
    for (let i = 0; i < n; i++) {
      const obj = w.i32[sb + PK_ENTRIES + i]!;
      adoptAsHold(w, obj); // the packet's reference becomes this thread's
      out.push(obj);
    }
    w.i32[sb + PK_COUNT] = 0;
  }
  unrefChain(w, p.slot);
  return out;
}

function unrefChain(w: World, head: number): void {
  const chain: number[] = [];
  for (let s = head; s >= 0; s = w.i32[w.base(s) + S_NEXT]!) chain.push(s);
  for (const s of chain) unref(w, s);
}

/* An unreceived packet that is freed (never happens today) drops its objects. */
onRelease(Kind.Packet, (w, slot) => {
  const b = w.base(slot);
  const n = w.i32[b + PK_COUNT]!;
  for (let i = 0; i < n; i++) unref(w, w.i32[b + PK_ENTRIES + i]!);
});
