/**
 * DOC: dma_fence_array — one fence for many
 *
 * An array fence signals when all of its members have signalled, or with
 * `signalOnAny` when any one has (kernel-contract §4.2). Its seqno compares as
 * 32-bit. Members may not be containers (arrays or chains): flatten with
 * `unwrap` first. Names: "dma_fence_array" / "unbound".
 *
 * Errors: the array signals with the error of the first member that completed
 * with one, "first" meaning the earliest signal timestamp (completion order is
 * the only order threads agree on); 0 if no member failed.
 *
 * Shared across threads: the member list lives in shared memory and whether the
 * array is done is computed from its members' shared state, so any thread that
 * asks (`isSignaled`, a wait, poll) can complete it. A thread that adds a callback
 * or waits asynchronously installs its own callbacks on the members (the kernel's
 * enable_signaling), and the last member to fire signals the array.
 *
 * Differences JS forces: `create` takes its own references on the members; the
 * caller keeps (and must put) its own, rather than handing them over.
 */
import {
  DmaFence, fenceAdoptSlot, fenceFromSlot, fenceRef,
} from './dma-fence.js';
import {
  allocFenceSlot, F_AUX, F_ERROR, FenceKind, isContainerKind, registerFenceKind, slotDone, slotFenceKind, slotSignaled, slotTimestampNs,
  traceSlot,
} from './dma-fence-slot.js';
import { fail } from './errors.js';
import { listCreate, listEntries, listFree } from './shared/list.js';
import { unref } from './shared/slab.js';
import { world, type World } from './shared/world.js';
import { tracing } from './trace.js';

const AR_LIST = F_AUX + 0;
const AR_NUM = F_AUX + 1;
const AR_ANY = F_AUX + 2;

/** True if `f` is a container (array or chain), which arrays and resvs refuse. */
export function isContainer(f: DmaFence): boolean {
  return isContainerKind(f.kind);
}

/** to_dma_fence_array: true if `f` is an array fence. */
export function isDmaFenceArray(f: DmaFence): boolean {
  return f.kind === FenceKind.Array;
}

function memberSlots(w: World, slot: number): number[] {
  return listEntries(w, w.i32[w.base(slot) + AR_LIST]!);
}

function arrayDone(w: World, slot: number): boolean {
  const b = w.base(slot);
  const need = w.i32[b + AR_ANY] ? 1 : w.i32[b + AR_NUM]!;
  let n = 0;
  for (const m of memberSlots(w, slot)) if (slotDone(w, m) && ++n >= need) return true;
  return false;
}

function firstError(w: World, slot: number): number {
  let err = 0;
  let at = Infinity;
  for (const m of memberSlots(w, slot)) {
    if (!slotSignaled(w, m)) continue;
    const e = w.i32[w.base(m) + F_ERROR]!;
    const ts = slotTimestampNs(w, m);
    if (e < 0 && ts < at) {
      err = e;
      at = ts;
    }
  }
  return err;
}

/** enable_signaling in this thread: a callback on every member; the last to fire signals the array. */
function enableArray(array: DmaFence): boolean {
  const w = world();
  if (arrayDone(w, array.slot)) return false;
  array.get(); // held by the member callbacks until the array is done
  let released = false;
  const onMember = (m: DmaFence): void => {
    m.put();
    if (released || !array.isSignaled()) return;
    released = true;
    array.put();
  };
  for (const m of memberSlots(w, array.slot)) {
    const view = fenceFromSlot(m);
    if (view.addCallback(onMember) < 0) view.put();
  }
  if (!released && array.isSignaled()) {
    released = true;
    array.put();
  }
  return true;
}

registerFenceKind(FenceKind.Array, {
  leaf: false,
  signaled: arrayDone,
  enable: enableArray,
  signalError: firstError,
  setDeadline(array, deadlineNs) {
    for (const m of memberSlots(world(), array.slot)) {
      const view = fenceFromSlot(m);
      view.setDeadline(deadlineNs);
      view.put();
    }
  },
  release(w, slot) {
    const head = w.i32[w.base(slot) + AR_LIST]!;
    for (const m of listEntries(w, head)) unref(w, m);
    listFree(w, head);
  },
});

/**
 * dma_fence_array_create: one fence in `context`/`seqno` over `fences`.
 * @throws EINVAL for no fences or a container member; ENOMEM when the table is full.
 */
export function dmaFenceArrayCreate(
  fences: readonly DmaFence[], context: number | bigint, seqno: number | bigint, signalOnAny: boolean,
): DmaFence {
  if (!Array.isArray(fences)) throw new TypeError('dma_fence_array_create: fences must be an array');
  for (const f of fences) if (!(f instanceof DmaFence)) throw new TypeError('dma_fence_array_create: not a DmaFence');
  if (fences.length === 0) throw fail('EINVAL', 'dma_fence_array_create', 'an array needs at least one fence');
  if (fences.some(isContainer)) throw fail('EINVAL', 'dma_fence_array_create', 'arrays cannot contain containers; unwrap first');
  const w = world();
  const ctx = BigInt(context);
  const slot = allocFenceSlot(FenceKind.Array, ctx, BigInt(seqno), false, 'dma_fence_array', 'unbound', 'dma_fence_array_create');
  let head: number;
  try {
    head = listCreate(w, fences.map((f) => f.slot), 'dma_fence_array_create');
  } catch (e) {
    unref(w, slot);
    throw e;
  }
  const b = w.base(slot);
  for (const f of fences) fenceRef(f);
  w.i32[b + AR_LIST] = head;
  w.i32[b + AR_NUM] = fences.length;
  w.i32[b + AR_ANY] = signalOnAny ? 1 : 0;
  if (tracing) traceSlot('dma_fence_init', w, slot);
  return fenceAdoptSlot(slot);
}

/** The members of array `f` as new references (a non-array is its own single member). */
export function dmaFenceArrayMembers(f: DmaFence): DmaFence[] {
  if (!isDmaFenceArray(f)) return [f.get()];
  return memberSlots(world(), f.slot).map((m) => fenceFromSlot(m));
}

/** Member slots of array slot `slot` (for unwrap). @internal */
export function arrayMemberSlots(w: World, slot: number): number[] {
  return slotFenceKind(w, slot) === FenceKind.Array ? memberSlots(w, slot) : [slot];
}

/** dma_fence_match_context: every member of an array (or the fence itself) is in `context`. */
export function dmaFenceMatchContext(f: DmaFence, context: bigint): boolean {
  if (!isDmaFenceArray(f)) return f.context === context;
  const members = dmaFenceArrayMembers(f);
  const all = members.every((m) => m.context === context);
  for (const m of members) m.put();
  return all;
}
