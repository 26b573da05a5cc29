/** Worker for test/shared.test.ts: answers one message per command. */
import { parentPort } from 'node:worker_threads';
import { DmaFence, SwSyncTimeline } from 'dmabuf';

type Msg =
  | { cmd: 'receive-and-report'; token: unknown }
  | { cmd: 'wait'; token: unknown; timeoutMs: number }
  | { cmd: 'churn'; count: number };

const held: DmaFence[] = [];
parentPort!.on('message', (m: Msg) => {
  if (m.cmd === 'receive-and-report') {
    const f = DmaFence.receive(m.token);
    held.push(f);
    parentPort!.postMessage({ seqno: Number(f.seqno) });
  } else if (m.cmd === 'wait') {
    const f = DmaFence.receive(m.token);
    parentPort!.postMessage({ waiting: true });
    const r = f.waitTimeout(m.timeoutMs);
    parentPort!.postMessage({ r, status: f.getStatus() });
    f.put();
  } else if (m.cmd === 'churn') {
    // allocate and free many objects, leaving some in this thread's free-slot cache, and exit
    const tl = SwSyncTimeline.create('churn');
    for (let i = 1; i <= m.count; i++) tl.createFence(i).put();
    tl.close();
    parentPort!.postMessage({ done: true });
  }
});
