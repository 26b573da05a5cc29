/**
 * DOC: vgem fences and the DRM file's id tables (drivers/gpu/drm/vgem/vgem_fence.c)
 *
 * DRM_IOCTL_VGEM_FENCE_ATTACH puts a new fence into a GEM object's reservation
 * object and hands the caller an id; DRM_IOCTL_VGEM_FENCE_SIGNAL signals it by
 * that id. The rules, as vgem_fence.c has them:
 *
 * - every fence has its own context (dma_fence_context_alloc(1)), seqno 1, driver
 *   name "vgem", timeline name "unbound";
 * - attach refuses with EBUSY when a fence of the object conflicts: a write
 *   conflicts with any unsignalled fence (usage ≤ READ), a read with a writer
 *   (≤ WRITE) — `dma_resv_test_signaled(resv, dma_resv_usage_rw(write))`; the new
 *   fence joins with usage WRITE or READ;
 * - ids are per DRM file, from 1, never reused while the file lives: a signalled
 *   id stays allocated with no fence (idr_replace(…, NULL, id)), so signalling it
 *   again is ENOENT, as is an id never handed out;
 * - a fence not signalled within VGEM_FENCE_TIMEOUT_MS (10 s) signals itself
 *   (status 1: the kernel's timer sets no error); SIGNAL of such a fence returns
 *   ETIMEDOUT (after consuming the id, as the kernel does);
 * - closing the DRM file signals every fence still in its table.
 *
 * Where JS forces a difference: the kernel's timer runs in softirq context; here
 * it is an unref'd setTimeout of the thread that attached the fence, so it fires
 * only while that thread's event loop runs. A thread that blocks on its own
 * vgem fence (e.g. a synchronous DMA_BUF_IOCTL_SYNC right after attaching) is not
 * woken by the timer; one that exits takes its timers along. The fence is
 * shared, so any thread holding the DRM fd can still signal it, and closing the
 * file signals it.
 *
 * The id tables (this fence table and vgem.ts's GEM handle table) live in the
 * DRM file's slot, since its fd can be sent to another thread: each is a slot
 * list (shared/list.ts) that doubles when full, entries 0 = empty, guarded by
 * the file's lock word.
 */
import { DmaFence, fenceRef, fenceSlotIsSignaled, fenceUnref, signalSlot, type DmaFenceOps } from './dma-fence.js';
import { DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DmaResv, dmaResvUsageRw } from './dma-resv.js';
import { errnoName, fail } from './errors.js';
import { FL_AUX } from './file.js';
import { listAlloc, listAt, listFree, listSet } from './shared/list.js';
import { mutexLock, mutexUnlock } from './shared/mutex.js';
import { Kind, slotGen, slotKind, tryRef, unref } from './shared/slab.js';
import { world, type World } from './shared/world.js';

/** vgem's VGEM_FENCE_TIMEOUT: a fence signals itself this long after it was attached. */
export const VGEM_FENCE_TIMEOUT_MS = 10_000;

/* DRM file words (FL_AUX…): the lock, then two tables of three words (list head, capacity, ids used). */
export const D_LOCK = FL_AUX;
export const HANDLE_IDR = FL_AUX + 1;
export const FENCE_IDR = FL_AUX + 4;
const T_HEAD = 0;
const T_CAP = 1;
const T_USED = 2;
const MIN_CAPACITY = 16;

/* ---- id tables (idr), file lock held ---- */

/** An empty table at word `at` of file `file`'s slot. */
export function idrInit(w: World, file: number, at: number): void {
  const b = w.base(file) + at;
  w.i32[b + T_HEAD] = -1;
  w.i32[b + T_CAP] = 0;
  w.i32[b + T_USED] = 0;
}

/** Entry of `id`, or 0 (free, or never allocated). */
export function idrFind(w: World, file: number, at: number, id: number): number {
  const b = w.base(file) + at;
  if (!Number.isInteger(id) || id < 1 || id > w.i32[b + T_USED]!) return 0;
  return listAt(w, w.i32[b + T_HEAD]!, id - 1);
}

/**
 * Replace the entry of `id`. @returns the old entry, or -1 if `id` was never
 * allocated (idr_replace's ERR_PTR(-ENOENT)).
 */
export function idrReplace(w: World, file: number, at: number, id: number, value: number): number {
  const b = w.base(file) + at;
  if (!Number.isInteger(id) || id < 1 || id > w.i32[b + T_USED]!) return -1;
  const old = listAt(w, w.i32[b + T_HEAD]!, id - 1);
  listSet(w, w.i32[b + T_HEAD]!, id - 1, value);
  return old;
}

function grow(w: World, b: number, syscall: string): void {
  const cap = w.i32[b + T_CAP]!;
  const next = Math.max(MIN_CAPACITY, cap * 2);
  const head = listAlloc(w, next, syscall);
  const old = w.i32[b + T_HEAD]!;
  for (let i = 0; i < w.i32[b + T_USED]!; i++) listSet(w, head, i, listAt(w, old, i));
  w.i32[b + T_HEAD] = head;
  w.i32[b + T_CAP] = next;
  if (old >= 0) listFree(w, old);
}

/**
 * Store `value` (non-zero) under a new id: the lowest free one (`reuse`, as GEM
 * handles are) or the next never used (vgem fence ids). @throws ENOMEM (nothing changed).
 */
export function idrAlloc(w: World, file: number, at: number, value: number, reuse: boolean, syscall: string): number {
  const b = w.base(file) + at;
  const used = w.i32[b + T_USED]!;
  if (reuse) {
    for (let i = 0; i < used; i++) {
      if (listAt(w, w.i32[b + T_HEAD]!, i) === 0) {
        listSet(w, w.i32[b + T_HEAD]!, i, value);
        return i + 1;
      }
    }
  }
  if (used === w.i32[b + T_CAP]!) grow(w, b, syscall);
  listSet(w, w.i32[b + T_HEAD]!, used, value);
  w.i32[b + T_USED] = used + 1;
  return used + 1;
}

/** Every [id, entry] whose entry is non-zero. */
export function idrEntries(w: World, file: number, at: number): Array<[number, number]> {
  const b = w.base(file) + at;
  const out: Array<[number, number]> = [];
  for (let i = 0; i < w.i32[b + T_USED]!; i++) {
    const e = listAt(w, w.i32[b + T_HEAD]!, i);
    if (e !== 0) out.push([i + 1, e]);
  }
  return out;
}

/** Free the table's storage (not what its entries name). */
export function idrDestroy(w: World, file: number, at: number): void {
  const b = w.base(file) + at;
  if (w.i32[b + T_HEAD]! >= 0) listFree(w, w.i32[b + T_HEAD]!);
  idrInit(w, file, at);
}

/** Run `fn` with DRM file `file`'s lock held. */
export function withFileLock<T>(w: World, file: number, fn: () => T): T {
  mutexLock(w, w.base(file) + D_LOCK);
  try {
    return fn();
  } finally {
    mutexUnlock(w, w.base(file) + D_LOCK);
  }
}

/* ---- the 10 s timer (per thread: timers cannot be shared) ---- */

const timers = new Map<number, ReturnType<typeof setTimeout>>();

/** vgem_fence_timeout: signal the fence if it is still the one armed for (same slot generation). */
function vgemFenceTimeout(slot: number, gen: number): void {
  timers.delete(slot);
  const w = world();
  if (slotKind(w, slot) !== Kind.Fence || !tryRef(w, slot)) return;
  try {
    if (slotGen(w, slot) === gen) signalSlot(w, slot);
  } finally {
    unref(w, slot);
  }
}

function armTimeout(w: World, slot: number): void {
  cancelTimeout(slot);
  const gen = slotGen(w, slot);
  const t = setTimeout(() => vgemFenceTimeout(slot, gen), VGEM_FENCE_TIMEOUT_MS);
  (t as { unref?: () => void }).unref?.(); // an expiring fence must not keep the thread alive
  timers.set(slot, t);
}

/** del_timer_sync, for timers of this thread (another thread's finds the fence signalled or gone). */
function cancelTimeout(slot: number): void {
  const t = timers.get(slot);
  if (t === undefined) return;
  clearTimeout(t);
  timers.delete(slot);
}

/* ---- the ioctls' work ---- */

const vgemFenceOps: DmaFenceOps = {
  getDriverName: () => 'vgem',
  getTimelineName: () => 'unbound',
};

function addToResv(resvSlot: number, fence: DmaFence, write: boolean): void {
  const resv = DmaResv.fromSlot(resvSlot);
  try {
    if (!resv.testSignaled(dmaResvUsageRw(write))) {
      throw fail('EBUSY', 'ioctl', `the object has an unsignalled ${write ? '' : 'write '}fence that conflicts`);
    }
    const locked = resv.lock(null);
    if (typeof locked === 'number') throw fail(errnoName(-locked) as never, 'ioctl', 'dma_resv_lock failed');
    try {
      locked.reserveFences(1);
      locked.addFence(fence, write ? DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ);
    } finally {
      locked.unlock();
    }
  } finally {
    resv.put();
  }
}

/**
 * vgem_fence_attach_ioctl after the flag checks and the object lookup: a new
 * fence in reservation object `resvSlot`, its id in DRM file `file`.
 * @returns the id. @throws EBUSY (conflict), ENOMEM; a fence that gets no id is
 * signalled at once, as the kernel's error path does.
 */
export function vgemFenceAttach(file: number, resvSlot: number, write: boolean): number {
  const w = world();
  const fence = DmaFence.init(vgemFenceOps, DmaFence.contextAlloc(1), 1);
  let id = 0;
  try {
    addToResv(resvSlot, fence, write);
    const slot = fenceRef(fence); // the table's reference
    try {
      id = withFileLock(w, file, () => idrAlloc(w, file, FENCE_IDR, slot + 1, false, 'ioctl'));
    } catch (e) {
      fenceUnref(slot);
      throw e;
    }
    armTimeout(w, slot);
    return id;
  } finally {
    if (id === 0) fence.signal();
    fence.put();
  }
}

/**
 * vgem_fence_signal_ioctl after the flag check: take fence `id` out of the table
 * and signal it. @throws ENOENT (unknown or already signalled through this call),
 * ETIMEDOUT (it had expired — the id is consumed all the same).
 */
export function vgemFenceSignal(file: number, id: number): void {
  const w = world();
  const entry = withFileLock(w, file, () => idrReplace(w, file, FENCE_IDR, id, 0));
  if (entry <= 0) throw fail('ENOENT', 'ioctl', `no vgem fence ${id} in this DRM file`);
  const slot = entry - 1;
  const expired = fenceSlotIsSignaled(w, slot);
  signalSlot(w, slot);
  cancelTimeout(slot);
  fenceUnref(slot);
  if (expired) throw fail('ETIMEDOUT', 'ioctl', `vgem fence ${id} had already expired (${VGEM_FENCE_TIMEOUT_MS} ms)`);
}

/** vgem_fence_close (the file's release: nobody else can reach it): signal and drop every fence. */
export function vgemFenceClose(w: World, file: number): void {
  for (const [, entry] of idrEntries(w, file, FENCE_IDR)) {
    signalSlot(w, entry - 1);
    cancelTimeout(entry - 1);
    fenceUnref(entry - 1);
  }
  idrDestroy(w, file, FENCE_IDR);
}
