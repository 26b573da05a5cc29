/**
 * Buffer benchmarks (issue 4), each against the baseline a user would otherwise
 * pick where there is one.
 *
 * 1. Allocate + free, for every heap (`DmaHeap.list()` for the driver API,
 *    `readdir('/dev/dma_heap')` for the uapi) and 4 KiB, 1 MiB, 8 MiB: the driver
 *    API (`heap.alloc(size)` + `close()`) and the uapi (DMA_HEAP_IOCTL_ALLOC +
 *    `close(fd)`), against `new SharedArrayBuffer(size)` (freed by the garbage
 *    collector, whose work lands in the timed rounds).
 * 2. A CPU-access bracket on an idle buffer: DMA_BUF_IOCTL_SYNC START + END
 *    (uapi) and `beginCpuAccess` + `endCpuAccess` (driver API).
 * 3. Sync-file round trip through a buffer: DMA_BUF_IOCTL_EXPORT_SYNC_FILE, then
 *    IMPORT_SYNC_FILE of that fd and `close`; on an idle buffer (the stub fence)
 *    and on one holding a pending write fence (which the import re-adds).
 * 4. attach + mapUnlocked + unmapUnlocked + detach of a static attachment, for
 *    every heap and the three sizes (the sg table grows with the size).
 * 5. Handing an 8 MiB and a 64 MiB buffer to a worker and back, the worker
 *    touching one byte: dmabuf (`sendFds` + postMessage, `receiveFds` + `mmap` +
 *    `munmap` in the worker, and the same way back), against postMessage of a
 *    structured clone of an ArrayBuffer, of a transferred ArrayBuffer, and of a
 *    raw SharedArrayBuffer. Every variant sends the buffer back the way it came,
 *    checks the worker's byte arrived, and runs in its own worker over its own
 *    MessagePort; the variants' rounds are interleaved (harness
 *    `benchInterleavedEach`). Every variant's worker is pinned to the second CPU
 *    and the main thread to the first (placement decides a round trip's cost more
 *    than the work does: `pinSpread`); for 8 MiB a contrast with both threads on
 *    one core. Target (issue 4): within 1.5× of the raw SharedArrayBuffer.
 *
 * Run through bench/run.ts, or alone: `node build-test/bench/buffer.bench.js [--quick]`.
 */
import { MessageChannel } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { DMA_BIDIRECTIONAL, DmaBuf, DmaBufAttachment, DmaHeap, PAGE_SIZE } from 'dmabuf';
import {
  close, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_RW, DMA_BUF_SYNC_START, DMA_BUF_SYNC_WRITE, DMA_HEAP_IOCTL_ALLOC, dmaBufGet, ioctl, MAP_SHARED, mmap,
  munmap, O_CLOEXEC, O_RDWR, open, PROT_READ, PROT_WRITE, readdir, receiveFds, sendFds, SW_SYNC_IOC_CREATE_FENCE,
  SW_SYNC_IOC_INC,
} from 'dmabuf/uapi';
import {
  absolute, bench, benchInterleavedEach, group, publish, ratio, suite, wants, wantsAny, type BenchOptions, type Result,
} from './harness.js';
import { getAffinity, kernelTid, parseCpuList, setAffinity } from './affinity.js';
import { Peer } from './peer.js';
import type { Mode, Reply, Start } from './workers/handoff-worker.js';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = [4 * KiB, 1 * MiB, 8 * MiB] as const;

function sizeName(bytes: number): string {
  return bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / KiB} KiB`;
}

/** Allocate a buffer of `size` from the heap named `name` (driver API). */
function heapAlloc(name: string, size: number): DmaBuf {
  const heap = DmaHeap.find(name);
  if (!heap) throw new Error(`no heap ${name}`);
  return heap.alloc(size);
}

/** DMA_HEAP_IOCTL_ALLOC on an open heap fd: the new buffer's fd. */
function uapiAlloc(heapFd: number, size: number): number {
  const data = { len: size, fd: 0, fd_flags: O_RDWR | O_CLOEXEC, heap_flags: 0 };
  ioctl(heapFd, DMA_HEAP_IOCTL_ALLOC, data);
  return data.fd;
}

/* ---- 1. allocate + free ---- */

/** Fewer operations per round as the size (and the zeroing) grows. */
function allocOpts(size: number): BenchOptions {
  if (size <= 4 * KiB) return { iterations: 20_000, warmup: 2_000, rounds: 7, quickIterations: 200 };
  if (size <= 1 * MiB) return { iterations: 1_000, warmup: 200, rounds: 7, quickIterations: 20 };
  return { iterations: 100, warmup: 20, rounds: 7, quickIterations: 10 };
}

async function allocFree(size: number): Promise<void> {
  const sz = sizeName(size);
  group(`allocate + free, ${sz} (time per allocate + free)`);
  const driverHeaps = DmaHeap.list().map((h) => h.name);
  const uapiHeaps = readdir('/dev/dma_heap');
  const names = {
    driver: (h: string) => `driver API: DmaHeap '${h}' alloc(${sz}) + close`,
    uapi: (h: string) => `uapi: /dev/dma_heap/${h} DMA_HEAP_IOCTL_ALLOC(${sz}) + close(fd)`,
    sab: `baseline: new SharedArrayBuffer(${sz})`,
    touched: `contrast: new SharedArrayBuffer(${sz}) + one write per 4 KiB page`,
  };
  if (!wantsAny([...driverHeaps.map(names.driver), ...uapiHeaps.map(names.uapi), names.sab, names.touched])) return;
  const opts = allocOpts(size);
  let sink = 0;

  const sab = await bench(names.sab, () => {
    sink += new SharedArrayBuffer(size).byteLength;
  }, opts);
  // A new SharedArrayBuffer's pages are zero-filled by the OS on first touch, after
  // the timing above; a heap buffer's are zeroed (and resident) when allocate returns.
  const touched = await bench(names.touched, () => {
    const u8 = new Uint8Array(new SharedArrayBuffer(size));
    for (let at = 0; at < size; at += PAGE_SIZE) u8[at] = 1;
    sink += u8[0]!;
  }, opts);

  const driver = new Map<string, Result | undefined>();
  for (const h of driverHeaps) {
    driver.set(h, await bench(names.driver(h), () => {
      const buf = heapAlloc(h, size);
      sink += buf.size;
      buf.close();
    }, opts));
    await turn();
  }
  const uapi = new Map<string, Result | undefined>();
  for (const h of uapiHeaps) {
    if (!wants(names.uapi(h))) continue;
    const heapFd = open(`/dev/dma_heap/${h}`, O_RDWR | O_CLOEXEC);
    try {
      uapi.set(h, await bench(names.uapi(h), () => {
        const fd = uapiAlloc(heapFd, size);
        sink += fd;
        close(fd);
      }, opts));
    } finally {
      close(heapFd);
    }
    await turn();
  }
  if (sink < 0) console.log(sink); // keep the results alive

  for (const h of driverHeaps) ratio(`driver API '${h}' / SharedArrayBuffer, ${sz}`, driver.get(h), sab);
  for (const h of uapiHeaps) ratio(`uapi '${h}' / SharedArrayBuffer, ${sz}`, uapi.get(h), sab);
  for (const h of driverHeaps) ratio(`driver API '${h}' / SharedArrayBuffer with pages touched, ${sz}`, driver.get(h), touched);
}

/* ---- 2. CPU-access bracket on an idle buffer ---- */

const SMALL_OPS: BenchOptions = { iterations: 50_000, warmup: 5_000, rounds: 7, quickIterations: 500 };

async function cpuAccess(): Promise<void> {
  group('CPU-access bracket on an idle buffer (time per START + END pair)');
  const names = {
    uapi: 'uapi: DMA_BUF_IOCTL_SYNC START|RW + END|RW',
    driver: 'driver API: beginCpuAccess(BIDIRECTIONAL) + endCpuAccess',
  };
  if (!wantsAny(Object.values(names))) return;
  const heap = DmaHeap.list()[0]!;
  const buf = heap.alloc(1 * MiB);
  const fd = open(`/dev/dma_heap/${heap.name}`, O_RDWR | O_CLOEXEC);
  const bufFd = uapiAlloc(fd, 1 * MiB);
  close(fd);
  const start = { flags: DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW };
  const end = { flags: DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW };
  try {
    const u = await bench(names.uapi, () => {
      ioctl(bufFd, DMA_BUF_IOCTL_SYNC, start);
      ioctl(bufFd, DMA_BUF_IOCTL_SYNC, end);
    }, SMALL_OPS);
    const d = await bench(names.driver, () => {
      buf.beginCpuAccess(DMA_BIDIRECTIONAL);
      buf.endCpuAccess(DMA_BIDIRECTIONAL);
    }, SMALL_OPS);
    absolute('uapi SYNC START + END, per pair', u);
    absolute('driver API begin + endCpuAccess, per pair', d);
    ratio('uapi / driver API (the cost of the fd layer)', u, d);
  } finally {
    buf.close();
    close(bufFd);
  }
}

/* ---- 3. export + import of a sync file ---- */

async function syncFileRoundTrip(): Promise<void> {
  group('sync file out of and back into a buffer (time per EXPORT + IMPORT + close)');
  const names = {
    idle: 'uapi: EXPORT_SYNC_FILE(WRITE) + IMPORT_SYNC_FILE(WRITE) + close, idle buffer',
    pending: 'uapi: same, buffer holding one pending write fence',
    driver: 'driver API: exportSyncFile(write) + importSyncFile + close, idle buffer',
  };
  if (!wantsAny(Object.values(names))) return;
  const heap = DmaHeap.list()[0]!;
  const heapFd = open(`/dev/dma_heap/${heap.name}`, O_RDWR | O_CLOEXEC);
  const idleFd = uapiAlloc(heapFd, 1 * MiB);
  const busyFd = uapiAlloc(heapFd, 1 * MiB);
  close(heapFd);
  const timeline = open('/dev/sw_sync');
  const roundTrip = (bufFd: number): void => {
    const exp = { flags: DMA_BUF_SYNC_WRITE, fd: -1 };
    ioctl(bufFd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, exp);
    ioctl(bufFd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: DMA_BUF_SYNC_WRITE, fd: exp.fd });
    close(exp.fd);
  };
  const idleBuf = dmaBufGet(idleFd);
  try {
    // The pending fence: point 1 of a fresh sw_sync timeline (at 0), added as a writer.
    const point = { value: 1, name: 'buffer-bench', fence: -1 };
    ioctl(timeline, SW_SYNC_IOC_CREATE_FENCE, point);
    ioctl(busyFd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: DMA_BUF_SYNC_WRITE, fd: point.fence });
    close(point.fence);

    const idle = await bench(names.idle, () => roundTrip(idleFd), SMALL_OPS);
    const pending = await bench(names.pending, () => roundTrip(busyFd), SMALL_OPS);
    const drv = await bench(names.driver, () => {
      const sf = idleBuf.exportSyncFile(true);
      idleBuf.importSyncFile(sf, true);
      sf.close();
    }, SMALL_OPS);
    absolute('uapi export + import, idle buffer', idle);
    absolute('uapi export + import, one pending fence', pending);
    ratio('uapi / driver API, idle buffer', idle, drv);
  } finally {
    ioctl(timeline, SW_SYNC_IOC_INC, 1); // signal the pending fence before the buffer goes
    close(timeline);
    idleBuf.close();
    close(idleFd);
    close(busyFd);
  }
}

/* ---- 4. attach + map + unmap + detach ---- */

async function attachMap(): Promise<void> {
  group('attach + mapUnlocked + unmapUnlocked + detach, static importer (time per sequence)');
  const heaps = DmaHeap.list();
  const name = (h: string, size: number): string => `DmaHeap '${h}', ${sizeName(size)}`;
  if (!wantsAny(heaps.flatMap((h) => SIZES.map((s) => name(h.name, s))))) return;
  const dev = { name: 'bench-dev' }; // defaults: 32-bit mask, 64 KiB segments
  let entries = 0;
  const results: Array<[string, Result | undefined]> = [];
  for (const heap of heaps) {
    for (const size of SIZES) {
      const n = name(heap.name, size);
      if (!wants(n)) continue;
      const buf = heap.alloc(size);
      try {
        results.push([n, await bench(n, () => {
          const a = DmaBufAttachment.attach(buf, dev);
          const sgt = a.mapUnlocked(DMA_BIDIRECTIONAL);
          entries += sgt.entries.length;
          a.unmapUnlocked(sgt, DMA_BIDIRECTIONAL);
          a.detach();
        }, size >= 8 * MiB ? { ...SMALL_OPS, iterations: 5_000, warmup: 500 } : SMALL_OPS)]);
        if (buf.attachmentCount !== 0) throw new Error(`${n}: ${buf.attachmentCount} attachments left`);
      } finally {
        buf.close();
      }
    }
  }
  if (entries < 0) console.log(entries);
  for (const [n, r] of results) absolute(n, r);
}

/* ---- 5. hand-off to a worker and back ---- */

/** Per-variant round trips per round: the copies of a structured clone are slow. */
function handoffOpts(mode: Mode, size: number): BenchOptions {
  if (mode === 'clone') {
    return size > 8 * MiB
      ? { iterations: 20, warmup: 4, rounds: 7, batch: true, quickIterations: 3 }
      : { iterations: 100, warmup: 20, rounds: 7, batch: true, quickIterations: 10 };
  }
  return { iterations: 2_000, warmup: 400, rounds: 7, batch: true, quickIterations: 50 };
}

interface Side {
  /** The message to post for the next trip, and its transfer list. */
  send: () => [unknown, ArrayBuffer[]];
  /** Take the worker's reply; `trips` is the count including this one (byte 0 must equal it mod 256). */
  receive: (reply: unknown, trips: number) => void;
  /** Undo what the variant set up. */
  cleanup: () => void;
}

function expectByte(got: number | undefined, trips: number, what: string): void {
  if (got !== (trips & 0xff)) throw new Error(`${what}: byte 0 is ${got} after ${trips} trips`);
}

/** The main thread's side of a variant: what it posts, what it does with a reply. */
function makeSide(mode: Mode, size: number): Side {
  switch (mode) {
    case 'fds':
    case 'fds-sync': {
      const heap = DmaHeap.list()[0]!;
      const heapFd = open(`/dev/dma_heap/${heap.name}`, O_RDWR | O_CLOEXEC);
      const fd = uapiAlloc(heapFd, size);
      close(heapFd);
      const view = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); // this thread's mapping, kept
      return {
        send: () => [sendFds([fd]), []],
        receive: (reply, trips) => {
          const [back] = receiveFds(reply as Parameters<typeof receiveFds>[0]) as [number];
          close(back);
          expectByte(view[0], trips, mode);
        },
        cleanup: () => {
          munmap(view);
          close(fd);
        },
      };
    }
    case 'driver': {
      const buf = heapAlloc(DmaHeap.list()[0]!.name, size);
      const view = buf.mmap(0, size / PAGE_SIZE);
      return {
        send: () => [buf.share(), []],
        receive: (reply, trips) => {
          DmaBuf.receive(reply).close();
          expectByte(view[0], trips, mode);
        },
        cleanup: () => {
          buf.munmap(view);
          buf.close();
        },
      };
    }
    case 'sab': {
      const sab = new SharedArrayBuffer(size);
      const view = new Uint8Array(sab);
      return {
        send: () => [sab, []],
        receive: (reply, trips) => {
          if (reply !== sab && !(reply instanceof SharedArrayBuffer)) throw new Error('sab: not a SharedArrayBuffer back');
          expectByte(view[0], trips, mode);
        },
        cleanup: () => {},
      };
    }
    case 'transfer':
    case 'clone': {
      let ab = new ArrayBuffer(size);
      return {
        send: () => [ab, mode === 'transfer' ? [ab] : []],
        receive: (reply, trips) => {
          if (!(reply instanceof ArrayBuffer) || reply.byteLength !== size) throw new Error(`${mode}: no ${size}-byte ArrayBuffer back`);
          ab = reply; // the worker's copy (clone) or the buffer itself (transfer) goes out next
          expectByte(new Uint8Array(ab)[0], trips, mode);
        },
        cleanup: () => {},
      };
    }
  }
}

interface Variant {
  name: string;
  opts: BenchOptions;
  /** n round trips. */
  batch: (n: number) => Promise<void>;
  /** Stop the worker, check both sides counted the same trips, let it exit, undo the setup. */
  finish: () => Promise<void>;
}

/**
 * Start one variant in its own worker: n trips per batch, each posted when the
 * last reply arrived (event-driven, no promise per trip, the same code for every
 * variant).
 */
async function startVariant(name: string, mode: Mode, size: number, pin: (tid: number) => boolean): Promise<Variant> {
  const peer = new Peer<Start, Reply>(new URL('./workers/handoff-worker.js', import.meta.url), 'handoff worker');
  const { port1, port2 } = new MessageChannel();
  const side = makeSide(mode, size);
  let trips = 0;
  let left = 0;
  let finish: ((e?: unknown) => void) | undefined;
  const post = (): void => {
    const [msg, transfer] = side.send();
    port1.postMessage(msg, transfer);
  };
  const settle = (e?: unknown): void => {
    const f = finish;
    finish = undefined;
    f?.(e);
  };
  port1.on('message', (reply: unknown) => {
    try {
      if (typeof reply === 'object' && reply !== null && 'error' in reply) throw new Error(`worker failed: ${String(reply.error)}`);
      side.receive(reply, ++trips);
      if (--left > 0) post();
      else settle();
    } catch (e) {
      settle(e);
    }
  });
  const stop = async (): Promise<void> => {
    try {
      port1.postMessage(null);
      const done = await peer.next();
      if (done.ev !== 'done') throw new Error(`${name}: unexpected reply ${done.ev}`);
      if (done.error !== undefined) throw new Error(`${name}: worker failed: ${done.error}`);
      if (done.trips !== trips) throw new Error(`${name}: worker made ${done.trips} trips, main ${trips}`);
    } finally {
      port1.close();
      side.cleanup();
      await peer.exited();
    }
  };
  peer.post({ cmd: 'start', mode, size, port: port2 }, [port2]);
  const ready = await peer.next().catch(async (e: unknown) => {
    await stop().catch(() => {});
    throw e;
  });
  if (ready.ev !== 'ready') throw new Error(`${name}: worker failed to start`);
  if (!pin(ready.tid)) {
    await stop().catch(() => {});
    throw new Error(`${name}: could not pin the worker thread`);
  }
  return {
    name,
    opts: handoffOpts(mode, size),
    batch: (n) => new Promise<void>((resolve, reject) => {
      left = n;
      finish = (e) => (e === undefined ? resolve() : reject(e));
      post();
    }),
    finish: stop,
  };
}

async function handoffs(size: number, oneCore = false): Promise<void> {
  const sz = oneCore ? `${sizeName(size)}, one core` : sizeName(size);
  group(oneCore
    ? `hand a ${sizeName(size)} buffer to a worker and back, both threads pinned to one core (contrast; time per round trip)`
    : `hand a ${sz} buffer to a worker and back, worker touches one byte, main and worker pinned to two cores (time per round trip)`);
  const all: ReadonlyArray<[string, Mode]> = [
    [`(a) dmabuf uapi: sendFds + postMessage, receiveFds + mmap + munmap + close, and back (${sz})`, 'fds'],
    [`(b) same as (a) + DMA_BUF_IOCTL_SYNC START/END around the touch (${sz})`, 'fds-sync'],
    [`(c) dmabuf driver API: share() + postMessage, DmaBuf.receive + mmap + munmap + close, and back (${sz})`, 'driver'],
    [`(d) baseline: postMessage(SharedArrayBuffer), and back (${sz})`, 'sab'],
    [`(e) baseline: postMessage(ArrayBuffer, [transfer]), and back (${sz})`, 'transfer'],
    [`(f) baseline: postMessage(ArrayBuffer) structured clone, and back (${sz})`, 'clone'],
  ];
  const H = oneCore ? all.filter(([, m]) => m === 'fds' || m === 'sab' || m === 'transfer') : all;
  if (!wantsAny(H.map(([n]) => n))) return;
  // Every variant in its own worker, all started up front and measured round by round
  // in turn: a round trip's cost here swings with the load of other processes.
  const variants: Array<Variant | undefined> = [];
  const placed = pinSpread(oneCore);
  if (!placed) group(`hand a ${sz} buffer: NOT pinned (taskset failed or fewer than 2 CPUs)`);
  try {
    for (const [name, mode] of H) {
      variants.push(wants(name) ? await startVariant(name, mode, size, placed?.worker ?? (() => true)) : undefined);
    }
    const got = await benchInterleavedEach(H.map(([name], k) => ({
      name,
      fn: (n: number) => variants[k]!.batch(n),
      opts: variants[k]?.opts ?? handoffOpts('sab', size),
    })));
    const result = (mode: Mode): Result | undefined => got[H.findIndex(([, m]) => m === mode)];
    const [a, b, c, d, e, f] = (['fds', 'fds-sync', 'driver', 'sab', 'transfer', 'clone'] as const).map(result);
    ratio(`(a)/(d) dmabuf fd hand-off vs raw SharedArrayBuffer, ${sz}`, a, d, oneCore ? undefined : { op: '<=', value: 1.5 });
    if (oneCore) {
      ratio(`(e)/(d) transferred ArrayBuffer vs raw SharedArrayBuffer, ${sz}`, e, d);
      return;
    }
    ratio(`(b)/(d) with SYNC bracket vs raw SharedArrayBuffer, ${sz}`, b, d);
    ratio(`(c)/(d) driver API hand-off vs raw SharedArrayBuffer, ${sz}`, c, d);
    ratio(`(e)/(d) transferred ArrayBuffer vs raw SharedArrayBuffer, ${sz}`, e, d);
    ratio(`(f)/(a) structured clone vs dmabuf fd hand-off, ${sz}`, f, a);
  } finally {
    for (const v of variants) await v?.finish();
    placed?.restore();
  }
}

/**
 * Pin this thread to its first CPU and give every variant's worker the second (or,
 * `oneCore`, the same one, for the contrast): where
 * the scheduler puts the two threads decides a round trip's cost more than anything
 * they do (one core: a wake-up is a context switch; two: a cross-core wake-up, ~25 µs
 * on this VM when the other vCPU has halted), and it changes from worker to worker.
 * Unpinned, a transferred ArrayBuffer — no more work than a SharedArrayBuffer — came
 * out 3.7-4.4x of it in one quiet run. `undefined` if pinning is not possible.
 */
function pinSpread(oneCore: boolean): { worker: (tid: number) => boolean; restore: () => void } | undefined {
  const me = kernelTid();
  const saved = getAffinity(me);
  const cpus = saved === undefined ? [] : parseCpuList(saved);
  const workerCpu = oneCore ? cpus[0] : cpus[1];
  if (saved === undefined || workerCpu === undefined || !setAffinity(me, String(cpus[0]))) return undefined;
  return { worker: (tid) => setAffinity(tid, String(workerCpu)), restore: () => void setAffinity(me, saved) };
}

/* ---- entry points ---- */

/** Run every buffer benchmark (bench/run.ts calls this). */
export async function run(): Promise<void> {
  suite('buffer');
  console.log('buffer');
  for (const size of SIZES) {
    await allocFree(size);
    await turn();
  }
  await cpuAccess();
  await turn();
  await syncFileRoundTrip();
  await turn();
  await attachMap();
  await turn();
  await handoffs(8 * MiB);
  await turn();
  await handoffs(8 * MiB, true);
  await turn();
  await handoffs(64 * MiB);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run();
  console.log(publish());
}
