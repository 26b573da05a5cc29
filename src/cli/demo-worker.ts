/**
 * DOC: one stage of the demo pipeline, in its own worker thread
 *
 * Roles: the *camera* fills frames, each *gpu* stage reads one buffer and writes
 * another (an RGB invert: a colour conversion that keeps alpha), the *display*
 * checks every frame against the checksum the camera computed for what the display
 * must see. Only the uapi is used: buffer fds arrive by `receiveFds`, bytes are
 * `mmap`ed, and every hand-off is implicit sync through the buffers' reservation
 * objects:
 *
 * 1. wait until the upstream stage has *submitted* frame f (its WRITE fence is on
 *    the input buffer) and the downstream stage has submitted frame f - depth (its
 *    READ fence is on the output buffer) — submission order, as a GPU queue gives;
 * 2. DMA_BUF_IOCTL_SYNC START: READ on the input waits for its writer, WRITE on
 *    the output waits for the readers of its previous frame;
 * 3. submit: a point on this stage's sw_sync timeline becomes a READ fence on the
 *    input and a WRITE fence on the output (DMA_BUF_IOCTL_IMPORT_SYNC_FILE), then
 *    the stage's submitted count moves on (after the wait: a writer that attached
 *    its own fence first would wait for itself);
 * 4. do the work, SYNC END, and signal the point (SW_SYNC_IOC_INC).
 */
import { writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { traceEnable, traceTake } from '../trace.js';
import * as U from '../uapi/index.js';

export interface StageConfig {
  role: 'camera' | 'gpu' | 'display';
  /** Index of this stage: camera 0, gpu 1..n, display n + 1. */
  index: number;
  frames: number;
  depth: number;
  frameBytes: number;
  width: number;
  /** [frames submitted per stage..., frames done by the display, errors] */
  control: SharedArrayBuffer;
  /** Per frame slot (f % ring): expected checksum (camera writes, display reads). */
  sums: SharedArrayBuffer;
  /** Per frame slot: submit time in ms (performance.timeOrigin + now). */
  stamps: SharedArrayBuffer;
  /** Total stages including camera and display. */
  stageCount: number;
  /** Stage count of gpu stages (the camera computes the checksum the display will see). */
  gpus: number;
  /** Record tracepoints and send the log with 'done'. */
  trace: boolean;
}

/** The stage's name: camera, gpu1..gpuN, display. */
export function stageName(cfg: Pick<StageConfig, 'role' | 'index'>): string {
  return cfg.role === 'gpu' ? `gpu${cfg.index}` : cfg.role;
}

/**
 * Name this thread after its stage, as pthread_setname_np does (its comm), so that
 * the sw_sync timeline it opens carries the name too (sw_sync names a timeline
 * after its opener's comm): fences then read `camera 12`, not `node 12`. Without
 * a writable procfs the name stays as it was.
 */
function nameThread(name: string): void {
  try {
    writeFileSync('/proc/thread-self/comm', name);
  } catch {
    // not Linux, or procfs read-only: the timelines keep the process's name
  }
}

export const RING = 1024;

/** FNV-1a over the frame's 32-bit words (every word: the whole frame is checked). */
export function checksum(words: Uint32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i]!, 0x01000193);
  return h >>> 0;
}

/** The word the camera writes at `i` of frame `f`: a moving gradient, alpha 0xff. */
function pixel(f: number, i: number, width: number): number {
  const x = i % width;
  const y = (i / width) | 0;
  return (0xff000000 | (((x + f) & 0xff) << 16) | (((y + 2 * f) & 0xff) << 8) | ((x ^ y ^ f) & 0xff)) >>> 0;
}

export const INVERT = 0x00ffffff;

/** Write frame `f` into `dst`; returns the checksum of what the display will see (each word XOR `key`). */
export function fillFrame(dst: Uint32Array, f: number, width: number, key: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < dst.length; i++) {
    const p = pixel(f, i, width);
    dst[i] = p;
    h = Math.imul(h ^ ((p ^ key) >>> 0), 0x01000193);
  }
  return h >>> 0;
}

function waitAtLeast(ctl: Int32Array, at: number, value: number): void {
  for (;;) {
    const v = Atomics.load(ctl, at);
    if (v >= value) return;
    Atomics.wait(ctl, at, v, 1000);
  }
}

function advance(ctl: Int32Array, at: number): void {
  Atomics.add(ctl, at, 1);
  Atomics.notify(ctl, at);
}

function sync(fd: number, flags: number): void {
  U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags });
}

function run(cfg: StageConfig, inFds: number[], outFds: number[]): void {
  const ctl = new Int32Array(cfg.control);
  const sums = new Uint32Array(cfg.sums);
  const stamps = new Float64Array(cfg.stamps);
  const map = (fd: number): Uint32Array => {
    const v = U.mmap(cfg.frameBytes, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0);
    return new Uint32Array(v.buffer, v.byteOffset, cfg.frameBytes / 4);
  };
  const ins = inFds.map(map);
  const outs = outFds.map(map);
  nameThread(stageName(cfg));
  const timeline = U.open('/dev/sw_sync');
  const key = cfg.gpus % 2 === 1 ? INVERT : 0;
  const doneAt = cfg.stageCount;
  for (let f = 0; f < cfg.frames; f++) {
    const j = f % cfg.depth;
    if (inFds.length) waitAtLeast(ctl, cfg.index - 1, f + 1);
    if (outFds.length && f >= cfg.depth) waitAtLeast(ctl, cfg.index + 1, f - cfg.depth + 1);
    if (inFds.length) sync(inFds[j]!, U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_READ);
    if (outFds.length) sync(outFds[j]!, U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_WRITE);
    const point = { value: f + 1, name: `${cfg.role}${cfg.index}-${f}`, fence: -1 };
    U.ioctl(timeline, U.SW_SYNC_IOC_CREATE_FENCE, point);
    if (inFds.length) U.ioctl(inFds[j]!, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_READ, fd: point.fence });
    if (outFds.length) U.ioctl(outFds[j]!, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_WRITE, fd: point.fence });
    if (cfg.role === 'camera') stamps[f % RING] = performance.timeOrigin + performance.now();
    advance(ctl, cfg.index);
    work(cfg, f, ins[j], outs[j], sums, key, ctl);
    if (inFds.length) sync(inFds[j]!, U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_READ);
    if (outFds.length) sync(outFds[j]!, U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_WRITE);
    U.ioctl(timeline, U.SW_SYNC_IOC_INC, 1);
    U.close(point.fence);
    if (cfg.role === 'display') {
      parentPort!.postMessage({ kind: 'frame', f, latencyMs: performance.timeOrigin + performance.now() - stamps[f % RING]! });
      advance(ctl, doneAt);
    }
  }
  U.close(timeline);
}

function work(
  cfg: StageConfig, f: number, src: Uint32Array | undefined, dst: Uint32Array | undefined, sums: Uint32Array, key: number,
  ctl: Int32Array,
): void {
  if (cfg.role === 'camera') {
    sums[f % RING] = fillFrame(dst!, f, cfg.width, key);
  } else if (cfg.role === 'gpu') {
    for (let i = 0; i < src!.length; i++) dst![i] = src![i]! ^ INVERT;
  } else {
    const got = checksum(src!);
    if (got !== sums[f % RING]) {
      Atomics.add(ctl, cfg.stageCount + 1, 1);
      parentPort!.postMessage({ kind: 'mismatch', f, expected: sums[f % RING], got });
    }
  }
}

if (parentPort && workerData?.demoStage) {
  parentPort.once('message', (msg: { inFds: U.FdPacket; outFds: U.FdPacket }) => {
    const cfg = workerData.demoStage as StageConfig;
    if (cfg.trace) traceEnable();
    const inFds = U.receiveFds(msg.inFds);
    const outFds = U.receiveFds(msg.outFds);
    try {
      run(cfg, inFds, outFds);
      parentPort!.postMessage(cfg.trace ? { kind: 'done', trace: traceTake() } : { kind: 'done' });
    } catch (e) {
      const err = e as { code?: string; message?: string };
      parentPort!.postMessage({ kind: 'error', code: err.code ?? 'ERROR', message: err.message ?? String(e) });
    }
  });
}
