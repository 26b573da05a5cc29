/**
 * The resident-memory run of the pipeline benchmarks and of
 * test/pipeline-memory.test.ts: the dmabuf transport pipeline runs a warm-up,
 * then the measured frames in batches, and reports usage after the warm-up and
 * at the end (`MemoryRun`).
 *
 * `memoryRunChild` runs it in a process of its own, so that memory something else
 * left behind is neither freed nor grown meanwhile, and with V8's memory reducer
 * off: it shrinks the heaps once, a few seconds into a process, which dropped RSS
 * by 10-50 MiB in the middle of some runs. Drops still happen now and then (a
 * heap shrinks after a full collection), so what tells a leak is the largest
 * rise between samples (`largestRise`), not the end minus the start.
 *
 *   node --no-memory-reducer build-test/bench/pipeline-memory.js <warm-up frames> <frames>
 */
import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { arenaStats, liveObjects, tableStats } from 'dmabuf';
import { dmabufTransport } from '#cli/demo.js';
import { Pipeline } from '#cli/pipeline.js';

export interface Usage {
  /** Resident set of the process (every thread), bytes. */
  rss: number;
  /** Object-table slots ever handed out (tableStats().touched). */
  slots: number;
  /** Arena pages in use. */
  arenaPages: number;
}

export interface MemoryRun {
  frames: number;
  seconds: number;
  before: Usage;
  after: Usage;
  /** RSS after the warm-up and after every batch of BATCH frames, bytes. */
  rssSamples: number[];
  /** Live objects after the pipeline closed, minus before it started. */
  objectsLeft: number;
  /** Arena pages in use after the pipeline closed, minus before it started. */
  arenaLeft: number;
}

const BATCH = 10_000;

function usage(): Usage {
  const a = arenaStats();
  return { rss: process.memoryUsage.rss(), slots: tableStats().touched, arenaPages: a.grownPages - a.freePages };
}

/** Run `warmup` + `frames` frames of 8 MiB through camera → gpu → display and report. */
export async function memoryRun(warmup: number, frames: number): Promise<MemoryRun> {
  const objects = liveObjects();
  const arena = usage().arenaPages;
  const spec = { width: 2048, height: 1024, gpus: 1, depth: 3, frames: warmup + frames, work: 'transport', latency: false } as const;
  const p = await Pipeline.start(spec, dmabufTransport('system'));
  let run: Omit<MemoryRun, 'objectsLeft' | 'arenaLeft'>;
  try {
    await p.run(warmup);
    const before = usage();
    const rssSamples = [before.rss];
    const t0 = performance.now();
    for (let done = 0; done < frames; done += BATCH) {
      await p.run(Math.min(BATCH, frames - done));
      rssSamples.push(process.memoryUsage.rss());
    }
    const seconds = (performance.now() - t0) / 1000;
    run = { frames, seconds, before, after: usage(), rssSamples };
    await p.finish();
  } finally {
    await p.close();
  }
  return { ...run, objectsLeft: liveObjects() - objects, arenaLeft: usage().arenaPages - arena };
}

/**
 * The largest rise of RSS from one sample to any later one, bytes: a leak shows
 * as a rise even when the heaps shrink once meanwhile (which end minus start
 * would net out); a flat run rises by noise only.
 */
export function largestRise(samples: readonly number[]): number {
  let low = Infinity;
  let rise = 0;
  for (const s of samples) {
    low = Math.min(low, s);
    rise = Math.max(rise, s - low);
  }
  return rise;
}

/** `memoryRun` in a new process (see above). @throws if the run fails there. */
export async function memoryRunChild(warmup: number, frames: number): Promise<MemoryRun> {
  const args = ['--no-memory-reducer', fileURLToPath(import.meta.url), String(warmup), String(frames)];
  const { stdout } = await promisify(execFile)(process.execPath, args, { encoding: 'utf8' });
  return JSON.parse(stdout) as MemoryRun;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [warmup, frames] = process.argv.slice(2).map(Number);
  if (!Number.isInteger(warmup) || !Number.isInteger(frames) || warmup! < 1 || frames! < 1) {
    throw new Error('usage: pipeline-memory.js <warm-up frames> <frames> (positive integers)');
  }
  console.log(JSON.stringify(await memoryRun(warmup!, frames!)));
}
