/**
 * dma-bufs across worker_threads: the same bytes through fds sent with sendFds, a
 * worker's write fence ordering main's CPU access, bufinfo of every thread, move
 * notification delivered in the importer's thread, and a terminated worker's
 * buffers, mappings and attachments released.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { arenaStats, DmaBufAttachment, PAGE_SIZE } from 'dmabuf';
import { closeAll, installFdCleanup, track } from './support/fds.js';
import { testExport, testMove } from './support/exporter.js';
import { pollLiveObjects, stubBaseline } from './support/leaks.js';
import { RpcClient, type Gate } from './support/worker-rpc.js';
import type { Command, MoveEvent } from './workers/dma-buf-worker.js';

const BUFINFO = '/sys/kernel/debug/dma_buf/bufinfo';
const BASE = stubBaseline();
const workers = new Set<BufWorker>();

installFdCleanup();
afterEach(async () => {
  for (const w of workers) await w.terminate();
  workers.clear();
});

class BufWorker extends RpcClient<Command & Gate, MoveEvent> {
  constructor() {
    super(new URL('./workers/dma-buf-worker.js', import.meta.url), { callGuardMs: 20_000, eventGuardMs: 20_000 });
    workers.add(this);
  }

  async receive(fd: number): Promise<number> {
    const [wfd] = await this.call<number[]>({ op: 'receive', packet: U.sendFds([fd]) });
    return wfd!;
  }

  async fetch(fd: number): Promise<number> {
    return track(U.receiveFds(await this.call<U.FdPacket>({ op: 'send', fds: [fd] }))[0]!);
  }
}

function heapBuf(len: number): number {
  const heap = U.open('/dev/dma_heap/system');
  const data = { len, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
  U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
  U.close(heap);
  return track(data.fd);
}

function bufferCount(): number {
  return Number(/Total (\d+) objects/.exec(U.readFile(BUFINFO))![1]);
}

describe('dma-bufs across threads', () => {
  test('a buffer fd sent to a worker maps the same bytes there, both ways', async () => {
    const w = new BufWorker();
    const fd = heapBuf(2 * PAGE_SIZE);
    const view = U.mmap(2 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
    view[PAGE_SIZE + 9] = 201;
    const wfd = await w.receive(fd);
    const map = await w.call<number>({ op: 'map', fd: wfd });
    assert.equal(await w.call({ op: 'read', map, at: PAGE_SIZE + 9 }), 201);
    await w.call({ op: 'write', map, at: 3, value: 77 });
    assert.equal(view[3], 77);
    U.munmap(view);
    await w.call({ op: 'release' });
  });

  test("a worker's write fence makes main's SYNC START wait until the worker signals", async () => {
    const w = new BufWorker();
    const fd = heapBuf(PAGE_SIZE);
    const view = U.mmap(PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
    const wfd = await w.receive(fd);
    const map = await w.call<number>({ op: 'map', fd: wfd });
    const tl = await w.call<number>({ op: 'importWriteFence', fd: wfd });
    const p = [{ fd, events: U.POLLIN, revents: 0 }];
    assert.equal(U.poll(p, 0), 0, 'the worker is writing');
    // The worker writes, then signals; its delay only makes a broken wait visible.
    const done = w.call({ op: 'writeAndSignal', map, at: 0, value: 123, tl, delayMs: 50 });
    assert.equal(U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_READ | U.DMA_BUF_SYNC_START }), 0);
    assert.equal(view[0], 123, "SYNC START returned only after the worker's write");
    await done;
    U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_READ | U.DMA_BUF_SYNC_END });
    U.munmap(view);
    await w.call({ op: 'release' });
  });

  test("bufinfo in main lists a worker's buffers and attachments; none once the fds are closed and the worker exited", async () => {
    const before = bufferCount();
    const w = new BufWorker();
    const wfd = await w.call<number>({ op: 'alloc', len: 3 * PAGE_SIZE });
    await w.call({ op: 'attach', fd: wfd, name: 'worker-gpu' });
    const text = U.readFile(BUFINFO);
    assert.equal(bufferCount(), before + 1);
    assert.match(text, /^00012288\t00000002\t00080007\t\d{8}\tsystem\t\d{8,}\t<none>\n\tAttached Devices:\n\tworker-gpu\nTotal 1 devices attached\n/m);
    await w.call({ op: 'release' });
    await w.stop();
    workers.delete(w);
    assert.equal(bufferCount(), before);
    assert.doesNotMatch(U.readFile(BUFINFO), /worker-gpu/);
  });

  test('a worker terminated while holding a buffer, a mapping and an attachment releases everything', async () => {
    const baseline = stubBaseline();
    const freeBefore = arenaStats().freePages;
    const listed = bufferCount();
    const w = new BufWorker();
    const wfd = await w.call<number>({ op: 'alloc', len: 4 * PAGE_SIZE });
    await w.call({ op: 'map', fd: wfd });
    await w.call({ op: 'attach', fd: wfd, name: 'doomed' });
    const fd = await w.fetch(wfd); // main holds it too, then lets go after the worker is gone
    assert.ok(arenaStats().freePages < freeBefore);
    await w.terminate();
    workers.delete(w);
    assert.equal(bufferCount(), listed + 1, 'main still holds it');
    assert.doesNotMatch(U.readFile(BUFINFO), /doomed/, 'the attachment went with the worker');
    closeAll(fd);
    assert.equal(await pollLiveObjects(baseline), baseline);
    assert.equal(arenaStats().freePages, freeBefore);
    assert.equal(bufferCount(), listed);
  });

  test("moveNotify of an importer in a worker runs in the worker's event loop, with the lock held", async () => {
    const w = new BufWorker();
    const buf = testExport(1, { dynamic: true });
    const fd = track(U.dmaBufFd(buf.get()));
    const wfd = await w.receive(fd);
    await w.call({ op: 'attach', fd: wfd, name: 'mover', dynamic: true });
    const local = DmaBufAttachment.attach(buf, { name: 'static' });
    buf.withLock(() => testMove(buf));
    const ev = await w.event((e) => e.event === 'move');
    assert.equal(ev.seenLocked, true);
    assert.equal(w.unclaimedEvents.length, 0, 'told once');
    local.detach();
    await w.call({ op: 'release' });
    buf.close();
  });

  test('liveObjects is unchanged by this file', async () => {
    assert.equal(await pollLiveObjects(BASE), BASE);
  });
});
