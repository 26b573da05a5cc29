/**
 * The frame pipeline allocates nothing per frame that outlives the frame: the
 * demo's dmabuf stages (src/cli/demo-worker.ts), real workers over real heap
 * buffers, run 100,000 frames after a warm-up, and neither the resident set,
 * nor the part of the shared object table ever touched, nor the page arena
 * grows; once the pipeline is closed every object it made is gone. Not a timing
 * test: only memory is asserted (the frames take a few seconds).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { arenaStats, liveObjects, tableStats } from 'dmabuf';
import { dmabufTransport } from '#cli/demo.js';
import { Pipeline, type PipelineSpec } from '#cli/pipeline.js';

const WARMUP = 10_000;
const FRAMES = 100_000;
const BATCH = 10_000;
const MiB = 2 ** 20;
/** Allowed RSS growth: a leak of 42 bytes or more per frame exceeds it. */
const RSS_SLACK = 4 * MiB;

const spec: PipelineSpec = {
  width: 2048, height: 1024, gpus: 1, depth: 3, frames: WARMUP + FRAMES, work: 'transport', latency: false,
};

function arenaInUse(): number {
  const a = arenaStats();
  return a.grownPages - a.freePages;
}

test(`transport pipeline: RSS, table and arena flat over ${FRAMES.toLocaleString('en-US')} frames; nothing left after close`, async () => {
  const objects = liveObjects();
  const arena = arenaInUse();
  const p = await Pipeline.start(spec, dmabufTransport('system'));
  try {
    await p.run(WARMUP);
    const rss = process.memoryUsage.rss();
    const touched = tableStats().touched;
    const pools = arenaInUse();
    for (let done = 0; done < FRAMES; done += BATCH) await p.run(BATCH);
    const grown = process.memoryUsage.rss() - rss;
    assert.ok(grown < RSS_SLACK, `RSS grew ${(grown / MiB).toFixed(1)} MiB over ${FRAMES} frames`);
    assert.equal(tableStats().touched, touched, 'table slots ever used');
    assert.equal(arenaInUse(), pools, 'arena pages in use');
    assert.equal(p.control.framesDone, WARMUP + FRAMES);
    assert.equal(p.control.mismatches, 0);
    await p.finish();
  } finally {
    await p.close();
  }
  assert.equal(liveObjects(), objects, 'objects left after the pipeline closed');
  assert.equal(arenaInUse(), arena, 'arena pages left after the pipeline closed');
});

test('a pipeline that is asked for more frames than it was started for refuses', async () => {
  const p = await Pipeline.start({ ...spec, frames: 10 }, dmabufTransport('system'));
  try {
    await assert.rejects(p.run(11), RangeError);
    await p.run(10);
    await assert.rejects(p.run(1), RangeError);
    await p.finish();
  } finally {
    await p.close();
  }
});
