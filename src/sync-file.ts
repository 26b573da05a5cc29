/**
 * DOC: sync_file — a fence as a file
 *
 * A sync_file carries one fence (any fence, containers included) between
 * contexts: explicit sync (kernel-contract §5.1–5.3, `drivers/dma-buf/sync_file.c`).
 * Its name is the one given at merge, else `<driver>-<timeline><context>-<seqno>`
 * computed when asked. Merging unwraps both fences and keeps the unsignalled
 * leaves, the latest per context (`unwrapMerge`); both inputs stay valid, and a
 * file may be merged with itself. Poll reports POLLIN once the fence is signalled,
 * with or without error; errors never show through poll.
 *
 * The file is shared: send its fd (uapi `sendFds`) or `share()` it, and the same
 * file — name, fence — is seen by the receiving thread.
 */
import {
  DmaFence, fenceFromSlot, fenceRef, fenceSlotEnable, fenceSlotIsSignaled, fenceUnref,
} from './dma-fence.js';
import { unwrap, unwrapMerge } from './dma-fence-unwrap.js';
import {
  allocFile, expectFile, FileHandle, FL_AUX, fileGet, fileName, filePriv, FileType, fileType, receiveFile,
  registerFileType, setFileName,
} from './file.js';
import { world } from './shared/world.js';

/** Set once the first poll has enabled signalling (POLL_ENABLED). */
const SF_POLL_ENABLED = FL_AUX + 0;
export const POLLIN = 0x1;

/** One leaf's entry of SYNC_IOC_FILE_INFO (`struct sync_fence_info`). */
export interface SyncFenceInfo {
  obj_name: string;
  driver_name: string;
  status: number;
  flags: number;
  timestamp_ns: bigint;
}

registerFileType(FileType.SyncFile, {
  name: 'sync_file',
  release: (_w, _file, fence) => fenceUnref(fence),
});

/**
 * sync_file_poll on file slot `file` (the caller keeps the file alive): the first
 * poll enables signalling; POLLIN once the fence is signalled, else 0.
 */
export function syncFilePoll(file: number): number {
  const w = world();
  const fence = filePriv(w, file);
  if (Atomics.compareExchange(w.i32, w.base(file) + SF_POLL_ENABLED, 0, 1) === 0) fenceSlotEnable(w, fence);
  return fenceSlotIsSignaled(w, fence) ? POLLIN : 0;
}

/**
 * sync_file_create for a fence slot whose internal reference the new file takes
 * over. The calling thread holds the new file once. @throws ENOMEM (the caller
 * still owns the reference then).
 */
export function syncFileCreateFromSlot(fence: number, syscall: string): number {
  return allocFile(FileType.SyncFile, fence, 2 /* O_RDWR */, syscall);
}

/** A handle on a sync_file: one reference to the file. */
export class SyncFile extends FileHandle {
  private constructor(file: number) {
    super(file, 'sync_file');
  }

  /**
   * sync_file_create: a new sync_file holding a new reference to `fence`.
   * @throws ENOMEM when the shared table is full.
   */
  static create(fence: DmaFence): SyncFile {
    if (!(fence instanceof DmaFence)) throw new TypeError('sync_file_create: not a DmaFence');
    const slot = fenceRef(fence);
    try {
      return new SyncFile(allocFile(FileType.SyncFile, slot, 2 /* O_RDWR */, 'sync_file_create'));
    } catch (e) {
      fenceUnref(slot);
      throw e;
    }
  }

  /** @internal a handle on file `slot`, taking one more hold. @throws EINVAL if it is not a sync_file. */
  static fromFile(slot: number): SyncFile {
    expectFile(world(), slot, FileType.SyncFile, 'sync_file_fdget');
    fileGet(slot);
    return new SyncFile(slot);
  }

  /** True if file `slot` is a sync_file. @internal */
  static isSyncFile(slot: number): boolean {
    return fileType(world(), slot) === FileType.SyncFile;
  }

  /** sync_file_get_fence: a new reference to the fence. */
  getFence(): DmaFence {
    return fenceFromSlot(filePriv(world(), this.file));
  }

  /** sync_file_get_name: the merge-time name, else `<driver>-<timeline><context>-<seqno>`. */
  getName(): string {
    const user = fileName(world(), this.file);
    if (user) return user;
    const f = this.getFence();
    try {
      return `${f.driverName}-${f.timelineName}${f.context}-${BigInt.asIntN(64, f.seqno)}`;
    } finally {
      f.put();
    }
  }

  /**
   * sync_file_merge: a new sync_file whose fence signals when both have; named
   * `name` (cut to 31 bytes). @throws ENOMEM when the shared table is full.
   */
  static merge(name: string, a: SyncFile, b: SyncFile): SyncFile {
    if (typeof name !== 'string') throw new TypeError('sync_file_merge: name must be a string');
    const fa = a.getFence();
    const fb = b.getFence();
    let merged: DmaFence;
    try {
      merged = unwrapMerge(fa, fb);
    } finally {
      fa.put();
      fb.put();
    }
    try {
      const out = SyncFile.create(merged);
      setFileName(world(), out.file, name);
      return out;
    } finally {
      merged.put();
    }
  }

  /** Status of the whole fence: 1 signalled, 0 active, negative error. */
  status(): number {
    const f = this.getFence();
    try {
      return f.getStatus();
    } finally {
      f.put();
    }
  }

  /** The leaves of the fence, as SYNC_IOC_FILE_INFO fills `sync_fence_info`. */
  fenceInfo(): SyncFenceInfo[] {
    const f = this.getFence();
    try {
      const out: SyncFenceInfo[] = [];
      for (const leaf of unwrap(f)) {
        const status = leaf.getStatus();
        out.push({
          obj_name: leaf.timelineName,
          driver_name: leaf.driverName,
          status,
          flags: 0,
          timestamp_ns: leaf.isSignaled() ? leaf.timestamp() : 0n,
        });
      }
      return out;
    } finally {
      f.put();
    }
  }

  /** Number of leaf fences (what SYNC_IOC_FILE_INFO reports with num_fences 0). */
  numFences(): number {
    const f = this.getFence();
    let n = 0;
    try {
      for (const leaf of unwrap(f)) if (leaf) n++;
    } finally {
      f.put();
    }
    return n;
  }

  /**
   * sync_file_poll: the first poll enables signalling; returns POLLIN when the
   * fence is signalled (with or without error), else 0.
   */
  poll(): number {
    return syncFilePoll(this.file);
  }

  /** Receive a token made by `share()`. @throws EINVAL if it does not carry one sync_file. */
  static receive(token: unknown): SyncFile {
    return new SyncFile(receiveFile(token, FileType.SyncFile, 'sync_file_receive'));
  }

}

