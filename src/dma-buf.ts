/**
 * DOC: dma_buf — a buffer shared between threads (drivers/dma-buf/dma-buf.c)
 *
 * An exporter wraps its memory in a buffer with `DmaBuf.export(info)`; importers
 * attach to it (dma-buf-attach.ts), map it for their device, bracket CPU access,
 * mmap and vmap it. The buffer's *file* is its lifetime (kernel-contract §1.4):
 * fds in any thread, handles of the driver API, mappings and attachments each
 * hold the file, and the last one to go runs `release` exactly once, in whichever
 * thread dropped it.
 *
 * Shared memory: the buffer is a slot (size, names, exporter words, attachment
 * list, vmap count) that points at its reservation object (dma-resv.ts), so a
 * fence added in a worker is seen by a CPU-access wait in the main thread at once.
 *
 * Exporter ops are JS functions, and a function cannot live in shared memory.
 * So an ops object carries a `name` and is registered per thread
 * (`registerDmaBufOps`, done by `export` for the exporting thread); a thread that
 * calls into a buffer finds the ops by that name. The exporter's module must
 * therefore be loaded in every thread that uses its buffers — as a kernel
 * exporter's module is pinned while its buffers live. The built-in exporters
 * (heaps, udmabuf, vgem) are registered wherever dmabuf is loaded. What ops
 * share between threads lives in the buffer: `priv` (one number) and 16
 * exporter words (`exporterWords`).
 *
 * The kernel's BUG/WARN invariants are explicit errors (§8): export without the
 * mandatory ops or priv, pin without unpin (EINVAL); dropping the last reference
 * while vmapped is refused (EBUSY) in the driver API, and reported as a warning
 * when it happens through a close.
 */
import { DmaFence } from './dma-fence.js';
import { isContainer } from './dma-fence-array.js';
import { unwrap } from './dma-fence-unwrap.js';
import {
  DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DmaResv, USAGE_NAMES, type DmaResvLocked, type DmaResvUsage,
  dmaResvSlotHeldByMe,
} from './dma-resv.js';
import type { DmaBufAttachment } from './dma-buf-attach.js';
import {
  DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, type DmaDataDirection, type SgTable,
} from './device.js';
import { errnoName, fail } from './errors.js';
import {
  allocFile, expectFile, FileHandle, fileFlags, fileGet, fileInode, filePriv, FileType, receiveFile, registerFileType,
} from './file.js';
import { trackMapping, untrackMapping } from './mmap.js';
import { mutexLock, mutexUnlock } from './shared/mutex.js';
import { PAGE_SIZE } from './shared/arena.js';
import {
  allocSlot, Kind, localHolds, readName, ref, S_DATA, S_LOCK, slotGen, slotRefs, unref, writeName,
} from './shared/slab.js';
import { H_DMABUF_HEAD, H_DMABUF_LOCK, world, type World } from './shared/world.js';
import { SyncFile } from './sync-file.js';
import { traceRecord, tracing, type TraceBuffer, type TraceEvent } from './trace.js';

/* Slot layout (Kind.Buffer). */
const B_FILE = S_DATA; // the file whose refcount is the buffer's (not a reference)
const B_RESV = S_DATA + 1; // reservation object (an internal reference)
const B_PRIV = S_DATA + 2;
const B_FLAGS = S_DATA + 3;
const B_SIZE = S_DATA + 4; // u64 as two words: lo, hi
const B_ATTACH = S_DATA + 6; // first attachment (dma-buf-attach.ts links them)
const B_NATTACH = S_DATA + 7;
const B_VMAP = S_DATA + 8; // vmapping_counter
const B_NEXT = S_DATA + 9; // global list
const B_PREV = S_DATA + 10;
const B_NAME_SET = S_DATA + 11;
const B_EXP_NAME = 24;
const B_NAME = 32;
const B_OPS_NAME = 40;
const NAME_WORDS = 8;
/** Words an exporter may use for state every thread must see. */
export const B_EXP_DATA = 48;
export const EXPORTER_WORDS = 16;

const FLAG_DYNAMIC = 1; // the exporter has pin/unpin

export const O_ACCMODE = 3;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const DMA_BUF_NAME_LEN = 32;

/** struct dma_buf_ops. Required: `name`, `mapDmaBuf`, `unmapDmaBuf`, `release`. */
export interface DmaBufOps {
  /** Identifies these ops in every thread (registerDmaBufOps). */
  readonly name: string;
  attach?(buf: DmaBuf, attach: DmaBufAttachment): number | void;
  detach?(buf: DmaBuf, attach: DmaBufAttachment): void;
  pin?(attach: DmaBufAttachment): number | void;
  unpin?(attach: DmaBufAttachment): void;
  mapDmaBuf(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | null;
  unmapDmaBuf(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void;
  release(buf: DmaBuf): void;
  beginCpuAccess?(buf: DmaBuf, dir: DmaDataDirection): number | void;
  endCpuAccess?(buf: DmaBuf, dir: DmaDataDirection): number | void;
  /**
   * Map pages [pgoff, pgoff + pages): a live view of the buffer's bytes (bounds
   * already checked). `shared` is false for a MAP_PRIVATE mapping (the vma's
   * VM_SHARED), which some exporters refuse (EINVAL).
   */
  mmap?(buf: DmaBuf, pgoff: number, pages: number, shared: boolean): Uint8Array;
  /** A view of the whole buffer (dma_buf_vmap's iosys_map). */
  vmap?(buf: DmaBuf): Uint8Array;
  vunmap?(buf: DmaBuf, map: Uint8Array): void;
  /**
   * Extension (not in the kernel; see dma-buf-attach.ts): device-side access
   * brackets for importers that keep a mapping cached.
   */
  beginAccess?(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): number | void;
  endAccess?(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): number | void;
}

/** struct dma_buf_export_info */
export interface DmaBufExportInfo {
  ops: DmaBufOps;
  /** Exporter-private number (kernel: a non-NULL pointer); shared by every thread. */
  priv: number;
  size: number;
  /** exp_name; default the ops name (DEFINE_DMA_BUF_EXPORT_INFO's module name). */
  expName?: string;
  /** File flags: only O_ACCMODE and O_NONBLOCK are kept. Default O_RDWR. */
  flags?: number;
  /** A reservation object to share; default a new one embedded in the buffer. */
  resv?: DmaResv;
}

const opsByName = new Map<string, DmaBufOps>();

/**
 * Make `ops` findable in this thread for buffers exported with them anywhere.
 * @throws EEXIST if another ops object already has this name here.
 */
export function registerDmaBufOps(ops: DmaBufOps): void {
  const known = opsByName.get(ops.name);
  if (known && known !== ops) throw fail('EEXIST', 'dma_buf_export', `other dma_buf_ops named '${ops.name}' are registered`);
  opsByName.set(ops.name, ops);
}

/**
 * Per thread, the ops each live buffer slot resolved to, with the slot's generation:
 * finding them by name means decoding the name, which every fd-level call would
 * otherwise pay. A reused slot has a new generation and misses.
 */
const opsBySlot = new Map<number, { gen: number; ops: DmaBufOps }>();

/** The ops of buffer slot `slot` in this thread. @throws ENODEV if its exporter is not loaded here. */
function opsOf(w: World, slot: number): DmaBufOps {
  const gen = slotGen(w, slot);
  const hit = opsBySlot.get(slot);
  if (hit?.gen === gen) return hit.ops;
  const ops = opsByName.get(opsName(w, slot));
  if (!ops) throw fail('ENODEV', 'dma_buf', `exporter '${opsName(w, slot)}' has no ops in this thread: load the module that registers them`);
  opsBySlot.set(slot, { gen, ops });
  return ops;
}

function opsName(w: World, slot: number): string {
  return readName(w, w.base(slot) + B_OPS_NAME, NAME_WORDS);
}

function checkOps(info: DmaBufExportInfo): void {
  const ops = info?.ops;
  if (info?.priv === undefined || info.priv === null || !ops || typeof ops.mapDmaBuf !== 'function'
    || typeof ops.unmapDmaBuf !== 'function' || typeof ops.release !== 'function') {
    throw fail('EINVAL', 'dma_buf_export', 'priv, ops, ops.mapDmaBuf, ops.unmapDmaBuf and ops.release are required');
  }
  if (!Number.isInteger(info.priv) || info.priv < -0x80000000 || info.priv > 0x7fffffff) {
    throw fail('EINVAL', 'dma_buf_export', 'priv must be a 32-bit integer (it is shared between threads)');
  }
  if (!ops.pin !== !ops.unpin) throw fail('EINVAL', 'dma_buf_export', 'ops.pin and ops.unpin come as a pair');
  if (typeof ops.name !== 'string' || ops.name === '') throw fail('EINVAL', 'dma_buf_export', 'ops.name must be a non-empty string');
  if (!Number.isSafeInteger(info.size) || info.size < 0) throw fail('EINVAL', 'dma_buf_export', 'size must be a non-negative integer');
  if (info.resv !== undefined && !(info.resv instanceof DmaResv)) throw fail('EINVAL', 'dma_buf_export', 'resv is not a DmaResv');
}

/** Every leaf fence below container `fence`, each a new reference. */
function leavesOf(fence: DmaFence): DmaFence[] {
  const leaves: DmaFence[] = [];
  try {
    for (const leaf of unwrap(fence)) leaves.push(leaf.get());
  } catch (e) {
    for (const f of leaves) f.put();
    throw e;
  }
  return leaves;
}

/** Turn an op's result (void, 0, or -errno) into an exception. */
export function opResult(r: number | void, syscall: string, what: string): void {
  if (typeof r === 'number' && r < 0) throw fail(errnoName(-r) as never, syscall, `${what} failed`);
}

/**
 * Per thread: the handle fd-level calls use for each buffer file (`DmaBuf.borrow`),
 * with the file slot's generation. A released buffer's entry is dropped by the
 * releasing thread; stale ones elsewhere miss on the generation and are swept.
 */
const borrowed = new Map<number, { gen: number; buf: DmaBuf }>();
let sweepAt = 64;

function sweepBorrowed(w: World): void {
  for (const [file, e] of borrowed) if (slotGen(w, file) !== e.gen) borrowed.delete(file);
  sweepAt = 2 * borrowed.size + 64;
}

/** A handle on a dma-buf: one reference to its file. */
export class DmaBuf extends FileHandle {
  #resv: DmaResv | undefined;
  #ops: DmaBufOps | undefined;
  /** A handle of `borrow`: holds nothing, never closed. */
  #borrowed = false;

  private constructor(file: number) {
    super(file, 'dma_buf');
  }

  /**
   * dma_buf_export: checks in the kernel's order (§1.3), then the file, the slot and
   * the reservation object; the buffer joins the global list last. @returns a handle
   * holding the only reference. @throws EINVAL, EEXIST (ops name), ENOMEM.
   */
  static export(info: DmaBufExportInfo): DmaBuf {
    checkOps(info);
    registerDmaBufOps(info.ops);
    const w = world();
    const slot = allocSlot(w, Kind.Buffer, 'dma_buf_export');
    const b = w.base(slot);
    let file = -1;
    try {
      w.i32[b + B_RESV] = resvRef(w, info.resv);
    } catch (e) {
      unref(w, slot);
      throw e;
    }
    w.i32[b + B_PRIV] = info.priv;
    w.i32[b + B_FLAGS] = info.ops.pin ? FLAG_DYNAMIC : 0;
    w.i32[b + B_SIZE] = info.size % 2 ** 32;
    w.i32[b + B_SIZE + 1] = Math.floor(info.size / 2 ** 32);
    w.i32[b + B_ATTACH] = -1;
    writeName(w, b + B_EXP_NAME, NAME_WORDS, info.expName ?? info.ops.name);
    writeName(w, b + B_OPS_NAME, NAME_WORDS, info.ops.name);
    try {
      file = allocFile(FileType.DmaBuf, slot, (info.flags ?? O_RDWR) & (O_ACCMODE | O_NONBLOCK), 'dma_buf_export');
    } catch (e) {
      unref(w, w.i32[b + B_RESV]!);
      unref(w, slot);
      throw e;
    }
    w.i32[w.base(slot) + B_FILE] = file;
    listAdd(w, slot);
    const buf = new DmaBuf(file);
    buf.#ops = info.ops;
    return buf;
  }

  /** @internal a handle on dma-buf file `file`, taking one more hold. @throws EINVAL if not a dma-buf. */
  static fromFile(file: number, syscall = 'dma_buf_get'): DmaBuf {
    expectFile(world(), file, FileType.DmaBuf, syscall);
    fileGet(file);
    return new DmaBuf(file);
  }

  /**
   * @internal the handle of this thread for a call on dma-buf file `file` made
   * through an fd (uapi ioctl, mmap, poll): it borrows the fd's hold instead of
   * taking one, and its resv borrows the buffer's reference, so a call pays no
   * reference counting and builds no objects after the first. Valid while this
   * thread holds the file; the caller must not keep it or close it.
   * @throws EINVAL if `file` is not a dma-buf.
   */
  static borrow(file: number, syscall: string): DmaBuf {
    const w = world();
    const gen = slotGen(w, file);
    const hit = borrowed.get(file);
    if (hit?.gen === gen) return hit.buf;
    expectFile(w, file, FileType.DmaBuf, syscall);
    if (borrowed.size >= sweepAt) sweepBorrowed(w);
    const buf = new DmaBuf(file);
    buf.#borrowed = true;
    buf.#resv = DmaResv.borrowSlot(w.i32[w.base(filePriv(w, file)) + B_RESV]!);
    borrowed.set(file, { gen, buf });
    return buf;
  }

  /** True if file `slot` is a dma-buf. */
  static isDmaBuf(file: number): boolean {
    const w = world();
    return file >= 0 && file < w.capacity && Atomics.load(w.i32, w.base(file)) === Kind.File
      && w.i32[w.base(file) + S_DATA] === FileType.DmaBuf;
  }

  /** Receive a token made by `share()`. @throws EINVAL unless it carries one dma-buf. */
  static receive(token: unknown): DmaBuf {
    return new DmaBuf(receiveFile(token, FileType.DmaBuf, 'dma_buf_receive'));
  }

  /** get_dma_buf: a new handle (one more reference). */
  get(): DmaBuf {
    return DmaBuf.fromFile(this.file);
  }

  /**
   * dma_buf_put. The kernel BUGs when the last reference goes while the buffer is
   * vmapped; here that put is refused (EBUSY) and nothing changes.
   */
  override close(): void {
    if (this.#borrowed) throw fail('EINVAL', 'dma_buf_put', 'a borrowed handle is never closed');
    const w = world();
    const file = this.file;
    const slot = this.slot;
    if (Atomics.load(w.i32, w.base(slot) + B_VMAP) > 0 && slotRefs(w, file) === 1 && localHolds(file) === 1) {
      throw fail('EBUSY', 'dma_buf_put', 'last reference of a vmapped buffer: vunmap first (kernel: BUG)');
    }
    this.#resv?.put();
    this.#resv = undefined;
    super.close();
  }

  put(): void {
    this.close();
  }

  override forget(): number {
    if (this.#borrowed) throw fail('EINVAL', 'dma_buf_fd', 'a borrowed handle holds no reference to give');
    this.#resv?.put();
    this.#resv = undefined;
    return super.forget();
  }

  /** @internal the buffer slot. */
  get slot(): number {
    return filePriv(world(), this.file);
  }

  get size(): number {
    return bufferSize(world(), this.slot);
  }

  get priv(): number {
    const w = world();
    return w.i32[w.base(this.slot) + B_PRIV]!;
  }

  get expName(): string {
    return bufferSummary(world(), this.slot).expName;
  }

  /** The file's open flags (O_ACCMODE | O_NONBLOCK). */
  get flags(): number {
    return fileFlags(world(), this.file);
  }

  /** True for a dynamic exporter (one with pin/unpin). */
  get isDynamic(): boolean {
    const w = world();
    return (w.i32[w.base(this.slot) + B_FLAGS]! & FLAG_DYNAMIC) !== 0;
  }

  /** The exporter's ops, found by name in this thread. @throws ENODEV if its module is not loaded here. */
  get ops(): DmaBufOps {
    this.#ops ??= opsOf(world(), this.slot);
    return this.#ops;
  }

  /** Index in `world().i32` of the EXPORTER_WORDS words the exporter may use. @internal */
  get exporterWords(): number {
    return world().base(this.slot) + B_EXP_DATA;
  }

  /**
   * Exporter word `i` (0 ≤ i < EXPORTER_WORDS): state an exporter written against
   * the public API keeps in the buffer, seen by every thread. @throws EINVAL (index).
   */
  exporterWord(i: number): number {
    return Atomics.load(world().i32, this.#exporterWordAt(i));
  }

  /** Set exporter word `i` (see exporterWord). @throws EINVAL (index, or a value that is not a 32-bit integer). */
  setExporterWord(i: number, v: number): void {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0xffffffff) throw fail('EINVAL', 'dma_buf', 'exporter words hold 32-bit integers');
    Atomics.store(world().i32, this.#exporterWordAt(i), v | 0);
  }

  #exporterWordAt(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= EXPORTER_WORDS) throw fail('EINVAL', 'dma_buf', `exporter word ${i} out of 0..${EXPORTER_WORDS - 1}`);
    return this.exporterWords + i;
  }

  /** The buffer's reservation object (this handle's reference to it). */
  get resv(): DmaResv {
    this.#resv ??= DmaResv.fromSlot(world().i32[world().base(this.slot) + B_RESV]!);
    return this.#resv;
  }

  /** The user-set name (DMA_BUF_SET_NAME), or null if never set. */
  get name(): string | null {
    const w = world();
    const b = w.base(this.slot);
    mutexLock(w, b + S_LOCK);
    try {
      return w.i32[b + B_NAME_SET] ? readName(w, b + B_NAME, NAME_WORDS) : null;
    } finally {
      mutexUnlock(w, b + S_LOCK);
    }
  }

  /**
   * dma_buf_set_name: at most DMA_BUF_NAME_LEN - 1 bytes (longer → EINVAL, as
   * strndup_user finds no NUL within 32 bytes); replaceable at any time (current).
   */
  setName(name: string): void {
    if (typeof name !== 'string') throw fail('EFAULT', 'dma_buf_set_name', 'name must be a string');
    const text = name.includes('\0') ? name.slice(0, name.indexOf('\0')) : name; // a C string ends at NUL
    if (Buffer.byteLength(text) > DMA_BUF_NAME_LEN - 1) {
      throw fail('EINVAL', 'dma_buf_set_name', `name longer than ${DMA_BUF_NAME_LEN - 1} bytes (no NUL within ${DMA_BUF_NAME_LEN})`);
    }
    const w = world();
    const b = w.base(this.slot);
    mutexLock(w, b + S_LOCK);
    writeName(w, b + B_NAME, NAME_WORDS, text);
    w.i32[b + B_NAME_SET] = 1;
    mutexUnlock(w, b + S_LOCK);
  }

  /** Number of attachments (any thread). */
  get attachmentCount(): number {
    const w = world();
    return Atomics.load(w.i32, w.base(this.slot) + B_NATTACH);
  }

  /* ---- CPU access (§1.9) ---- */

  /** @internal §1.17: `syscall` must not hold the reservation lock. @throws EDEADLK (lockdep's might_lock). */
  assertNotLocked(syscall: string): void {
    const w = world();
    if (this.#resv ? this.#resv.mutex.isHeldByMe() : dmaResvSlotHeldByMe(w.i32[w.base(this.slot) + B_RESV]!)) {
      throw fail('EDEADLK', syscall, 'called with the reservation lock held (kernel: lockdep might_lock)');
    }
  }

  /**
   * dma_buf_begin_cpu_access: the exporter's hook, then (only if it succeeded) a wait
   * for the implicit fences `dir` selects — a read waits for writers (≤ WRITE), a
   * write or bidirectional access for readers and writers (≤ READ). Blocks this
   * thread. @throws EINVAL (direction), EDEADLK (resv held), the exporter's error,
   * EINTR if `signal` aborts the wait.
   */
  beginCpuAccess(dir: DmaDataDirection, opts: { signal?: AbortSignal } = {}): void {
    const usage = this.#beginHook(dir);
    const traced = tracing ? traceBufferWaitStart(this, usage, 'begin_cpu_access') : undefined;
    const r = this.resv.waitTimeout(usage, Infinity, opts);
    if (traced !== undefined) traceRecord('dma_buf_wait_end', { ...traced, ret: r });
    if (r < 0) throw fail('EINTR', 'dma_buf_begin_cpu_access', 'interrupted while waiting for fences');
  }

  /** Promise form of `beginCpuAccess`: does not block the event loop. */
  async beginCpuAccessAsync(dir: DmaDataDirection, opts: { signal?: AbortSignal } = {}): Promise<void> {
    const usage = this.#beginHook(dir);
    const traced = tracing ? traceBufferWaitStart(this, usage, 'begin_cpu_access') : undefined;
    const r = await this.resv.waitTimeoutAsync(usage, Infinity, opts);
    if (traced !== undefined) traceRecord('dma_buf_wait_end', { ...traced, ret: r });
    if (r < 0) throw fail('EINTR', 'dma_buf_begin_cpu_access', 'interrupted while waiting for fences');
  }

  #beginHook(dir: DmaDataDirection): DmaResvUsage {
    checkDir(dir, 'dma_buf_begin_cpu_access');
    this.assertNotLocked('dma_buf_begin_cpu_access');
    opResult(this.ops.beginCpuAccess?.(this, dir), 'dma_buf_begin_cpu_access', 'exporter begin_cpu_access');
    return cpuAccessUsage(dir);
  }

  /** dma_buf_end_cpu_access: the exporter's hook only; no fence interaction. */
  endCpuAccess(dir: DmaDataDirection): void {
    checkDir(dir, 'dma_buf_end_cpu_access');
    this.assertNotLocked('dma_buf_end_cpu_access');
    opResult(this.ops.endCpuAccess?.(this, dir), 'dma_buf_end_cpu_access', 'exporter end_cpu_access');
  }

  /* ---- mmap (§1.10) and vmap (§1.11) ---- */

  /**
   * dma_buf_mmap: pages [pgoff, pgoff + pages) as a live view that holds the buffer
   * until `munmap`. @throws EINVAL (no mmap op, out of bounds), EOVERFLOW (wraps).
   */
  mmap(pgoff: number, pages: number): Uint8Array {
    if (!Number.isSafeInteger(pgoff) || !Number.isSafeInteger(pages) || pgoff < 0 || pages < 1) {
      throw fail('EINVAL', 'dma_buf_mmap', 'pgoff and pages must be integers, pages >= 1');
    }
    const ops = this.ops; // the kernel checks for the op before the overflow
    if (!ops.mmap) throw fail('EINVAL', 'dma_buf_mmap', `exporter '${ops.name}' has no mmap`);
    if (pgoff + pages > 2 ** 52) throw fail('EOVERFLOW', 'dma_buf_mmap', 'pgoff + pages overflows');
    return trackMapping(this.mmapPages(pgoff, pages, 'dma_buf_mmap', true), this.file);
  }

  /**
   * @internal the mmap op after argument checks, untracked: the op check and the
   * bounds check both mmap paths make (only whole pages of `size` can be mapped).
   * `shared`: a MAP_SHARED mapping (passed on to the exporter, which may refuse private ones).
   */
  mmapPages(pgoff: number, pages: number, syscall: string, shared = true): Uint8Array {
    const ops = this.ops;
    if (!ops.mmap) throw fail('EINVAL', syscall, `exporter '${ops.name}' has no mmap`);
    if (pgoff + pages > Math.floor(this.size / PAGE_SIZE)) {
      throw fail('EINVAL', syscall, `pages ${pgoff}..${pgoff + pages} pass the end of a ${this.size}-byte buffer`);
    }
    this.assertNotLocked(syscall);
    return ops.mmap(this, pgoff, pages, shared);
  }

  /** munmap a view from `mmap`. @throws EINVAL if it is not a live mapping. */
  munmap(view: Uint8Array): void {
    untrackMapping(view, 'munmap');
  }

  /** @internal §1.17: `syscall` needs the reservation lock. @throws EPERM (dma_resv_assert_held). */
  assertLocked(syscall: string): void {
    if (!this.resv.mutex.isHeldByMe()) throw fail('EPERM', syscall, 'reservation lock not held (dma_resv_assert_held)');
  }

  /**
   * dma_buf_vmap (resv held): the whole buffer as one view, shared by every caller;
   * only the first vmap reaches the exporter. @throws EPERM (lock), EINVAL (no op), exporter errors.
   */
  vmap(): Uint8Array {
    this.assertLocked('dma_buf_vmap');
    const ops = this.ops;
    if (!ops.vmap) throw fail('EINVAL', 'dma_buf_vmap', `exporter '${ops.name}' has no vmap`);
    const w = world();
    const at = w.base(this.slot) + B_VMAP;
    const cached = vmapCache.get(this.slot);
    if (Atomics.load(w.i32, at) > 0 && cached) {
      Atomics.add(w.i32, at, 1);
      return cached;
    }
    const map = ops.vmap(this);
    vmapCache.set(this.slot, map);
    Atomics.add(w.i32, at, 1);
    return map;
  }

  /** dma_buf_vunmap (resv held). @throws EINVAL if not vmapped or `map` is not the mapping. */
  vunmap(map: Uint8Array): void {
    this.assertLocked('dma_buf_vunmap');
    const w = world();
    const at = w.base(this.slot) + B_VMAP;
    const cached = vmapCache.get(this.slot);
    if (Atomics.load(w.i32, at) <= 0) throw fail('EINVAL', 'dma_buf_vunmap', 'buffer is not vmapped (kernel: BUG)');
    if (cached !== undefined && cached !== map) throw fail('EINVAL', 'dma_buf_vunmap', 'not the address vmap returned (kernel: BUG)');
    if (Atomics.sub(w.i32, at, 1) === 1) {
      vmapCache.delete(this.slot);
      this.ops.vunmap?.(this, map);
    }
  }

  /** dma_buf_vmap_unlocked: lock, vmap, unlock. */
  vmapUnlocked(): Uint8Array {
    return this.withLock(() => this.vmap());
  }

  /** dma_buf_vunmap_unlocked. */
  vunmapUnlocked(map: Uint8Array): void {
    this.withLock(() => this.vunmap(map));
  }

  /** Run `fn` with the reservation lock taken uninterruptibly (no acquire context). */
  withLock<T>(fn: (locked: DmaResvLocked) => T): T {
    const locked = this.resv.lock(null);
    if (typeof locked === 'number') throw fail(errnoName(-locked) as never, 'dma_resv_lock', 'lock failed');
    try {
      return fn(locked);
    } finally {
      locked.unlock();
    }
  }

  get vmapCount(): number {
    const w = world();
    return Atomics.load(w.i32, w.base(this.slot) + B_VMAP);
  }

  /* ---- poll (§1.13) and the sync_file bridge (§1.14) ---- */

  /**
   * dma_buf_poll: POLLIN once every writer (≤ WRITE) is done, POLLOUT once every
   * reader and writer (≤ READ) is. Enables signalling on the first pending fence of
   * each set, as arming the kernel's callback does.
   */
  poll(): number {
    let mask = 0;
    if (this.#idle(DMA_RESV_USAGE_WRITE)) mask |= POLLIN_;
    if (this.#idle(DMA_RESV_USAGE_READ)) mask |= POLLOUT_;
    return mask;
  }

  #idle(usage: DmaResvUsage): boolean {
    if (this.resv.testSignaled(usage)) return true;
    for (const { fence } of this.resv.fencesUnlocked(usage)) {
      fence.enableSwSignaling();
      break;
    }
    return this.resv.testSignaled(usage);
  }

  /**
   * dma_buf_export_sync_file: a snapshot of the fences a new access must wait for
   * (`write`: readers and writers; else writers), as a new sync_file — the signalled
   * stub when idle.
   */
  exportSyncFile(write: boolean): SyncFile {
    const fence = this.resv.getSingleton(write ? DMA_RESV_USAGE_READ : DMA_RESV_USAGE_WRITE) ?? DmaFence.getStub();
    try {
      return SyncFile.create(fence);
    } finally {
      fence.put();
    }
  }

  /**
   * dma_buf_import_sync_file: the sync_file's leaf fences join the reservation
   * object with usage WRITE (`write`) or READ, under the kernel's replacement rules.
   * All slots are reserved first: on ENOMEM nothing is added.
   */
  importSyncFile(sf: SyncFile, write: boolean): void {
    const usage = write ? DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ;
    const fence = sf.getFence();
    try {
      if (isContainer(fence)) this.#addFences(leavesOf(fence), usage, true);
      else this.#addFences([fence], usage, false); // a plain fence is its own only leaf
    } finally {
      fence.put();
    }
  }

  /** Reserve, then add `fences` with `usage`, under the lock; `put`: drop the references after. */
  #addFences(fences: DmaFence[], usage: DmaResvUsage, put: boolean): void {
    try {
      if (fences.length === 0) return;
      this.withLock((locked) => {
        locked.reserveFences(fences.length);
        for (const f of fences) locked.addFence(f, usage);
      });
      if (tracing) traceAddFences(this, fences, usage); // after the unlock: the name takes the buffer's lock
    } finally {
      if (put) for (const f of fences) f.put();
    }
  }

  /** @internal this buffer's identity for a trace event (trace.ts). */
  traceBuffer(): TraceBuffer {
    return { ino: fileInode(world(), this.file), name: this.name, expName: this.expName };
  }

  /** @internal a handle that holds nothing, for the release hook. */
  static forRelease(file: number): DmaBuf {
    return new DmaBuf(file);
  }
}

/**
 * @internal Record `dma_buf_wait_start` of a wait of `buf` on its reservation
 * object; returns the fields for the matching `dma_buf_wait_end`.
 */
export function traceBufferWaitStart(
  buf: DmaBuf, usage: DmaResvUsage, op: 'begin_cpu_access' | 'map_attachment',
): Omit<TraceEvent, 'name' | 'ts' | 'tid'> {
  const fields = { buffer: buf.traceBuffer(), usage: USAGE_NAMES[usage], op };
  traceRecord('dma_buf_wait_start', fields);
  return fields;
}

/** Record `dma_buf_add_fence` for each of `fences`, just added to `buf`'s reservation object. */
function traceAddFences(buf: DmaBuf, fences: readonly DmaFence[], usage: DmaResvUsage): void {
  const buffer = buf.traceBuffer();
  for (const f of fences) traceRecord('dma_buf_add_fence', { buffer, fence: f.traceFence(), usage: USAGE_NAMES[usage] });
}

const POLLIN_ = 0x1;
const POLLOUT_ = 0x4;
/** Per thread: the view vmap returned, while the count is above zero. */
const vmapCache = new Map<number, Uint8Array>();

function checkDir(dir: unknown, syscall: string): asserts dir is DmaDataDirection {
  if (dir !== DMA_BIDIRECTIONAL && dir !== DMA_TO_DEVICE && dir !== DMA_FROM_DEVICE && dir !== DMA_NONE) {
    throw fail('EINVAL', syscall, `bad DMA direction ${String(dir)}`);
  }
}

/** The fences a CPU access in `dir` waits for: a write (TO_DEVICE, BIDIRECTIONAL) waits for readers too. */
export function cpuAccessUsage(dir: DmaDataDirection): DmaResvUsage {
  return dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL ? DMA_RESV_USAGE_READ : DMA_RESV_USAGE_WRITE;
}

/**
 * The buffer's internal reference to its reservation object: the exporter's, or a
 * new one (whose handle is dropped at once, so only the buffer holds it).
 */
function resvRef(w: World, resv: DmaResv | undefined): number {
  const r = resv ?? DmaResv.create();
  const slot = r.slot;
  ref(w, slot);
  if (!resv) r.put();
  return slot;
}

/* ---- the global list (§1.16): most recent first ---- */

function listAdd(w: World, slot: number): void {
  const b = w.base(slot);
  mutexLock(w, H_DMABUF_LOCK);
  const head = w.i32[H_DMABUF_HEAD]!;
  w.i32[b + B_NEXT] = head;
  w.i32[b + B_PREV] = -1;
  if (head >= 0) w.i32[w.base(head) + B_PREV] = slot;
  w.i32[H_DMABUF_HEAD] = slot;
  mutexUnlock(w, H_DMABUF_LOCK);
}

function listDel(w: World, slot: number): void {
  const b = w.base(slot);
  mutexLock(w, H_DMABUF_LOCK);
  const next = w.i32[b + B_NEXT]!;
  const prev = w.i32[b + B_PREV]!;
  if (prev >= 0) w.i32[w.base(prev) + B_NEXT] = next;
  else w.i32[H_DMABUF_HEAD] = next;
  if (next >= 0) w.i32[w.base(next) + B_PREV] = prev;
  mutexUnlock(w, H_DMABUF_LOCK);
}

/**
 * Walk the global list under its lock: `fn` gets each buffer's file slot (the list
 * lock keeps it from being unlinked; a buffer whose last reference is going is
 * still listed until its release takes the lock). For debugfs (dma-buf-debug.ts).
 */
export function forEachDmaBuf(fn: (file: number, slot: number) => void): void {
  const w = world();
  mutexLock(w, H_DMABUF_LOCK);
  try {
    for (let s = w.i32[H_DMABUF_HEAD]!; s >= 0; s = w.i32[w.base(s) + B_NEXT]!) fn(w.i32[w.base(s) + B_FILE]!, s);
  } finally {
    mutexUnlock(w, H_DMABUF_LOCK);
  }
}

/** Exporter name and size of buffer slot `slot` (for listings that walk the global list). */
export function bufferSummary(w: World, slot: number): { expName: string; size: number } {
  return { expName: readName(w, w.base(slot) + B_EXP_NAME, NAME_WORDS), size: bufferSize(w, slot) };
}

function bufferSize(w: World, slot: number): number {
  const b = w.base(slot);
  return (w.i32[b + B_SIZE]! >>> 0) + (w.i32[b + B_SIZE + 1]! >>> 0) * 2 ** 32;
}

/** @internal attachment-list words of buffer slot `slot` (dma-buf-attach.ts). */
export const BUF_WORDS = { B_ATTACH, B_NATTACH } as const;

/* ---- release (§1.4) ---- */

function releaseBuffer(w: World, file: number, slot: number): void {
  listDel(w, slot);
  const b = w.base(slot);
  if (Atomics.load(w.i32, b + B_VMAP) > 0) {
    process.emitWarning(`dma-buf ${slot} released while vmapped (kernel: BUG in dma_buf_release)`, { code: 'DMABUF_BUG' });
    Atomics.store(w.i32, b + B_VMAP, 0);
    vmapCache.delete(slot);
  }
  try {
    opsOf(w, slot).release(DmaBuf.forRelease(file));
  } catch (e) {
    // ENODEV: released in a thread that never loaded the exporter; its memory is not returned.
    process.emitWarning(`dma-buf exporter '${opsName(w, slot)}' release: ${String(e)}`, { code: 'DMABUF_WARN' });
  }
  opsBySlot.delete(slot);
  borrowed.delete(file);
  unref(w, w.i32[b + B_RESV]!);
  unref(w, slot);
}

registerFileType(FileType.DmaBuf, {
  name: 'dmabuf',
  release: (w, file, slot) => releaseBuffer(w, file, slot),
});

