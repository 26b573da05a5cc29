/**
 * The dma-buf fd through `dmabuf/uapi` (kernel-contract §1.10, §1.12, §1.14, §1.16;
 * uapi.md): DMA_BUF_IOCTL_SYNC, SET_NAME, EXPORT/IMPORT_SYNC_FILE, mmap(2) checks
 * in Linux's order, munmap, and the bufinfo, sysfs and fdinfo listings.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DmaBufAttachment, PAGE_SIZE, type DmaFence } from 'dmabuf';
import { closeAll, createFence, inc, installFdCleanup, openTl, status, track } from './support/fds.js';
import { testExport } from './support/exporter.js';
import { driverFence } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';

installLeakCheck('no objects leaked by the dma-buf uapi tests');
installFdCleanup();

/** A system-heap buffer fd of `len` bytes (tracked). */
function heapBuf(len = PAGE_SIZE, fdFlags = U.O_RDWR): number {
  const heap = U.open('/dev/dma_heap/system');
  const data = { len, fd: 0, fd_flags: fdFlags, heap_flags: 0 };
  try {
    assert.equal(U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data), 0);
  } finally {
    U.close(heap);
  }
  return track(data.fd);
}

function sync(fd: number, flags: number | bigint): number {
  return U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags });
}

/** A pending driver fence added to the buffer behind `fd` with `usage`. */
function addFence(fd: number, usage: typeof DMA_RESV_USAGE_WRITE | typeof DMA_RESV_USAGE_READ): DmaFence {
  const buf = U.dmaBufGet(fd);
  const f = driverFence();
  try {
    buf.withLock((l) => {
      l.reserveFences(1);
      l.addFence(f, usage);
    });
  } finally {
    buf.close();
  }
  return f;
}

const BUFINFO = '/sys/kernel/debug/dma_buf/bufinfo';

describe('DMA_BUF_IOCTL_SYNC', () => {
  test('READ, WRITE, RW with START or END succeed', () => {
    const fd = heapBuf();
    for (const rw of [U.DMA_BUF_SYNC_READ, U.DMA_BUF_SYNC_WRITE, U.DMA_BUF_SYNC_RW]) {
      assert.equal(sync(fd, rw | U.DMA_BUF_SYNC_START), 0);
      assert.equal(sync(fd, rw | U.DMA_BUF_SYNC_END), 0);
    }
  });

  test('unknown bits or neither READ nor WRITE → EINVAL; a wrong argument → EFAULT', () => {
    const fd = heapBuf();
    for (const flags of [8, 0x10 | U.DMA_BUF_SYNC_READ, 1n << 40n | 1n, 2 ** 32 + 1, -1, 0, U.DMA_BUF_SYNC_END]) {
      assert.throws(() => sync(fd, flags), { code: 'EINVAL' }, `flags ${flags}`);
    }
    assert.throws(() => U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, 1), { code: 'EFAULT' });
    assert.throws(() => U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: 'read' }), { code: 'EFAULT' });
    assert.throws(() => U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, null), { code: 'EFAULT' });
  });

  test('START READ waits for writers only; START WRITE for readers too (proved by a non-blocking probe via poll)', () => {
    const fd = heapBuf();
    const r = addFence(fd, DMA_RESV_USAGE_READ);
    assert.equal(sync(fd, U.DMA_BUF_SYNC_READ), 0, 'a reader does not block a CPU read');
    const p = [{ fd, events: U.POLLIN | U.POLLOUT, revents: 0 }];
    U.poll(p, 0);
    assert.equal(p[0]!.revents, U.POLLIN, 'a CPU write would wait');
    r.signal();
    assert.equal(sync(fd, U.DMA_BUF_SYNC_WRITE), 0);
    r.put();
  });

  test('unknown ioctl → ENOTTY', () => {
    const fd = heapBuf();
    assert.throws(() => U.ioctl(fd, 0x40086209, {}), { code: 'ENOTTY' });
    assert.throws(() => U.ioctl(fd, U.SYNC_IOC_MERGE, {}), { code: 'ENOTTY' });
  });
});

describe('DMA_BUF_SET_NAME', () => {
  test('_A and _B set the name seen by fdinfo and bufinfo; 32 bytes → EINVAL; not a string → EFAULT', () => {
    const fd = heapBuf();
    assert.equal(U.ioctl(fd, U.DMA_BUF_SET_NAME_A, 'first'), 0);
    assert.match(U.readFile(`/proc/self/fdinfo/${fd}`), /^name:\tfirst$/m);
    assert.equal(U.ioctl(fd, U.DMA_BUF_SET_NAME_B, 'x'.repeat(31)), 0);
    assert.throws(() => U.ioctl(fd, U.DMA_BUF_SET_NAME_B, 'x'.repeat(32)), { code: 'EINVAL' });
    assert.throws(() => U.ioctl(fd, U.DMA_BUF_SET_NAME_A, 7), { code: 'EFAULT' });
    assert.match(U.readFile(`/proc/self/fdinfo/${fd}`), new RegExp(`^name:\\t${'x'.repeat(31)}$`, 'm'));
  });
});

describe('DMA_BUF_IOCTL_EXPORT_SYNC_FILE / IMPORT_SYNC_FILE', () => {
  test('flags must be READ, WRITE or both (EINVAL); the struct must be readable (EFAULT)', () => {
    const fd = heapBuf();
    for (const ioc of [U.DMA_BUF_IOCTL_EXPORT_SYNC_FILE, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE]) {
      for (const flags of [0, 4, 8 | 1, U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_READ]) {
        assert.throws(() => U.ioctl(fd, ioc, { flags, fd: -1 }), { code: 'EINVAL' }, `flags ${flags}`);
      }
      assert.throws(() => U.ioctl(fd, ioc, 3), { code: 'EFAULT' });
    }
  });

  test('export: a sync_file fd with the snapshot; idle → signalled', () => {
    const fd = heapBuf();
    const idle = { flags: U.DMA_BUF_SYNC_RW, fd: -1 };
    assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_EXPORT_SYNC_FILE, idle), 0);
    track(idle.fd);
    assert.equal(status(idle.fd), 1);
    const w = addFence(fd, DMA_RESV_USAGE_WRITE);
    const snap = { flags: U.DMA_BUF_SYNC_READ, fd: -1 };
    U.ioctl(fd, U.DMA_BUF_IOCTL_EXPORT_SYNC_FILE, snap);
    track(snap.fd);
    assert.equal(status(snap.fd), 0);
    w.signal();
    assert.equal(status(snap.fd), 1);
    w.put();
  });

  test('import: fd not a sync_file (closed, a dma-buf, a timeline) → EINVAL; WRITE blocks readers and writers, READ only writers', () => {
    const fd = heapBuf();
    const tl = openTl();
    for (const bad of [999, fd, tl, 1]) {
      assert.throws(() => U.ioctl(fd, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_WRITE, fd: bad }), { code: 'EINVAL' });
    }
    const f1 = createFence(tl, 1);
    assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_READ, fd: f1 }), 0);
    const p = [{ fd, events: U.POLLIN | U.POLLOUT, revents: 0 }];
    U.poll(p, 0);
    assert.equal(p[0]!.revents, U.POLLIN, 'READ usage: readers may go on');
    const f2 = createFence(tl, 2);
    assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_RW, fd: f2 }), 0);
    U.poll(p, 0);
    assert.equal(p[0]!.revents, 0, 'WRITE usage: nobody may go on');
    inc(tl, 2);
    U.poll(p, 0);
    assert.equal(p[0]!.revents, U.POLLIN | U.POLLOUT);
    closeAll(f1, f2, tl);
  });
});

describe('mmap(2) and munmap(2) of a dma-buf fd', () => {
  test('checks in order: offset alignment, EBADF, length 0, flags, EACCES', () => {
    const fd = heapBuf();
    const RW = U.PROT_READ | U.PROT_WRITE;
    assert.throws(() => U.mmap(0, RW, 0, 999, 1), { code: 'EINVAL' }, 'offset checked before the fd');
    assert.throws(() => U.mmap(PAGE_SIZE, RW, U.MAP_SHARED, 999, 0), { code: 'EBADF' });
    assert.throws(() => U.mmap(0, RW, 0, fd, 0), { code: 'EINVAL' }, 'length 0');
    assert.throws(() => U.mmap(PAGE_SIZE, RW, 0, fd, 0), { code: 'EINVAL' }, 'neither shared nor private');
    assert.throws(() => U.mmap(PAGE_SIZE, RW, U.MAP_SHARED, fd, PAGE_SIZE), { code: 'EINVAL' }, 'past the end');
    const ro = heapBuf(PAGE_SIZE, U.O_RDONLY);
    assert.throws(() => U.mmap(PAGE_SIZE, RW, U.MAP_SHARED, ro, 0), { code: 'EACCES' });
    const r = U.mmap(PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, ro, 0);
    const p = U.mmap(PAGE_SIZE, RW, U.MAP_PRIVATE, ro, 0);
    U.munmap(r);
    U.munmap(p);
  });

  test('shared mappings see each other; a private mapping is a copy; munmap twice → EINVAL', () => {
    const fd = heapBuf(2 * PAGE_SIZE);
    const a = U.mmap(2 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
    const b = U.mmap(100, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, PAGE_SIZE);
    assert.equal(b.length, 100);
    a[PAGE_SIZE + 5] = 17;
    assert.equal(b[5], 17);
    const priv = U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE, fd, PAGE_SIZE);
    priv[5] = 99;
    assert.equal(a[PAGE_SIZE + 5], 17);
    U.munmap(a);
    assert.throws(() => U.munmap(a), { code: 'EINVAL' });
    assert.throws(() => U.munmap(new Uint8Array(4)), { code: 'EINVAL' });
    U.munmap(b);
    U.munmap(priv);
  });
});

describe('listings', () => {
  test('bufinfo: header, per-buffer line with %08 fields, fence lines, Attached Devices, totals, most recent first', () => {
    const before = U.readFile(BUFINFO);
    const baseCount = Number(/Total (\d+) objects, (\d+) bytes/.exec(before)![1]);
    const baseBytes = Number(/Total (\d+) objects, (\d+) bytes/.exec(before)![2]);
    const older = heapBuf(3 * PAGE_SIZE);
    const newer = testExport(1, { size: 100 });
    newer.setName('named');
    const att = DmaBufAttachment.attach(newer, { name: 'gpu0' });
    const att2 = DmaBufAttachment.attach(newer, { name: 'display' });
    const w = driverFence();
    newer.withLock((l) => {
      l.reserveFences(1);
      l.addFence(w, DMA_RESV_USAGE_WRITE);
    });
    const text = U.readFile(BUFINFO);
    assert.ok(text.startsWith('\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n'));
    const ino = (fd: number): number => Number(/^ino:\t(\d+)$/m.exec(U.readFile(`/proc/self/fdinfo/${fd}`))![1]);
    const newerLine = `00000100\t00000002\t00080007\t00000003\ttest_exporter\t`;
    const atNewer = text.indexOf(newerLine);
    assert.ok(atNewer > 0, `no line for the exported buffer in\n${text}`);
    assert.match(text.slice(atNewer), /^00000100\t00000002\t00080007\t00000003\ttest_exporter\t\d{8,}\tnamed\n\twrite fence:test tl seq 1 unsignalled\n\tAttached Devices:\n\tgpu0\n\tdisplay\nTotal 2 devices attached\n\n/);
    const olderLine = `00012288\t00000002\t00080007\t00000001\tsystem\t${String(ino(older)).padStart(8, '0')}\t<none>\n\tAttached Devices:\nTotal 0 devices attached\n\n`;
    const atOlder = text.indexOf(olderLine);
    assert.ok(atOlder > atNewer, 'most recent first');
    assert.ok(text.endsWith(`\nTotal ${baseCount + 2} objects, ${baseBytes + 3 * PAGE_SIZE + 100} bytes\n`));
    w.signal();
    w.put();
    att.detach();
    att2.detach();
    newer.close();
    closeAll(older);
    assert.equal(U.readFile(BUFINFO), before);
  });

  test('sysfs: /sys/kernel/dmabuf/buffers/<ino>/{exporter_name,size}, listed by readdir; gone after close', () => {
    const fd = heapBuf(2 * PAGE_SIZE);
    const ino = /^ino:\t(\d+)$/m.exec(U.readFile(`/proc/self/fdinfo/${fd}`))![1]!;
    assert.ok(U.readdir('/sys/kernel/dmabuf/buffers').includes(ino));
    assert.equal(U.readFile(`/sys/kernel/dmabuf/buffers/${ino}/exporter_name`), 'system\n');
    assert.equal(U.readFile(`/sys/kernel/dmabuf/buffers/${ino}/size`), `${2 * PAGE_SIZE}\n`);
    assert.throws(() => U.readFile(`/sys/kernel/dmabuf/buffers/${ino}/other`), { code: 'ENOENT' });
    closeAll(fd);
    assert.ok(!U.readdir('/sys/kernel/dmabuf/buffers').includes(ino));
    assert.throws(() => U.readFile(`/sys/kernel/dmabuf/buffers/${ino}/size`), { code: 'ENOENT' });
  });

  test('/proc/self/fdinfo/<fd>: pos, flags, mnt_id, ino, size, count, exp_name; name only once set', () => {
    const fd = heapBuf(PAGE_SIZE, U.O_RDONLY);
    const text = U.readFile(`/proc/self/fdinfo/${fd}`);
    assert.match(text, /^pos:\t0\nflags:\t00\nmnt_id:\t\d+\nino:\t\d+\nsize:\t4096\ncount:\t1\nexp_name:\tsystem\n$/);
    const dup = track(U.dup(fd));
    const view = U.mmap(PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0);
    assert.match(U.readFile(`/proc/self/fdinfo/${dup}`), /^count:\t1$/m, 'fds and mappings of one thread count once');
    U.munmap(view);
    const buf = U.dmaBufGet(fd);
    const att = DmaBufAttachment.attach(buf, { name: 'dev' });
    assert.match(U.readFile(`/proc/self/fdinfo/${fd}`), /^count:\t2$/m, 'an attachment holds a reference');
    buf.setName('set');
    assert.match(U.readFile(`/proc/self/fdinfo/${fd}`), /\nexp_name:\tsystem\nname:\tset\n$/);
    att.detach();
    buf.close();
    assert.throws(() => U.readFile('/proc/self/fdinfo/999'), { code: 'ENOENT' });
  });
});
