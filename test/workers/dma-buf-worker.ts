/**
 * The worker of the dma-buf thread tests: receives buffer fds, maps them, writes
 * and reads their bytes, imports sw_sync write fences, allocates and attaches.
 * Everything it holds is dropped only by `release`, or by its exit/termination.
 */
import * as U from 'dmabuf/uapi';
import { DmaBufAttachment, type DmaBuf } from 'dmabuf';
import '../support/exporter.js';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

export type Command =
  | { op: 'receive'; packet: U.FdPacket }
  | { op: 'send'; fds: number[] }
  | { op: 'alloc'; len: number }
  | { op: 'map'; fd: number }
  | { op: 'read'; map: number; at: number }
  | { op: 'write'; map: number; at: number; value: number }
  | { op: 'importWriteFence'; fd: number }
  | { op: 'writeAndSignal'; map: number; at: number; value: number; tl: number }
  | { op: 'attach'; fd: number; name: string; dynamic?: boolean }
  | { op: 'release' }
  | { op: 'exit' };

export type Request = Command & Gate & { req: number };
export interface MoveEvent {
  kind: 'event';
  event: 'move';
  seenLocked: boolean;
}

const maps: Uint8Array[] = [];
const fds: number[] = [];
const held: Array<{ buf: DmaBuf; att: DmaBufAttachment }> = [];

function run(m: Request, emit: (e: MoveEvent) => void): unknown {
  passGate(m);
  switch (m.op) {
    case 'receive': {
      const got = U.receiveFds(m.packet);
      fds.push(...got);
      return got;
    }
    case 'send':
      return U.sendFds(m.fds);
    case 'alloc': {
      const heap = U.open('/dev/dma_heap/system');
      const data = { len: m.len, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
      U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
      U.close(heap);
      fds.push(data.fd);
      return data.fd;
    }
    case 'map': {
      const size = Number(/^size:\t(\d+)$/m.exec(U.readFile(`/proc/self/fdinfo/${m.fd}`))![1]);
      maps.push(U.mmap(size, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, m.fd, 0));
      return maps.length - 1;
    }
    case 'read':
      return maps[m.map]![m.at];
    case 'write':
      maps[m.map]![m.at] = m.value;
      return undefined;
    case 'importWriteFence': {
      const tl = U.open('/dev/sw_sync');
      const data = { value: 1, name: 'worker-write', fence: -1 };
      U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, data);
      U.ioctl(m.fd, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_WRITE, fd: data.fence });
      U.close(data.fence);
      fds.push(tl);
      return tl;
    }
    case 'writeAndSignal':
      maps[m.map]![m.at] = m.value;
      return U.ioctl(m.tl, U.SW_SYNC_IOC_INC, 1);
    case 'attach': {
      const buf = U.dmaBufGet(m.fd);
      const att = m.dynamic
        ? DmaBufAttachment.dynamicAttach(buf, { name: m.name }, {
          moveNotify: () => emit({ kind: 'event', event: 'move', seenLocked: buf.resv.mutex.isHeldByMe() }),
        })
        : DmaBufAttachment.attach(buf, { name: m.name });
      held.push({ buf, att });
      return undefined;
    }
    case 'release':
      for (const v of maps.splice(0)) U.munmap(v);
      for (const h of held.splice(0)) {
        h.att.detach();
        h.buf.close();
      }
      for (const fd of fds.splice(0)) U.close(fd);
      return undefined;
    case 'exit':
      process.exit(0);
  }
}

serve<Request, MoveEvent>(run);
