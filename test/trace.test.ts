/**
 * Tracepoints (src/trace.ts): off by default and per thread; dma_fence_init,
 * _signaled and _wait_start/_end with the fence's identity, for blocking and
 * promise waits; the buffer events (dma_buf_add_fence, dma_buf_wait_*) with the
 * buffer's inode on CPU-access and map waits; a real worker signalling what
 * this thread waits on; the bounded buffer and its drop count.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { threadId } from 'node:worker_threads';
import * as U from 'dmabuf/uapi';
import {
  DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_RESV_USAGE_KERNEL, DmaBufAttachment, DmaFence, SwSyncTimeline,
  TRACE_DEFAULT_CAPACITY, traceDisable, traceEnable, traceIsEnabled, traceTake, type TraceEvent, type TraceLog,
} from 'dmabuf';
import { testExport } from './support/exporter.js';
import { driverFence, ops } from './support/fences.js';
import { installLeakCheck } from './support/leaks.js';
import { gate, RpcClient, type Gate } from './support/worker-rpc.js';
import type { Command } from './workers/trace-worker.js';

installLeakCheck('no objects leaked by the tracepoint tests');

afterEach(() => {
  traceDisable();
  traceTake();
});

const names = (events: readonly TraceEvent[]): string[] => events.map((e) => e.name);

function worker(): RpcClient<Command & Gate> {
  return new RpcClient<Command & Gate>(new URL('./workers/trace-worker.js', import.meta.url), { callGuardMs: 20_000 });
}

/** A heap buffer fd of one page and its inode number (fdinfo's `ino`). */
function heapBuffer(): { fd: number; ino: number } {
  const heap = U.open('/dev/dma_heap/system');
  const data = { len: 4096, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
  U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
  U.close(heap);
  const ino = Number(/^ino:\t(\d+)$/m.exec(U.readFile(`/proc/self/fdinfo/${data.fd}`))![1]);
  return { fd: data.fd, ino };
}

describe('the switch', () => {
  test('off by default: fence work records nothing', () => {
    assert.equal(traceIsEnabled(), false);
    const f = driverFence();
    f.signal();
    f.waitTimeout(0);
    f.put();
    assert.deepEqual(traceTake(), { tid: threadId, events: [], dropped: 0 });
  });

  test('traceDisable stops recording and keeps what was recorded until traceTake', () => {
    traceEnable();
    assert.equal(traceIsEnabled(), true);
    driverFence().put();
    traceDisable();
    driverFence().put();
    assert.deepEqual(names(traceTake().events), ['dma_fence_init']);
    assert.deepEqual(traceTake().events, []);
  });

  test('a bad capacity is EINVAL and changes nothing', () => {
    for (const capacity of [0, -1, 1.5, NaN, Infinity]) {
      assert.throws(() => traceEnable({ capacity }), { code: 'EINVAL' }, String(capacity));
      assert.equal(traceIsEnabled(), false);
    }
    traceEnable({ capacity: 2 });
    assert.throws(() => traceEnable({ capacity: 0 }), { code: 'EINVAL' });
    for (let i = 0; i < 3; i++) driverFence().put();
    assert.equal(traceTake().events.length, 2, 'the capacity set before the bad call still holds');
  });

  test('a full buffer drops later events and counts them; traceTake starts an empty one', () => {
    traceEnable({ capacity: 3 });
    const fences = Array.from({ length: 5 }, (_, i) => driverFence(i + 1));
    const log = traceTake();
    assert.equal(log.events.length, 3);
    assert.equal(log.dropped, 2);
    assert.deepEqual(log.events.map((e) => e.fence!.seqno), [1, 2, 3], 'the first events are kept');
    for (const f of fences) f.signal();
    const next = traceTake();
    assert.deepEqual([next.events.length, next.dropped], [3, 2]);
    for (const f of fences) f.put();
    assert.equal(TRACE_DEFAULT_CAPACITY, 65536);
  });
});

describe('fence events', () => {
  test('init, signal and a blocking wait: the fence identity, this thread, ordered timestamps, the wait result', () => {
    traceEnable();
    const before = (performance.timeOrigin + performance.now()) * 1000;
    const f = DmaFence.init(ops, 77n, 5);
    f.signal();
    assert.equal(f.waitTimeout(100), 100);
    f.put();
    const after = (performance.timeOrigin + performance.now()) * 1000;
    const { events } = traceTake();
    assert.deepEqual(names(events), ['dma_fence_init', 'dma_fence_signaled', 'dma_fence_wait_start', 'dma_fence_wait_end']);
    for (const e of events) {
      assert.deepEqual(e.fence, { context: 77, seqno: 5, driver: 'test', timeline: 'tl' });
      assert.equal(e.tid, threadId);
      assert.ok(e.ts >= before && e.ts <= after, 'µs since the epoch, within the test');
    }
    for (let i = 1; i < events.length; i++) assert.ok(events[i]!.ts >= events[i - 1]!.ts);
    assert.equal(events[3]!.ret, 100);
  });

  test('a wait that times out records its end with ret 0', () => {
    const f = driverFence();
    traceEnable();
    assert.equal(f.waitTimeout(0), 0);
    f.put();
    const { events } = traceTake();
    assert.deepEqual(names(events), ['dma_fence_wait_start', 'dma_fence_wait_end']);
    assert.equal(events[1]!.ret, 0);
  });

  test('a promise wait records its start at the call and its end when it settles, after the signal', async () => {
    const tl = SwSyncTimeline.create('trace-tl');
    traceEnable();
    const pt = tl.createFence(1);
    const pending = pt.waitTimeoutAsync(20_000);
    assert.deepEqual(names(traceTake().events), ['dma_fence_init', 'dma_fence_wait_start']);
    tl.inc(1);
    assert.ok((await pending) > 0);
    const { events } = traceTake();
    assert.deepEqual(names(events), ['dma_fence_signaled', 'dma_fence_wait_end']);
    assert.deepEqual(events[0]!.fence, { context: Number(tl.context), seqno: 1, driver: 'sw_sync', timeline: 'trace-tl' });
    assert.ok(events[1]!.ret! > 0);
    pt.put();
    tl.close();
  });

  test('poll(2) on one pending sync_file waits on its fence: start and end, ret 0 on timeout', () => {
    const tl = U.open('/dev/sw_sync');
    const pt = { value: 1, name: 'p', fence: -1 };
    U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, pt);
    traceEnable();
    assert.equal(U.poll([{ fd: pt.fence, events: U.POLLIN }], 1), 0);
    const { events } = traceTake();
    assert.deepEqual(names(events), ['dma_fence_wait_start', 'dma_fence_wait_end']);
    assert.deepEqual([events[1]!.fence!.seqno, events[1]!.fence!.driver, events[1]!.ret], [1, 'sw_sync', 0]);
    U.close(pt.fence);
    U.close(tl);
  });

  test('a fence moving into the shared table records no second signal', () => {
    traceEnable();
    const f = driverFence();
    f.signal();
    void f.slot; // gives it a slot
    assert.deepEqual(names(traceTake().events), ['dma_fence_init', 'dma_fence_signaled']);
    f.put();
  });
});

describe('with a real worker', () => {
  test('tracing is per thread: a worker records only once it enables it itself', async () => {
    traceEnable();
    const w = worker();
    try {
      assert.equal(await w.call({ op: 'enabled' }), false);
      const tl = U.open('/dev/sw_sync');
      const pt = { value: 1, name: 'p', fence: -1 };
      U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, pt);
      const [wfd] = await w.call<number[]>({ op: 'receive', packet: U.sendFds([tl]) });
      await w.call({ op: 'inc', fd: wfd! });
      const theirs = await w.call<TraceLog>({ op: 'take' });
      assert.deepEqual(theirs.events, []);
      assert.deepEqual(names(traceTake().events), ['dma_fence_init'], 'the signal happened in the worker, not here');
      U.close(pt.fence);
      U.close(tl);
    } finally {
      await w.stop();
    }
  });

  test('a worker signals what a CPU-access wait here blocks on: buffer and fence events on both sides', async () => {
    const w = worker();
    try {
      await w.call({ op: 'enable' });
      traceEnable();
      const { fd: buf, ino } = heapBuffer();
      const tl = U.open('/dev/sw_sync');
      const pt = { value: 1, name: 'frame', fence: -1 };
      U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, pt);
      U.ioctl(buf, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_WRITE, fd: pt.fence });
      const [wfd] = await w.call<number[]>({ op: 'receive', packet: U.sendFds([tl]) });
      const g = gate();
      // The delay lets this thread block first, as a rule; the checks hold either way.
      const signalled = w.call({ op: 'inc', fd: wfd!, gate: g.sab, delayMs: 50 });
      g.open();
      U.ioctl(buf, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_READ }); // blocks until the worker's inc
      U.ioctl(buf, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_READ });
      await signalled;
      const mine = traceTake().events;
      const theirs = await w.call<TraceLog>({ op: 'take' });

      const buffer = { ino, name: null, expName: 'system' };
      const init = mine.find((e) => e.name === 'dma_fence_init')!;
      const fence = init.fence!;
      assert.equal(fence.driver, 'sw_sync');
      const seen = names(mine.filter((e) => e.name !== 'dma_fence_init'));
      // The fence wait nests in the buffer wait, unless the worker signalled before this thread looked.
      const nested = seen.length === 5;
      assert.deepEqual(seen, ['dma_buf_add_fence', 'dma_buf_wait_start',
        ...(nested ? ['dma_fence_wait_start', 'dma_fence_wait_end'] : []), 'dma_buf_wait_end']);
      if (nested) assert.deepEqual(mine.find((e) => e.name === 'dma_fence_wait_start')!.fence, fence);
      const add = mine.find((e) => e.name === 'dma_buf_add_fence')!;
      assert.deepEqual([add.buffer, add.fence, add.usage], [buffer, fence, 'write']);
      const start = mine.find((e) => e.name === 'dma_buf_wait_start')!;
      const end = mine.find((e) => e.name === 'dma_buf_wait_end')!;
      assert.deepEqual([start.buffer, start.usage, start.op], [buffer, 'write', 'begin_cpu_access']);
      assert.deepEqual([end.buffer, end.usage, end.op], [buffer, 'write', 'begin_cpu_access']);
      assert.ok(end.ret! > 0);
      for (const e of mine) assert.equal(e.tid, threadId);

      assert.deepEqual(names(theirs.events), ['dma_fence_signaled']);
      assert.deepEqual(theirs.events[0]!.fence, fence, 'the same fence, signalled there');
      assert.equal(theirs.events[0]!.tid, w.worker.threadId);
      assert.equal(theirs.tid, w.worker.threadId);
      assert.ok(theirs.events[0]!.ts > init.ts, 'timestamps compare across threads');
      U.close(pt.fence);
      U.close(tl);
      U.close(buf);
    } finally {
      await w.stop();
    }
  });
});

describe('buffer events', () => {
  test('a promise CPU-access wait records the buffer; a write waits for readers (usage read)', async () => {
    const buf = testExport(1);
    const tl = SwSyncTimeline.create('reader');
    const pt = tl.createFence(1);
    buf.withLock((l) => {
      l.reserveFences(1);
      l.addFence(pt, 1 /* WRITE */);
    });
    traceEnable();
    const access = buf.beginCpuAccessAsync(DMA_BIDIRECTIONAL);
    tl.inc(1);
    await access;
    buf.endCpuAccess(DMA_BIDIRECTIONAL);
    const { events } = traceTake();
    const ino = buf.traceBuffer().ino;
    assert.deepEqual(names(events), [
      'dma_buf_wait_start', 'dma_fence_wait_start', 'dma_fence_signaled', 'dma_fence_wait_end', 'dma_buf_wait_end',
    ]);
    assert.deepEqual([events[0]!.buffer!.ino, events[0]!.usage, events[0]!.op], [ino, 'read', 'begin_cpu_access']);
    assert.ok(events[4]!.ret! > 0);
    pt.put();
    tl.close();
    buf.close();
  });

  test('a static importer\'s map waits for KERNEL fences: op map_attachment, usage kernel', () => {
    const buf = testExport(1);
    const att = DmaBufAttachment.attach(buf, { name: 'dev' });
    const f = driverFence();
    f.signal();
    buf.withLock((l) => {
      l.reserveFences(1);
      l.addFence(f, DMA_RESV_USAGE_KERNEL);
    });
    traceEnable();
    const sgt = att.mapUnlocked(DMA_FROM_DEVICE);
    const { events } = traceTake();
    assert.deepEqual(names(events), ['dma_buf_wait_start', 'dma_buf_wait_end'], 'a signalled fence is not waited on');
    assert.deepEqual([events[0]!.op, events[0]!.usage, events[0]!.buffer!.ino], ['map_attachment', 'kernel', buf.traceBuffer().ino]);
    att.unmapUnlocked(sgt, DMA_FROM_DEVICE);
    att.detach();
    f.put();
    buf.close();
  });

  test('a named buffer carries its name', () => {
    const { fd } = heapBuffer();
    U.ioctl(fd, U.DMA_BUF_SET_NAME_B, 'frames');
    traceEnable();
    U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_WRITE });
    const { events } = traceTake();
    assert.deepEqual(events.map((e) => e.buffer?.name), ['frames', 'frames']);
    U.close(fd);
  });
});
