/**
 * DOC: sw_sync — software timelines for tests
 *
 * Opening sw_sync creates a timeline: a fresh fence context, a signed 32-bit
 * counter starting at 0, and a name (the opener's task name). Each point ("sync_pt")
 * is a fence with seqno = the requested value, compared as 32-bit; a point is
 * signalled once it is not later than the counter. Kernel-contract §5.4,
 * `drivers/dma-buf/sw_sync.c`.
 *
 * - `createFence(v)`: if a pending point with seqno v exists, *that* fence is
 *   returned again; if v is already reached, the fence is born signalled and not
 *   tracked; otherwise it joins the pending list, kept sorted by 32-bit distance.
 * - `inc(n)` (u32): adds n (in INT_MAX chunks above INT_MAX), then signals every
 *   pending point that is no longer later than the counter, in seqno order.
 * - `close()` (the file's release): every still-pending point gets -ENOENT and is
 *   signalled; the timeline itself lives on until its last point is freed.
 *
 * Everything is shared: the timeline, its counter and its points live in the
 * shared table, so any thread holding the timeline (an fd sent to it) can
 * increment it, and waiters anywhere wake.
 *
 * Lock rule (JS forces a difference): states are published under the timeline
 * lock, in seqno order, as the kernel does; the sleepers are woken, and this
 * thread's *callbacks* run, right after the lock is dropped, still inside
 * `inc()`/`close()`. The kernel wakes under its spinlock, which also stops
 * preemption; this lock does not, so a thread woken under it would often run
 * straight into it (its next step is to close its sync_file or create its next
 * point) and sleep again. A callback may also create points on the same timeline
 * (the kernel forbids that; here it would otherwise self-deadlock). Each signalled
 * point is referenced under the lock until its wake-up is done, as
 * `sync_timeline_signal` does.
 */
import { readFileSync } from 'node:fs';
import {
  DmaFence, fenceAdoptSlot, fenceViewIfAny,
} from './dma-fence.js';
import {
  allocFenceSlot, claimSignal, DMA_FENCE_FLAG_USER_BITS, F_AUX, F_ERROR, F_FLAGS, F_SEQ_LO, F_TIMELINE_NAME, FenceKind,
  finishSignal, publishState, recordDeadline, registerFenceKind, seqno32IsLater, slotSignaled, slotTimestamp,
  traceSlot, wakeSleepers,
} from './dma-fence-slot.js';
import { ERRNO } from './errors.js';
import { allocFile, fileGet, FileHandle, filePriv, FileType, receiveFile, registerFileType } from './file.js';
import { mutexLock, mutexUnlock } from './shared/mutex.js';
import {
  allocSlot, copyName, encodeName, Kind, onRelease, readName, ref, S_DATA, S_LOCK, S_NEXT, S_PREV, tryRef, unref,
  writeName,
} from './shared/slab.js';
import { bumpEpoch, ktimeNowNs } from './shared/wait.js';
import { H_TIMELINE_HEAD, H_TIMELINE_LOCK, H_TIMELINE_TAIL, world, type World } from './shared/world.js';
import { traceNow, tracing } from './trace.js';

/* Timeline slot. */
const TL_VALUE = S_DATA + 0;
const TL_CTX_LO = S_DATA + 1;
const TL_CTX_HI = S_DATA + 2;
const TL_PT_HEAD = S_DATA + 3;
const TL_PT_TAIL = S_DATA + 4;
const TL_NAME = 32;
const TL_NAME_WORDS = 8;

/* Point (fence) aux words. */
const PT_TIMELINE = F_AUX + 0;
const PT_NEXT = F_AUX + 1;
const PT_PREV = F_AUX + 2;
const PT_LINKED = F_AUX + 3;

/** sw_sync's "has deadline" fence flag. */
export const SW_SYNC_HAS_DEADLINE_BIT = DMA_FENCE_FLAG_USER_BITS;

const INT_MAX = 0x7fffffff;

let comm: string | undefined;

/** The name the kernel gives a timeline: the opening thread's task name (comm, at most 15 bytes). */
export function taskComm(): string {
  if (comm === undefined) {
    try {
      comm = readFileSync('/proc/thread-self/comm', 'utf8').replace(/\n$/, '');
    } catch {
      comm = 'node'; // no procfs (not Linux): Node's own process name
    }
  }
  return comm;
}

/* ---- the pending-point list (timeline lock held) ---- */

/**
 * Take `pt` off the list. PT_LINKED is cleared last, atomically: a releaser that
 * reads 0 there without the lock knows nobody will touch the point again (release).
 */
function unlinkPt(w: World, tl: number, pt: number): void {
  const i32 = w.i32;
  const pb = w.base(pt);
  const next = i32[pb + PT_NEXT]!;
  const prev = i32[pb + PT_PREV]!;
  if (prev >= 0) i32[w.base(prev) + PT_NEXT] = next;
  else i32[w.base(tl) + TL_PT_HEAD] = next;
  if (next >= 0) i32[w.base(next) + PT_PREV] = prev;
  else i32[w.base(tl) + TL_PT_TAIL] = prev;
  Atomics.store(i32, pb + PT_LINKED, 0);
}

function linkBefore(w: World, tl: number, pt: number, before: number): void {
  const i32 = w.i32;
  const pb = w.base(pt);
  const prev = before >= 0 ? i32[w.base(before) + PT_PREV]! : i32[w.base(tl) + TL_PT_TAIL]!;
  i32[pb + PT_NEXT] = before;
  i32[pb + PT_PREV] = prev;
  if (prev >= 0) i32[w.base(prev) + PT_NEXT] = pt;
  else i32[w.base(tl) + TL_PT_HEAD] = pt;
  if (before >= 0) i32[w.base(before) + PT_PREV] = pt;
  else i32[w.base(tl) + TL_PT_TAIL] = pt;
  i32[pb + PT_LINKED] = 1;
}

function ptSignaled(w: World, pt: number): boolean {
  const tl = w.i32[w.base(pt) + PT_TIMELINE]!;
  return !seqno32IsLater(w.i32[w.base(pt) + F_SEQ_LO]!, Atomics.load(w.i32, w.base(tl) + TL_VALUE));
}

/**
 * Under the timeline lock: publish the signal of a claimed point and keep a
 * reference to it for `wakeSignaled` in `done`. A point whose last reference is
 * already gone (its release waits for this lock) has nobody to wake.
 */
function signalLocked(w: World, pt: number, done: number[], traceTs?: number): void {
  publishState(w, pt, ktimeNowNs(), traceTs);
  if (tryRef(w, pt)) done.push(pt);
}

/**
 * After the timeline lock is dropped: wake the sleepers of the points signalled
 * under it and the multi-waiters, run this thread's callbacks in order, then drop
 * the references `signalLocked` took.
 */
function wakeSignaled(w: World, done: number[]): void {
  if (done.length === 0) return;
  for (const pt of done) wakeSleepers(w, pt);
  bumpEpoch(w);
  for (const pt of done) fenceViewIfAny(pt)?.runCallbacks();
  for (const pt of done) unref(w, pt);
}

/* ---- timeline core, shared by the driver API and uapi ---- */

function timelineCreate(name: string): number {
  const w = world();
  const tl = allocSlot(w, Kind.Timeline, 'sw_sync_open');
  const b = w.base(tl);
  const ctx = DmaFence.contextAlloc(1);
  w.i32[b + TL_CTX_LO] = Number(ctx & 0xffffffffn) | 0;
  w.i32[b + TL_CTX_HI] = Number(ctx >> 32n) | 0;
  w.i32[b + TL_PT_HEAD] = -1;
  w.i32[b + TL_PT_TAIL] = -1;
  writeName(w, b + TL_NAME, TL_NAME_WORDS, name);
  mutexLock(w, H_TIMELINE_LOCK);
  const tail = w.i32[H_TIMELINE_TAIL]!;
  w.i32[b + S_PREV] = tail;
  w.i32[b + S_NEXT] = -1;
  if (tail >= 0) w.i32[w.base(tail) + S_NEXT] = tl;
  else w.i32[H_TIMELINE_HEAD] = tl;
  w.i32[H_TIMELINE_TAIL] = tl;
  mutexUnlock(w, H_TIMELINE_LOCK);
  return tl;
}

onRelease(Kind.Timeline, (w, tl) => {
  const b = w.base(tl);
  mutexLock(w, H_TIMELINE_LOCK);
  const prev = w.i32[b + S_PREV]!;
  const next = w.i32[b + S_NEXT]!;
  if (prev >= 0) w.i32[w.base(prev) + S_NEXT] = next;
  else w.i32[H_TIMELINE_HEAD] = next;
  if (next >= 0) w.i32[w.base(next) + S_PREV] = prev;
  else w.i32[H_TIMELINE_TAIL] = prev;
  mutexUnlock(w, H_TIMELINE_LOCK);
});

const SW_SYNC_NAME = encodeName('sw_sync', TL_NAME_WORDS);

/** sync_pt_create: returns a fence slot with one internal reference for the caller. */
function ptCreate(w: World, tl: number, value: number): number {
  const b = w.base(tl);
  // Contexts stay far below 2^53, so the number form is exact and avoids BigInt here.
  const ctx = (w.i32[b + TL_CTX_HI]! >>> 0) * 4294967296 + (w.i32[b + TL_CTX_LO]! >>> 0);
  const pt = allocFenceSlot(FenceKind.SwSync, ctx, value >>> 0, false, SW_SYNC_NAME, null, 'sw_sync_create_fence');
  const pb = w.base(pt);
  copyName(w, b + TL_NAME, pb + F_TIMELINE_NAME, TL_NAME_WORDS);
  if (tracing) traceSlot('dma_fence_init', w, pt); // also a point dropped below for an existing one, as sync_pt_create
  ref(w, tl); // every point references its timeline
  w.i32[pb + PT_TIMELINE] = tl;
  w.i32[pb + PT_NEXT] = -1;
  w.i32[pb + PT_PREV] = -1;
  mutexLock(w, b + S_LOCK);
  try {
    if (ptSignaled(w, pt)) {
      if (claimSignal(w, pt)) finishSignal(w, pt, ktimeNowNs());
      return pt;
    }
    let at = w.i32[b + TL_PT_HEAD]!;
    while (at >= 0) {
      const cmp = ((value | 0) - w.i32[w.base(at) + F_SEQ_LO]!) | 0;
      if (cmp === 0 && tryRef(w, at)) {
        mutexUnlock(w, b + S_LOCK);
        unref(w, pt); // the new point is not needed: its release drops the timeline ref
        mutexLock(w, b + S_LOCK);
        return at;
      }
      if (cmp <= 0) break;
      at = w.i32[w.base(at) + PT_NEXT]!;
    }
    linkBefore(w, tl, pt, at);
    return pt;
  } finally {
    mutexUnlock(w, b + S_LOCK);
  }
}

/** sync_timeline_signal: add `inc` to the counter and signal what it reached. */
function timelineSignal(w: World, tl: number, inc: number): void {
  const b = w.base(tl);
  const done: number[] = [];
  mutexLock(w, b + S_LOCK);
  try {
    // Points count as signalled (ptSignaled) from this store on: their trace events say so.
    const traceTs = tracing ? traceNow() : undefined;
    Atomics.store(w.i32, b + TL_VALUE, (w.i32[b + TL_VALUE]! + inc) | 0);
    let pt = w.i32[b + TL_PT_HEAD]!;
    while (pt >= 0 && ptSignaled(w, pt)) {
      const next = w.i32[w.base(pt) + PT_NEXT]!;
      if (claimSignal(w, pt)) signalLocked(w, pt, done, traceTs);
      unlinkPt(w, tl, pt); // last: see release
      pt = next;
    }
  } finally {
    mutexUnlock(w, b + S_LOCK);
  }
  wakeSignaled(w, done);
}

/** sw_sync_debugfs_release: pending points get -ENOENT and signal; then the file's timeline ref goes. */
function timelineClose(w: World, tl: number): void {
  const b = w.base(tl);
  const done: number[] = [];
  mutexLock(w, b + S_LOCK);
  try {
    for (let pt = w.i32[b + TL_PT_HEAD]!; pt >= 0; pt = w.i32[w.base(pt) + PT_NEXT]!) {
      if (!claimSignal(w, pt)) continue;
      Atomics.store(w.i32, w.base(pt) + F_ERROR, -ERRNO.ENOENT);
      signalLocked(w, pt, done);
    }
  } finally {
    mutexUnlock(w, b + S_LOCK);
  }
  wakeSignaled(w, done);
  unref(w, tl);
}

registerFenceKind(FenceKind.SwSync, {
  leaf: true,
  signaled: ptSignaled,
  setDeadline(fence, deadlineNs) {
    const w = world();
    const pb = w.base(fence.slot);
    const tl = w.i32[pb + PT_TIMELINE]!;
    mutexLock(w, w.base(tl) + S_LOCK);
    recordDeadline(w, pb, deadlineNs);
    Atomics.or(w.i32, pb + F_FLAGS, SW_SYNC_HAS_DEADLINE_BIT);
    mutexUnlock(w, w.base(tl) + S_LOCK);
  },
  release(w, pt) {
    const pb = w.base(pt);
    const tl = w.i32[pb + PT_TIMELINE]!;
    // The kernel always takes the lock here. A point already off the list (signalled
    // by inc, or born signalled) is out of every other thread's reach, and whoever
    // unlinked it cleared PT_LINKED last: the lock would only wait for that thread.
    if (Atomics.load(w.i32, pb + PT_LINKED)) {
      mutexLock(w, w.base(tl) + S_LOCK);
      if (w.i32[pb + PT_LINKED]) unlinkPt(w, tl, pt);
      mutexUnlock(w, w.base(tl) + S_LOCK);
    }
    unref(w, tl);
  },
});

registerFileType(FileType.SwSync, {
  name: 'sw_sync',
  release: (w, _file, tl) => timelineClose(w, tl),
});

/* ---- slot-level entry points (the uapi: the caller's fd keeps the file alive) ---- */

/** SW_SYNC_IOC_CREATE_FENCE on timeline file `file`: a point slot with one internal reference. */
export function swSyncCreatePointSlot(file: number, value: number): number {
  const w = world();
  return ptCreate(w, filePriv(w, file), value >>> 0);
}

/** SW_SYNC_IOC_INC on timeline file `file`. */
export function swSyncIncFile(file: number, inc: number): void {
  const w = world();
  const tl = filePriv(w, file);
  let v = inc >>> 0;
  while (v > INT_MAX) {
    timelineSignal(w, tl, INT_MAX);
    v -= INT_MAX;
  }
  timelineSignal(w, tl, v);
}

/* ---- driver API ---- */

/** True if `fence` is a sw_sync point (what SW_SYNC_GET_DEADLINE accepts). */
export function isSwSyncFence(fence: DmaFence): boolean {
  return fence.kind === FenceKind.SwSync;
}

/** sw_sync's deadline getter: the earliest deadline, or -ENOENT if none was ever set. */
export function swSyncGetDeadline(fence: DmaFence): bigint | number {
  if (!isSwSyncFence(fence)) return -ERRNO.EINVAL;
  if (!(fence.flags & SW_SYNC_HAS_DEADLINE_BIT)) return -ERRNO.ENOENT;
  return fence.deadline ?? -ERRNO.ENOENT;
}

/**
 * A sw_sync timeline, as an open sw_sync file: the handle is one reference to the
 * file; `close()` drops it, and the last close anywhere fails pending points with
 * -ENOENT.
 */
export class SwSyncTimeline extends FileHandle {
  private constructor(file: number) {
    super(file, 'sw_sync');
  }

  /** Open a new timeline (sw_sync_debugfs_open). @throws ENOMEM when the shared table is full. */
  static create(name: string = taskComm()): SwSyncTimeline {
    if (typeof name !== 'string') throw new TypeError('SwSyncTimeline.create: name must be a string');
    const tl = timelineCreate(name);
    try {
      return new SwSyncTimeline(allocFile(FileType.SwSync, tl, 2 /* O_RDWR */, 'sw_sync_open'));
    } catch (e) {
      unref(world(), tl);
      throw e;
    }
  }

  /** @internal a handle on file `fileSlot` (takes one more hold). */
  static fromFile(fileSlot: number): SwSyncTimeline {
    fileGet(fileSlot);
    return new SwSyncTimeline(fileSlot);
  }

  /** Receive a token made by `share()`. @throws EINVAL if it does not carry one sw_sync timeline. */
  static receive(token: unknown): SwSyncTimeline {
    return new SwSyncTimeline(receiveFile(token, FileType.SwSync, 'sw_sync_receive'));
  }

  #tl(): number {
    return filePriv(world(), this.file);
  }

  get name(): string {
    const w = world();
    return readName(w, w.base(this.#tl()) + TL_NAME, TL_NAME_WORDS);
  }

  /** The counter (signed 32-bit, as the kernel's `int value`). */
  get value(): number {
    const w = world();
    return Atomics.load(w.i32, w.base(this.#tl()) + TL_VALUE);
  }

  get context(): bigint {
    const w = world();
    const b = w.base(this.#tl());
    return (BigInt(w.i32[b + TL_CTX_HI]! >>> 0) << 32n) | BigInt(w.i32[b + TL_CTX_LO]! >>> 0);
  }

  /**
   * A point at `value` (u32). Returns a new reference to the existing pending point
   * of that value if there is one.
   * @throws TypeError if `value` is not an integer in [0, 2^32).
   */
  createFence(value: number): DmaFence {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw new TypeError('createFence: value must be a u32');
    }
    const w = world();
    return fenceAdoptSlot(ptCreate(w, this.#tl(), value));
  }

  /** SW_SYNC_IOC_INC: advance the counter by `inc` (u32) and signal what it reached. */
  inc(inc: number): void {
    if (!Number.isInteger(inc) || inc < 0 || inc > 0xffffffff) throw new TypeError('inc: increment must be a u32');
    swSyncIncFile(this.file, inc);
  }

}

/* ---- debugfs: /sys/kernel/debug/sync/info ---- */

function statusStr(w: World, pt: number): string {
  if (!slotSignaled(w, pt)) return 'active';
  return w.i32[w.base(pt) + F_ERROR]! < 0 ? 'error' : 'signaled';
}

/** The text of `/sys/kernel/debug/sync/info` (sync_debug.c), every timeline of every thread. */
export function syncInfoText(): string {
  const w = world();
  let out = 'objs:\n--------------\n';
  mutexLock(w, H_TIMELINE_LOCK);
  try {
    for (let tl = w.i32[H_TIMELINE_HEAD]!; tl >= 0; tl = w.i32[w.base(tl) + S_NEXT]!) {
      const b = w.base(tl);
      const value = Atomics.load(w.i32, b + TL_VALUE);
      out += `${readName(w, b + TL_NAME, TL_NAME_WORDS)}: ${value}\n`;
      mutexLock(w, b + S_LOCK);
      for (let pt = w.i32[b + TL_PT_HEAD]!; pt >= 0; pt = w.i32[w.base(pt) + PT_NEXT]!) {
        const pb = w.base(pt);
        let line = `  fence ${statusStr(w, pt)}`;
        if (slotSignaled(w, pt)) {
          const ts = slotTimestamp(w, pt);
          line += `@${ts / 1_000_000_000n}.${String(ts % 1_000_000_000n).padStart(9, '0')}`;
        }
        out += `${line}: ${w.i32[pb + F_SEQ_LO]! >>> 0} / ${value}\n`;
      }
      mutexUnlock(w, b + S_LOCK);
      out += '\n';
    }
  } finally {
    mutexUnlock(w, H_TIMELINE_LOCK);
  }
  return out + 'fences:\n--------------\n';
}
