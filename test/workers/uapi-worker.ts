/**
 * The worker of the `dmabuf/uapi` thread tests, driven by messages and using only
 * the uapi (fds, ioctl, poll, sendFds/receiveFds).
 *
 * The test posts `Request`s; the worker answers each with an `RpcReply` carrying
 * the same `req` (test/support/worker-rpc.ts), and posts a `polling` event just
 * before it starts a blocking poll.
 * A request may carry a `gate`: the worker then blocks until word 0 of that
 * SharedArrayBuffer is non-zero before it acts (then sleeps `delayMs` more), so
 * the test can block its own thread in `poll` first and be woken by this worker.
 * Timeouts here are hang guards only.
 */
import * as U from 'dmabuf/uapi';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

export type Command =
  | { op: 'receive'; packet: U.FdPacket }
  | { op: 'send'; fds: number[]; close?: boolean }
  | { op: 'close'; fds: number[] }
  | { op: 'open' }
  | { op: 'createFence'; tl: number; value: number }
  | { op: 'inc'; tl: number; n: number }
  | { op: 'status'; fd: number }
  | { op: 'numFences'; fd: number }
  | { op: 'merge'; fd: number; fd2: number; name: string }
  | { op: 'poll'; fds: number[]; timeoutMs: number }
  | { op: 'pollAsync'; fds: number[]; timeoutMs: number }
  | { op: 'exit' };

export type Request = Command & Gate & { req: number };

export interface PollingEvent {
  kind: 'event';
  event: 'polling';
  req: number;
  /** poll(…, 0) just before the blocking poll: how many were already ready. */
  readyBefore: number;
}

export interface PollReport {
  n: number;
  revents: number[];
}

function pollFds(fds: number[]): U.PollFd[] {
  return fds.map((fd) => ({ fd, events: U.POLLIN, revents: 0 }));
}

function report(n: number, p: U.PollFd[]): PollReport {
  return { n, revents: p.map((e) => e.revents ?? -1) };
}

async function run(m: Request, emit: (e: PollingEvent) => void): Promise<unknown> {
  passGate(m);
  switch (m.op) {
    case 'receive':
      return U.receiveFds(m.packet);
    case 'send': {
      const packet = U.sendFds(m.fds);
      if (m.close) for (const fd of m.fds) U.close(fd);
      return packet;
    }
    case 'close':
      for (const fd of m.fds) U.close(fd);
      return undefined;
    case 'open':
      return U.open('/dev/sw_sync');
    case 'createFence': {
      const data = { value: m.value, name: '', fence: -1 };
      U.ioctl(m.tl, U.SW_SYNC_IOC_CREATE_FENCE, data);
      return data.fence;
    }
    case 'inc':
      return U.ioctl(m.tl, U.SW_SYNC_IOC_INC, m.n);
    case 'status': {
      const info = { name: '', status: 99, flags: 0, num_fences: 0, pad: 0 };
      U.ioctl(m.fd, U.SYNC_IOC_FILE_INFO, info);
      return info.status;
    }
    case 'numFences': {
      const info = { name: '', status: 99, flags: 0, num_fences: 0, pad: 0 };
      U.ioctl(m.fd, U.SYNC_IOC_FILE_INFO, info);
      return info.num_fences;
    }
    case 'merge': {
      const data = { name: m.name, fd2: m.fd2, fence: -1, flags: 0, pad: 0 };
      U.ioctl(m.fd, U.SYNC_IOC_MERGE, data);
      return data.fence;
    }
    case 'poll': {
      const p = pollFds(m.fds);
      const readyBefore = U.poll(pollFds(m.fds), 0);
      emit({ kind: 'event', event: 'polling', req: m.req, readyBefore });
      const n = U.poll(p, m.timeoutMs);
      return report(n, p);
    }
    case 'pollAsync': {
      const p = pollFds(m.fds);
      const readyBefore = U.poll(pollFds(m.fds), 0);
      const pending = U.pollAsync(p, m.timeoutMs);
      emit({ kind: 'event', event: 'polling', req: m.req, readyBefore });
      const n = await pending;
      return report(n, p);
    }
    case 'exit':
      process.exit(0);
  }
}

serve<Request, PollingEvent>(run);
