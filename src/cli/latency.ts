/**
 * DOC: frame latency of a pipeline, camera submit → display done
 *
 * The camera stamps each frame's submit time in a shared ring (`RING` slots of
 * float64 ms on the shared clock `performance.timeOrigin + performance.now()`);
 * the display counts the frame's latency in a shared histogram of `BUCKETS`
 * log-spaced buckets (bucket i holds [1.02^i, 1.02^(i+1)) µs, the first also
 * everything below 1 µs). Recording allocates nothing and posts nothing, so a
 * pipeline runs any number of frames in constant memory; percentiles are read
 * from the counts to within 2%, by the main thread, at any time.
 */
import { RING } from './stage-work.js';

export const BUCKETS = 1024;
const STEP = Math.log(1.02);

export interface LatencyPercentiles {
  p50: number;
  p90: number;
  p99: number;
}

/** One pipeline's latency record (a view; the memory is `LatencyLog.create()`'s). */
export class LatencyLog {
  readonly #stamps: Float64Array;
  readonly #counts: Int32Array;

  /** The shared memory of a new log: the stamp ring, then the bucket counts. */
  static create(): SharedArrayBuffer {
    return new SharedArrayBuffer(8 * RING + 4 * BUCKETS);
  }

  constructor(sab: SharedArrayBuffer) {
    this.#stamps = new Float64Array(sab, 0, RING);
    this.#counts = new Int32Array(sab, 8 * RING, BUCKETS);
  }

  /** Camera: frame `f` is submitted now. */
  stamp(f: number): void {
    this.#stamps[f % RING] = performance.timeOrigin + performance.now();
  }

  /** Display: frame `f` is done now. */
  record(f: number): void {
    const us = (performance.timeOrigin + performance.now() - this.#stamps[f % RING]!) * 1000;
    const b = us < 1 ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log(us) / STEP));
    Atomics.add(this.#counts, b, 1);
  }

  /** A copy of the bucket counts now. */
  snapshot(): Int32Array {
    const out = new Int32Array(BUCKETS);
    for (let b = 0; b < BUCKETS; b++) out[b] = Atomics.load(this.#counts, b);
    return out;
  }
}

/** Percentiles in ms of the frames counted in `counts` minus those in `since` (all 0 if none). */
export function latencyPercentiles(counts: Int32Array, since?: Int32Array): LatencyPercentiles {
  const n = (b: number): number => counts[b]! - (since?.[b] ?? 0);
  let total = 0;
  for (let b = 0; b < BUCKETS; b++) total += n(b);
  const at = (p: number): number => {
    if (total === 0) return 0;
    const rank = Math.min(total, Math.floor(p * total) + 1);
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += n(b);
      if (seen >= rank) return Math.exp((b + 0.5) * STEP) / 1000; // the bucket's geometric middle, µs → ms
    }
    return 0;
  };
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}
