/**
 * Fence benchmarks, each against the baseline a user would otherwise pick.
 *
 * 1. Cross-thread signal → wake round trip (main thread ⇄ one worker): dmabuf's
 *    uapi (sw_sync fds, ioctl, blocking poll), the same with `setWaitSpin(20)`, the
 *    driver API (SwSyncTimeline/DmaFence), against raw Atomics.wait/notify, raw
 *    Atomics with the same spin budget, and a MessagePort. The main thread and the
 *    worker are pinned to two cores (bench/affinity.ts: placement would otherwise
 *    decide the result), and the sleeping variants run interleaved; as a contrast,
 *    the sleeping uapi and raw variants again with both threads on one core.
 * 2. Per-fence cost in one thread: init + signal + put (with and without a
 *    callback) against a minimal plain-JS fence class.
 * 3. Atomics.notify calls made while signalling 100,000 fences nobody waits on
 *    (the design promises none), with waiters for contrast.
 *
 * Run through bench/run.ts, or alone: `node build-test/bench/fence.bench.js [--quick]`.
 */
import { MessageChannel, type TransferListItem } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { DmaFence, setWaitSpin, SwSyncTimeline, type DmaFenceOps } from 'dmabuf';
import { close, ioctl, open, sendFds, SW_SYNC_IOC_INC } from 'dmabuf/uapi';
import {
  absolute, bench, benchInterleaved, count, group, pairedRatio, publish, ratio, suite, wants, wantsAny,
  type BenchOptions, type Result,
} from './harness.js';
import { getAffinity, kernelTid, parseCpuList, setAffinity } from './affinity.js';
import { Peer } from './peer.js';
import {
  createPoint, CTL_BYTES, pollIn, rawWaitFor, W_A, W_B, W_ERROR, W_STOP, type Reply, type Start,
} from './workers/pingpong-worker.js';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/* ---- 1. cross-thread round trip ---- */

const SPIN_US = 20;

const RT = {
  uapi: '(a) uapi: sw_sync CREATE_FENCE + INC + poll(-1)',
  uapiSpin: `(b) uapi: same, setWaitSpin(${SPIN_US}) on both sides`,
  driver: '(c) driver API: createFence + inc + waitTimeout(Infinity)',
  atomics: '(d) baseline: raw Atomics.wait/notify',
  atomicsSpin: `(e) baseline: raw Atomics, spin ${SPIN_US} µs then wait`,
  port: '(f) baseline: MessagePort postMessage(number)',
} as const;

const TWO_CORES = 'cross-thread signal → wake round trip, main thread and worker pinned to two cores (time per round trip)';
const ONE_CORE = 'cross-thread round trip with both threads pinned to one core (contrast, time per round trip)';

/**
 * Sleeping variants (a), (c), (d), measured interleaved: short rounds, one of each
 * per block, so every block's (a)/(d) compares the same machine state.
 */
const SLEEPING: BenchOptions = { iterations: 5_000, warmup: 2_000, rounds: 15, batch: true, quickIterations: 200 };
/** Spinning variants: round trips per round (full run). */
const BLOCKING: BenchOptions = { iterations: 10_000, warmup: 2_000, rounds: 7, batch: true, quickIterations: 200 };
/** MessagePort: slower per trip, fewer of them. */
const PORTED: BenchOptions = { iterations: 5_000, warmup: 1_000, rounds: 7, batch: true, quickIterations: 200 };

interface Variant {
  start: Start;
  transfer?: readonly TransferListItem[];
  /** n round trips, driven from this thread. */
  batch: (n: number) => void | Promise<void>;
  /** Round trips this thread has completed. */
  trips: () => number;
  /** Make the worker leave its loop (set STOP and wake it once more). */
  stop: () => void;
  /** setWaitSpin budget for this thread during the measurement (0: off). */
  spinUs?: number;
  /** Release what the variant opened in this thread, once its worker has stopped. */
  cleanup?: () => void;
}

/**
 * Where this group's threads run (see affinity.ts): this thread on the first CPU it
 * may use, each worker on the second (two cores) or the same one (one core).
 */
interface Placement {
  /** Pin a worker thread (kernel thread id) where this placement puts workers. */
  worker(tid: number): void;
  /** Give this thread back the CPUs it had. */
  restore(): void;
}

const UNPINNED: Placement = { worker: () => {}, restore: () => {} };
let placement = UNPINNED;

/**
 * Pin this thread for the group `name` and set the placement workers get. If
 * pinning is not possible, the group is measured unpinned and its heading says so.
 */
function place(name: string, oneCore: boolean): void {
  group(name);
  const me = kernelTid();
  const saved = getAffinity(me);
  const cpus = saved === undefined ? [] : parseCpuList(saved);
  const mainCpu = cpus[0];
  const workerCpu = oneCore ? cpus[0] : cpus[1];
  if (saved === undefined || mainCpu === undefined || workerCpu === undefined || !setAffinity(me, String(mainCpu))) {
    group(`${name}: NOT pinned (taskset failed or too few CPUs)`);
    placement = UNPINNED;
    return;
  }
  placement = {
    worker: (tid) => {
      if (!setAffinity(tid, String(workerCpu))) throw new Error(`could not pin worker thread ${tid} to CPU ${workerCpu}`);
    },
    restore: () => void setAffinity(me, saved),
  };
}

/** Undo `place`. */
function unplace(): void {
  placement.restore();
  placement = UNPINNED;
}

/** A variant whose worker is running its loop. */
interface Running {
  name: string;
  v: Variant;
  peer: Peer<Start, Reply>;
}

/**
 * Start `v` in a fresh worker and wait until its loop is ready. (A fresh worker per
 * variant keeps variants apart: no spin budget or cached state carries over.)
 */
async function launch(name: string, v: Variant): Promise<Running> {
  const peer = new Peer<Start, Reply>(new URL('./workers/pingpong-worker.js', import.meta.url), 'pingpong worker');
  try {
    peer.post(v.start, v.transfer ?? []);
    const ready = await peer.next();
    if (ready.ev !== 'ready') throw new Error(`${name}: worker failed to start: ${ready.error ?? '?'}`);
    placement.worker(ready.tid);
    return { name, v, peer };
  } catch (e) {
    await peer.exit({ cmd: 'exit' });
    v.cleanup?.();
    throw e;
  }
}

/** Stop a running variant, check both sides agree on the trip count, let the worker exit. */
async function finish({ name, v, peer }: Running): Promise<void> {
  try {
    v.stop();
    const done = await peer.next();
    if (done.ev !== 'done') throw new Error(`${name}: unexpected reply ${done.ev}`);
    if (done.error !== undefined) throw new Error(`${name}: worker failed: ${done.error}`);
    if (done.trips !== v.trips()) throw new Error(`${name}: worker made ${done.trips} round trips, main ${v.trips()}`);
  } finally {
    await peer.exit({ cmd: 'exit' });
    v.cleanup?.();
  }
}

/** Measure one variant on its own. */
async function pingPong(name: string, opts: BenchOptions, make: () => Variant): Promise<Result | undefined> {
  if (!wants(name)) return undefined;
  const run = await launch(name, make());
  setWaitSpin(run.v.spinUs ?? 0);
  try {
    return await bench(name, run.v.batch, opts);
  } finally {
    setWaitSpin(0);
    await finish(run);
  }
}

/** Measure several variants (none spinning) at once, in interleaved rounds (`benchInterleaved`). */
async function pingPongInterleaved(
  opts: BenchOptions, makers: ReadonlyArray<readonly [string, () => Variant]>,
): Promise<Array<Result | undefined>> {
  const runs: Running[] = [];
  try {
    for (const [name, make] of makers) if (wants(name)) runs.push(await launch(name, make()));
    const out = await benchInterleaved(runs.map((r) => ({ name: r.name, fn: r.v.batch })), opts);
    return makers.map(([name]) => out[runs.findIndex((r) => r.name === name)]);
  } finally {
    for (const r of runs) await finish(r);
  }
}

/** (a)/(b): two sw_sync timelines opened here and sent to the worker; blocking poll on sync_file fds. */
function uapiVariant(spinUs: number): Variant {
  const sab = new SharedArrayBuffer(CTL_BYTES);
  const ctl = new Int32Array(sab);
  const fa = open('/dev/sw_sync'); // main → worker: this thread INCs, the worker polls
  const fb = open('/dev/sw_sync'); // worker → main
  let v = 0;
  let fd = -1; // the sync_file of the last point waited for, closed after the next INC
  return {
    start: { cmd: 'start', mode: 'uapi', ctl: sab, spinUs, fds: sendFds([fa, fb]) },
    spinUs,
    batch: (n) => {
      for (let k = 0; k < n; k++) {
        ioctl(fa, SW_SYNC_IOC_INC, 1); // signal first, then prepare the next wait (see the worker)
        if (fd >= 0) close(fd);
        fd = createPoint(fb, ++v);
        pollIn(fd);
      }
      if (Atomics.load(ctl, W_ERROR)) throw new Error('worker loop failed');
    },
    trips: () => v,
    stop: () => {
      Atomics.store(ctl, W_STOP, 1);
      ioctl(fa, SW_SYNC_IOC_INC, 1);
    },
    cleanup: () => {
      if (fd >= 0) close(fd);
      close(fa);
      close(fb);
    },
  };
}

/** (c): the same with the driver API, no fds. */
function driverVariant(): Variant {
  const sab = new SharedArrayBuffer(CTL_BYTES);
  const ctl = new Int32Array(sab);
  const tla = SwSyncTimeline.create('pingpong-a');
  const tlb = SwSyncTimeline.create('pingpong-b');
  let v = 0;
  let f: DmaFence | undefined; // the last point waited for, dropped after the next inc
  return {
    start: { cmd: 'start', mode: 'driver', ctl: sab, spinUs: 0, timelines: [tla.share(), tlb.share()] },
    batch: (n) => {
      for (let k = 0; k < n; k++) {
        tla.inc(1); // signal first, then prepare the next wait (see the worker)
        f?.put();
        f = tlb.createFence(++v);
        f.waitTimeout(Infinity);
      }
      if (Atomics.load(ctl, W_ERROR)) throw new Error('worker loop failed');
    },
    trips: () => v,
    stop: () => {
      Atomics.store(ctl, W_STOP, 1);
      tla.inc(1);
    },
    cleanup: () => {
      f?.put();
      tla.close();
      tlb.close();
    },
  };
}

/** (d)/(e): raw Atomics on a SharedArrayBuffer, optionally spinning `spinUs` before each wait. */
function atomicsVariant(spinUs: number): Variant {
  const sab = new SharedArrayBuffer(CTL_BYTES);
  const ctl = new Int32Array(sab);
  const spinMs = spinUs / 1000;
  let v = 0;
  return {
    start: { cmd: 'start', mode: 'atomics', ctl: sab, spinUs },
    batch: (n) => {
      for (let k = 0; k < n; k++) {
        Atomics.store(ctl, W_A, ++v);
        Atomics.notify(ctl, W_A);
        if (!rawWaitFor(ctl, W_B, v, spinMs)) throw new Error('worker loop failed');
      }
    },
    trips: () => v,
    stop: () => {
      Atomics.store(ctl, W_STOP, 1);
      Atomics.store(ctl, W_A, -1);
      Atomics.notify(ctl, W_A);
    },
  };
}

/** (f): MessagePort echo of a small number, event-driven (no promise per trip). */
function portVariant(): Variant {
  const { port1, port2 } = new MessageChannel();
  let left = 0;
  let trips = 0;
  let finish: (() => void) | undefined;
  port1.on('message', () => {
    trips++;
    if (--left > 0) port1.postMessage(left);
    else {
      const f = finish;
      finish = undefined;
      f?.();
    }
  });
  return {
    start: { cmd: 'start', mode: 'port', port: port2 },
    transfer: [port2],
    batch: (n) => new Promise<void>((resolve) => {
      left = n;
      finish = resolve;
      port1.postMessage(n);
    }),
    trips: () => trips,
    stop: () => port1.postMessage(-1),
    cleanup: () => port1.close(),
  };
}

/** Every variant, the main thread and the worker each pinned to its own core. */
async function onTwoCores(): Promise<void> {
  const [a, c, d] = await pingPongInterleaved(SLEEPING, [
    [RT.uapi, () => uapiVariant(0)],
    [RT.driver, driverVariant],
    [RT.atomics, () => atomicsVariant(0)],
  ]);
  const b = await pingPong(RT.uapiSpin, BLOCKING, () => uapiVariant(SPIN_US));
  const e = await pingPong(RT.atomicsSpin, BLOCKING, () => atomicsVariant(SPIN_US));
  const f = await pingPong(RT.port, PORTED, portVariant);
  pairedRatio('(a)/(d) uapi poll vs raw Atomics, median of interleaved blocks', a, d, { op: '<=', value: 1.2 });
  pairedRatio('(c)/(d) driver API vs raw Atomics, median of interleaved blocks', c, d);
  ratio('(b)/(e) uapi + setWaitSpin vs raw spin-then-wait', b, e);
  absolute('(b) uapi + setWaitSpin, per round trip', b, { op: '<', value: 5 });
  ratio('(f)/(a) MessagePort vs uapi poll', f, a);
}

/**
 * (a) and (d) with both threads on one core: a wake-up is then a context switch, not
 * a cross-core wake, and what each side does per trip shows instead of hiding
 * behind the wake latency.
 */
async function onOneCore(): Promise<void> {
  const [a, d] = await pingPongInterleaved(SLEEPING, [
    [RT.uapi, () => uapiVariant(0)],
    [RT.atomics, () => atomicsVariant(0)],
  ]);
  pairedRatio('(a)/(d) on one core, median of interleaved blocks', a, d);
}

async function crossThread(): Promise<void> {
  group(TWO_CORES);
  if (wantsAny(Object.values(RT))) {
    place(TWO_CORES, false);
    try {
      await onTwoCores();
    } finally {
      unplace();
    }
  }
  group(ONE_CORE);
  if (wantsAny([RT.uapi, RT.atomics])) {
    place(ONE_CORE, true);
    try {
      await onOneCore();
    } finally {
      unplace();
    }
  }
}

/* ---- 2. per-fence cost, single thread ---- */

type PlainCallback = (fence: PlainFence) => void;

/** The floor: a minimal single-thread fence in plain JS. */
class PlainFence {
  context: bigint;
  seqno: number;
  status = 0;
  error = 0;
  timestamp = 0;
  callbacks: PlainCallback[] = [];

  constructor(context: bigint, seqno: number) {
    this.context = context;
    this.seqno = seqno;
  }

  addCallback(cb: PlainCallback): number {
    if (this.status !== 0) return -2; // -ENOENT
    this.callbacks.push(cb);
    return 0;
  }

  signal(): number {
    if (this.status !== 0) return -22; // -EINVAL
    this.status = this.error < 0 ? this.error : 1;
    this.timestamp = performance.now();
    const cbs = this.callbacks;
    this.callbacks = [];
    for (const cb of cbs) cb(this);
    return 0;
  }

  put(): void {
    // nothing to release: the garbage collector does it
  }
}

const OPS: DmaFenceOps = { getDriverName: () => 'bench', getTimelineName: () => 'fence-bench' };
const PER_FENCE: BenchOptions = { iterations: 100_000, warmup: 20_000, rounds: 7, settle: true, quickIterations: 2_000 };

async function perFence(): Promise<void> {
  group('per-fence cost, single thread (time per fence)');
  const ctx = DmaFence.contextAlloc(1);
  let fired = 0;
  let calls = 0;
  const cb = (): void => {
    fired++;
  };
  const a = await bench('(a) DmaFence.init + signal + put', (i) => {
    const f = DmaFence.init(OPS, ctx, i);
    f.signal();
    f.put();
  }, PER_FENCE);
  const b = await bench('(b) DmaFence.init + addCallback + signal + put', (i) => {
    const f = DmaFence.init(OPS, ctx, i);
    f.addCallback(cb);
    f.signal();
    f.put();
    calls++;
  }, PER_FENCE);
  if (fired !== calls) throw new Error(`(b): ${calls} fences signalled but ${fired} callbacks ran`);
  fired = calls = 0;
  // (a) and (b) stay private to this thread (no shared slot, no atomics) - the common case for a
  // driver's fences. (c) is what a fence that other threads can see costs: a zero-timeout wait
  // gives it its slot in the shared table, as share(), a sync_file or a container would.
  const c = await bench('(c) same as (a), but shared: init + waitTimeout(0) + signal + put', (i) => {
    const f = DmaFence.init(OPS, ctx, i);
    f.waitTimeout(0);
    f.signal();
    f.put();
  }, PER_FENCE);
  const fa = await bench('floor (a): plain JS fence, new + signal + put', (i) => {
    const f = new PlainFence(ctx, i);
    f.signal();
    f.put();
  }, PER_FENCE);
  const fb = await bench('floor (b): plain JS fence, new + addCallback + signal + put', (i) => {
    const f = new PlainFence(ctx, i);
    f.addCallback(cb);
    f.signal();
    f.put();
    calls++;
  }, PER_FENCE);
  if (fired !== calls) throw new Error(`floor (b): ${calls} fences signalled but ${fired} callbacks ran`);
  ratio('(a)/floor (a)', a, fa, { op: '<=', value: 3 });
  ratio('(b)/floor (b)', b, fb, { op: '<=', value: 3 });
  ratio('(c)/floor (a) a fence in the shared table', c, fa);
}

/* ---- 3. no wake syscall when nobody waits ---- */

const SIGNALS = 100_000;
const BATCH = 1_000;

/**
 * Calls to Atomics.notify made by this thread inside `counted(...)` sections while
 * `work` runs. Atomics.notify is wrapped for this measurement only and restored after.
 */
async function countNotifies(work: (counted: (section: () => void) => void) => void | Promise<void>): Promise<number> {
  const original = Atomics.notify;
  let calls = 0;
  let on = false;
  Atomics.notify = function countingNotify(...args: unknown[]): number {
    if (on) calls++;
    return Reflect.apply(original, Atomics, args) as number;
  } as typeof Atomics.notify;
  const counted = (section: () => void): void => {
    on = true;
    try {
      section();
    } finally {
      on = false;
    }
  };
  try {
    await work(counted);
  } finally {
    Atomics.notify = original;
  }
  return calls;
}

async function notifyCounts(): Promise<void> {
  group(`Atomics.notify calls while signalling ${SIGNALS.toLocaleString('en-US')} fences`);
  const ctx = DmaFence.contextAlloc(1);
  const zero = { op: '==', value: 0 } as const;

  const noWaiter = 'no waiter: DmaFence.init + signal + put';
  if (wants(noWaiter)) {
    const n = await countNotifies((counted) => counted(() => {
      for (let i = 0; i < SIGNALS; i++) {
        const f = DmaFence.init(OPS, ctx, i);
        if (f.signal() !== 0) throw new Error('signal failed');
        f.put();
      }
    }));
    count(noWaiter, n, 'calls', zero);
  }

  const noWaiterSw = 'no waiter: sw_sync createFence + inc + put';
  if (wants(noWaiterSw)) {
    const tl = SwSyncTimeline.create('notify-count');
    try {
      const n = await countNotifies((counted) => counted(() => {
        for (let i = 1; i <= SIGNALS; i++) {
          const f = tl.createFence(i);
          tl.inc(1);
          if (f.getStatus() !== 1) throw new Error('sw_sync point did not signal');
          f.put();
        }
      }));
      count(noWaiterSw, n, 'calls', zero);
    } finally {
      tl.close();
    }
  }

  const asyncWaiter = 'contrast: one waitAsync() waiter on each fence (calls made by signal)';
  if (wants(asyncWaiter)) {
    const n = await countNotifies(async (counted) => {
      for (let done = 0; done < SIGNALS; done += BATCH) {
        const fences = Array.from({ length: BATCH }, (_, k) => DmaFence.init(OPS, ctx, done + k));
        const waits = fences.map((f) => f.waitAsync());
        counted(() => {
          for (const f of fences) f.signal();
        });
        const rs = await Promise.all(waits);
        if (rs.some((r) => r !== 0)) throw new Error('waitAsync did not resolve 0');
        for (const f of fences) f.put();
      }
    });
    count(asyncWaiter, n, 'calls');
  }

  const localCb = 'contrast: addCallback in the signalling thread (calls made by signal)';
  if (wants(localCb)) {
    let fired = 0;
    const n = await countNotifies(async (counted) => {
      for (let done = 0; done < SIGNALS; done += BATCH) {
        const fences = Array.from({ length: BATCH }, (_, k) => DmaFence.init(OPS, ctx, done + k));
        for (const f of fences) f.addCallback(() => void fired++);
        counted(() => {
          for (const f of fences) f.signal();
        });
        await turn(); // let the callbacks' armed waitAsync settle before the slots are freed
        for (const f of fences) f.put();
      }
    });
    if (fired !== SIGNALS) throw new Error(`${fired} of ${SIGNALS} callbacks ran`);
    count(localCb, n, 'calls');
  }
}

/* ---- entry points ---- */

/** Run every fence benchmark (bench/run.ts calls this). */
export async function run(): Promise<void> {
  suite('fence');
  console.log('fence');
  await crossThread();
  await turn();
  await perFence();
  await turn();
  await notifyCounts();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run();
  console.log(publish());
}
