/**
 * DOC: the demo pipeline's `--copy` stages — what users do without dmabuf
 *
 * The same camera → gpu × n → display pipeline and the same work per frame, but
 * every hand-off posts the frame to the next stage's MessagePort as a structured
 * clone: one copy of the whole frame per hop. At most `depth` frames are in flight
 * (the display acknowledges each frame to the camera), as with the buffer pool.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { checksum, fillFrame, INVERT, RING, type StageConfig } from './demo-worker.js';

interface CopyPorts {
  /** Frames come in here (not for the camera). */
  input?: MessagePort;
  /** Frames go out here (not for the display). */
  output?: MessagePort;
  /** Display → camera acknowledgements (camera and display only). */
  ack?: MessagePort;
}

interface Frame {
  f: number;
  bytes: Uint8Array;
}

function runCamera(cfg: StageConfig, ports: CopyPorts): void {
  const sums = new Uint32Array(cfg.sums);
  const stamps = new Float64Array(cfg.stamps);
  const key = cfg.gpus % 2 === 1 ? INVERT : 0;
  let sent = 0;
  let acked = 0;
  const pump = (): void => {
    while (sent < cfg.frames && sent - acked < cfg.depth) {
      const words = new Uint32Array(cfg.frameBytes / 4);
      sums[sent % RING] = fillFrame(words, sent, cfg.width, key);
      const bytes = new Uint8Array(words.buffer);
      stamps[sent % RING] = performance.timeOrigin + performance.now();
      ports.output!.postMessage({ f: sent, bytes }); // structured clone: a copy
      sent++;
    }
    if (acked === cfg.frames) done(ports);
  };
  ports.ack!.on('message', () => {
    acked++;
    pump();
  });
  pump();
}

function runGpu(ports: CopyPorts): void {
  ports.input!.on('message', ({ f, bytes }: Frame) => {
    const src = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const out = new Uint32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = src[i]! ^ INVERT;
    ports.output!.postMessage({ f, bytes: new Uint8Array(out.buffer) });
  });
  ports.input!.on('close', () => done(ports));
}

function runDisplay(cfg: StageConfig, ports: CopyPorts): void {
  const sums = new Uint32Array(cfg.sums);
  const stamps = new Float64Array(cfg.stamps);
  const ctl = new Int32Array(cfg.control);
  let seen = 0;
  ports.input!.on('message', ({ f, bytes }: Frame) => {
    const got = checksum(new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    if (got !== sums[f % RING]) {
      Atomics.add(ctl, cfg.stageCount + 1, 1);
      parentPort!.postMessage({ kind: 'mismatch', f, expected: sums[f % RING], got });
    }
    parentPort!.postMessage({ kind: 'frame', f, latencyMs: performance.timeOrigin + performance.now() - stamps[f % RING]! });
    Atomics.add(ctl, cfg.stageCount, 1);
    ports.ack!.postMessage(f);
    if (++seen === cfg.frames) done(ports);
  });
}

function done(ports: CopyPorts): void {
  parentPort!.postMessage({ kind: 'done' });
  ports.input?.close();
  ports.output?.close();
  ports.ack?.close();
}

if (parentPort && workerData?.copyStage) {
  parentPort.once('message', (ports: CopyPorts) => {
    const cfg = workerData.copyStage as StageConfig;
    if (cfg.role === 'camera') runCamera(cfg, ports);
    else if (cfg.role === 'gpu') runGpu(ports);
    else runDisplay(cfg, ports);
  });
}
