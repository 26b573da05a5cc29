/**
 * memfd through `dmabuf/uapi`: memfd_create, ftruncate, seals (fcntl), pread and
 * pwrite, and mmap — each error in Linux's order, bytes shared with mappings, the
 * contiguity rule JS forces (memfd.ts), and no object or page leaked.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { closeAll, installFdCleanup, track } from './support/fds.js';
import { installLeakCheck } from './support/leaks.js';
import { codeOf, installPageLeakCheck, mapShared, memfd, PAGE, pagesInUse, RW } from './support/memfd.js';

installFdCleanup();
installLeakCheck('memfd tests leaked objects');
installPageLeakCheck();

const SEALS = U.F_SEAL_SHRINK | U.F_SEAL_GROW | U.F_SEAL_WRITE | U.F_SEAL_FUTURE_WRITE;

/** A tracked dma-buf fd from the system heap (a file that is not a memfd). */
function heapBuf(): number {
  const heap = track(U.open('/dev/dma_heap/system'));
  const data = { len: PAGE, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
  U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
  return track(data.fd);
}

describe('memfd_create', () => {
  test('returns the lowest free fd; an empty file reads nothing', () => {
    const fd = track(U.memfd_create('a', 0));
    assert.ok(fd >= 3);
    assert.equal(U.pread(fd, 10, 0).length, 0);
    closeAll(fd);
    assert.equal(track(U.memfd_create('b', U.MFD_CLOEXEC)), fd);
  });

  test('flags beyond MFD_CLOEXEC | MFD_ALLOW_SEALING fail EINVAL before the name is read', () => {
    for (const flags of [0x4, 0x8, 0x10, -1]) assert.equal(codeOf(() => U.memfd_create(42 as never, flags)), 'EINVAL');
  });

  test('a name that is not a string is EFAULT; more than 249 bytes is EINVAL', () => {
    assert.equal(codeOf(() => U.memfd_create(null as never, 0)), 'EFAULT');
    assert.equal(codeOf(() => U.memfd_create('x'.repeat(250), 0)), 'EINVAL');
    track(U.memfd_create('x'.repeat(249), 0));
  });

  test('without MFD_ALLOW_SEALING the file is sealed with F_SEAL_SEAL', () => {
    const fd = track(U.memfd_create('s', 0));
    assert.equal(U.fcntl(fd, U.F_GET_SEALS), U.F_SEAL_SEAL);
    assert.equal(codeOf(() => U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_SHRINK)), 'EPERM');
    assert.equal(U.fcntl(fd, U.F_GET_SEALS), U.F_SEAL_SEAL);
    assert.equal(U.fcntl(memfd(0), U.F_GET_SEALS), 0);
  });
});

describe('ftruncate', () => {
  test('grows with zeros and shrinks; bytes cut off read as zero after growing again', () => {
    const fd = memfd(3 * PAGE);
    assert.equal(U.pread(fd, 4 * PAGE, 0).length, 3 * PAGE);
    assert.ok(U.pread(fd, 3 * PAGE, 0).every((b) => b === 0));
    U.pwrite(fd, new Uint8Array(3 * PAGE).fill(7), 0);
    U.ftruncate(fd, PAGE + 10);
    assert.equal(U.pread(fd, 4 * PAGE, 0).length, PAGE + 10);
    U.ftruncate(fd, 3 * PAGE);
    const all = U.pread(fd, 3 * PAGE, 0);
    assert.ok(all.subarray(0, PAGE + 10).every((b) => b === 7));
    assert.ok(all.subarray(PAGE + 10).every((b) => b === 0));
    U.ftruncate(fd, 0);
    assert.equal(U.pread(fd, 10, 0).length, 0);
  });

  test('errors in order: length, fd, file type', () => {
    assert.equal(codeOf(() => U.ftruncate(999, -1)), 'EINVAL');
    assert.equal(codeOf(() => U.ftruncate(999, 0)), 'EBADF');
    assert.equal(codeOf(() => U.ftruncate(0, 0)), 'EINVAL');
    assert.equal(codeOf(() => U.ftruncate(heapBuf(), PAGE)), 'EINVAL');
  });

  test('F_SEAL_SHRINK and F_SEAL_GROW refuse with EPERM and change nothing', () => {
    const fd = memfd(2 * PAGE, U.F_SEAL_SHRINK | U.F_SEAL_GROW);
    assert.equal(codeOf(() => U.ftruncate(fd, PAGE)), 'EPERM');
    assert.equal(codeOf(() => U.ftruncate(fd, 3 * PAGE)), 'EPERM');
    U.ftruncate(fd, 2 * PAGE); // same size: allowed
    assert.equal(U.pread(fd, 4 * PAGE, 0).length, 2 * PAGE);
  });
});

describe('fcntl seals', () => {
  test('seals accumulate and F_GET_SEALS returns the bits', () => {
    const fd = memfd(PAGE);
    assert.equal(U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_SHRINK), 0);
    U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_GROW);
    assert.equal(U.fcntl(fd, U.F_GET_SEALS), U.F_SEAL_SHRINK | U.F_SEAL_GROW);
    U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_SEAL);
    assert.equal(codeOf(() => U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_WRITE)), 'EPERM');
    assert.equal(U.fcntl(fd, U.F_GET_SEALS), U.F_SEAL_SHRINK | U.F_SEAL_GROW | U.F_SEAL_SEAL);
  });

  test('bad fd is EBADF; unknown bits, unknown commands and files that are not memfds are EINVAL', () => {
    const fd = memfd(PAGE);
    assert.equal(codeOf(() => U.fcntl(999, U.F_GET_SEALS)), 'EBADF');
    assert.equal(codeOf(() => U.fcntl(fd, U.F_ADD_SEALS, 0x40)), 'EINVAL');
    assert.equal(codeOf(() => U.fcntl(fd, 9999)), 'EINVAL');
    for (const other of [0, heapBuf()]) {
      assert.equal(codeOf(() => U.fcntl(other, U.F_GET_SEALS)), 'EINVAL');
      assert.equal(codeOf(() => U.fcntl(other, U.F_ADD_SEALS, U.F_SEAL_SHRINK)), 'EINVAL');
    }
    assert.equal(U.fcntl(fd, U.F_GET_SEALS), 0);
  });

  test('F_SEAL_WRITE is EBUSY while a shared mapping exists (read-only too), and allowed after munmap', () => {
    const fd = memfd(PAGE);
    for (const prot of [RW, U.PROT_READ]) {
      const view = U.mmap(PAGE, prot, U.MAP_SHARED, fd, 0);
      assert.equal(codeOf(() => U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_WRITE)), 'EBUSY');
      U.munmap(view);
    }
    const priv = U.mmap(PAGE, RW, U.MAP_PRIVATE, fd, 0); // a private copy does not count
    U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_WRITE);
    U.munmap(priv);
    assert.equal(U.fcntl(fd, U.F_GET_SEALS), U.F_SEAL_WRITE);
  });
});

describe('pwrite and pread', () => {
  test('pwrite returns the bytes written and grows the file; pread is shorter at the end', () => {
    const fd = memfd(0);
    assert.equal(U.pwrite(fd, Uint8Array.of(1, 2, 3), PAGE - 1), 3);
    assert.deepEqual([...U.pread(fd, 10, PAGE - 2)], [0, 1, 2, 3]);
    assert.equal(U.pread(fd, 10, PAGE + 2).length, 0);
    assert.equal(U.pread(fd, 10, 10 * PAGE).length, 0);
    assert.equal(U.pwrite(fd, new Uint8Array(0), 5 * PAGE), 0);
    assert.equal(U.pread(fd, 10 * PAGE, 0).length, PAGE + 2);
  });

  test('errors in order: offset, fd, positioned I/O, buffer', () => {
    assert.equal(codeOf(() => U.pwrite(999, Uint8Array.of(1), -1)), 'EINVAL');
    assert.equal(codeOf(() => U.pread(999, 1, -1)), 'EINVAL');
    assert.equal(codeOf(() => U.pwrite(999, Uint8Array.of(1), 0)), 'EBADF');
    assert.equal(codeOf(() => U.pread(999, 1, 0)), 'EBADF');
    for (const other of [1, heapBuf()]) {
      assert.equal(codeOf(() => U.pwrite(other, Uint8Array.of(1), 0)), 'ESPIPE');
      assert.equal(codeOf(() => U.pread(other, 1, 0)), 'ESPIPE');
    }
    assert.equal(codeOf(() => U.pwrite(memfd(PAGE), [1] as never, 0)), 'EFAULT');
  });

  for (const seal of [U.F_SEAL_WRITE, U.F_SEAL_FUTURE_WRITE]) {
    test(`seal 0x${seal.toString(16)} makes pwrite EPERM and keeps the bytes`, () => {
      const fd = memfd(PAGE);
      U.pwrite(fd, Uint8Array.of(5), 0);
      U.fcntl(fd, U.F_ADD_SEALS, seal);
      assert.equal(codeOf(() => U.pwrite(fd, Uint8Array.of(6), 0)), 'EPERM');
      assert.equal(U.pread(fd, 1, 0)[0], 5);
    });
  }

  test('with F_SEAL_GROW a write stops at the first page chunk that would pass the end', () => {
    const fd = memfd(PAGE, U.F_SEAL_GROW);
    assert.equal(U.pwrite(fd, new Uint8Array(100).fill(1), PAGE - 46), 46);
    assert.equal(codeOf(() => U.pwrite(fd, Uint8Array.of(1), PAGE)), 'EPERM');
    assert.equal(U.pread(fd, 2 * PAGE, 0).length, PAGE);
  });
});

describe('mmap of a memfd', () => {
  test('MAP_SHARED writes are seen by pread and pwrite by the mapping; MAP_PRIVATE is a copy', () => {
    const fd = memfd(2 * PAGE);
    const view = mapShared(fd, 2 * PAGE);
    view[PAGE + 1] = 0xab;
    assert.equal(U.pread(fd, 1, PAGE + 1)[0], 0xab);
    U.pwrite(fd, Uint8Array.of(0xcd), 3);
    assert.equal(view[3], 0xcd);
    const priv = U.mmap(PAGE, RW, U.MAP_PRIVATE, fd, 0);
    priv[3] = 1;
    assert.equal(U.pread(fd, 1, 3)[0], 0xcd);
    U.munmap(priv);
    U.munmap(view);
  });

  test('a range past the end of the file is EINVAL; the last partial page maps', () => {
    const fd = memfd(PAGE + 1);
    assert.equal(codeOf(() => mapShared(fd, 3 * PAGE)), 'EINVAL');
    assert.equal(codeOf(() => mapShared(fd, PAGE, 2 * PAGE)), 'EINVAL');
    assert.equal(codeOf(() => mapShared(memfd(0), PAGE)), 'EINVAL');
    U.munmap(mapShared(fd, 2 * PAGE));
  });

  test('write-sealed: shared writable maps are EPERM, shared read-only and private maps are allowed', () => {
    for (const seal of [U.F_SEAL_WRITE, U.F_SEAL_FUTURE_WRITE]) {
      const fd = memfd(PAGE, seal);
      assert.equal(codeOf(() => mapShared(fd, PAGE)), 'EPERM');
      U.munmap(U.mmap(PAGE, U.PROT_READ, U.MAP_SHARED, fd, 0));
      U.munmap(U.mmap(PAGE, RW, U.MAP_PRIVATE, fd, 0));
    }
  });

  test('F_SEAL_FUTURE_WRITE is allowed while mapped: the old mapping still writes, new writable ones do not', () => {
    const fd = memfd(PAGE);
    const view = mapShared(fd, PAGE);
    U.fcntl(fd, U.F_ADD_SEALS, U.F_SEAL_FUTURE_WRITE);
    view[0] = 9;
    assert.equal(U.pread(fd, 1, 0)[0], 9);
    assert.equal(codeOf(() => mapShared(fd, PAGE)), 'EPERM');
    U.munmap(view);
  });

  test('growing while mapped adds an extent: a mapping across it is ENOMEM, each part maps; unmapped, the file is one run again', () => {
    // 3 pages come from a 4-aligned block and end on an odd page; the 2 added
    // pages are a 2-aligned block (buddy allocator), so they can never follow on.
    const fd = memfd(3 * PAGE);
    const first = mapShared(fd, 3 * PAGE);
    first[0] = 1;
    U.ftruncate(fd, 5 * PAGE);
    U.pwrite(fd, Uint8Array.of(2), 3 * PAGE);
    assert.equal(codeOf(() => mapShared(fd, 5 * PAGE)), 'ENOMEM');
    assert.equal(codeOf(() => mapShared(fd, 2 * PAGE, 2 * PAGE)), 'ENOMEM');
    const second = mapShared(fd, 2 * PAGE, 3 * PAGE);
    assert.equal(second[0], 2);
    U.munmap(first);
    U.munmap(second);
    U.ftruncate(fd, 6 * PAGE); // nothing mapped: moved into one run, bytes kept
    const whole = mapShared(fd, 6 * PAGE);
    assert.deepEqual([whole[0], whole[3 * PAGE], whole[5 * PAGE]], [1, 2, 0]);
    U.munmap(whole);
  });

  test('shrinking while mapped keeps the pages for the mapping; growing again reads zeros', () => {
    const fd = memfd(2 * PAGE);
    const view = mapShared(fd, 2 * PAGE);
    U.ftruncate(fd, PAGE);
    view[PAGE + 5] = 3; // Linux: SIGBUS; here the kept page takes it
    U.ftruncate(fd, 2 * PAGE);
    assert.equal(U.pread(fd, 1, PAGE + 5)[0], 0);
    assert.equal(view[PAGE + 5], 0);
    U.munmap(view);
  });

  test('a mapping keeps the memfd and its pages after the fd is closed, until munmap', () => {
    const before = pagesInUse();
    const fd = memfd(4 * PAGE);
    const view = mapShared(fd, 4 * PAGE);
    closeAll(fd);
    view[0] = 1;
    assert.equal(pagesInUse() - before, 4);
    U.munmap(view);
    assert.equal(pagesInUse(), before);
  });
});

test('the seal constants have Linux values', () => {
  assert.deepEqual([U.F_ADD_SEALS, U.F_GET_SEALS, SEALS], [1033, 1034, 0x1e]);
});
