/**
 * Run every `*.bench.js` next to this file, one after another in this process,
 * then write bench/results/latest.json and regenerate BENCHMARKS.md.
 *
 *   node build-test/bench/run.js [--filter <substring>] [--quick]
 *
 * Each bench module exports `run(): Promise<void>`; the flags reach it through
 * the harness, which reads them from this process's argv. Every run that measured
 * something writes its results: a full run bench/results/latest.json and
 * BENCHMARKS.md, a --quick or --filter run only bench/results/partial.json.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { flags, publish, report } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const files = readdirSync(here).filter((f) => f.endsWith('.bench.js')).sort();
if (files.length === 0) throw new Error(`no *.bench.js files in ${here}`);

const started = performance.now();
for (const file of files) {
  const mod = (await import(pathToFileURL(join(here, file)).href)) as { run?: () => Promise<void> };
  if (typeof mod.run !== 'function') throw new Error(`${file} does not export run()`);
  await mod.run();
}

const r = report();
if (r.results.length === 0 && r.ratios.length === 0) {
  console.log(`nothing matched --filter ${flags.filter ?? ''}; no files written`);
} else {
  console.log(`\n${r.results.length} results, ${r.ratios.length} comparisons in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log(publish(r));
}
