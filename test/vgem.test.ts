/**
 * vgem (`/dev/dri/card0`): dumb buffers, MAP_DUMB + mmap, GEM_CLOSE, PRIME export
 * and import, vgem fences (attach, conflicts, signal, expiry, close), and the
 * errors of each ioctl in the kernel's order. One thread; vgem-threads.test.ts
 * has the cross-thread cases.
 */
import { afterEach, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { arenaStats, VGEM_FENCE_TIMEOUT_MS } from 'dmabuf';
import { details, installFdCleanup, track } from './support/fds.js';
import { installLeakCheck } from './support/leaks.js';

installFdCleanup();
installLeakCheck('vgem tests leave no objects behind');

const maps: Uint8Array[] = [];
afterEach(() => {
  for (const m of maps.splice(0)) {
    try {
      U.munmap(m);
    } catch {
      // unmapped by the test
    }
  }
});

/** Arena pages in use: the test asserts they come back. */
function usedPages(): number {
  const s = arenaStats();
  return s.grownPages - s.freePages;
}

function pagesBack(t: TestContext): void {
  const before = usedPages();
  t.after(() => assert.equal(usedPages(), before, 'every arena page is returned'));
}

function card(): number {
  return track(U.open('/dev/dri/card0'));
}

interface Dumb { handle: number; pitch: number; size: number }

function createDumb(fd: number, width = 64, height = 4, bpp = 32): Dumb {
  const d = { height, width, bpp, flags: 0, handle: -1, pitch: -1, size: -1 };
  assert.equal(U.ioctl(fd, U.DRM_IOCTL_MODE_CREATE_DUMB, d), 0);
  return d;
}

function mapDumb(fd: number, handle: number): number {
  const m = { handle, pad: 0, offset: -1 };
  assert.equal(U.ioctl(fd, U.DRM_IOCTL_MODE_MAP_DUMB, m), 0);
  return m.offset;
}

function mmap(fd: number, len: number, offset: number, prot = U.PROT_READ | U.PROT_WRITE, flags = U.MAP_SHARED): Uint8Array {
  const v = U.mmap(len, prot, flags, fd, offset);
  maps.push(v);
  return v;
}

function exportFd(fd: number, handle: number, flags = U.DRM_RDWR | U.DRM_CLOEXEC): number {
  const p = { handle, flags, fd: -1 };
  assert.equal(U.ioctl(fd, U.DRM_IOCTL_PRIME_HANDLE_TO_FD, p), 0);
  return track(p.fd);
}

function importFd(fd: number, bufFd: number): number {
  const p = { fd: bufFd, flags: 0, handle: -1 };
  assert.equal(U.ioctl(fd, U.DRM_IOCTL_PRIME_FD_TO_HANDLE, p), 0);
  return p.handle;
}

function attach(fd: number, handle: number, write: boolean): number {
  const a = { handle, flags: write ? U.VGEM_FENCE_WRITE : 0, out_fence: -1, pad: 0 };
  assert.equal(U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_ATTACH, a), 0);
  return a.out_fence;
}

function signal(fd: number, fence: number): void {
  assert.equal(U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence, flags: 0 }), 0);
}

function inode(fd: number): string {
  return /ino:\t(\d+)/.exec(U.readFile(`/proc/self/fdinfo/${fd}`))![1]!;
}

/** poll revents of a dma-buf fd: POLLIN once writers are done, POLLOUT once everyone is. */
function revents(bufFd: number): number {
  const fds = [{ fd: bufFd, events: U.POLLIN | U.POLLOUT, revents: 0 }];
  U.poll(fds, 0);
  return fds[0]!.revents;
}

/** The fences a writer would wait for, as a sync_file's details. */
function implicitFences(bufFd: number): ReturnType<typeof details> {
  const e = { flags: U.DMA_BUF_SYNC_WRITE, fd: -1 };
  U.ioctl(bufFd, U.DMA_BUF_IOCTL_EXPORT_SYNC_FILE, e);
  return details(track(e.fd));
}

function errno(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return 'no error';
}

describe('DRM_IOCTL_MODE_CREATE_DUMB', () => {
  test('handles start at 1 in every DRM file; pitch and page-aligned size as the shmem helper computes them', (t) => {
    pagesBack(t);
    const a = card();
    const b = card();
    assert.deepEqual(createDumb(a, 64, 4, 32), { height: 4, width: 64, bpp: 32, flags: 0, handle: 1, pitch: 256, size: 4096 });
    assert.equal(createDumb(a, 3, 5, 24).handle, 2);
    assert.deepEqual({ ...createDumb(b, 3, 3, 12) }, { height: 3, width: 3, bpp: 12, flags: 0, handle: 1, pitch: 5, size: 4096 });
    assert.equal(createDumb(b, 1024, 5, 8).size, 8192);
  });

  test('the buffer is zeroed and its bytes are what the dma-buf shows', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd, 1024, 8, 32);
    const view = mmap(fd, d.size, mapDumb(fd, d.handle));
    assert.ok(view.every((x) => x === 0));
    view.set([1, 2, 3], 100);
    const buf = mmap(exportFd(fd, d.handle), d.size, 0);
    assert.deepEqual([...buf.subarray(100, 103)], [1, 2, 3]);
  });

  const bad: ReadonlyArray<[string, number, number, number]> = [
    ['width 0', 0, 4, 32], ['height 0', 4, 0, 32], ['bpp 0', 4, 4, 0],
    ['bpp near U32_MAX', 1, 1, 0xfffffff8], ['width * cpp overflows', 0x40000000, 1, 32],
    ['pitch * height overflows', 0x10000, 0x10000, 8], ['page alignment wraps', 0xffffffff, 1, 8],
  ];
  for (const [what, width, height, bpp] of bad) {
    test(`${what} → EINVAL, out-fields zeroed, nothing allocated`, (t) => {
      pagesBack(t);
      const fd = card();
      const d = { height, width, bpp, flags: 0, handle: 7, pitch: 7, size: 7 };
      assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_MODE_CREATE_DUMB, d)), 'EINVAL');
      assert.deepEqual([d.handle, d.pitch, d.size], [0, 0, 0]);
      assert.equal(createDumb(fd).handle, 1, 'no handle was used');
    });
  }

  test('flags are not checked (the kernel ignores them); a field of the wrong type is EFAULT', (t) => {
    pagesBack(t);
    const fd = card();
    const d = { height: 1, width: 1, bpp: 8, flags: 0xdead, handle: 0, pitch: 0, size: 0 };
    assert.equal(U.ioctl(fd, U.DRM_IOCTL_MODE_CREATE_DUMB, d), 0);
    assert.equal(d.handle, 1);
    const e = { height: '1', width: 1, bpp: 8, handle: 9 };
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_MODE_CREATE_DUMB, e)), 'EFAULT');
    assert.equal(e.handle, 9, 'a struct the kernel cannot read is not written back');
  });
});

describe('DRM_IOCTL_MODE_MAP_DUMB and mmap of the DRM fd', () => {
  test('offsets are page aligned, unique per object and stable', (t) => {
    pagesBack(t);
    const fd = card();
    const a = createDumb(fd);
    const b = createDumb(fd);
    const oa = mapDumb(fd, a.handle);
    assert.equal(oa % U.PAGE_SIZE, 0);
    assert.ok(oa >= 2 ** 32, 'offsets start at DRM_FILE_PAGE_OFFSET_START (4 GiB)');
    assert.notEqual(mapDumb(fd, b.handle), oa);
    assert.equal(mapDumb(fd, a.handle), oa);
  });

  test('unknown handle → ENOENT with offset 0; imported object → EINVAL', (t) => {
    pagesBack(t);
    const fd = card();
    const m = { handle: 5, pad: 0, offset: 123 };
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_MODE_MAP_DUMB, m)), 'ENOENT');
    assert.equal(m.offset, 0);
    const heap = track(U.open('/dev/dma_heap/system'));
    const alloc = { len: 4096, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
    U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, alloc);
    const h = importFd(fd, track(alloc.fd));
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_MODE_MAP_DUMB, { handle: h, pad: 0 })), 'EINVAL');
  });

  test('mmap: mid-object offset, too long, MAP_PRIVATE → EINVAL; a file without a handle → EACCES', (t) => {
    pagesBack(t);
    const fd = card();
    const other = card();
    const d = createDumb(fd, 1024, 2, 32); // two pages
    const off = mapDumb(fd, d.handle);
    assert.equal(errno(() => mmap(fd, 4096, off + 4096)), 'EINVAL');
    assert.equal(errno(() => mmap(fd, 3 * 4096, off)), 'EINVAL');
    assert.equal(errno(() => mmap(fd, 4096, off, U.PROT_READ, U.MAP_PRIVATE)), 'EINVAL');
    assert.equal(errno(() => mmap(fd, 4096, 4096 * 7)), 'EINVAL');
    assert.equal(errno(() => mmap(other, 4096, off)), 'EACCES');
    assert.equal(mmap(fd, 4096, off).length, 4096, 'a prefix of the object maps');
  });

  test('a mapping keeps the object after GEM_CLOSE and close(fd); munmap returns its pages', (t) => {
    pagesBack(t);
    const fd = U.open('/dev/dri/card0');
    const d = createDumb(fd);
    const view = U.mmap(d.size, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, mapDumb(fd, d.handle));
    U.ioctl(fd, U.DRM_IOCTL_GEM_CLOSE, { handle: d.handle, pad: 0 });
    U.close(fd);
    const before = usedPages();
    view[0] = 9;
    assert.equal(view[0], 9);
    U.munmap(view);
    assert.equal(usedPages(), before - 1);
  });
});

describe('DRM_IOCTL_GEM_CLOSE', () => {
  test('unknown handle or pad ≠ 0 → EINVAL and the handle stays; a closed handle number is reused', (t) => {
    pagesBack(t);
    const fd = card();
    const a = createDumb(fd);
    createDumb(fd);
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_GEM_CLOSE, { handle: 3, pad: 0 })), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_GEM_CLOSE, { handle: a.handle, pad: 1 })), 'EINVAL');
    assert.equal(U.ioctl(fd, U.DRM_IOCTL_GEM_CLOSE, { handle: a.handle, pad: 0 }), 0);
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_GEM_CLOSE, { handle: a.handle, pad: 0 })), 'EINVAL');
    assert.equal(createDumb(fd).handle, 1, 'lowest free handle');
  });
});

describe('PRIME', () => {
  test('export: bad flags → EINVAL, unknown handle → ENOENT, no fd used', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd);
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_PRIME_HANDLE_TO_FD, { handle: d.handle, flags: 4 })), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_PRIME_HANDLE_TO_FD, { handle: 9, flags: 0 })), 'ENOENT');
    const probe = U.dup(fd);
    U.close(probe);
    assert.equal(exportFd(fd, d.handle), probe, 'the failed calls left no fd behind');
  });

  test('export gives one "drm" dma-buf per object, shared with the DRM mapping; without DRM_RDWR it is read-only', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd);
    const b1 = exportFd(fd, d.handle, 0);
    const b2 = exportFd(fd, d.handle, U.DRM_RDWR);
    assert.equal(inode(b1), inode(b2), 'the same buffer both times');
    assert.match(U.readFile('/sys/kernel/debug/dma_buf/bufinfo'), /\b00004096\t0+\t\d+\t\d+\tdrm\t/);
    assert.equal(U.readFile(`/sys/kernel/dmabuf/buffers/${inode(b1)}/exporter_name`).trim(), 'drm');
    assert.equal(errno(() => mmap(b1, 4096, 0)), 'EACCES', 'first export without DRM_RDWR: O_RDONLY file');
    const ro = mmap(b1, 4096, 0, U.PROT_READ);
    mmap(fd, 4096, mapDumb(fd, d.handle))[5] = 77;
    assert.equal(ro[5], 77);
    assert.equal(errno(() => mmap(b2, 4096, 0, U.PROT_READ, U.MAP_PRIVATE)), 'EINVAL', 'no copy-on-write mapping via the dma-buf either');
  });

  test('import: the exporting file gets its handle back; another file gets a new handle to the same bytes', (t) => {
    pagesBack(t);
    const a = card();
    const b = card();
    createDumb(b);
    const d = createDumb(a);
    const buf = exportFd(a, d.handle);
    assert.equal(importFd(a, buf), d.handle);
    const hb = importFd(b, buf);
    assert.equal(hb, 2);
    assert.equal(importFd(b, buf), hb, 'the prime cache answers again');
    mmap(a, d.size, mapDumb(a, d.handle))[0] = 5;
    assert.equal(mmap(b, d.size, mapDumb(b, hb))[0], 5);
    assert.equal(inode(exportFd(b, hb)), inode(buf), 're-export of the same object is the same buffer');
  });

  test('import after GEM_CLOSE re-creates a handle to the object the buffer kept alive', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd);
    const buf = exportFd(fd, d.handle);
    mmap(buf, d.size, 0)[1] = 3;
    U.ioctl(fd, U.DRM_IOCTL_GEM_CLOSE, { handle: d.handle, pad: 0 });
    const h = importFd(fd, buf);
    assert.equal(h, 1);
    assert.equal(mmap(fd, d.size, mapDumb(fd, h))[1], 3);
    assert.equal(inode(exportFd(fd, h)), inode(buf));
  });

  test('a foreign dma-buf becomes an object: re-exported as itself, its fences are the buffer\'s', (t) => {
    pagesBack(t);
    const fd = card();
    const heap = track(U.open('/dev/dma_heap/system'));
    const alloc = { len: 8192, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
    U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, alloc);
    const buf = track(alloc.fd);
    const h = importFd(fd, buf);
    assert.equal(importFd(fd, buf), h);
    assert.equal(inode(exportFd(fd, h)), inode(buf));
    const f = attach(fd, h, true);
    assert.equal(revents(buf), 0, 'the heap buffer sees the vgem write fence');
    signal(fd, f);
    assert.equal(revents(buf), U.POLLIN | U.POLLOUT);
  });

  test('import: closed fd → EBADF, a fd that is not a dma-buf → EINVAL', (t) => {
    pagesBack(t);
    const fd = card();
    const tl = track(U.open('/dev/sw_sync'));
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_PRIME_FD_TO_HANDLE, { fd: 999, flags: 0 })), 'EBADF');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_PRIME_FD_TO_HANDLE, { fd: tl, flags: 0 })), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_PRIME_FD_TO_HANDLE, { fd: 0, flags: 0 })), 'EINVAL');
  });
});

describe('vgem fences', () => {
  test('attach: bad flags or pad → EINVAL before the handle lookup; unknown handle → ENOENT', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd);
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_ATTACH, { handle: 9, flags: 2 })), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_ATTACH, { handle: 9, pad: 1 })), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_ATTACH, { handle: 9 })), 'ENOENT');
    assert.equal(attach(fd, d.handle, false), 1, 'failed attaches used no fence id');
    signal(fd, 1);
  });

  const conflicts: ReadonlyArray<[boolean, boolean, boolean]> = [
    // first, second, conflicts
    [true, true, true], [true, false, true], [false, true, true], [false, false, false],
  ];
  for (const [first, second, busy] of conflicts) {
    const name = (w: boolean): string => (w ? 'write' : 'read');
    test(`${name(second)} after an unsignalled ${name(first)} → ${busy ? 'EBUSY' : 'attached'}`, (t) => {
      pagesBack(t);
      const fd = card();
      const d = createDumb(fd);
      const f1 = attach(fd, d.handle, first);
      const a = { handle: d.handle, flags: second ? U.VGEM_FENCE_WRITE : 0, out_fence: -1 };
      if (busy) {
        assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_ATTACH, a)), 'EBUSY');
        signal(fd, f1);
        assert.equal(attach(fd, d.handle, second), 2, 'allowed once the first is signalled; the busy one used no id');
      } else {
        assert.equal(U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_ATTACH, a), 0);
        signal(fd, f1);
      }
    });
  }

  test('the fence joins the buffer as WRITE or READ: poll, sync_file names and statuses', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd);
    const buf = exportFd(fd, d.handle);
    const r = attach(fd, d.handle, false);
    assert.equal(revents(buf), U.POLLIN, 'a reader blocks writers only');
    const info = implicitFences(buf);
    assert.deepEqual(info.fences.map((f) => [f.driver_name, f.obj_name, f.status]), [['vgem', 'unbound', 0]]);
    signal(fd, r);
    const w = attach(fd, d.handle, true);
    assert.equal(w, 2, 'ids are per file and not reused');
    assert.equal(revents(buf), 0);
    signal(fd, w);
    assert.equal(revents(buf), U.POLLIN | U.POLLOUT);
    assert.equal(implicitFences(buf).status, 1);
  });

  test('signal: flags ≠ 0 → EINVAL; unknown id or a second signal → ENOENT', (t) => {
    pagesBack(t);
    const fd = card();
    const d = createDumb(fd);
    const f = attach(fd, d.handle, true);
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: f, flags: 1 })), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: 0, flags: 0 })), 'ENOENT');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: 2, flags: 0 })), 'ENOENT');
    signal(fd, f);
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: f, flags: 0 })), 'ENOENT');
  });

  test(`an unsignalled fence expires after VGEM_FENCE_TIMEOUT_MS (${VGEM_FENCE_TIMEOUT_MS} ms); signalling it then is ETIMEDOUT`, (t) => {
    pagesBack(t);
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const fd = card();
    const d = createDumb(fd);
    const buf = exportFd(fd, d.handle);
    const f = attach(fd, d.handle, true);
    t.mock.timers.tick(VGEM_FENCE_TIMEOUT_MS - 1);
    assert.equal(revents(buf), 0, 'still pending just before the timeout');
    t.mock.timers.tick(1);
    assert.equal(revents(buf), U.POLLIN | U.POLLOUT);
    assert.equal(implicitFences(buf).status, 1, 'expired without an error, as vgem_fence_timeout signals');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: f, flags: 0 })), 'ETIMEDOUT');
    assert.equal(errno(() => U.ioctl(fd, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: f, flags: 0 })), 'ENOENT');
  });

  test('closing the DRM file signals its fences; the exported buffer lives on', (t) => {
    pagesBack(t);
    const fd = U.open('/dev/dri/card0');
    const d = createDumb(fd);
    const buf = exportFd(fd, d.handle);
    mmap(fd, d.size, mapDumb(fd, d.handle))[0] = 1;
    attach(fd, d.handle, false);
    attach(fd, d.handle, false);
    assert.equal(revents(buf), U.POLLIN);
    U.munmap(maps.pop()!);
    U.close(fd);
    assert.equal(revents(buf), U.POLLIN | U.POLLOUT);
    assert.equal(mmap(buf, d.size, 0)[0], 1);
  });
});

describe('ioctl dispatch', () => {
  test('matched by number: another type → ENOTTY, a DRM number vgem lacks → EINVAL, size bits ignored', (t) => {
    pagesBack(t);
    const fd = card();
    assert.equal(errno(() => U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: 0 })), 'ENOTTY');
    assert.equal(errno(() => U.ioctl(fd, U._IOWR(U.DRM_IOCTL_BASE, 0x00, 64), {})), 'EINVAL');
    assert.equal(errno(() => U.ioctl(fd, U._IOWR(U.DRM_IOCTL_BASE, U.DRM_COMMAND_BASE + 3, 8), {})), 'EINVAL');
    const d = { height: 1, width: 1, bpp: 8, handle: 0 };
    assert.equal(U.ioctl(fd, U._IOWR(U.DRM_IOCTL_BASE, 0xb2, 24), d), 0);
    assert.equal(d.handle, 1);
  });
});
