/**
 * DOC: one stage of the demo pipeline over dmabuf buffers, in its own worker thread
 *
 * What the stage does to a frame is its work mode (stage-work.ts); this file is
 * how frames travel. Only the uapi is used: buffer fds arrive by `receiveFds`,
 * bytes are `mmap`ed once, and every hand-off is implicit sync through the
 * buffers' reservation objects. Per frame f (slot j = f % depth of each pool):
 *
 * 1. wait until the upstream stage has *submitted* frame f (its WRITE fence is on
 *    the input buffer) and the downstream stage has submitted frame f - depth (its
 *    READ fence is on the output buffer) — submission order, as a GPU queue gives
 *    (stage-control.ts);
 * 2. DMA_BUF_IOCTL_SYNC START: READ on the input waits for its writer, WRITE on
 *    the output waits for the readers of its previous frame;
 * 3. submit: a point on this stage's sw_sync timeline (SW_SYNC_IOC_CREATE_FENCE)
 *    becomes a READ fence on the input and a WRITE fence on the output
 *    (DMA_BUF_IOCTL_IMPORT_SYNC_FILE), then the stage's submitted count moves on
 *    (after the wait: a writer that attached its own fence first would wait for
 *    itself);
 * 4. do the work, SYNC END, signal the point (SW_SYNC_IOC_INC), close its fd.
 *
 * The ioctl argument structs are made once per stage and reused: the loop
 * allocates nothing of its own.
 */
import { writeFileSync } from 'node:fs';
import * as U from '../uapi/index.js';
import { LatencyLog } from './latency.js';
import { reportMismatch, stageMain, stageName, type StageConfig } from './pipeline.js';
import { StageControl } from './stage-control.js';
import { stageWork } from './stage-work.js';

/** The first message of a stage: its input and output pools as fd packets (empty for camera / display). */
export interface DmabufStageMsg {
  inFds: U.FdPacket;
  outFds: U.FdPacket;
}

const START_READ = { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_READ };
const START_WRITE = { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_WRITE };
const END_READ = { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_READ };
const END_WRITE = { flags: U.DMA_BUF_SYNC_END | U.DMA_BUF_SYNC_WRITE };

/** One pool as this stage sees it: fds, mappings, and the import argument for this stage's fences. */
class Pool {
  readonly fds: number[];
  readonly views: Uint8Array[];
  readonly words: Uint32Array[];
  readonly #importArg: { flags: number; fd: number };

  /** Map every buffer of the pool; `flags` (SYNC_READ or SYNC_WRITE) is how this stage's fences join them. */
  constructor(fds: number[], frameBytes: number, flags: number) {
    this.fds = fds;
    this.views = fds.map((fd) => U.mmap(frameBytes, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0));
    this.words = this.views.map((v) => new Uint32Array(v.buffer, v.byteOffset, frameBytes / 4));
    this.#importArg = { flags, fd: -1 };
  }

  /** DMA_BUF_IOCTL_SYNC on buffer j (`arg`: one of the START/END structs above). */
  sync(j: number, arg: object): void {
    U.ioctl(this.fds[j]!, U.DMA_BUF_IOCTL_SYNC, arg);
  }

  /** DMA_BUF_IOCTL_IMPORT_SYNC_FILE of `fence` (a sync_file fd) into buffer j. */
  attach(j: number, fence: number): void {
    this.#importArg.fd = fence;
    U.ioctl(this.fds[j]!, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, this.#importArg);
  }

  close(): void {
    for (const v of this.views) U.munmap(v);
    for (const fd of this.fds) U.close(fd);
  }
}

/**
 * Name this thread after its stage, as pthread_setname_np does (its comm), so that
 * the sw_sync timeline it opens carries the name too (sw_sync names a timeline
 * after its opener's comm): traced fences then read `camera 12`, not `node 12`.
 * Without a writable procfs the name stays as it was.
 */
function nameThread(name: string): void {
  try {
    writeFileSync('/proc/thread-self/comm', name);
  } catch {
    // not Linux, or procfs read-only: the timelines keep the process's name
  }
}

function run(cfg: StageConfig, inFds: number[], outFds: number[], ready: () => void): void {
  const ctl = new StageControl(cfg.control, cfg.stageCount);
  const latency = cfg.latency ? new LatencyLog(cfg.latency) : undefined;
  const work = stageWork(cfg);
  const input = inFds.length ? new Pool(inFds, cfg.frameBytes, U.DMA_BUF_SYNC_READ) : undefined;
  const output = outFds.length ? new Pool(outFds, cfg.frameBytes, U.DMA_BUF_SYNC_WRITE) : undefined;
  nameThread(stageName(cfg));
  const timeline = U.open('/dev/sw_sync');
  const point = { value: 0, name: cfg.role, fence: -1 };
  ready();
  for (let f = 0; f < cfg.frames; f++) {
    const j = f % cfg.depth;
    ctl.waitTurn(cfg.index, f, cfg.depth);
    input?.sync(j, START_READ);
    output?.sync(j, START_WRITE);
    point.value = f + 1;
    U.ioctl(timeline, U.SW_SYNC_IOC_CREATE_FENCE, point);
    input?.attach(j, point.fence);
    output?.attach(j, point.fence);
    if (!input) latency?.stamp(f);
    ctl.submitted(cfg.index);
    if (!input) work.produce(output!.words[j]!, f);
    else if (output) work.process(input.words[j]!, output.words[j]!, f);
    else {
      const wrong = work.check(input.words[j]!, f);
      if (wrong !== undefined) reportMismatch(ctl, f, wrong);
    }
    input?.sync(j, END_READ);
    output?.sync(j, END_WRITE);
    U.ioctl(timeline, U.SW_SYNC_IOC_INC, 1);
    U.close(point.fence);
    if (!output) {
      latency?.record(f);
      ctl.frameDone(f);
    }
  }
  U.close(timeline);
  input?.close();
  output?.close();
}

stageMain<DmabufStageMsg>('demoStage', (cfg, msg, ready) => run(cfg, U.receiveFds(msg.inFds), U.receiveFds(msg.outFds), ready));
