/**
 * DOC: vgem — the virtual GEM device (drivers/gpu/drm/vgem, drm_gem.c, drm_prime.c,
 * drm_dumb_buffers.c)
 *
 * A DRM device without hardware, used to test buffer sharing. Each open of
 * `/dev/dri/card0` is a DRM file with its own GEM handle table; a GEM object is
 * arena memory (or an imported dma-buf) that handles, dma-bufs and mappings refer
 * to. This file is the driver side the uapi (uapi/vgem.ts) calls, after it has
 * decoded the ioctl's struct. The kernel's rules kept:
 *
 * - dumb buffers (drm_mode_create_dumb, then the shmem helper vgem uses):
 *   width, height and bpp non-zero, the 32-bit overflow checks on
 *   width·⌈bpp/8⌉·height and its page-aligned size (EINVAL); `flags` is not
 *   checked (the kernel ignores it); pitch = ⌈width·bpp/8⌉, size =
 *   PAGE_ALIGN(pitch·height); zeroed, contiguous arena pages.
 * - handles: per file, the lowest free number from 1 (idr_alloc); GEM_CLOSE of an
 *   unknown handle is EINVAL (drm_gem_handle_delete); lookups elsewhere ENOENT.
 * - mmap offsets (drm_gem_create_mmap_offset): MAP_DUMB gives each object a fake
 *   offset from DRM_FILE_PAGE_OFFSET_START (4 GiB) up; imported objects refuse
 *   (EINVAL). mmap(2) on the DRM fd: an offset that does not start an object, or a
 *   length past its end → EINVAL; a file without a handle to the object → EACCES
 *   (drm_vma_node_is_allowed); MAP_PRIVATE → EINVAL (the shmem helper refuses
 *   copy-on-write mappings). The mapping holds the object (and the file).
 * - PRIME export (drm_gem_prime_handle_to_dmabuf): one dma-buf per object, with
 *   exp_name "drm", the object's reservation object, and file flags O_RDWR with
 *   DRM_RDWR else O_RDONLY; the object keeps it (obj->dma_buf) while it has any
 *   handle, so repeated exports give the same buffer; an imported object
 *   re-exports the buffer it came from.
 * - PRIME import (drm_gem_prime_fd_to_handle): a buffer this file already
 *   exported or imported gives that handle back (the file's prime cache); a vgem
 *   buffer otherwise gives a new handle to its own object (self-import); any
 *   other buffer becomes an object that holds the buffer and shares its
 *   reservation object.
 * - closing the file releases its handles, then signals its fences (drm_file_free:
 *   drm_gem_release, then postclose → vgem_fence_close).
 *
 * JS-forced differences: the kernel attaches vgem's device to an imported buffer;
 * attachments here are per-thread handles (dma-buf-attach.ts) while a GEM
 * object outlives its importing thread, so the object only holds the buffer (no
 * "vgem" line under bufinfo's attached devices). Every open is authenticated
 * (there is no DRM master), as root's would be.
 */
import { DmaBuf, O_ACCMODE, type DmaBufOps, registerDmaBufOps } from './dma-buf.js';
import { DmaResv } from './dma-resv.js';
import { fail } from './errors.js';
import { allocFile, fileGet, FileType, registerFileType } from './file.js';
import { extentsCreate, extentsFree, pageBufferMap, pageBufferView, pageBufferVmap } from './page-buffer.js';
import { allocPagesExact, freePagesExact, PAGE_SIZE, pageBytes } from './shared/arena.js';
import { mutexLock, mutexUnlock } from './shared/mutex.js';
import { allocSlot, Kind, onRelease, ref, S_DATA, slotKind, tryRef, unref } from './shared/slab.js';
import { H_VGEM_LOCK, world, type World } from './shared/world.js';
import {
  FENCE_IDR, HANDLE_IDR, idrAlloc, idrDestroy, idrEntries, idrFind, idrInit, idrReplace, vgemFenceAttach,
  vgemFenceClose, withFileLock,
} from './vgem-fence.js';

/** First fake mmap page offset (DRM_FILE_PAGE_OFFSET_START on 64-bit: 4 GiB). */
export const DRM_FILE_PAGE_OFFSET_START = 0x100000;
/**
 * Pages of offset space per object. The kernel's drm_mm hands out ranges;
 * here object slot n owns [START + n·STRIDE, … + STRIDE): unique while the object
 * lives, found without a search. A dumb object has fewer than 2^20 pages.
 */
const OFFSET_STRIDE = 0x100000;
const U32_MAX = 0xffffffff;

/* GEM object slot (Kind.Gem). */
const G_PAGE = S_DATA; // first arena page; -1 when imported
const G_PAGES = S_DATA + 1;
const G_EXTENTS = S_DATA + 2; // extents list (page-buffer.ts); -1 when imported
const G_RESV = S_DATA + 3; // internal reference
const G_DMABUF = S_DATA + 4; // obj->dma_buf: file slot with an internal reference while handles exist, or -1
const G_IMPORT = S_DATA + 5; // the buffer it was imported from: file slot, internal reference, or -1
const G_HANDLES = S_DATA + 6; // handle_count (H_VGEM_LOCK)
const G_OFFSET = S_DATA + 7; // 1 once MAP_DUMB gave it an mmap offset
const G_SIZE = S_DATA + 8; // two words: lo, hi

/* Handle table entries: object slot + 1, with PRIME set once the file's prime cache knows its buffer. */
const PRIME = 1 << 30;
const gemOf = (entry: number): number => (entry & ~PRIME) - 1;

/* ---- GEM objects ---- */

function gemInit(w: World, slot: number, page: number, pages: number, extents: number, resv: number, size: number): void {
  const b = w.base(slot);
  w.i32[b + G_PAGE] = page;
  w.i32[b + G_PAGES] = pages;
  w.i32[b + G_EXTENTS] = extents;
  w.i32[b + G_RESV] = resv;
  w.i32[b + G_DMABUF] = -1;
  w.i32[b + G_IMPORT] = -1;
  w.i32[b + G_SIZE] = size % 2 ** 32;
  w.i32[b + G_SIZE + 1] = Math.floor(size / 2 ** 32);
  ref(w, resv);
}

function gemSize(w: World, slot: number): number {
  const b = w.base(slot);
  return (w.i32[b + G_SIZE]! >>> 0) + (w.i32[b + G_SIZE + 1]! >>> 0) * 2 ** 32;
}

/** A zeroed object of `size` bytes (page multiple), one internal reference. @throws ENOMEM. */
function gemCreate(w: World, size: number): number {
  const pages = size / PAGE_SIZE;
  const page = allocPagesExact(pages, 'ioctl');
  let list = -1;
  let resv: DmaResv | undefined;
  try {
    list = extentsCreate([{ page, pages }], 'ioctl');
    resv = DmaResv.create();
    const slot = allocSlot(w, Kind.Gem, 'ioctl');
    gemInit(w, slot, page, pages, list, resv.slot, size);
    return slot;
  } catch (e) {
    if (list >= 0) extentsFree(list);
    freePagesExact(page, pages, 'ioctl');
    throw e;
  } finally {
    resv?.put();
  }
}

/** An object standing for foreign buffer `buf` (drm_gem_prime_import): holds it, shares its resv. */
function gemImport(w: World, buf: DmaBuf): number {
  const slot = allocSlot(w, Kind.Gem, 'ioctl');
  gemInit(w, slot, -1, Math.ceil(buf.size / PAGE_SIZE), -1, buf.resv.slot, buf.size);
  w.i32[w.base(slot) + G_IMPORT] = buf.file;
  ref(w, buf.file);
  return slot;
}

onRelease(Kind.Gem, (w, slot) => {
  const b = w.base(slot);
  if (w.i32[b + G_DMABUF]! >= 0) unref(w, w.i32[b + G_DMABUF]!); // not reached: the buffer holds the object
  if (w.i32[b + G_IMPORT]! >= 0) {
    unref(w, w.i32[b + G_IMPORT]!);
  } else {
    freePagesExact(w.i32[b + G_PAGE]!, w.i32[b + G_PAGES]!, 'drm_gem_object_release');
    extentsFree(w.i32[b + G_EXTENTS]!);
  }
  unref(w, w.i32[b + G_RESV]!);
});

/* ---- the dma-buf of an object (drm_gem_prime_dmabuf_ops) ---- */

export const vgemBufOps: DmaBufOps = {
  name: 'vgem',
  mapDmaBuf: pageBufferMap,
  unmapDmaBuf() {},
  release(buf) {
    unref(world(), buf.priv); // the object the buffer held
  },
  // drm_gem_shmem_mmap: a copy-on-write (MAP_PRIVATE) mapping of a GEM object is EINVAL,
  // through its dma-buf as through the DRM file.
  mmap(buf, pgoff, pages, shared) {
    if (!shared) throw fail('EINVAL', 'mmap', 'GEM objects cannot be mapped copy-on-write (MAP_PRIVATE)');
    return pageBufferView(buf, pgoff, pages);
  },
  vmap: pageBufferVmap,
};
registerDmaBufOps(vgemBufOps);

/** drm_gem_prime_export: a new buffer for object `gem`. @returns its file, held by this thread. */
function gemExport(w: World, gem: number, flags: number): number {
  const b = w.base(gem);
  const resv = DmaResv.fromSlot(w.i32[b + G_RESV]!);
  ref(w, gem); // the buffer's
  try {
    const buf = DmaBuf.export({
      ops: vgemBufOps, priv: gem, size: gemSize(w, gem), expName: 'drm', flags: flags & O_ACCMODE, resv,
    });
    w.i32[buf.exporterWords] = w.i32[b + G_EXTENTS]!;
    return buf.forget();
  } catch (e) {
    unref(w, gem);
    throw e;
  } finally {
    resv.put();
  }
}

/* ---- handles (drm_gem_handle_create_tail, drm_gem_object_release_handle) ---- */

/** handle_count++ (vgem lock held). */
function handleCountGet(w: World, gem: number): void {
  w.i32[w.base(gem) + G_HANDLES]!++;
}

/** handle_count--: the last handle drops obj->dma_buf (drm_gem_object_exported_dma_buf_free). */
function handleCountPut(w: World, gem: number): void {
  const b = w.base(gem);
  let dmabuf = -1;
  mutexLock(w, H_VGEM_LOCK);
  if (--w.i32[b + G_HANDLES]! === 0) {
    dmabuf = w.i32[b + G_DMABUF]!;
    w.i32[b + G_DMABUF] = -1;
  }
  mutexUnlock(w, H_VGEM_LOCK);
  if (dmabuf >= 0) unref(w, dmabuf);
}

/** Put `gem` in the table under a new handle (file lock held, handle count taken). @throws ENOMEM (count given back). */
function handleInsert(w: World, file: number, gem: number, prime: boolean): number {
  ref(w, gem); // the handle's
  try {
    return idrAlloc(w, file, HANDLE_IDR, (gem + 1) | (prime ? PRIME : 0), true, 'ioctl');
  } catch (e) {
    handleCountPut(w, gem);
    unref(w, gem);
    throw e;
  }
}

function releaseHandle(w: World, gem: number): void {
  handleCountPut(w, gem);
  unref(w, gem);
}

/** drm_gem_object_lookup: object `handle` names in `file`, with a reference, or -1. */
function lookup(w: World, file: number, handle: number): number {
  return withFileLock(w, file, () => {
    const e = idrFind(w, file, HANDLE_IDR, handle);
    if (e === 0) return -1;
    ref(w, gemOf(e));
    return gemOf(e);
  });
}

function lookupOrFail(w: World, file: number, handle: number): number {
  const gem = lookup(w, file, handle);
  if (gem < 0) throw fail('ENOENT', 'ioctl', `no GEM handle ${handle} in this DRM file`);
  return gem;
}

/* ---- the DRM file ---- */

/** open("/dev/dri/card0"): a new DRM file with empty tables. @returns its file slot, held by this thread. */
export function vgemOpen(flags: number): number {
  const w = world();
  const file = allocFile(FileType.DrmDev, -1, flags, 'open');
  idrInit(w, file, HANDLE_IDR);
  idrInit(w, file, FENCE_IDR);
  return file;
}

/** drm_file_free: handles first (drm_gem_release), then vgem's postclose signals the fences. */
function vgemRelease(w: World, file: number): void {
  for (const [, e] of idrEntries(w, file, HANDLE_IDR)) releaseHandle(w, gemOf(e));
  idrDestroy(w, file, HANDLE_IDR);
  vgemFenceClose(w, file);
}

registerFileType(FileType.DrmDev, { name: 'drm', release: (w, file) => vgemRelease(w, file) });

/* ---- ioctls (arguments decoded by the uapi) ---- */

export interface DumbResult {
  handle: number;
  pitch: number;
  size: number;
}

/** The checks of drm_mode_create_dumb. @throws EINVAL. */
function checkDumb(width: number, height: number, bpp: number): void {
  if (!width || !height || !bpp) throw fail('EINVAL', 'ioctl', 'width, height and bpp must be non-zero');
  if (bpp > U32_MAX - 8) throw fail('EINVAL', 'ioctl', 'bpp overflows');
  const cpp = Math.ceil(bpp / 8);
  if (cpp > Math.floor(U32_MAX / width)) throw fail('EINVAL', 'ioctl', 'width * bytes per pixel overflows 32 bits');
  const stride = cpp * width;
  if (height > Math.floor(U32_MAX / stride)) throw fail('EINVAL', 'ioctl', 'pitch * height overflows 32 bits');
  if (height * stride > 2 ** 32 - PAGE_SIZE) throw fail('EINVAL', 'ioctl', 'size wraps when page aligned');
}

/**
 * DRM_IOCTL_MODE_CREATE_DUMB. The shmem helper's pitch, ⌈width·bpp/8⌉, is computed
 * exactly (the kernel's 32-bit product width·bpp can wrap for widths near 2^29).
 * @throws EINVAL, ENOMEM.
 */
export function vgemCreateDumb(file: number, width: number, height: number, bpp: number): DumbResult {
  checkDumb(width, height, bpp);
  const pitch = Math.ceil((width * bpp) / 8);
  const size = Math.ceil((pitch * height) / PAGE_SIZE) * PAGE_SIZE;
  const w = world();
  const gem = gemCreate(w, size);
  try {
    mutexLock(w, H_VGEM_LOCK);
    handleCountGet(w, gem);
    mutexUnlock(w, H_VGEM_LOCK);
    const handle = withFileLock(w, file, () => handleInsert(w, file, gem, false));
    return { handle, pitch, size };
  } finally {
    unref(w, gem); // the handle holds it now
  }
}

/** DRM_IOCTL_MODE_MAP_DUMB (drm_gem_dumb_map_offset). @returns the byte offset. @throws ENOENT, EINVAL (imported). */
export function vgemMapDumb(file: number, handle: number): number {
  const w = world();
  const gem = lookupOrFail(w, file, handle);
  try {
    const b = w.base(gem);
    if (w.i32[b + G_IMPORT]! >= 0) throw fail('EINVAL', 'ioctl', 'imported objects cannot be mapped through the DRM file');
    Atomics.store(w.i32, b + G_OFFSET, 1);
    return (DRM_FILE_PAGE_OFFSET_START + gem * OFFSET_STRIDE) * PAGE_SIZE;
  } finally {
    unref(w, gem);
  }
}

/** DRM_IOCTL_GEM_CLOSE (drm_gem_handle_delete). @throws EINVAL for a handle not in use. */
export function vgemGemClose(file: number, handle: number): void {
  const w = world();
  const e = withFileLock(w, file, () => {
    const old = idrFind(w, file, HANDLE_IDR, handle);
    if (old !== 0) idrReplace(w, file, HANDLE_IDR, handle, 0);
    return old;
  });
  if (e === 0) throw fail('EINVAL', 'ioctl', `no GEM handle ${handle} in this DRM file`);
  releaseHandle(w, gemOf(e));
}

/**
 * DRM_IOCTL_PRIME_HANDLE_TO_FD after the flag check and fd reservation: the
 * object's dma-buf. @returns its file with one hold of this thread (for the fd).
 * @throws ENOENT, ENOMEM.
 */
export function vgemHandleToFd(file: number, handle: number, flags: number): number {
  const w = world();
  return withFileLock(w, file, () => {
    const e = idrFind(w, file, HANDLE_IDR, handle);
    if (e === 0) throw fail('ENOENT', 'ioctl', `no GEM handle ${handle} in this DRM file`);
    const b = w.base(gemOf(e));
    mutexLock(w, H_VGEM_LOCK);
    let held: number;
    try {
      const cached = w.i32[b + G_DMABUF]!;
      if (cached >= 0) {
        fileGet(cached);
        held = cached;
      } else {
        held = gemExport(w, gemOf(e), flags);
        ref(w, held); // obj->dma_buf's
        w.i32[b + G_DMABUF] = held;
      }
    } finally {
      mutexUnlock(w, H_VGEM_LOCK);
    }
    idrReplace(w, file, HANDLE_IDR, handle, e | PRIME);
    return held;
  });
}

/** The object of vgem buffer `buf` with a new reference, or a new import of a foreign one (vgem lock held). */
function gemForBuffer(w: World, buf: DmaBuf): number {
  if (buf.ops !== vgemBufOps) return gemImport(w, buf);
  ref(w, buf.priv);
  return buf.priv;
}

/**
 * DRM_IOCTL_PRIME_FD_TO_HANDLE after dma_buf_get: the handle of buffer file
 * `bufFile` in `file`. @throws ENOMEM.
 */
export function vgemFdToHandle(file: number, bufFile: number): number {
  const w = world();
  const buf = DmaBuf.fromFile(bufFile, 'ioctl');
  try {
    return withFileLock(w, file, () => {
      for (const [id, e] of idrEntries(w, file, HANDLE_IDR)) {
        if (e & PRIME && w.i32[w.base(gemOf(e)) + G_DMABUF] === bufFile) return id;
      }
      mutexLock(w, H_VGEM_LOCK);
      let gem: number;
      try {
        gem = gemForBuffer(w, buf);
        const b = w.base(gem);
        if (w.i32[b + G_DMABUF]! < 0) {
          w.i32[b + G_DMABUF] = bufFile;
          ref(w, bufFile);
        }
        handleCountGet(w, gem);
      } finally {
        mutexUnlock(w, H_VGEM_LOCK);
      }
      try {
        return handleInsert(w, file, gem, true);
      } finally {
        unref(w, gem);
      }
    });
  } finally {
    buf.close();
  }
}

/**
 * DRM_IOCTL_VGEM_FENCE_ATTACH after the flag checks. @returns the fence id.
 * @throws ENOENT (handle), EBUSY (conflicting fence), ENOMEM.
 */
export function vgemAttachFence(file: number, handle: number, write: boolean): number {
  const w = world();
  const gem = lookupOrFail(w, file, handle);
  try {
    return vgemFenceAttach(file, w.i32[w.base(gem) + G_RESV]!, write);
  } finally {
    unref(w, gem);
  }
}

/* ---- mmap of the DRM file (drm_gem_mmap) ---- */

/** The object whose offset range starts at `pgoff` and holds `pages`, with a reference, or -1. */
function offsetLookup(w: World, pgoff: number, pages: number): number {
  const rel = pgoff - DRM_FILE_PAGE_OFFSET_START;
  if (rel < 0 || rel % OFFSET_STRIDE !== 0 || rel / OFFSET_STRIDE >= w.capacity) return -1;
  const gem = rel / OFFSET_STRIDE;
  mutexLock(w, H_VGEM_LOCK);
  const got = slotKind(w, gem) === Kind.Gem && tryRef(w, gem);
  const b = w.base(gem);
  const fits = got && Atomics.load(w.i32, b + G_OFFSET) === 1 && pages <= w.i32[b + G_PAGES]!;
  mutexUnlock(w, H_VGEM_LOCK);
  if (got && !fits) unref(w, gem); // outside the lock: it may be the last reference
  return fits ? gem : -1;
}

function fileHasHandle(w: World, file: number, gem: number): boolean {
  return withFileLock(w, file, () => idrEntries(w, file, HANDLE_IDR).some(([, e]) => gemOf(e) === gem));
}

/**
 * mmap(2) on a DRM file: pages [pgoff, pgoff + pages) of the object at that fake
 * offset. @returns the view and one reference on the object for the mapping.
 * @throws EINVAL (no object there, too long, MAP_PRIVATE), EACCES (no handle in this file).
 */
export function vgemMmap(file: number, pgoff: number, pages: number, shared: boolean): { view: Uint8Array; object: number } {
  const w = world();
  const gem = offsetLookup(w, pgoff, pages);
  if (gem < 0) throw fail('EINVAL', 'mmap', 'no GEM object starts at this offset with that many pages');
  try {
    if (!fileHasHandle(w, file, gem)) throw fail('EACCES', 'mmap', 'this DRM file has no handle to the object');
    if (!shared) throw fail('EINVAL', 'mmap', 'GEM objects cannot be mapped copy-on-write (MAP_PRIVATE)');
    return { view: pageBytes(w.i32[w.base(gem) + G_PAGE]!, pages), object: gem };
  } catch (e) {
    unref(w, gem);
    throw e;
  }
}
