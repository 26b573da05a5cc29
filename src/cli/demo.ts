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
import { MessageChannel } from 'node:worker_threads';
import { traceDisable, traceEnable, traceTake } from '../trace.js';
import * as U from '../uapi/index.js';
import type { CopyPorts } from './demo-copy-worker.js';
import type { DmabufStageMsg } from './demo-worker.js';
import { latencyPercentiles, type LatencyPercentiles } from './latency.js';
import { Pipeline, stageName, stageRole, type PipelineSpec, type StageConfig, type Transport } from './pipeline.js';
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
  latencyMs: LatencyPercentiles;
  mismatches: number;
  /** bufinfo while the pools were alive (dmabuf mode). */
  bufinfo: string;
  /** With `trace` (dmabuf mode): each thread's log, main first, then the stages in pipeline order. */
  traces?: ThreadTrace[];
}

/** Allocate `count` buffers of `bytes` from the heap open at `heapFd` (uapi). */
function allocPool(heapFd: number, count: number, bytes: number): number[] {
  return Array.from({ length: count }, () => {
    const data = { len: bytes, fd: 0, fd_flags: U.O_RDWR | U.O_CLOEXEC, heap_flags: 0 };
    U.ioctl(heapFd, U.DMA_HEAP_IOCTL_ALLOC, data);
    return data.fd;
  });
}

/** The dmabuf transport's buffers: pool p sits between stage p and stage p + 1. */
export interface DmabufPools {
  pools: number[][];
}

/**
 * Frames in pools of `depth` buffers from heap `heap`, one pool per stage output,
 * handed to the stages as fd packets (demo-worker.ts). Each pipeline started with
 * it gets its own pools; `into.pools` is set to the latest one's fds.
 * @throws ENOENT (no such heap), the heap's allocation errors.
 */
export function dmabufTransport(heap: string, into?: DmabufPools): (cfgs: StageConfig[]) => Transport {
  return (cfgs) => {
    const { depth, frameBytes, stageCount } = cfgs[0]!;
    const pools: number[][] = [];
    const heapFd = U.open(`/dev/dma_heap/${heap}`);
    try {
      for (let p = 0; p < stageCount - 1; p++) pools.push(allocPool(heapFd, depth, frameBytes));
    } catch (e) {
      for (const fd of pools.flat()) U.close(fd);
      throw e;
    } finally {
      U.close(heapFd);
    }
    if (into) into.pools = pools;
    return {
      script: new URL('./demo-worker.js', import.meta.url),
      key: 'demoStage',
      wire: (cfg) => [{
        inFds: U.sendFds(cfg.index > 0 ? pools[cfg.index - 1]! : []),
        outFds: U.sendFds(cfg.index < stageCount - 1 ? pools[cfg.index]! : []),
      } satisfies DmabufStageMsg, []],
      close: () => {
        for (const fd of pools.flat()) U.close(fd);
      },
    };
  };
}

/** Frames as structured clones over MessagePorts (demo-copy-worker.ts). */
export function copyTransport(cfgs: StageConfig[]): Transport {
  const links = cfgs.slice(1).map(() => new MessageChannel());
  const ack = new MessageChannel();
  const last = cfgs.length - 1;
  return {
    script: new URL('./demo-copy-worker.js', import.meta.url),
    key: 'copyStage',
    wire: (cfg) => {
      const i = cfg.index;
      const ports: CopyPorts = {};
      if (i > 0) ports.input = links[i - 1]!.port2;
      if (i < last) ports.output = links[i]!.port1;
      if (i === 0) ports.ack = ack.port1;
      if (i === last) ports.ack = ack.port2;
      return [ports, Object.values(ports)];
    },
  };
}

/** Run the pipeline once. @throws with `code` on an error (EBADMSG for a content mismatch). */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const trace = (o.trace ?? false) && !o.copy;
  const spec: PipelineSpec = {
    width: o.width, height: o.height, gpus: o.stages, depth: o.depth, frames: o.frames, work: 'demo', latency: true, trace,
  };
  const into: DmabufPools = { pools: [] };
  if (trace) traceEnable();
  let p: Pipeline;
  try {
    p = await Pipeline.start(spec, o.copy ? copyTransport : dmabufTransport(o.heap, into));
  } catch (e) {
    if (trace) traceDisable();
    throw e;
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const started = performance.now();
    const progress = o.progress ? progressLine(p, started) : undefined;
    if (progress) timer = setInterval(() => o.progress!(progress()), 500);
    await p.run(o.frames);
    await p.finish();
    const seconds = (performance.now() - started) / 1000;
    if (progress) o.progress!(progress(true)); // the final count, whatever the timer saw
    let bufinfo = '';
    if (!o.copy) {
      if (o.png) writePng(o.png, into.pools[o.stages]![(o.frames - 1) % o.depth]!, o);
      bufinfo = U.readFile('/sys/kernel/debug/dma_buf/bufinfo');
    }
    return {
      mode: o.copy ? 'copy' : 'dmabuf', frames: o.frames, seconds, fps: o.frames / seconds,
      latencyMs: latencyPercentiles(p.latency!.snapshot()), mismatches: p.control.mismatches, bufinfo,
      ...(trace ? { traces: collectTraces(p, spec) } : {}),
    };
  } finally {
    if (timer) clearInterval(timer);
    if (trace) traceDisable();
    await p.close();
  }
}

/** Every thread's trace log: the main thread's, then each stage's in pipeline order. */
function collectTraces(p: Pipeline, spec: PipelineSpec): ThreadTrace[] {
  const traces: ThreadTrace[] = [{ name: 'main', log: traceTake() }];
  p.traces.forEach((log, index) => {
    if (log) traces.push({ name: stageName({ role: stageRole(index, spec.gpus + 2), index }), log });
  });
  return traces;
}

/** A function for the progress line: latency over the frames since its last call (`all`: over every frame). */
function progressLine(p: Pipeline, started: number): (all?: boolean) => string {
  let last: Int32Array | undefined;
  return (all = false) => {
    const done = p.control.framesDone;
    const inFlight = p.control.framesStarted - done;
    const now = p.latency!.snapshot();
    const lat = latencyPercentiles(now, all ? undefined : last);
    last = now;
    const fps = done / ((performance.now() - started) / 1000);
    return `frames ${done}  ${fps.toFixed(1)} fps  latency p50 ${lat.p50.toFixed(1)} ms`
      + ` p90 ${lat.p90.toFixed(1)} ms  in flight ${inFlight}`;
  };
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
