/**
 * Attachments (kernel-contract §1.5–1.8, §1.17, §7 extension): attach checks,
 * detach, the locking rules of map/unmap, pin-on-map, the static importer's wait
 * for KERNEL fences, sg tables under device constraints, move notification in
 * the importer's thread, and the coherency extension.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_WRITE, DMA_TO_DEVICE, DmaBuf,
  DmaBufAttachment, dmaBufDetach, dmaBufIsCoherent, dmaBufMoveNotify, liveObjects, PAGE_SIZE, sgEntryBytes,
  sgTableBytes, type DmaBufAttachOps, type DmaFence, type DmaResvUsage, type SgTable,
} from 'dmabuf';
import { calls, count, firstPage, hooks, pins, testExport, testMove } from './support/exporter.js';
import { driverFence } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';

installLeakCheck('no objects leaked by the attachment tests');

const DEV = { name: 'dev' };
const ABORTED = AbortSignal.abort();

function addFence(buf: DmaBuf, fence: DmaFence, usage: DmaResvUsage): void {
  buf.withLock((l) => {
    l.reserveFences(1);
    l.addFence(fence, usage);
  });
}

/** Importer ops that record their calls and whether the lock was held. */
function recorder(buf: DmaBuf): DmaBufAttachOps & { seen: boolean[] } {
  const seen: boolean[] = [];
  return { seen, moveNotify: () => void seen.push(buf.resv.mutex.isHeldByMe()) };
}

describe('dma_buf_attach checks', () => {
  const badDevices: ReadonlyArray<[string, unknown]> = [
    ['no device', undefined], ['null', null], ['a string', 'dev'], ['no name', {}], ['empty name', { name: '' }],
    ['dmaMaskBits 11', { name: 'd', dmaMaskBits: 11 }], ['dmaMaskBits 65', { name: 'd', dmaMaskBits: 65 }],
    ['dmaMaskBits 32.5', { name: 'd', dmaMaskBits: 32.5 }], ['maxSegmentSize below a page', { name: 'd', maxSegmentSize: 100 }],
    ['segmentBoundaryMask not 2^n-1', { name: 'd', segmentBoundaryMask: 4096 }],
    ['segmentBoundaryMask below a page', { name: 'd', segmentBoundaryMask: 1023 }],
    ['coherent not a boolean', { name: 'd', coherent: 1 }], ['peer2peer not a boolean', { name: 'd', peer2peer: 'yes' }],
  ];
  for (const [what, dev] of badDevices) {
    test(`${what} → EINVAL; nothing attached, the exporter not called`, () => {
      const buf = testExport(1);
      const live = liveObjects();
      assert.throws(() => DmaBufAttachment.attach(buf, dev), { code: 'EINVAL' });
      assert.equal(buf.attachmentCount, 0);
      assert.equal(liveObjects(), live);
      assert.equal(calls(buf).length, 0);
      buf.close();
    });
  }

  test('importer ops without moveNotify → EINVAL', () => {
    const buf = testExport(1);
    assert.throws(() => DmaBufAttachment.dynamicAttach(buf, DEV, {} as DmaBufAttachOps), { code: 'EINVAL' });
    assert.throws(() => DmaBufAttachment.dynamicAttach(buf, DEV, { moveNotify: 1 } as never), { code: 'EINVAL' });
    assert.equal(buf.attachmentCount, 0);
    buf.close();
  });

  test('not a buffer → EINVAL', () => {
    assert.throws(() => DmaBufAttachment.attach({} as DmaBuf, DEV), { code: 'EINVAL' });
  });

  test("the exporter's attach error (-EBUSY) comes back unchanged; nothing is attached or detached", () => {
    const buf = testExport(1);
    const live = liveObjects();
    hooks(buf).attach = () => -16;
    assert.throws(() => DmaBufAttachment.attach(buf, DEV), { code: 'EBUSY' });
    assert.equal(buf.attachmentCount, 0);
    assert.deepEqual(calls(buf), ['attach']);
    assert.equal(liveObjects(), live);
    const priv = buf.priv;
    buf.close();
    assert.equal(count(priv, 'release'), 1, 'the refused attachment held no reference');
  });

  test('with the reservation lock held → EDEADLK (attach and detach)', () => {
    const buf = testExport(1);
    buf.withLock(() => assert.throws(() => DmaBufAttachment.attach(buf, DEV), { code: 'EDEADLK' }));
    const att = DmaBufAttachment.attach(buf, DEV);
    buf.withLock(() => assert.throws(() => att.detach(), { code: 'EDEADLK' }));
    assert.equal(buf.attachmentCount, 1);
    att.detach();
    assert.equal(buf.attachmentCount, 0);
    assert.deepEqual(calls(buf), ['attach', 'detach']);
    buf.close();
  });

  test('fields: dynamic, peer2peer, importer priv, exporter priv', () => {
    const buf = testExport(1);
    const s = DmaBufAttachment.attach(buf, DEV);
    const d = DmaBufAttachment.dynamicAttach(buf, DEV, { allowPeer2peer: true, moveNotify: () => undefined }, 7);
    assert.equal(s.isDynamic, false);
    assert.equal(d.isDynamic, true);
    assert.equal(d.peer2peer, true);
    assert.equal(s.peer2peer, false);
    assert.equal(d.importerPriv, 7);
    d.priv = 99;
    assert.equal(d.priv, 99);
    assert.equal(buf.attachmentCount, 2);
    s.detach();
    d.detach();
    assert.throws(() => d.priv, { code: 'EINVAL' }, 'a detached attachment is unusable');
    buf.close();
  });
});

describe('dma_buf_detach', () => {
  test("an attachment of another buffer → EINVAL, and it stays attached", () => {
    const a = testExport(1);
    const b = testExport(1);
    const att = DmaBufAttachment.attach(a, DEV);
    assert.throws(() => dmaBufDetach(b, att), { code: 'EINVAL' });
    assert.equal(a.attachmentCount, 1);
    dmaBufDetach(a, att);
    assert.equal(a.attachmentCount, 0);
    assert.throws(() => att.detach(), { code: 'EINVAL' }, 'detach twice');
    a.close();
    b.close();
  });
});

describe('map and unmap', () => {
  test('need the reservation lock (EPERM); the _unlocked forms take it', () => {
    const buf = testExport(1);
    const att = DmaBufAttachment.attach(buf, DEV);
    assert.throws(() => att.map(DMA_BIDIRECTIONAL), { code: 'EPERM' });
    const sgt = att.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.throws(() => att.unmap(sgt, DMA_BIDIRECTIONAL), { code: 'EPERM' });
    assert.equal(att.mapCount, 1);
    att.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
    assert.equal(att.mapCount, 0);
    att.detach();
    buf.close();
  });

  test('every map reaches the exporter; unmap of a table not mapped (or twice, or by another attachment) → EINVAL', () => {
    const buf = testExport(1);
    const att = DmaBufAttachment.attach(buf, DEV);
    const other = DmaBufAttachment.attach(buf, { name: 'other' });
    const a = att.mapUnlocked(DMA_TO_DEVICE);
    const b = att.mapUnlocked(DMA_TO_DEVICE);
    assert.notEqual(a, b);
    assert.equal(count(buf, 'map'), 2);
    assert.throws(() => other.unmapUnlocked(a, DMA_TO_DEVICE), { code: 'EINVAL' });
    assert.throws(() => att.unmapUnlocked({ entries: [], origNents: 0 }, DMA_TO_DEVICE), { code: 'EINVAL' });
    att.unmapUnlocked(a, DMA_TO_DEVICE);
    assert.throws(() => att.unmapUnlocked(a, DMA_TO_DEVICE), { code: 'EINVAL' });
    att.unmapUnlocked(b, DMA_TO_DEVICE);
    assert.equal(count(buf, 'unmap'), 2);
    att.detach();
    other.detach();
    buf.close();
  });

  test('an exporter returning no table → ENOMEM, and the pin of pin-on-map is undone', () => {
    const buf = testExport(1, { dynamic: true });
    const att = DmaBufAttachment.attach(buf, DEV);
    hooks(buf).map = () => null;
    assert.throws(() => att.mapUnlocked(DMA_BIDIRECTIONAL), { code: 'ENOMEM' });
    assert.equal(pins(buf), 0);
    assert.deepEqual(calls(buf).slice(-3), ['pin', 'map', 'unpin']);
    assert.equal(att.mapCount, 0);
    att.detach();
    buf.close();
  });

  test('a static importer of a dynamic exporter pins on map and unpins on unmap; a dynamic importer does not', () => {
    const buf = testExport(1, { dynamic: true });
    const s = DmaBufAttachment.attach(buf, DEV);
    const d = DmaBufAttachment.dynamicAttach(buf, DEV, { moveNotify: () => undefined });
    const st = s.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.equal(pins(buf), 1);
    const dt = d.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.equal(pins(buf), 1, 'no pin for the dynamic importer');
    s.unmapUnlocked(st, DMA_BIDIRECTIONAL);
    assert.equal(pins(buf), 0);
    d.unmapUnlocked(dt, DMA_BIDIRECTIONAL);
    assert.equal(count(buf, 'pin'), 1);
    assert.equal(count(buf, 'unpin'), 1);
    s.detach();
    d.detach();
    buf.close();
  });

  test("pin's error comes back (EBUSY) and map is not called; pin/unpin are for dynamic attachments only", () => {
    const buf = testExport(1, { dynamic: true });
    const s = DmaBufAttachment.attach(buf, DEV);
    const d = DmaBufAttachment.dynamicAttach(buf, DEV, { moveNotify: () => undefined });
    hooks(buf).pin = () => -16;
    assert.throws(() => s.mapUnlocked(DMA_BIDIRECTIONAL), { code: 'EBUSY' });
    assert.equal(count(buf, 'map'), 0);
    delete hooks(buf).pin;
    assert.throws(() => d.pin(), { code: 'EPERM' }, 'lock needed');
    buf.withLock(() => {
      assert.throws(() => s.pin(), { code: 'EINVAL' });
      d.pin();
      assert.equal(pins(buf), 1);
      d.unpin();
    });
    assert.equal(pins(buf), 0);
    s.detach();
    d.detach();
    buf.close();
  });

  test('a static importer waits for KERNEL fences (abort → EINTR, the mapping and pin undone); WRITE fences are not waited for', () => {
    const buf = testExport(1, { dynamic: true });
    const att = DmaBufAttachment.attach(buf, DEV);
    const w = driverFence();
    addFence(buf, w, DMA_RESV_USAGE_WRITE);
    const sgt = att.mapUnlocked(DMA_FROM_DEVICE, { signal: ABORTED });
    att.unmapUnlocked(sgt, DMA_FROM_DEVICE);
    const k = driverFence();
    addFence(buf, k, DMA_RESV_USAGE_KERNEL);
    const before = calls(buf).length;
    assert.throws(() => att.mapUnlocked(DMA_FROM_DEVICE, { signal: ABORTED }), { code: 'EINTR' });
    assert.deepEqual(calls(buf).slice(before), ['pin', 'map', 'unmap', 'unpin']);
    assert.equal(att.mapCount, 0);
    assert.equal(pins(buf), 0);
    k.signal();
    const again = att.mapUnlocked(DMA_FROM_DEVICE, { signal: ABORTED });
    att.unmapUnlocked(again, DMA_FROM_DEVICE);
    w.signal();
    w.put();
    k.put();
    att.detach();
    buf.close();
  });

  test('a dynamic importer does not wait for KERNEL fences', () => {
    const buf = testExport(1);
    const att = DmaBufAttachment.dynamicAttach(buf, DEV, { moveNotify: () => undefined });
    const k = driverFence();
    addFence(buf, k, DMA_RESV_USAGE_KERNEL);
    const sgt = att.mapUnlocked(DMA_FROM_DEVICE, { signal: ABORTED });
    att.unmapUnlocked(sgt, DMA_FROM_DEVICE);
    k.signal();
    k.put();
    att.detach();
    buf.close();
  });
});

describe('sg tables under device constraints', () => {
  function checkTable(sgt: SgTable, size: number, maxSeg: number, boundary: number): void {
    assert.equal(sgTableBytes(sgt), size);
    let next = sgt.entries[0]!.dmaAddress;
    for (const e of sgt.entries) {
      assert.equal(e.dmaAddress, next, 'entries follow each other');
      assert.ok(e.length <= maxSeg, `entry of ${e.length} bytes longer than ${maxSeg}`);
      assert.equal(Math.floor(e.dmaAddress / boundary), Math.floor((e.dmaAddress + e.length - 1) / boundary), 'crosses a boundary');
      assert.equal(e.page * PAGE_SIZE + e.offset, e.dmaAddress);
      next += e.length;
    }
  }

  test('the default device gets one entry per extent (up to 64 KiB); the bytes are the buffer', () => {
    const buf = testExport(4);
    const att = DmaBufAttachment.attach(buf, DEV);
    const sgt = att.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.equal(sgt.entries.length, 1);
    assert.equal(sgt.origNents, 1);
    assert.equal(sgt.entries[0]!.dmaAddress, firstPage(buf) * PAGE_SIZE);
    checkTable(sgt, 4 * PAGE_SIZE, 65536, 2 ** 32);
    sgEntryBytes(sgt.entries[0]!)[PAGE_SIZE + 1] = 5;
    const view = buf.mmap(1, 1);
    assert.equal(view[1], 5, 'the device wrote the buffer');
    buf.munmap(view);
    att.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
    att.detach();
    buf.close();
  });

  test('maxSegmentSize and segmentBoundaryMask split entries', () => {
    const buf = testExport(8);
    const seg = DmaBufAttachment.attach(buf, { name: 'seg', maxSegmentSize: PAGE_SIZE });
    const t1 = seg.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.equal(t1.entries.length, 8);
    checkTable(t1, 8 * PAGE_SIZE, PAGE_SIZE, 2 ** 32);
    const bnd = DmaBufAttachment.attach(buf, { name: 'bnd', segmentBoundaryMask: 3 * PAGE_SIZE - 1 + PAGE_SIZE });
    const t2 = bnd.mapUnlocked(DMA_BIDIRECTIONAL);
    checkTable(t2, 8 * PAGE_SIZE, 65536, 4 * PAGE_SIZE);
    assert.ok(t2.entries.length >= 2);
    seg.unmapUnlocked(t1, DMA_BIDIRECTIONAL);
    bnd.unmapUnlocked(t2, DMA_BIDIRECTIONAL);
    seg.detach();
    bnd.detach();
    buf.close();
  });

  test('pages beyond the DMA mask → EIO, and pin-on-map is undone', () => {
    const buf = testExport(2, { dynamic: true });
    const att = DmaBufAttachment.attach(buf, { name: 'tiny', dmaMaskBits: 12 });
    assert.throws(() => att.mapUnlocked(DMA_BIDIRECTIONAL), { code: 'EIO' });
    assert.equal(pins(buf), 0);
    assert.equal(att.mapCount, 0);
    att.detach();
    buf.close();
  });
});

describe('move notification (same thread)', () => {
  test('dynamic importers are told at once, with the lock held; static ones are not; new maps see the new pages', () => {
    const buf = testExport(2, { dynamic: true });
    const ops = recorder(buf);
    const d = DmaBufAttachment.dynamicAttach(buf, DEV, ops);
    const s = DmaBufAttachment.attach(buf, { name: 'static' });
    const old = d.mapUnlocked(DMA_BIDIRECTIONAL);
    sgEntryBytes(old.entries[0]!)[10] = 33;
    const page = firstPage(buf);
    buf.withLock(() => testMove(buf));
    assert.deepEqual(ops.seen, [true], 'called once, lock held');
    assert.notEqual(firstPage(buf), page);
    const fresh = d.mapUnlocked(DMA_BIDIRECTIONAL);
    assert.equal(fresh.entries[0]!.dmaAddress, firstPage(buf) * PAGE_SIZE);
    assert.equal(sgEntryBytes(fresh.entries[0]!)[10], 33, 'the bytes moved with the buffer');
    d.unmapUnlocked(old, DMA_BIDIRECTIONAL);
    d.unmapUnlocked(fresh, DMA_BIDIRECTIONAL);
    assert.deepEqual(ops.seen, [true], 'no repeat on a later map');
    d.detach();
    s.detach();
    buf.close();
  });

  test('dmaBufMoveNotify needs the lock (EPERM); a pinned buffer does not move', () => {
    const buf = testExport(1, { dynamic: true });
    const ops = recorder(buf);
    const d = DmaBufAttachment.dynamicAttach(buf, DEV, ops);
    assert.throws(() => dmaBufMoveNotify(buf), { code: 'EPERM' });
    buf.withLock(() => {
      d.pin();
      assert.throws(() => testMove(buf), { code: 'EBUSY' });
      d.unpin();
    });
    assert.deepEqual(ops.seen, []);
    d.detach();
    buf.close();
  });

  test('a detached importer is not told', () => {
    const buf = testExport(1, { dynamic: true });
    const ops = recorder(buf);
    const d = DmaBufAttachment.dynamicAttach(buf, DEV, ops);
    d.detach();
    buf.withLock(() => testMove(buf));
    assert.deepEqual(ops.seen, []);
    buf.close();
  });
});

describe('coherency extension', () => {
  test('requireCoherent refuses (EPERM) a non-coherent device, now or later; dmaBufIsCoherent answers', () => {
    const buf = testExport(1);
    assert.equal(dmaBufIsCoherent(buf), true, 'nothing attached');
    const nc = DmaBufAttachment.attach(buf, { name: 'nc', coherent: false });
    assert.equal(dmaBufIsCoherent(buf), false);
    assert.throws(() => DmaBufAttachment.attach(buf, DEV, { requireCoherent: true }), { code: 'EPERM' }, 'one already attached is not');
    nc.detach();
    assert.throws(() => DmaBufAttachment.attach(buf, { name: 'nc', coherent: false }, { requireCoherent: true }), { code: 'EPERM' });
    const req = DmaBufAttachment.attach(buf, DEV, { requireCoherent: true });
    assert.throws(() => DmaBufAttachment.attach(buf, { name: 'nc', coherent: false }), { code: 'EPERM' }, 'refused while it stays');
    assert.deepEqual(calls(buf).filter((c) => c === 'detach').length, calls(buf).filter((c) => c === 'attach').length - 1,
      'a refused attach is detached from the exporter again');
    assert.equal(buf.attachmentCount, 1);
    req.detach();
    const later = DmaBufAttachment.attach(buf, { name: 'nc', coherent: false });
    later.detach();
    buf.close();
  });
});

describe('beginAccess/endAccess (opt-in exporter ops)', () => {
  test('reach the exporter for a mapped table; errors come back; unmapped table → EINVAL; lock held → EDEADLK', () => {
    const buf = testExport(1);
    const att = DmaBufAttachment.attach(buf, DEV);
    const sgt = att.mapUnlocked(DMA_BIDIRECTIONAL);
    att.beginAccess(sgt, DMA_BIDIRECTIONAL);
    att.endAccess(sgt, DMA_BIDIRECTIONAL);
    assert.deepEqual(calls(buf).slice(-2), ['beginAccess', 'endAccess']);
    hooks(buf).beginAccess = () => -5;
    assert.throws(() => att.beginAccess(sgt, DMA_BIDIRECTIONAL), { code: 'EIO' });
    buf.withLock(() => assert.throws(() => att.endAccess(sgt, DMA_BIDIRECTIONAL), { code: 'EDEADLK' }));
    att.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
    assert.throws(() => att.beginAccess(sgt, DMA_BIDIRECTIONAL), { code: 'EINVAL' });
    att.detach();
    buf.close();
  });

  test('an exporter without the ops: nothing to do', () => {
    const buf = DmaBuf.export({
      ops: { name: 'test_exporter_noaccess', mapDmaBuf: () => ({ entries: [], origNents: 0 }), unmapDmaBuf: () => undefined, release: () => undefined },
      priv: 1, size: PAGE_SIZE,
    });
    const att = DmaBufAttachment.attach(buf, DEV);
    const sgt = att.mapUnlocked(DMA_BIDIRECTIONAL);
    att.beginAccess(sgt, DMA_BIDIRECTIONAL);
    att.endAccess(sgt, DMA_BIDIRECTIONAL);
    att.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
    att.detach();
    buf.close();
  });
});
