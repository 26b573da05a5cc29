/**
 * `dmabuf trace view` in a real browser: a 20-frame `dmabuf demo --trace` run is
 * drawn as HTML, loaded from a file:// URL by Debian's chromium driven through
 * playwright-core (which ships no browser), and the page is checked as a user
 * would see it: no errors and no network fetch, one labelled lane per thread
 * and per buffer with a rendered size, every event of the file drawn inside its
 * lane, hover titles, zoom.
 *
 * Skips, saying why, only when /usr/bin/chromium or playwright-core is missing
 * (.ci/run installs the one, `npm ci` the other).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Browser, Locator, Page } from 'playwright-core';

const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

async function loadPlaywright(): Promise<{ pw?: typeof import('playwright-core'); skip?: string }> {
  if (!existsSync(CHROMIUM)) return { skip: `no browser: ${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)` };
  try {
    return { pw: await import('playwright-core') };
  } catch {
    return { skip: 'playwright-core is not installed (a devDependency: run npm ci)' };
  }
}

const { pw, skip } = await loadPlaywright();

function cli(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `dmabuf ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

interface Expected {
  key: string;
  label: string;
  events: number;
}

/** The lanes the trace file defines, with the number of drawable events of each. */
function expectedLanes(file: string): Expected[] {
  const t = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: Array<{ ph: string; name: string; pid: number; tid: number; args?: { name?: string } }> };
  const lanes = t.traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name').map((e) => {
    const label = e.args!.name!;
    const key = e.pid === 1 ? `thread:${label}` : `buffer:${label.replace(/^buffer /, '')}`;
    const events = t.traceEvents.filter((x) => x.ph !== 'M' && x.pid === e.pid && x.tid === e.tid).length;
    return { key, label, events };
  });
  return lanes;
}

describe('trace view in a real browser', { skip }, () => {
  let dir = '';
  let html = '';
  let lanes: Expected[] = [];
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const requests: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dmabuf-view-'));
    const json = join(dir, 'T.json');
    cli('demo', '--frames', '20', '--stages', '1', '--width', '64', '--height', '48', '--quiet', '--trace', json);
    cli('trace', 'view', json);
    html = join(dir, 'T.html');
    lanes = expectedLanes(json);
    browser = await pw!.chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(10_000); // everything is in the page once it has loaded
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(html).href);
  });

  after(async () => {
    await browser?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the page loads with no error and fetches nothing but itself', () => {
    assert.deepEqual(problems, []);
    assert.deepEqual(requests, [pathToFileURL(html).href]);
  });

  test('one lane per thread and per buffer, labelled as in the file, with a rendered size', async () => {
    const keys = lanes.map((l) => l.key);
    assert.deepEqual(keys.filter((k) => k.startsWith('thread:')), ['thread:main', 'thread:camera', 'thread:gpu1', 'thread:display']);
    assert.equal(keys.filter((k) => k.startsWith('buffer:')).length, 6, 'two pools of three buffers');
    assert.deepEqual(await page.locator('[data-lane]').evaluateAll((ls) => ls.map((l) => l.getAttribute('data-lane'))), keys);
    for (const l of lanes) {
      const lane = page.locator(`[data-lane="${l.key}"]`);
      assert.equal(await lane.locator('.label .name').textContent(), l.label);
      const box = await lane.boundingBox();
      assert.ok(box && box.width > 600 && box.height >= 15, `${l.key}: ${JSON.stringify(box)}`);
      const track = await lane.locator('svg.track').boundingBox();
      assert.ok(track && track.width > 400 && track.height > 0, `${l.key} track: ${JSON.stringify(track)}`);
    }
  });

  test('every event of the file is drawn inside its lane', async () => {
    for (const l of lanes) {
      const lane = page.locator(`[data-lane="${l.key}"]`);
      const events = lane.locator('svg.track rect.ev');
      assert.equal(await events.count(), l.events, l.key);
      if (l.events === 0) continue;
      const box = (await lane.locator('svg.track').boundingBox())!;
      for (const ev of [events.first(), events.last()]) {
        const b = (await ev.boundingBox())!;
        assert.ok(b.width > 0 && b.height > 0, `${l.key}: ${JSON.stringify(b)}`);
        assert.ok(b.x >= box.x - 2 && b.x + b.width <= box.x + box.width + 2, `${l.key}: x inside the track`);
        assert.ok(b.y >= box.y - 2 && b.y + b.height <= box.y + box.height + 2, `${l.key}: y inside the track`);
      }
    }
    const count = (lane: string, sel: string): Promise<number> => page.locator(`[data-lane="${lane}"] rect.ev${sel}`).count();
    for (const stage of ['camera', 'gpu1', 'display']) {
      assert.equal(await count(`thread:${stage}`, '.i.c-dma_fence_init'), 20, `${stage}: a fence created per frame`);
      assert.equal(await count(`thread:${stage}`, '.i.c-dma_fence_signaled'), 20, `${stage}: a fence signalled per frame`);
      assert.ok(await count(`thread:${stage}`, '.x.c-dma_buf_wait') >= 20, `${stage}: a CPU-access wait per frame and buffer`);
    }
    let spans = 0;
    for (const l of lanes.filter((x) => x.key.startsWith('buffer:'))) spans += await count(l.key, '.x.c-dma_buf_add_fence');
    assert.equal(spans, 80, 'camera write, gpu1 read + write, display read: 20 frames each');
  });

  test('hover titles say what an event is, when, and its details', async () => {
    const title = await page.locator('[data-lane="thread:gpu1"] rect.ev.c-dma_fence_signaled').first().locator('title').textContent();
    assert.match(title!, /^signalled gpu1 1\n[\d.]+ ms\ncontext: \d+\nseqno: 1\ndriver: sw_sync\ntimeline: gpu1$/);
    const span = await page.locator('[data-lane] rect.ev.c-dma_buf_add_fence.u-write').first().locator('title').textContent();
    assert.match(span!, /^camera 1\n[\d.]+ ms → [\d.]+ ms \([\d.]+ ms\)\nusage: write\n[^]*added_by: camera\nsignalled_by: camera/);
  });

  test('zoom: + doubles the tracks\' width and the axis scale, fit brings both back', async () => {
    const track: Locator = page.locator('[data-lane="thread:camera"] svg.track');
    const width = async (): Promise<number> => (await track.boundingBox())!.width;
    /** Pixels per ms of the axis, from its first two ticks (labels like `10 ms`, placed by `left`). */
    const axisScale = (): Promise<number> => page.locator('#axis span').evaluateAll((spans) => {
      const [a, b] = spans.slice(0, 2).map((s) => [parseFloat(s.textContent!), parseFloat(s.getAttribute('style')!.replace('left:', ''))]);
      return (b![1]! - a![1]!) / (b![0]! - a![0]!);
    });
    const fit = await width();
    const scale = await axisScale();
    assert.ok((await page.locator('#axis span').count()) >= 3, 'axis ticks');
    await page.click('#zoom-in');
    assert.ok(Math.abs((await width()) - 2 * fit) < 2, 'twice as wide');
    assert.ok(Math.abs((await axisScale()) / scale - 2) < 0.01, 'the axis follows');
    await page.click('#zoom-fit');
    assert.ok(Math.abs((await width()) - fit) < 2);
    assert.ok(Math.abs((await axisScale()) / scale - 1) < 0.01);
    assert.deepEqual(problems, []);
  });
});
