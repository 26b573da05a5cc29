/**
 * The worker of the udmabuf/memfd thread tests: receives fds (sendFds packets),
 * maps them and writes through the mapping, or writes with pwrite, using only
 * `dmabuf/uapi`. Answers each request with an RpcReply (test/support/worker-rpc.ts).
 */
import * as U from 'dmabuf/uapi';
import { serve } from '../support/worker-rpc.js';

export type Command =
  | { op: 'receive'; packet: U.FdPacket }
  | { op: 'mmapWrite'; fd: number; length: number; at: number; bytes: number[] }
  | { op: 'pwrite'; fd: number; at: number; bytes: number[] }
  | { op: 'close'; fds: number[] }
  | { op: 'exit' };

function run(m: Command & { req: number }): unknown {
  switch (m.op) {
    case 'receive':
      return U.receiveFds(m.packet);
    case 'mmapWrite': {
      const view = U.mmap(m.length, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, m.fd, 0);
      view.set(m.bytes, m.at);
      U.munmap(view);
      return undefined;
    }
    case 'pwrite':
      return U.pwrite(m.fd, Uint8Array.from(m.bytes), m.at);
    case 'close':
      for (const fd of m.fds) U.close(fd);
      return undefined;
    case 'exit':
      process.exit(0);
  }
}

serve<Command & { req: number }>(run);
