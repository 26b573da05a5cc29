/**
 * DOC: `dmabuf demo` — a zero-copy frame pipeline across worker threads
 *
 * camera → gpu × N → display, each stage a worker (demo-worker.ts). Frames live in
 * pools of `depth` buffers allocated from a heap (one pool per stage output); the
 * workers get the fds with `sendFds`, map them, and hand frames on through the
 * buffers' reservation objects. The display checks every frame's checksum; a
 * mismatch is an error. `--copy` runs the same work handing frames on with
 * `postMessage` copies (demo-copy-worker.ts), for comparison.
 */
import { deflateSync, crc32 } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import { MessageChannel, Worker } from 'node:worker_threads';
import { traceDisable, traceEnable, traceTake, type TraceLog } from '../trace.js';
import * as U from '../uapi/index.js';
import { RING, stageName, type StageConfig } from './demo-worker.js';
import type { ThreadTrace } from './trace.js';

export interface DemoOptions {
  width: number;
  height: number;
  /** gpu stages between camera and display. */
  stages: number;
  frames: number;
  heap: string;
  depth: number;
  copy: boolean;
  /** Write the last frame the display saw as a PNG here. */
  png?: string | undefined;
  /** Called about twice a second with a progress line. */
  progress?: ((line: string) => void) | undefined;
  /** Record the tracepoints of every thread of the zero-copy pipeline (DemoResult.traces). */
  trace?: boolean | undefined;
}

export interface DemoResult {
  mode: 'dmabuf' | 'copy';
  frames: number;
  seconds: number;
  fps: number;
  latencyMs: { p50: number; p90: number; p99: number };
  mismatches: number;
  /** bufinfo while the pools were alive (dmabuf mode). */
  bufinfo: string;
  /** With `trace` (dmabuf mode): each thread's log, main first, then the stages in pipeline order. */
  traces?: ThreadTrace[];
}

interface StageMsg {
  kind: 'frame' | 'mismatch' | 'done' | 'error';
  f?: number;
  latencyMs?: number;
  code?: string;
  message?: string;
  /** With 'done', when the stage traced. */
  trace?: TraceLog;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : 0;
}

function stageConfigs(o: DemoOptions, shared: Pick<StageConfig, 'control' | 'sums' | 'stamps'>): StageConfig[] {
  const count = o.stages + 2;
  return Array.from({ length: count }, (_, i) => ({
    role: i === 0 ? 'camera' : i === count - 1 ? 'display' : 'gpu',
    index: i, frames: o.frames, depth: o.depth, frameBytes: o.width * o.height * 4, width: o.width,
    stageCount: count, gpus: o.stages, trace: o.trace ?? false, ...shared,
  }));
}

/**
 * Start the stage workers; resolves when all are done with the trace log each
 * sent (undefined for a stage that did not trace), rejects on the first error.
 */
function runStages(workers: Worker[], onFrame: (latencyMs: number) => void): Promise<Array<TraceLog | undefined>> {
  return new Promise((resolve, reject) => {
    let left = workers.length;
    const logs: Array<TraceLog | undefined> = workers.map(() => undefined);
    workers.forEach((w, i) => {
      w.on('message', (m: StageMsg) => {
        if (m.kind === 'frame') onFrame(m.latencyMs!);
        else if (m.kind === 'mismatch') reject(Object.assign(new Error(`frame ${m.f}: content mismatch`), { code: 'EBADMSG' }));
        else if (m.kind === 'error') reject(Object.assign(new Error(m.message), { code: m.code }));
        else {
          logs[i] = m.trace;
          if (--left === 0) resolve(logs);
        }
      });
      w.on('error', reject);
    });
  });
}

/** Allocate `count` buffers of `bytes` from heap `heap` (uapi). */
function allocPool(heapFd: number, count: number, bytes: number): number[] {
  return Array.from({ length: count }, () => {
    const data = { len: bytes, fd: 0, fd_flags: U.O_RDWR | U.O_CLOEXEC, heap_flags: 0 };
    U.ioctl(heapFd, U.DMA_HEAP_IOCTL_ALLOC, data);
    return data.fd;
  });
}

/** Run the pipeline once. @throws with `code` on an error (EBADMSG for a content mismatch). */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const shared = {
    control: new SharedArrayBuffer(4 * (o.stages + 4)),
    sums: new SharedArrayBuffer(4 * RING),
    stamps: new SharedArrayBuffer(8 * RING),
  };
  const cfgs = stageConfigs(o, shared);
  const ctl = new Int32Array(shared.control);
  const latencies: number[] = [];
  const started = performance.now();
  const timer = o.progress ? setInterval(() => o.progress!(progressLine(ctl, cfgs.length, latencies, started)), 500) : undefined;
  try {
    const r = o.copy ? { bufinfo: await runCopy(cfgs, latencies) } : await runZeroCopy(o, cfgs, latencies);
    o.progress?.(progressLine(ctl, cfgs.length, latencies, started)); // the final count, whatever the timer saw
    const seconds = (performance.now() - started) / 1000;
    const sorted = latencies.slice().sort((a, b) => a - b);
    return {
      mode: o.copy ? 'copy' : 'dmabuf', frames: o.frames, seconds, fps: o.frames / seconds,
      latencyMs: { p50: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99) },
      mismatches: Atomics.load(ctl, cfgs.length + 1), bufinfo: r.bufinfo, ...(r.traces ? { traces: r.traces } : {}),
    };
  } finally {
    if (timer) clearInterval(timer);
  }
}

function progressLine(ctl: Int32Array, count: number, latencies: number[], started: number): string {
  const done = Atomics.load(ctl, count);
  const inFlight = Atomics.load(ctl, 0) - done;
  const recent = latencies.slice(-200).sort((a, b) => a - b);
  const fps = done / ((performance.now() - started) / 1000);
  return `frames ${done}  ${fps.toFixed(1)} fps  latency p50 ${percentile(recent, 0.5).toFixed(1)} ms`
    + ` p90 ${percentile(recent, 0.9).toFixed(1)} ms  in flight ${inFlight}`;
}

async function runZeroCopy(
  o: DemoOptions, cfgs: StageConfig[], latencies: number[],
): Promise<{ bufinfo: string; traces?: ThreadTrace[] }> {
  if (o.trace) traceEnable();
  const heapFd = U.open(`/dev/dma_heap/${o.heap}`);
  const pools: number[][] = [];
  const workers: Worker[] = [];
  let logs: Array<TraceLog | undefined> = [];
  try {
    for (let p = 0; p <= o.stages; p++) pools.push(allocPool(heapFd, o.depth, cfgs[0]!.frameBytes));
    for (const cfg of cfgs) {
      const w = new Worker(new URL('./demo-worker.js', import.meta.url), { workerData: { demoStage: cfg } });
      workers.push(w);
      w.postMessage({
        inFds: U.sendFds(cfg.index > 0 ? pools[cfg.index - 1]! : []),
        outFds: U.sendFds(cfg.index <= o.stages ? pools[cfg.index]! : []),
      });
    }
    logs = await runStages(workers, (ms) => latencies.push(ms));
    if (o.png) writePng(o.png, pools[o.stages]![(o.frames - 1) % o.depth]!, o);
    const bufinfo = U.readFile('/sys/kernel/debug/dma_buf/bufinfo');
    if (!o.trace) return { bufinfo };
    const traces = [{ name: 'main', log: traceTake() }];
    cfgs.forEach((cfg, i) => traces.push({ name: stageName(cfg), log: logs[i]! }));
    return { bufinfo, traces };
  } finally {
    if (o.trace) traceDisable();
    await Promise.all(workers.map((w) => w.terminate()));
    for (const fd of pools.flat()) U.close(fd);
    U.close(heapFd);
  }
}

async function runCopy(cfgs: StageConfig[], latencies: number[]): Promise<string> {
  const links = cfgs.slice(1).map(() => new MessageChannel());
  const ack = new MessageChannel();
  const workers = cfgs.map((cfg) => new Worker(new URL('./demo-copy-worker.js', import.meta.url), { workerData: { copyStage: cfg } }));
  try {
    workers.forEach((w, i) => {
      const ports = {
        input: i > 0 ? links[i - 1]!.port2 : undefined,
        output: i < links.length ? links[i]!.port1 : undefined,
        ack: i === 0 ? ack.port1 : i === cfgs.length - 1 ? ack.port2 : undefined,
      };
      w.postMessage(ports, Object.values(ports).filter((p) => p !== undefined));
    });
    await runStages(workers, (ms) => latencies.push(ms));
    return '';
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** The frame in buffer `fd` (BGRA words in memory) as an RGBA PNG. */
function writePng(path: string, fd: number, o: DemoOptions): void {
  const view = U.mmap(o.width * o.height * 4, U.PROT_READ, U.MAP_SHARED, fd, 0);
  try {
    U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_READ });
    const raw = Buffer.alloc((o.width * 4 + 1) * o.height);
    for (let y = 0; y < o.height; y++) {
      const row = y * (o.width * 4 + 1);
      for (let x = 0; x < o.width; x++) {
        const s = (y * o.width + x) * 4;
        const d = row + 1 + x * 4;
        raw[d] = view[s + 2]!;
        raw[d + 1] = view[s + 1]!;
        raw[d + 2] = view[s]!;
        raw[d + 3] = view[s + 3]!;
      }
    }
    U.ioctl(fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_READ });
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(o.width, 0);
    ihdr.writeUInt32BE(o.height, 4);
    ihdr.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA
    writeFileSync(path, Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
    ]));
  } finally {
    U.munmap(view);
  }
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}
