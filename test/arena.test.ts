/** The page arena: the buddy allocator buffers will take their memory from. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { allocPages, arenaStats, freePages, orderFor, PAGE_SIZE, pageBytes } from 'dmabuf';

test('allocPages gives zeroed, naturally aligned blocks; freeing merges buddies back', () => {
  const before = arenaStats();
  const blocks = [0, 3, 1, 0, 5].map((order) => ({ order, page: allocPages(order, 'test') }));
  for (const { order, page } of blocks) {
    assert.equal(page % (1 << order), 0, `order ${order} block at page ${page} is aligned`);
    assert.ok(pageBytes(page, 1 << order).every((b) => b === 0));
  }
  const pages = new Set<number>();
  for (const { order, page } of blocks) for (let p = page; p < page + (1 << order); p++) pages.add(p);
  assert.equal(pages.size, 1 + 8 + 2 + 1 + 32, 'blocks do not overlap');
  for (const { order, page } of blocks) freePages(page, order, 'test');
  const after = arenaStats();
  assert.equal(after.freePages - before.freePages, after.grownPages - before.grownPages, 'every page is free again');
});

test('a reused block is zeroed again', () => {
  const page = allocPages(2, 'test');
  pageBytes(page, 4).fill(0xab);
  freePages(page, 2, 'test');
  const again = allocPages(2, 'test');
  assert.ok(pageBytes(again, 4).every((b) => b === 0));
  freePages(again, 2, 'test');
});

test('misuse is EINVAL and changes nothing: bad order, double free, wrong order', () => {
  assert.throws(() => allocPages(21, 'test'), { code: 'EINVAL' });
  assert.throws(() => allocPages(-1, 'test'), { code: 'EINVAL' });
  const page = allocPages(1, 'test');
  assert.throws(() => freePages(page, 0, 'test'), { code: 'EINVAL' });
  assert.throws(() => freePages(page + 1, 0, 'test'), { code: 'EINVAL' });
  freePages(page, 1, 'test');
  assert.throws(() => freePages(page, 1, 'test'), { code: 'EINVAL' });
});

test('orderFor rounds a page count up to a power of two', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 256, 257].map(orderFor), [0, 1, 2, 2, 3, 8, 9]);
  assert.equal(PAGE_SIZE, 4096);
});

test('a full arena answers ENOMEM, and freed pages are allocatable again (1 MiB arena)', () => {
  const script = `
    const { allocPages, freePages } = await import('dmabuf');
    const all = allocPages(8, 'x');            // the whole 256-page arena
    let code = 'none';
    try { allocPages(0, 'x'); } catch (e) { code = e.code; }
    freePages(all, 8, 'x');
    const again = allocPages(0, 'x');
    console.log(JSON.stringify({ all, code, again }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: new URL('../../', import.meta.url), env: { ...process.env, DMABUF_ARENA_MB: '1' }, encoding: 'utf8',
  });
  assert.deepEqual(JSON.parse(out), { all: 0, code: 'ENOMEM', again: 0 });
});

test('pages are the same bytes in every thread, also after the arena grew in another thread', async () => {
  const page = allocPages(0, 'test');
  pageBytes(page, 1).set([1, 2, 3]);
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads');
    import('dmabuf').then((D) => parentPort.once('message', ({ page }) => {
      const mine = D.pageBytes(page, 1);
      const seen = [...mine.subarray(0, 3)];
      mine.set([9, 8, 7], 3);                        // written here, read in the main thread
      const big = D.allocPages(12, 'worker');        // 16 MiB: the arena grows in this thread
      D.pageBytes(big, 4096)[4096 * 4096 - 1] = 42;
      parentPort.postMessage({ seen, big });
    }));`, { eval: true });
  worker.postMessage({ page });
  const [{ seen, big }] = (await once(worker, 'message')) as [{ seen: number[]; big: number }];
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual([...pageBytes(page, 1).subarray(3, 6)], [9, 8, 7]);
  assert.equal(pageBytes(big, 4096)[4096 * 4096 - 1], 42, 'the main thread sees memory the worker grew');
  freePages(big, 12, 'test');
  freePages(page, 0, 'test');
  await worker.terminate();
});
