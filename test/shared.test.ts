/** The shared object table: joining, packets, slot reuse, exhaustion, thread exit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { setEnvironmentData, Worker } from 'node:worker_threads';
import { DmaFence, liveObjects, worldMemory } from 'dmabuf';

const ops = { getDriverName: () => 'test', getTimelineName: () => 'shared' };
const worker = (): Worker => new Worker(new URL('./workers/shared-worker.js', import.meta.url));
const reply = async (w: Worker): Promise<Record<string, unknown>> => (await once(w, 'message'))[0];

DmaFence.getStub().put();
const baseline = liveObjects();

test('a worker accepts every packet, not only the first', async () => {
  const w = worker();
  const ctx = DmaFence.contextAlloc(1);
  const fences = [1, 2, 3].map((s) => DmaFence.init(ops, ctx, s));
  for (const f of fences) {
    w.postMessage({ cmd: 'receive-and-report', token: f.share() });
    assert.deepEqual(await reply(w), { seqno: Number(f.seqno) });
  }
  for (const f of fences) f.put();
  await w.terminate();
});

/** A Worker started as if before dmabuf was loaded (no table in its environment data). */
function strangerWorker(): Worker {
  setEnvironmentData('dmabuf:world', undefined);
  try {
    return new Worker(`
      const { parentPort } = require('node:worker_threads');
      parentPort.on('message', async ({ token, mem }) => {
        process.removeAllListeners('warning'); // DMABUF_OWN_TABLE is expected when no memory is given
        const D = await import('dmabuf');
        try {
          if (mem) D.adoptWorld(mem);
          const f = D.DmaFence.receive(token);
          parentPort.postMessage({ seqno: Number(f.seqno) });
          f.put();
        } catch (e) {
          parentPort.postMessage({ code: e.code });
        }
      });`, { eval: true });
  } finally {
    setEnvironmentData('dmabuf:world', worldMemory());
  }
}

test('a Worker started before dmabuf was loaded rejects packets (EINVAL) until it adopts worldMemory()', async () => {
  const ctx = DmaFence.contextAlloc(1);
  const f = DmaFence.init(ops, ctx, 7);
  const stranger = strangerWorker();
  const token = f.share();
  stranger.postMessage({ token });
  assert.deepEqual(await reply(stranger), { code: 'EINVAL' });
  await stranger.terminate();
  DmaFence.receive(token).put(); // the refused packet was not consumed: its reference is still in flight
  const late = strangerWorker();
  late.postMessage({ token: f.share(), mem: worldMemory() });
  assert.deepEqual(await reply(late), { seqno: 7 });
  await late.terminate();
  f.put();
});

test('a fence slot reused after addCallback + signal + put still wakes a waiter in another thread', async () => {
  const ctx = DmaFence.contextAlloc(1);
  // Leave an armed callback delivery behind on a slot, then free the slot.
  const first = DmaFence.init(ops, ctx, 1);
  assert.equal(first.waitTimeout(0), 0); // any wait gives a private fence its shared slot
  first.addCallback(() => {});
  await Promise.resolve(); // end of job: the delivery is armed
  first.signal();
  first.put();
  // The next fence of this thread to take a slot reuses that one (the per-thread cache is LIFO);
  // share() below gives it its slot.
  const second = DmaFence.init(ops, ctx, 2);
  const w = worker();
  w.postMessage({ cmd: 'wait', token: second.share(), timeoutMs: 20_000 });
  assert.deepEqual(await reply(w), { waiting: true });
  // Let the worker fall asleep first, so the wake-up really needs a notify. A lost wake-up shows
  // as a waiter that sleeps to its timeout and then finds the fence signalled (remaining time 1).
  await new Promise((resolve) => setTimeout(resolve, 100));
  second.signal();
  const r = await reply(w);
  assert.ok((r['r'] as number) > 10_000, `woken by the signal, not by its timeout (remaining ${String(r['r'])} ms)`);
  assert.equal(r['status'], 1);
  second.put();
  await w.terminate();
});

test('the table answers ENOMEM when full and recovers when objects are freed', () => {
  const script = `
    const { SwSyncTimeline } = await import('dmabuf');
    // sw_sync points always live in the shared table (driver fences stay private until shared).
    const tl = SwSyncTimeline.create('full');
    const fences = [];
    let code = 'none';
    try { for (;;) fences.push(tl.createFence(fences.length + 1)); } catch (e) { code = e.code; }
    const full = fences.length;
    for (const f of fences) f.put();
    const again = tl.createFence(1); again.put();
    tl.close();
    console.log(JSON.stringify({ code, full }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: new URL('../../', import.meta.url), env: { ...process.env, DMABUF_SLOTS: '256' }, encoding: 'utf8',
  });
  const { code, full } = JSON.parse(out) as { code: string; full: number };
  assert.equal(code, 'ENOMEM');
  assert.ok(full > 200 && full <= 256, `about 256 points fit (less the timeline and its file), got ${full}`);
});

test('a terminated worker gives back the free slots it had cached (a 128-slot table stays usable)', () => {
  // Without reclaiming the dead worker's slot cache, the main thread would hit ENOMEM well before 100.
  const script = `
    const { Worker } = await import('node:worker_threads');
    const { once } = await import('node:events');
    const { SwSyncTimeline, liveObjects } = await import('dmabuf');
    const w = new Worker(new URL('./build-test/test/workers/shared-worker.js', 'file://' + process.cwd() + '/'), { execArgv: [] });
    w.postMessage({ cmd: 'churn', count: 100 });
    await once(w, 'message');
    await w.terminate();
    const tl = SwSyncTimeline.create('after');
    const fences = [];
    for (let i = 1; i <= 100; i++) fences.push(tl.createFence(i)); // points always take a slot
    for (const f of fences) f.put();
    tl.close();
    console.log(JSON.stringify({ made: fences.length, live: liveObjects() }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: new URL('../../', import.meta.url), env: { ...process.env, DMABUF_SLOTS: '128' }, encoding: 'utf8',
  });
  assert.deepEqual(JSON.parse(out), { made: 100, live: 0 });
});

test('no shared object is left behind by this file', () => {
  assert.equal(liveObjects(), baseline);
});
