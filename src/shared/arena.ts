/**
 * DOC: the page arena — physical memory for buffers
 *
 * A buffer's bytes must be reachable synchronously from any thread that gets its
 * fd, and a SharedArrayBuffer can only travel by postMessage. So buffer memory is
 * one growable SharedArrayBuffer, the *arena*, handed to every thread with the
 * object table (world.ts); a buffer is a range of its pages, and a mapping is a
 * Uint8Array over that range — the same bytes in every thread, zero-copy. The
 * arena reserves up to 4 GiB (DMABUF_ARENA_MB) and grows on demand; memory is
 * committed by the OS as pages are touched.
 *
 * Pages (PAGE_SIZE bytes) are handed out by a buddy allocator, as the kernel's
 * page allocator does: blocks of 2^order pages, naturally aligned, split on
 * allocation and merged with their buddy on free. Free lists are intrusive (each
 * free block stores its next/prev links in its first 8 bytes); a per-page order
 * map (one byte per page, after the slots of the table) says which pages head a
 * block, of which order, and whether it is free. Allocated blocks are zeroed.
 * All of it runs under one arena lock.
 */
import { fail } from '../errors.js';
import { mutexLock, mutexUnlock } from './mutex.js';
import { H_ARENA_FREE, H_ARENA_LOCK, H_ARENA_MAX_PAGES, H_ARENA_TOP, world, type World } from './world.js';

export const PAGE_SIZE = 4096;
export const MAX_ORDER = 20;
/** The arena grows by at least 2^GROW_ORDER pages (1 MiB) at a time. */
const GROW_ORDER = 8;
const FREE = 0x80;
const NEXT = 0;
const PREV = 1;

/** Word index, in the arena's Int32Array, of link `which` of the block at `page`. */
function link(page: number, which: number): number {
  return page * (PAGE_SIZE / 4) + which;
}

function pushFree(w: World, page: number, order: number): void {
  const head = w.i32[H_ARENA_FREE + order]!;
  w.arenaI32[link(page, NEXT)] = head;
  w.arenaI32[link(page, PREV)] = -1;
  if (head >= 0) w.arenaI32[link(head, PREV)] = page;
  w.i32[H_ARENA_FREE + order] = page;
  w.pageMap[page] = FREE | (order + 1);
}

function unlinkFree(w: World, page: number, order: number): void {
  const next = w.arenaI32[link(page, NEXT)]!;
  const prev = w.arenaI32[link(page, PREV)]!;
  if (prev >= 0) w.arenaI32[link(prev, NEXT)] = next;
  else w.i32[H_ARENA_FREE + order] = next;
  if (next >= 0) w.arenaI32[link(next, PREV)] = prev;
  w.pageMap[page] = 0;
}

/** Cut pages [from, to) into the largest naturally aligned blocks and free them. */
function carve(w: World, from: number, to: number): void {
  forEachAligned(from, to, (p, order) => pushFree(w, p, order));
}

/** Grow the arena so that a block of `order` can be carved. False if it would pass the maximum. */
function grow(w: World, order: number): boolean {
  const top = w.i32[H_ARENA_TOP]!;
  const size = 1 << Math.max(order, GROW_ORDER);
  const start = Math.ceil(top / size) * size; // the new block's natural alignment
  const end = Math.min(start + size, w.i32[H_ARENA_MAX_PAGES]!);
  if (end - start < 1 << order) return false;
  w.arena.grow(end * PAGE_SIZE);
  carve(w, top, end);
  w.i32[H_ARENA_TOP] = end;
  return true;
}

/**
 * alloc_pages: a zeroed block of 2^`order` pages. @returns its first page.
 * @throws EINVAL for a bad order, ENOMEM when the arena is full.
 */
export function allocPages(order: number, syscall: string): number {
  if (!Number.isInteger(order) || order < 0 || order > MAX_ORDER) throw fail('EINVAL', syscall, `bad page order ${order}`);
  const w = world();
  mutexLock(w, H_ARENA_LOCK);
  let page = -1;
  try {
    for (;;) {
      let o = order;
      while (o <= MAX_ORDER && w.i32[H_ARENA_FREE + o]! < 0) o++;
      if (o <= MAX_ORDER) {
        page = w.i32[H_ARENA_FREE + o]!;
        unlinkFree(w, page, o);
        while (o > order) {
          o--;
          pushFree(w, page + (1 << o), o); // the upper half stays free
        }
        w.pageMap[page] = order + 1;
        break;
      }
      if (!grow(w, order)) {
        throw fail('ENOMEM', syscall, `page arena full (${w.i32[H_ARENA_MAX_PAGES]} pages; raise DMABUF_ARENA_MB)`);
      }
    }
  } finally {
    mutexUnlock(w, H_ARENA_LOCK);
  }
  zeroPages(w, page, 1 << order);
  return page;
}

/** Per thread: a length-tracking 64-bit view of the arena, for zeroing (see zeroPages). */
let zeroView: BigInt64Array | undefined;

/**
 * Zero `pages` pages from `page`. V8 fills a typed array over shared memory one
 * element at a time with relaxed atomic stores, so the element width sets the
 * speed: 64-bit elements zero ~3.5x faster than bytes (8 MiB: ~1.3 ms vs ~4.9 ms
 * on the benchmark machine; bench/buffer.bench.ts).
 */
function zeroPages(w: World, page: number, pages: number): void {
  if (zeroView?.buffer !== w.arena) zeroView = new BigInt64Array(w.arena);
  const words = PAGE_SIZE / 8;
  zeroView.fill(0n, page * words, (page + pages) * words);
}

/**
 * __free_pages: free a block from `allocPages`, merging it with free buddies.
 * @throws EINVAL if `page` does not head an allocated block of `order` (nothing changes).
 */
export function freePages(page: number, order: number, syscall: string): void {
  const w = world();
  mutexLock(w, H_ARENA_LOCK);
  try {
    checkHead(w, page, order, syscall);
    freeLocked(w, page, order);
  } finally {
    mutexUnlock(w, H_ARENA_LOCK);
  }
}

function checkHead(w: World, page: number, order: number, syscall: string): void {
  if (!Number.isInteger(page) || page < 0 || page >= w.i32[H_ARENA_TOP]! || w.pageMap[page] !== order + 1) {
    throw fail('EINVAL', syscall, `page ${page} does not head an allocated block of order ${order}`);
  }
}

/** Free a checked block, merging it with its free buddies (arena lock held). */
function freeLocked(w: World, page: number, order: number): void {
  const top = w.i32[H_ARENA_TOP]!;
  let p = page;
  let o = order;
  while (o < MAX_ORDER) {
    const buddy = p ^ (1 << o);
    if (buddy + (1 << o) > top || w.pageMap[buddy] !== (FREE | (o + 1))) break;
    unlinkFree(w, buddy, o);
    p = Math.min(p, buddy);
    o++;
  }
  w.pageMap[page] = 0;
  pushFree(w, p, o);
}

/** Call `fn` for each largest naturally aligned block that tiles pages [from, to). */
function forEachAligned(from: number, to: number, fn: (page: number, order: number) => void): void {
  let p = from;
  while (p < to) {
    let order = Math.min(MAX_ORDER, 31 - Math.clz32(to - p));
    while (p % (1 << order) !== 0) order--;
    fn(p, order);
    p += 1 << order;
  }
}

/**
 * alloc_pages_exact: `pages` zeroed, physically contiguous pages. A block of the
 * next order is taken and its tail given back, as the kernel does; the kept range
 * is recorded as aligned blocks, so `freePagesExact` can return it piece by piece.
 * @throws EINVAL (count), ENOMEM.
 */
export function allocPagesExact(pages: number, syscall: string): number {
  if (!Number.isSafeInteger(pages) || pages < 1) throw fail('EINVAL', syscall, `cannot allocate ${pages} pages`);
  const order = orderFor(pages);
  if (order > MAX_ORDER) throw fail('ENOMEM', syscall, `${pages} pages exceed the largest block`);
  const page = allocPages(order, syscall);
  const w = world();
  mutexLock(w, H_ARENA_LOCK);
  try {
    w.pageMap[page] = 0;
    forEachAligned(page, page + pages, (p, o) => {
      w.pageMap[p] = o + 1;
    });
    forEachAligned(page + pages, page + (1 << order), (p, o) => {
      w.pageMap[p] = o + 1;
      freeLocked(w, p, o);
    });
  } finally {
    mutexUnlock(w, H_ARENA_LOCK);
  }
  return page;
}

/** free_pages_exact: give back what `allocPagesExact(pages)` returned. @throws EINVAL (nothing freed then). */
export function freePagesExact(page: number, pages: number, syscall: string): void {
  const w = world();
  mutexLock(w, H_ARENA_LOCK);
  try {
    if (!Number.isSafeInteger(pages) || pages < 1) throw fail('EINVAL', syscall, `cannot free ${pages} pages`);
    forEachAligned(page, page + pages, (p, o) => checkHead(w, p, o, syscall));
    forEachAligned(page, page + pages, (p, o) => freeLocked(w, p, o));
  } finally {
    mutexUnlock(w, H_ARENA_LOCK);
  }
}

/** A live view of `pages` pages from `page`: the same bytes in every thread. */
export function pageBytes(page: number, pages: number): Uint8Array {
  const w = world();
  return new Uint8Array(w.arena, page * PAGE_SIZE, pages * PAGE_SIZE);
}

/** Smallest order whose block holds `pages` pages. */
export function orderFor(pages: number): number {
  return pages <= 1 ? 0 : 32 - Math.clz32(pages - 1);
}

/** Arena usage, in pages. */
export interface ArenaStats {
  maxPages: number;
  grownPages: number;
  freePages: number;
}

/** Current arena usage (walks the free lists under the lock). */
export function arenaStats(): ArenaStats {
  const w = world();
  mutexLock(w, H_ARENA_LOCK);
  try {
    let free = 0;
    for (let o = 0; o <= MAX_ORDER; o++) {
      for (let p = w.i32[H_ARENA_FREE + o]!; p >= 0; p = w.arenaI32[link(p, NEXT)]!) free += 1 << o;
    }
    return { maxPages: w.i32[H_ARENA_MAX_PAGES]!, grownPages: w.i32[H_ARENA_TOP]!, freePages: free };
  } finally {
    mutexUnlock(w, H_ARENA_LOCK);
  }
}
