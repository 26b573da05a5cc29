/**
 * The dma-buf core (kernel-contract §1.3, §1.4, §1.9–1.11, §1.13–1.15, §8): export
 * checks, lifetime and release, vmap, names, CPU access, dma_buf_mmap, poll and the
 * sync_file bridge, against a real exporter over arena pages (support/exporter.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  arenaStats, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_KERNEL,
  DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DMA_TO_DEVICE, DmaBuf, DmaBufAttachment, dmaFenceArrayCreate, DmaFence,
  liveObjects, PAGE_SIZE, SyncFile, type DmaBufOps, type DmaDataDirection, type DmaResvUsage,
} from 'dmabuf';
import * as U from 'dmabuf/uapi';
import { settledValue } from './support/async.js';
import { calls, count, hooks, testExport, testOps } from './support/exporter.js';
import { driverFence } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';

installLeakCheck('no objects leaked by the dma-buf core tests');

const ABORTED = AbortSignal.abort();
const DIRS: ReadonlyArray<[string, DmaDataDirection]> = [
  ['DMA_FROM_DEVICE (read)', DMA_FROM_DEVICE], ['DMA_TO_DEVICE (write)', DMA_TO_DEVICE],
  ['DMA_BIDIRECTIONAL', DMA_BIDIRECTIONAL], ['DMA_NONE', DMA_NONE],
];
const USAGES: ReadonlyArray<[string, DmaResvUsage]> = [
  ['KERNEL', DMA_RESV_USAGE_KERNEL], ['WRITE', DMA_RESV_USAGE_WRITE], ['READ', DMA_RESV_USAGE_READ],
  ['BOOKKEEP', DMA_RESV_USAGE_BOOKKEEP],
];

/** Add `fence` to `buf`'s resv with `usage`. */
function addFence(buf: DmaBuf, fence: DmaFence, usage: DmaResvUsage): void {
  buf.withLock((l) => {
    l.reserveFences(1);
    l.addFence(fence, usage);
  });
}

/** Ops with only the mandatory members (no mmap, vmap, CPU-access hooks). */
const bareOps: DmaBufOps = {
  name: 'test_exporter_bare', mapDmaBuf: () => null, unmapDmaBuf: () => undefined, release: () => undefined,
};

function bufferCount(): number {
  return Number(/Total (\d+) objects/.exec(U.readFile('/sys/kernel/debug/dma_buf/bufinfo'))![1]);
}

describe('dma_buf_export', () => {
  const ok = testOps;
  const bad: ReadonlyArray<[string, unknown]> = [
    ['no info', undefined],
    ['no priv', { ops: ok, size: 4096 }],
    ['priv null', { ops: ok, priv: null, size: 4096 }],
    ['no ops', { priv: 1, size: 4096 }],
    ['no mapDmaBuf', { ops: { ...ok, mapDmaBuf: undefined }, priv: 1, size: 4096 }],
    ['no unmapDmaBuf', { ops: { ...ok, unmapDmaBuf: undefined }, priv: 1, size: 4096 }],
    ['no release', { ops: { ...ok, release: undefined }, priv: 1, size: 4096 }],
    ['pin without unpin', { ops: { ...ok, pin: () => 0 }, priv: 1, size: 4096 }],
    ['unpin without pin', { ops: { ...ok, unpin: () => undefined }, priv: 1, size: 4096 }],
    ['priv not a 32-bit integer', { ops: ok, priv: 2 ** 40, size: 4096 }],
    ['negative size', { ops: ok, priv: 1, size: -1 }],
    ['fractional size', { ops: ok, priv: 1, size: 1.5 }],
    ['NaN size', { ops: ok, priv: 1, size: NaN }],
    ['resv not a DmaResv', { ops: ok, priv: 1, size: 4096, resv: {} }],
  ];
  for (const [what, info] of bad) {
    test(`${what} → EINVAL, and nothing is created`, () => {
      const live = liveObjects();
      const listed = bufferCount();
      assert.throws(() => DmaBuf.export(info as never), { code: 'EINVAL' });
      assert.equal(liveObjects(), live);
      assert.equal(bufferCount(), listed);
    });
  }

  test('the mandatory-ops check comes before the ops name is registered (EINVAL, not EEXIST)', () => {
    testExport(1).close(); // testOps are registered in this thread now
    const clash = { ...testOps, release: undefined } as unknown as DmaBufOps; // same name, other object
    assert.throws(() => DmaBuf.export({ ops: clash, priv: 1, size: 4096 }), { code: 'EINVAL' });
    const clash2 = { ...testOps };
    assert.throws(() => DmaBuf.export({ ops: clash2, priv: 1, size: 4096 }), { code: 'EEXIST' });
  });

  test('size is not validated further: 0 and non-page multiples are accepted, the size is kept exactly', () => {
    for (const size of [0, 5, PAGE_SIZE + 1, 2 ** 33 + 7]) {
      const buf = DmaBuf.export({ ops: bareOps, priv: 1, size });
      assert.equal(buf.size, size);
      buf.close();
    }
  });

  test('file flags keep only O_ACCMODE | O_NONBLOCK; exp_name defaults to the ops name', () => {
    const buf = DmaBuf.export({ ops: bareOps, priv: 1, size: 1, flags: U.O_RDONLY | U.O_NONBLOCK | U.O_CLOEXEC | 0o100 });
    assert.equal(buf.flags, U.O_RDONLY | U.O_NONBLOCK);
    assert.equal(buf.expName, 'test_exporter_bare');
    assert.equal(buf.name, null);
    buf.close();
    const rw = DmaBuf.export({ ops: bareOps, priv: 1, size: 1, expName: 'mine' });
    assert.equal(rw.flags, U.O_RDWR);
    assert.equal(rw.expName, 'mine');
    rw.close();
  });

  test('exporter words are bounded and hold 32-bit integers', () => {
    const buf = testExport(1);
    assert.throws(() => buf.exporterWord(16), { code: 'EINVAL' });
    assert.throws(() => buf.setExporterWord(-1, 0), { code: 'EINVAL' });
    assert.throws(() => buf.setExporterWord(5, 0.5), { code: 'EINVAL' });
    buf.setExporterWord(15, 0xffffffff);
    assert.equal(buf.exporterWord(15), -1);
    buf.close();
  });
});

describe('lifetime: the last of fd, handle, mapping and attachment releases, once', () => {
  const holders = ['handle', 'fd', 'mapping', 'attachment'] as const;
  for (const last of holders) {
    test(`release runs exactly once, when the ${last} goes last`, () => {
      const before = arenaStats().freePages;
      const buf = testExport(2);
      const fd = U.dmaBufFd(buf.get());
      const view = buf.mmap(0, 2);
      const att = DmaBufAttachment.attach(buf, { name: 'dev' });
      const drop = {
        handle: () => buf.close(), fd: () => U.close(fd), mapping: () => buf.munmap(view), attachment: () => att.detach(),
      };
      const priv = buf.priv;
      for (const h of holders.filter((x) => x !== last)) {
        drop[h]();
        assert.equal(count(priv, 'release'), 0, `released after only the ${h} went`);
      }
      drop[last]();
      assert.equal(count(priv, 'release'), 1);
      assert.equal(arenaStats().freePages, before, 'the pages are back');
    });
  }

  test('a mapping keeps the buffer after every fd is closed: its bytes stay readable and writable', () => {
    const buf = testExport(1);
    const fd = U.dmaBufFd(buf);
    const view = U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
    view[7] = 42;
    const priv = (() => {
      const h = U.dmaBufGet(fd);
      try {
        return h.priv;
      } finally {
        h.close();
      }
    })();
    U.close(fd);
    assert.equal(count(priv, 'release'), 0);
    assert.equal(view[7], 42);
    view[8] = 43;
    U.munmap(view);
    assert.equal(count(priv, 'release'), 1);
    assert.throws(() => U.munmap(view), { code: 'EINVAL' });
  });

  test('get() adds a reference; a closed handle is unusable (EBADF)', () => {
    const buf = testExport(1);
    const other = buf.get();
    buf.close();
    assert.equal(count(other, 'release'), 0);
    assert.throws(() => buf.size, { code: 'EBADF' });
    other.close();
  });
});

describe('vmap (§1.11)', () => {
  test('only the first vmap and the last vunmap reach the exporter; every caller gets the same view', () => {
    const buf = testExport(2, { size: 2 * PAGE_SIZE - 100 });
    const a = buf.vmapUnlocked();
    const b = buf.vmapUnlocked();
    assert.equal(a, b);
    assert.equal(a.length, 2 * PAGE_SIZE - 100, 'the whole buffer, its size');
    assert.equal(buf.vmapCount, 2);
    assert.equal(count(buf, 'vmap'), 1);
    buf.vunmapUnlocked(a);
    assert.equal(count(buf, 'vunmap'), 0);
    buf.vunmapUnlocked(b);
    assert.equal(count(buf, 'vunmap'), 1);
    assert.equal(buf.vmapCount, 0);
    const c = buf.vmapUnlocked(); // a fresh vmap reaches the exporter again
    assert.equal(count(buf, 'vmap'), 2);
    buf.vunmapUnlocked(c);
    buf.close();
  });

  test('vmap and vunmap need the reservation lock (EPERM)', () => {
    const buf = testExport(1);
    assert.throws(() => buf.vmap(), { code: 'EPERM' });
    const map = buf.vmapUnlocked();
    assert.throws(() => buf.vunmap(map), { code: 'EPERM' });
    assert.equal(buf.vmapCount, 1);
    buf.vunmapUnlocked(map);
    buf.close();
  });

  test('vunmap of another view, or when not vmapped → EINVAL, and the count is unchanged', () => {
    const buf = testExport(1);
    assert.throws(() => buf.vunmapUnlocked(new Uint8Array(4)), { code: 'EINVAL' });
    const map = buf.vmapUnlocked();
    assert.throws(() => buf.vunmapUnlocked(map.subarray(1)), { code: 'EINVAL' });
    assert.equal(buf.vmapCount, 1);
    assert.equal(count(buf, 'vunmap'), 0);
    buf.vunmapUnlocked(map);
    buf.close();
  });

  test('an exporter without vmap → EINVAL', () => {
    const buf = DmaBuf.export({ ops: bareOps, priv: 1, size: PAGE_SIZE });
    assert.throws(() => buf.vmapUnlocked(), { code: 'EINVAL' });
    assert.equal(buf.vmapCount, 0);
    buf.close();
  });

  test('the final put of a vmapped buffer is refused (EBUSY) and changes nothing', () => {
    const buf = testExport(1);
    const map = buf.vmapUnlocked();
    map[0] = 9;
    assert.throws(() => buf.close(), { code: 'EBUSY' });
    assert.equal(count(buf, 'release'), 0);
    assert.equal(buf.vmapCount, 1);
    assert.equal(buf.vmapUnlocked()[0], 9, 'the handle still works');
    buf.vunmapUnlocked(map);
    const other = buf.get(); // not the last reference: put allowed
    other.close();
    buf.vunmapUnlocked(map);
    const priv = buf.priv;
    buf.close();
    assert.equal(count(priv, 'release'), 1);
  });

  test('vmap and mmap are views of the same bytes', () => {
    const buf = testExport(2);
    const map = buf.vmapUnlocked();
    const view = buf.mmap(1, 1);
    view[3] = 77;
    assert.equal(map[PAGE_SIZE + 3], 77);
    buf.munmap(view);
    buf.vunmapUnlocked(map);
    buf.close();
  });
});

describe('names (§1.15)', () => {
  test('31 bytes are accepted, 32 → EINVAL (name unchanged); empty is a name; replaceable with attachments', () => {
    const buf = testExport(1);
    buf.setName('a'.repeat(31));
    assert.equal(buf.name, 'a'.repeat(31));
    assert.throws(() => buf.setName('b'.repeat(32)), { code: 'EINVAL' });
    assert.throws(() => buf.setName('é'.repeat(16)), { code: 'EINVAL' }, '32 bytes in UTF-8');
    assert.equal(buf.name, 'a'.repeat(31));
    buf.setName('');
    assert.equal(buf.name, '', 'set but empty: not null');
    const att = DmaBufAttachment.attach(buf, { name: 'dev' });
    buf.setName('renamed');
    assert.equal(buf.name, 'renamed');
    buf.setName('cut\0here');
    assert.equal(buf.name, 'cut', 'a C string ends at NUL');
    assert.throws(() => buf.setName(5 as never), { code: 'EFAULT' });
    att.detach();
    buf.close();
  });
});

describe('begin/end CPU access (§1.9)', () => {
  for (const [dirName, dir] of DIRS) {
    const write = dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL;
    for (const [usageName, usage] of USAGES) {
      const waits = usage === DMA_RESV_USAGE_KERNEL || usage === DMA_RESV_USAGE_WRITE || (write && usage === DMA_RESV_USAGE_READ);
      test(`${dirName} ${waits ? 'waits' : 'does not wait'} for a pending ${usageName} fence`, () => {
        const buf = testExport(1);
        const f = driverFence();
        addFence(buf, f, usage);
        // An aborted signal turns a wait into EINTR; no wait means success.
        if (waits) assert.throws(() => buf.beginCpuAccess(dir, { signal: ABORTED }), { code: 'EINTR' });
        else buf.beginCpuAccess(dir, { signal: ABORTED });
        assert.equal(count(buf, 'begin'), 1, 'the exporter hook ran first');
        f.signal();
        buf.beginCpuAccess(dir, { signal: ABORTED });
        f.put();
        buf.close();
      });
    }
  }

  test('a waiting begin returns once the fence signals (async form)', async () => {
    const buf = testExport(1);
    const f = driverFence();
    addFence(buf, f, DMA_RESV_USAGE_WRITE);
    const p = buf.beginCpuAccessAsync(DMA_FROM_DEVICE).then(() => 'done');
    assert.equal(await settledValue(p), 'pending');
    f.signal();
    assert.equal(await p, 'done');
    f.put();
    buf.close();
  });

  test('an exporter error comes back unchanged and skips the wait', () => {
    const buf = testExport(1);
    const f = driverFence();
    addFence(buf, f, DMA_RESV_USAGE_WRITE);
    hooks(buf).begin = () => -11; // -EAGAIN
    assert.throws(() => buf.beginCpuAccess(DMA_FROM_DEVICE, { signal: ABORTED }), { code: 'EAGAIN' });
    hooks(buf).end = () => -12;
    assert.throws(() => buf.endCpuAccess(DMA_FROM_DEVICE), { code: 'ENOMEM' });
    f.signal();
    f.put();
    buf.close();
  });

  test('end never waits for fences and calls only the exporter', () => {
    const buf = testExport(1);
    const f = driverFence();
    addFence(buf, f, DMA_RESV_USAGE_KERNEL);
    buf.endCpuAccess(DMA_BIDIRECTIONAL);
    assert.deepEqual(calls(buf), ['end']);
    f.signal();
    f.put();
    buf.close();
  });

  test('with the reservation lock held → EDEADLK, before the exporter is called', () => {
    const buf = testExport(1);
    buf.withLock(() => {
      assert.throws(() => buf.beginCpuAccess(DMA_FROM_DEVICE), { code: 'EDEADLK' });
      assert.throws(() => buf.endCpuAccess(DMA_FROM_DEVICE), { code: 'EDEADLK' });
    });
    assert.equal(calls(buf).length, 0);
    buf.close();
  });

  test('a bad direction → EINVAL', () => {
    const buf = testExport(1);
    assert.throws(() => buf.beginCpuAccess(4 as never), { code: 'EINVAL' });
    assert.throws(() => buf.endCpuAccess(-1 as never), { code: 'EINVAL' });
    assert.equal(calls(buf).length, 0);
    buf.close();
  });

  test('an exporter without hooks only waits', () => {
    const buf = DmaBuf.export({ ops: bareOps, priv: 1, size: 1 });
    buf.beginCpuAccess(DMA_TO_DEVICE);
    buf.endCpuAccess(DMA_TO_DEVICE);
    buf.close();
  });
});

describe('dma_buf_mmap (§1.10)', () => {
  test('only whole pages of size can be mapped (EINVAL past them)', () => {
    const buf = testExport(3, { size: 2 * PAGE_SIZE + 100 });
    const v = buf.mmap(0, 2);
    assert.equal(v.length, 2 * PAGE_SIZE);
    buf.munmap(v);
    const w = buf.mmap(1, 1);
    buf.munmap(w);
    assert.throws(() => buf.mmap(2, 1), { code: 'EINVAL' }, 'the tail of a non-page-multiple');
    assert.throws(() => buf.mmap(1, 2), { code: 'EINVAL' });
    assert.throws(() => buf.mmap(0, 0), { code: 'EINVAL' });
    assert.throws(() => buf.mmap(-1, 1), { code: 'EINVAL' });
    assert.throws(() => buf.mmap(0.5, 1), { code: 'EINVAL' });
    assert.throws(() => buf.mmap(2 ** 52, 1), { code: 'EOVERFLOW' });
    assert.equal(count(buf, 'mmap'), 2, 'failed checks never reach the exporter');
    buf.close();
  });

  test('a zero-size buffer cannot be mapped; an exporter without mmap → EINVAL', () => {
    const zero = testExport(1, { size: 0 });
    assert.throws(() => zero.mmap(0, 1), { code: 'EINVAL' });
    zero.close();
    const bare = DmaBuf.export({ ops: bareOps, priv: 1, size: PAGE_SIZE });
    assert.throws(() => bare.mmap(0, 1), { code: 'EINVAL' });
    assert.throws(() => bare.mmap(2 ** 52, 1), { code: 'EINVAL' }, 'no mmap op is checked before overflow');
    bare.close();
  });

  test('with the reservation lock held → EDEADLK', () => {
    const buf = testExport(1);
    buf.withLock(() => assert.throws(() => buf.mmap(0, 1), { code: 'EDEADLK' }));
    buf.close();
  });
});

describe('poll (§1.13)', () => {
  const POLLIN = 1;
  const POLLOUT = 4;
  const cases: ReadonlyArray<[string, DmaResvUsage, number]> = [
    ['KERNEL', DMA_RESV_USAGE_KERNEL, 0],
    ['WRITE', DMA_RESV_USAGE_WRITE, 0],
    ['READ', DMA_RESV_USAGE_READ, POLLIN],
    ['BOOKKEEP', DMA_RESV_USAGE_BOOKKEEP, POLLIN | POLLOUT],
  ];
  test('an idle buffer is ready for POLLIN and POLLOUT', () => {
    const buf = testExport(1);
    assert.equal(buf.poll(), POLLIN | POLLOUT);
    buf.close();
  });
  for (const [name, usage, mask] of cases) {
    test(`a pending ${name} fence leaves ${mask === 0 ? 'nothing' : mask === POLLIN ? 'POLLIN' : 'POLLIN|POLLOUT'} ready; all once it signals`, () => {
      const buf = testExport(1);
      const f = driverFence();
      addFence(buf, f, usage);
      assert.equal(buf.poll(), mask);
      f.signal();
      assert.equal(buf.poll(), POLLIN | POLLOUT);
      f.put();
      buf.close();
    });
  }
});

describe('the sync_file bridge (§1.14)', () => {
  test('exportSyncFile is a snapshot: fences added later are not in it', () => {
    const buf = testExport(1);
    const w1 = driverFence();
    addFence(buf, w1, DMA_RESV_USAGE_WRITE);
    const sf = buf.exportSyncFile(false);
    const w2 = driverFence();
    addFence(buf, w2, DMA_RESV_USAGE_WRITE);
    assert.equal(sf.status(), 0);
    w1.signal();
    assert.equal(sf.status(), 1, 'signalled although w2 is pending');
    assert.equal(buf.poll() & 1, 0, 'the buffer itself still waits for w2');
    w2.signal();
    putAll(w1, w2);
    sf.close();
    buf.close();
  });

  test('read exports wait for writers only, write exports for readers too; idle → the signalled stub', () => {
    const buf = testExport(1);
    const idle = buf.exportSyncFile(true);
    assert.equal(idle.status(), 1);
    const stub = DmaFence.getStub();
    const got = idle.getFence();
    assert.equal(got.slot, stub.slot);
    putAll(stub, got);
    idle.close();
    const r = driverFence();
    addFence(buf, r, DMA_RESV_USAGE_READ);
    const forRead = buf.exportSyncFile(false);
    const forWrite = buf.exportSyncFile(true);
    assert.equal(forRead.status(), 1);
    assert.equal(forWrite.status(), 0);
    r.signal();
    assert.equal(forWrite.status(), 1);
    r.put();
    forRead.close();
    forWrite.close();
    buf.close();
  });

  test('importSyncFile unwraps containers and adds the leaves with WRITE or READ usage', () => {
    for (const write of [true, false]) {
      const buf = testExport(1);
      const a = driverFence();
      const b = driverFence();
      const arr = dmaFenceArrayCreate([a, b], DmaFence.contextAlloc(1), 1, false);
      const sf = SyncFile.create(arr);
      buf.importSyncFile(sf, write);
      const writers = buf.resv.getFences(DMA_RESV_USAGE_WRITE);
      const all = buf.resv.getFences(DMA_RESV_USAGE_READ);
      assert.deepEqual(all.map((f) => f.slot).sort(), [a.slot, b.slot].sort(), 'the leaves, not the array');
      assert.equal(writers.length, write ? 2 : 0);
      assert.equal(buf.poll(), write ? 0 : 1);
      putAll(...writers, ...all);
      a.signal();
      b.signal();
      putAll(a, b, arr);
      sf.close();
      buf.close();
    }
  });

  test('importing a signalled sync_file leaves the buffer idle', () => {
    const buf = testExport(1);
    const stub = DmaFence.getStub();
    const sf = SyncFile.create(stub);
    buf.importSyncFile(sf, true);
    assert.equal(buf.poll(), 5);
    stub.put();
    sf.close();
    buf.close();
  });
});

function putAll(...fences: DmaFence[]): void {
  for (const f of fences) f.put();
}
