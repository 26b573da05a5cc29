/**
 * Pipeline benchmarks (the demo's camera → gpu → display over worker threads),
 * each variant against the pipeline a user would otherwise write.
 *
 * Three stages, 2048×1024 RGBA frames (8 MiB), pools of DEPTH frames between
 * stages, two workloads (src/cli/stage-work.ts):
 *
 * - *write*: the camera writes every word of every frame; the gpu stage and the
 *   display touch the header (the display checks it: a mismatch fails the run);
 * - *transport*: only the header is written and checked.
 *
 * Each in three variants doing the same work per frame: **dmabuf** (the demo's
 * stages, src/cli/demo-worker.ts: heap buffers, SYNC START/END, a sw_sync point
 * per stage and frame imported as READ/WRITE fences), **ring** (a hand-written
 * SharedArrayBuffer + Atomics ring, bench/workers/ring-worker.ts) and **copy**
 * (postMessage structured clones per hop, src/cli/demo-copy-worker.ts). All
 * pipelines of a workload are started up front and measured round by round in
 * turn (harness `benchInterleavedEach`); a round is a batch of frames run by an
 * already-running pipeline (src/cli/pipeline.ts), timed from granting the frames
 * to the display finishing the last one. Targets (issue 5): dmabuf ≥ 0.9× the
 * ring's frames/s and ≥ 10× the copy pipeline's (write), ≥ 0.5× the ring's
 * (transport).
 *
 * Then resident memory: the dmabuf transport pipeline runs 100,000 frames after a
 * warm-up, in a process of its own (bench/pipeline-memory.ts); the growth of RSS,
 * of the shared object table and of the page arena over those frames is recorded
 * (targets: under 4 MiB, none, none), and what is left once it closed.
 *
 * Run through bench/run.ts, or alone: `node build-test/bench/pipeline.bench.js [--quick]`.
 */
import { pathToFileURL } from 'node:url';
import { copyTransport, dmabufTransport } from '#cli/demo.js';
import { Pipeline, type PipelineSpec, type StageConfig, type Transport } from '#cli/pipeline.js';
import type { WorkMode } from '#cli/stage-work.js';
import {
  benchInterleavedEach, count, flags, group, pairedRatio, plan, publish, suite, wants, wantsAny,
  type BenchOptions, type Result,
} from './harness.js';
import { getAffinity, kernelTid, parseCpuList, setAffinity } from './affinity.js';
import { largestRise, memoryRunChild } from './pipeline-memory.js';
import type { RingStageMsg } from './workers/ring-worker.js';

const WIDTH = 2048;
const HEIGHT = 1024;
const DEPTH = 3;
const GPUS = 1;
const MiB = 2 ** 20;

type Variant = 'dmabuf' | 'ring' | 'copy';
const VARIANTS: readonly Variant[] = ['dmabuf', 'ring', 'copy'];

/** The hand-written ring: pools of SharedArrayBuffers, one pool per stage output. */
function ringTransport(cfgs: StageConfig[]): Transport {
  const { depth, frameBytes, stageCount } = cfgs[0]!;
  const pools = Array.from({ length: stageCount - 1 }, () => Array.from({ length: depth }, () => new SharedArrayBuffer(frameBytes)));
  return {
    script: new URL('./workers/ring-worker.js', import.meta.url),
    key: 'ringStage',
    wire: (cfg) => [{
      ins: cfg.index > 0 ? pools[cfg.index - 1]! : [],
      outs: cfg.index < stageCount - 1 ? pools[cfg.index]! : [],
    } satisfies RingStageMsg, []],
  };
}

function transport(v: Variant): (cfgs: StageConfig[]) => Transport {
  return v === 'dmabuf' ? dmabufTransport('system') : v === 'ring' ? ringTransport : copyTransport;
}

function spec(work: WorkMode, frames: number): PipelineSpec {
  return { width: WIDTH, height: HEIGHT, gpus: GPUS, depth: DEPTH, frames, work, latency: false };
}

/** Frames per round: about half a second each on the development machine. */
function frameOpts(work: WorkMode, v: Variant): BenchOptions {
  const frames = v === 'copy' ? 30 : work === 'write' ? 200 : 10_000;
  return { iterations: frames, warmup: Math.ceil(frames / 4), rounds: 7, batch: true, quickIterations: Math.ceil(frames / 20) };
}

function name(work: WorkMode, v: Variant): string {
  const what = { dmabuf: 'dmabuf: heap buffers + sync ioctls + sw_sync fences', ring: 'baseline: hand-written SharedArrayBuffer + Atomics ring', copy: 'baseline: postMessage structured clone per hop' }[v];
  return `(${work}) ${what}`;
}

/** Frames per second of a result (a time per frame). */
function fps(r: Result | undefined): number {
  return r ? Math.round(1e9 / r.medianNs) : 0;
}

/**
 * Where the stages run: on this 2-core VM a hand-off between threads on two cores
 * costs a cross-core wake-up (~20 µs), between threads sharing a core a context
 * switch (~2 µs), and the scheduler moves threads between the two from run to run,
 * so every variant's stages are pinned the same way (bench/affinity.ts).
 * - `spread`: stage i on the i-th CPU this process may use, round robin (each
 *   stage its own core where there are enough; on 2 cores the gpu stage has one
 *   to itself);
 * - `one core`: every stage on the last of those CPUs (contrast).
 */
type Placement = 'spread' | 'one core';

/** The CPU of each of `n` stages under `placement`, or undefined if this process's CPUs cannot be read. */
function stageCpus(placement: Placement, n: number): string[] | undefined {
  const mine = getAffinity(kernelTid());
  const cpus = mine === undefined ? [] : parseCpuList(mine);
  if (cpus.length === 0) return undefined;
  return Array.from({ length: n }, (_, i) => String(placement === 'spread' ? cpus[i % cpus.length] : cpus[cpus.length - 1]));
}

/** Pin every stage of `p` as `placement` says. False (nothing guaranteed) if taskset is not available. */
function pin(p: Pipeline, placement: Placement): boolean {
  const cpus = stageCpus(placement, p.tids.length);
  return cpus !== undefined && p.tids.every((tid, i) => setAffinity(tid, cpus[i]!));
}

async function workload(work: WorkMode, placement: Placement, title: string, targets: boolean): Promise<void> {
  group(title);
  const names = VARIANTS.map((v) => name(work, v));
  if (!wantsAny(names)) return;
  const pipes: Array<Pipeline | undefined> = [];
  try {
    for (const [k, v] of VARIANTS.entries()) {
      const p = plan(frameOpts(work, v));
      pipes.push(wants(names[k]!) ? await Pipeline.start(spec(work, p.warmup + p.rounds * p.iterations), transport(v)) : undefined);
    }
    if (!pipes.every((p) => !p || pin(p, placement))) group(`${title} — NOT pinned (taskset failed)`);
    const [dmabuf, ring, copy] = await benchInterleavedEach(VARIANTS.map((v, k) => ({
      name: names[k]!, fn: (n: number) => pipes[k]!.run(n), opts: frameOpts(work, v),
    })));
    for (const p of pipes) await p?.finish(); // every stage ran every frame, no mismatch
    for (const [k, r] of [dmabuf, ring, copy].entries()) if (r) count(`${VARIANTS[k]} frames per second (${work})`, fps(r), 'frames/s');
    // a / b of times per frame = b / a of frames per second
    const write = work === 'write';
    pairedRatio(`dmabuf / ring, frames per second (${work})`, ring, dmabuf, targets ? { op: '>=', value: write ? 0.9 : 0.5 } : undefined);
    pairedRatio(`dmabuf / copy, frames per second (${work})`, copy, dmabuf, targets && write ? { op: '>=', value: 10 } : undefined);
  } finally {
    for (const p of pipes) await p?.close();
  }
}

/* ---- resident memory over 100,000 frames ---- */

const LONG_RUN = 100_000;
const WARMUP = 10_000;

async function memory(): Promise<void> {
  group(`resident memory over ${LONG_RUN.toLocaleString('en-US')} frames, dmabuf transport pipeline, in a process of its own (after ${WARMUP.toLocaleString('en-US')} frames of warm-up)`);
  if (!wants('memory')) return;
  const frames = flags.quick ? LONG_RUN / 10 : LONG_RUN;
  const r = await memoryRunChild(WARMUP, frames);
  count(`frames run after the warm-up${flags.quick ? ' (--quick: a tenth)' : ''}`, r.frames, 'frames');
  count('time per frame over the long run (unpinned)', Math.round((r.seconds * 1e6) / r.frames), 'µs');
  const mib = (bytes: number): number => Math.round((bytes / MiB) * 10) / 10;
  count('RSS at the end minus after the warm-up', mib(r.after.rss - r.before.rss), 'MiB');
  count('RSS: largest rise from one sample to a later one (every 10,000 frames)', mib(largestRise(r.rssSamples)), 'MiB', { op: '<', value: 4 });
  count('shared object table: slots ever used, growth', r.after.slots - r.before.slots, 'slots', { op: '==', value: 0 });
  count('page arena: pages in use, growth', r.after.arenaPages - r.before.arenaPages, 'pages', { op: '==', value: 0 });
  count('live objects after the pipeline closed, minus before it started', r.objectsLeft, 'objects', { op: '==', value: 0 });
  count('arena pages in use after the pipeline closed, minus before it started', r.arenaLeft, 'pages', { op: '==', value: 0 });
}

/** Run every pipeline benchmark (bench/run.ts calls this). */
export async function run(): Promise<void> {
  suite('pipeline');
  console.log('pipeline');
  const frame = `${WIDTH}×${HEIGHT} RGBA frames (8 MiB), camera → ${GPUS} gpu → display, pools of ${DEPTH}`;
  await workload('write', 'spread', `write: the camera writes every word, the other stages a header; ${frame}; stages spread over the cores (time per frame)`, true);
  await workload('transport', 'spread', `transport: only the header is written; ${frame}; stages spread over the cores (time per frame)`, true);
  await workload('transport', 'one core', `transport, every stage on one core (contrast; time per frame)`, false);
  await memory();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run();
  console.log(publish());
}
