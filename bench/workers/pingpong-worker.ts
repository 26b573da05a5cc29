/**
 * The worker side of the fence ping-pong benchmarks (bench/fence.bench.ts).
 *
 * The main thread posts one `Start` (one variant per worker); the worker sets up, answers
 * `{ ev: 'ready', tid }` (tid: its kernel thread id, for pinning) and then answers
 * every round trip until the main thread sets the STOP word and wakes it once
 * more, then answers `{ ev: 'done', trips }`.
 * `{ cmd: 'exit' }` closes the port so the worker exits by itself.
 *
 * Every variant has the shape of the raw-Atomics baseline: a side that wakes
 * signals the other side first and only then prepares its next wait (drops the
 * point it waited for, creates the next one), as a user after the lowest latency
 * orders it; the preparation then overlaps the other side's wake-up instead of
 * delaying it. The other side needs a wake-up before it can signal back, so the
 * next point nearly always exists in time; if not, it is born signalled and the
 * wait returns at once, as a raw `Atomics.wait` returns at once when the value
 * has already changed. Direction A is main → worker, direction B is worker → main.
 *
 * Imported by the main thread too, for the protocol's types, word indexes and the
 * raw-Atomics helpers; the message loop only starts inside a Worker.
 */
import { isMainThread, parentPort, type MessagePort } from 'node:worker_threads';
import { kernelTid } from '../affinity.js';
import { SwSyncTimeline, setWaitSpin, type Packet } from 'dmabuf';
import {
  close, ioctl, poll, POLLIN, receiveFds, SW_SYNC_IOC_CREATE_FENCE, SW_SYNC_IOC_INC, type FdPacket,
} from 'dmabuf/uapi';

/* ---- control words (Int32Array over `ctl`) ---- */

/** Raw variants: the main → worker counter (-1: stop). */
export const W_A = 0;
/** Raw variants: the worker → main counter. */
export const W_B = 1;
/** Set by the main thread before its last wake-up. */
export const W_STOP = 2;
/** Set by the worker when its loop failed (it then releases the main thread). */
export const W_ERROR = 3;
export const CTL_BYTES = 16;

export type Start =
  | { cmd: 'start'; mode: 'uapi'; ctl: SharedArrayBuffer; spinUs: number; fds: FdPacket }
  | { cmd: 'start'; mode: 'driver'; ctl: SharedArrayBuffer; spinUs: number; timelines: [Packet, Packet] }
  | { cmd: 'start'; mode: 'atomics'; ctl: SharedArrayBuffer; spinUs: number }
  | { cmd: 'start'; mode: 'port'; port: MessagePort }
  | { cmd: 'exit' };

export type Reply = { ev: 'ready'; tid: number } | { ev: 'done'; trips: number; error?: string };

/* ---- helpers both sides use ---- */

/**
 * Spin while `i32[at] === expected` for at most `budgetMs` (the raw-Atomics
 * counterpart of `setWaitSpin`, with a fixed budget). True if it changed.
 */
export function spinWhileEq(i32: Int32Array, at: number, expected: number, budgetMs: number): boolean {
  if (budgetMs <= 0) return false;
  const end = performance.now() + budgetMs;
  do {
    if (Atomics.load(i32, at) !== expected) return true;
  } while (performance.now() < end);
  return false;
}

/**
 * Raw wait until `i32[at] === want` (spinning `spinMs` first). Returns false if
 * the word went negative (the stop value) instead.
 */
export function rawWaitFor(i32: Int32Array, at: number, want: number, spinMs: number): boolean {
  for (;;) {
    const v = Atomics.load(i32, at);
    if (v === want) return true;
    if (v < 0) return false;
    if (spinWhileEq(i32, at, v, spinMs)) continue;
    Atomics.wait(i32, at, v);
  }
}

/** SW_SYNC_IOC_CREATE_FENCE: a sync_file fd for point `value` of the timeline `fd`. */
export function createPoint(fd: number, value: number): number {
  const data = { value, name: 'pingpong', fence: -1 };
  ioctl(fd, SW_SYNC_IOC_CREATE_FENCE, data);
  return data.fence;
}

/** Blocking poll of one sync_file for POLLIN. @throws if it was not POLLIN that came back. */
export function pollIn(fd: number): void {
  const pfd = { fd, events: POLLIN, revents: 0 };
  poll([pfd], -1);
  if (!(pfd.revents & POLLIN)) throw new Error(`poll: fd ${fd} woke with revents 0x${pfd.revents.toString(16)}`);
}

/* ---- the worker ---- */

function uapiLoop(msg: Extract<Start, { mode: 'uapi' }>, ctl: Int32Array, ready: () => void): number {
  const [fa, fb] = receiveFds(msg.fds) as [number, number];
  let trips = 0;
  try {
    let v = 1;
    let fd = createPoint(fa, v);
    ready();
    for (;;) {
      pollIn(fd);
      if (Atomics.load(ctl, W_STOP)) break;
      ioctl(fb, SW_SYNC_IOC_INC, 1); // signal first, then prepare the next wait
      trips++;
      close(fd);
      fd = createPoint(fa, ++v);
    }
    close(fd);
  } catch (e) {
    Atomics.store(ctl, W_ERROR, 1);
    ioctl(fb, SW_SYNC_IOC_INC, 0x7fffffff); // release the main thread's pending points
    throw e;
  } finally {
    close(fa);
    close(fb);
  }
  return trips;
}

function driverLoop(msg: Extract<Start, { mode: 'driver' }>, ctl: Int32Array, ready: () => void): number {
  const tla = SwSyncTimeline.receive(msg.timelines[0]);
  const tlb = SwSyncTimeline.receive(msg.timelines[1]);
  let trips = 0;
  try {
    let v = 1;
    let f = tla.createFence(v);
    ready();
    for (;;) {
      f.waitTimeout(Infinity);
      if (Atomics.load(ctl, W_STOP)) break;
      tlb.inc(1); // signal first, then prepare the next wait
      trips++;
      f.put();
      f = tla.createFence(++v);
    }
    f.put();
  } catch (e) {
    Atomics.store(ctl, W_ERROR, 1);
    tlb.inc(0x7fffffff);
    throw e;
  } finally {
    tla.close();
    tlb.close();
  }
  return trips;
}

function atomicsLoop(spinUs: number, ctl: Int32Array, ready: () => void): number {
  const spinMs = spinUs / 1000;
  let v = 0;
  ready();
  for (;;) {
    if (!rawWaitFor(ctl, W_A, v + 1, spinMs)) break;
    v++;
    Atomics.store(ctl, W_B, v);
    Atomics.notify(ctl, W_B);
  }
  return v;
}

function start(msg: Exclude<Start, { cmd: 'exit' }>): void {
  const port = parentPort!;
  const ready = (): void => port.postMessage({ ev: 'ready', tid: kernelTid() } satisfies Reply);
  if (msg.mode === 'port') {
    let trips = 0;
    msg.port.on('message', (v: number) => {
      if (v < 0) {
        msg.port.close();
        port.postMessage({ ev: 'done', trips } satisfies Reply);
        return;
      }
      trips++;
      msg.port.postMessage(v);
    });
    ready();
    return;
  }
  const ctl = new Int32Array(msg.ctl);
  setWaitSpin(msg.spinUs);
  let trips = 0;
  let error: string | undefined;
  try {
    if (msg.mode === 'uapi') trips = uapiLoop(msg, ctl, ready);
    else if (msg.mode === 'driver') trips = driverLoop(msg, ctl, ready);
    else trips = atomicsLoop(msg.spinUs, ctl, ready);
  } catch (e) {
    error = e instanceof Error ? (e.stack ?? e.message) : String(e);
    if (msg.mode === 'atomics') {
      Atomics.store(ctl, W_ERROR, 1);
      Atomics.store(ctl, W_B, -1); // the stop value releases the main thread's wait
      Atomics.notify(ctl, W_B);
    }
  } finally {
    setWaitSpin(0);
  }
  const done: Reply = error === undefined ? { ev: 'done', trips } : { ev: 'done', trips, error };
  port.postMessage(done);
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  port.on('message', (msg: Start) => {
    if (msg.cmd === 'exit') port.close();
    else start(msg);
  });
}
