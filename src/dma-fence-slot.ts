/**
 * DOC: a fence in shared memory
 *
 * What a fence is in the shared table, apart from any thread's view of it: the
 * slot layout, the registry of fence kinds (driver, stub, sw_sync, array,
 * chain), and the operations every thread may run on a slot — claim and publish
 * a signal, peek whether it is done, compare seqnos, and sleep on its state word.
 * `DmaFence` (dma-fence.ts) is built on these; so are the fence kinds, the
 * reservation objects and the uapi's fd paths, which need no view per call.
 *
 * Signalling is two steps so that timestamps are never torn: claim (state 0 → 2,
 * one winner), then publish (timestamp, state 2 → 1, wake sleepers only if any
 * counted themselves, bump the multi-wait epoch only if anyone multi-waits).
 */
import type { DmaFence } from './dma-fence.js';
import { allocSlot, Kind, onRelease, readName, S_BODY, S_SLEEPERS, writeName } from './shared/slab.js';
import {
  abortRace, bumpEpoch, keepAlive, ktimeNowNs, nowMs, orAborted, sleepOnWordAsync, spinEnabled, spinLearn, spinWhile,
} from './shared/wait.js';
import { tid, world, type World } from './shared/world.js';
import { traceNow, traceRecord, tracing, type TraceEventName, type TraceFence } from './trace.js';

/* ---- slot layout of every fence ---- */

/** 0 pending, 1 signalled, 2 being signalled (claimed, timestamp not yet published). */
export const F_STATE = S_BODY + 0;
export const F_SLEEPERS = S_SLEEPERS;
export const F_FLAGS = S_BODY + 2;
export const F_ERROR = S_BODY + 3;
export const F_CTX_LO = S_BODY + 4;
export const F_CTX_HI = S_BODY + 5;
export const F_SEQ_LO = S_BODY + 6;
export const F_SEQ_HI = S_BODY + 7;
/** Signal time, int64 nanoseconds as [lo, hi] words 16-17 (exact for any ktime). */
export const F_TIMESTAMP = S_BODY + 8;
/** Int64 nanoseconds (earliest deadline asked for; NO_DEADLINE if none), words 18-19. */
export const F_DEADLINE = S_BODY + 10;
export const F_FKIND = S_BODY + 12;
export const F_OWNER = S_BODY + 13;
/** Words 22..29 belong to the fence kind (sw_sync, array, chain). */
export const F_AUX = S_BODY + 14;
export const F_DRIVER_NAME = 32;
export const F_TIMELINE_NAME = 40;
export const NAME_WORDS = 8;

/** Stored in F_DEADLINE while no deadline was ever set (a deadline that far out is "never" anyway). */
export const NO_DEADLINE = 0x7fffffffffffffffn;
export const STATE_PENDING = 0;
export const STATE_SIGNALED = 1;
export const STATE_SIGNALING = 2;

/** `enum dma_fence_flag_bits`, as far as a user can observe them. */
export const DMA_FENCE_FLAG_ENABLE_SIGNAL = 1 << 0;
export const DMA_FENCE_FLAG_SEQNO64 = 1 << 1;
/** First bit free for fence implementations (sw_sync: "has deadline"). */
export const DMA_FENCE_FLAG_USER_BITS = 1 << 8;

/** Which implementation a fence slot belongs to. */
export const enum FenceKind {
  Driver = 1,
  Stub = 2,
  SwSync = 3,
  Array = 4,
  Chain = 5,
}

/** Containers (arrays and chains): what arrays and reservation objects refuse. */
export function isContainerKind(k: FenceKind): boolean {
  return k === FenceKind.Array || k === FenceKind.Chain;
}

/**
 * What a fence kind implemented in another module (sw_sync, array, chain) tells
 * the core. `signaled` and `release` work on the shared slot from any thread;
 * `enable` runs once per thread that waits asynchronously or adds callbacks.
 */
export interface FenceKindOps {
  /** Signalled only by an explicit signal (true) or computed from other fences (false). */
  readonly leaf: boolean;
  signaled?(w: World, slot: number): boolean;
  enable?(fence: DmaFence): boolean;
  setDeadline?(fence: DmaFence, deadlineNs: bigint): void;
  release?(w: World, slot: number): void;
  /** Error to signal with, decided at signal time (arrays: first failed member). */
  signalError?(w: World, slot: number): number;
}

const kindOps: Array<FenceKindOps | undefined> = [];

/** The registered implementation of fence kind `kind`. */
export function fenceKindOps(kind: FenceKind): FenceKindOps | undefined {
  return kindOps[kind];
}

/** Plug in a fence kind. */
export function registerFenceKind(kind: FenceKind, ops: FenceKindOps): void {
  kindOps[kind] = ops;
}

/** Store a u64 given as number or bigint as [lo, hi] 32-bit words at `at`; numbers avoid BigInt. */
export function storeU64(i32: Int32Array, at: number, v: number | bigint): void {
  if (typeof v === 'number') storeU64Number(i32, at, v);
  else {
    i32[at] = Number(v & 0xffffffffn) | 0;
    i32[at + 1] = Number((v >> 32n) & 0xffffffffn) | 0;
  }
}

function storeU64Number(i32: Int32Array, at: number, v: number): void {
  if (v <= 0x7fffffff) {
    i32[at] = v;
    i32[at + 1] = 0;
  } else {
    i32[at] = v % 4294967296 | 0;
    i32[at + 1] = (v / 4294967296) | 0;
  }
}

/** Allocate a fence slot of `fkind` in `context`/`seqno`; returns the slot with one internal reference. */
export function allocFenceSlot(
  fkind: FenceKind, context: number | bigint, seqno: number | bigint, seqno64: boolean, driver: string | Int32Array,
  timeline: string | Int32Array | null, syscall = 'dma_fence_init',
): number {
  const w = world();
  const slot = allocSlot(w, Kind.Fence, syscall, false);
  const b = w.base(slot);
  const i32 = w.i32;
  // Every body word a fence reads is written here (allocSlot skipped the zeroing).
  i32[b + F_ERROR] = 0;
  for (let a = F_AUX; a < F_AUX + 8; a++) i32[a + b] = 0;
  storeU64(i32, b + F_CTX_LO, context);
  storeU64(i32, b + F_SEQ_LO, seqno);
  i32[b + F_FLAGS] = seqno64 ? DMA_FENCE_FLAG_SEQNO64 : 0;
  i32[b + F_FKIND] = fkind;
  i32[b + F_OWNER] = tid();
  i32[b + F_DEADLINE] = -1; // NO_DEADLINE, as two words: no BigInt on the create path
  i32[b + F_DEADLINE + 1] = 0x7fffffff;
  if (typeof driver === 'string') writeName(w, b + F_DRIVER_NAME, NAME_WORDS, driver);
  else i32.set(driver, b + F_DRIVER_NAME);
  if (typeof timeline === 'string') writeName(w, b + F_TIMELINE_NAME, NAME_WORDS, timeline);
  else if (timeline !== null) i32.set(timeline, b + F_TIMELINE_NAME); // null: the caller writes it
  return slot;
}

export function seqnoIsLater(a: [number, number], b: [number, number], is64: boolean): boolean {
  if (is64) {
    const h1 = a[1] >>> 0;
    const h2 = b[1] >>> 0;
    if (h1 !== h2) return h1 > h2;
    return a[0] >>> 0 > b[0] >>> 0;
  }
  return ((a[0] - b[0]) | 0) > 0;
}

/** dma_fence_is_later_or_same on two slots of one context, in `a`'s seqno mode. */
export function slotIsLaterOrSame(w: World, a: number, b: number): boolean {
  if (a === b) return true;
  const ba = w.base(a);
  const bb = w.base(b);
  const i32 = w.i32;
  if (!(i32[ba + F_FLAGS]! & DMA_FENCE_FLAG_SEQNO64)) return ((i32[ba + F_SEQ_LO]! - i32[bb + F_SEQ_LO]!) | 0) > 0;
  const h1 = i32[ba + F_SEQ_HI]! >>> 0;
  const h2 = i32[bb + F_SEQ_HI]! >>> 0;
  return h1 !== h2 ? h1 > h2 : i32[ba + F_SEQ_LO]! >>> 0 > i32[bb + F_SEQ_LO]! >>> 0;
}

/** True if slots `a` and `b` are fences of the same context. */
export function slotSameContext(w: World, a: number, b: number): boolean {
  const ba = w.base(a);
  const bb = w.base(b);
  return w.i32[ba + F_CTX_LO] === w.i32[bb + F_CTX_LO] && w.i32[ba + F_CTX_HI] === w.i32[bb + F_CTX_HI];
}

/** __dma_fence_is_later on raw 32-bit seqnos (sw_sync's `signaled` test). */
export function seqno32IsLater(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/** Claim the right to signal `slot` (pending → signalling). False if someone else did. */
export function claimSignal(w: World, slot: number): boolean {
  return Atomics.compareExchange(w.i32, w.base(slot) + F_STATE, STATE_PENDING, STATE_SIGNALING) === STATE_PENDING;
}

/** Publish the signal of a claimed slot: timestamp, state, wake sleepers and multi-waiters. */
export function finishSignal(w: World, slot: number, tsNs: number | bigint): void {
  publishState(w, slot, tsNs);
  wakeSleepers(w, slot);
  bumpEpoch(w);
}

/**
 * The first half of `finishSignal`: timestamp, then state. Waiters that look see
 * the fence signalled; sleepers stay asleep until `wakeSleepers`.
 */
export function publishState(w: World, slot: number, tsNs: number | bigint, traceTs?: number): void {
  // Recorded just before the state is published (the kernel records just after): whatever
  // another thread does on seeing the signal is then recorded later than it, in any trace.
  // `traceTs`: an earlier moment the fence became visibly done (sw_sync: its counter moved).
  if (tracing) traceSlot('dma_fence_signaled', w, slot, undefined, traceTs);
  const b = w.base(slot); // storeState's body: no second call on every shared signal
  storeU64(w.i32, b + F_TIMESTAMP, typeof tsNs === 'number' ? Math.round(tsNs) : BigInt.asUintN(64, tsNs));
  Atomics.store(w.i32, b + F_STATE, STATE_SIGNALED);
}

/**
 * `publishState` without its tracepoint: for a fence whose signal was already
 * recorded (a private fence moving into the table) and that nobody can sleep on yet.
 */
export function storeState(w: World, slot: number, tsNs: number | bigint): void {
  const b = w.base(slot);
  storeU64(w.i32, b + F_TIMESTAMP, typeof tsNs === 'number' ? Math.round(tsNs) : BigInt.asUintN(64, tsNs));
  Atomics.store(w.i32, b + F_STATE, STATE_SIGNALED);
}

/** The second half: wake the slot's sleepers, if any counted themselves (after `publishState`). */
export function wakeSleepers(w: World, slot: number): void {
  const b = w.base(slot);
  if (Atomics.load(w.i32, b + F_SLEEPERS) > 0) Atomics.notify(w.i32, b + F_STATE);
}

/** Signal `slot` now unless already signalled; true if this call did it. Callbacks are the caller's job. */
export function publishSignal(w: World, slot: number, tsNs: number | bigint): boolean {
  if (!claimSignal(w, slot)) return false;
  finishSignal(w, slot, tsNs);
  return true;
}

/* ---- tracepoints (trace.ts) ---- */

function u64At(i32: Int32Array, at: number): number | bigint {
  const hi = i32[at + 1]! >>> 0;
  const lo = i32[at]! >>> 0;
  return hi < 0x200000 ? hi * 4294967296 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

/** The identity of fence slot `slot` for a trace event. */
export function slotTraceFence(w: World, slot: number): TraceFence {
  const b = w.base(slot);
  return {
    context: u64At(w.i32, b + F_CTX_LO), seqno: u64At(w.i32, b + F_SEQ_LO),
    driver: readName(w, b + F_DRIVER_NAME, NAME_WORDS), timeline: readName(w, b + F_TIMELINE_NAME, NAME_WORDS),
  };
}

/**
 * Record fence event `name` of slot `slot` (`ret`: a wait's result) at `ts`
 * (default now). Callers test `tracing` first.
 */
export function traceSlot(name: TraceEventName, w: World, slot: number, ret?: number, ts = traceNow()): void {
  traceRecord(name, ret === undefined ? { fence: slotTraceFence(w, slot) } : { fence: slotTraceFence(w, slot), ret }, ts);
}

/** True if slot `slot` is a leaf fence kind (waits sleep on its own word). */
export function slotIsLeaf(w: World, slot: number): boolean {
  return kindOps[w.i32[w.base(slot) + F_FKIND]!]?.leaf === true;
}

/**
 * True if `slot` is signalled, or its implementation's shared `signaled` test says
 * it is done. No side effects (safe under locks); driver-local ops are not asked.
 */
export function slotDone(w: World, slot: number): boolean {
  if (Atomics.load(w.i32, w.base(slot) + F_STATE) === STATE_SIGNALED) return true;
  const ko = kindOps[w.i32[w.base(slot) + F_FKIND]!];
  return ko?.signaled ? ko.signaled(w, slot) : false;
}

/** The fence kind of slot `slot`. */
export function slotFenceKind(w: World, slot: number): FenceKind {
  return w.i32[w.base(slot) + F_FKIND] as FenceKind;
}

/** Timestamp of a signalled slot, exact int64 ns. */
export function slotTimestamp(w: World, slot: number): bigint {
  const at = w.base(slot) + F_TIMESTAMP;
  return BigInt.asIntN(64, (BigInt(w.i32[at + 1]! >>> 0) << 32n) | BigInt(w.i32[at]! >>> 0));
}

/** Timestamp of a signalled slot as a double (for ordering; exact below 2^53 ns). */
export function slotTimestampNs(w: World, slot: number): number {
  return tsOfBase(w, w.base(slot));
}

function tsOfBase(w: World, b: number): number {
  return w.i32[b + F_TIMESTAMP + 1]! * 4294967296 + (w.i32[b + F_TIMESTAMP]! >>> 0);
}

/** True if the slot's state word says signalled. */
export function slotSignaled(w: World, slot: number): boolean {
  return Atomics.load(w.i32, w.base(slot) + F_STATE) === STATE_SIGNALED;
}

/** Record `deadlineNs` if it is earlier than the one stored; returns true if it was the first. */
export function recordDeadline(w: World, b: number, deadlineNs: bigint): boolean {
  const at = (b + F_DEADLINE) >> 1;
  const d = BigInt.asIntN(64, deadlineNs);
  for (;;) {
    const old = Atomics.load(w.i64, at);
    if (d >= old) return false;
    if (Atomics.compareExchange(w.i64, at, old, d) === old) return old === NO_DEADLINE;
  }
}

export function remainingMs(r: number): number {
  if (r <= 0) return 0;
  if (r === Infinity) return Infinity;
  return Math.max(1, Math.ceil(r));
}

export function waitLeaf(w: World, b: number, timeoutMs: number, peek: () => boolean): number {
  const i32 = w.i32;
  const start = nowMs();
  const deadline = start + timeoutMs;
  const startNs = spinEnabled() ? ktimeNowNs() : 0;
  Atomics.add(i32, b + F_SLEEPERS, 1);
  try {
    for (;;) {
      const s = Atomics.load(i32, b + F_STATE);
      if (s === STATE_SIGNALED || peek()) {
        if (startNs) spinLearn((tsOfBase(w, b) - startNs) / 1e6);
        return Math.max(deadline - nowMs(), Number.MIN_VALUE);
      }
      const left = deadline - nowMs();
      if (left <= 0) return 0;
      if (spinWhile(i32, b + F_STATE, s)) continue;
      Atomics.wait(i32, b + F_STATE, s, left);
    }
  } finally {
    Atomics.sub(i32, b + F_SLEEPERS, 1);
  }
}

export async function waitLeafAsync(w: World, b: number, timeoutMs: number, abort?: AbortSignal): Promise<number | 'aborted'> {
  const i32 = w.i32;
  const deadline = nowMs() + timeoutMs;
  const release = keepAlive();
  Atomics.add(i32, b + F_SLEEPERS, 1);
  const race = abortRace(abort);
  try {
    for (;;) {
      if (abort?.aborted) return 'aborted';
      const s = Atomics.load(i32, b + F_STATE);
      if (s === STATE_SIGNALED) return Math.max(deadline - nowMs(), Number.MIN_VALUE);
      const left = deadline - nowMs();
      if (left <= 0) return 0;
      if ((await orAborted(sleepOnWordAsync(i32, b + F_STATE, s, left), race)) === 'aborted') return 'aborted';
    }
  } finally {
    Atomics.sub(i32, b + F_SLEEPERS, 1);
    race.dispose();
    release();
  }
}

registerFenceKind(FenceKind.Driver, { leaf: true });
registerFenceKind(FenceKind.Stub, { leaf: true });

/* Release of any fence slot: the kind's hook drops what the fence points to. */
onRelease(Kind.Fence, (w, slot) => {
  const b = w.base(slot);
  const kind = w.i32[b + F_FKIND]!;
  kindOps[kind]?.release?.(w, slot);
  // Wake anyone still parked on the state word (stale callback deliveries check the generation).
  if (Atomics.load(w.i32, b + F_SLEEPERS) > 0) Atomics.notify(w.i32, b + F_STATE);
});
