/**
 * udmabuf through `dmabuf/uapi` (kernel-contract §6.4): UDMABUF_CREATE and
 * UDMABUF_CREATE_LIST with every check in the kernel's order, the ioctl's fd
 * result, the buffer aliasing its memfds' pages both ways and pinning them, the
 * exporter's ops, and a udmabuf written from a worker. Nothing leaks.
 */
import { beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { DmaBufAttachment, DMA_BIDIRECTIONAL, liveObjects } from 'dmabuf';
import { closeAll, installFdCleanup, track } from './support/fds.js';
import { installLeakCheck, pollLiveObjects } from './support/leaks.js';
import { codeOf, installPageLeakCheck, mapShared, memfd, PAGE, RW, udmabufMemfd } from './support/memfd.js';
import { RpcClient } from './support/worker-rpc.js';
import type { Command } from './workers/udmabuf-worker.js';

installFdCleanup();
installLeakCheck('udmabuf tests leaked objects');
installPageLeakCheck();

let dev = -1;
beforeEach(() => {
  dev = track(U.open('/dev/udmabuf'));
});

function create(memfdFd: number, offset: number, size: number, flags = 0): number {
  return track(U.ioctl(dev, U.UDMABUF_CREATE, { memfd: memfdFd, flags, offset, size }));
}

interface Item { memfd: number; __pad?: number; offset: number | bigint; size: number | bigint }

function createList(list: Item[], count = list.length, flags = 0): number {
  return track(U.ioctl(dev, U.UDMABUF_CREATE_LIST, { flags, count, list }));
}

/** The errno UDMABUF_CREATE_LIST fails with; asserts nothing was created. */
function listError(list: unknown, count: number): string {
  const live = liveObjects();
  const code = codeOf(() => U.ioctl(dev, U.UDMABUF_CREATE_LIST, { flags: 0, count, list }));
  assert.equal(liveObjects(), live, 'a failed create left objects behind');
  return code;
}

function fdinfo(fd: number): string {
  return U.readFile(`/proc/self/fdinfo/${fd}`);
}

describe('UDMABUF_CREATE', () => {
  test('returns a new dma-buf fd of exporter "udmabuf" and the range size', () => {
    const m = udmabufMemfd(4);
    const fd = create(m, PAGE, 2 * PAGE);
    assert.ok(fd > m);
    assert.match(fdinfo(fd), /^size:\t8192$/m);
    assert.match(fdinfo(fd), /^exp_name:\tudmabuf$/m);
    const view = mapShared(fd, 2 * PAGE);
    assert.deepEqual([view[0], view[PAGE]], [1, 2]);
    U.munmap(view);
  });

  test('UDMABUF_FLAGS_CLOEXEC is accepted and other flag bits are ignored', () => {
    const m = udmabufMemfd(1);
    for (const flags of [U.UDMABUF_FLAGS_CLOEXEC, 0xfffffffe, -1]) create(m, 0, PAGE, flags);
  });

  test('writes through the udmabuf are seen in the memfd and the other way round', () => {
    const m = udmabufMemfd(2);
    const fd = create(m, 0, 2 * PAGE);
    const buf = mapShared(fd, 2 * PAGE);
    const mem = mapShared(m, 2 * PAGE);
    buf[10] = 0x5a;
    assert.equal(U.pread(m, 1, 10)[0], 0x5a);
    assert.equal(mem[10], 0x5a);
    U.pwrite(m, Uint8Array.of(0xa5), PAGE + 3);
    assert.equal(buf[PAGE + 3], 0xa5);
    mem[7] = 0x77;
    assert.equal(buf[7], 0x77);
    U.munmap(buf);
    U.munmap(mem);
  });

  test('the udmabuf pins the memfd: its pages outlive the memfd fd, and F_SEAL_WRITE is EBUSY until it goes', () => {
    const m = udmabufMemfd(1, 40);
    const fd = create(m, 0, PAGE);
    assert.equal(codeOf(() => U.fcntl(m, U.F_ADD_SEALS, U.F_SEAL_WRITE)), 'EBUSY');
    const m2 = track(U.dup(m));
    closeAll(m);
    const view = mapShared(fd, PAGE);
    assert.equal(view[0], 40);
    U.munmap(view);
    closeAll(fd);
    U.fcntl(m2, U.F_ADD_SEALS, U.F_SEAL_WRITE);
  });

  test('a malformed struct is EFAULT; an unknown request is ENOTTY', () => {
    assert.equal(codeOf(() => U.ioctl(dev, U.UDMABUF_CREATE, null)), 'EFAULT');
    assert.equal(codeOf(() => U.ioctl(dev, U.UDMABUF_CREATE, { memfd: 'x', offset: 0, size: PAGE })), 'EFAULT');
    assert.equal(codeOf(() => U.ioctl(dev, U.UDMABUF_CREATE + 1, {})), 'ENOTTY');
  });
});

describe('the checks, in the kernel order', () => {
  const bad = 999; // never an open fd

  test('count above list_limit (1024) is EINVAL before the list is read', () => {
    assert.equal(listError(undefined, 1025), 'EINVAL');
  });

  test('a list shorter than count, or an item that is not a struct, is EFAULT', () => {
    const m = udmabufMemfd(1);
    assert.equal(listError([{ memfd: m, offset: 0, size: PAGE }], 2), 'EFAULT');
    assert.equal(listError(undefined, 1), 'EFAULT');
    assert.equal(listError([{ memfd: m, offset: 0, size: PAGE }, 7], 2), 'EFAULT');
  });

  test('offset and size must be page aligned: EINVAL, checked for every item before any memfd', () => {
    const m = udmabufMemfd(2);
    assert.equal(listError([{ memfd: bad, offset: 1, size: PAGE }], 1), 'EINVAL');
    assert.equal(listError([{ memfd: bad, offset: 0, size: PAGE + 1 }], 1), 'EINVAL');
    assert.equal(listError([{ memfd: m, offset: 0, size: PAGE }, { memfd: bad, offset: 0, size: 100 }], 2), 'EINVAL');
  });

  test('more than size_limit_mb (64 MiB) in total is EINVAL, before any memfd is looked at', () => {
    const half = 32 * 1024 * 1024;
    assert.equal(listError([{ memfd: bad, offset: 0, size: half }, { memfd: bad, offset: 0, size: half + PAGE }], 2), 'EINVAL');
    assert.equal(listError([{ memfd: bad, offset: 0, size: 2n ** 63n }], 1), 'EINVAL');
    assert.equal(listError([{ memfd: bad, offset: 0, size: half }, { memfd: bad, offset: 0, size: half }], 2), 'EBADFD');
  });

  test('a total of zero pages is EINVAL (count 0 too)', () => {
    assert.equal(listError([{ memfd: bad, offset: 0, size: 0 }], 1), 'EINVAL');
    assert.equal(listError([], 0), 'EINVAL');
  });

  test('a memfd that is not open, a standard stream or not a memfd is EBADFD', () => {
    const heap = track(U.open('/dev/dma_heap/system'));
    const alloc = { len: PAGE, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
    U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, alloc);
    track(alloc.fd);
    for (const fd of [bad, -1, 0, 1, 2, heap, alloc.fd, dev]) {
      assert.equal(listError([{ memfd: fd, offset: 0, size: PAGE }], 1), 'EBADFD', `memfd ${fd}`);
    }
  });

  test('seals must include F_SEAL_SHRINK and exclude F_SEAL_WRITE and F_SEAL_FUTURE_WRITE: EINVAL', () => {
    const noSealing = track(U.memfd_create('n', 0));
    U.ftruncate(noSealing, PAGE);
    const cases = [
      noSealing,
      memfd(PAGE),
      memfd(PAGE, U.F_SEAL_GROW),
      memfd(PAGE, U.F_SEAL_SHRINK | U.F_SEAL_WRITE),
      memfd(PAGE, U.F_SEAL_SHRINK | U.F_SEAL_FUTURE_WRITE),
    ];
    for (const m of cases) assert.equal(listError([{ memfd: m, offset: 0, size: PAGE }], 1), 'EINVAL');
    create(memfd(PAGE, U.F_SEAL_SHRINK | U.F_SEAL_GROW | U.F_SEAL_SEAL), 0, PAGE);
  });

  test('a range beyond the file is EINVAL; the last partial page counts as inside', () => {
    const m = memfd(PAGE + 1, U.F_SEAL_SHRINK);
    assert.equal(listError([{ memfd: m, offset: 0, size: 3 * PAGE }], 1), 'EINVAL');
    assert.equal(listError([{ memfd: m, offset: 2 * PAGE, size: PAGE }], 1), 'EINVAL');
    assert.equal(listError([{ memfd: m, offset: 2n ** 64n - BigInt(PAGE), size: PAGE }], 1), 'EINVAL');
    create(m, PAGE, PAGE);
  });

  test('a later item failing unpins the earlier ones: nothing changes', () => {
    const m1 = udmabufMemfd(1);
    const m2 = memfd(PAGE); // not sealed against shrinking
    assert.equal(listError([{ memfd: m1, offset: 0, size: PAGE }, { memfd: m2, offset: 0, size: PAGE }], 2), 'EINVAL');
    U.fcntl(m1, U.F_ADD_SEALS, U.F_SEAL_WRITE); // would be EBUSY if m1 were still pinned
  });
});

describe('UDMABUF_CREATE_LIST', () => {
  test('two memfds make one buffer: a mapping across their pages is ENOMEM, each part maps and aliases its memfd', () => {
    // Page 1 of two 2-page memfds: a-page-1 is followed by a's own page 0's
    // neighbour at best, never by b's page 1, so the two pages are never adjacent.
    const a = udmabufMemfd(2, 10);
    const b = udmabufMemfd(2, 20);
    const fd = createList([{ memfd: a, __pad: 0, offset: PAGE, size: PAGE }, { memfd: b, offset: PAGE, size: PAGE }]);
    assert.match(fdinfo(fd), /^size:\t8192$/m);
    assert.equal(codeOf(() => mapShared(fd, 2 * PAGE)), 'ENOMEM');
    const p0 = mapShared(fd, PAGE, 0);
    const p1 = mapShared(fd, PAGE, PAGE);
    assert.deepEqual([p0[0], p1[0]], [11, 21]);
    p1[1] = 99;
    assert.equal(U.pread(b, 1, PAGE + 1)[0], 99);
    U.munmap(p0);
    U.munmap(p1);
  });

  test('the same memfd may appear twice, in any order', () => {
    const m = udmabufMemfd(2, 0);
    const fd = createList([{ memfd: m, offset: PAGE, size: PAGE }, { memfd: m, offset: 0, size: PAGE }]);
    const p0 = mapShared(fd, PAGE, 0);
    const p1 = mapShared(fd, PAGE, PAGE);
    assert.deepEqual([p0[0], p1[0]], [1, 0]);
    U.munmap(p0);
    U.munmap(p1);
    closeAll(fd);
    assert.equal(codeOf(() => U.ftruncate(m, PAGE)), 'EPERM');
  });
});

describe('the udmabuf exporter', () => {
  test('private mappings are EINVAL', () => {
    const fd = create(udmabufMemfd(1), 0, PAGE);
    assert.equal(codeOf(() => U.mmap(PAGE, RW, U.MAP_PRIVATE, fd, 0)), 'EINVAL');
  });

  test('DMA_BUF_IOCTL_SYNC END before any START is EINVAL; after a START it succeeds', () => {
    const fd = create(udmabufMemfd(1), 0, PAGE);
    const end = { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_RW };
    assert.equal(codeOf(() => U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, end)), 'EINVAL');
    assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_READ }), 0);
    assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, end), 0);
  });

  test('map gives one sg entry per page, over the memfd pages; vmap of scattered pages is EINVAL', () => {
    const a = udmabufMemfd(2, 10);
    const b = udmabufMemfd(2, 20);
    const fd = createList([{ memfd: a, offset: 0, size: 2 * PAGE }, { memfd: b, offset: PAGE, size: PAGE }]);
    const buf = U.dmaBufGet(fd);
    const attach = DmaBufAttachment.attach(buf, { name: 'udmabuf-test', maxSegmentSize: 1 << 20 });
    try {
      const sgt = attach.mapUnlocked(DMA_BIDIRECTIONAL);
      assert.equal(sgt.entries.length, 3);
      assert.ok(sgt.entries.every((e) => e.length === PAGE));
      assert.equal(sgt.origNents, 3);
      attach.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
      assert.equal(codeOf(() => buf.vmapUnlocked()), 'EINVAL');
    } finally {
      attach.detach();
      buf.close();
    }
  });
});

test('a udmabuf sent to a worker and written there is seen in the memfd mapping here', async () => {
  const live = liveObjects();
  const client = new RpcClient<Command>(new URL('./workers/udmabuf-worker.js', import.meta.url), { callGuardMs: 20_000 });
  const m = udmabufMemfd(2);
  try {
    const mem = mapShared(m, 2 * PAGE);
    const fd = create(m, 0, 2 * PAGE);
    const [remote] = await client.call<number[]>({ op: 'receive', packet: U.sendFds([fd]) });
    closeAll(fd);
    await client.call({ op: 'mmapWrite', fd: remote!, length: 2 * PAGE, at: PAGE + 8, bytes: [1, 2, 3] });
    assert.deepEqual([...mem.subarray(PAGE + 8, PAGE + 11)], [1, 2, 3]);
    const [mfd] = await client.call<number[]>({ op: 'receive', packet: U.sendFds([m]) });
    assert.equal(await client.call({ op: 'pwrite', fd: mfd!, at: 0, bytes: [42] }), 1);
    assert.equal(mem[0], 42);
    await client.call({ op: 'close', fds: [remote!, mfd!] });
    U.munmap(mem);
  } finally {
    await client.stop();
  }
  closeAll(m);
  assert.equal(await pollLiveObjects(live), live, 'the worker let go of everything it received');
});
