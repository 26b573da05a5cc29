/**
 * DOC: dma_fence — shared between threads
 *
 * A fence is one slot of the shared table (shared/world.ts), so a fence created
 * in one thread is seen, waited on and signalled from any thread it reaches. A
 * `DmaFence` object is this thread's view of the slot; each thread has at most one
 * per fence, and it counts this thread's references (`get()` returns the same
 * object, `put()` drops one; `[Symbol.dispose]` is `put`).
 *
 * Kernel semantics kept (kernel-contract §2): 64-bit contexts from a global
 * counter starting at 1 (0 is the stub's); 32-bit wrap-around seqno ordering
 * unless the fence is 64-bit (`init64`, chains); one-way signalling with a
 * CLOCK_MONOTONIC timestamp; `setError` only before signalling; status 0/1/-errno;
 * FIFO run-once callbacks, `addCallback` on a signalled fence returns -ENOENT
 * without calling; enable-signalling on first wait/callback; waits that return
 * the remaining time, 0 on timeout, -ERESTARTSYS when interrupted; deadlines; the
 * signalled stub.
 *
 * Differences JS forces, and what we do instead:
 * - Callbacks are JS functions and cannot be shared. Each thread keeps its own
 *   callback list per fence. When the fence is signalled in this thread, this
 *   thread's callbacks run synchronously inside `signal()` (FIFO, once); callbacks
 *   of other threads run in their threads as soon as those threads' event loops
 *   run (woken through `Atomics.waitAsync`). Ordering across threads is not defined.
 * - Driver ops (`DmaFenceOps`) are JS functions too: they run in the creating
 *   thread. Requests from other threads are recorded in the slot (the
 *   ENABLE_SIGNAL flag, the earliest deadline), so fences that cross threads must
 *   signal on their own, as the kernel requires when `enable_signaling` is absent.
 *   `release` runs when the creating thread drops its last reference.
 * - Blocking waits take an AbortSignal but can only see it before sleeping: a
 *   blocked thread runs no JS. Promise waits (`waitTimeoutAsync`) abort at once.
 * - Timeouts are milliseconds (`Infinity` = MAX_SCHEDULE_TIMEOUT); timestamps and
 *   deadlines are bigint CLOCK_MONOTONIC nanoseconds.
 * - A negative timeout, an empty wait-any, a bad error value or comparing fences of
 *   different contexts — WARNs in the kernel — throw EINVAL here and change nothing.
 */
import {
  allocFenceSlot, claimSignal, DMA_FENCE_FLAG_ENABLE_SIGNAL, DMA_FENCE_FLAG_SEQNO64, F_CTX_HI, F_CTX_LO, F_DEADLINE,
  F_DRIVER_NAME, F_ERROR, F_FKIND, F_FLAGS, F_SEQ_HI, F_SEQ_LO, F_SLEEPERS, F_STATE, F_TIMELINE_NAME, FenceKind,
  fenceKindOps, finishSignal, isContainerKind, NAME_WORDS, NO_DEADLINE, publishSignal, recordDeadline, remainingMs, seqnoIsLater,
  slotDone, slotIsLaterOrSame, slotSameContext, slotTimestamp, slotTraceFence, STATE_PENDING, STATE_SIGNALED, STATE_SIGNALING,
  storeState, traceSlot, waitLeaf, waitLeafAsync,
} from './dma-fence-slot.js';
import { ERRNO, fail } from './errors.js';
import { packSlots, unpackSlots, type Packet } from './shared/packet.js';
import {
  adoptAsHold, encodeName, hold, Kind, localHolds, onCountLive, readName, ref, slotGen, slotKind, slotRefs, unhold,
  unref,
} from './shared/slab.js';
import { ktimeNowNs, multiWait, multiWaitAsync } from './shared/wait.js';
import { H_CONTEXT, H_STUB, onJoin, world, type World } from './shared/world.js';
import { traceRecord, tracing, type TraceEventName, type TraceFence } from './trace.js';

/** Driver callbacks (`struct dma_fence_ops`); names are required. */
export interface DmaFenceOps {
  getDriverName(fence: DmaFence): string;
  getTimelineName(fence: DmaFence): string;
  /** First wait/callback/enable request. Return false if already passed: the core signals then. */
  enableSignaling?(fence: DmaFence): boolean;
  /** Cheap peek; once true it must stay true. */
  signaled?(fence: DmaFence): boolean;
  /** Deadline hint (bigint ns, CLOCK_MONOTONIC); keep the earliest. */
  setDeadline?(fence: DmaFence, deadlineNs: bigint): void;
  /** Free implementation data; runs when the creating thread drops its last reference. */
  release?(fence: DmaFence): void;
}

export type DmaFenceFunc = (fence: DmaFence) => void;

let W: World;
let wrappers: Array<DmaFence | undefined> = [];
onJoin((w) => {
  W = w;
  wrappers = new Array<DmaFence | undefined>(w.capacity);
});

/* ---- per-thread views ---- */

/** This thread's view of fence slot `slot`, taking one reference. */
export function fenceFromSlot(slot: number): DmaFence {
  const w = W ?? world();
  let f = wrappers[slot];
  if (f) {
    hold(w, slot);
    return f;
  }
  hold(w, slot);
  f = newView(slot);
  wrappers[slot] = f;
  return f;
}

/** This thread's view of a slot it already holds (no new reference). */
function viewOfHeld(slot: number): DmaFence {
  let f = wrappers[slot];
  if (!f) {
    f = newView(slot);
    wrappers[slot] = f;
  }
  return f;
}

/** Like `fenceFromSlot` but consumes an internal reference the caller owns. */
export function fenceAdoptSlot(slot: number): DmaFence {
  const w = W ?? world();
  const f = wrappers[slot];
  adoptAsHold(w, slot);
  if (f) return f;
  const nf = newView(slot);
  wrappers[slot] = nf;
  return nf;
}

/** This thread's existing view of `slot`, without taking a reference. */
export function fenceViewIfAny(slot: number): DmaFence | undefined {
  return wrappers[slot];
}

const PRIVATE = Symbol('dma_fence.private');

/** Validate a u64 argument; numbers stay numbers (no BigInt on the hot path). */
function checkU64(v: number | bigint, what: string, syscall: string): number | bigint {
  if (typeof v === 'bigint') {
    // One truncation and one compare: a third of the cost of two range compares.
    if (BigInt.asUintN(64, v) !== v) throw fail('EINVAL', syscall, `${what} ${v} is not a u64`);
    return v;
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new TypeError(`${syscall}: ${what} must be a non-negative integer or bigint`);
  }
  return v;
}

/** Check `ops` for `DmaFence.init` (names required, asked now, as dma_fence_init's BUG_ON checks would). */
function initOps(ops: DmaFenceOps): void {
  if (typeof ops !== 'object' || ops === null || typeof ops.getDriverName !== 'function'
    || typeof ops.getTimelineName !== 'function') {
    throw new TypeError('dma_fence_init: ops must provide getDriverName() and getTimelineName()');
  }
  if (!W) world();
  opsNames(ops);
  lastInitOps = ops;
}

/**
 * The last bigint context `DmaFence.init` was given and its validated value, a
 * number when it fits (drivers init every fence of a timeline with one context:
 * one bigint compare per init instead of a range check, and number compares after).
 */
let lastInitCtx: bigint | symbol = Symbol('none'); // matches no argument until a bigint was seen
let lastInitCtxValue: number | bigint = 0;

function initContext(context: number | bigint): number | bigint {
  const ctx = checkU64(context, 'context', 'dma_fence_init');
  if (typeof ctx !== 'bigint') return ctx;
  lastInitCtx = ctx;
  lastInitCtxValue = asNumberIfSafe(ctx);
  return lastInitCtxValue;
}

/** A seqno that is not a u32 number, checked for `DmaFence.init` (off its inlined path). */
function initSeqno(seqno: number | bigint): number | bigint {
  return checkU64(seqno, 'seqno', 'dma_fence_init');
}

function asNumberIfSafe(v: number | bigint): number | bigint {
  return typeof v === 'bigint' && v <= 9007199254740991n ? Number(v) : v;
}

function checkTimeout(timeoutMs: number, syscall: string): void {
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs)) throw new TypeError(`${syscall}: timeout must be a number of ms`);
  if (timeoutMs < 0) throw fail('EINVAL', syscall, `negative timeout ${timeoutMs}`);
}

export interface WaitOptions {
  /** Interruptible wait: an aborted `signal` ends it with -ERESTARTSYS. Default true. */
  intr?: boolean;
  signal?: AbortSignal;
}

/** Result of `waitAnyTimeout`: `ret` as the kernel returns it, `idx` the first signalled fence or -1. */
export interface WaitAnyResult {
  ret: number;
  idx: number;
}

/** Fences of this thread still in private form: counted by liveObjects() like slots. */
let privateLive = 0;
onCountLive((kind) => (kind === undefined || kind === Kind.Fence ? privateLive : 0));

/*
 * `#flags` of a view (a shared fence keeps its DMA_FENCE_FLAG_* bits in its slot).
 * Bits 4-7: none of the fence flag bits, so that neither reading can be mistaken for the other.
 */
/** This view's cross-thread callback delivery is armed (a waitAsync on the state word is pending). */
const ARMED = 1 << 4;
/** The fence kind's `enable` ran for this thread. */
const ENABLED_HERE = 1 << 5;
/** The last put() waits for this thread's callbacks to run. */
const PUT_AFTER_CALLBACKS = 1 << 6;
/** `armIfPending` is queued for the end of this job. */
const ARM_SCHEDULED = 1 << 7;
/**
 * `#flags` of a private fence: signalled (the shared form keeps its state in the
 * slot). Bit 3: not a fence flag bit nor a view bit; never shown by `flags`.
 */
const P_SIGNALED = 1 << 3;

/** `#slot` of a fence that is still private to its thread (no slot yet). */
const PRIVATE_SLOT = -2;

/** The ops object of the last `DmaFence.init` (its names are known). */
let lastInitOps: DmaFenceOps | undefined;

let supersedesImpl!: (a: DmaFence, b: DmaFence) => boolean;
/** A new view of shared fence slot `slot` (no references yet: the caller takes them). */
let newView!: (slot: number) => DmaFence;
let addableImpl!: (f: unknown) => boolean;
/** `#slot` of a view after its last put. */
const DEAD_SLOT = -1;

/** What a private fence rarely has: an error (set before its signal) and a deadline. */
interface PrivateRare {
  error: number;
  deadline: bigint | undefined;
}

/**
 * A fence: this thread's view of one shared fence slot — or, for a driver fence
 * that has not left its thread yet, the fence itself.
 *
 * Private until shared: `DmaFence.init` makes a fence that lives in plain fields
 * (no slot, no atomics: another thread cannot see it, so nothing needs
 * synchronising). The first thing that needs it shared — `share()`, a sync_file,
 * a container, a reservation object, any wait (all waits sleep on shared words) —
 * gives it a slot and copies its state there (`#materialize`), transparently.
 * Everything observable is the same in both forms.
 */
export class DmaFence implements Disposable {
  // The initial values are those of a new private fence (-2: PRIVATE_SLOT, a literal),
  // so that DmaFence.init stores only what differs: ops, context, seqno.
  #slot = -2;
  /**
   * Private form: the fence's DMA_FENCE_FLAG_* bits and P_SIGNALED (pending
   * without it). A view (shared form, whose flags and state are in the slot):
   * ARMED | ENABLED_HERE | PUT_AFTER_CALLBACKS | ARM_SCHEDULED. One field for all
   * of them: every fence allocates it (a field costs 8 bytes on every fence).
   */
  #flags = 0;
  /* The rest of the private form (#slot === PRIVATE_SLOT). */
  #pCtx: number | bigint;
  #pSeq: number | bigint;
  #pTs: number | bigint = 0;
  /** Error and deadline, set on few fences: one field on every fence instead of two. */
  #pRare: PrivateRare | undefined;
  #pRefs = 1;
  #cbs: DmaFenceFunc[] | null = null;
  /** Driver ops: only on the view in the thread that created the fence. */
  #ops: DmaFenceOps | undefined;

  static {
    // Small, for the reservation object's add path to inline (literals: see get()). The fast
    // case: two private fences with number seqnos compared in 32 bits (flag bit 2: SEQNO64).
    // Contexts are numbers or bigints: == compares their values across both types. The 32-bit
    // wrap-around on safe integers: the difference is exact, | 0 keeps its low 32 bits.
    supersedesImpl = (a, b) => {
      const sa = a.#pSeq;
      const sb = b.#pSeq;
      return a.#slot === -2 && b.#slot === -2 && typeof sa === 'number' && typeof sb === 'number' && !(a.#flags & 2)
        ? a.#pCtx == b.#pCtx && (a === b || ((sa - sb) | 0) > 0) // eslint-disable-line eqeqeq
        : a.#supersedesSlow(b);
    };
  }

  static {
    // Small, for the same reason: a private fence is a driver fence, never a container.
    addableImpl = (f) => f instanceof DmaFence && (f.#slot === -2 || !f.#isContainerShared());
  }

  /** A shared container (array or chain); false for a fence after its last put (get() reports that). */
  #isContainerShared(): boolean {
    return this.#slot >= 0 && isContainerKind(this.#slotKind());
  }

  #supersedesSlow(old: DmaFence): boolean {
    if (this.#slot >= 0 && old.#slot >= 0) {
      return slotSameContext(W, this.#slot, old.#slot) && slotIsLaterOrSame(W, this.#slot, old.#slot);
    }
    return this.context === old.context
      && (this === old || seqnoIsLater(this.#seqWords(), old.#seqWords(), this.is64));
  }

  /** @internal use `DmaFence.init`, `fenceFromSlot` or a container constructor. */
  constructor(key: symbol, ops: DmaFenceOps | undefined, ctx: number | bigint, seq: number | bigint) {
    if (key !== PRIVATE) throw new TypeError('use DmaFence.init() to create a fence');
    this.#ops = ops;
    this.#pCtx = ctx;
    this.#pSeq = seq;
  }

  static {
    newView = (slot) => {
      const f = new DmaFence(PRIVATE, undefined, 0, 0);
      f.#slot = slot;
      f.#pRefs = 0;
      return f;
    };
  }

  /* ---- creation ---- */

  /**
   * Reserve `num` consecutive fresh context ids (dma_fence_context_alloc).
   * @returns the first id. @throws EINVAL if `num` is not a positive integer.
   */
  static contextAlloc(num = 1): bigint {
    if (!Number.isSafeInteger(num) || num < 1) throw fail('EINVAL', 'dma_fence_context_alloc', `cannot allocate ${num} contexts`);
    const w = W ?? world();
    return Atomics.add(w.i64, H_CONTEXT >> 1, BigInt(num));
  }

  /** dma_fence_init: a pending fence with 32-bit seqno ordering. @throws TypeError on missing name ops. */
  static init(ops: DmaFenceOps, context: number | bigint, seqno: number | bigint): DmaFence {
    // Kept short (the JIT inlines it into callers): the checks of an ops object and of a
    // context run once per new one (drivers init a timeline's fences with one of each).
    if (ops !== lastInitOps) initOps(ops);
    const ctx = context === lastInitCtx ? lastInitCtxValue : initContext(context);
    const seq = typeof seqno === 'number' && seqno >>> 0 === seqno ? seqno : initSeqno(seqno);
    privateLive++;
    const f = new DmaFence(PRIVATE, ops, ctx, seq);
    if (tracing) f.trace('dma_fence_init');
    return f;
  }

  /** dma_fence_init64: same with 64-bit seqno ordering. */
  static init64(ops: DmaFenceOps, context: number | bigint, seqno: number | bigint): DmaFence {
    const f = DmaFence.init(ops, context, seqno);
    f.#flags = DMA_FENCE_FLAG_SEQNO64;
    return f;
  }

  /** Give a private fence its slot, copying its state there; a no-op for shared ones. */
  #materialize(): void {
    if (this.#slot !== PRIVATE_SLOT) return;
    const names = opsNames(this.#ops!);
    // Only now are bigint contexts/seqnos within 2^53 turned into numbers (no BigInt split when stored);
    // a fence that never leaves its thread never pays for it.
    const slot = allocFenceSlot(
      FenceKind.Driver, asNumberIfSafe(this.#pCtx), asNumberIfSafe(this.#pSeq), false, names[0], names[1],
    );
    const b = W.base(slot);
    const signaled = (this.#flags & P_SIGNALED) !== 0;
    W.i32[b + F_FLAGS] = this.#flags & ~P_SIGNALED;
    this.#flags = 0; // a view's bits from now on
    const rare = this.#pRare;
    if (rare !== undefined) {
      W.i32[b + F_ERROR] = rare.error;
      if (rare.deadline !== undefined) recordDeadline(W, b, rare.deadline);
    }
    // Its signal was recorded (trace) while private, and nobody can sleep on the new slot yet.
    if (signaled && claimSignal(W, slot)) storeState(W, slot, this.#pTs);
    adoptAsHold(W, slot);
    for (let i = 1; i < this.#pRefs; i++) hold(W, slot);
    this.#pRefs = 0; // private references only: put() counts on it
    this.#slot = slot;
    wrappers[slot] = this;
    privateLive--;
    if (this.#cbs !== null && this.#cbs.length > 0 && !signaled && !(this.#flags & ARM_SCHEDULED)) {
      this.#flags |= ARM_SCHEDULED; // callbacks queued while private now need cross-thread delivery
      if (toArm.push(this) === 1) queueMicrotask(armPending);
    }
  }

  /**
   * dma_fence_get_stub: the one global signalled fence (context 0, seqno 0,
   * names "stub"), a new reference each call.
   */
  static getStub(): DmaFence {
    const w = W ?? world();
    for (;;) {
      const s = Atomics.load(w.i32, H_STUB);
      if (s >= 0) return fenceFromSlot(s);
      if (s === -1 && Atomics.compareExchange(w.i32, H_STUB, -1, -2) === -1) {
        const slot = allocFenceSlot(FenceKind.Stub, 0, 0, false, 'stub', 'stub');
        if (tracing) traceSlot('dma_fence_init', w, slot);
        publishSignal(w, slot, ktimeNowNs());
        Atomics.store(w.i32, H_STUB, slot); // the allocation reference keeps it forever
        Atomics.notify(w.i32, H_STUB);
        continue;
      }
      Atomics.wait(w.i32, H_STUB, -2, 10);
    }
  }

  /** dma_fence_allocate_private_stub: a new signalled fence with timestamp `timestampNs`. */
  static allocatePrivateStub(timestampNs: bigint): DmaFence {
    if (typeof timestampNs !== 'bigint') throw new TypeError('allocatePrivateStub: timestamp must be bigint ns');
    const w = W ?? world();
    // Like the kernel's: context 0, seqno 0, signalling enabled, signalled at `timestampNs`.
    const slot = allocFenceSlot(FenceKind.Stub, 0, 0, false, 'stub', 'stub');
    if (tracing) traceSlot('dma_fence_init', w, slot);
    w.i32[w.base(slot) + F_FLAGS] |= DMA_FENCE_FLAG_ENABLE_SIGNAL;
    publishSignal(w, slot, timestampNs);
    return fenceAdoptSlot(slot);
  }

  /* ---- identity ---- */

  /** @internal slot index in the shared table (a private fence gets one now). */
  get slot(): number {
    this.#check();
    this.#materialize();
    return this.#slot;
  }

  get #private(): boolean {
    return this.#slot === PRIVATE_SLOT;
  }

  get context(): bigint {
    if (this.#private) return BigInt(this.#pCtx);
    const i32 = W.i32;
    return (BigInt(i32[this.#b + F_CTX_HI]! >>> 0) << 32n) | BigInt(i32[this.#b + F_CTX_LO]! >>> 0);
  }

  get seqno(): bigint {
    if (this.#private) return BigInt(this.#pSeq);
    const i32 = W.i32;
    return (BigInt(i32[this.#b + F_SEQ_HI]! >>> 0) << 32n) | BigInt(i32[this.#b + F_SEQ_LO]! >>> 0);
  }

  /** Low and high 32-bit words of the seqno (what the ordering compares). */
  #seqWords(): [number, number] {
    if (!this.#private) return [W.i32[this.#b + F_SEQ_LO]!, W.i32[this.#b + F_SEQ_HI]!];
    const v = this.#pSeq;
    if (typeof v === 'number') return [v % 4294967296 | 0, (v / 4294967296) | 0];
    return [Number(v & 0xffffffffn) | 0, Number((v >> 32n) & 0xffffffffn) | 0];
  }

  /** @internal this fence's identity for a trace event (trace.ts). */
  traceFence(): TraceFence {
    if (!this.#private) return slotTraceFence(W, this.#slot);
    const [driver, timeline] = askOpsNames(this.#ops!);
    return { context: this.#pCtx, seqno: this.#pSeq, driver, timeline };
  }

  /** @internal record fence event `name` of this fence now. Callers test `tracing` first. */
  trace(name: TraceEventName): void {
    traceRecord(name, { fence: this.traceFence() });
  }

  /** The fence's flag bits (DMA_FENCE_FLAG_*), plus SIGNALED/TIMESTAMP derived from state. */
  get flags(): number {
    return this.#private ? this.#flags & ~P_SIGNALED : Atomics.load(W.i32, this.#b + F_FLAGS);
  }

  get driverName(): string {
    if (this.#private) return askOpsNames(this.#ops!)[0];
    return readName(W, this.#b + F_DRIVER_NAME, NAME_WORDS);
  }

  get timelineName(): string {
    if (this.#private) return askOpsNames(this.#ops!)[1];
    return readName(W, this.#b + F_TIMELINE_NAME, NAME_WORDS);
  }

  /** The error stored with `setError` (0 if none). Meaningful once signalled. */
  get error(): number {
    return this.#private ? this.#pErr : Atomics.load(W.i32, this.#b + F_ERROR);
  }

  /** @internal which implementation this fence belongs to. */
  get kind(): FenceKind {
    return this.#slot === -2 ? FenceKind.Driver : this.#slotKind();
  }

  /** First word of the slot (shared form): computed, one field less on every fence. */
  get #b(): number {
    return W.base(this.#slot);
  }

  #slotKind(): FenceKind {
    return W.i32[this.#b + F_FKIND] as FenceKind;
  }

  /** True if the fence compares seqnos as 64-bit numbers. */
  get is64(): boolean {
    return (this.flags & DMA_FENCE_FLAG_SEQNO64) !== 0;
  }

  /* ---- references ---- */

  /** dma_fence_get: one more reference of this thread. Returns this same object. */
  get(): this {
    // Hot paths (get, put, isSignaled, kind) keep the private case first and small so that
    // V8 inlines them into their callers within its inlining budget (~920 bytes of bytecode
    // per function); they compare with literals (-2: PRIVATE_SLOT, 1: STATE_SIGNALED)
    // because a module constant costs a context load and a TDZ check in bytecode.
    if (this.#slot === -2) this.#pRefs++;
    else this.#getShared();
    return this;
  }

  #getShared(): void {
    this.#check();
    hold(W, this.#slot);
  }

  /**
   * dma_fence_put: drop one reference. When this thread drops its last one, this
   * object becomes unusable; if callbacks of this thread are still queued on an
   * unsignalled fence that nobody else holds, it is signalled with -EDEADLK first
   * (the kernel's "released with pending signals").
   */
  put(): void {
    // Only a private fence's non-last reference stays inline: the last one (and every
    // shared one) takes the call, so the inlined body stays small for the callers' budget.
    if (this.#pRefs > 1 && this.#cbs === null) this.#pRefs--; // #pRefs > 0 only while private
    else this.#putSlow();
  }

  #putSlow(): void {
    if (this.#slot === -2 && this.#cbs === null) {
      this.#freePrivate(); // the last reference of a private fence without callbacks
      return;
    }
    this.#check();
    const slot = this.#slot;
    if (this.#cbs !== null && this.#isSignaledFlag()) this.runCallbacks();
    const last = this.#private ? this.#pRefs === 1 : localHolds(slot) === 1;
    if (last && this.#cbs && this.#cbs.length > 0 && !this.#isSignaledFlag()) {
      if (this.#private || slotRefs(W, slot) === 1) {
        // Nobody else can ever signal it: the kernel's "released with pending signals".
        if (this.#private) this.#rare().error = -ERRNO.EDEADLK;
        else Atomics.store(W.i32, this.#b + F_ERROR, -ERRNO.EDEADLK);
        this.#signal(ktimeNowNs());
      } else {
        // Others hold it: keep this thread's reference until the callbacks have run.
        this.#flags |= PUT_AFTER_CALLBACKS;
        return;
      }
    }
    this.#dropRef();
  }

  #dropRef(): void {
    const slot = this.#slot;
    if (slot === PRIVATE_SLOT) {
      if (this.#pRefs > 1) this.#pRefs--;
      else this.#freePrivate();
      return;
    }
    if (localHolds(slot) === 1) {
      const ops = this.#ops;
      wrappers[slot] = undefined;
      this.#ops = undefined;
      this.#slot = DEAD_SLOT;
      ops?.release?.(this);
    }
    unhold(W, slot);
  }

  /** The last reference of a private fence is gone: nobody else ever saw it. */
  #freePrivate(): void {
    this.#pRefs = 0;
    privateLive--;
    const ops = this.#ops;
    this.#ops = undefined;
    this.#slot = -1; // DEAD_SLOT
    ops?.release?.(this);
  }

  [Symbol.dispose](): void {
    this.put();
  }

  /**
   * A structured-cloneable token that carries one reference to this fence to
   * another thread (post it with `postMessage`); the sender keeps its own.
   * @throws ENOMEM when the shared table is full.
   */
  share(): Packet {
    return packSlots([this.slot], 'dma_fence_share');
  }

  /**
   * Receive a token made by `share()`: this thread's view, holding the reference
   * the token carried. @throws EINVAL if it is not a fence token or was already received.
   */
  static receive(token: unknown): DmaFence {
    const slots = unpackSlots(token, 'dma_fence_receive');
    const w = W ?? world();
    if (slots.length !== 1 || slotKind(w, slots[0]!) !== Kind.Fence) {
      for (const s of slots) unhold(w, s);
      throw fail('EINVAL', 'dma_fence_receive', 'token does not carry one fence');
    }
    return viewOfHeld(slots[0]!);
  }

  #check(): void {
    if (this.#slot === DEAD_SLOT) throw fail('EINVAL', 'dma_fence', 'fence used after its last put()');
  }

  /** A private fence's error (0: none). */
  get #pErr(): number {
    return this.#pRare?.error ?? 0;
  }

  #rare(): PrivateRare {
    return (this.#pRare ??= { error: 0, deadline: undefined });
  }

  /* ---- ordering ---- */

  /**
   * dma_fence_is_later: is this fence later than `other` on their shared context?
   * 32-bit wrap-around comparison unless this fence is 64-bit.
   * @throws EINVAL if the contexts differ (a WARN in the kernel).
   */
  isLater(other: DmaFence): boolean {
    this.#sameContext(other, 'dma_fence_is_later');
    return seqnoIsLater(this.#seqWords(), other.#seqWords(), this.is64);
  }

  /** dma_fence_is_later_or_same. */
  isLaterOrSame(other: DmaFence): boolean {
    return this === other || this.isLater(other);
  }

  /**
   * dma_fence_later: the later of two fences of one context, or null when that
   * later fence is already signalled. No new reference is taken.
   */
  static later(f1: DmaFence, f2: DmaFence): DmaFence | null {
    f1.#sameContext(f2, 'dma_fence_later');
    const l = seqnoIsLater(f1.#seqWords(), f2.#seqWords(), f1.is64) ? f1 : f2;
    return l.isSignaled() ? null : l;
  }

  #sameContext(other: DmaFence, syscall: string): void {
    if (!(other instanceof DmaFence)) throw new TypeError(`${syscall}: not a DmaFence`);
    if (this.context !== other.context) {
      throw fail('EINVAL', syscall, `fences of different contexts (${this.context} vs ${other.context}) cannot be ordered`);
    }
  }

  /* ---- signalling ---- */

  #isSignaledFlag(): boolean {
    if (this.#private) return (this.#flags & P_SIGNALED) !== 0;
    return Atomics.load(W.i32, this.#b + F_STATE) === STATE_SIGNALED;
  }

  /**
   * dma_fence_signal: signal now, running this thread's callbacks (FIFO, once).
   * @returns 0, or -EINVAL if it was already signalled.
   */
  signal(): number {
    this.#check();
    return this.#signal(ktimeNowNs()) ? 0 : -ERRNO.EINVAL;
  }

  /** dma_fence_signal_timestamp: signal with an explicit CLOCK_MONOTONIC timestamp (bigint ns). */
  signalTimestamp(timestampNs: bigint): number {
    this.#check();
    if (typeof timestampNs !== 'bigint') throw new TypeError('signalTimestamp: timestamp must be bigint ns');
    return this.#signal(timestampNs) ? 0 : -ERRNO.EINVAL;
  }

  /** dma_fence_check_and_signal (newest kernels): signal; true if it was *already* signalled. */
  checkAndSignal(): boolean {
    this.#check();
    return !this.#signal(ktimeNowNs());
  }

  #signal(tsNs: number | bigint): boolean {
    if (this.#private) {
      // Nobody else can see it: no claim, no publish, no wake-ups.
      if (this.#flags & P_SIGNALED) return false;
      this.#flags |= P_SIGNALED;
      this.#pTs = tsNs;
      if (tracing) this.trace('dma_fence_signaled');
      this.runCallbacks();
      return true;
    }
    if (!claimSignal(W, this.#slot)) return false;
    const ko = fenceKindOps(this.kind);
    if (ko?.signalError && Atomics.load(W.i32, this.#b + F_ERROR) === 0) {
      Atomics.store(W.i32, this.#b + F_ERROR, ko.signalError(W, this.#slot));
    }
    finishSignal(W, this.#slot, tsNs);
    this.runCallbacks();
    return true;
  }

  /** @internal run this thread's queued callbacks (the fence is signalled). */
  runCallbacks(): void {
    const cbs = this.#cbs;
    if (!cbs || cbs.length === 0) return;
    this.#cbs = null;
    for (const cb of cbs) {
      try {
        cb(this);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
    this.#settleDeferredPut();
  }

  #settleDeferredPut(): void {
    if (!(this.#flags & PUT_AFTER_CALLBACKS) || (this.#cbs && this.#cbs.length > 0)) return;
    this.#flags &= ~PUT_AFTER_CALLBACKS;
    this.#dropRef();
  }

  /**
   * dma_fence_set_error: record an error to signal with.
   * @throws EINVAL if already signalled or `err` is not in [-4095, -1]; nothing is stored then.
   */
  setError(err: number): void {
    this.#check();
    if (!Number.isInteger(err)) throw new TypeError('setError: error must be an integer');
    if (err >= 0 || err < -4095) throw fail('EINVAL', 'dma_fence_set_error', `error ${err} is not a negative errno`);
    const pending = this.#private ? !(this.#flags & P_SIGNALED)
      : Atomics.load(W.i32, this.#b + F_STATE) === STATE_PENDING;
    if (!pending) throw fail('EINVAL', 'dma_fence_set_error', 'fence is already signalled');
    if (this.#private) this.#rare().error = err;
    else Atomics.store(W.i32, this.#b + F_ERROR, err);
  }

  /** dma_fence_is_signaled: peeks the implementation, signalling if it says done. Does not enable signalling. */
  isSignaled(): boolean {
    // 8: P_SIGNALED.
    if (this.#slot === -2 && this.#cbs === null && !(this.#flags & 8) && this.#ops?.signaled === undefined) {
      return false; // pending, and no driver op to peek
    }
    return this.#isSignaledSlow();
  }

  #isSignaledSlow(): boolean {
    if (this.#isSignaledFlag()) {
      if (this.#cbs !== null) this.runCallbacks(); // signalled in another thread: deliver now
      return true;
    }
    if (this.#peek()) {
      // Done: either this call signals it, or another thread is between claim and
      // publish. (Testing "signalled" and "being signalled" with two loads raced: the
      // state can move 2 -> 1 between them.)
      this.#signal(ktimeNowNs());
      return true;
    }
    return false;
  }

  #peek(): boolean {
    const kind = this.kind;
    if (kind === FenceKind.Driver) return this.#ops?.signaled?.(this) === true;
    const ko = fenceKindOps(kind);
    return ko?.signaled ? ko.signaled(W, this.#slot) : false;
  }

  /** dma_fence_get_status: 0 pending, 1 signalled, negative error if signalled with one. */
  getStatus(): number {
    if (!this.isSignaled()) return 0;
    if (this.#private) return this.#pErr < 0 ? this.#pErr : 1;
    // Another thread may be between claim and publish; its error is stored in between.
    while (Atomics.load(W.i32, this.#b + F_STATE) === STATE_SIGNALING);
    const e = Atomics.load(W.i32, this.#b + F_ERROR);
    return e < 0 ? e : 1;
  }

  /**
   * dma_fence_timestamp: the signal time, bigint CLOCK_MONOTONIC ns.
   * @throws EINVAL if the fence is not signalled (a WARN in the kernel).
   */
  timestamp(): bigint {
    if (this.#private) {
      if (!(this.#flags & P_SIGNALED)) throw fail('EINVAL', 'dma_fence_timestamp', 'fence is not signalled');
      return typeof this.#pTs === 'bigint' ? this.#pTs : BigInt(Math.round(this.#pTs));
    }
    for (;;) {
      const s = Atomics.load(W.i32, this.#b + F_STATE);
      if (s === STATE_SIGNALED) return slotTimestamp(W, this.#slot);
      if (s === STATE_PENDING) throw fail('EINVAL', 'dma_fence_timestamp', 'fence is not signalled');
    }
  }

  /* ---- callbacks and enabling ---- */

  /** dma_fence_enable_sw_signaling: ask the implementation to signal; idempotent. */
  enableSwSignaling(): void {
    this.#check();
    this.#enable();
  }

  /** Returns false if the fence is (now) signalled. */
  #enable(): boolean {
    if (this.#isSignaledFlag()) return false;
    let first: boolean;
    if (this.#private) {
      first = !(this.#flags & DMA_FENCE_FLAG_ENABLE_SIGNAL);
      this.#flags |= DMA_FENCE_FLAG_ENABLE_SIGNAL;
    } else {
      first = !(Atomics.or(W.i32, this.#b + F_FLAGS, DMA_FENCE_FLAG_ENABLE_SIGNAL) & DMA_FENCE_FLAG_ENABLE_SIGNAL);
    }
    const kind = this.kind;
    let keep = true;
    if (kind === FenceKind.Driver) {
      if (first && this.#ops?.enableSignaling) keep = this.#ops.enableSignaling(this);
    } else if (!(this.#flags & ENABLED_HERE)) {
      this.#flags |= ENABLED_HERE;
      const ko = fenceKindOps(kind);
      if (ko?.enable) keep = ko.enable(this);
    }
    if (!keep) this.#signal(ktimeNowNs());
    return !this.#isSignaledFlag();
  }

  /**
   * dma_fence_add_callback: queue `func` to run once when the fence signals.
   * @returns 0 if queued, -ENOENT if already signalled (func is not called).
   * @throws TypeError if `func` is not a function.
   */
  addCallback(func: DmaFenceFunc): number {
    if (typeof func !== 'function') throw new TypeError('addCallback: func must be a function');
    this.#check();
    if (this.#isSignaledFlag()) return -ERRNO.ENOENT;
    if (!this.#enable()) return -ERRNO.ENOENT;
    (this.#cbs ??= []).push(func);
    if (!this.#private && !(this.#flags & (ARMED | ARM_SCHEDULED))) {
      // Only a fence still pending when this job ends needs a wake-up from another thread.
      this.#flags |= ARM_SCHEDULED;
      if (toArm.push(this) === 1) queueMicrotask(armPending);
    }
    return 0;
  }

  /** dma_fence_remove_callback: true if `func` was still queued (its first queued entry is removed). */
  removeCallback(func: DmaFenceFunc): boolean {
    const cbs = this.#cbs;
    if (!cbs) return false;
    const i = cbs.indexOf(func);
    if (i < 0) return false;
    cbs.splice(i, 1);
    this.#settleDeferredPut();
    return true;
  }

  /** @internal end of job: arm delivery if callbacks are still queued on a pending fence. */
  armIfPending(): void {
    this.#flags &= ~ARM_SCHEDULED;
    if (this.#slot >= 0 && this.#cbs !== null && this.#cbs.length > 0) this.#armRemote();
  }

  /** Deliver this thread's callbacks when another thread signals. */
  #armRemote(): void {
    if (this.#flags & ARMED) return;
    const i32 = W.i32;
    const b = this.#b;
    const state = Atomics.load(i32, b + F_STATE);
    if (state === STATE_SIGNALED) {
      queueMicrotask(() => this.runCallbacks());
      return;
    }
    this.#flags |= ARMED;
    const gen = slotGen(W, this.#slot);
    const slot = this.#slot;
    Atomics.add(i32, b + F_SLEEPERS, 1);
    const r = Atomics.waitAsync(i32, b + F_STATE, state);
    const settle = (): void => {
      Atomics.sub(i32, b + F_SLEEPERS, 1);
      this.#flags &= ~ARMED;
      if (this.#slot !== slot || slotGen(W, slot) !== gen) return;
      if (Atomics.load(i32, b + F_STATE) === STATE_SIGNALED) this.runCallbacks();
      else if (this.#cbs && this.#cbs.length > 0) this.#armRemote();
    };
    if (r.async) r.value.then(settle, settle);
    else queueMicrotask(settle);
  }

  /* ---- waiting ---- */

  /**
   * dma_fence_wait_timeout, blocking the calling thread.
   * @returns remaining ms (> 0; `timeout` or 1 if already signalled), 0 on
   * timeout, -ERESTARTSYS if `intr` and `signal` is already aborted.
   * @throws EINVAL for a negative timeout.
   */
  waitTimeout(timeoutMs: number, opts: WaitOptions = {}): number {
    this.#check();
    checkTimeout(timeoutMs, 'dma_fence_wait_timeout');
    this.#materialize(); // waits sleep on shared words
    const traced = tracing ? this.#traceWaitStart() : undefined;
    let r: number;
    if (!this.#enable()) r = timeoutMs === 0 ? 1 : timeoutMs;
    else if ((opts.intr ?? true) && opts.signal?.aborted) r = -ERRNO.ERESTARTSYS;
    else if (timeoutMs === 0) r = 0;
    else if (!fenceKindOps(this.kind)?.leaf) r = remainingMs(multiWait(W, () => this.isSignaled(), timeoutMs));
    else {
      r = remainingMs(waitLeaf(W, this.#b, timeoutMs, () => this.#peek() && this.isSignaled()));
      if (r > 0 && this.#cbs !== null) this.runCallbacks();
    }
    if (traced !== undefined) traceRecord('dma_fence_wait_end', { fence: traced, ret: r });
    return r;
  }

  /** Record `dma_fence_wait_start`; returns the identity for the end (a callback may drop the view meanwhile). */
  #traceWaitStart(): TraceFence {
    const fence = this.traceFence();
    traceRecord('dma_fence_wait_start', { fence });
    return fence;
  }

  /** dma_fence_wait: wait forever; 0 when signalled or -ERESTARTSYS. */
  wait(opts: WaitOptions = {}): number {
    const r = this.waitTimeout(Infinity, opts);
    return r > 0 ? 0 : r;
  }

  /**
   * Promise form of `waitTimeout`; the event loop stays alive while it is pending.
   * An abort of `opts.signal` settles it with -ERESTARTSYS (if `intr`, the default).
   */
  async waitTimeoutAsync(timeoutMs: number, opts: WaitOptions = {}): Promise<number> {
    this.#check();
    checkTimeout(timeoutMs, 'dma_fence_wait_timeout');
    this.#materialize(); // waits sleep on shared words
    const traced = tracing ? this.#traceWaitStart() : undefined;
    const abort = (opts.intr ?? true) ? opts.signal : undefined;
    let r: number;
    if (!this.#enable()) r = timeoutMs === 0 ? 1 : timeoutMs;
    else if (abort?.aborted) r = -ERRNO.ERESTARTSYS;
    else if (timeoutMs === 0) r = 0;
    else {
      this.get(); // keep the view alive across the await
      try {
        if (!fenceKindOps(this.kind)?.leaf) {
          const m = await multiWaitAsync(W, () => this.isSignaled(), timeoutMs, abort);
          r = m === 'aborted' ? -ERRNO.ERESTARTSYS : remainingMs(m);
        } else {
          const m = await waitLeafAsync(W, this.#b, timeoutMs, abort);
          if (m !== 'aborted' && m > 0 && this.#cbs !== null) this.runCallbacks();
          r = m === 'aborted' ? -ERRNO.ERESTARTSYS : remainingMs(m);
        }
      } finally {
        this.put();
      }
    }
    if (traced !== undefined) traceRecord('dma_fence_wait_end', { fence: traced, ret: r });
    return r;
  }

  /** Promise form of `wait`: resolves 0 when signalled, or -ERESTARTSYS. */
  async waitAsync(opts: WaitOptions = {}): Promise<number> {
    const r = await this.waitTimeoutAsync(Infinity, opts);
    return r > 0 ? 0 : r;
  }

  /**
   * dma_fence_wait_any_timeout, blocking. `idx` is the lowest signalled index.
   * @throws EINVAL for an empty list or a negative timeout.
   */
  static waitAnyTimeout(fences: readonly DmaFence[], timeoutMs: number, opts: WaitOptions = {}): WaitAnyResult {
    checkWaitAny(fences, timeoutMs);
    const first = (): number => fences.findIndex((f) => f.isSignaled());
    if (timeoutMs === 0) {
      const i = first();
      return { ret: i >= 0 ? 1 : 0, idx: i };
    }
    for (const f of fences) f.#materialize(); // the multi-wait sleeps on shared words
    for (let i = 0; i < fences.length; i++) if (!fences[i]!.#enable()) return { ret: timeoutMs, idx: i };
    if ((opts.intr ?? true) && opts.signal?.aborted) return { ret: -ERRNO.ERESTARTSYS, idx: -1 };
    const r = remainingMs(multiWait(W, () => first() >= 0, timeoutMs));
    return { ret: r, idx: r > 0 ? first() : -1 };
  }

  /** Promise form of `waitAnyTimeout`. */
  static async waitAnyTimeoutAsync(
    fences: readonly DmaFence[], timeoutMs: number, opts: WaitOptions = {},
  ): Promise<WaitAnyResult> {
    checkWaitAny(fences, timeoutMs);
    const first = (): number => fences.findIndex((f) => f.isSignaled());
    if (timeoutMs === 0) {
      const i = first();
      return { ret: i >= 0 ? 1 : 0, idx: i };
    }
    for (const f of fences) f.#materialize();
    for (let i = 0; i < fences.length; i++) if (!fences[i]!.#enable()) return { ret: timeoutMs, idx: i };
    const abort = (opts.intr ?? true) ? opts.signal : undefined;
    if (abort?.aborted) return { ret: -ERRNO.ERESTARTSYS, idx: -1 };
    const r = await multiWaitAsync(W, () => first() >= 0, timeoutMs, abort);
    if (r === 'aborted') return { ret: -ERRNO.ERESTARTSYS, idx: -1 };
    const ret = remainingMs(r);
    return { ret, idx: ret > 0 ? first() : -1 };
  }

  /* ---- deadlines ---- */

  /**
   * dma_fence_set_deadline: hint that the fence is needed by `deadlineNs`
   * (CLOCK_MONOTONIC). Ignored once signalled. The earliest deadline is kept in
   * the shared slot (`deadline`); the implementation's hook also sees it.
   */
  setDeadline(deadlineNs: bigint): void {
    if (typeof deadlineNs !== 'bigint') throw new TypeError('setDeadline: deadline must be bigint ns');
    this.#check();
    if (this.#isSignaledFlag()) return;
    const kind = this.kind;
    if (kind === FenceKind.Driver) {
      if (!this.#private) recordDeadline(W, this.#b, deadlineNs);
      else {
        const rare = this.#rare();
        if (rare.deadline === undefined || deadlineNs < rare.deadline) rare.deadline = deadlineNs;
      }
      this.#ops?.setDeadline?.(this, deadlineNs);
      return;
    }
    fenceKindOps(kind)?.setDeadline?.(this, deadlineNs);
  }

  /** Earliest deadline recorded for this fence, or undefined. */
  get deadline(): bigint | undefined {
    if (this.#private) return this.#pRare?.deadline;
    const d = Atomics.load(W.i64, (this.#b + F_DEADLINE) >> 1);
    return d === NO_DEADLINE ? undefined : d;
  }

  /* ---- debug ---- */

  /** dma_fence_describe: `<driver> <timeline> seq <seqno> signalled|unsignalled`. */
  describe(): string {
    return `${this.driverName} ${this.timelineName} seq ${this.seqno} ${this.isSignaled() ? '' : 'un'}signalled`;
  }
}

/** Views whose callbacks may need a wake-up from another thread, armed once per job. */
const toArm: DmaFence[] = [];
function armPending(): void {
  const list = toArm.splice(0);
  for (const f of list) f.armIfPending();
}

/* ---- helpers shared with fence kinds (same file: they are the fence core) ---- */

const opsNameCache = new WeakMap<DmaFenceOps, [Int32Array, Int32Array]>();

/** The names of `ops`, asked once per ops object (names of a timeline do not change), stored encoded. */
function opsNames(ops: DmaFenceOps): [Int32Array, Int32Array] {
  let names = opsNameCache.get(ops);
  if (!names) {
    const [d, t] = askOpsNames(ops);
    names = [encodeName(d, NAME_WORDS), encodeName(t, NAME_WORDS)];
    opsNameCache.set(ops, names);
  }
  return names;
}

const askedNames = new WeakMap<DmaFenceOps, [string, string]>();

/** The names `ops` gives, asked once per ops object. */
function askOpsNames(ops: DmaFenceOps): [string, string] {
  let names = askedNames.get(ops);
  if (!names) {
    names = askOpsNamesNow(ops);
    askedNames.set(ops, names);
  }
  return names;
}

function askOpsNamesNow(ops: DmaFenceOps): [string, string] {
  // Names are asked for once at init, with a stand-in fence: the ops receive the
  // fence object in the kernel, but names of a timeline do not depend on it.
  const d = String(ops.getDriverName(undefined as unknown as DmaFence));
  const t = String(ops.getTimelineName(undefined as unknown as DmaFence));
  return [d, t];
}

/** Signal a slot from any thread and run this thread's callbacks for it. */
export function signalSlot(w: World, slot: number, error = 0): boolean {
  if (!claimSignal(w, slot)) return false;
  const b = w.base(slot);
  if (error) Atomics.store(w.i32, b + F_ERROR, error);
  const ko = fenceKindOps(w.i32[b + F_FKIND] as FenceKind);
  if (ko?.signalError && Atomics.load(w.i32, b + F_ERROR) === 0) {
    Atomics.store(w.i32, b + F_ERROR, ko.signalError(w, slot));
  }
  finishSignal(w, slot, ktimeNowNs());
  wrappers[slot]?.runCallbacks();
  return true;
}

/*
 * Slot-level forms of isSignaled/wait for the uapi, whose fds already keep the
 * fence alive: they skip creating a view and taking a reference per call. A view
 * of this thread, if there is one, is used instead (it may carry driver ops and
 * callbacks).
 */

/** `dma_fence_is_signaled` on a slot. */
export function fenceSlotIsSignaled(w: World, slot: number): boolean {
  const view = wrappers[slot];
  if (view) return view.isSignaled();
  if (Atomics.load(w.i32, w.base(slot) + F_STATE) === STATE_SIGNALED) return true;
  if (!slotDone(w, slot)) return false;
  signalSlot(w, slot);
  return true; // signalled now, by this call or by a thread between claim and publish
}

/** `dma_fence_wait_timeout` on a leaf slot (see slotIsLeaf), interruptible never. */
export function fenceSlotWaitTimeout(w: World, slot: number, timeoutMs: number): number {
  const view = wrappers[slot];
  if (view) return view.waitTimeout(timeoutMs);
  const b = w.base(slot);
  const traced = tracing; // an end only for a recorded start, as in waitTimeout
  if (traced) traceSlot('dma_fence_wait_start', w, slot);
  Atomics.or(w.i32, b + F_FLAGS, DMA_FENCE_FLAG_ENABLE_SIGNAL);
  let r: number;
  if (fenceSlotIsSignaled(w, slot)) r = timeoutMs === 0 ? 1 : timeoutMs;
  else if (timeoutMs === 0) r = 0;
  else r = remainingMs(waitLeaf(w, b, timeoutMs, () => slotDone(w, slot) && fenceSlotIsSignaled(w, slot)));
  if (traced) traceSlot('dma_fence_wait_end', w, slot, r); // the caller's fd keeps the slot alive
  return r;
}

/**
 * `dma_fence_enable_sw_signaling` on a slot. Without a view in this thread there
 * are no driver ops or callbacks here to enable, so it only records the request.
 */
export function fenceSlotEnable(w: World, slot: number): void {
  const view = wrappers[slot];
  if (view) view.enableSwSignaling();
  else Atomics.or(w.i32, w.base(slot) + F_FLAGS, DMA_FENCE_FLAG_ENABLE_SIGNAL);
}

function checkWaitAny(fences: readonly DmaFence[], timeoutMs: number): void {
  if (!Array.isArray(fences)) throw new TypeError('waitAnyTimeout: fences must be an array');
  if (fences.length === 0) throw fail('EINVAL', 'dma_fence_wait_any_timeout', 'no fences to wait for');
  for (const f of fences) if (!(f instanceof DmaFence)) throw new TypeError('waitAnyTimeout: not a DmaFence');
  checkTimeout(timeoutMs, 'dma_fence_wait_any_timeout');
}

/**
 * @internal The fence part of the reservation object's slot-reuse rule: `a` and
 * `b` share a context and `a` is later than or the same as `b` (dma_fence_is_later_or_same,
 * in `a`'s seqno mode). Makes no BigInts when both fences are in the same form.
 */
export function fenceSupersedes(a: DmaFence, b: DmaFence): boolean {
  return supersedesImpl(a, b);
}

/**
 * @internal A fence a reservation object accepts: a `DmaFence` that is not a
 * container (the kernel adds no arrays or chains to a dma_resv). Small, for the
 * resv add path to inline.
 */
export function fenceAddable(f: unknown): boolean {
  return addableImpl(f);
}

/* Driver fences and stubs are signalled explicitly: waiters sleep on their own state word. */
/** @internal take an internal reference on a fence for a container or file. */
export function fenceRef(f: DmaFence): number {
  const slot = f.slot;
  ref(W, slot);
  return slot;
}

/** @internal drop an internal reference taken with `fenceRef` / `allocFenceSlot`. */
export function fenceUnref(slot: number): void {
  unref(W ?? world(), slot);
}
