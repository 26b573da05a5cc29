/**
 * The system heap across threads: a buffer allocated in one thread is mapped in
 * a worker that never exported anything (its ops are registered wherever dmabuf
 * is loaded, not only by the exporting thread).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import * as U from 'dmabuf/uapi';

test('a worker mmaps a system-heap buffer allocated in the main thread', async () => {
  const size = 64 * 1024;
  const heap = U.open('/dev/dma_heap/system', U.O_RDWR | U.O_CLOEXEC);
  const data = { len: size, fd: 0, fd_flags: U.O_RDWR | U.O_CLOEXEC, heap_flags: 0 };
  U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
  U.close(heap);
  const view = U.mmap(size, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, data.fd, 0);
  const worker = new Worker(new URL('./workers/heap-map-worker.js', import.meta.url));
  try {
    worker.postMessage({ packet: U.sendFds([data.fd]), size, value: 0x5a });
    const [reply] = (await once(worker, 'message')) as [{ ok: boolean; code?: string; message?: string }];
    assert.deepEqual(reply, { ok: true });
    assert.equal(view[0], 0x5a, 'the worker wrote through its own mapping');
  } finally {
    U.munmap(view);
    U.close(data.fd);
    await once(worker, 'exit');
  }
});
