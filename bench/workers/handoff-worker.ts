/**
 * The worker side of the buffer hand-off benchmarks (bench/buffer.bench.ts).
 *
 * The main thread posts one `Start` (one variant per worker) carrying a
 * MessagePort; the worker answers `{ ev: 'ready', tid }` (its kernel thread id, for
 * pinning) on its parent port. From then
 * on every message on the MessagePort is one buffer handed over: the worker gets
 * at the bytes the way the variant says, adds 1 to byte 0, lets go of what it
 * received, and hands the buffer back the same way. A `null` message ends the
 * trips: the worker answers `{ ev: 'done', trips }` (or the first error) and
 * closes its ports, so it exits by itself.
 *
 * Imported by the main thread for the protocol's types; the loop only starts
 * inside a Worker.
 */
import { isMainThread, parentPort, type MessagePort } from 'node:worker_threads';
import { kernelTid } from '../affinity.js';
import { DmaBuf, PAGE_SIZE, type Packet } from 'dmabuf';
import {
  close, DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_END, DMA_BUF_SYNC_RW, DMA_BUF_SYNC_START, ioctl, MAP_SHARED, mmap, munmap,
  PROT_READ, PROT_WRITE, receiveFds, sendFds, type FdPacket,
} from 'dmabuf/uapi';

/**
 * - `fds`: an fd packet (sendFds); receiveFds + mmap + touch + munmap, sendFds back, close.
 * - `fds-sync`: the same with DMA_BUF_IOCTL_SYNC START/END around the touch.
 * - `driver`: a DmaBuf share() token; DmaBuf.receive + mmap + touch + munmap, share() back, close.
 * - `sab`: a SharedArrayBuffer; touch through a Uint8Array, post it back.
 * - `transfer`: an ArrayBuffer in the transfer list; touch, post it back transferred.
 * - `clone`: an ArrayBuffer, structured-cloned (copied) each way; touch, post it back.
 */
export type Mode = 'fds' | 'fds-sync' | 'driver' | 'sab' | 'transfer' | 'clone';

export interface Start {
  cmd: 'start';
  mode: Mode;
  /** Buffer size in bytes (a whole number of pages for the dmabuf modes). */
  size: number;
  port: MessagePort;
}

export type Reply = { ev: 'ready'; tid: number } | { ev: 'done'; trips: number; error?: string };

type Payload = FdPacket | Packet | SharedArrayBuffer | ArrayBuffer;

const SYNC_START = { flags: BigInt(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW) };
const SYNC_END = { flags: BigInt(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW) };

function touch(u8: Uint8Array): void {
  u8[0] = (u8[0]! + 1) & 0xff;
}

/** One hand-off in the worker: takes what arrived, posts the buffer back on `port`. */
function handler(mode: Mode, size: number, port: MessagePort): (msg: Payload) => void {
  const pages = Math.ceil(size / PAGE_SIZE);
  switch (mode) {
    case 'fds':
    case 'fds-sync': {
      const sync = mode === 'fds-sync';
      return (msg) => {
        const [fd] = receiveFds(msg as FdPacket) as [number];
        try {
          const view = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
          if (sync) ioctl(fd, DMA_BUF_IOCTL_SYNC, SYNC_START);
          touch(view);
          if (sync) ioctl(fd, DMA_BUF_IOCTL_SYNC, SYNC_END);
          munmap(view);
          port.postMessage(sendFds([fd]));
        } finally {
          close(fd);
        }
      };
    }
    case 'driver':
      return (msg) => {
        const buf = DmaBuf.receive(msg);
        try {
          const view = buf.mmap(0, pages);
          touch(view);
          buf.munmap(view);
          port.postMessage(buf.share());
        } finally {
          buf.close();
        }
      };
    case 'sab':
      return (msg) => {
        touch(new Uint8Array(msg as SharedArrayBuffer));
        port.postMessage(msg);
      };
    case 'transfer':
      return (msg) => {
        touch(new Uint8Array(msg as ArrayBuffer));
        port.postMessage(msg, [msg as ArrayBuffer]);
      };
    case 'clone':
      return (msg) => {
        touch(new Uint8Array(msg as ArrayBuffer));
        port.postMessage(msg);
      };
  }
}

function start(msg: Start): void {
  const parent = parentPort!;
  const { port } = msg;
  let trips = 0;
  let error: string | undefined;
  const onTrip = handler(msg.mode, msg.size, port);
  port.on('message', (m: Payload | null) => {
    if (m === null) {
      const done: Reply = error === undefined ? { ev: 'done', trips } : { ev: 'done', trips, error };
      parent.postMessage(done);
      port.close();
      parent.close();
      return;
    }
    if (error !== undefined) return;
    try {
      onTrip(m);
      trips++;
    } catch (e) {
      error = e instanceof Error ? (e.stack ?? e.message) : String(e);
      port.postMessage({ error }); // release the main thread's round trip
    }
  });
  parent.postMessage({ ev: 'ready', tid: kernelTid() } satisfies Reply);
}

if (!isMainThread && parentPort) {
  parentPort.once('message', (msg: Start) => start(msg));
}
