/** Plain driver fences for the container tests (arrays, chains, unwrap). */
import { DmaFence } from 'dmabuf';
import type { DmaFenceOps } from 'dmabuf';

/** Driver 'test', timeline 'tl'. */
export const ops: DmaFenceOps = { getDriverName: () => 'test', getTimelineName: () => 'tl' };

/** A pending driver fence on a fresh context. */
export function driverFence(seqno: number | bigint = 1, o: DmaFenceOps = ops): DmaFence {
  return DmaFence.init(o, DmaFence.contextAlloc(1), seqno);
}

/** Put each fence (a null is skipped). */
export function putAll(...fences: Array<DmaFence | null>): void {
  for (const f of fences) f?.put();
}
