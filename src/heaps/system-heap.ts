/**
 * DOC: the system heap (drivers/dma-buf/heaps/system_heap.c), heap "system"
 *
 * Buffers of zeroed pages, described as chunks of orders 8, 4 and 0 (1 MiB,
 * 64 KiB, 4 KiB): the largest that fits what is left and is no larger than the
 * previous one, each one sg entry — the kernel's allocation pattern. JS forces one
 * difference: a mapping must be one typed array, so the chunks are carved from one
 * contiguous run of arena pages (alloc_pages_exact) instead of scattered pages;
 * the sg table still shows the kernel's chunks.
 *
 * Static exporter (no pin). Each attachment is marked mapped while it has a
 * mapping; CPU-access syncs have nothing to do (arena memory is coherent for every
 * thread) and succeed, as the kernel's always return 0. Private mappings are
 * allowed. Release frees the pages.
 */
import { DmaBuf, registerDmaBufOps, type DmaBufOps } from '../dma-buf.js';
import type { DmaBufAttachment } from '../dma-buf-attach.js';
import { DmaHeap } from '../dma-heap.js';
import type { PageExtent } from '../device.js';
import { allocPagesExact, freePagesExact, PAGE_SIZE } from '../shared/arena.js';
import { world } from '../shared/world.js';
import { extentsCreate, extentsFree, pageBufferMap, pageBufferView, pageBufferVmap } from '../page-buffer.js';

export const SYSTEM_HEAP_NAME = 'system';
/** Chunk orders, largest first (orders[] in system_heap.c). */
export const SYSTEM_HEAP_ORDERS = [8, 4, 0] as const;

/* Exporter words: the extents list, the first page, the page count. */
const X_EXTENTS = 0;
const X_PAGE = 1;
const X_PAGES = 2;
/* Attachment exporter word: mapped flag. */
const XA_MAPPED = 0;

/** The chunks system_heap_allocate takes for `pages` pages, as extents starting at `first`. */
export function systemHeapChunks(first: number, pages: number): PageExtent[] {
  const out: PageExtent[] = [];
  let left = pages;
  let maxOrder: number = SYSTEM_HEAP_ORDERS[0];
  let at = first;
  while (left > 0) {
    const order = SYSTEM_HEAP_ORDERS.find((o) => o <= maxOrder && 1 << o <= left)!;
    out.push({ page: at, pages: 1 << order });
    at += 1 << order;
    left -= 1 << order;
    maxOrder = order;
  }
  return out;
}

function setMapped(attach: DmaBufAttachment, v: number): void {
  world().i32[attach.exporterWords + XA_MAPPED] = v;
}

export const systemHeapBufOps: DmaBufOps = {
  name: 'system_heap',
  mapDmaBuf(attach) {
    const sgt = pageBufferMap(attach);
    setMapped(attach, 1);
    return sgt;
  },
  unmapDmaBuf(attach) {
    setMapped(attach, 0);
  },
  release(buf) {
    const w = world();
    const x = buf.exporterWords;
    freePagesExact(w.i32[x + X_PAGE]!, w.i32[x + X_PAGES]!, 'system_heap_release');
    extentsFree(w.i32[x + X_EXTENTS]!);
  },
  beginCpuAccess: () => 0,
  endCpuAccess: () => 0,
  mmap: pageBufferView,
  vmap: pageBufferVmap,
};

// Every thread that loads dmabuf can map, release, … a system-heap buffer made
// elsewhere (dma-buf.ts: ops are found by name per thread).
registerDmaBufOps(systemHeapBufOps);

/** system_heap_allocate: `len` is page aligned. @throws ENOMEM. */
function allocate(heap: DmaHeap, len: number, fdFlags: number): DmaBuf {
  const pages = len / PAGE_SIZE;
  const first = allocPagesExact(pages, 'dma_heap_alloc');
  let list = -1;
  try {
    list = extentsCreate(systemHeapChunks(first, pages), 'dma_heap_alloc');
    const buf = DmaBuf.export({ ops: systemHeapBufOps, priv: 0, size: len, expName: heap.name, flags: fdFlags });
    const x = buf.exporterWords;
    const w = world();
    w.i32[x + X_EXTENTS] = list;
    w.i32[x + X_PAGE] = first;
    w.i32[x + X_PAGES] = pages;
    return buf;
  } catch (e) {
    if (list >= 0) extentsFree(list);
    freePagesExact(first, pages, 'dma_heap_alloc');
    throw e;
  }
}

export const systemHeap = DmaHeap.add({ name: SYSTEM_HEAP_NAME, ops: { allocate } });
