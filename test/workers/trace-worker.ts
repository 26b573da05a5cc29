/**
 * The worker of the tracepoint tests: it turns its own tracing on or leaves it
 * off, receives sw_sync timeline fds, signals points on them (after a gate, so
 * the test can be blocked in a wait first), and hands its trace log back.
 */
import * as U from 'dmabuf/uapi';
import { traceEnable, traceIsEnabled, traceTake } from 'dmabuf';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

export type Command =
  | { op: 'enable' }
  | { op: 'enabled' }
  | { op: 'receive'; packet: U.FdPacket }
  | { op: 'inc'; fd: number }
  | { op: 'take' }
  | { op: 'exit' };

export type Request = Command & Gate & { req: number };

const fds: number[] = [];

serve<Request>((m) => {
  passGate(m);
  switch (m.op) {
    case 'enable':
      return traceEnable();
    case 'enabled':
      return traceIsEnabled();
    case 'receive': {
      const got = U.receiveFds(m.packet);
      fds.push(...got);
      return got;
    }
    case 'inc':
      return U.ioctl(m.fd, U.SW_SYNC_IOC_INC, 1);
    case 'take':
      return traceTake();
    case 'exit':
      for (const fd of fds.splice(0)) U.close(fd);
      process.exit(0);
  }
  return undefined;
});
