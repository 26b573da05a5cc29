/**
 * dma-heaps (kernel-contract §6.1, §6.2, the shared parts of §6.3): the
 * DMA_HEAP_IOCTL_ALLOC checks in the kernel's order, page rounding, zeroed memory,
 * read-only buffers, the /dev/dma_heap directory, DmaHeap registration and
 * usage — for both heaps where they behave alike — and the system heap's chunks.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import {
  arenaStats, bufferExtents, CMA_HEAP_NAME, cmaStats, DMA_BIDIRECTIONAL, DmaBufAttachment, DmaHeap, liveObjects,
  PAGE_SIZE, sgEntryBytes, sgTableBytes, SYSTEM_HEAP_NAME, systemHeapChunks, type DmaBuf,
} from 'dmabuf';
import { closeAll, installFdCleanup, track } from './support/fds.js';
import { installLeakCheck } from './support/leaks.js';
import { RpcClient } from './support/worker-rpc.js';
import type { Command } from './workers/heap-worker.js';

const HEAPS = [SYSTEM_HEAP_NAME, CMA_HEAP_NAME] as const;

installFdCleanup();
installLeakCheck('every heap buffer and attachment is released');

/** Arena pages in use (the contiguous area, once reserved, stays in use). */
function arenaUsed(): number {
  const s = arenaStats();
  return s.grownPages - s.freePages;
}

let usedBaseline = 0;
before(() => {
  DmaHeap.find(CMA_HEAP_NAME)!.alloc(1).close(); // reserves the contiguous area, which is never given back
  usedBaseline = arenaUsed();
});
after(() => {
  assert.equal(arenaUsed(), usedBaseline, 'every page a buffer took is back in the arena');
  const cma = cmaStats()!;
  assert.equal(cma.freePages, cma.pages, 'every page of the contiguous area is free again');
});

function openHeap(name: string, flags = U.O_RDWR): number {
  return track(U.open(`/dev/dma_heap/${name}`, flags));
}

/** DMA_HEAP_IOCTL_ALLOC: the new buffer's fd (tracked). */
function heapAlloc(heap: number, len: number | bigint, fdFlags = U.O_RDWR | U.O_CLOEXEC): number {
  const data = { len, fd: 0, fd_flags: fdFlags, heap_flags: 0 };
  assert.equal(U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data), 0);
  assert.ok(data.fd >= 3, 'the new fd is written back');
  return track(data.fd);
}

/** The fd the next open would get. */
function nextFd(): number {
  const fd = U.open('/dev/sw_sync');
  U.close(fd);
  return fd;
}

function withBuf<T>(fd: number, fn: (buf: DmaBuf) => T): T {
  const buf = U.dmaBufGet(fd);
  try {
    return fn(buf);
  } finally {
    buf.close();
  }
}

/** Assert `fn` fails with `code` and leaves no fd, object or page behind. */
function failsCleanly(fn: () => unknown, code: string): void {
  const objects = liveObjects();
  const fd = nextFd();
  const used = arenaUsed();
  const cmaFree = cmaStats()!.freePages;
  assert.throws(fn, { code });
  assert.equal(liveObjects(), objects, 'no object left behind');
  assert.equal(nextFd(), fd, 'no fd installed');
  assert.equal(arenaUsed(), used, 'no arena page kept');
  assert.equal(cmaStats()!.freePages, cmaFree, 'no page of the contiguous area kept');
}

for (const name of HEAPS) {
  describe(`DMA_HEAP_IOCTL_ALLOC on ${name}`, () => {
    const alloc = (heap: number, data: Record<string, unknown>, request = U.DMA_HEAP_IOCTL_ALLOC): number =>
      U.ioctl(heap, request, data);

    test('each rule of §6.1 is EINVAL and the failed call leaves nothing behind', () => {
      const heap = openHeap(name);
      const bad: Array<[string, Record<string, unknown>]> = [
        ['fd != 0 on input', { len: 4096, fd: 3 }],
        ['fd_flags beyond O_CLOEXEC | O_ACCMODE (O_NONBLOCK)', { len: 4096, fd_flags: 0o4000 }],
        ['fd_flags beyond O_CLOEXEC | O_ACCMODE (bit 31)', { len: 4096, fd_flags: 0x80000000 }],
        ['heap_flags != 0', { len: 4096, heap_flags: 1 }],
        ['heap_flags bit 63', { len: 4096, heap_flags: 1n << 63n }],
        ['len 0', { len: 0 }],
        ['len that wraps when page aligned', { len: 2n ** 64n - 1n }],
        ['len that wraps to exactly 0', { len: 2n ** 64n - BigInt(PAGE_SIZE) + 1n }],
      ];
      for (const [what, data] of bad) {
        assert.doesNotThrow(() => failsCleanly(() => alloc(heap, data), 'EINVAL'), what);
      }
    });

    test('copy-in comes first: a field of the wrong type is EFAULT even when another rule is broken', () => {
      const heap = openHeap(name);
      for (const v of ['4096', 1.5, NaN, {}, null]) {
        failsCleanly(() => alloc(heap, { len: v }), 'EFAULT');
        failsCleanly(() => alloc(heap, { len: 4096, fd: 7, heap_flags: v }), 'EFAULT');
      }
      failsCleanly(() => alloc(heap, 'not a struct' as never), 'EFAULT');
    });

    test('a failed call leaves the caller\'s struct as it was', () => {
      const heap = openHeap(name);
      const data = { len: 0, fd: 5, fd_flags: 0o4000, heap_flags: 1 };
      failsCleanly(() => alloc(heap, data), 'EINVAL');
      assert.deepEqual(data, { len: 0, fd: 5, fd_flags: 0o4000, heap_flags: 1 });
    });

    test('ioctl numbers ≥ 1 are EINVAL, not ENOTTY', () => {
      const heap = openHeap(name);
      for (const nr of [1, 2, 0xff]) {
        failsCleanly(() => alloc(heap, { len: 4096 }, U._IOWR('H', nr, 24)), 'EINVAL');
      }
    });

    test('any request with number 0 is ALLOC: its size and direction say how much of the struct is read and written', () => {
      const heap = openHeap(name);
      for (const request of [U._IOWR('H', 0, 32), U._IOWR('X', 0, 24)]) {
        const data = { len: 4096, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
        assert.equal(alloc(heap, data, request), 0, 'a longer struct, or another type byte');
        closeAll(track(data.fd));
      }
      // 16 bytes: heap_flags is not read (a set value does not fail).
      const short = { len: 4096, fd: 0, fd_flags: U.O_RDWR, heap_flags: 1 };
      assert.equal(alloc(heap, short, U._IOWR('H', 0, 16)), 0);
      closeAll(track(short.fd));
      // 8 bytes: only len is read, so fd_flags reads 0 (O_RDONLY); fd is not written back.
      const lenOnly = { len: 4096, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
      const fd = nextFd();
      assert.equal(alloc(heap, lenOnly, U._IOWR('H', 0, 8)), 0);
      assert.equal(lenOnly.fd, 0, 'fd lies past the 8 bytes copied out');
      assert.equal(withBuf(track(fd), (b) => b.flags & U.O_ACCMODE), U.O_RDONLY, 'the fd exists, read-only');
      closeAll(fd);
      // 4 bytes: len keeps its low 32 bits.
      const cut = { len: 2 ** 32 + PAGE_SIZE, fd: 0, fd_flags: 0, heap_flags: 0 };
      const cutFd = nextFd();
      assert.equal(alloc(heap, cut, U._IOWR('H', 0, 4)), 0);
      assert.equal(withBuf(track(cutFd), (b) => b.size), PAGE_SIZE);
      closeAll(cutFd);
    });

    test('without _IOC_WRITE nothing is read (len 0: EINVAL); without _IOC_READ the fd is not reported', () => {
      const heap = openHeap(name);
      for (const request of [U._IOR('H', 0, 24), U._IO('H', 0)]) {
        failsCleanly(() => alloc(heap, { len: 4096 }, request), 'EINVAL');
      }
      failsCleanly(() => U.ioctl(heap, U._IO('H', 0), 'no struct'), 'EINVAL');
      const data = { len: 2 * PAGE_SIZE, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
      const fd = nextFd();
      assert.equal(alloc(heap, data, U._IOW('H', 0, 24)), 0);
      assert.equal(data.fd, 0, 'nothing copied out');
      assert.equal(withBuf(track(fd), (b) => b.size), 2 * PAGE_SIZE, 'the buffer was made and its fd installed');
      closeAll(fd);
    });

    test('fd_flags O_RDONLY, O_WRONLY, O_RDWR and O_CLOEXEC are accepted; the access mode becomes the buffer file\'s', () => {
      const heap = openHeap(name);
      for (const flags of [U.O_RDONLY, U.O_WRONLY, U.O_RDWR, U.O_RDWR | U.O_CLOEXEC, U.O_RDONLY | U.O_CLOEXEC]) {
        const fd = heapAlloc(heap, 4096, flags);
        assert.equal(withBuf(fd, (b) => b.flags & U.O_ACCMODE), flags & U.O_ACCMODE);
        closeAll(fd);
      }
    });

    test('len is rounded up to whole pages; exp_name is the heap name', () => {
      const heap = openHeap(name);
      for (const [len, size] of [[1, 4096], [4096, 4096], [4097, 8192], [3 * 4096 - 1, 3 * 4096]] as const) {
        const fd = heapAlloc(heap, len);
        assert.deepEqual(withBuf(fd, (b) => [b.size, b.expName]), [size, name]);
        assert.match(U.readFile(`/proc/self/fdinfo/${fd}`), new RegExp(`^size:\\s+${size}$`, 'm'));
        closeAll(fd);
      }
      const buf = DmaHeap.find(name)!.alloc(4097);
      assert.equal(buf.size, 8192, 'the driver API rounds the same way');
      buf.close();
    });

    test('memory comes zeroed, also when it was used and freed before', () => {
      const heap = openHeap(name);
      for (let round = 0; round < 3; round++) {
        const fd = heapAlloc(heap, 5 * PAGE_SIZE);
        const view = U.mmap(5 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
        assert.ok(view.every((b) => b === 0), `round ${round}: zeroed`);
        view.fill(0xa5);
        U.munmap(view);
        closeAll(fd);
      }
    });

    test('an O_RDONLY buffer maps read-only: PROT_WRITE with MAP_SHARED is EACCES', () => {
      const heap = openHeap(name);
      const fd = heapAlloc(heap, PAGE_SIZE, U.O_RDONLY);
      assert.throws(() => U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0), { code: 'EACCES' });
      const view = U.mmap(PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0);
      assert.equal(view.length, PAGE_SIZE);
      U.munmap(view);
    });

    test('a length no memory can hold is ENOMEM and leaves nothing behind', () => {
      const heap = openHeap(name);
      failsCleanly(() => alloc(heap, { len: 2 ** 52 }), 'ENOMEM');
      failsCleanly(() => alloc(heap, { len: 2n ** 63n }), 'ENOMEM');
    });

    test('mmap, a device mapping and vmap all see the same bytes', () => {
      const heap = openHeap(name);
      const fd = heapAlloc(heap, 3 * PAGE_SIZE);
      const view = U.mmap(3 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
      for (let i = 0; i < view.length; i++) view[i] = i % 251;
      withBuf(fd, (buf) => {
        const attach = DmaBufAttachment.attach(buf, { name: 'dev' });
        const sgt = attach.mapUnlocked(DMA_BIDIRECTIONAL);
        assert.equal(sgTableBytes(sgt), 3 * PAGE_SIZE);
        const seen = Buffer.concat(sgt.entries.map((e) => sgEntryBytes(e)));
        assert.ok(seen.equals(view), 'the device reads what the CPU wrote');
        attach.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
        attach.detach();
        const map = buf.vmapUnlocked();
        assert.ok(Buffer.from(map).equals(view));
        buf.vunmapUnlocked(map);
      });
      assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_RW }), 0);
      assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_RW }), 0);
      U.munmap(view);
    });

    test('a worker that never allocated uses the buffer: its writes are seen here, its close releases it', async () => {
      const w = new RpcClient<Command>(new URL('./workers/heap-worker.js', import.meta.url), { callGuardMs: 20_000 });
      try {
        const heap = DmaHeap.find(name)!;
        const fd = heapAlloc(openHeap(name), 2 * PAGE_SIZE);
        const [theirs] = await w.call<number[]>({ op: 'receive', packet: U.sendFds([fd]) });
        await w.call({ op: 'fill', fd: theirs!, len: 2 * PAGE_SIZE, byte: 0x3c });
        const view = U.mmap(2 * PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0);
        assert.ok(view.every((x) => x === 0x3c), 'the worker wrote through its own mapping');
        U.munmap(view);
        const live = heap.usage().buffers;
        closeAll(fd);
        assert.equal(heap.usage().buffers, live, 'the worker\'s fd keeps it');
        await w.call({ op: 'close', fds: [theirs!] });
        assert.equal(heap.usage().buffers, live - 1, 'released by the worker\'s close (pages checked after the file)');
      } finally {
        await w.stop();
      }
    });

    test('usage() counts the heap\'s live buffers and bytes', () => {
      const h = DmaHeap.find(name)!;
      const before = h.usage();
      const heap = openHeap(name);
      const a = heapAlloc(heap, 1);
      const b = heapAlloc(heap, 3 * PAGE_SIZE);
      assert.deepEqual(h.usage(), { name, buffers: before.buffers + 2, bytes: before.bytes + 4 * PAGE_SIZE });
      closeAll(a, b);
      assert.deepEqual(h.usage(), before);
    });
  });
}

describe('/dev/dma_heap', () => {
  test('readdir lists both heaps', () => {
    assert.deepEqual([...U.readdir('/dev/dma_heap')].sort(), [CMA_HEAP_NAME, SYSTEM_HEAP_NAME].sort());
  });

  test('opening an unknown heap is ENOENT', () => {
    for (const path of ['/dev/dma_heap/nope', '/dev/dma_heap/', '/dev/dma_heap/system/x', '/dev/dma_heap/System']) {
      assert.throws(() => U.open(path), { code: 'ENOENT' }, path);
    }
  });

  test('a heap fd knows only the heap ioctl: no mmap (ENODEV)', () => {
    const heap = openHeap(SYSTEM_HEAP_NAME);
    assert.throws(() => U.mmap(PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, heap, 0), { code: 'ENODEV' });
  });
});

describe('system heap', () => {
  test('systemHeapChunks takes the largest order of 8, 4, 0 that fits, never growing', () => {
    assert.deepEqual(systemHeapChunks(10, 1).map((x) => x.pages), [1]);
    assert.deepEqual(systemHeapChunks(0, 300).map((x) => x.pages), [256, 16, 16, ...Array<number>(12).fill(1)]);
    assert.deepEqual(systemHeapChunks(0, 512 + 17).map((x) => x.pages), [256, 256, 16, 1]);
    const chunks = systemHeapChunks(7, 300);
    let at = 7;
    for (const c of chunks) {
      assert.equal(c.page, at, 'chunks follow each other');
      at += c.pages;
    }
  });

  test('a buffer\'s extents are those chunks, and each is one sg entry before the device splits it', () => {
    const buf = DmaHeap.find(SYSTEM_HEAP_NAME)!.alloc((256 + 16 * 2 + 3) * PAGE_SIZE);
    try {
      const ext = bufferExtents(buf);
      assert.deepEqual(ext.map((x) => x.pages), [256, 16, 16, 1, 1, 1]);
      assert.deepEqual(ext, systemHeapChunks(ext[0]!.page, 256 + 16 * 2 + 3));
      const big = DmaBufAttachment.attach(buf, { name: 'big-segments', maxSegmentSize: 2 ** 24 });
      const sgt = big.mapUnlocked(DMA_BIDIRECTIONAL);
      assert.equal(sgt.origNents, 6);
      assert.deepEqual(sgt.entries.map((e) => e.length / PAGE_SIZE), [256, 16, 16, 1, 1, 1]);
      assert.deepEqual(sgt.entries.map((e) => e.dmaAddress / PAGE_SIZE), ext.map((x) => x.page));
      big.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
      big.detach();
      const small = DmaBufAttachment.attach(buf, { name: 'default-segments' });
      const split = small.mapUnlocked(DMA_BIDIRECTIONAL);
      assert.equal(split.origNents, 6);
      assert.equal(split.entries.length, 16 + 1 + 1 + 3, 'the 1 MiB chunk is split at 64 KiB segments');
      small.unmapUnlocked(split, DMA_BIDIRECTIONAL);
      small.detach();
    } finally {
      buf.close();
    }
  });

  test('private mappings are allowed and see a copy', () => {
    const heap = openHeap(SYSTEM_HEAP_NAME);
    const fd = heapAlloc(heap, PAGE_SIZE);
    const shared = U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
    shared.fill(7);
    const priv = U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE, fd, 0);
    assert.equal(priv[0], 7);
    priv.fill(9);
    assert.equal(shared[0], 7, 'private writes stay private');
    U.munmap(priv);
    U.munmap(shared);
  });
});

describe('DmaHeap.add', () => {
  const allocate = (): never => {
    throw new Error('not called');
  };

  test('refuses (EINVAL) an empty name, a missing allocate op and a duplicate name; the list is unchanged', () => {
    const names = DmaHeap.list().map((h) => h.name);
    assert.throws(() => DmaHeap.add({ name: '', ops: { allocate } }), { code: 'EINVAL' });
    assert.throws(() => DmaHeap.add({ name: 'no-ops', ops: {} as never }), { code: 'EINVAL' });
    assert.throws(() => DmaHeap.add({ name: SYSTEM_HEAP_NAME, ops: { allocate } }), { code: 'EINVAL' });
    assert.throws(() => DmaHeap.add({ name: CMA_HEAP_NAME, ops: { allocate } }), { code: 'EINVAL' });
    assert.deepEqual(DmaHeap.list().map((h) => h.name), names);
    assert.equal(DmaHeap.find('no-ops'), null);
  });

  test('a new heap is found and listed; at most 128 heaps (EINVAL beyond)', () => {
    const start = DmaHeap.list().length;
    for (let i = start; i < 128; i++) DmaHeap.add({ name: `test-heap-${i}`, ops: { allocate } });
    assert.equal(DmaHeap.find(`test-heap-${start}`)?.name, `test-heap-${start}`);
    assert.ok(U.readdir('/dev/dma_heap').includes(`test-heap-${start}`));
    assert.throws(() => DmaHeap.add({ name: 'one-too-many', ops: { allocate } }), { code: 'EINVAL' });
    assert.equal(DmaHeap.list().length, 128);
  });
});
