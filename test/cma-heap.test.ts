/**
 * The CMA heap (kernel-contract §6.3) and its contiguous area: one area reserved
 * by whichever thread allocates first, contiguous aligned allocations, ENOMEM
 * when no run fits, reuse after free, MAP_SHARED only, map failures as ENOMEM,
 * the release WARN while vmapped, and the area shared by every thread.
 *
 * This file runs in its own process (node --test) and sets a 2 MiB area
 * (DMABUF_CMA_MB=4, 1024 pages) before anything allocates from it: the area is
 * reserved lazily, by the first allocation, with the size that thread reads.
 */
process.env['DMABUF_CMA_MB'] = '4';

import { after, afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import {
  arenaStats, bufferExtents, CMA_HEAP_NAME, cmaHeap, cmaHeapAlignOrder, cmaStats, DMA_BIDIRECTIONAL, DmaBufAttachment,
  liveObjects, PAGE_SIZE, type DmaBuf,
} from 'dmabuf';
import { installFdCleanup, track } from './support/fds.js';
import { installLeakCheck } from './support/leaks.js';
import { gate, RpcClient } from './support/worker-rpc.js';
import type { Command } from './workers/heap-worker.js';

const AREA_PAGES = 1024;

installFdCleanup();
installLeakCheck('every CMA buffer is released');
after(() => {
  const s = cmaStats()!;
  assert.equal(s.freePages, s.pages, 'every page of the area is free again');
});

class HeapWorker extends RpcClient<Command & { gate?: SharedArrayBuffer }> {
  constructor() {
    super(new URL('./workers/heap-worker.js', import.meta.url), { callGuardMs: 20_000, stopGuardMs: 20_000 });
  }
}

function arenaUsed(): number {
  const s = arenaStats();
  return s.grownPages - s.freePages;
}

/** Buffers a test took and has not closed (closed after it, so one failure cannot cascade). */
const held = new Set<DmaBuf>();
afterEach(() => {
  for (const buf of held) buf.close();
  held.clear();
});

/** `n` pages from the CMA heap, with their first page. */
function take(pages: number): { buf: DmaBuf; page: number } {
  const buf = cmaHeap.alloc(pages * PAGE_SIZE);
  held.add(buf);
  const ext = bufferExtents(buf);
  assert.equal(ext.length, 1, 'one extent: physically contiguous');
  assert.equal(ext[0]!.pages, pages);
  return { buf, page: ext[0]!.page };
}

function closeAllBufs(...bufs: Array<{ buf: DmaBuf }>): void {
  for (const b of bufs) {
    held.delete(b.buf);
    b.buf.close();
  }
}

describe('the contiguous area', () => {
  test('the first allocations, racing in two workers, reserve one area of DMABUF_CMA_MB', async () => {
    assert.equal(cmaStats(), null, 'nothing reserved before the first allocation');
    const used = arenaUsed();
    const workers = [new HeapWorker(), new HeapWorker()];
    try {
      const g = gate();
      const fds = workers.map((w) => w.call<number>({ op: 'alloc', heap: CMA_HEAP_NAME, len: PAGE_SIZE, gate: g.sab }));
      g.open();
      const got = await Promise.all(fds);
      const seen = await Promise.all(workers.map((w) => w.call<ReturnType<typeof cmaStats>>({ op: 'stats' })));
      assert.deepEqual(seen[0], seen[1], 'both workers see the same area');
      assert.equal(seen[0]!.pages, AREA_PAGES);
      assert.equal(seen[0]!.freePages, AREA_PAGES - 2, 'both allocations come from it');
      assert.deepEqual(cmaStats(), seen[0], 'the main thread sees it too');
      assert.equal(arenaUsed() - used, AREA_PAGES + 1, 'one area (and its one bitmap page) taken from the arena');
      await Promise.all(workers.map((w, i) => w.call({ op: 'close', fds: [got[i]!] })));
      assert.equal(cmaStats()!.freePages, AREA_PAGES);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  });

  test('allocations are contiguous and aligned to 2^min(order, 8) pages; first fit reuses holes', () => {
    const base = cmaStats()!.basePage;
    const a = take(1);
    const b = take(2);
    const c = take(1);
    const d = take(3);
    assert.equal(a.page, base);
    assert.equal(b.page, base + 2, 'two pages align to 2');
    assert.equal(c.page, base + 1, 'the hole before b is reused');
    assert.equal(d.page, base + 4, 'three pages align to 4');
    closeAllBufs(a, b, c, d);
    for (const pages of [1, 2, 3, 5, 16, 17, 100, 256]) {
      const filler = take(1);
      const x = take(pages);
      assert.equal(x.page % 2 ** cmaHeapAlignOrder(pages), 0, `${pages} pages aligned`);
      closeAllBufs(filler, x);
    }
  });

  test('alignment is capped at order 8 (CONFIG_CMA_ALIGNMENT): 257 pages go at 256, not 512', () => {
    assert.equal(cmaHeapAlignOrder(257), 8);
    const base = cmaStats()!.basePage;
    const a = take(1);
    const big = take(257);
    assert.equal(big.page, base + 256);
    closeAllBufs(a, big);
  });

  test('no run that fits is ENOMEM, though enough pages are free; nothing is left behind', () => {
    const objects = liveObjects();
    const a = take(256);
    const b = take(256);
    const c = take(512);
    assert.throws(() => cmaHeap.alloc(PAGE_SIZE), { code: 'ENOMEM' }, 'the area is full');
    closeAllBufs(a, c);
    assert.equal(cmaStats()!.freePages, 768);
    assert.throws(() => cmaHeap.alloc(600 * PAGE_SIZE), { code: 'ENOMEM' }, '768 pages free, no 600 in a row');
    assert.throws(() => cmaHeap.alloc((AREA_PAGES + 1) * PAGE_SIZE), { code: 'ENOMEM' });
    const heap = track(U.open(`/dev/dma_heap/${CMA_HEAP_NAME}`));
    const data = { len: 600 * PAGE_SIZE, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
    assert.throws(() => U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data), { code: 'ENOMEM', syscall: 'ioctl' });
    assert.equal(data.fd, 0, 'no fd written back');
    U.close(heap);
    const fits = take(512);
    assert.equal(fits.page, c.page, 'the freed run is taken again');
    closeAllBufs(b, fits);
    assert.equal(liveObjects(), objects);
  });

  test('freed memory is reused, and comes back zeroed', () => {
    const first = take(4);
    const page = first.page;
    const view = first.buf.mmap(0, 4);
    view.fill(0xee);
    first.buf.munmap(view);
    closeAllBufs(first);
    const again = take(4);
    assert.equal(again.page, page, 'the same pages');
    const seen = again.buf.mmap(0, 4);
    assert.ok(seen.every((x) => x === 0), 'cleared on allocation');
    again.buf.munmap(seen);
    closeAllBufs(again);
  });
});

describe('CMA heap buffers', () => {
  test('mmap needs MAP_SHARED: MAP_PRIVATE is EINVAL, after the bounds check', () => {
    const heap = track(U.open(`/dev/dma_heap/${CMA_HEAP_NAME}`));
    const data = { len: 2 * PAGE_SIZE, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
    U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
    const fd = track(data.fd);
    assert.throws(() => U.mmap(PAGE_SIZE, U.PROT_READ, U.MAP_PRIVATE, fd, 0), { code: 'EINVAL', syscall: 'mmap' });
    assert.throws(() => U.mmap(3 * PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0), { code: 'EINVAL' }, 'past the end');
    const view = U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, PAGE_SIZE);
    view[0] = 42;
    const whole = U.mmap(2 * PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0);
    assert.equal(whole[PAGE_SIZE], 42, 'shared mappings see each other');
    U.munmap(view);
    U.munmap(whole);
  });

  test('one sg entry per contiguous buffer for a device that takes it; a map the device cannot take is ENOMEM', () => {
    const { buf, page } = take(8);
    const dev = DmaBufAttachment.attach(buf, { name: 'wide', maxSegmentSize: 2 ** 20 });
    const sgt = dev.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.deepEqual(sgt.entries.map((e) => [e.dmaAddress, e.length]), [[page * PAGE_SIZE, 8 * PAGE_SIZE]]);
    dev.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
    dev.detach();
    const narrow = DmaBufAttachment.attach(buf, { name: 'narrow', dmaMaskBits: 12 });
    assert.throws(() => narrow.mapUnlocked(DMA_BIDIRECTIONAL), { code: 'ENOMEM' }, 'the system heap says EIO here');
    narrow.detach();
  });

  test('release while vmapped WARNs and still returns the pages', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }): void => {
      if (w.code) warnings.push(`${w.code}: ${w.message}`);
    };
    process.on('warning', onWarning);
    try {
      const free = cmaStats()!.freePages;
      const { buf } = take(2);
      const map = buf.vmapUnlocked();
      assert.equal(map.length, 2 * PAGE_SIZE);
      held.delete(buf);
      const fd = U.dmaBufFd(buf); // the fd takes the handle's reference
      U.close(fd);
      await new Promise((r) => setImmediate(r));
      assert.ok(warnings.some((w) => w.startsWith('DMABUF_WARN: cma_heap_dma_buf_release')), warnings.join('\n'));
      assert.equal(cmaStats()!.freePages, free);
    } finally {
      process.off('warning', onWarning);
    }
  });

  test('vmap and vunmap pair without a warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const one = take(1);
      const map = one.buf.vmapUnlocked();
      one.buf.vunmapUnlocked(map);
      closeAllBufs(one);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
    }
  });

  test('a worker\'s buffer comes from the same area: main sees the usage, the bytes, and frees it', async () => {
    const w = new HeapWorker();
    try {
      const free = cmaStats()!.freePages;
      const fd = await w.call<number>({ op: 'alloc', heap: CMA_HEAP_NAME, len: 3 * PAGE_SIZE });
      assert.equal(cmaStats()!.freePages, free - 3);
      assert.deepEqual(cmaHeap.usage(), { name: CMA_HEAP_NAME, buffers: 1, bytes: 3 * PAGE_SIZE });
      await w.call({ op: 'fill', fd, len: 3 * PAGE_SIZE, byte: 0x5c });
      const packet = await w.call<U.FdPacket>({ op: 'send', fds: [fd] });
      await w.call({ op: 'close', fds: [fd] });
      const [mine] = U.receiveFds(packet);
      const view = U.mmap(3 * PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, mine!, 0);
      assert.ok(view.every((x) => x === 0x5c), 'the worker\'s bytes');
      U.munmap(view);
      U.close(mine!);
      assert.equal(cmaStats()!.freePages, free, 'released here, returned to the shared area');
      assert.deepEqual(cmaHeap.usage(), { name: CMA_HEAP_NAME, buffers: 0, bytes: 0 });
    } finally {
      await w.stop();
    }
  });
});
