/**
 * The frame pipeline behind `dmabuf demo` and the pipeline benchmarks
 * (src/cli/pipeline.ts, stage-work.ts, stage-control.ts, latency.ts): what each
 * work mode does to a frame and how the display catches a wrong one; every work
 * mode over dmabuf buffers and over postMessage copies in real workers, batch
 * after batch; a miswired pipeline failing with EBADMSG; bad specs refused.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyTransport, dmabufTransport } from '#cli/demo.js';
import { latencyPercentiles, LatencyLog } from '#cli/latency.js';
import { Pipeline, type PipelineSpec, type StageConfig, type Transport } from '#cli/pipeline.js';
import { RING, stageWork, WORK_MODES, type WorkConfig, type WorkMode } from '#cli/stage-work.js';
import { guard } from './support/async.js';

const SMALL: PipelineSpec = { width: 16, height: 8, gpus: 1, depth: 2, frames: 60, work: 'demo', latency: true };

function workConfig(work: WorkMode, gpus: number): WorkConfig {
  return { work, width: 16, gpus, sums: new SharedArrayBuffer(4 * RING) };
}

/** Frame f through camera → gpus × process → check, over plain arrays. */
function pass(work: WorkMode, gpus: number, f: number, tamper?: (frame: Uint32Array) => void): string | undefined {
  const w = stageWork(workConfig(work, gpus));
  let frame = new Uint32Array(128);
  w.produce(frame, f);
  for (let g = 0; g < gpus; g++) {
    const out = new Uint32Array(128);
    w.process(frame, out, f);
    frame = out;
  }
  tamper?.(frame);
  return w.check(frame, f);
}

describe('stage work', () => {
  test('every mode: a frame that went through every stage checks out', () => {
    for (const work of WORK_MODES) {
      for (const gpus of [0, 1, 3]) assert.equal(pass(work, gpus, 7), undefined, `${work}, ${gpus} gpus`);
    }
  });

  test('the display catches a stale frame, a skipped stage and a changed word', () => {
    for (const work of ['write', 'transport'] as const) {
      assert.match(pass(work, 1, 7, (fr) => (fr[0] = 4))!, /header \[4, 1\], expected \[7, 1\]/);
      assert.match(pass(work, 1, 7, (fr) => (fr[1] = 0))!, /expected \[7, 1\]/);
    }
    assert.match(pass('demo', 1, 7, (fr) => (fr[100]! ^= 1))!, /checksum/);
  });

  test('write fills every word with frame-dependent content; transport leaves the body alone', () => {
    const write = stageWork(workConfig('write', 1));
    const a = new Uint32Array(64);
    const b = new Uint32Array(64);
    write.produce(a, 1);
    write.produce(b, 2);
    assert.ok(a.subarray(2).every((v, i) => v !== b[i + 2]), 'every body word differs between frames');
    const body = new Uint32Array(64).fill(0xdead);
    stageWork(workConfig('transport', 1)).produce(body, 9);
    assert.deepEqual([...body.subarray(0, 3)], [9, 0, 0xdead]);
  });

  test('an unknown mode is a TypeError', () => {
    assert.throws(() => stageWork(workConfig('paint' as WorkMode, 1)), TypeError);
  });
});

describe('pipelines in worker threads', () => {
  for (const [name, transport] of [['dmabuf', dmabufTransport('system')], ['copy', copyTransport]] as const) {
    for (const work of WORK_MODES) {
      test(`${name}, ${work}: three batches, every frame checked, latencies counted`, async () => {
        const p = await guard(Pipeline.start({ ...SMALL, work }, transport));
        try {
          for (const n of [10, 20, 30]) await guard(p.run(n), `${name} ${work} run(${n})`);
          assert.equal(p.control.framesDone, 60);
          assert.equal(p.control.mismatches, 0);
          assert.equal(p.latency!.snapshot().reduce((a, b) => a + b, 0), 60);
          await guard(p.finish());
        } finally {
          await p.close();
        }
      });
    }
  }

  test('a display wired to buffers nobody writes fails the run with EBADMSG', async () => {
    const miswired = (cfgs: StageConfig[]): Transport => {
      const real = dmabufTransport('system')(cfgs);
      const stray = dmabufTransport('system')(cfgs); // buffers of the same shape that no stage writes
      return {
        ...real,
        wire: (cfg) => (cfg.role === 'display' ? stray.wire(cfg) : real.wire(cfg)),
        close: () => {
          real.close?.();
          stray.close?.();
        },
      };
    };
    const p = await guard(Pipeline.start({ ...SMALL, work: 'transport' }, miswired));
    try {
      await assert.rejects(guard(p.run(5)), { code: 'EBADMSG' });
    } finally {
      await p.close();
    }
  });

  test('a pipeline asked for more frames than it was started for, or after close, refuses', async () => {
    const p = await Pipeline.start({ width: 64, height: 64, gpus: 1, depth: 3, frames: 10, work: 'transport', latency: false }, dmabufTransport('system'));
    try {
      await assert.rejects(p.run(11), RangeError);
      await p.run(10);
      await assert.rejects(p.run(1), RangeError);
      await p.finish();
    } finally {
      await p.close();
    }
    await assert.rejects(p.run(1), { code: 'EPIPE' });
  });

  test('bad specs are RangeErrors naming the field', async () => {
    const bad: Array<[Partial<PipelineSpec>, RegExp]> = [
      [{ width: 0 }, /width/], [{ depth: 65 }, /depth/], [{ gpus: 1.5 }, /gpus/], [{ frames: -1 }, /frames/],
      [{ work: 'paint' as WorkMode }, /work/], [{ work: 'write', width: 1, height: 1 }, /at least 2 pixels/],
    ];
    for (const [change, msg] of bad) {
      await assert.rejects(Pipeline.start({ ...SMALL, ...change }, copyTransport), (e: unknown) => e instanceof RangeError && msg.test(e.message));
    }
  });
});

test('latency percentiles come from the histogram, within its 2% buckets', () => {
  const log = new LatencyLog(LatencyLog.create());
  const sab = LatencyLog.create();
  const stamps = new Float64Array(sab, 0, RING);
  const view = new LatencyLog(sab);
  const now = performance.timeOrigin + performance.now();
  for (let f = 0; f < 100; f++) stamps[f] = now - (f + 1); // frame f: (f + 1) ms ago
  for (let f = 0; f < 100; f++) view.record(f);
  const p = latencyPercentiles(view.snapshot());
  assert.ok(Math.abs(p.p50 - 51) / 51 < 0.03, `p50 ${p.p50}`);
  assert.ok(Math.abs(p.p99 - 100) / 100 < 0.03, `p99 ${p.p99}`);
  assert.deepEqual(latencyPercentiles(log.snapshot()), { p50: 0, p90: 0, p99: 0 });
});
