/**
 * The worker of the heap tests: allocates from a heap through the uapi, writes
 * bytes through mmap, sends and closes fds, and reports the contiguous area as it
 * sees it. Driven by `Request`s (test/support/worker-rpc.ts); a request may carry
 * a gate so that several workers start their allocation together.
 */
import * as U from 'dmabuf/uapi';
import { cmaStats, type CmaStats } from 'dmabuf';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

export type Command =
  | { op: 'alloc'; heap: string; len: number }
  | { op: 'fill'; fd: number; len: number; byte: number }
  | { op: 'send'; fds: number[] }
  | { op: 'receive'; packet: U.FdPacket }
  | { op: 'close'; fds: number[] }
  | { op: 'stats' }
  | { op: 'exit' };

export type Request = Command & Gate & { req: number };

/** An fd of a new buffer of `len` bytes from `/dev/dma_heap/<heap>`. */
function alloc(heap: string, len: number): number {
  const h = U.open(`/dev/dma_heap/${heap}`, U.O_RDWR);
  try {
    const data = { len, fd: 0, fd_flags: U.O_RDWR | U.O_CLOEXEC, heap_flags: 0 };
    U.ioctl(h, U.DMA_HEAP_IOCTL_ALLOC, data);
    return data.fd;
  } finally {
    U.close(h);
  }
}

function run(m: Request): number | number[] | U.FdPacket | CmaStats | null | undefined {
  passGate(m);
  switch (m.op) {
    case 'alloc':
      return alloc(m.heap, m.len);
    case 'fill': {
      const view = U.mmap(m.len, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, m.fd, 0);
      view.fill(m.byte);
      U.munmap(view);
      return undefined;
    }
    case 'send':
      return U.sendFds(m.fds);
    case 'receive':
      return U.receiveFds(m.packet);
    case 'close':
      for (const fd of m.fds) U.close(fd);
      return undefined;
    case 'stats':
      return cmaStats();
    case 'exit':
      process.exit(0);
  }
}

serve<Request>(run);
