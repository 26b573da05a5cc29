#!/usr/bin/env node
/**
 * DOC: the `dmabuf` command
 *
 *   dmabuf demo [options]   a zero-copy frame pipeline across worker threads
 *   dmabuf heaps            the heaps and what is allocated from them
 *   dmabuf trace view FILE  a trace from `demo --trace FILE` as an HTML timeline
 *   dmabuf bench [args]     the benchmark suite (from a checkout: npm run bench)
 *
 * Every subcommand takes --help. Errors print as `<code>: <message>` and exit 1.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DmaHeap } from '../dma-heap.js';
import * as U from '../uapi/index.js';
import { runDemo, type DemoOptions, type DemoResult } from './demo.js';
import { readChromeTrace, toChromeTrace } from './trace.js';
import { renderTraceHtml } from './trace-view.js';

class UsageError extends Error {
  readonly code = 'EINVAL';
}

const HELP: Record<string, string> = {
  main: `usage: dmabuf <command> [options]

commands:
  demo     run a zero-copy frame pipeline (camera -> gpu stages -> display)
  heaps    list the dma-heaps and their usage
  trace    view a fence trace recorded with demo --trace
  bench    run the benchmark suite

Run 'dmabuf <command> --help' for a command's options.`,
  demo: `usage: dmabuf demo [options]

  --width N      frame width in pixels (default 640)
  --height N     frame height in pixels (default 480)
  --stages N     gpu stages between camera and display (default 2)
  --frames N     frames to run (default 600)
  --heap NAME    heap to allocate frames from (default system)
  --depth N      buffers per pool (default 3)
  --copy         hand frames on with postMessage copies instead
  --compare      run both pipelines and print the ratio
  --png FILE     save the last displayed frame as a PNG
  --trace FILE   record every thread's fence events (created, signalled, waited
                 on, added to which buffer) as Chrome trace-event JSON, for
                 Perfetto, chrome://tracing or 'dmabuf trace view FILE'; with
                 --compare it traces the dmabuf run; with --copy it is EINVAL
                 (that pipeline uses no fences)
  --quiet        no progress line`,
  heaps: `usage: dmabuf heaps

Lists every heap under /dev/dma_heap with the buffers and bytes allocated from it.`,
  trace: `usage: dmabuf trace <command>

commands:
  view FILE [-o OUT.html]   write a self-contained HTML timeline of a trace file

Record a trace with 'dmabuf demo --trace FILE'.`,
  'trace view': `usage: dmabuf trace view FILE [-o OUT.html]

Writes the Chrome trace-event file FILE (from 'dmabuf demo --trace') as one
self-contained HTML page: a timeline with one lane per thread and per buffer,
waits and fence lifetimes as bars, hover for details. Opens offline in any
browser.

  -o, --output OUT   the HTML file (default FILE with .json replaced by .html)`,
  bench: `usage: dmabuf bench [--filter S] [--quick]

Runs the benchmark suite. A full run rewrites BENCHMARKS.md and
bench/results/latest.json; a --filter or --quick run writes only
bench/results/partial.json. Needs a checkout of the repository (the suite is
not part of the package): npm run bench.`,
};

function int(v: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

/** A file error with its code, its message not repeating the code (`<code>: <message>` adds it). */
function fileError(e: unknown, what: string): Error {
  const x = e as { code?: string; message?: string };
  const why = (x.message ?? String(e)).replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  return Object.assign(new Error(`${what}: ${why}`), { code: x.code ?? 'EIO' });
}

/** Check that `file` can be created before a long run writes it. @throws ENOENT, ENOTDIR, EISDIR. */
function checkOutput(file: string, option: string): void {
  if (file === '') throw new UsageError(`${option} needs a file name`);
  const dir = dirname(resolve(file));
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    throw fileError(e, `${option} ${file}: no directory ${dir}`);
  }
  if (!st.isDirectory()) throw Object.assign(new Error(`${option} ${file}: ${dir} is not a directory`), { code: 'ENOTDIR' });
  if (existsSync(file) && statSync(file).isDirectory()) throw Object.assign(new Error(`${option} ${file} is a directory`), { code: 'EISDIR' });
}

type DemoArgs = DemoOptions & { compare: boolean; quiet: boolean; traceFile: string | undefined };

function demoOptions(args: string[]): DemoArgs | null {
  const { values } = parseArgs({
    args, strict: true,
    options: {
      width: { type: 'string' }, height: { type: 'string' }, stages: { type: 'string' }, frames: { type: 'string' },
      heap: { type: 'string' }, depth: { type: 'string' }, copy: { type: 'boolean' }, compare: { type: 'boolean' },
      png: { type: 'string' }, quiet: { type: 'boolean' }, trace: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  if (values.help) return null;
  const width = int(values.width, 'width', 640, 1, 16384);
  const heap = values.heap ?? 'system';
  if (!U.readdir('/dev/dma_heap').includes(heap)) throw Object.assign(new Error(`no heap '${heap}' (see dmabuf heaps)`), { code: 'ENOENT' });
  if (values.copy && values.compare) throw new UsageError('--copy and --compare exclude each other');
  if (values.trace !== undefined) {
    if (values.copy) throw new UsageError('--trace records fences, and --copy uses none: drop one of them');
    checkOutput(values.trace, '--trace');
  }
  return {
    width, height: int(values.height, 'height', 480, 1, 16384), stages: int(values.stages, 'stages', 2, 0, 16),
    frames: int(values.frames, 'frames', 600, 1, 10_000_000), heap, depth: int(values.depth, 'depth', 3, 1, 64),
    copy: values.copy ?? false, compare: values.compare ?? false, png: values.png, quiet: values.quiet ?? false,
    trace: values.trace !== undefined, traceFile: values.trace,
  };
}

/** Write the traces of run `r` to `file` as Chrome trace-event JSON; returns the line to print. */
function writeTrace(file: string, r: DemoResult, o: DemoArgs): string {
  const traces = r.traces ?? [];
  const json = toChromeTrace(traces, {
    command: 'dmabuf demo', frames: o.frames, stages: o.stages, width: o.width, height: o.height, depth: o.depth, heap: o.heap,
  });
  try {
    writeFileSync(file, JSON.stringify(json));
  } catch (e) {
    throw fileError(e, `cannot write --trace ${file}`);
  }
  const events = traces.reduce((n, t) => n + t.log.events.length, 0);
  const dropped = json.otherData['dropped'] as number;
  return `trace: ${events} events of ${traces.length} threads${dropped ? ` (${dropped} dropped: the per-thread buffer was full)` : ''}`
    + ` written to ${file}; view it with: dmabuf trace view ${file}`;
}

function summary(r: DemoResult): string {
  return `${r.mode}: ${r.frames} frames in ${r.seconds.toFixed(2)} s = ${r.fps.toFixed(1)} fps; latency p50 `
    + `${r.latencyMs.p50.toFixed(1)} ms, p90 ${r.latencyMs.p90.toFixed(1)} ms, p99 ${r.latencyMs.p99.toFixed(1)} ms; `
    + `${r.mismatches} content mismatches`;
}

async function demo(args: string[], out: (s: string) => void): Promise<void> {
  const o = demoOptions(args);
  if (!o) return out(HELP['demo']!);
  const progress = o.quiet ? undefined : (line: string): void => {
    process.stderr.write(`\r${line}\x1b[K`);
  };
  const run = async (copy: boolean): Promise<DemoResult> => {
    const r = await runDemo({ ...o, copy, progress, trace: o.trace && !copy });
    if (progress) process.stderr.write('\r\x1b[K');
    out(summary(r));
    if (o.traceFile !== undefined && !copy) out(writeTrace(o.traceFile, r, o));
    return r;
  };
  out(`pipeline: camera -> ${o.stages} gpu stage(s) -> display, ${o.width}x${o.height} RGBA frames `
    + `(${((o.width * o.height * 4) / 2 ** 20).toFixed(2)} MiB), pools of ${o.depth} from heap '${o.heap}'`);
  if (o.compare) {
    const zero = await run(false);
    const copy = await run(true);
    out(`dmabuf / postMessage copy: ${(zero.fps / copy.fps).toFixed(2)}x the frames per second`);
    return;
  }
  const r = await run(o.copy);
  if (!o.copy) out(r.bufinfo.trimEnd());
}

function heaps(args: string[], out: (s: string) => void): void {
  const { values } = parseArgs({ args, strict: true, options: { help: { type: 'boolean' } } });
  if (values.help) return out(HELP['heaps']!);
  out('heap                 buffers        bytes');
  for (const name of U.readdir('/dev/dma_heap')) {
    const u = DmaHeap.find(name)!.usage();
    out(`${name.padEnd(20)} ${String(u.buffers).padStart(8)} ${String(u.bytes).padStart(12)}`);
  }
}

/** `dmabuf trace view FILE [-o OUT]`. */
function trace(args: string[], out: (s: string) => void): void {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === 'help') return out(HELP['trace']!);
  if (sub !== 'view') throw new UsageError(`unknown trace command '${sub}' (try dmabuf trace --help)`);
  const { values, positionals } = parseArgs({
    args: rest, strict: true, allowPositionals: true,
    options: { output: { type: 'string', short: 'o' }, help: { type: 'boolean' } },
  });
  if (values.help) return out(HELP['trace view']!);
  if (positionals.length !== 1) throw new UsageError('trace view needs exactly one FILE (try dmabuf trace view --help)');
  const file = positionals[0]!;
  const output = values.output ?? (file.endsWith('.json') ? `${file.slice(0, -5)}.html` : `${file}.html`);
  checkOutput(output, '-o');
  if (resolve(output) === resolve(file)) throw new UsageError(`-o ${output} would overwrite the trace itself`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fileError(e, `cannot read trace ${file}`);
  }
  const html = renderTraceHtml(readChromeTrace(text, file), file);
  try {
    writeFileSync(output, html);
  } catch (e) {
    throw fileError(e, `cannot write ${output}`);
  }
  out(`wrote ${output} (${(Buffer.byteLength(html) / 1024).toFixed(0)} KiB): open it in a browser`);
}

function bench(args: string[], out: (s: string) => void): void {
  if (args.includes('--help')) return out(HELP['bench']!);
  const runner = fileURLToPath(new URL('../../build-test/bench/run.js', import.meta.url));
  if (!existsSync(runner)) throw Object.assign(new Error('the benchmark suite needs a checkout: run npm run bench there'), { code: 'ENOENT' });
  const r = spawnSync(process.execPath, [runner, ...args], { stdio: 'inherit' });
  if (r.status !== 0) throw Object.assign(new Error(`benchmarks exited with ${r.status}`), { code: 'EIO' });
}

/** Run the command line `argv` (without node and the script). @returns the exit code. */
export async function main(argv: string[], out: (s: string) => void = console.log, err: (s: string) => void = console.error): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === '--help' || cmd === 'help') out(HELP['main']!);
    else if (cmd === 'demo') await demo(rest, out);
    else if (cmd === 'heaps') heaps(rest, out);
    else if (cmd === 'trace') trace(rest, out);
    else if (cmd === 'bench') bench(rest, out);
    else throw new UsageError(`unknown command '${cmd}' (try dmabuf --help)`);
    return 0;
  } catch (e) {
    const x = e as { code?: string; message?: string };
    const code = x.code?.startsWith('ERR_PARSE_ARGS') ? 'EINVAL' : (x.code ?? 'ERROR');
    err(`${code}: ${x.message ?? String(e)}`);
    return 1;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await main(process.argv.slice(2));
}
