import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DmaFence, SwSyncTimeline } from 'dmabuf';

test('a sw_sync point signals when the timeline reaches it', () => {
  const tl = SwSyncTimeline.create('smoke');
  const f = tl.createFence(2);
  assert.equal(f.isSignaled(), false);
  tl.inc(1);
  assert.equal(f.isSignaled(), false);
  tl.inc(1);
  assert.equal(f.getStatus(), 1);
  f.put();
  tl.close();
  const stub = DmaFence.getStub();
  assert.equal(stub.isSignaled(), true);
  stub.put();
});
