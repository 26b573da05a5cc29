/**
 * DOC: memfd — anonymous shared memory files (mm/memfd.c, mm/shmem.c)
 *
 * A memfd is a file whose contents are arena pages (shared/arena.ts), so every
 * thread that receives its fd reads and writes the same bytes. It is what
 * udmabuf turns into dma-bufs (udmabuf.ts). The file slot is the inode: its
 * per-type words hold the size, the seals, the shared-mapping counts and the pin
 * count, and a list (page-buffer.ts `extentsCreate`) holds the pages as extents.
 * Every operation runs under the slot's lock (the kernel's inode lock).
 *
 * Contract, in the kernel's order of checks:
 * - `memfdCreate`: flags ⊆ MFD_CLOEXEC | MFD_ALLOW_SEALING (EINVAL), name a
 *   string (EFAULT) of at most 249 bytes (EINVAL). Without ALLOW_SEALING the file
 *   starts with F_SEAL_SEAL.
 * - `memfdTruncate`: F_SEAL_SHRINK / F_SEAL_GROW → EPERM; new bytes read zero.
 * - `memfdAddSeals`: unknown bits → EINVAL, F_SEAL_SEAL set → EPERM, F_SEAL_WRITE
 *   while a shared mapping may write (EBUSY, mapping_deny_writable) or while a
 *   udmabuf pins pages (EBUSY, memfd_wait_for_pins — here at once, no retries).
 * - `memfdWrite`: EPERM once write-sealed; with F_SEAL_GROW the write stops at
 *   the first page-sized chunk that would pass the end (EPERM if nothing was
 *   written), as shmem_write_begin does per chunk.
 * - `memfdMmap`: write-sealed → shared writable maps EPERM, shared read-only
 *   maps allowed and not counted (VM_MAYWRITE cleared).
 *
 * Where JS forces differences, each said beside the code:
 * - Pages are allocated when the file grows (shmem allocates on first touch), so
 *   a size beyond the arena fails ENOMEM instead of making a sparse file.
 * - A mapping is one Uint8Array over one run of pages. The file is kept
 *   contiguous whenever nothing maps or pins it (growing or shrinking moves it to
 *   a new exact run); otherwise growth adds an extent, and a mapping that would
 *   span two extents fails ENOMEM (page-buffer.ts `extentsView`): map the parts.
 * - A mapping cannot be revoked, so pages under a live mapping are never freed:
 *   shrinking then keeps them (zeroed past the new end) and growing reuses them.
 *   Beyond the end, Linux maps and then raises SIGBUS on access; here the mmap
 *   itself fails EINVAL (the dma-buf core's answer for a range past the end).
 * - Shared mappings hold a vma object (a file slot of this type marked as a vma)
 *   whose release drops the counts, so munmap, a collected view and a thread's
 *   exit all count down.
 * - F_SEAL_EXEC, MFD_HUGETLB, MFD_EXEC and MFD_NOEXEC_SEAL are not supported (EINVAL).
 */
import type { PageExtent } from './device.js';
import { fail } from './errors.js';
import { allocFile, FL_AUX, filePriv, filePut, FileType, fileType, registerFileType, setFileName } from './file.js';
import { extentsCreate, extentsFree, extentsRead, extentsView } from './page-buffer.js';
import { allocPagesExact, freePagesExact, PAGE_SIZE, pageBytes } from './shared/arena.js';
import { mutexLock, mutexUnlock } from './shared/mutex.js';
import { ref, S_LOCK, unref } from './shared/slab.js';
import { world, type World } from './shared/world.js';

export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;
/** NAME_MAX - strlen("memfd:") */
export const MFD_NAME_MAX_LEN = 249;
export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;
export const F_SEAL_WRITE = 0x0008;
export const F_SEAL_FUTURE_WRITE = 0x0010;
/** The seals this memfd knows (F_ALL_SEALS without F_SEAL_EXEC). */
export const F_ALL_SEALS = 0x1f;
const O_RDWR = 2;
const O_LARGEFILE = 0o100000;
const O_CLOEXEC = 0o2000000;

/* Per-type words of the file slot. */
const M_ROLE = FL_AUX + 0; // ROLE_INODE or ROLE_VMA
const M_SEALS = FL_AUX + 1;
const M_SIZE = FL_AUX + 2; // two words: lo, hi
const M_EXTENTS = FL_AUX + 4; // extents list, or -1 without pages
const M_PAGES = FL_AUX + 5; // pages held (≥ the pages the size needs)
const M_MAPS = FL_AUX + 6; // shared mappings (pages may not move)
const M_WMAPS = FL_AUX + 7; // shared mappings that may write (i_mmap_writable)
const M_PINS = FL_AUX + 8; // udmabuf pins
/* A vma's words: FL_PRIV is the memfd (an internal reference). */
const V_COUNTED = FL_AUX + 1; // 0, or 1 + "writable"
const ROLE_INODE = 1;
const ROLE_VMA = 2;

/* ---- the inode: size, pages, lock ---- */

function base(w: World, file: number): number {
  return w.base(file);
}

/** True if file `file` is a memfd (not one of its vmas). */
export function isMemfd(file: number): boolean {
  const w = world();
  return file >= 0 && file < w.capacity && fileType(w, file) === FileType.Memfd && w.i32[base(w, file) + M_ROLE] === ROLE_INODE;
}

/** Check that `file` is a memfd. @throws `code` (EINVAL by default) otherwise. */
function expectMemfd(file: number, syscall: string, code: 'EINVAL' | 'ESPIPE' | 'EBADFD' = 'EINVAL'): void {
  if (!isMemfd(file)) throw fail(code, syscall, 'not a memfd');
}

function getSize(w: World, b: number): number {
  return (w.i32[b + M_SIZE]! >>> 0) + (w.i32[b + M_SIZE + 1]! >>> 0) * 2 ** 32;
}

function setSize(w: World, b: number, size: number): void {
  w.i32[b + M_SIZE] = size % 2 ** 32;
  w.i32[b + M_SIZE + 1] = Math.floor(size / 2 ** 32);
}

function extentsOf(w: World, b: number): PageExtent[] {
  const list = w.i32[b + M_EXTENTS]!;
  return list < 0 ? [] : extentsRead(list);
}

/** Replace the extents list (the new one is made first: ENOMEM changes nothing). */
function setExtents(w: World, b: number, extents: readonly PageExtent[], syscall: string): void {
  const list = extents.length ? extentsCreate(extents, syscall) : -1;
  const old = w.i32[b + M_EXTENTS]!;
  w.i32[b + M_EXTENTS] = list;
  if (old >= 0) extentsFree(old);
}

function freeExtents(extents: readonly PageExtent[], syscall: string): void {
  for (const x of extents) freePagesExact(x.page, x.pages, syscall);
}

/** Call `fn(view, at)` for the bytes [off, off + len) of the pages, piece by piece; `at` counts from `off`. */
function forEachPiece(extents: readonly PageExtent[], off: number, len: number, fn: (view: Uint8Array, at: number) => void): void {
  let start = 0;
  for (const x of extents) {
    const end = start + x.pages * PAGE_SIZE;
    const from = Math.max(off, start);
    const to = Math.min(off + len, end);
    if (from < to) fn(pageBytes(x.page, x.pages).subarray(from - start, to - start), from - off);
    start = end;
    if (start >= off + len) break;
  }
}

function zeroRange(extents: readonly PageExtent[], from: number, to: number): void {
  if (to > from) forEachPiece(extents, from, to - from, (v) => v.fill(0));
}

/** Move the contents into one new exact run of `pages` pages (nothing maps or pins them). */
function moveToRun(w: World, b: number, pages: number, keep: number, syscall: string): void {
  const old = extentsOf(w, b);
  if (pages === 0) {
    setExtents(w, b, [], syscall);
  } else {
    const run = allocPagesExact(pages, syscall); // zeroed
    try {
      setExtents(w, b, [{ page: run, pages }], syscall);
    } catch (e) {
      freePagesExact(run, pages, syscall);
      throw e;
    }
    const dest = pageBytes(run, pages);
    forEachPiece(old, 0, keep, (v, at) => dest.set(v, at));
  }
  freeExtents(old, syscall);
  w.i32[b + M_PAGES] = pages;
}

/** Add one extent of `more` pages after the others (the old pages are mapped or pinned). */
function appendRun(w: World, b: number, more: number, syscall: string): void {
  const run = allocPagesExact(more, syscall);
  try {
    setExtents(w, b, [...extentsOf(w, b), { page: run, pages: more }], syscall);
  } catch (e) {
    freePagesExact(run, more, syscall);
    throw e;
  }
  w.i32[b + M_PAGES] += more;
}

/** Make the file `size` bytes long (lock held, seals checked). @throws ENOMEM (nothing changes then). */
function resize(w: World, b: number, size: number, syscall: string): void {
  const old = getSize(w, b);
  const have = w.i32[b + M_PAGES]!;
  const need = Math.ceil(size / PAGE_SIZE);
  const movable = Atomics.load(w.i32, b + M_MAPS) === 0 && Atomics.load(w.i32, b + M_PINS) === 0;
  if (need !== have && movable) moveToRun(w, b, need, Math.min(old, size), syscall);
  else if (need > have) appendRun(w, b, need - have, syscall);
  // Bytes past the end are zero, so that growing shows zeros: pages kept for a
  // mapping after a shrink may have been written through it since.
  const ext = extentsOf(w, b);
  if (size < old) zeroRange(ext, size, w.i32[b + M_PAGES]! * PAGE_SIZE);
  else zeroRange(ext, old, Math.min(size, have * PAGE_SIZE));
  setSize(w, b, size);
}

function locked<T>(file: number, fn: (w: World, b: number) => T): T {
  const w = world();
  const b = base(w, file);
  mutexLock(w, b + S_LOCK);
  try {
    return fn(w, b);
  } finally {
    mutexUnlock(w, b + S_LOCK);
  }
}

/** A length or offset argument: a non-negative integer (number or bigint). @throws EINVAL. */
export function checkOffset(v: unknown, what: string, syscall: string): number {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw fail('EINVAL', syscall, `${what} must be a non-negative integer`);
  return v;
}

/* ---- the driver API ---- */

/**
 * memfd_create: a new empty memfd, held once by this thread. The name is kept as
 * "memfd:<name>", cut to the file's 31-byte name field (Linux keeps 255 bytes).
 * @throws EINVAL (flags, name too long), EFAULT (name not a string), ENOMEM.
 */
export function memfdCreate(name: unknown, flags: unknown): number {
  const syscall = 'memfd_create';
  if (typeof flags !== 'number' || !Number.isInteger(flags)) throw fail('EINVAL', syscall, 'flags must be an integer');
  if ((flags >>> 0) & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING)) {
    throw fail('EINVAL', syscall, 'flags beyond MFD_CLOEXEC | MFD_ALLOW_SEALING (HUGETLB, EXEC, NOEXEC_SEAL: not supported)');
  }
  if (typeof name !== 'string') throw fail('EFAULT', syscall, 'name must be a string');
  const text = name.includes('\0') ? name.slice(0, name.indexOf('\0')) : name;
  if (Buffer.byteLength(text) > MFD_NAME_MAX_LEN) throw fail('EINVAL', syscall, `name longer than ${MFD_NAME_MAX_LEN} bytes`);
  const fileFlags = O_RDWR | O_LARGEFILE | (flags & MFD_CLOEXEC ? O_CLOEXEC : 0);
  const file = allocFile(FileType.Memfd, -1, fileFlags, syscall);
  const w = world();
  const b = base(w, file);
  w.i32[b + M_ROLE] = ROLE_INODE;
  w.i32[b + M_SEALS] = flags & MFD_ALLOW_SEALING ? 0 : F_SEAL_SEAL;
  w.i32[b + M_EXTENTS] = -1;
  setFileName(w, file, `memfd:${text}`);
  return file;
}

/** Size of memfd `file` in bytes. */
export function memfdSize(file: number): number {
  expectMemfd(file, 'fstat');
  return locked(file, getSize);
}

/** ftruncate. @throws EINVAL (length, not a memfd), EPERM (seals), ENOMEM. */
export function memfdTruncate(file: number, length: unknown): void {
  const syscall = 'ftruncate';
  const len = checkOffset(length, 'length', syscall);
  expectMemfd(file, syscall);
  locked(file, (w, b) => {
    const old = getSize(w, b);
    const seals = w.i32[b + M_SEALS]!;
    if ((len < old && seals & F_SEAL_SHRINK) || (len > old && seals & F_SEAL_GROW)) {
      throw fail('EPERM', syscall, `sealed against ${len < old ? 'shrinking' : 'growing'}`);
    }
    if (len !== old) resize(w, b, len, syscall);
  });
}

/** F_GET_SEALS. @throws EINVAL for a file that is not a memfd. */
export function memfdGetSeals(file: number): number {
  expectMemfd(file, 'fcntl');
  return locked(file, (w, b) => w.i32[b + M_SEALS]!);
}

/** F_ADD_SEALS (memfd_add_seals). @throws EINVAL (bits, not a memfd), EPERM (F_SEAL_SEAL), EBUSY (F_SEAL_WRITE). */
export function memfdAddSeals(file: number, seals: unknown): void {
  const syscall = 'fcntl';
  if (typeof seals !== 'number' || !Number.isInteger(seals)) throw fail('EINVAL', syscall, 'seals must be an integer');
  const add = seals >>> 0;
  if (add & ~F_ALL_SEALS) throw fail('EINVAL', syscall, 'unknown seal bits (F_SEAL_EXEC is not supported)');
  expectMemfd(file, syscall);
  locked(file, (w, b) => {
    const cur = w.i32[b + M_SEALS]!;
    if (cur & F_SEAL_SEAL) throw fail('EPERM', syscall, 'F_SEAL_SEAL is set: no more seals');
    if (add & F_SEAL_WRITE && !(cur & F_SEAL_WRITE)) {
      if (Atomics.load(w.i32, b + M_WMAPS) > 0) throw fail('EBUSY', syscall, 'a shared mapping may still write');
      if (Atomics.load(w.i32, b + M_PINS) > 0) throw fail('EBUSY', syscall, 'pages are pinned (udmabuf)');
    }
    w.i32[b + M_SEALS] = cur | add;
  });
}

/** Page-sized chunks of [off, off + len) that shmem_write_begin lets through: the end of the last. */
function writableEnd(seals: number, size: number, off: number, len: number): number {
  if (!(seals & F_SEAL_GROW)) return off + len;
  let pos = off;
  while (pos < off + len) {
    const chunkEnd = Math.min(off + len, (Math.floor(pos / PAGE_SIZE) + 1) * PAGE_SIZE);
    if (chunkEnd > size) break;
    pos = chunkEnd;
  }
  return pos;
}

/** pwrite: @returns the bytes written (may be short with F_SEAL_GROW). @throws EINVAL, EFAULT, ESPIPE, EPERM, ENOMEM. */
export function memfdWrite(file: number, bytes: unknown, offset: unknown): number {
  const syscall = 'pwrite';
  const off = checkOffset(offset, 'offset', syscall);
  expectMemfd(file, syscall, 'ESPIPE');
  if (!ArrayBuffer.isView(bytes)) throw fail('EFAULT', syscall, 'bytes must be a Uint8Array (or another ArrayBuffer view)');
  const src = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (src.length === 0) return 0;
  return locked(file, (w, b) => {
    const seals = w.i32[b + M_SEALS]!;
    if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) throw fail('EPERM', syscall, 'memfd is sealed against writes');
    const end = writableEnd(seals, getSize(w, b), off, src.length);
    if (end === off) throw fail('EPERM', syscall, 'F_SEAL_GROW: the write would pass the end');
    if (end > getSize(w, b)) resize(w, b, end, syscall);
    forEachPiece(extentsOf(w, b), off, end - off, (v, at) => v.set(src.subarray(at, at + v.length)));
    return end - off;
  });
}

/** pread: a new array of the bytes [offset, offset + length), shorter at the end. @throws EINVAL, ESPIPE. */
export function memfdRead(file: number, length: unknown, offset: unknown): Uint8Array {
  const syscall = 'pread';
  const off = checkOffset(offset, 'offset', syscall);
  expectMemfd(file, syscall, 'ESPIPE');
  const len = checkOffset(length, 'length', syscall);
  return locked(file, (w, b) => {
    const n = Math.max(0, Math.min(len, getSize(w, b) - off));
    const out = new Uint8Array(n);
    forEachPiece(extentsOf(w, b), off, n, (v, at) => out.set(v, at));
    return out;
  });
}

/**
 * shmem_mmap: pages [pgoff, pgoff + pages) as a live view. A shared mapping
 * also gets a vma (held once by this thread) that the mapping must hold and whose
 * release drops the mapping counts. @throws EPERM (write-sealed), EINVAL (past
 * the end), ENOMEM (spans extents), ENOMEM (slot table full).
 */
export function memfdMmap(file: number, pgoff: number, pages: number, shared: boolean, writable: boolean): { view: Uint8Array; vma: number } {
  const syscall = 'mmap';
  expectMemfd(file, syscall, 'EINVAL');
  const w = world();
  let vma = -1;
  if (shared) {
    ref(w, file);
    try {
      vma = allocFile(FileType.Memfd, file, O_RDWR, syscall);
    } catch (e) {
      unref(w, file);
      throw e;
    }
    w.i32[base(w, vma) + M_ROLE] = ROLE_VMA;
  }
  try {
    const view = locked(file, (_w, b) => mapLocked(w, b, pgoff, pages, shared, writable, vma));
    return { view, vma };
  } catch (e) {
    if (vma >= 0) filePut(vma); // this thread's hold from allocFile: releaseVma drops the memfd
    throw e;
  }
}

function mapLocked(w: World, b: number, pgoff: number, pages: number, shared: boolean, writable: boolean, vma: number): Uint8Array {
  const seals = w.i32[b + M_SEALS]!;
  const sealed = (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0;
  if (sealed && shared && writable) throw fail('EPERM', 'mmap', 'memfd is sealed against writes: no shared writable mapping');
  if (pgoff + pages > Math.ceil(getSize(w, b) / PAGE_SIZE)) {
    throw fail('EINVAL', 'mmap', `pages ${pgoff}..${pgoff + pages} pass the end of a ${getSize(w, b)}-byte memfd (Linux: SIGBUS on access)`);
  }
  const view = extentsView(extentsOf(w, b), pgoff, pages, 'mmap');
  if (vma >= 0) {
    // A shared mapping of a file open O_RDWR may write (VM_MAYWRITE) unless write-sealed.
    const counted = 1 + (sealed ? 0 : 1);
    Atomics.add(w.i32, b + M_MAPS, 1);
    if (counted === 2) Atomics.add(w.i32, b + M_WMAPS, 1);
    w.i32[base(w, vma) + V_COUNTED] = counted;
  }
  return view;
}


/* ---- pins (udmabuf) ---- */

/**
 * Pin pages [offset, offset + size) of memfd `file` for a udmabuf (memfd_pin_folios):
 * the memfd gains an internal reference and a pin, so it keeps these pages, in
 * place, until `memfdUnpin`. The caller holds the inode lock via `memfdLocked`.
 * @returns the pinned pages as extents. @throws EINVAL (empty or past the end).
 */
export function memfdPinLocked(file: number, offset: number, size: number): PageExtent[] {
  const w = world();
  const b = base(w, file);
  // By page index, as shmem does: the last partial page of the file can be pinned.
  if (size <= 0 || offset + size > Math.ceil(getSize(w, b) / PAGE_SIZE) * PAGE_SIZE) {
    throw fail('EINVAL', 'ioctl', `range ${offset}+${size} is empty or passes the end of the memfd`);
  }
  const out: PageExtent[] = [];
  forEachPiece(extentsOf(w, b), offset, size, (v) => {
    out.push({ page: v.byteOffset / PAGE_SIZE, pages: v.length / PAGE_SIZE });
  });
  ref(w, file);
  Atomics.add(w.i32, b + M_PINS, 1);
  return out;
}

/** The seals of memfd `file`, read under the inode lock `memfdLocked` holds. */
export function memfdSealsLocked(file: number): number {
  const w = world();
  return w.i32[base(w, file) + M_SEALS]!;
}

/** Run `fn` with memfd `file`'s inode lock held. */
export function memfdLocked<T>(file: number, fn: () => T): T {
  return locked(file, () => fn());
}

/** Drop a pin taken by `memfdPinLocked` (and its reference: the last one releases the memfd). */
export function memfdUnpin(file: number): void {
  const w = world();
  Atomics.sub(w.i32, base(w, file) + M_PINS, 1);
  unref(w, file);
}

/* ---- release ---- */

function releaseVma(w: World, vma: number): void {
  const b = base(w, vma);
  const file = filePriv(w, vma);
  const counted = w.i32[b + V_COUNTED]!;
  const fb = base(w, file);
  if (counted >= 1) Atomics.sub(w.i32, fb + M_MAPS, 1);
  if (counted === 2) Atomics.sub(w.i32, fb + M_WMAPS, 1);
  unref(w, file);
}

function releaseInode(w: World, file: number): void {
  const b = base(w, file);
  const list = w.i32[b + M_EXTENTS]!;
  if (list < 0) return;
  freeExtents(extentsRead(list), 'memfd_release');
  extentsFree(list);
}

registerFileType(FileType.Memfd, {
  name: 'memfd',
  release: (w, file) => (w.i32[base(w, file) + M_ROLE] === ROLE_VMA ? releaseVma(w, file) : releaseInode(w, file)),
});
