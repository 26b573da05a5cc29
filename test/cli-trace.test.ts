/**
 * Trace files (src/cli/trace.ts and the commands that write and read them):
 * the converter's structure and joins on real and hand-written logs, the file
 * of a real `dmabuf demo --trace` run (lanes for every stage thread and buffer,
 * fence events that match the frames), and the argument errors of `--trace`
 * and `dmabuf trace view`, none of which writes anything.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as U from 'dmabuf/uapi';
import { traceDisable, traceEnable, traceTake, type TraceEvent, type TraceLog } from 'dmabuf';
// The converter is the command's, not the package's: types from dist/ as seen from test/, the code
// from dist/ as seen from build-test/test/ at run time.
import type * as Trace from '../dist/cli/trace.js';
import type { ChromeEvent, ChromeTrace } from '../dist/cli/trace.js';

const { BUFFER_TID_BASE, BUFFERS_PID, readChromeTrace, THREADS_PID, toChromeTrace }: typeof Trace = await import(
  new URL('../../dist/cli/trace.js', import.meta.url).href
);

const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tmp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'dmabuf-trace-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every event well-formed: ph, ts, pid, tid on all; X spans with dur ≥ 0; JSON round trip unchanged. */
function assertStructure(t: ChromeTrace): void {
  assert.equal(t.displayTimeUnit, 'ms');
  for (const e of t.traceEvents) {
    assert.equal(typeof e.ph, 'string');
    for (const k of ['ts', 'pid', 'tid'] as const) assert.ok(Number.isFinite(e[k]), `${e.name}: ${k}`);
    if (e.ph === 'X') assert.ok(e.dur! >= 0, `${e.name}: dur ${e.dur}`);
    if (e.ph !== 'M') assert.ok(e.ts >= 0, `${e.name}: ts ${e.ts} from the first event`);
  }
  assert.deepEqual(JSON.parse(JSON.stringify(t)), t);
}

/** Lane names by [pid, tid]. */
function laneNames(t: ChromeTrace): Map<string, string> {
  return new Map(t.traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name')
    .map((e) => [`${e.pid}:${e.tid}`, e.args!['name'] as string]));
}

const F1 = { context: 5, seqno: 1, driver: 'sw_sync', timeline: 'camera' };
const F2 = { context: 5, seqno: 2, driver: 'sw_sync', timeline: 'camera' };
const F3 = { context: 6, seqno: 1, driver: 'sw_sync', timeline: 'gpu1' };
const BUF = { ino: 7, name: null, expName: 'system' };

function log(tid: number, events: Array<Omit<TraceEvent, 'tid'>>, dropped = 0): TraceLog {
  return { tid, events: events.map((e) => ({ ...e, tid })), dropped };
}

describe('the converter', () => {
  test('a real log: every event well-formed, processes and lanes named, thread and buffer lanes', () => {
    const heap = U.open('/dev/dma_heap/system');
    const data = { len: 4096, fd: 0, fd_flags: U.O_RDWR, heap_flags: 0 };
    U.ioctl(heap, U.DMA_HEAP_IOCTL_ALLOC, data);
    const ino = Number(/^ino:\t(\d+)$/m.exec(U.readFile(`/proc/self/fdinfo/${data.fd}`))![1]);
    const tl = U.open('/dev/sw_sync');
    traceEnable();
    const pt = { value: 1, name: 'p', fence: -1 };
    U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, pt);
    U.ioctl(data.fd, U.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, { flags: U.DMA_BUF_SYNC_WRITE, fd: pt.fence });
    U.ioctl(tl, U.SW_SYNC_IOC_INC, 1);
    U.ioctl(data.fd, U.DMA_BUF_IOCTL_SYNC, { flags: U.DMA_BUF_SYNC_START | U.DMA_BUF_SYNC_READ });
    traceDisable();
    const t = toChromeTrace([{ name: 'main', log: traceTake() }], { frames: 1 });
    for (const fd of [pt.fence, tl, data.fd, heap]) U.close(fd);

    assertStructure(t);
    const metas = t.traceEvents.filter((e) => e.ph === 'M');
    assert.deepEqual(metas.filter((e) => e.name === 'process_name').map((e) => [e.pid, e.args!['name']]),
      [[THREADS_PID, 'threads'], [BUFFERS_PID, 'buffers']]);
    assert.deepEqual([...laneNames(t)], [[`${THREADS_PID}:1`, 'main'], [`${BUFFERS_PID}:${BUFFER_TID_BASE + ino}`, `buffer ${ino}`]]);
    const byCat = (cat: string): ChromeEvent[] => t.traceEvents.filter((e) => e.cat === cat);
    assert.deepEqual(byCat('dma_fence_init').map((e) => [e.ph, e.s, e.tid]), [['i', 't', 1]]);
    assert.deepEqual(byCat('dma_fence_signaled').map((e) => [e.ph, e.s, e.tid]), [['i', 't', 1]]);
    assert.deepEqual(byCat('dma_buf_wait').map((e) => [e.ph, e.name, e.args!['usage'], e.args!['op']]),
      [['X', `wait buffer ${ino}`, 'write', 'begin_cpu_access']]);
    const [span] = byCat('dma_buf_add_fence');
    assert.equal(span!.tid, BUFFER_TID_BASE + ino);
    assert.equal(span!.args!['added_by'], 'main');
    assert.equal(span!.args!['signalled_by'], 'main');
    assert.equal(t.otherData['frames'], 1);
    assert.equal(t.otherData['dropped'], 0);
  });

  test('add → signal joins by (context, seqno), across threads; never signalled runs to the end; signalled first is 0 long', () => {
    const camera = log(11, [
      { name: 'dma_buf_add_fence', ts: 1000, buffer: BUF, fence: F1, usage: 'write' },
      { name: 'dma_buf_add_fence', ts: 1400, buffer: BUF, fence: F2, usage: 'write' },
      { name: 'dma_buf_add_fence', ts: 1600, buffer: BUF, fence: F3, usage: 'read' },
    ]);
    const gpu = log(12, [
      { name: 'dma_fence_signaled', ts: 1500, fence: F3 },
      { name: 'dma_fence_signaled', ts: 1300, fence: F1 },
      { name: 'dma_fence_signaled', ts: 1900, fence: { ...F1, context: 9 } }, // another context: no join
    ]);
    const t = toChromeTrace([{ name: 'camera', log: camera }, { name: 'gpu1', log: gpu }]);
    assertStructure(t);
    const spans = t.traceEvents.filter((e) => e.cat === 'dma_buf_add_fence');
    assert.deepEqual(spans.map((e) => [e.name, e.ts, e.dur, e.args!['added_by'], e.args!['signalled_by'], e.args!['unfinished']]), [
      ['camera 1', 0, 300, 'camera', 'gpu1', undefined],
      ['camera 2', 400, 500, 'camera', null, true],
      ['gpu1 1', 600, 0, 'camera', 'gpu1', undefined],
    ]);
    for (const s of spans) assert.deepEqual([s.pid, s.tid, s.args!['usage'] !== undefined], [BUFFERS_PID, BUFFER_TID_BASE + 7, true]);
    assert.deepEqual(laneNames(t).get(`${BUFFERS_PID}:${BUFFER_TID_BASE + 7}`), 'buffer 7');
  });

  test('waits pair start → end per thing waited on: nested, interleaved, and one still open at the end', () => {
    const l = log(3, [
      { name: 'dma_buf_wait_start', ts: 100, buffer: BUF, usage: 'write', op: 'begin_cpu_access' },
      { name: 'dma_fence_wait_start', ts: 110, fence: F1 },
      { name: 'dma_fence_wait_start', ts: 120, fence: F2 },
      { name: 'dma_fence_wait_end', ts: 150, fence: F1, ret: Infinity },
      { name: 'dma_fence_wait_end', ts: 160, fence: F2, ret: 0 },
      { name: 'dma_buf_wait_end', ts: 170, buffer: BUF, usage: 'write', op: 'begin_cpu_access', ret: Infinity },
      { name: 'dma_fence_wait_start', ts: 180, fence: F3 },
      { name: 'dma_fence_init', ts: 200, fence: F3 },
    ]);
    const t = toChromeTrace([{ name: 'display', log: l }]);
    assertStructure(t);
    const waits = t.traceEvents.filter((e) => e.ph === 'X').map((e) => [e.cat, e.name, e.ts, e.dur, e.args!['ret'], e.args!['unfinished']]);
    assert.deepEqual(waits, [
      ['dma_buf_wait', 'wait buffer 7', 0, 70, 'Infinity', undefined], // JSON has no Infinity
      ['dma_fence_wait', 'wait camera 1', 10, 40, 'Infinity', undefined],
      ['dma_fence_wait', 'wait camera 2', 20, 40, 0, undefined],
      ['dma_fence_wait', 'wait gpu1 1', 80, 20, undefined, true],
    ]);
  });

  test('u64 contexts and seqnos beyond 2^53 are decimal strings; drops are summed', () => {
    const big = { context: 2n ** 60n, seqno: 2n ** 64n - 1n, driver: 'd', timeline: 't' };
    const t = toChromeTrace([{ name: 'a', log: log(1, [{ name: 'dma_fence_init', ts: 5, fence: big }], 3) }, { name: 'b', log: log(2, [], 4) }]);
    assertStructure(t);
    const init = t.traceEvents.find((e) => e.cat === 'dma_fence_init')!;
    assert.deepEqual([init.args!['context'], init.args!['seqno'], init.name], [String(2n ** 60n), '18446744073709551615', 'created t 18446744073709551615']);
    assert.equal(t.otherData['dropped'], 7);
    assert.deepEqual(toChromeTrace([]).traceEvents.filter((e) => e.ph !== 'M'), []);
  });

  test('readChromeTrace accepts both forms and refuses what is not a trace with EINVAL', () => {
    const ev = { name: 'x', ph: 'X', ts: 1, dur: 2, pid: 1, tid: 1 };
    assert.equal(readChromeTrace(JSON.stringify({ traceEvents: [ev] }), 'f').traceEvents.length, 1);
    assert.equal(readChromeTrace(JSON.stringify([ev]), 'f').traceEvents.length, 1);
    for (const text of ['', '{', '42', '{"events":[]}', '{"traceEvents":{}}', '{"traceEvents":[null]}',
      JSON.stringify([{ ...ev, pid: '1' }]), JSON.stringify([{ ...ev, ts: undefined }]), JSON.stringify([{ ...ev, dur: -1 }])]) {
      assert.throws(() => readChromeTrace(text, 'f'), { code: 'EINVAL' }, text);
    }
  });
});

describe('dmabuf demo --trace', () => {
  test('a 20-frame run: lanes for every stage thread and buffer, fence events that match the frames', () => tmp((dir) => {
    const file = join(dir, 'T.json');
    const r = run('demo', '--frames', '20', '--stages', '1', '--width', '64', '--height', '48', '--quiet', '--trace', file);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^trace: \\d+ events of 4 threads written to ${file.replace(/[.]/g, '\\.')}; view it with: dmabuf trace view `, 'm'));
    const t = readChromeTrace(readFileSync(file, 'utf8'), file);
    assertStructure(t);
    assert.equal(t.otherData['frames'], 20);
    assert.equal(t.otherData['dropped'], 0);

    const lanes = laneNames(t);
    const threads = ['main', 'camera', 'gpu1', 'display'];
    assert.deepEqual(threads.map((_, i) => lanes.get(`${THREADS_PID}:${i + 1}`)), threads);
    const inos = [...r.stdout.matchAll(/^\d{8}\t\d{8}\t\d{8}\t\d{8}\tsystem\t(\d+)\t/gm)].map((m) => Number(m[1])).sort((a, b) => a - b);
    assert.equal(inos.length, 6, 'two pools of three buffers in bufinfo');
    assert.deepEqual(inos.map((ino) => lanes.get(`${BUFFERS_PID}:${BUFFER_TID_BASE + ino}`)), inos.map((ino) => `buffer ${ino}`));

    const tidOf = (name: string): number => threads.indexOf(name) + 1;
    for (const stage of ['camera', 'gpu1', 'display']) {
      for (const cat of ['dma_fence_init', 'dma_fence_signaled']) {
        const seqnos = t.traceEvents.filter((e) => e.cat === cat && e.tid === tidOf(stage) && e.pid === THREADS_PID)
          .map((e) => e.args!['seqno']);
        assert.deepEqual(seqnos, Array.from({ length: 20 }, (_, f) => f + 1), `${stage}: ${cat} per frame, in order`);
      }
      assert.ok(t.traceEvents.some((e) => e.cat === 'dma_buf_wait' && e.tid === tidOf(stage)), `${stage} waits on buffers`);
    }
    // Each stage's point of frame f is on buffer f % 3 of its pools: READ on its input, WRITE on its output.
    const spans = t.traceEvents.filter((e) => e.cat === 'dma_buf_add_fence');
    const expect: Array<[string, string, number]> = [['camera', 'write', 0], ['gpu1', 'read', 0], ['gpu1', 'write', 1], ['display', 'read', 1]];
    for (const [stage, usage, pool] of expect) {
      const mine = spans.filter((e) => e.args!['timeline'] === stage && e.args!['usage'] === usage);
      assert.equal(mine.length, 20, `${stage} ${usage}`);
      for (const s of mine) {
        assert.equal(s.args!['added_by'], stage);
        assert.equal(s.args!['signalled_by'], stage, 'each stage signals its own point');
        assert.equal(s.tid - BUFFER_TID_BASE, inos[pool * 3 + (((s.args!['seqno'] as number) - 1) % 3)], `${stage} seqno ${s.args!['seqno']}`);
      }
    }
    // Implicit sync, as the trace shows it: on each buffer a writer's fence, then its reader's, in turn, never
    // two at once (a signal is stamped before anyone can see it, so the next add always comes after it).
    for (const ino of inos) {
      const mine = spans.filter((e) => e.tid === BUFFER_TID_BASE + ino).sort((a, b) => a.ts - b.ts);
      assert.deepEqual(mine.map((e) => e.args!['usage']), mine.map((_, i) => (i % 2 ? 'read' : 'write')), `buffer ${ino}`);
      for (let i = 1; i < mine.length; i++) {
        assert.ok(mine[i]!.ts >= mine[i - 1]!.ts + mine[i - 1]!.dur!, `buffer ${ino}: ${mine[i]!.name} added before ${mine[i - 1]!.name} signalled`);
      }
    }
  }));

  test('argument errors: EINVAL or ENOENT, exit 1, no file written', () => tmp((dir) => {
    const cases: Array<[string[], RegExp]> = [
      [['demo', '--trace'], /^EINVAL: /],
      [['demo', '--trace', ''], /^EINVAL: --trace needs a file name/],
      [['demo', '--trace', join(dir, 'a.json'), '--copy'], /^EINVAL: --trace records fences, and --copy uses none/],
      [['demo', '--trace', join(dir, 'no', 'such', 'a.json')], /^ENOENT: --trace /],
      [['demo', '--trace', dir], /^EISDIR: /],
    ];
    for (const [args, msg] of cases) {
      const r = run(...args, '--frames', '1', '--quiet');
      assert.equal(r.status, 1, args.join(' '));
      assert.match(r.stderr, msg, args.join(' '));
      assert.equal(r.stdout, '', args.join(' '));
    }
    assert.deepEqual(readdirSync(dir), []);
  }));
});

describe('dmabuf trace view', () => {
  test('writes FILE.html next to FILE.json by default, or -o OUT', () => tmp((dir) => {
    const file = join(dir, 'run.json');
    writeFileSync(file, JSON.stringify(toChromeTrace([])));
    const r = run('trace', 'view', file);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^wrote .*run\.html \(\d+ KiB\): open it in a browser$/m);
    assert.match(readFileSync(join(dir, 'run.html'), 'utf8'), /^<!doctype html>/);
    assert.equal(run('trace', 'view', file, '-o', join(dir, 'other.html')).status, 0);
    assert.ok(existsSync(join(dir, 'other.html')));
  }));

  test('argument errors: ENOENT for a missing file, EINVAL for what is not a trace; exit 1, nothing written', () => tmp((dir) => {
    const bad = join(dir, 'bad.json');
    const notTrace = join(dir, 'nottrace.json');
    writeFileSync(bad, '{ not json');
    writeFileSync(notTrace, '{"events": []}');
    const cases: Array<[string[], RegExp]> = [
      [['trace', 'view', join(dir, 'missing.json')], /^ENOENT: cannot read trace .*missing\.json: no such file or directory$/m],
      [['trace', 'view', bad], /^EINVAL: .*bad\.json is not a Chrome trace-event file: not JSON/],
      [['trace', 'view', notTrace], /^EINVAL: .*nottrace\.json is not a Chrome trace-event file: no traceEvents array$/m],
      [['trace', 'view'], /^EINVAL: trace view needs exactly one FILE/],
      [['trace', 'view', bad, notTrace], /^EINVAL: trace view needs exactly one FILE/],
      [['trace', 'view', notTrace, '-o', join(dir, 'no', 'x.html')], /^ENOENT: -o /],
      [['trace', 'view', notTrace, '-o', notTrace], /^EINVAL: -o .* would overwrite the trace itself/],
      [['trace', 'view', '--bogus'], /^EINVAL: Unknown option '--bogus'/],
      [['trace', 'show'], /^EINVAL: unknown trace command 'show'/],
    ];
    for (const [args, msg] of cases) {
      const r = run(...args);
      assert.equal(r.status, 1, args.join(' '));
      assert.match(r.stderr, msg, args.join(' '));
      assert.equal(r.stdout, '', args.join(' '));
    }
    assert.deepEqual(readdirSync(dir).sort(), ['bad.json', 'nottrace.json']);
  }));
});
