/**
 * DOC: a frame pipeline of worker threads — camera → gpu × n → display
 *
 * The main thread's side (`Pipeline`) and the stages' side (`stageMain`) of every
 * way frames can travel: dmabuf buffers (demo-worker.ts), postMessage copies
 * (demo-copy-worker.ts), the benchmarks' hand-written SharedArrayBuffer ring. A
 * *transport* names the stage script and the first message each stage gets (its
 * buffers or ports); everything else is common:
 *
 * - `Pipeline.start(spec, transport)` starts one worker per stage and resolves
 *   once every stage is ready;
 * - `run(n)` lets the camera start n more frames and resolves when the display
 *   has finished them (stage-control.ts), so one pipeline can run batch after
 *   batch without restarting; it rejects on the first error or content mismatch
 *   (code EBADMSG);
 * - `finish()` waits for every stage to end after its `spec.frames` frames;
 *   `close()` terminates whatever still runs and undoes the transport.
 *
 * Stages report to the main thread only at start, end, on errors and on
 * mismatches: nothing per frame (latency goes through latency.ts).
 */
import { readlinkSync } from 'node:fs';
import { parentPort, Worker, workerData, type TransferListItem } from 'node:worker_threads';
import { traceEnable, traceTake, type TraceLog } from '../trace.js';
import { LatencyLog } from './latency.js';
import { StageControl } from './stage-control.js';
import { RING, WORK_MODES, type WorkConfig, type WorkMode } from './stage-work.js';

export interface PipelineSpec {
  width: number;
  height: number;
  /** gpu stages between camera and display. */
  gpus: number;
  /** Frames in each pool (between two stages). */
  depth: number;
  /** Frames every stage runs before it ends (the sum of all `run(n)`). */
  frames: number;
  work: WorkMode;
  /** Record frame latencies (latency.ts). */
  latency: boolean;
  /** Record every stage's tracepoints (trace.ts); `Pipeline.traces` has them once finished. */
  trace?: boolean | undefined;
}

/** What one stage worker gets in `workerData[transport.key]`. */
export interface StageConfig extends WorkConfig {
  role: 'camera' | 'gpu' | 'display';
  /** camera 0, gpu 1..n, display n + 1. */
  index: number;
  stageCount: number;
  frames: number;
  depth: number;
  frameBytes: number;
  /** The control block (stage-control.ts). */
  control: SharedArrayBuffer;
  /** The latency log (latency.ts), if recorded. */
  latency: SharedArrayBuffer | undefined;
  /** Record tracepoints and send the log with 'done'. */
  trace: boolean;
}

/** The role of stage `i` of `stageCount`. */
export function stageRole(i: number, stageCount: number): StageConfig['role'] {
  return i === 0 ? 'camera' : i === stageCount - 1 ? 'display' : 'gpu';
}

/** A stage's name: camera, gpu1..gpuN, display. */
export function stageName(cfg: Pick<StageConfig, 'role' | 'index'>): string {
  return cfg.role === 'gpu' ? `gpu${cfg.index}` : cfg.role;
}

/** How frames travel: the stage script, and the first message of each stage with its transfer list. */
export interface Transport {
  script: URL;
  /** The key of `workerData` under which the script finds its StageConfig. */
  key: string;
  wire(cfg: StageConfig): [unknown, TransferListItem[]];
  /** Undo what the transport set up (after the workers are gone). */
  close?(): void;
}

/** Messages from a stage to the main thread. */
export type StageMsg =
  | { kind: 'ready'; tid: number }
  | { kind: 'done'; trace?: TraceLog }
  | { kind: 'mismatch'; f: number; what: string }
  | { kind: 'error'; code: string; message: string };

const LIMITS: Array<[keyof PipelineSpec, number, number]> = [
  ['width', 1, 16384], ['height', 1, 16384], ['gpus', 0, 16], ['depth', 1, 64], ['frames', 1, 2 ** 31 - 1],
];

/** @throws RangeError naming the first field out of range. */
function checkSpec(spec: PipelineSpec): void {
  for (const [k, lo, hi] of LIMITS) {
    const v = spec[k];
    if (!Number.isInteger(v) || (v as number) < lo || (v as number) > hi) throw new RangeError(`pipeline ${k} must be an integer in ${lo}..${hi}, not ${String(v)}`);
  }
  if (!WORK_MODES.includes(spec.work)) throw new RangeError(`pipeline work must be one of ${WORK_MODES.join(', ')}, not ${String(spec.work)}`);
  if (spec.work !== 'demo' && spec.width * spec.height < 2) throw new RangeError(`work '${spec.work}' needs frames of at least 2 pixels (the header)`);
}

/** The configuration of every stage of `spec`, sharing one control block (and latency log). */
export function stageConfigs(spec: PipelineSpec): StageConfig[] {
  checkSpec(spec);
  const stageCount = spec.gpus + 2;
  const shared = {
    control: StageControl.create(stageCount),
    latency: spec.latency ? LatencyLog.create() : undefined,
    sums: new SharedArrayBuffer(4 * RING),
  };
  return Array.from({ length: stageCount }, (_, i) => ({
    role: stageRole(i, stageCount),
    index: i, stageCount, frames: spec.frames, depth: spec.depth, frameBytes: spec.width * spec.height * 4,
    width: spec.width, gpus: spec.gpus, work: spec.work, trace: spec.trace ?? false, ...shared,
  }));
}

function stageError(m: StageMsg): Error {
  if (m.kind === 'mismatch') return Object.assign(new Error(`frame ${m.f}: content mismatch: ${m.what}`), { code: 'EBADMSG' });
  if (m.kind === 'error') return Object.assign(new Error(m.message), { code: m.code });
  return new Error(`unexpected stage message ${m.kind}`);
}

export class Pipeline {
  readonly control: StageControl;
  readonly latency: LatencyLog | undefined;
  readonly frames: number;
  /** Kernel thread id of each stage (camera first), -1 where unknown; set once started. */
  readonly tids: number[];
  /** Each stage's trace log (camera first), once it is done, if the spec asked for traces. */
  readonly traces: Array<TraceLog | undefined>;
  readonly #workers: Worker[];
  readonly #transport: Transport;
  readonly #ended: Promise<void>;
  readonly #failed: Promise<never>;
  readonly #ready: Promise<void>;
  #closed = false;

  private constructor(cfgs: StageConfig[], transport: Transport, wired: Array<[unknown, TransferListItem[]]>) {
    const cfg = cfgs[0]!;
    this.control = new StageControl(cfg.control, cfg.stageCount);
    this.latency = cfg.latency ? new LatencyLog(cfg.latency) : undefined;
    this.frames = cfg.frames;
    this.#transport = transport;
    this.#workers = cfgs.map((c) => new Worker(transport.script, { workerData: { [transport.key]: c } }));
    this.tids = cfgs.map(() => -1);
    this.traces = cfgs.map(() => undefined);
    const watch = this.#workers.map((w, i) => watchStage(w, (tid) => (this.tids[i] = tid), (log) => (this.traces[i] = log)));
    this.#failed = Promise.race(watch.map((s) => s.failed));
    this.#failed.catch(() => {}); // observed through run/finish/ready
    this.#ended = Promise.all(watch.map((s) => s.ended)).then(() => {});
    this.#ready = Promise.race([Promise.all(watch.map((s) => s.ready)).then(() => {}), this.#failed]);
    this.#workers.forEach((w, i) => w.postMessage(...wired[i]!));
  }

  /** Start the stages of `spec` over `transport`; resolves once all are ready. @throws RangeError for a bad spec. */
  static async start(spec: PipelineSpec, transport: (cfgs: StageConfig[]) => Transport): Promise<Pipeline> {
    const cfgs = stageConfigs(spec);
    const t = transport(cfgs);
    let wired: Array<[unknown, TransferListItem[]]>;
    try {
      wired = cfgs.map((c) => t.wire(c)); // before any worker starts: a failure leaves nothing running
    } catch (e) {
      t.close?.();
      throw e;
    }
    const p = new Pipeline(cfgs, t, wired);
    try {
      await p.#ready;
    } catch (e) {
      await p.close();
      throw e;
    }
    return p;
  }

  /** Run `n` more frames. @throws RangeError past `frames`, EPIPE once closed, the first stage error (EBADMSG: a mismatch). */
  run(n: number): Promise<void> {
    if (this.#closed) return Promise.reject(Object.assign(new Error('the pipeline is closed'), { code: 'EPIPE' }));
    const granted = this.control.granted;
    if (!Number.isInteger(n) || n < 1 || granted + n > this.frames) {
      return Promise.reject(new RangeError(`run(${n}): ${granted} of ${this.frames} frames granted already`));
    }
    const target = this.control.grant(n);
    return Promise.race([this.control.whenDone(target, () => this.#closed), this.#failed]);
  }

  /** Wait for every stage to end (all `frames` run). @throws the first stage error. */
  finish(): Promise<void> {
    return Promise.race([this.#ended, this.#failed]);
  }

  /** Terminate the stages still running and undo the transport. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#workers.map((w) => w.terminate()));
    this.#transport.close?.();
  }
}

/**
 * A stage's ready, ended and failed promises, from its messages and its exit; `onTid`
 * gets its kernel thread id, `onTrace` the trace log it sent with 'done'.
 */
function watchStage(w: Worker, onTid: (tid: number) => void, onTrace: (log: TraceLog) => void): { ready: Promise<void>; ended: Promise<void>; failed: Promise<never> } {
  let ready!: () => void;
  let ended!: () => void;
  let failed!: (e: unknown) => void;
  const out = {
    ready: new Promise<void>((r) => (ready = r)),
    ended: new Promise<void>((r) => (ended = r)),
    failed: new Promise<never>((_, f) => (failed = f)),
  };
  let done = false;
  w.on('message', (m: StageMsg) => {
    if (m.kind === 'ready') {
      onTid(m.tid);
      ready();
    }
    else if (m.kind === 'done') {
      done = true;
      if (m.trace) onTrace(m.trace);
    }
    else failed(stageError(m));
  });
  w.on('error', (e) => failed(e));
  w.on('exit', (code) => {
    if (done) ended();
    else failed(Object.assign(new Error(`a pipeline stage exited (code ${code}) before its last frame`), { code: 'EPIPE' }));
  });
  return out;
}

/* ---- the stage side ---- */

/**
 * In a stage worker: if `workerData[key]` holds a StageConfig, wait for the first
 * message and run `body(cfg, msg)`, which calls `ready` once set up and resolves
 * when the stage has run all its frames. Reports ready, done or the error.
 */
export function stageMain<M>(key: string, body: (cfg: StageConfig, msg: M, ready: () => void) => void | Promise<void>): void {
  const cfg = (workerData as Record<string, StageConfig> | null)?.[key];
  if (!parentPort || !cfg) return;
  const port = parentPort;
  const post = (m: StageMsg): void => port.postMessage(m);
  port.once('message', (msg: M) => {
    if (cfg.trace) traceEnable();
    Promise.resolve()
      .then(() => body(cfg, msg, () => post({ kind: 'ready', tid: kernelTid() })))
      .then(() => post(cfg.trace ? { kind: 'done', trace: traceTake() } : { kind: 'done' }), (e: unknown) => {
        const err = e as { code?: string; message?: string };
        post({ kind: 'error', code: err.code ?? 'ERROR', message: err.message ?? String(e) });
      });
  });
}

/** The kernel thread id of the calling thread (for pinning it with taskset), or -1 without /proc. */
export function kernelTid(): number {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return -1;
  }
}

/** In a stage: report that frame `f` is not what it must be (counted, and an error for the main thread). */
export function reportMismatch(control: StageControl, f: number, what: string): void {
  control.mismatch();
  parentPort?.postMessage({ kind: 'mismatch', f, what } satisfies StageMsg);
}
