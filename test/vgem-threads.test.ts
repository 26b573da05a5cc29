/**
 * vgem across threads: a worker with its own DRM file imports a buffer the main
 * thread created (PRIME fd + sendFds) and fences it; the main thread's
 * DMA_BUF_IOCTL_SYNC START blocks until the worker signals, or until the worker
 * closes its DRM file. The worker acts behind a gate the main thread opens just
 * before it blocks; what the main thread reads after the wait proves the order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { arenaStats } from 'dmabuf';
import { HANG_GUARD_MS } from './support/async.js';
import { installFdCleanup, track } from './support/fds.js';
import { installLeakCheck, Refs } from './support/leaks.js';
import { gate, RpcClient, type Gate } from './support/worker-rpc.js';
import type { Command } from './workers/vgem-worker.js';

installFdCleanup();
installLeakCheck('vgem thread tests leave no objects behind');

class VgemWorker extends RpcClient<Command & Gate> {
  constructor() {
    super(new URL('./workers/vgem-worker.js', import.meta.url), { callGuardMs: HANG_GUARD_MS });
  }
}

function usedPages(): number {
  const s = arenaStats();
  return s.grownPages - s.freePages;
}

/** A one-page dumb buffer of a new DRM file, exported: [card, handle, dma-buf fd]. */
function sharedBuffer(): [number, number, number] {
  const card = track(U.open('/dev/dri/card0'));
  const d = { height: 1, width: 1024, bpp: 32, flags: 0, handle: 0, pitch: 0, size: 0 };
  U.ioctl(card, U.DRM_IOCTL_MODE_CREATE_DUMB, d);
  const p = { handle: d.handle, flags: U.DRM_RDWR, fd: -1 };
  U.ioctl(card, U.DRM_IOCTL_PRIME_HANDLE_TO_FD, p);
  return [card, d.handle, track(p.fd)];
}

function syncStart(buf: number): void {
  assert.equal(U.ioctl(buf, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_RW }), 0);
}

function syncEnd(buf: number): void {
  assert.equal(U.ioctl(buf, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_RW }), 0);
}

test("a worker's vgem WRITE fence holds the main thread's SYNC START until the worker has written and signalled", async (t) => {
  const pages = usedPages();
  const refs = new Refs(t);
  const w = refs.worker(new VgemWorker());
  const [, , buf] = sharedBuffer();
  const view = U.mmap(U.PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, buf, 0);
  assert.equal(await w.call<number>({ op: 'import', packet: U.sendFds([buf]) }), 1, 'a new handle in the worker\'s file');
  const fence = await w.call<number>({ op: 'attach', write: true });
  const fds = [{ fd: buf, events: U.POLLIN, revents: 0 }];
  assert.equal(U.poll(fds, 0), 0, 'the worker\'s write fence is pending here');
  const g = gate();
  const done = w.call({ op: 'fillAndSignal', fence, value: 0xab, gate: g.sab, delayMs: 20 });
  g.open();
  syncStart(buf); // blocks this thread until the worker signals
  assert.ok(view.every((x) => x === 0xab), 'every byte the worker wrote before signalling is seen after the wait');
  syncEnd(buf);
  assert.equal(await done, 0);
  U.munmap(view);
  await w.call({ op: 'closeCard' });
  await w.call({ op: 'closeBuffer' });
  t.after(() => assert.equal(usedPages(), pages));
});

test('closing the DRM file in the worker signals the fences the main thread is waiting on', async (t) => {
  const refs = new Refs(t);
  const w = refs.worker(new VgemWorker());
  const [card, handle, buf] = sharedBuffer();
  await w.call({ op: 'import', packet: U.sendFds([buf]) });
  await w.call({ op: 'attach', write: false });
  await w.call({ op: 'attach', write: false });
  const fds = [{ fd: buf, events: U.POLLOUT, revents: 0 }];
  assert.equal(U.poll(fds, 0), 0, 'two reader fences block a writer');
  const g = gate();
  const closed = w.call({ op: 'closeCard', gate: g.sab, delayMs: 20 });
  g.open();
  syncStart(buf); // a read-write access waits for the readers: released by the worker's close
  syncEnd(buf);
  await closed;
  assert.equal(U.poll(fds, 0), 1);
  const a = { handle, flags: U.VGEM_FENCE_WRITE, out_fence: -1, pad: 0 };
  assert.equal(U.ioctl(card, U.DRM_IOCTL_VGEM_FENCE_ATTACH, a), 0, 'no conflict is left');
  assert.equal(U.ioctl(card, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: a.out_fence, flags: 0 }), 0);
  await w.call({ op: 'closeBuffer' });
});

test("a terminated worker's DRM file is closed by the reaper: its fences signal", async (t) => {
  const refs = new Refs(t);
  const w = refs.worker(new VgemWorker());
  const [, , buf] = sharedBuffer();
  await w.call({ op: 'import', packet: U.sendFds([buf]) });
  await w.call({ op: 'attach', write: true });
  const fds = [{ fd: buf, events: U.POLLIN, revents: 0 }];
  assert.equal(U.poll(fds, 0), 0);
  await w.terminate();
  assert.equal(await U.pollAsync(fds, HANG_GUARD_MS), 1, 'the fence signalled when the dead worker\'s fds were closed');
});
