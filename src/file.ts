/**
 * DOC: anonymous files
 *
 * The kernel hands sync_files, sw_sync timelines and dma-bufs to user space as
 * files; a file's reference count is what keeps the object alive (fds, dup,
 * mmap, fds in flight), and its `release` runs once, when the last goes. Here a
 * file is a shared slot: its type, the object it wraps (`priv`, a slot with an
 * internal reference), its open flags, an inode number, and a 32-byte name.
 *
 * A thread's fds and its driver-API handles are *holds* on the file (slab.ts), so
 * a file is released when the last fd in any thread is closed, or that thread exits.
 */
import { fail } from './errors.js';
import { adoptAsHold, allocSlot, hold, Kind, onRelease, readName, S_DATA, unhold, writeName } from './shared/slab.js';
import { packSlots, unpackSlots, type Packet } from './shared/packet.js';
import { H_INODE, world, type World } from './shared/world.js';

export const FL_TYPE = S_DATA + 0;
export const FL_PRIV = S_DATA + 1;
export const FL_FLAGS = S_DATA + 2;
/** Inode number, 64-bit at words 14-15 (8-byte aligned). */
export const FL_INODE = S_DATA + 4;
/** Per-type words, 16..31. */
export const FL_AUX = S_DATA + 6;
export const FL_NAME = 32;
export const FL_NAME_WORDS = 8;

/** File types, one per driver that hands out files. */
export const enum FileType {
  SyncFile = 1,
  SwSync = 2,
  DmaBuf = 3,
  Memfd = 4,
  HeapDev = 5,
  UdmabufDev = 6,
  DrmDev = 7,
}

export interface FileOps {
  /** Name of the file type, for diagnostics ("sync_file", "sw_sync", "dmabuf", …). */
  readonly name: string;
  /** Last reference gone: drop what the file wraps. Runs in whichever thread dropped it. */
  release(w: World, fileSlot: number, priv: number): void;
}

const fileOps: Array<FileOps | undefined> = [];

/** Register the release hook of a file type. */
export function registerFileType(type: FileType, ops: FileOps): void {
  fileOps[type] = ops;
}

/**
 * Create a file of `type` wrapping `priv` (whose internal reference the file now
 * owns). The calling thread holds the new file once.
 * @throws ENOMEM when the shared table is full (the caller still owns `priv`'s reference then).
 */
export function allocFile(type: FileType, priv: number, flags: number, syscall: string): number {
  const w = world();
  const slot = allocSlot(w, Kind.File, syscall);
  const b = w.base(slot);
  w.i32[b + FL_TYPE] = type;
  w.i32[b + FL_PRIV] = priv;
  w.i32[b + FL_FLAGS] = flags;
  // A 64-bit counter kept as two words so that creating a file needs no BigInt.
  const lo = Atomics.add(w.i32, H_INODE, 1);
  if (lo === -1) Atomics.add(w.i32, H_INODE + 1, 1);
  w.i32[b + FL_INODE] = lo;
  w.i32[b + FL_INODE + 1] = Atomics.load(w.i32, H_INODE + 1) - (lo === -1 ? 1 : 0);
  adoptAsHold(w, slot);
  return slot;
}

/** Type of file `slot`, or 0 if `slot` is not a live file. */
export function fileType(w: World, slot: number): FileType | 0 {
  const b = w.base(slot);
  if (Atomics.load(w.i32, b) !== Kind.File) return 0;
  return w.i32[b + FL_TYPE] as FileType;
}

/** The object file `slot` wraps. */
export function filePriv(w: World, slot: number): number {
  return w.i32[w.base(slot) + FL_PRIV]!;
}

/** Inode number of file `slot` (64-bit, exact below 2^53). */
export function fileInode(w: World, slot: number): number {
  const b = w.base(slot);
  return (w.i32[b + FL_INODE]! >>> 0) + (w.i32[b + FL_INODE + 1]! >>> 0) * 2 ** 32;
}

/** Open flags of file `slot`. */
export function fileFlags(w: World, slot: number): number {
  return w.i32[w.base(slot) + FL_FLAGS]!;
}

export function fileName(w: World, slot: number): string {
  return readName(w, w.base(slot) + FL_NAME, FL_NAME_WORDS);
}

export function setFileName(w: World, slot: number, name: string): void {
  writeName(w, w.base(slot) + FL_NAME, FL_NAME_WORDS, name);
}

/** One more hold of this thread on file `slot`. */
export function fileGet(slot: number): void {
  hold(world(), slot);
}

/** Drop one hold of this thread; the last reference anywhere releases the file. */
export function filePut(slot: number): void {
  unhold(world(), slot);
}

/** Check that `slot` is a live file of `type`. @throws EINVAL otherwise. */
export function expectFile(w: World, slot: number, type: FileType, syscall: string): void {
  if (fileType(w, slot) !== type) throw fail('EINVAL', syscall, `object ${slot} is not a ${fileOps[type]?.name ?? 'file'}`);
}

/**
 * What every driver-API handle on a file shares (SyncFile, SwSyncTimeline, later
 * DmaBuf): one hold of this thread on the file, `share()` for another thread, and
 * `close()` (fput), after which the handle is unusable (EBADF).
 */
export abstract class FileHandle implements Disposable {
  #file: number;
  readonly #what: string;

  protected constructor(file: number, what: string) {
    this.#file = file;
    this.#what = what;
  }

  /** @internal the file slot. @throws EBADF after close(). */
  get file(): number {
    if (this.#file < 0) throw fail('EBADF', this.#what, `${this.#what} handle already closed`);
    return this.#file;
  }

  /** A token carrying one reference to this file to another thread (post it with postMessage). */
  share(): Packet {
    return packSlots([this.file], `${this.#what}_share`);
  }

  /** Give this handle's reference to the caller (e.g. an fd) and make the handle unusable. @returns the file slot. */
  forget(): number {
    const f = this.file;
    this.#file = -1;
    return f;
  }

  /** Drop this handle (fput); the last reference anywhere releases the file. */
  close(): void {
    const f = this.file;
    this.#file = -1;
    filePut(f);
  }

  [Symbol.dispose](): void {
    if (this.#file >= 0) this.close();
  }
}

/**
 * Receive a token (shared/packet.ts) that must carry exactly one file of `type`:
 * this thread now holds it. @throws EINVAL otherwise (nothing is kept then).
 */
export function receiveFile(token: unknown, type: FileType, syscall: string): number {
  const w = world();
  const slots = unpackSlots(token, syscall);
  if (slots.length !== 1 || fileType(w, slots[0]!) !== type) {
    for (const s of slots) unhold(w, s);
    throw fail('EINVAL', syscall, `token does not carry one ${fileOps[type]?.name ?? 'file'}`);
  }
  return slots[0]!;
}

onRelease(Kind.File, (w, slot) => {
  const b = w.base(slot);
  fileOps[w.i32[b + FL_TYPE]!]?.release(w, slot, w.i32[b + FL_PRIV]!);
});
