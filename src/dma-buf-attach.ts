/**
 * DOC: attachments, device mappings and move notification (dma-buf.c §1.5–1.8)
 *
 * An importer attaches its device to a buffer (`DmaBufAttachment.attach`, or
 * `dynamicAttach` with importer ops for importers that cope with moves), maps the
 * attachment to get an sg table in its device's address space, and detaches.
 *
 * - Locking (current kernels, §1.17): attach and detach must be called *without*
 *   the reservation lock (EDEADLK here, lockdep's might_lock there); map, unmap,
 *   pin, unpin and move notification *with* it (EPERM, dma_resv_assert_held).
 *   `mapUnlocked`/`unmapUnlocked` take it themselves.
 * - Mapping: a dynamic exporter is pinned for a static importer; the exporter's
 *   table comes back as is; a static importer then waits (interruptibly, no
 *   timeout) for the KERNEL fences. Dynamic importers get no implicit wait.
 * - Move notification: `dmaBufMoveNotify` (exporter, lock held) calls `moveNotify`
 *   of every dynamic importer in list order. An importer in this thread is called
 *   at once; one in another thread is woken through shared memory and called from
 *   its event loop, or at its next map — a function cannot run in another thread.
 *   Its existing mappings stay valid until it unmaps, as the kernel promises, so
 *   the delay is within the contract.
 * - Lifetime: an attachment is a slot held by the importer's thread. It keeps its
 *   buffer alive (an internal reference: the kernel WARNs when a buffer is released
 *   with attachments; here that cannot happen). A thread that dies has its
 *   attachments detached by the reaper.
 *
 * Extension beyond the kernel (kernel-contract §7, the seed's open question):
 * devices declare `coherent`; `dmaBufIsCoherent` answers whether every attached
 * device is, and `attach(..., { requireCoherent: true })` refuses with EPERM when
 * the device or one already attached is not — and afterwards refuses non-coherent
 * devices while the requiring attachment stays. The proposed device-side
 * brackets `beginAccess`/`endAccess` exist as opt-in exporter ops (see there).
 */
import { DmaBuf, opResult, BUF_WORDS, traceBufferWaitStart } from './dma-buf.js';
import { DMA_RESV_USAGE_KERNEL } from './dma-resv.js';
import { deviceDesc, type DeviceDesc, type DmaDataDirection, type SgTable } from './device.js';
import { fail } from './errors.js';
import {
  adoptAsHold, allocSlot, Kind, onRelease, readName, ref, S_BODY, S_DATA, slotGen, unhold, unref, writeName,
} from './shared/slab.js';
import { sleepOnWordAsync } from './shared/wait.js';
import { tid, world, type World } from './shared/world.js';
import { traceRecord, tracing } from './trace.js';

/* Slot layout (Kind.Attachment). S_BODY counts move notifications. */
const A_BUF_FILE = S_DATA; // internal reference
const A_NEXT = S_DATA + 1;
const A_PREV = S_DATA + 2;
const A_OWNER = S_DATA + 3;
const A_FLAGS = S_DATA + 4;
const A_MAPS = S_DATA + 5;
const A_IMPORTER_PRIV = S_DATA + 6;
const A_PRIV = S_DATA + 7;
const A_MASK_BITS = S_DATA + 8;
const A_MAX_SEG = S_DATA + 9;
const A_BOUNDARY = S_DATA + 10; // two words: lo, hi
const A_NAME = 24;
const NAME_WORDS = 8;
/** Words the exporter may use per attachment (e.g. the heaps' "mapped" flag). */
export const A_EXP_DATA = 32;
export const ATTACH_EXPORTER_WORDS = 32;

const AF_DYNAMIC = 1;
const AF_P2P = 2;
const AF_COHERENT = 4;
const AF_REQUIRE_COHERENT = 8;
/** Listed on its buffer, holding its reference: only then has the release hook anything to undo. */
const AF_LINKED = 16;

/** struct dma_buf_attach_ops */
export interface DmaBufAttachOps {
  readonly allowPeer2peer?: boolean;
  /** Called (resv held) when the exporter moves the buffer: unmap and re-map soon. */
  moveNotify(attach: DmaBufAttachment): void;
}

export interface AttachOptions {
  /** Extension: refuse (EPERM) unless every device on the buffer, this one included, is coherent. */
  readonly requireCoherent?: boolean;
}

export interface MapOptions {
  /** Aborts a static importer's wait for KERNEL fences (EINTR). */
  readonly signal?: AbortSignal;
}

interface MapRecord {
  readonly slot: number;
  readonly gen: number;
  readonly dir: DmaDataDirection;
  readonly pinned: boolean;
}

/** Tables this thread got from map, until unmapped. */
const mapped = new WeakMap<SgTable, MapRecord>();

/** A device's attachment to a buffer: this thread's handle. */
export class DmaBufAttachment {
  readonly slot: number;
  readonly #gen: number;
  readonly dmabuf: DmaBuf;
  readonly dev: DeviceDesc;
  readonly importerOps: DmaBufAttachOps | null;
  #live: boolean;
  #movesSeen = 0;

  private constructor(slot: number, dmabuf: DmaBuf, dev: DeviceDesc, importerOps: DmaBufAttachOps | null, live: boolean) {
    this.slot = slot;
    this.#gen = slotGen(world(), slot);
    this.dmabuf = dmabuf;
    this.dev = dev;
    this.importerOps = importerOps;
    this.#live = live;
  }

  /** dma_buf_attach: a static attachment. */
  static attach(buf: DmaBuf, dev: unknown, opts: AttachOptions = {}): DmaBufAttachment {
    return DmaBufAttachment.dynamicAttach(buf, dev, null, 0, opts);
  }

  /**
   * dma_buf_dynamic_attach: checks (EINVAL: no buffer or device, importer ops without
   * moveNotify; EDEADLK: resv held), then the exporter's `attach` (its error — EBUSY
   * typically — comes back unchanged), then the list insertion under the lock.
   */
  static dynamicAttach(
    buf: DmaBuf, dev: unknown, importerOps: DmaBufAttachOps | null, importerPriv = 0, opts: AttachOptions = {},
  ): DmaBufAttachment {
    const syscall = 'dma_buf_dynamic_attach';
    if (!(buf instanceof DmaBuf)) throw fail('EINVAL', syscall, 'not a DmaBuf');
    const desc = deviceDesc(dev, syscall);
    if (importerOps !== null && typeof importerOps?.moveNotify !== 'function') {
      throw fail('EINVAL', syscall, 'importer ops need moveNotify');
    }
    if (!Number.isInteger(importerPriv)) throw fail('EINVAL', syscall, 'importerPriv must be an integer');
    buf.assertNotLocked(syscall);
    const ops = buf.ops;
    const w = world();
    const slot = allocSlot(w, Kind.Attachment, syscall);
    const own = buf.get();
    initSlot(w, slot, own, desc, importerOps, importerPriv, opts);
    const attach = new DmaBufAttachment(slot, own, desc, importerOps, false);
    try {
      opResult(ops.attach?.(own, attach), syscall, 'exporter attach');
    } catch (e) {
      unref(w, slot);
      own.close();
      throw e;
    }
    try {
      own.withLock(() => link(w, own.slot, slot, desc.coherent, opts.requireCoherent === true));
    } catch (e) {
      ops.detach?.(own, attach);
      unref(w, slot);
      own.close();
      throw e;
    }
    ref(w, own.file); // the attachment's reference to its buffer
    Atomics.or(w.i32, w.base(slot) + A_FLAGS, AF_LINKED);
    adoptAsHold(w, slot);
    attach.#live = true;
    if (importerOps) {
      handles.set(slot, new WeakRef(attach));
      attach.#watchMoves();
    }
    return attach;
  }

  get isDynamic(): boolean {
    return (this.#word(A_FLAGS) & AF_DYNAMIC) !== 0;
  }

  /** attach->peer2peer, from the importer's allowPeer2peer. */
  get peer2peer(): boolean {
    return (this.#word(A_FLAGS) & AF_P2P) !== 0;
  }

  get importerPriv(): number {
    return this.#word(A_IMPORTER_PRIV);
  }

  /** attach->priv: the exporter's number for this attachment, shared by every thread. */
  get priv(): number {
    return this.#word(A_PRIV);
  }

  set priv(v: number) {
    if (!Number.isInteger(v)) throw fail('EINVAL', 'dma_buf_attach', 'priv must be an integer');
    const w = world();
    w.i32[w.base(this.slot) + A_PRIV] = v;
  }

  /** Index in `world().i32` of the words the exporter may use for this attachment. */
  get exporterWords(): number {
    return world().base(this.slot) + A_EXP_DATA;
  }

  /** Outstanding mappings (every thread). */
  get mapCount(): number {
    return this.#word(A_MAPS);
  }

  #word(at: number): number {
    this.#check('dma_buf_attachment');
    const w = world();
    return Atomics.load(w.i32, w.base(this.slot) + at);
  }

  #check(syscall: string): void {
    if (!this.#live) throw fail('EINVAL', syscall, 'attachment already detached');
  }

  #assertHeld(syscall: string): void {
    this.#check(syscall);
    this.dmabuf.assertLocked(syscall);
  }

  /**
   * dma_buf_map_attachment (resv held): pin-on-map for a static importer of a
   * dynamic exporter, the exporter's map (null → ENOMEM; failure undoes the pin),
   * then for a static importer a wait for KERNEL fences (abort → EINTR, undone).
   */
  map(dir: DmaDataDirection, opts: MapOptions = {}): SgTable {
    const syscall = 'dma_buf_map_attachment';
    this.#assertHeld(syscall);
    this.deliverMoves();
    const ops = this.dmabuf.ops;
    const pinned = this.dmabuf.isDynamic && !this.isDynamic;
    if (pinned) opResult(ops.pin!(this), syscall, 'exporter pin');
    let sgt: SgTable | null;
    try {
      sgt = ops.mapDmaBuf(this, dir);
      if (!sgt) throw fail('ENOMEM', syscall, 'exporter map_dma_buf returned no table');
    } catch (e) {
      if (pinned) ops.unpin!(this);
      throw e;
    }
    if (!this.isDynamic) {
      // Under the resv lock, like bufinfo: the buffer's name lock nests inside it.
      const traced = tracing ? traceBufferWaitStart(this.dmabuf, DMA_RESV_USAGE_KERNEL, 'map_attachment') : undefined;
      const r = this.dmabuf.resv.waitTimeout(DMA_RESV_USAGE_KERNEL, Infinity, opts);
      if (traced !== undefined) traceRecord('dma_buf_wait_end', { ...traced, ret: r });
      if (r < 0) {
        ops.unmapDmaBuf(this, sgt, dir);
        if (pinned) ops.unpin!(this);
        throw fail('EINTR', syscall, 'interrupted while waiting for KERNEL fences');
      }
    }
    mapped.set(sgt, { slot: this.slot, gen: this.#gen, dir, pinned });
    Atomics.add(world().i32, world().base(this.slot) + A_MAPS, 1);
    return sgt;
  }

  /** dma_buf_unmap_attachment (resv held). @throws EINVAL for a table this attachment did not map. */
  unmap(sgt: SgTable, dir: DmaDataDirection): void {
    const syscall = 'dma_buf_unmap_attachment';
    this.#assertHeld(syscall);
    const rec = this.#record(sgt, syscall);
    mapped.delete(sgt);
    const ops = this.dmabuf.ops;
    ops.unmapDmaBuf(this, sgt, dir);
    if (rec.pinned) ops.unpin!(this);
    Atomics.sub(world().i32, world().base(this.slot) + A_MAPS, 1);
  }

  #record(sgt: SgTable, syscall: string): MapRecord {
    const rec = typeof sgt === 'object' && sgt !== null ? mapped.get(sgt) : undefined;
    if (!rec || rec.slot !== this.slot || rec.gen !== this.#gen) {
      throw fail('EINVAL', syscall, 'not a table this attachment mapped (or already unmapped)');
    }
    return rec;
  }

  /** dma_buf_map_attachment_unlocked: lock (uninterruptibly), map, unlock. */
  mapUnlocked(dir: DmaDataDirection, opts: MapOptions = {}): SgTable {
    this.#check('dma_buf_map_attachment_unlocked');
    return this.dmabuf.withLock(() => this.map(dir, opts));
  }

  /** dma_buf_unmap_attachment_unlocked. */
  unmapUnlocked(sgt: SgTable, dir: DmaDataDirection): void {
    this.#check('dma_buf_unmap_attachment_unlocked');
    this.dmabuf.withLock(() => this.unmap(sgt, dir));
  }

  /** dma_buf_pin (resv held, dynamic importers only; the kernel WARNs otherwise). */
  pin(): void {
    this.#assertHeld('dma_buf_pin');
    if (!this.isDynamic) throw fail('EINVAL', 'dma_buf_pin', 'pin is for dynamic attachments (kernel: WARN)');
    opResult(this.dmabuf.ops.pin?.(this), 'dma_buf_pin', 'exporter pin');
  }

  /** dma_buf_unpin (resv held, dynamic importers only). */
  unpin(): void {
    this.#assertHeld('dma_buf_unpin');
    if (!this.isDynamic) throw fail('EINVAL', 'dma_buf_unpin', 'unpin is for dynamic attachments (kernel: WARN)');
    this.dmabuf.ops.unpin?.(this);
  }

  /**
   * Extension (not in the kernel): the proposed dma_buf_begin_access — called by an
   * importer that keeps `sgt` mapped, before its device touches the buffer, so a
   * non-coherent exporter can sync caches. No op → nothing to do.
   *
   * Why the kernel rejected it (Christian König, Jan 2024; kernel-contract §7.2):
   * dma-buf assumes every device accesses the data coherently; the hooks would be
   * mandatory for every importer and force extra work on every exporter, which no
   * exporter author could test against all importers; map/unmap do not give
   * coherency either; importers must be coherent with the exporter, and CPU
   * coherency is `begin/endCpuAccess`. The suggested alternative is to let the
   * non-coherent device be the exporter. So here the ops are opt-in, the core never
   * calls them itself, and `requireCoherent` is the safety net instead.
   */
  beginAccess(sgt: SgTable, dir: DmaDataDirection): void {
    this.#access(sgt, dir, 'dma_buf_begin_access', this.dmabuf.ops.beginAccess);
  }

  /** Extension: the proposed dma_buf_end_access, after the device's access (see beginAccess). */
  endAccess(sgt: SgTable, dir: DmaDataDirection): void {
    this.#access(sgt, dir, 'dma_buf_end_access', this.dmabuf.ops.endAccess);
  }

  #access(sgt: SgTable, dir: DmaDataDirection, syscall: string, op: ((a: DmaBufAttachment, s: SgTable, d: DmaDataDirection) => number | void) | undefined): void {
    this.#check(syscall);
    this.dmabuf.assertNotLocked(syscall);
    this.#record(sgt, syscall);
    opResult(op?.call(this.dmabuf.ops, this, sgt, dir), syscall, 'exporter access hook');
  }

  /**
   * dma_buf_detach: EDEADLK with the reservation lock held; the attachment leaves the
   * list under the lock, then the exporter's `detach` runs. Mappings still
   * outstanding are not checked, as in the kernel.
   */
  detach(): void {
    this.#check('dma_buf_detach');
    this.dmabuf.assertNotLocked('dma_buf_detach');
    this.#live = false;
    unhold(world(), this.slot); // the release hook unlinks and calls the exporter
    this.dmabuf.close();
  }

  /** Run this importer's moveNotify for notifications it has not seen yet (resv is taken if needed). */
  deliverMoves(): void {
    if (!this.importerOps || !this.#live) return;
    const w = world();
    const n = Atomics.load(w.i32, w.base(this.slot) + S_BODY);
    if (n === this.#movesSeen) return;
    this.#movesSeen = n;
    if (this.dmabuf.resv.mutex.isHeldByMe()) this.importerOps.moveNotify(this);
    else this.dmabuf.withLock(() => this.importerOps!.moveNotify(this));
  }

  /** Wake-ups from other threads' move notifications reach this thread's event loop here. */
  #watchMoves(): void {
    const w = world();
    const at = w.base(this.slot) + S_BODY;
    const seen = Atomics.load(w.i32, at);
    // A pending waitAsync does not keep the event loop alive (shared/wait.ts), so a
    // watcher never holds a thread open; detach wakes it to end.
    void sleepOnWordAsync(w.i32, at, seen, Infinity).then(() => {
      if (!this.#live || slotGen(w, this.slot) !== this.#gen) return;
      this.deliverMoves();
      this.#watchMoves();
    });
  }

  /** A handle for the release hook (any thread): not live, no importer ops. */
  static forRelease(slot: number, buf: DmaBuf, dev: DeviceDesc): DmaBufAttachment {
    return new DmaBufAttachment(slot, buf, dev, null, false);
  }
}

/**
 * dma_buf_detach(dmabuf, attach): the kernel WARNs and does nothing when the
 * attachment belongs to another buffer; here that is EINVAL.
 */
export function dmaBufDetach(buf: DmaBuf, attach: DmaBufAttachment): void {
  if (!(buf instanceof DmaBuf) || !(attach instanceof DmaBufAttachment)) throw fail('EINVAL', 'dma_buf_detach', 'no buffer or attachment');
  if (attach.dmabuf.slot !== buf.slot) throw fail('EINVAL', 'dma_buf_detach', 'attachment belongs to another buffer');
  attach.detach();
}

/**
 * dma_buf_move_notify (exporter, resv held): every dynamic importer's moveNotify,
 * in list order — at once in this thread, through shared memory elsewhere.
 */
export function dmaBufMoveNotify(buf: DmaBuf, local: (slot: number) => DmaBufAttachment | undefined = localAttachment): void {
  buf.assertLocked('dma_buf_move_notify');
  const w = world();
  const me = tid();
  for (let a = w.i32[w.base(buf.slot) + BUF_WORDS.B_ATTACH]!; a >= 0; a = w.i32[w.base(a) + A_NEXT]!) {
    const b = w.base(a);
    if (!(w.i32[b + A_FLAGS]! & AF_DYNAMIC)) continue;
    Atomics.add(w.i32, b + S_BODY, 1);
    if (w.i32[b + A_OWNER] === me) local(a)?.deliverMoves();
    else Atomics.notify(w.i32, b + S_BODY);
  }
}

/** Extension: true iff every device attached to `buf` is coherent. */
export function dmaBufIsCoherent(buf: DmaBuf): boolean {
  const w = world();
  return buf.withLock(() => {
    for (let a = w.i32[w.base(buf.slot) + BUF_WORDS.B_ATTACH]!; a >= 0; a = w.i32[w.base(a) + A_NEXT]!) {
      if (!(w.i32[w.base(a) + A_FLAGS]! & AF_COHERENT)) return false;
    }
    return true;
  });
}

/** Names of the devices attached to buffer slot `bufSlot`, in list order (caller holds its resv). */
export function attachedDeviceNames(w: World, bufSlot: number): string[] {
  const out: string[] = [];
  for (let a = w.i32[w.base(bufSlot) + BUF_WORDS.B_ATTACH]!; a >= 0; a = w.i32[w.base(a) + A_NEXT]!) {
    out.push(readName(w, w.base(a) + A_NAME, NAME_WORDS));
  }
  return out;
}

/* ---- this thread's attachments, for move notification ---- */

const handles = new Map<number, WeakRef<DmaBufAttachment>>();
function localAttachment(slot: number): DmaBufAttachment | undefined {
  return handles.get(slot)?.deref();
}

/* ---- slot setup, list, release ---- */

function initSlot(
  w: World, slot: number, buf: DmaBuf, d: DeviceDesc, ops: DmaBufAttachOps | null, priv: number, opts: AttachOptions,
): void {
  const b = w.base(slot);
  w.i32[b + A_BUF_FILE] = buf.file;
  w.i32[b + A_OWNER] = tid();
  w.i32[b + A_FLAGS] = (ops ? AF_DYNAMIC : 0) | (ops?.allowPeer2peer ? AF_P2P : 0) | (d.coherent ? AF_COHERENT : 0)
    | (opts.requireCoherent ? AF_REQUIRE_COHERENT : 0);
  w.i32[b + A_IMPORTER_PRIV] = priv;
  w.i32[b + A_MASK_BITS] = d.dmaMaskBits;
  w.i32[b + A_MAX_SEG] = Math.min(d.maxSegmentSize, 0x7fffffff);
  w.i32[b + A_BOUNDARY] = d.segmentBoundaryMask % 2 ** 32;
  w.i32[b + A_BOUNDARY + 1] = Math.floor(d.segmentBoundaryMask / 2 ** 32);
  writeName(w, b + A_NAME, NAME_WORDS, d.name);
}

function deviceOf(w: World, slot: number): DeviceDesc {
  const b = w.base(slot);
  const flags = w.i32[b + A_FLAGS]!;
  return {
    name: readName(w, b + A_NAME, NAME_WORDS), dmaMaskBits: w.i32[b + A_MASK_BITS]!, maxSegmentSize: w.i32[b + A_MAX_SEG]!,
    segmentBoundaryMask: (w.i32[b + A_BOUNDARY]! >>> 0) + (w.i32[b + A_BOUNDARY + 1]! >>> 0) * 2 ** 32,
    coherent: (flags & AF_COHERENT) !== 0, peer2peer: (flags & AF_P2P) !== 0,
  };
}

/** Insert at the list's tail (resv held), after the coherency check of the extension. */
function link(w: World, bufSlot: number, slot: number, coherent: boolean, require: boolean): void {
  const head = BUF_WORDS.B_ATTACH;
  let last = -1;
  for (let a = w.i32[w.base(bufSlot) + head]!; a >= 0; a = w.i32[w.base(a) + A_NEXT]!) {
    const f = w.i32[w.base(a) + A_FLAGS]!;
    if ((require && !(f & AF_COHERENT)) || (!coherent && f & AF_REQUIRE_COHERENT)) {
      throw fail('EPERM', 'dma_buf_attach', 'devices on this buffer would not all be coherent');
    }
    last = a;
  }
  if (require && !coherent) throw fail('EPERM', 'dma_buf_attach', 'this device is not coherent');
  const b = w.base(slot);
  w.i32[b + A_NEXT] = -1;
  w.i32[b + A_PREV] = last;
  if (last >= 0) w.i32[w.base(last) + A_NEXT] = slot;
  else w.i32[w.base(bufSlot) + head] = slot;
  Atomics.add(w.i32, w.base(bufSlot) + BUF_WORDS.B_NATTACH, 1);
}

function unlink(w: World, bufSlot: number, slot: number): void {
  const b = w.base(slot);
  const next = w.i32[b + A_NEXT]!;
  const prev = w.i32[b + A_PREV]!;
  if (prev >= 0) w.i32[w.base(prev) + A_NEXT] = next;
  else w.i32[w.base(bufSlot) + BUF_WORDS.B_ATTACH] = next;
  if (next >= 0) w.i32[w.base(next) + A_PREV] = prev;
  Atomics.sub(w.i32, w.base(bufSlot) + BUF_WORDS.B_NATTACH, 1);
}

onRelease(Kind.Attachment, (w, slot) => {
  const b = w.base(slot);
  if (!(w.i32[b + A_FLAGS]! & AF_LINKED)) return; // a failed attach: its caller undid the rest
  const file = w.i32[b + A_BUF_FILE]!;
  const buf = DmaBuf.fromFile(file, 'dma_buf_detach');
  try {
    buf.withLock(() => unlink(w, buf.slot, slot));
    Atomics.add(w.i32, b + S_BODY, 1);
    Atomics.notify(w.i32, b + S_BODY); // ends this attachment's move watcher
    handles.delete(slot);
    const ops = buf.ops; // ENODEV here (exporter not loaded in this thread) still ends the attachment
    ops.detach?.(buf, DmaBufAttachment.forRelease(slot, buf, deviceOf(w, slot)));
  } catch (e) {
    process.emitWarning(`dma-buf detach of attachment ${slot}: ${String(e)}`, { code: 'DMABUF_WARN' });
  } finally {
    unref(w, file);
    buf.close();
  }
});
