/**
 * For the lock-stress workers (test/workers/ww-worker.ts, resv-worker.ts): a
 * seeded PRNG, the random lock sets it picks, and the deliberately non-atomic
 * counter update that only the locks keep from losing increments.
 */

/** xorshift32: a tiny seeded PRNG, so every run locks the same sequence of sets. */
export function xorshift(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** A random non-empty subset of 0..n-1 (each index with probability 1/2), in random order. */
export function randomOrder(rnd: () => number, n: number): number[] {
  const order: number[] = [];
  for (let i = 0; i < n; i++) if (rnd() < 0.5) order.push(i);
  if (order.length === 0) order.push(Math.floor(rnd() * n));
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** counters[i]++ as a deliberately non-atomic read-modify-write: only the locks keep it from losing updates. */
export function bumpCounter(counters: Int32Array, i: number): void {
  const v = counters[i]!;
  for (let k = 0; k < 20; k++) if (Atomics.load(counters, i) !== v) break;
  counters[i] = v + 1;
}
