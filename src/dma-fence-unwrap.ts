/**
 * DOC: unwrap and merge
 *
 * `unwrap` visits every leaf fence below a fence: it walks a chain (garbage-
 * collecting signalled links as `walk` does) and, in each link, the members of an
 * array; a plain fence yields itself (kernel-contract §4.3).
 *
 * `unwrapMerge` flattens several fences into one: it keeps the *unsignalled*
 * leaves, remembering the latest timestamp among the signalled ones. None left →
 * a private signalled stub with that timestamp; one → that fence; more → sorted
 * by context (the later fence first within a context), only the latest fence
 * per context kept (`dedupArray`), and if more than one remains, a new
 * dma_fence_array (new context, seqno 1, signal on all).
 */
import { arrayMemberSlots, dmaFenceArrayCreate } from './dma-fence-array.js';
import { chainContainedSlot, chainWalkSlot } from './dma-fence-chain.js';
import {
  DmaFence, fenceFromSlot,
} from './dma-fence.js';
import { fail } from './errors.js';
import { ref, unref } from './shared/slab.js';
import { world } from './shared/world.js';

/**
 * dma_fence_unwrap_for_each: every leaf fence below `head`. Each yielded fence
 * is a reference the iterator drops when it advances (call `get()` to keep one).
 */
export function* unwrap(head: DmaFence): Generator<DmaFence> {
  if (!(head instanceof DmaFence)) throw new TypeError('unwrap: not a DmaFence');
  const w = world();
  let link = head.slot;
  ref(w, link);
  try {
    while (link >= 0) {
      for (const leaf of arrayMemberSlots(w, chainContainedSlot(w, link))) {
        const view = fenceFromSlot(leaf);
        try {
          yield view;
        } finally {
          view.put();
        }
      }
      const next = chainWalkSlot(w, link);
      unref(w, link);
      link = next;
    }
  } finally {
    if (link >= 0) unref(w, link);
  }
}

/** Order of `fence_cmp`: by context, then the later fence first. */
function fenceCmp(a: DmaFence, b: DmaFence): number {
  if (a.context !== b.context) return a.context < b.context ? -1 : 1;
  if (b.isLater(a)) return 1;
  if (a.isLater(b)) return -1;
  return 0;
}

/**
 * dma_fence_dedup_array: sort by context and keep only the most recent fence of
 * each context. Dropped duplicates are put (the caller gave references).
 * @returns the kept fences, in order.
 */
export function dedupArray(fences: DmaFence[]): DmaFence[] {
  const sorted = [...fences].sort(fenceCmp);
  const out: DmaFence[] = [];
  for (const f of sorted) {
    const last = out[out.length - 1];
    if (last && last.context === f.context) f.put();
    else out.push(f);
  }
  return out;
}

/**
 * dma_fence_unwrap_merge: one fence that signals when all of `fences` have.
 * @returns a new reference. @throws EINVAL for no fences; ENOMEM when the table is full.
 */
export function unwrapMerge(...fences: DmaFence[]): DmaFence {
  if (fences.length === 0) throw fail('EINVAL', 'dma_fence_unwrap_merge', 'nothing to merge');
  let timestamp = 0n;
  const pending: DmaFence[] = [];
  try {
    for (const f of fences) {
      for (const leaf of unwrap(f)) {
        if (!leaf.isSignaled()) pending.push(leaf.get());
        else if (leaf.timestamp() > timestamp) timestamp = leaf.timestamp();
      }
    }
    if (pending.length === 0) return DmaFence.allocatePrivateStub(timestamp);
    if (pending.length === 1) return pending.pop()!;
    const kept = dedupArray(pending.splice(0));
    pending.push(...kept);
    if (kept.length === 1) return pending.pop()!;
    return dmaFenceArrayCreate(kept, DmaFence.contextAlloc(1), 1, false);
  } finally {
    for (const f of pending) f.put();
  }
}

