/**
 * Runs last (the runner takes build-test/test/*.test.js in name order, one file at
 * a time). Node 20 runs each test file in its own process, so a file of its own
 * would see a fresh arena: this one imports every file that makes buffers, runs
 * them again in one process, and then checks that no dma-buf is left and every
 * arena page is free.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { arenaStats } from 'dmabuf';
import './dma-buf.test.js';
import './dma-buf-attach.test.js';
import './uapi-dma-buf.test.js';
import './dma-buf-threads.test.js';

test('leak check registered', () => undefined);

after(() => {
  const text = U.readFile('/sys/kernel/debug/dma_buf/bufinfo');
  assert.match(text, /\nTotal 0 objects, 0 bytes\n$/, text);
  assert.deepEqual(U.readdir('/sys/kernel/dmabuf/buffers'), []);
  const s = arenaStats();
  assert.ok(s.grownPages > 0, 'the files above allocated pages');
  assert.equal(s.freePages, s.grownPages, 'pages still allocated');
});
