/**
 * For the fence workers (test/workers/fence-worker.ts, container-worker.ts): the
 * fences and timelines a worker holds under names chosen by the test, and the
 * blocking wait that tells the test it is about to start.
 */
import type { DmaFence, SwSyncTimeline } from 'dmabuf';

/** Fences and timelines held by name. */
export class HeldObjects {
  readonly fences = new Map<string, DmaFence>();
  readonly timelines = new Map<string, SwSyncTimeline>();

  fence(name: string): DmaFence {
    const f = this.fences.get(name);
    if (!f) throw new Error(`worker holds no fence named ${name}`);
    return f;
  }

  timeline(name: string): SwSyncTimeline {
    const t = this.timelines.get(name);
    if (!t) throw new Error(`worker holds no timeline named ${name}`);
    return t;
  }

  /** Put every fence and close every timeline (what the `exit` op does before exiting). */
  releaseAll(): void {
    for (const f of this.fences.values()) f.put();
    this.fences.clear();
    for (const t of this.timelines.values()) t.close();
    this.timelines.clear();
  }
}

/** Posted just before a blocking wait starts. */
export interface WaitingEvent {
  kind: 'event';
  event: 'waiting';
  name: string;
  status: number;
}

/** Result of a `wait` / `waitAsync` op. */
export interface WaitReport {
  /** getStatus() just before the wait started. */
  before: number;
  ret: number;
  /** getStatus() after the wait returned. */
  after: number;
}

/** waitTimeout() on `f` (held as `name`), posting a 'waiting' event just before it blocks. */
export function blockingWait(
  f: DmaFence, name: string, timeoutMs: number, emit: (e: WaitingEvent) => void,
): WaitReport {
  const before = f.getStatus();
  emit({ kind: 'event', event: 'waiting', name, status: before });
  const ret = f.waitTimeout(timeoutMs);
  return { before, ret, after: f.getStatus() };
}
