/**
 * DOC: dma_fence_chain — timeline points
 *
 * A chain link wraps one fence and points to the previous link (or a plain
 * fence); a link is signalled when its fence and every older one are
 * (kernel-contract §4.1). Chains compare seqnos as 64-bit. A link continues its
 * predecessor's context when its seqno is later; otherwise it starts a new
 * context and never goes backwards (seqno = max(prev, seqno)). Names:
 * "dma_fence_chain" / "unbound".
 *
 * `walk` garbage-collects: a signalled predecessor is unlinked by pointing past
 * it. `findSeqno` finds the link whose completion signals a timeline point.
 *
 * Shared across threads: links, their `prev` pointers and contained fences live in
 * shared memory. All `prev` rewrites (garbage collection, release) happen under one
 * world-wide lock, which stands in for the kernel's RCU + cmpxchg: without RCU a
 * thread could otherwise take a reference on a slot another thread just freed.
 *
 * Differences JS forces: `dmaFenceChainInit` takes its own references on `prev`
 * and `fence`; the caller keeps (and puts) its own.
 */
import {
  DmaFence, fenceAdoptSlot, fenceFromSlot, fenceRef,
} from './dma-fence.js';
import {
  allocFenceSlot, F_AUX, FenceKind, registerFenceKind, slotDone, slotFenceKind, traceSlot,
} from './dma-fence-slot.js';
import { fail } from './errors.js';
import { mutexLock, mutexUnlock } from './shared/mutex.js';
import { ref, S_REFS, unref } from './shared/slab.js';
import { H_CHAIN_LOCK, world, type World } from './shared/world.js';
import { tracing } from './trace.js';

const CH_PREV = F_AUX + 0;
const CH_FENCE = F_AUX + 1;
const CH_PREV_SEQ_LO = F_AUX + 2;
const CH_PREV_SEQ_HI = F_AUX + 3;

/** to_dma_fence_chain: true if `f` is a chain link. */
export function isDmaFenceChain(f: DmaFence): boolean {
  return f.kind === FenceKind.Chain;
}

function isChainSlot(w: World, slot: number): boolean {
  return slotFenceKind(w, slot) === FenceKind.Chain;
}

/** dma_fence_chain_contained: the fence a link wraps, or the slot itself for a non-chain. */
export function chainContainedSlot(w: World, slot: number): number {
  return isChainSlot(w, slot) ? w.i32[w.base(slot) + CH_FENCE]! : slot;
}

function prevSeqno(w: World, slot: number): bigint {
  const b = w.base(slot);
  return (BigInt(w.i32[b + CH_PREV_SEQ_HI]! >>> 0) << 32n) | BigInt(w.i32[b + CH_PREV_SEQ_LO]! >>> 0);
}

/** The chain's `signaled` op: this link's fence and every older one are done. */
function chainDone(w: World, slot: number): boolean {
  mutexLock(w, H_CHAIN_LOCK);
  try {
    let s = slot;
    while (s >= 0) {
      if (!slotDone(w, chainContainedSlot(w, s))) return false;
      s = isChainSlot(w, s) ? w.i32[w.base(s) + CH_PREV]! : -1;
    }
    return true;
  } finally {
    mutexUnlock(w, H_CHAIN_LOCK);
  }
}

/**
 * dma_fence_chain_walk on slots: the next older link with a new internal
 * reference (-1 at the end or if `slot` is not a chain), unlinking signalled
 * predecessors on the way. Does not consume a reference on `slot`.
 */
export function chainWalkSlot(w: World, slot: number): number {
  if (!isChainSlot(w, slot)) return -1;
  const drop: number[] = [];
  let prev: number;
  mutexLock(w, H_CHAIN_LOCK);
  try {
    const at = w.base(slot) + CH_PREV;
    for (;;) {
      prev = w.i32[at]!;
      if (prev < 0) break;
      let replacement: number;
      if (isChainSlot(w, prev)) {
        if (!slotDone(w, chainContainedSlot(w, prev))) break;
        replacement = w.i32[w.base(prev) + CH_PREV]!;
        if (replacement >= 0) ref(w, replacement);
      } else {
        if (!slotDone(w, prev)) break;
        replacement = -1;
      }
      w.i32[at] = replacement;
      drop.push(prev);
    }
    if (prev >= 0) ref(w, prev);
  } finally {
    mutexUnlock(w, H_CHAIN_LOCK);
  }
  for (const d of drop) unref(w, d);
  return prev;
}

/** enable_signaling in this thread: follow the first unsignalled fence down the chain. */
function enableChain(chain: DmaFence): boolean {
  const w = world();
  if (chainDone(w, chain.slot)) return false;
  chain.get();
  const arm = (): void => {
    const pending = firstPendingContained(w, chain.slot);
    if (pending < 0) {
      chain.isSignaled();
      chain.put();
      return;
    }
    const view = fenceFromSlot(pending);
    if (view.addCallback(() => {
      view.put();
      arm();
    }) < 0) {
      view.put();
      arm();
    }
  };
  arm();
  return true;
}

function firstPendingContained(w: World, slot: number): number {
  mutexLock(w, H_CHAIN_LOCK);
  try {
    for (let s = slot; s >= 0; s = isChainSlot(w, s) ? w.i32[w.base(s) + CH_PREV]! : -1) {
      const c = chainContainedSlot(w, s);
      if (!slotDone(w, c)) return c;
    }
    return -1;
  } finally {
    mutexUnlock(w, H_CHAIN_LOCK);
  }
}

/** Release: unlink predecessors we hold the last reference to iteratively (no deep recursion). */
function releaseChain(w: World, slot: number): void {
  const b = w.base(slot);
  const drop: number[] = [];
  mutexLock(w, H_CHAIN_LOCK);
  let prev = w.i32[b + CH_PREV]!;
  while (prev >= 0 && isChainSlot(w, prev) && Atomics.load(w.i32, w.base(prev) + S_REFS) === 1) {
    const next = w.i32[w.base(prev) + CH_PREV]!;
    w.i32[w.base(prev) + CH_PREV] = -1;
    drop.push(prev);
    prev = next;
  }
  w.i32[b + CH_PREV] = -1;
  mutexUnlock(w, H_CHAIN_LOCK);
  for (const d of drop) unref(w, d);
  if (prev >= 0) unref(w, prev);
  unref(w, w.i32[b + CH_FENCE]!);
}

registerFenceKind(FenceKind.Chain, {
  leaf: false,
  signaled: chainDone,
  enable: enableChain,
  setDeadline(chain, deadlineNs) {
    const w = world();
    for (const link of chainLinks(chain)) {
      const c = fenceFromSlot(chainContainedSlot(w, link.slot));
      c.setDeadline(deadlineNs);
      c.put(); // `link` is the iterator's: it drops it when it advances
    }
  },
  release: releaseChain,
});

/**
 * dma_fence_chain_init: a new link for `fence` after `prev` (a chain, a plain fence, or null).
 * @throws EINVAL if `fence` is itself a chain; ENOMEM when the table is full.
 */
export function dmaFenceChainInit(prev: DmaFence | null, fence: DmaFence, seqno: number | bigint): DmaFence {
  if (prev !== null && !(prev instanceof DmaFence)) throw new TypeError('dma_fence_chain_init: prev must be a DmaFence or null');
  if (!(fence instanceof DmaFence)) throw new TypeError('dma_fence_chain_init: fence must be a DmaFence');
  if (isDmaFenceChain(fence)) throw fail('EINVAL', 'dma_fence_chain_init', 'a chain link cannot contain a chain');
  let seq = BigInt(seqno);
  if (seq < 0n || seq > 0xffffffffffffffffn) throw fail('EINVAL', 'dma_fence_chain_init', 'seqno is not a u64');
  let context: bigint;
  let prevSeq = 0n;
  if (prev && isDmaFenceChain(prev) && seq > prev.seqno) {
    context = prev.context;
    prevSeq = prev.seqno;
  } else {
    context = DmaFence.contextAlloc(1);
    if (prev && isDmaFenceChain(prev) && prev.seqno > seq) seq = prev.seqno;
  }
  const w = world();
  const slot = allocFenceSlot(FenceKind.Chain, context, seq, true, 'dma_fence_chain', 'unbound', 'dma_fence_chain_init');
  const b = w.base(slot);
  w.i32[b + CH_PREV] = prev ? fenceRef(prev) : -1;
  w.i32[b + CH_FENCE] = fenceRef(fence);
  w.i32[b + CH_PREV_SEQ_LO] = Number(prevSeq & 0xffffffffn) | 0;
  w.i32[b + CH_PREV_SEQ_HI] = Number(prevSeq >> 32n) | 0;
  if (tracing) traceSlot('dma_fence_init', w, slot);
  return fenceAdoptSlot(slot);
}

/** dma_fence_chain_contained: a new reference to the fence a link wraps (the fence itself if not a chain). */
export function dmaFenceChainContained(f: DmaFence): DmaFence {
  return fenceFromSlot(chainContainedSlot(world(), f.slot));
}

/** The `prev_seqno` of a link (0 if it started a new context). */
export function dmaFenceChainPrevSeqno(f: DmaFence): bigint {
  return isDmaFenceChain(f) ? prevSeqno(world(), f.slot) : 0n;
}

/**
 * dma_fence_chain_walk: the next older link as a new reference, or null at the
 * end; signalled predecessors are garbage-collected on the way. Unlike the
 * kernel's, it does not consume the caller's reference on `f`.
 */
export function dmaFenceChainWalk(f: DmaFence): DmaFence | null {
  const w = world();
  const next = chainWalkSlot(w, f.slot);
  return next < 0 ? null : fenceAdoptSlot(next);
}

/**
 * dma_fence_chain_for_each: every link from `head` down, each a reference that
 * the iterator drops when it advances (call `get()` to keep one).
 */
export function* chainLinks(head: DmaFence): Generator<DmaFence> {
  let cur: DmaFence | null = head.get();
  try {
    while (cur) {
      yield cur;
      const next = dmaFenceChainWalk(cur);
      const done = cur;
      cur = null;
      done.put();
      cur = next;
    }
  } finally {
    cur?.put(); // the consumer stopped early
  }
}

/** Result of `dmaFenceChainFindSeqno`. */
export interface FindSeqnoResult {
  /** 0, or -EINVAL when the point is not reached by this chain yet. */
  ret: number;
  /** With ret 0: the link that signals the point (a new reference), or null if it and all older are signalled and collected. */
  fence: DmaFence | null;
}

/**
 * dma_fence_chain_find_seqno: the link whose completion signals timeline point
 * `point`. Point 0 returns `f` itself (a new reference).
 */
export function dmaFenceChainFindSeqno(f: DmaFence, point: number | bigint): FindSeqnoResult {
  const seqno = BigInt(point);
  if (seqno === 0n) return { ret: 0, fence: f.get() };
  if (!isDmaFenceChain(f) || f.seqno < seqno) return { ret: -22, fence: null };
  const w = world();
  const context = f.context;
  for (const link of chainLinks(f)) {
    if (link.context !== context || (isDmaFenceChain(link) && prevSeqno(w, link.slot) < seqno)) return { ret: 0, fence: link.get() };
  }
  return { ret: 0, fence: null };
}
