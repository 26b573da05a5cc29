/**
 * DOC: the contiguous memory area (mm/cma.c) behind the CMA heap
 *
 * The kernel reserves a CMA area at boot and hands out physically contiguous,
 * aligned runs of its pages with `cma_alloc(cma, count, align)`, tracking them in
 * a bitmap (one bit per page here: order_per_bit 0). Here the area is a run of
 * arena pages (shared/arena.ts), reserved on the first allocation from any thread:
 *
 * - size: `DMABUF_CMA_MB` MiB (an integer 1..4096; default 64), read by the thread
 *   that reserves it — the area is fixed from then on, for every thread, as a
 *   boot-time reservation is. If the arena cannot hold it, that allocation fails
 *   ENOMEM and the next one tries again.
 * - layout: `pages` usable pages from H_CMA_BASE, then the bitmap in the pages
 *   right after them, all in one `allocPagesExact` block (naturally aligned, so
 *   alignment relative to the area is also absolute alignment, as
 *   cma_bitmap_aligned_offset makes it in the kernel).
 * - locking: one shared mutex, H_CMA_LOCK, plays `cma->lock` (the reaper releases
 *   it if a thread dies holding it); the reservation itself happens under it, so
 *   two threads racing for the first allocation reserve one area.
 * - allocation: first fit, as bitmap_find_next_zero_area_off: the next free page,
 *   rounded up to the alignment, taken if the whole run is free, else the search
 *   goes on after the page that was busy. No fit is ENOMEM (cma_alloc's NULL).
 *   The pages are not cleared here; the heap clears them, as cma_heap_allocate does.
 * - release: `cmaRelease` checks the run lies in the area and is allocated
 *   (EINVAL otherwise, nothing freed — the kernel's VM_BUG_ON), then clears its bits.
 *
 * The area is never given back to the arena (the kernel's is not either).
 */
import { fail } from '../errors.js';
import { mutexLock, mutexUnlock } from '../shared/mutex.js';
import { allocPagesExact, PAGE_SIZE } from '../shared/arena.js';
import { H_CMA_BASE, H_CMA_LOCK, H_CMA_PAGES, H_CMA_STATE, world, type World } from '../shared/world.js';

/** Default size of the area, MiB (override with DMABUF_CMA_MB). */
export const CMA_DEFAULT_MB = 64;
/** Largest alignment order the CMA heap asks for (CONFIG_CMA_ALIGNMENT). */
export const CONFIG_CMA_ALIGNMENT = 8;

/** H_CMA_STATE: 0 until the area is reserved, then STATE_READY. */
const STATE_READY = 1;
const BITS_PER_PAGE = PAGE_SIZE * 8;
const WORDS_PER_PAGE = PAGE_SIZE / 4;

/** The area as every thread sees it. */
export interface CmaStats {
  /** First arena page of the area. */
  readonly basePage: number;
  /** Pages in the area (its bitmap comes after them). */
  readonly pages: number;
  /** Pages not allocated. */
  readonly freePages: number;
}

/** The area size in pages that DMABUF_CMA_MB asks for. */
function wantedPages(): number {
  const mb = Number(process.env['DMABUF_CMA_MB'] ?? CMA_DEFAULT_MB);
  const ok = Number.isInteger(mb) && mb >= 1 && mb <= 4096;
  return ((ok ? mb : CMA_DEFAULT_MB) * 2 ** 20) / PAGE_SIZE;
}

/** Reserve the area if nobody has yet (H_CMA_LOCK held). @throws ENOMEM if the arena cannot hold it. */
function reserveLocked(w: World, syscall: string): void {
  if (Atomics.load(w.i32, H_CMA_STATE) === STATE_READY) return;
  const pages = wantedPages();
  const base = allocPagesExact(pages + Math.ceil(pages / BITS_PER_PAGE), syscall); // zeroed: all pages free
  w.i32[H_CMA_BASE] = base;
  w.i32[H_CMA_PAGES] = pages;
  Atomics.store(w.i32, H_CMA_STATE, STATE_READY);
}

/** Word index (in `w.arenaI32`) of the bitmap's first word. */
function bitmapAt(w: World): number {
  return (w.i32[H_CMA_BASE]! + w.i32[H_CMA_PAGES]!) * WORDS_PER_PAGE;
}

function testBit(w: World, bm: number, i: number): boolean {
  return (w.arenaI32[bm + (i >>> 5)]! & (1 << (i & 31))) !== 0;
}

/** First bit in [from, to) that is set (`set`) or clear (!`set`), or -1. */
function findBit(w: World, bm: number, from: number, to: number, set: boolean): number {
  let i = from;
  while (i < to) {
    const word = w.arenaI32[bm + (i >>> 5)]!;
    const bits = (set ? word : ~word) >>> (i & 31);
    if (bits === 0) {
      i = (i | 31) + 1;
      continue;
    }
    const j = i + 31 - Math.clz32(bits & -bits);
    return j < to ? j : -1;
  }
  return -1;
}

function setBits(w: World, bm: number, from: number, count: number, on: boolean): void {
  for (let i = from; i < from + count; i++) {
    const at = bm + (i >>> 5);
    w.arenaI32[at] = on ? w.arenaI32[at]! | (1 << (i & 31)) : w.arenaI32[at]! & ~(1 << (i & 31));
  }
}

/** bitmap_find_next_zero_area_off: first run of `count` free pages whose page number is a multiple of `align`, or -1. */
function findArea(w: World, count: number, align: number): number {
  const base = w.i32[H_CMA_BASE]!;
  const pages = w.i32[H_CMA_PAGES]!;
  const bm = bitmapAt(w);
  let start = 0;
  for (;;) {
    const free = findBit(w, bm, start, pages, false);
    if (free < 0) return -1;
    const at = Math.ceil((base + free) / align) * align - base;
    if (at + count > pages) return -1;
    const busy = findBit(w, bm, at, at + count, true);
    if (busy < 0) return at;
    start = busy + 1;
  }
}

/**
 * cma_alloc: `count` contiguous pages aligned to 2^`alignOrder` pages, not cleared.
 * Reserves the area first if this is the first allocation anywhere.
 * @returns the first page. @throws EINVAL (bad count or order), ENOMEM (no fit, or no room for the area).
 */
export function cmaAlloc(count: number, alignOrder: number, syscall: string): number {
  if (!Number.isSafeInteger(count) || count < 1) throw fail('EINVAL', syscall, `cannot allocate ${count} pages`);
  if (!Number.isInteger(alignOrder) || alignOrder < 0 || alignOrder > 30) {
    throw fail('EINVAL', syscall, `bad alignment order ${alignOrder}`);
  }
  const w = world();
  mutexLock(w, H_CMA_LOCK);
  try {
    reserveLocked(w, syscall);
    const at = findArea(w, count, 2 ** alignOrder);
    if (at < 0) {
      throw fail('ENOMEM', syscall, `no run of ${count} free pages aligned to ${2 ** alignOrder} in the contiguous area `
        + `(${w.i32[H_CMA_PAGES]} pages; raise DMABUF_CMA_MB)`);
    }
    setBits(w, bitmapAt(w), at, count, true);
    return w.i32[H_CMA_BASE]! + at;
  } finally {
    mutexUnlock(w, H_CMA_LOCK);
  }
}

/**
 * cma_release: give back `count` pages from `page` (what `cmaAlloc` returned).
 * @throws EINVAL if the run is outside the area or not all allocated (nothing is freed then).
 */
export function cmaRelease(page: number, count: number, syscall: string): void {
  const w = world();
  mutexLock(w, H_CMA_LOCK);
  try {
    const ready = Atomics.load(w.i32, H_CMA_STATE) === STATE_READY;
    const at = page - w.i32[H_CMA_BASE]!;
    if (!ready || !Number.isSafeInteger(at) || !Number.isSafeInteger(count) || count < 1 || at < 0
      || at + count > w.i32[H_CMA_PAGES]!) {
      throw fail('EINVAL', syscall, `pages ${page}+${count} are not in the contiguous area`);
    }
    const bm = bitmapAt(w);
    if (findBit(w, bm, at, at + count, false) >= 0) throw fail('EINVAL', syscall, `pages ${page}+${count} are not all allocated`);
    setBits(w, bm, at, count, false);
  } finally {
    mutexUnlock(w, H_CMA_LOCK);
  }
}

/** The area's place and usage, or null before the first allocation reserved it. */
export function cmaStats(): CmaStats | null {
  const w = world();
  mutexLock(w, H_CMA_LOCK);
  try {
    if (Atomics.load(w.i32, H_CMA_STATE) !== STATE_READY) return null;
    const pages = w.i32[H_CMA_PAGES]!;
    const bm = bitmapAt(w);
    let used = 0;
    for (let i = 0; i < pages; i++) if (testBit(w, bm, i)) used++;
    return { basePage: w.i32[H_CMA_BASE]!, pages, freePages: pages - used };
  } finally {
    mutexUnlock(w, H_CMA_LOCK);
  }
}
