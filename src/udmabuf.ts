/**
 * DOC: udmabuf — dma-bufs made of memfd pages (drivers/dma-buf/udmabuf.c)
 *
 * `udmabufCreate(items, flags)` turns ranges of sealed memfds into one dma-buf
 * whose pages *are* the memfds' pages: writes through either are seen through
 * the other, in every thread. The checks run in the kernel's order (kernel-contract
 * §6.4): every item's offset and size page aligned, the running total within
 * `UDMABUF_SIZE_LIMIT_MB`, the total non-zero (all EINVAL); then item by item:
 * the memfd open and a memfd (EBADFD), its seals include F_SEAL_SHRINK and
 * exclude F_SEAL_WRITE and F_SEAL_FUTURE_WRITE (EINVAL, checked under the memfd's
 * inode lock), the range inside the file (EINVAL). A failure unpins what earlier
 * items pinned, so nothing changes.
 *
 * Pinning: each item holds its memfd (an internal reference) and counts as a pin
 * on it, so the memfd keeps those pages in place until the udmabuf is released,
 * even after its last fd is closed (memfd.ts never moves or frees pinned pages).
 *
 * Exporter ops (exp_name "udmabuf", file O_RDWR, no attach callbacks):
 * - map: a fresh sg table per call, one entry per page;
 * - mmap: shared mappings only (private → EINVAL); a range whose pages are not
 *   contiguous in the arena cannot be one view (ENOMEM, page-buffer.ts): map the
 *   parts — a JS difference, since the kernel maps page by page;
 * - vmap: the whole buffer; when its pages are not contiguous, EINVAL (the
 *   kernel's answer when vm_map_ram fails);
 * - begin_cpu_access: the first call creates the lazy table for the udmabuf
 *   device (here: marks the buffer begun; memory is coherent for every thread);
 * - end_cpu_access: EINVAL if begin_cpu_access never ran (so DMA_BUF_IOCTL_SYNC
 *   END before any START fails EINVAL), else 0;
 * - release: unpin every memfd.
 */
import { DmaBuf, O_RDWR, registerDmaBufOps, type DmaBufOps } from './dma-buf.js';
import type { DmaBufAttachment } from './dma-buf-attach.js';
import { dmaMapExtents, type PageExtent, type SgTable } from './device.js';
import { DmaBufError, fail } from './errors.js';
import {
  F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_WRITE, isMemfd, memfdLocked, memfdPinLocked, memfdSealsLocked, memfdUnpin,
} from './memfd.js';
import { bufferExtents, extentsCreate, extentsFree, pageBufferView, pageBufferVmap } from './page-buffer.js';
import { PAGE_SIZE } from './shared/arena.js';
import { listCreate, listEntries, listFree } from './shared/list.js';
import { world } from './shared/world.js';

export const UDMABUF_EXP_NAME = 'udmabuf';
/** Module parameter list_limit: items per UDMABUF_CREATE_LIST. */
export const UDMABUF_LIST_LIMIT = 1024;
/** Module parameter size_limit_mb: the most one udmabuf may hold. */
export const UDMABUF_SIZE_LIMIT_MB = 64;
const SEALS_WANTED = F_SEAL_SHRINK;
/** F_SEAL_FUTURE_WRITE joined the denied seals in ≈6.13 (current). */
const SEALS_DENIED = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
const EINVAL = -22;

/* Exporter words: the extents list (word 0, for page-buffer.ts), the pinned memfds, the lazy table flag. */
const X_EXTENTS = 0;
const X_MEMFDS = 1;
const X_BEGUN = 2;

/** struct udmabuf_create_item, its memfd already looked up: the file slot, or -1 if the fd is not open. */
export interface UdmabufItem {
  readonly memfd: number;
  readonly offset: bigint;
  readonly size: bigint;
}

/** One sg entry per page of the buffer (get_sg_table). */
function perPage(extents: readonly PageExtent[]): PageExtent[] {
  const out: PageExtent[] = [];
  for (const x of extents) for (let i = 0; i < x.pages; i++) out.push({ page: x.page + i, pages: 1 });
  return out;
}

export const udmabufOps: DmaBufOps = {
  name: 'udmabuf',
  mapDmaBuf(attach: DmaBufAttachment): SgTable {
    return dmaMapExtents(attach.dev, perPage(bufferExtents(attach.dmabuf)), 'dma_buf_map_attachment');
  },
  unmapDmaBuf() {
    // the table was built for this call only; nothing is cached
  },
  release(buf) {
    const w = world();
    const x = buf.exporterWords;
    for (const file of listEntries(w, w.i32[x + X_MEMFDS]!)) memfdUnpin(file);
    listFree(w, w.i32[x + X_MEMFDS]!);
    extentsFree(w.i32[x + X_EXTENTS]!);
  },
  beginCpuAccess(buf) {
    Atomics.store(world().i32, buf.exporterWords + X_BEGUN, 1);
    return 0;
  },
  endCpuAccess(buf) {
    return Atomics.load(world().i32, buf.exporterWords + X_BEGUN) ? 0 : EINVAL;
  },
  mmap(buf, pgoff, pages, shared) {
    if (!shared) throw fail('EINVAL', 'mmap', 'udmabuf mappings must be shared (MAP_SHARED)');
    return pageBufferView(buf, pgoff, pages);
  },
  vmap(buf) {
    try {
      return pageBufferVmap(buf);
    } catch (e) {
      if (e instanceof DmaBufError && e.code === 'ENOMEM') throw fail('EINVAL', 'dma_buf_vmap', 'pages are not contiguous: no single mapping');
      throw e;
    }
  },
};

// Every thread that loads dmabuf can serve udmabufs made in any other (dma-buf.ts: ops are per thread).
registerDmaBufOps(udmabufOps);

const PAGE = BigInt(PAGE_SIZE);

/** The size checks of the first loop, then the total: @returns the total pages. @throws EINVAL. */
function checkSizes(items: readonly UdmabufItem[]): number {
  const limit = (BigInt(UDMABUF_SIZE_LIMIT_MB) * 1024n * 1024n) / PAGE;
  let pages = 0n;
  for (const [i, it] of items.entries()) {
    if (it.offset % PAGE !== 0n) throw fail('EINVAL', 'ioctl', `item ${i}: offset is not page aligned`);
    if (it.size % PAGE !== 0n) throw fail('EINVAL', 'ioctl', `item ${i}: size is not page aligned`);
    pages += it.size / PAGE;
    if (pages > limit) throw fail('EINVAL', 'ioctl', `more than size_limit_mb (${UDMABUF_SIZE_LIMIT_MB} MiB) in total`);
  }
  if (pages === 0n) throw fail('EINVAL', 'ioctl', 'a udmabuf needs at least one page');
  return Number(pages);
}

/** check_memfd_seals, then pin the item's range. @throws EBADFD, EINVAL. */
function pinItem(i: number, it: UdmabufItem): PageExtent[] {
  if (it.memfd < 0) throw fail('EBADFD', 'ioctl', `item ${i}: memfd is not an open fd`);
  if (!isMemfd(it.memfd)) throw fail('EBADFD', 'ioctl', `item ${i}: not a memfd`);
  return memfdLocked(it.memfd, () => {
    const seals = memfdSealsLocked(it.memfd);
    if ((seals & SEALS_WANTED) !== SEALS_WANTED || seals & SEALS_DENIED) {
      throw fail('EINVAL', 'ioctl', `item ${i}: memfd seals must include F_SEAL_SHRINK and exclude F_SEAL_WRITE, F_SEAL_FUTURE_WRITE`);
    }
    return memfdPinLocked(it.memfd, Number(it.offset), Number(it.size));
  });
}

/**
 * udmabuf_create: a new dma-buf over the items' pages (a handle holding its only
 * reference). @throws EINVAL, EBADFD (in the kernel's order), ENOMEM.
 */
export function udmabufCreate(items: readonly UdmabufItem[]): DmaBuf {
  const pages = checkSizes(items);
  const pinned: number[] = [];
  const extents: PageExtent[] = [];
  let lists: number[] = [];
  try {
    for (const [i, it] of items.entries()) {
      extents.push(...pinItem(i, it));
      pinned.push(it.memfd);
    }
    lists = [extentsCreate(extents, 'ioctl')];
    lists.push(listCreate(world(), pinned, 'ioctl'));
    const buf = DmaBuf.export({ ops: udmabufOps, priv: 0, size: pages * PAGE_SIZE, expName: UDMABUF_EXP_NAME, flags: O_RDWR });
    const w = world();
    w.i32[buf.exporterWords + X_EXTENTS] = lists[0]!;
    w.i32[buf.exporterWords + X_MEMFDS] = lists[1]!;
    return buf;
  } catch (e) {
    if (lists[0] !== undefined) extentsFree(lists[0]);
    if (lists[1] !== undefined) listFree(world(), lists[1]);
    for (const file of pinned) memfdUnpin(file);
    throw e;
  }
}
