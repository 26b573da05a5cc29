/**
 * DOC: the demo pipeline's `--copy` stages — what users do without dmabuf
 *
 * The same camera → gpu × n → display pipeline and the same work per frame
 * (stage-work.ts), but every hand-off posts the frame to the next stage's
 * MessagePort as a structured clone: one copy of the whole frame per hop. The
 * camera writes into one array of its own (the clone is the copy); a gpu stage
 * works in place on the clone it received and posts it on. At most `depth`
 * frames are in flight (the display acknowledges each frame to the camera), as
 * with the buffer pools; the camera starts frames as the control block's budget
 * allows (stage-control.ts).
 */
import type { MessagePort } from 'node:worker_threads';
import { LatencyLog } from './latency.js';
import { reportMismatch, stageMain, type StageConfig } from './pipeline.js';
import { StageControl } from './stage-control.js';
import { stageWork, type StageWork } from './stage-work.js';

/** The first message of a copy stage (its ports are in the transfer list). */
export interface CopyPorts {
  /** Frames come in here (not for the camera). */
  input?: MessagePort;
  /** Frames go out here (not for the display). */
  output?: MessagePort;
  /** Display → camera acknowledgements (camera and display only). */
  ack?: MessagePort;
}

interface Frame {
  f: number;
  words: Uint32Array;
}

interface Stage {
  cfg: StageConfig;
  ports: CopyPorts;
  ctl: StageControl;
  work: StageWork;
  latency: LatencyLog | undefined;
}

function runCamera({ cfg, ports, ctl, work, latency }: Stage): Promise<void> {
  const words = new Uint32Array(cfg.frameBytes / 4);
  let sent = 0;
  let acked = 0;
  let waiting = false;
  return new Promise((resolve) => {
    const pump = (): void => {
      const budget = ctl.granted;
      while (sent < budget && sent - acked < cfg.depth) {
        work.produce(words, sent);
        latency?.stamp(sent);
        ctl.submitted(0);
        ports.output!.postMessage({ f: sent, words } satisfies Frame); // structured clone: a copy
        sent++;
      }
      if (acked === cfg.frames) resolve();
      else if (sent === budget && sent < cfg.frames && !waiting) {
        waiting = true;
        void ctl.whenGranted(budget).then(() => {
          waiting = false;
          pump();
        });
      }
    };
    ports.ack!.on('message', () => {
      acked++;
      pump();
    });
    pump();
  });
}

function runGpu({ cfg, ports, ctl, work }: Stage): Promise<void> {
  ports.input!.on('message', ({ f, words }: Frame) => {
    work.process(words, words, f);
    ctl.submitted(cfg.index);
    ports.output!.postMessage({ f, words } satisfies Frame);
  });
  return new Promise((resolve) => ports.input!.on('close', resolve));
}

function runDisplay({ cfg, ports, ctl, work, latency }: Stage): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    ports.input!.on('message', ({ f, words }: Frame) => {
      const wrong = work.check(words, f);
      if (wrong !== undefined) reportMismatch(ctl, f, wrong);
      latency?.record(f);
      ctl.frameDone(f);
      ports.ack!.postMessage(f);
      if (++seen === cfg.frames) resolve();
    });
  });
}

stageMain<CopyPorts>('copyStage', async (cfg, ports, ready) => {
  const stage: Stage = {
    cfg, ports, ctl: new StageControl(cfg.control, cfg.stageCount), work: stageWork(cfg),
    latency: cfg.latency ? new LatencyLog(cfg.latency) : undefined,
  };
  ready();
  try {
    if (cfg.role === 'camera') await runCamera(stage);
    else if (cfg.role === 'gpu') await runGpu(stage);
    else await runDisplay(stage);
  } finally {
    ports.input?.close();
    ports.output?.close();
    ports.ack?.close();
  }
});
