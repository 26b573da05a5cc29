/**
 * The frame pipeline allocates nothing per frame that outlives the frame: the
 * demo's dmabuf stages (src/cli/demo-worker.ts), real workers over real heap
 * buffers, run 100,000 frames after a warm-up (the benchmarks' own run,
 * bench/pipeline-memory.ts, in a process of its own), and neither the resident set, nor the part of the
 * shared object table ever touched, nor the page arena grows; once the pipeline
 * is closed every object it made is gone. Not a timing test: only memory is
 * asserted (the frames take a few seconds).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { largestRise, memoryRunChild } from '../bench/pipeline-memory.js';

const MiB = 2 ** 20;
/** Allowed RSS rise: a leak of 42 bytes or more per frame exceeds it. */
const RSS_SLACK = 4 * MiB;

test('largestRise: the biggest climb from a sample to a later one, a drop in between not netting it out', () => {
  assert.equal(largestRise([5, 5, 5]), 0);
  assert.equal(largestRise([10, 2, 3, 9, 1]), 7);
  assert.equal(largestRise([10, 11, 12, 2, 3]), 2);
});

test('transport pipeline: RSS, table and arena flat over 100,000 frames; nothing left after close', async () => {
  const r = await memoryRunChild(10_000, 100_000);
  const rise = largestRise(r.rssSamples);
  assert.ok(rise < RSS_SLACK, `RSS rose ${(rise / MiB).toFixed(1)} MiB within ${r.frames} frames: ${r.rssSamples.map((b) => (b / MiB).toFixed(1)).join(' ')}`);
  assert.equal(r.after.slots, r.before.slots, 'table slots ever used');
  assert.equal(r.after.arenaPages, r.before.arenaPages, 'arena pages in use');
  assert.equal(r.objectsLeft, 0, 'objects left after the pipeline closed');
  assert.equal(r.arenaLeft, 0, 'arena pages left after the pipeline closed');
});
