/**
 * DOC: page-backed buffers — what the built-in exporters share
 *
 * The heaps, udmabuf and vgem export memory made of arena pages (shared/arena.ts).
 * A buffer's pages are a list of extents (runs of contiguous pages) kept in shared
 * memory: the first exporter word of the buffer (`exporterWords`) names a list
 * (shared/list.ts) of `page, pages` pairs, so every thread finds the same pages.
 *
 * - `pageBufferMap` builds the sg table an attachment's device sees: one entry per
 *   extent, split by the device's segment rules (device.ts).
 * - `pageBufferView` is mmap and vmap: a Uint8Array over the pages, the same
 *   bytes in every thread. JS forces one difference from the kernel here: a
 *   mapping is one typed array over one memory range, so a range whose pages are
 *   not contiguous in the arena cannot be mapped in one piece (ENOMEM, the
 *   kernel's answer when vmap cannot build a mapping); map each contiguous part
 *   separately. The heaps allocate contiguously, so their buffers always map.
 */
import type { DmaBuf } from './dma-buf.js';
import type { DmaBufAttachment } from './dma-buf-attach.js';
import { dmaMapExtents, type PageExtent, type SgTable } from './device.js';
import { fail } from './errors.js';
import { pageBytes } from './shared/arena.js';
import { listCreate, listEntries, listFree } from './shared/list.js';
import { slotGen } from './shared/slab.js';
import { world } from './shared/world.js';

/** Store `extents` for a buffer about to be exported: returns the number to keep in exporter word 0. */
export function extentsCreate(extents: readonly PageExtent[], syscall: string): number {
  return listCreate(world(), extents.flatMap((x) => [x.page, x.pages]), syscall);
}

/** The extents stored by `extentsCreate`. */
export function extentsRead(list: number): PageExtent[] {
  const flat = listEntries(world(), list);
  const out: PageExtent[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ page: flat[i]!, pages: flat[i + 1]! });
  return out;
}

/** Free the list made by `extentsCreate` (not the pages). */
export function extentsFree(list: number): void {
  listFree(world(), list);
}

/** The extents of a page-backed buffer. */
export function bufferExtents(buf: DmaBuf): readonly PageExtent[] {
  const w = world();
  const list = w.i32[buf.exporterWords]!;
  const gen = slotGen(w, list);
  const hit = extentsCache.get(list);
  if (hit?.gen === gen) return hit.extents;
  const extents = extentsRead(list);
  extentsCache.set(list, { gen, extents });
  return extents;
}

/**
 * Per thread, the extents read from each list (lists made by `extentsCreate` never
 * change; a freed and reused list slot has a new generation and misses). mmap and
 * map would otherwise decode the list on every call.
 */
const extentsCache = new Map<number, { gen: number; extents: readonly PageExtent[] }>();

/** map_dma_buf of a page-backed buffer for `attach`'s device. @throws EIO beyond the device's mask. */
export function pageBufferMap(attach: DmaBufAttachment): SgTable {
  return dmaMapExtents(attach.dev, bufferExtents(attach.dmabuf), 'dma_buf_map_attachment');
}

/** Pages [pgoff, pgoff + pages) of `extents` as one view. @throws ENOMEM if they are not contiguous. */
export function extentsView(extents: readonly PageExtent[], pgoff: number, pages: number, syscall: string): Uint8Array {
  let skip = pgoff;
  let start = -1;
  let want = pages;
  let next = -1;
  for (const x of extents) {
    if (want === 0) break;
    if (skip >= x.pages) {
      skip -= x.pages;
      continue;
    }
    const first = x.page + skip;
    const take = Math.min(x.pages - skip, want);
    if (start < 0) start = first;
    else if (first !== next) throw fail('ENOMEM', syscall, 'range spans pages that are not contiguous in the arena; map it in parts');
    next = first + take;
    want -= take;
    skip = 0;
  }
  if (start < 0 || want > 0) throw fail('EINVAL', syscall, 'range passes the end of the pages');
  return pageBytes(start, pages);
}

/** mmap op of a page-backed buffer. */
export function pageBufferView(buf: DmaBuf, pgoff: number, pages: number): Uint8Array {
  return extentsView(bufferExtents(buf), pgoff, pages, 'mmap');
}

/** vmap op of a page-backed buffer: the whole buffer (its size, which may end mid-page). */
export function pageBufferVmap(buf: DmaBuf): Uint8Array {
  const ext = bufferExtents(buf);
  const pages = ext.reduce((n, x) => n + x.pages, 0);
  return extentsView(ext, 0, pages, 'dma_buf_vmap').subarray(0, buf.size);
}
