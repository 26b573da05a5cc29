/**
 * DOC: mappings hold their file
 *
 * In Linux a mapping (a vma) holds a reference to the file it maps, so a buffer
 * or memfd lives while it is mapped even after every fd is closed, until munmap
 * or process exit. Here a mapping is a Uint8Array over arena pages (zero-copy);
 * this module records which file each view holds, as one hold of the mapping's
 * thread on the file:
 *
 * - `munmap(view)` drops it (EINVAL for a view that is not a live mapping);
 * - a view the program drops without munmap is unmapped when the garbage
 *   collector reclaims it (FinalizationRegistry), so forgotten views do not leak
 *   buffers — JS has no address space to tear down at "process exit" otherwise;
 * - a thread that exits drops its holds like its fds (reaper.ts).
 *
 * A mapping may also hold the object behind the file that it maps (`object`), as
 * a DRM vma holds its GEM object (drm_gem_vm_open): the object's pages then stay
 * valid after its handle and the fd are gone, until munmap.
 */
import { fail } from './errors.js';
import { fileGet, filePut } from './file.js';
import { adoptAsHold, unhold } from './shared/slab.js';
import { world } from './shared/world.js';

/** What a live view holds; the record is also its FinalizationRegistry unregister token. */
interface Mapping {
  readonly file: number;
  readonly object: number;
}

function dropMapping(file: number, object: number): void {
  filePut(file);
  if (object >= 0) unhold(world(), object);
}

const live = new WeakMap<Uint8Array, Mapping>();
const collected = new FinalizationRegistry<[number, number]>(([file, object]) => {
  try {
    dropMapping(file, object);
  } catch {
    // the world may be gone at teardown; nothing left to release then
  }
});

/**
 * Record `view` as a mapping of `file`, taking one hold on the file for it. If
 * `object` (a slot) is given, the mapping also adopts the caller's internal
 * reference to it as a hold.
 */
export function trackMapping(view: Uint8Array, file: number, object = -1): Uint8Array {
  fileGet(file);
  if (object >= 0) adoptAsHold(world(), object);
  const m: Mapping = { file, object };
  live.set(view, m);
  collected.register(view, [file, object], m);
  return view;
}

/** munmap: drop the mapping's hold on its file. @throws EINVAL if `view` is not a live mapping. */
export function untrackMapping(view: unknown, syscall: string): void {
  const m = view instanceof Uint8Array ? live.get(view) : undefined;
  if (!m) throw fail('EINVAL', syscall, 'not a live mapping (already unmapped, or not from mmap)');
  live.delete(view as Uint8Array);
  collected.unregister(m);
  dropMapping(m.file, m.object);
}
