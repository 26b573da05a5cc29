/**
 * The worker of test/system-heap-threads.test.ts: it loads only `dmabuf/uapi`,
 * receives one heap buffer's fd, maps it, writes byte 0, unmaps, closes, and
 * answers `{ ok: true }` or `{ ok: false, code, message }`.
 */
import { parentPort } from 'node:worker_threads';
import * as U from 'dmabuf/uapi';

parentPort!.once('message', (m: { packet: U.FdPacket; size: number; value: number }) => {
  try {
    const [fd] = U.receiveFds(m.packet) as [number];
    try {
      const view = U.mmap(m.size, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
      view[0] = m.value;
      U.munmap(view);
    } finally {
      U.close(fd);
    }
    parentPort!.postMessage({ ok: true });
  } catch (e) {
    parentPort!.postMessage({ ok: false, code: (e as { code?: string }).code, message: String(e) });
  }
  parentPort!.close();
});
