/**
 * One stage of the hand-written pipeline the pipeline benchmarks compare dmabuf
 * with (bench/pipeline.bench.ts): what a user writes with SharedArrayBuffers and
 * Atomics alone. The same pools (`depth` frames between two stages, each frame a
 * SharedArrayBuffer), the same control block and waits (stage-control.ts), the
 * same work (stage-work.ts) as the dmabuf stages of src/cli/demo-worker.ts; no
 * fences, no ioctls: a stage waits for its turn, does its work, and only then
 * counts the frame as submitted (there is nothing to wait on for work in flight).
 */
import { reportMismatch, stageMain, type StageConfig } from '#cli/pipeline.js';
import { StageControl } from '#cli/stage-control.js';
import { stageWork } from '#cli/stage-work.js';

/** The first message of a ring stage: its input and output pools (empty for camera / display). */
export interface RingStageMsg {
  ins: SharedArrayBuffer[];
  outs: SharedArrayBuffer[];
}

function run(cfg: StageConfig, msg: RingStageMsg, ready: () => void): void {
  const ctl = new StageControl(cfg.control, cfg.stageCount);
  const work = stageWork(cfg);
  const ins = msg.ins.map((b) => new Uint32Array(b));
  const outs = msg.outs.map((b) => new Uint32Array(b));
  ready();
  for (let f = 0; f < cfg.frames; f++) {
    const j = f % cfg.depth;
    ctl.waitTurn(cfg.index, f, cfg.depth);
    if (ins.length === 0) work.produce(outs[j]!, f);
    else if (outs.length) work.process(ins[j]!, outs[j]!, f);
    else {
      const wrong = work.check(ins[j]!, f);
      if (wrong !== undefined) reportMismatch(ctl, f, wrong);
    }
    ctl.submitted(cfg.index);
    if (outs.length === 0) ctl.frameDone(f);
  }
}

stageMain<RingStageMsg>('ringStage', run);
