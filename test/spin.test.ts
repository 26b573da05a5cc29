/** Opt-in spinning before sleep (setWaitSpin): it must change speed, never results. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { liveObjects, setWaitSpin, SwSyncTimeline } from 'dmabuf';
import * as U from 'dmabuf/uapi';

const baseline = liveObjects();

test('setWaitSpin rejects budgets outside 0..1e6 µs', () => {
  assert.throws(() => setWaitSpin(-1), RangeError);
  assert.throws(() => setWaitSpin(Number.NaN), RangeError);
  setWaitSpin(0);
});

// A stress case: it caught a race where a fence being signalled in another thread (claimed, not
// yet published) made poll() return with revents 0. It fails only when the race is hit, which
// the spinning hand-off makes likely within these rounds; the correct code passes every time.
test('with spinning on both sides, 30,000 poll hand-offs each wake with POLLIN', async () => {
  const ROUNDS = 30_000;
  const a = U.open('/dev/sw_sync'); // main -> worker
  const b = U.open('/dev/sw_sync'); // worker -> main
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads');
    Promise.all([import('dmabuf/uapi'), import('dmabuf')]).then(([U, D]) => parentPort.once('message', ({ packet, rounds }) => {
      D.setWaitSpin(20);
      const [a, b] = U.receiveFds(packet);
      let bad = 0;
      let pt = { value: 1 };
      U.ioctl(a, U.SW_SYNC_IOC_CREATE_FENCE, pt);
      parentPort.postMessage('ready');
      for (let v = 1; v <= rounds; v++) {
        const p = [{ fd: pt.fence, events: U.POLLIN }];
        U.poll(p, -1);
        if (!(p[0].revents & U.POLLIN)) bad++;
        U.close(pt.fence);
        pt = { value: v + 1 };
        U.ioctl(a, U.SW_SYNC_IOC_CREATE_FENCE, pt);
        U.ioctl(b, U.SW_SYNC_IOC_INC, 1);
      }
      U.close(pt.fence); U.close(a); U.close(b);
      parentPort.postMessage(bad);
    }));`, { eval: true });
  worker.postMessage({ packet: U.sendFds([a, b]), rounds: ROUNDS });
  assert.equal((await once(worker, 'message'))[0], 'ready');
  setWaitSpin(20);
  let bad = 0;
  try {
    for (let v = 1; v <= ROUNDS; v++) {
      const pt = { value: v, fence: -1 };
      U.ioctl(b, U.SW_SYNC_IOC_CREATE_FENCE, pt);
      U.ioctl(a, U.SW_SYNC_IOC_INC, 1);
      const p: U.PollFd[] = [{ fd: pt.fence, events: U.POLLIN }];
      U.poll(p, -1);
      if (!(p[0]!.revents! & U.POLLIN)) bad++;
      U.close(pt.fence);
    }
  } finally {
    setWaitSpin(0);
  }
  assert.equal(bad, 0, 'main thread polls that woke without POLLIN');
  assert.equal((await once(worker, 'message'))[0], 0, 'worker polls that woke without POLLIN');
  await once(worker, 'exit');
  U.close(a);
  U.close(b);
});

// The sharp form of the same race: check the invariant in a tight loop *while* a worker signals,
// so many checks land between its claim and its publish.
test('once a timeline reaches a point, isSignaled() and getStatus() say so, even mid-signal', async () => {
  const ROUNDS = 5_000;
  const ctl = new Int32Array(new SharedArrayBuffer(4));
  const tl = SwSyncTimeline.create('race');
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads');
    import('dmabuf').then((D) => parentPort.once('message', ({ token, ctl, rounds }) => {
      const tl = D.SwSyncTimeline.receive(token);
      const go = new Int32Array(ctl);
      for (let k = 1; k <= rounds; k++) {
        while (Atomics.load(go, 0) < k) Atomics.wait(go, 0, k - 1, 1000);
        tl.inc(1);
      }
      tl.close();
      parentPort.postMessage('done');
    }));`, { eval: true });
  worker.postMessage({ token: tl.share(), ctl: ctl.buffer, rounds: ROUNDS });
  let bad = 0;
  for (let k = 1; k <= ROUNDS; k++) {
    const f = tl.createFence(k);
    Atomics.store(ctl, 0, k);
    Atomics.notify(ctl, 0);
    for (;;) {
      const reached = tl.value >= k;
      const signalled = f.isSignaled();
      if (reached && (!signalled || f.getStatus() !== 1)) bad++;
      if (signalled) break;
    }
    f.put();
  }
  assert.equal((await once(worker, 'message'))[0], 'done');
  tl.close();
  assert.equal(bad, 0, 'checks where a reached point read as pending');
});

test('no shared object is left behind by this file', () => {
  assert.equal(liveObjects(), baseline);
});
