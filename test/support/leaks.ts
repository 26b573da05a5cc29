/**
 * Leak checks for the test files: the liveObjects() baseline, waiting for it to
 * come back (a worker's holds are reaped from its 'exit' handler), and `Refs`,
 * which puts everything a test registered once the test ends.
 */
import { after, before, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { DmaFence, liveObjects } from 'dmabuf';
import type { SwSyncTimeline } from 'dmabuf';

/** liveObjects() after creating the stub, which lives forever once created. */
export function stubBaseline(): number {
  DmaFence.getStub().put();
  return liveObjects();
}

/** liveObjects() once it is back to `expected`, or after `ms`. */
export async function pollLiveObjects(expected: number, ms = 5_000): Promise<number> {
  const end = Date.now() + ms;
  while (liveObjects() !== expected && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return liveObjects();
}

/**
 * Take the baseline (stub included) before the calling file's first test and
 * assert, after its last, that liveObjects() is back to it.
 */
export function installLeakCheck(message: string): void {
  let baseline = 0;
  before(() => {
    baseline = stubBaseline();
  });
  after(() => {
    assert.equal(liveObjects(), baseline, message);
  });
}

/** Puts/closes everything registered at the end of the test, even when an assertion failed first. */
export class Refs {
  #undo: Array<() => void> = [];

  constructor(t: TestContext) {
    t.after(() => this.releaseAll());
  }

  fence<T extends DmaFence>(f: T): T {
    this.#undo.push(() => f.put());
    return f;
  }

  timeline(tl: SwSyncTimeline): SwSyncTimeline {
    this.#undo.push(() => tl[Symbol.dispose]());
    return tl;
  }

  worker<W extends { readonly worker: Worker }>(w: W): W {
    this.#undo.push(() => void w.worker.terminate());
    return w;
  }

  releaseAll(): void {
    for (const u of this.#undo.splice(0).reverse()) u();
  }
}
