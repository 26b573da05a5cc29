/**
 * DOC: the CMA heap (drivers/dma-buf/heaps/cma_heap.c), heap "default_cma_region"
 *
 * Buffers of physically contiguous pages from the contiguous area (cma.ts):
 * `PAGE_ALIGN(len)` bytes, aligned to 2^min(get_order(size), CONFIG_CMA_ALIGNMENT)
 * pages, cleared before use; no fit is ENOMEM. Each buffer is one extent, so every
 * device sees one sg entry (split only by its own segment rules).
 *
 * Static exporter (no pin), with the system heap's model: each attachment is
 * marked mapped while it has a mapping, and CPU-access syncs have nothing to do
 * (arena memory is coherent for every thread) and return 0. A map the device
 * cannot take fails ENOMEM, as cma_heap_map_dma_buf turns every DMA-mapping
 * error into -ENOMEM.
 *
 * mmap requires a shared mapping (MAP_PRIVATE → EINVAL). The kernel inserts pages
 * lazily on fault and sends SIGBUS past the end; here the view is the pages
 * themselves and the core has already refused a range past the end (EINVAL).
 *
 * vmap: the core counts vmaps and calls the exporter for the first and the last
 * only, so the exporter's `vmap_cnt` is a flag here (exporter word X_VMAPPED),
 * shared by every thread. Release WARNs (process warning DMABUF_WARN) if the
 * buffer is still vmapped, then returns its pages to the area.
 */
import { DmaBuf, registerDmaBufOps, type DmaBufOps } from '../dma-buf.js';
import type { DmaBufAttachment } from '../dma-buf-attach.js';
import { DmaHeap } from '../dma-heap.js';
import { fail, isDmaBufError } from '../errors.js';
import { orderFor, PAGE_SIZE } from '../shared/arena.js';
import { world } from '../shared/world.js';
import { extentsCreate, extentsFree, pageBufferMap, pageBufferView, pageBufferVmap } from '../page-buffer.js';
import { cmaAlloc, cmaRelease, CONFIG_CMA_ALIGNMENT } from './cma.js';

export const CMA_HEAP_NAME = 'default_cma_region';

/* Exporter words: the extents list (page-buffer.ts reads word 0), first page, page count, vmapped flag. */
const X_EXTENTS = 0;
const X_PAGE = 1;
const X_PAGES = 2;
const X_VMAPPED = 3;
/* Attachment exporter word: mapped flag. */
const XA_MAPPED = 0;

/** The alignment order cma_heap_allocate asks for a buffer of `pages` pages. */
export function cmaHeapAlignOrder(pages: number): number {
  return Math.min(orderFor(pages), CONFIG_CMA_ALIGNMENT);
}

function setMapped(attach: DmaBufAttachment, v: number): void {
  world().i32[attach.exporterWords + XA_MAPPED] = v;
}

function setVmapped(buf: DmaBuf, v: number): void {
  Atomics.store(world().i32, buf.exporterWords + X_VMAPPED, v);
}

/** The buffer's first page and page count. */
function bufferPages(buf: DmaBuf): { page: number; pages: number } {
  const w = world();
  return { page: w.i32[buf.exporterWords + X_PAGE]!, pages: w.i32[buf.exporterWords + X_PAGES]! };
}

export const cmaHeapBufOps: DmaBufOps = {
  name: 'cma_heap',
  mapDmaBuf(attach) {
    let sgt;
    try {
      sgt = pageBufferMap(attach);
    } catch (e) {
      if (!isDmaBufError(e)) throw e;
      throw fail('ENOMEM', 'dma_buf_map_attachment', `cma heap: ${e.message}`);
    }
    setMapped(attach, 1);
    return sgt;
  },
  unmapDmaBuf(attach) {
    setMapped(attach, 0);
  },
  beginCpuAccess: () => 0,
  endCpuAccess: () => 0,
  mmap(buf, pgoff, pages, shared) {
    if (!shared) throw fail('EINVAL', 'mmap', 'the cma heap maps only MAP_SHARED');
    return pageBufferView(buf, pgoff, pages);
  },
  vmap(buf) {
    const map = pageBufferVmap(buf);
    setVmapped(buf, 1);
    return map;
  },
  vunmap(buf) {
    setVmapped(buf, 0);
  },
  release(buf) {
    const w = world();
    const x = buf.exporterWords;
    if (Atomics.load(w.i32, x + X_VMAPPED)) {
      process.emitWarning('cma_heap_dma_buf_release: buffer still mapped in the kernel', { code: 'DMABUF_WARN' });
      setVmapped(buf, 0);
    }
    const { page, pages } = bufferPages(buf);
    extentsFree(w.i32[x + X_EXTENTS]!);
    cmaRelease(page, pages, 'cma_heap_release');
  },
};

/** cma_heap_allocate: `len` is page aligned. @throws ENOMEM. */
function allocate(heap: DmaHeap, len: number, fdFlags: number): DmaBuf {
  const pages = len / PAGE_SIZE;
  const first = cmaAlloc(pages, cmaHeapAlignOrder(pages), 'dma_heap_alloc');
  world().arenaU8.fill(0, first * PAGE_SIZE, (first + pages) * PAGE_SIZE); // "Clear the cma pages"
  let list = -1;
  try {
    list = extentsCreate([{ page: first, pages }], 'dma_heap_alloc');
    const buf = DmaBuf.export({ ops: cmaHeapBufOps, priv: 0, size: len, expName: heap.name, flags: fdFlags });
    const w = world();
    const x = buf.exporterWords;
    w.i32[x + X_EXTENTS] = list;
    w.i32[x + X_PAGE] = first;
    w.i32[x + X_PAGES] = pages;
    w.i32[x + X_VMAPPED] = 0;
    return buf;
  } catch (e) {
    if (list >= 0) extentsFree(list);
    cmaRelease(first, pages, 'dma_heap_alloc');
    throw e;
  }
}

// Every thread that loads dmabuf can then use (and release) buffers exported in another.
registerDmaBufOps(cmaHeapBufOps);

export const cmaHeap = DmaHeap.add({ name: CMA_HEAP_NAME, ops: { allocate } });
