/**
 * DOC: mmap(2) and munmap(2)
 *
 * `mmap(length, prot, flags, fd, offset)` returns a live Uint8Array of `length`
 * bytes over the object's memory — the same bytes every other mapping, importer
 * and thread sees. The checks run in Linux's order (arch mmap, then do_mmap):
 * offset not page aligned → EINVAL; fd not open → EBADF; length 0 → EINVAL;
 * offset + length past 2^64 → EOVERFLOW; neither MAP_SHARED nor MAP_PRIVATE →
 * EINVAL; a shared writable mapping of a file not open for writing, or any
 * mapping of a file not open for reading → EACCES; a file without an mmap op →
 * ENODEV; then the driver's own checks.
 *
 * MAP_PRIVATE is copy-on-write in Linux. JS cannot fault pages in, so a private
 * mapping here is a private copy taken at mmap time (later writes by others are
 * not seen; the mapper's writes stay its own), for drivers that allow private
 * mappings at all.
 *
 * The mapping holds its file until `munmap(view)` (mmap.ts in the core). A
 * driver that must know when its mappings go (memfd counts shared mappings for
 * F_SEAL_WRITE, as Linux's i_mmap_writable) returns a vma object with the view:
 * the mapping holds that instead, and its release is the driver's vm_ops->close —
 * it runs on munmap, garbage collection or thread exit alike.
 */
import { DmaBufError, fail } from '../errors.js';
import { fileFlags, filePut, fileType, type FileType } from '../file.js';
import { trackMapping, untrackMapping } from '../mmap.js';
import { PAGE_SIZE } from '../shared/arena.js';
import { world } from '../shared/world.js';
import { MAP_PRIVATE, MAP_SHARED, O_ACCMODE, O_RDONLY, O_WRONLY, PROT_WRITE } from './constants.js';
import { fdFile } from './fd-table.js';

/**
 * What a driver's mmap may return instead of a bare view:
 * - `file`: the object the mapping holds *in place of* the fd's file (a vma of the
 *   driver's own, whose release tells it the mapping is gone — memfd); the op's one
 *   hold on it passes to the mapping;
 * - `object`: an object the mapping keeps alive *besides* the file (DRM: the GEM
 *   object), with one internal reference that the mapping takes over.
 */
export interface MmapVma {
  readonly view: Uint8Array;
  readonly file?: number;
  readonly object?: number;
}

/** A driver's mmap: pages [pgoff, pgoff + pages) of `file`, as a live view (or a view and its vma). */
export type MmapOp = (file: number, pgoff: number, pages: number, shared: boolean, prot: number) => Uint8Array | MmapVma;
const mmapOps: Array<MmapOp | undefined> = [];

export function registerMmap(type: FileType, op: MmapOp): void {
  mmapOps[type] = op;
}

function intArg(v: unknown, name: string): number {
  if (typeof v === 'bigint') return Number(v);
  if (typeof v !== 'number' || !Number.isInteger(v)) throw fail('EINVAL', 'mmap', `${name} must be an integer`);
  return v;
}

/** mmap(2). @throws EINVAL, EBADF, EOVERFLOW, EACCES, ENODEV, and the driver's errors. */
export function mmap(length: number, prot: number, flags: number, fd: number, offset: number | bigint = 0): Uint8Array {
  const off = intArg(offset, 'offset');
  if (off < 0 || off % PAGE_SIZE !== 0) throw fail('EINVAL', 'mmap', 'offset must be a multiple of PAGE_SIZE');
  const file = fdFile(fd, 'mmap', 'EINVAL');
  const len = intArg(length, 'length');
  if (len <= 0) throw fail('EINVAL', 'mmap', 'length must be positive');
  const pages = Math.ceil(len / PAGE_SIZE);
  const pgoff = off / PAGE_SIZE;
  if (off + pages * PAGE_SIZE > 2 ** 64) throw fail('EOVERFLOW', 'mmap', 'offset + length overflows');
  const p = intArg(prot, 'prot');
  const type = intArg(flags, 'flags') & 3;
  if (type !== MAP_SHARED && type !== MAP_PRIVATE) throw fail('EINVAL', 'mmap', 'flags need MAP_SHARED or MAP_PRIVATE');
  const w = world();
  const acc = fileFlags(w, file) & O_ACCMODE;
  if (type === MAP_SHARED && p & PROT_WRITE && acc === O_RDONLY) {
    throw fail('EACCES', 'mmap', 'shared writable mapping of a file opened read-only');
  }
  if (acc === O_WRONLY) throw fail('EACCES', 'mmap', 'file not open for reading');
  const op = mmapOps[fileType(w, file)];
  if (!op) throw fail('ENODEV', 'mmap', `fd ${fd} cannot be mapped`);
  let got: Uint8Array | MmapVma;
  try {
    got = op(file, pgoff, pages, type === MAP_SHARED, p);
  } catch (e) {
    throw e instanceof DmaBufError ? e.withSyscall('mmap') : e;
  }
  let view = got instanceof Uint8Array ? got : got.view;
  if (type === MAP_PRIVATE) view = view.slice();
  if (view.length !== len) view = view.subarray(0, len);
  if (got instanceof Uint8Array) return trackMapping(view, file);
  const out = trackMapping(view, got.file ?? file, got.object ?? -1);
  if (got.file !== undefined) filePut(got.file); // the mapping took its own hold
  return out;
}

/** munmap(2) of a whole view `mmap` returned. @throws EINVAL for anything else. */
export function munmap(view: Uint8Array): void {
  untrackMapping(view, 'munmap');
}
