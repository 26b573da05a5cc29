/**
 * The `dmabuf` command, run as users run it (a child process of node on
 * dist/cli/main.js): help on every subcommand, argument errors as
 * `<code>: <message>` with exit status 1, and short demo runs whose every frame's
 * content the display checked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help on the command and every subcommand', () => {
  for (const args of [['--help'], ['demo', '--help'], ['heaps', '--help'], ['trace', '--help'], ['trace', 'view', '--help'], ['bench', '--help']]) {
    const r = run(...args);
    assert.equal(r.status, 0, args.join(' '));
    assert.match(r.stdout, /^usage: dmabuf/, args.join(' '));
  }
});

test('argument errors print <code>: <message> and exit 1', () => {
  const cases: Array<[string[], RegExp]> = [
    [['nope'], /^EINVAL: unknown command 'nope'/],
    [['demo', '--bogus'], /^EINVAL: Unknown option '--bogus'/],
    [['demo', '--frames', '0'], /^EINVAL: --frames must be an integer in 1\.\./],
    [['demo', '--width', '2.5'], /^EINVAL: --width must be an integer/],
    [['demo', '--heap', 'nosuch'], /^ENOENT: no heap 'nosuch'/],
    [['demo', '--copy', '--compare'], /^EINVAL: --copy and --compare exclude each other/],
    [['heaps', 'extra'], /^EINVAL: /],
  ];
  for (const [args, msg] of cases) {
    const r = run(...args);
    assert.equal(r.status, 1, args.join(' '));
    assert.match(r.stderr, msg, args.join(' '));
    assert.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`);
  }
});

test('heaps lists the system heap with its usage columns', () => {
  const r = run('heaps');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^heap\s+buffers\s+bytes$/m);
  assert.match(r.stdout, /^system\s+0\s+0$/m);
});

test('demo: every frame checked, a summary, the bufinfo of the pools, a PNG of the last frame', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dmabuf-cli-'));
  try {
    const png = join(dir, 'last.png');
    const r = run('demo', '--frames', '40', '--width', '64', '--height', '32', '--stages', '3', '--depth', '2', '--quiet', '--png', png);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^dmabuf: 40 frames in [\d.]+ s = [\d.]+ fps; .*; 0 content mismatches$/m);
    assert.match(r.stdout, /Total 8 objects, 65536 bytes/); // (3 + 1) pools of 2 buffers, 8 KiB each
    const bytes = readFileSync(png);
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.equal(bytes.readUInt32BE(16), 64);
    assert.equal(bytes.readUInt32BE(20), 32);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    assert.equal(existsSync(dir), false);
  }
});

test('demo --compare runs both pipelines and prints their ratio', () => {
  const r = run('demo', '--frames', '20', '--width', '32', '--height', '32', '--compare', '--quiet');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^dmabuf: 20 frames .* 0 content mismatches$/m);
  assert.match(r.stdout, /^copy: 20 frames .* 0 content mismatches$/m);
  assert.match(r.stdout, /^dmabuf \/ postMessage copy: [\d.]+x the frames per second$/m);
});

test('demo without --quiet shows a progress line on stderr, ending at the last frame', () => {
  const r = run('demo', '--frames', '30', '--width', '64', '--height', '64', '--stages', '1');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /frames 30 {2}[\d.]+ fps {2}latency p50 [\d.]+ ms p90 [\d.]+ ms {2}in flight 0/);
});
