/**
 * A tiny benchmark runner (Node's own modules only).
 *
 * - `bench(name, fn, {iterations, warmup, rounds, batch, settle})` times `rounds`
 *   rounds of `iterations` operations with `process.hrtime.bigint()`, after one
 *   untimed warm-up run, and records the median ns/op over rounds with the spread
 *   (fastest and slowest round). By default `fn(i)` is one operation and the runner
 *   loops (i counts up across rounds, handy for seqnos); with `batch: true`,
 *   `fn(n)` performs n operations itself and may return a promise.
 * - `suite(key)` and `group(name)` label what follows: the suite is the section
 *   of BENCHMARKS.md (`<!-- bench:<key>:start -->`), the group a sub-table.
 * - `benchInterleaved([{name, fn}, ...], opts)` measures several batch functions
 *   in alternating rounds (one round of each per block, the order reversed every
 *   other block), so all of them see the same machine state; `pairedRatio(...)`
 *   then compares two of them block by block (results of `benchInterleavedEach`
 *   too).
 * - `ratio(...)`, `pairedRatio(...)`, `absolute(...)`, `count(...)` record the
 *   comparisons a suite reports, each with an optional target (`met` says whether
 *   it was reached).
 * - `benchInterleavedEach([{name, fn, opts}, ...])` does the same for variants
 *   that each need their own options (iterations), round by round in turn.
 * - Flags: `--filter <substring>` (matched case-insensitively against
 *   "suite/group/name"), `--quick` (few iterations and rounds: smoke runs only,
 *   the numbers mean nothing).
 * - `writeResults()` writes `bench/results/latest.json`; `updateMarkdown()`
 *   regenerates each measured suite's table in BENCHMARKS.md.
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, release, type, arch } from 'node:os';
import { dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/* ---- flags ---- */

export interface Flags {
  filter: string | undefined;
  quick: boolean;
}

function parseFlags(argv: readonly string[]): Flags {
  let filter: string | undefined;
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--filter') {
      const v = argv[++i];
      if (v === undefined) throw new Error('--filter needs a substring');
      filter = v;
    } else if (a.startsWith('--filter=')) filter = a.slice('--filter='.length);
    else throw new Error(`unknown flag ${a} (known: --filter <substring>, --quick)`);
  }
  return { filter, quick };
}

export const flags: Flags = parseFlags(process.argv.slice(2));

/* ---- report shapes ---- */

export interface Machine {
  cpus: string;
  cores: number;
  node: string;
  os: string;
}

export interface Result {
  suite: string;
  group: string;
  name: string;
  /** Median over rounds of the round's ns per operation. */
  medianNs: number;
  /** Fastest round, ns per operation. */
  minNs: number;
  /** Slowest round, ns per operation. */
  maxNs: number;
  opsPerRound: number;
  rounds: number;
  /** Interleaved results only (benchInterleaved, benchInterleavedEach): ns per operation of each round, in block order. */
  perRoundNs?: number[];
}

export interface Target {
  op: '<' | '<=' | '>' | '>=' | '==';
  value: number;
}

export interface Comparison {
  suite: string;
  group: string;
  name: string;
  /** ratio: a.medianNs / b.medianNs; absolute: a.medianNs in `unit`; count: a number of events. */
  kind: 'ratio' | 'absolute' | 'count';
  value: number;
  unit?: string;
  numerator?: string;
  denominator?: string;
  target?: string;
  met?: boolean;
}

export interface Report {
  machine: Machine;
  command: string;
  date: string;
  quick: boolean;
  filter?: string;
  results: Result[];
  ratios: Comparison[];
}

const results: Result[] = [];
const ratios: Comparison[] = [];
let currentSuite = 'misc';
let currentGroup = '';

export function machine(): Machine {
  const c = cpus();
  return {
    cpus: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    node: process.version,
    os: `${type()} ${release()} ${arch()}`,
  };
}

/* ---- labelling and filtering ---- */

/** Start a suite (one BENCHMARKS.md section). */
export function suite(key: string): void {
  if (!/^[a-z0-9-]+$/.test(key)) throw new Error(`suite key ${key} must be [a-z0-9-]+`);
  currentSuite = key;
  currentGroup = '';
}

/** Start a group (one sub-table) within the suite. */
export function group(name: string): void {
  currentGroup = name;
}

/** True if `name` in the current suite/group passes --filter (use it to skip costly setup). */
export function wants(name: string): boolean {
  if (flags.filter === undefined) return true;
  return `${currentSuite}/${currentGroup}/${name}`.toLowerCase().includes(flags.filter.toLowerCase());
}

/** True if anything in the current group could pass --filter, given the names it will run. */
export function wantsAny(names: readonly string[]): boolean {
  return names.some((n) => wants(n));
}

/* ---- measuring ---- */

export interface BenchOptions {
  /** Operations per timed round. */
  iterations: number;
  /** Untimed operations before the first round (default: `iterations`). */
  warmup?: number;
  /** Timed rounds (default 7; 3 with --quick). */
  rounds?: number;
  /** `fn(n)` performs n operations itself (and may return a promise). */
  batch?: boolean;
  /** Inside the timing, let one event-loop turn run after each round (work the ops queued). */
  settle?: boolean;
  /** Iterations per round with --quick (default iterations/50, at least 10). */
  quickIterations?: number;
}

type BenchFn = (i: number) => unknown;

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** The plan `bench` will follow for these options (after --quick). */
export function plan(opts: BenchOptions): { iterations: number; warmup: number; rounds: number } {
  if (!Number.isInteger(opts.iterations) || opts.iterations < 1) throw new RangeError('iterations must be a positive integer');
  if (flags.quick) {
    const iterations = opts.quickIterations ?? Math.max(10, Math.ceil(opts.iterations / 50));
    return { iterations, warmup: Math.min(opts.warmup ?? iterations, iterations), rounds: 3 };
  }
  return { iterations: opts.iterations, warmup: opts.warmup ?? opts.iterations, rounds: opts.rounds ?? 7 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function runOnce(fn: BenchFn, start: number, n: number, opts: BenchOptions): Promise<bigint> {
  const t0 = process.hrtime.bigint();
  if (opts.batch) {
    const r = fn(n);
    if (isThenable(r)) await r;
  } else {
    const end = start + n;
    for (let i = start; i < end; i++) fn(i);
  }
  if (opts.settle) await turn();
  return process.hrtime.bigint() - t0;
}

/**
 * Measure `fn` (see the module comment). Returns the result, or undefined if
 * --filter excludes it (then `fn` is never called).
 */
export async function bench(name: string, fn: BenchFn, opts: BenchOptions): Promise<Result | undefined> {
  if (!wants(name)) return undefined;
  const p = plan(opts);
  let i = 0;
  if (!opts.batch) {
    const probe = fn(i++);
    if (isThenable(probe)) throw new Error(`bench ${name}: fn returned a promise; use { batch: true } for async work`);
  }
  if (p.warmup > 0) {
    await runOnce(fn, i, p.warmup, opts);
    i += p.warmup;
  }
  await turn();
  const perOp: number[] = [];
  for (let r = 0; r < p.rounds; r++) {
    const ns = await runOnce(fn, i, p.iterations, opts);
    i += p.iterations;
    perOp.push(Number(ns) / p.iterations);
    await turn(); // let anything the round queued run outside the timing
  }
  return recordResult(name, perOp, p.iterations);
}

function recordResult(name: string, perOp: number[], iterations: number, perRound = false): Result {
  const res: Result = {
    suite: currentSuite,
    group: currentGroup,
    name,
    medianNs: median(perOp),
    minNs: Math.min(...perOp),
    maxNs: Math.max(...perOp),
    opsPerRound: iterations,
    rounds: perOp.length,
  };
  if (perRound) res.perRoundNs = perOp;
  results.push(res);
  console.log(
    `  ${pad(name, 58)} ${pad(fmtNs(res.medianNs), 10, true)}  [${fmtNs(res.minNs)} .. ${fmtNs(res.maxNs)}]  ${iterations} ops x ${perOp.length}`,
  );
  return res;
}

/** One contender of `benchInterleaved`: `fn(n)` performs n operations (it may return a promise). */
export interface Contender {
  name: string;
  fn: (n: number) => unknown;
}

/**
 * Measure `contenders` in interleaved rounds: each warms up once, then every block
 * runs one round of each (in the given order, reversed in every other block, so
 * neither always goes first). Every result keeps its per-round times for
 * `pairedRatio`. Contenders --filter excludes are never called (their result is
 * undefined). `opts.batch` is implied.
 */
export async function benchInterleaved(contenders: readonly Contender[], opts: BenchOptions): Promise<Array<Result | undefined>> {
  const p = plan(opts);
  const live = contenders.filter((c) => wants(c.name));
  const batch: BenchOptions = { ...opts, batch: true };
  for (const c of live) if (p.warmup > 0) await runOnce(c.fn, 0, p.warmup, batch);
  await turn();
  const perOp = live.map((): number[] => []);
  for (let r = 0; r < p.rounds; r++) {
    const order = live.map((_, k) => (r % 2 === 0 ? k : live.length - 1 - k));
    for (const k of order) {
      const ns = await runOnce(live[k]!.fn, 0, p.iterations, batch);
      perOp[k]!.push(Number(ns) / p.iterations);
      await turn();
    }
  }
  const out = live.map((c, k) => recordResult(c.name, perOp[k]!, p.iterations, true));
  return contenders.map((c) => out[live.indexOf(c)]);
}

/** One variant of `benchInterleavedEach`. */
export interface InterleavedEntry {
  name: string;
  fn: BenchFn;
  opts: BenchOptions;
}

/**
 * Measure several variants round by round in turn (a round of the first, a round
 * of the second, ..., then the next round of each), so that every variant sees
 * the same changes of machine state: on a shared or noisy machine the ratios of
 * sequential blocks follow whatever else ran during each block. Each variant's
 * options set its own iterations; `rounds` is taken from the first. Results are
 * returned (and recorded) in `entries` order; filtered-out entries give undefined.
 */
export async function benchInterleavedEach(entries: readonly InterleavedEntry[]): Promise<Array<Result | undefined>> {
  const live = entries.map((e) => (wants(e.name) ? e : undefined));
  const plans = live.map((e) => (e ? plan(e.opts) : undefined));
  const next = live.map(() => 0);
  for (let k = 0; k < live.length; k++) {
    const e = live[k];
    const p = plans[k];
    if (!e || !p) continue;
    if (!e.opts.batch) {
      const probe = e.fn(next[k]!++);
      if (isThenable(probe)) throw new Error(`bench ${e.name}: fn returned a promise; use { batch: true } for async work`);
    }
    if (p.warmup > 0) {
      await runOnce(e.fn, next[k]!, p.warmup, e.opts);
      next[k]! += p.warmup;
    }
    await turn();
  }
  const rounds = plans.find((p) => p)?.rounds ?? 0;
  const perOp = live.map((): number[] => []);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < live.length; k++) {
      const e = live[k];
      const p = plans[k];
      if (!e || !p) continue;
      const ns = await runOnce(e.fn, next[k]!, p.iterations, e.opts);
      next[k]! += p.iterations;
      perOp[k]!.push(Number(ns) / p.iterations);
      await turn();
    }
  }
  return live.map((e, k) => {
    if (!e) return undefined;
    const xs = perOp[k]!;
    const res: Result = {
      suite: currentSuite,
      group: currentGroup,
      name: e.name,
      medianNs: median(xs),
      minNs: Math.min(...xs),
      maxNs: Math.max(...xs),
      opsPerRound: plans[k]!.iterations,
      rounds,
      perRoundNs: xs,
    };
    results.push(res);
    console.log(
      `  ${pad(e.name, 58)} ${pad(fmtNs(res.medianNs), 10, true)}  [${fmtNs(res.minNs)} .. ${fmtNs(res.maxNs)}]  ${res.opsPerRound} ops x ${rounds} (interleaved)`,
    );
    return res;
  });
}

/* ---- comparisons ---- */

function parseTarget(t: Target | undefined): { text?: string; test?: (v: number) => boolean } {
  if (!t) return {};
  const sym = { '<': '<', '<=': '≤', '>': '>', '>=': '≥', '==': '=' }[t.op];
  const test = {
    '<': (v: number) => v < t.value,
    '<=': (v: number) => v <= t.value,
    '>': (v: number) => v > t.value,
    '>=': (v: number) => v >= t.value,
    '==': (v: number) => v === t.value,
  }[t.op];
  return { text: `${sym} ${t.value}`, test };
}

function record(c: Omit<Comparison, 'suite' | 'group' | 'target' | 'met'>, target: Target | undefined): Comparison {
  const { text, test } = parseTarget(target);
  const full: Comparison = { suite: currentSuite, group: currentGroup, ...c };
  if (text !== undefined && test) {
    full.target = text;
    full.met = test(c.value);
  }
  ratios.push(full);
  const shown = c.kind === 'ratio' ? `${c.value.toFixed(2)}x` : `${fmtNum(c.value)}${c.unit ? ` ${c.unit}` : ''}`;
  const t = full.target ? `  (target ${full.target}${full.unit ? ` ${full.unit}` : ''}: ${full.met ? 'met' : 'NOT met'})` : '';
  console.log(`  = ${pad(c.name, 56)} ${pad(shown, 10, true)}${t}`);
  return full;
}

/** Record a / b of two measured results (skipped if either was filtered out). */
export function ratio(name: string, a: Result | undefined, b: Result | undefined, target?: Target): Comparison | undefined {
  if (!a || !b) return undefined;
  return record({ name, kind: 'ratio', value: a.medianNs / b.medianNs, numerator: a.name, denominator: b.name }, target);
}

/**
 * Record the median over blocks of a / b, each block's rounds measured side by side
 * by `benchInterleaved` (skipped if either was filtered out). Slow drifts of the
 * machine cancel out of each block's ratio.
 */
export function pairedRatio(name: string, a: Result | undefined, b: Result | undefined, target?: Target): Comparison | undefined {
  if (!a || !b) return undefined;
  const ra = a.perRoundNs;
  const rb = b.perRoundNs;
  if (!ra || !rb || ra.length !== rb.length) throw new Error(`pairedRatio ${name}: both results must come from one benchInterleaved or benchInterleavedEach`);
  const value = median(ra.map((x, i) => x / rb[i]!));
  return record({ name, kind: 'ratio', value, numerator: a.name, denominator: b.name }, target);
}

/** Record a result's median in µs (skipped if it was filtered out). */
export function absolute(name: string, a: Result | undefined, target?: Target): Comparison | undefined {
  if (!a) return undefined;
  return record({ name, kind: 'absolute', value: a.medianNs / 1000, unit: 'µs', numerator: a.name }, target);
}

/** Record a count of events (e.g. calls made). */
export function count(name: string, value: number, unit: string, target?: Target): Comparison {
  return record({ name, kind: 'count', value, unit }, target);
}

/* ---- formatting ---- */

function pad(s: string, n: number, left = false): string {
  if (s.length >= n) return s;
  return left ? ' '.repeat(n - s.length) + s : s + ' '.repeat(n - s.length);
}

function fmtNum(v: number): string {
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return v < 10 ? v.toFixed(2) : v.toFixed(1);
}

export function fmtNs(ns: number): string {
  if (ns < 1000) return `${ns.toFixed(ns < 10 ? 2 : ns < 100 ? 1 : 0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  return `${(ns / 1e6).toFixed(2)} ms`;
}

/* ---- output ---- */

const repoRoot = fileURLToPath(new URL('../../', import.meta.url)); // build-test/bench/harness.js -> repo
export const RESULTS_JSON = `${repoRoot}bench/results/latest.json`;
export const BENCHMARKS_MD = `${repoRoot}BENCHMARKS.md`;
/** Where a partial run (--filter, --quick) writes: never over the recorded figures. */
export const PARTIAL_JSON = `${repoRoot}bench/results/partial.json`;

/** The command line that ran this process, relative to the repository. */
export function commandLine(): string {
  const script = process.argv[1] ? relative(repoRoot, process.argv[1]) : '?';
  return ['node', script, ...process.argv.slice(2)].join(' ');
}

/** Everything measured so far. */
export function report(): Report {
  const r: Report = {
    machine: machine(),
    command: commandLine(),
    date: new Date().toISOString(),
    quick: flags.quick,
    results: [...results],
    ratios: [...ratios],
  };
  if (flags.filter !== undefined) r.filter = flags.filter;
  return r;
}

/** Write the report as JSON (default `bench/results/latest.json`). Returns the path. */
export function writeResults(r: Report = report(), path = RESULTS_JSON): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(r, null, 2)}\n`);
  return path;
}

/**
 * Write what this run measured, and say where. A full run (no --filter, no
 * --quick) writes latest.json — replacing the suites it ran, keeping the others —
 * and regenerates their sections of BENCHMARKS.md. A partial run writes only
 * bench/results/partial.json: a subset or a smoke run must not replace the
 * recorded figures.
 */
export function publish(r: Report = report()): string {
  if (r.filter !== undefined || r.quick) {
    return `partial run: wrote ${writeResults(r, PARTIAL_JSON)}; BENCHMARKS.md and latest.json left as they were`;
  }
  return `wrote ${writeResults(mergeBySuite(r, RESULTS_JSON))} and ${updateMarkdown(r)}`;
}

/** `r` with the results and ratios of suites it did not run taken from the report at `path`, if any. */
function mergeBySuite(r: Report, path: string): Report {
  if (!existsSync(path)) return r;
  const old = JSON.parse(readFileSync(path, 'utf8')) as Report;
  if (old.quick || old.filter !== undefined) return r;
  const ran = new Set([...r.results.map((x) => x.suite), ...r.ratios.map((x) => x.suite)]);
  return {
    ...r,
    results: [...old.results.filter((x) => !ran.has(x.suite)), ...r.results],
    ratios: [...old.ratios.filter((x) => !ran.has(x.suite)), ...r.ratios],
  };
}

function machineLine(m: Machine): string {
  return `${m.cpus}, ${m.cores} logical cores, Node ${m.node}, ${m.os}`;
}

const INTRO = `# Benchmarks

Speed of \`dmabuf\`, each number measured against the alternative a user would
otherwise pick (a plain-JS object, raw \`Atomics\`, a \`MessagePort\`) and written
down as a ratio. Tables between the \`bench:*\` markers are generated: do not edit
them by hand; re-run the benchmarks instead.

- Run: \`npm run build && npm run build:test && node build-test/bench/run.js\`
  (\`--filter <substring>\` runs a subset, \`--quick\` is a smoke run whose numbers
  mean nothing). Raw results: \`bench/results/latest.json\`.
- Each figure is the median over rounds of the time per operation; the range is
  the fastest and slowest round. Measure on a quiet machine.

`;

function metaBlock(r: Report): string {
  const lines = [
    `Last run: ${r.date}`,
    '',
    `- Machine: ${machineLine(r.machine)}`,
    `- Command: \`${r.command}\``,
  ];
  if (r.quick) lines.push('- **Quick (smoke) run: these numbers are not meaningful.**');
  if (r.filter !== undefined) lines.push(`- Filtered run (\`--filter ${r.filter}\`): only matching benchmarks are listed.`);
  return lines.join('\n');
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

function suiteBlock(r: Report, key: string): string {
  const res = r.results.filter((x) => x.suite === key);
  const cmp = r.ratios.filter((x) => x.suite === key);
  const out: string[] = [];
  out.push(`_Measured ${r.date} on ${machineLine(r.machine)} with \`${r.command}\`._`);
  if (r.quick) out.push('', '**Quick (smoke) run: these numbers are not meaningful.**');
  if (r.filter !== undefined) out.push('', `Filtered run (\`--filter ${r.filter}\`): only matching benchmarks are listed.`);
  const groups = [...new Set([...res.map((x) => x.group), ...cmp.map((x) => x.group)])];
  for (const g of groups) {
    out.push('', `### ${g || key}`, '');
    const rs = res.filter((x) => x.group === g);
    if (rs.length > 0) {
      out.push('| Benchmark | Median / op | Fastest round | Slowest round | Ops × rounds |', '|---|--:|--:|--:|--:|');
      for (const x of rs) {
        out.push(`| ${cell(x.name)} | ${fmtNs(x.medianNs)} | ${fmtNs(x.minNs)} | ${fmtNs(x.maxNs)} | ${x.opsPerRound.toLocaleString('en-US')} × ${x.rounds} |`);
      }
    }
    const cs = cmp.filter((x) => x.group === g);
    if (cs.length > 0) {
      if (rs.length > 0) out.push('');
      out.push('| Comparison | Value | Target | Met |', '|---|--:|--:|:-:|');
      for (const c of cs) {
        const v = c.kind === 'ratio' ? `${c.value.toFixed(2)}×` : `${fmtNum(c.value)}${c.unit ? ` ${c.unit}` : ''}`;
        const t = c.target ? `${c.target}${c.kind !== 'ratio' && c.unit ? ` ${c.unit}` : '×'}` : '—';
        const met = c.met === undefined ? '' : c.met ? 'yes' : '**no**';
        out.push(`| ${cell(c.name)} | ${v} | ${t} | ${met} |`);
      }
    }
  }
  return out.join('\n');
}

function replaceBetween(text: string, key: string, body: string): string {
  const start = `<!-- bench:${key}:start -->`;
  const end = `<!-- bench:${key}:end -->`;
  const block = `${start}\n${body}\n${end}`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) return text.slice(0, i) + block + text.slice(j + end.length);
  const title = key === 'meta' ? '' : `## ${key}\n\n`;
  return `${text.replace(/\n*$/, '\n\n')}${title}${block}\n`;
}

/**
 * Regenerate BENCHMARKS.md (created with an intro if missing): the run's machine
 * line and command between `bench:meta` markers, and each suite that has results
 * between its `bench:<suite>` markers (sections of suites not run are kept).
 */
export function updateMarkdown(r: Report = report(), path = BENCHMARKS_MD): string {
  let text = existsSync(path) ? readFileSync(path, 'utf8') : INTRO;
  text = replaceBetween(text, 'meta', metaBlock(r));
  const suites = [...new Set([...r.results.map((x) => x.suite), ...r.ratios.map((x) => x.suite)])];
  for (const key of suites) text = replaceBetween(text, key, suiteBlock(r, key));
  writeFileSync(path, text);
  return path;
}
