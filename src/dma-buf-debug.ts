/**
 * DOC: the dma-buf listings (dma-buf.c §1.12, §1.16)
 *
 * - `bufinfoText`: /sys/kernel/debug/dma_buf/bufinfo (dma_buf_debug_show), every
 *   buffer of every thread, most recently exported first, each with its fences of
 *   usage ≤ READ and its attached devices, read under the buffer's reservation lock.
 * - `dmaBufSysfs`: /sys/kernel/dmabuf/buffers/<inode>/{exporter_name,size}.
 * - `dmaBufFdinfo`: the dma-buf lines of /proc/self/fdinfo/<fd>.
 *
 * The file refcount shown (`count`) is the file slot's reference count: one per
 * thread holding the file (however many fds, handles and mappings it has there)
 * and one per attachment — the kernel counts each fd and mapping; a thread's are
 * counted once here.
 */
import { bufferSummary, DmaBuf, forEachDmaBuf } from './dma-buf.js';
import { attachedDeviceNames } from './dma-buf-attach.js';
import { fileInode, filePriv } from './file.js';
import { slotRefs, tryRef, unref } from './shared/slab.js';
import { world } from './shared/world.js';

/** f_mode bits the kernel shows: FMODE_READ, FMODE_WRITE, FMODE_LSEEK, FMODE_OPENED. */
export function fileMode(flags: number): number {
  const acc = ((flags & 3) + 1) & 3; // OPEN_FMODE
  return acc | 0x4 | 0x80000;
}

const pad8 = (n: number): string => String(n).padStart(8, '0');
const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');

/**
 * Every live buffer, most recent first, each with an internal reference the caller
 * must drop. The references are taken under the list lock and dropped outside it:
 * dropping the last one releases the buffer, which takes the list lock itself.
 */
function grabAll(): number[] {
  const w = world();
  const files: number[] = [];
  forEachDmaBuf((file) => {
    if (tryRef(w, file)) files.push(file); // else its release is under way
  });
  return files;
}

/** One buffer's block of bufinfo (its resv lock held while its fences and devices are read). */
function bufinfoEntry(file: number): string {
  const w = world();
  const refs = slotRefs(w, file) - 1; // without this listing's own reference
  const buf = DmaBuf.fromFile(file, 'bufinfo');
  try {
    return buf.withLock((locked) => {
      let out = `${pad8(buf.size)}\t${hex8(buf.flags)}\t${hex8(fileMode(buf.flags))}\t${pad8(refs)}\t${buf.expName}\t`
        + `${pad8(fileInode(w, file))}\t${buf.name ?? '<none>'}\n`;
      out += locked.describe();
      const devices = attachedDeviceNames(w, buf.slot);
      out += '\tAttached Devices:\n';
      for (const d of devices) out += `\t${d}\n`;
      return `${out}Total ${devices.length} devices attached\n\n`;
    });
  } finally {
    buf.close();
  }
}

/** The text of /sys/kernel/debug/dma_buf/bufinfo. */
export function bufinfoText(): string {
  const w = world();
  let out = '\nDma-buf Objects:\n';
  out += `${'size'.padEnd(8)}\t${'flags'.padEnd(8)}\t${'mode'.padEnd(8)}\t${'count'.padEnd(8)}\texp_name\t${'ino'.padEnd(8)}\tname\n`;
  let bytes = 0;
  const files = grabAll();
  try {
    for (const file of files) {
      out += bufinfoEntry(file);
      bytes += bufferSummary(w, filePriv(w, file)).size;
    }
  } finally {
    for (const file of files) unref(w, file);
  }
  return `${out}\nTotal ${files.length} objects, ${bytes} bytes\n`;
}

/** A buffer by inode number, with a new handle, or null. */
function byInode(ino: number): DmaBuf | null {
  const w = world();
  const files = grabAll();
  try {
    const file = files.find((f) => fileInode(w, f) === ino);
    return file === undefined ? null : DmaBuf.fromFile(file, 'sysfs');
  } finally {
    for (const file of files) unref(w, file);
  }
}

/** Inode numbers of every live buffer (the entries of /sys/kernel/dmabuf/buffers). */
export function dmaBufInodes(): string[] {
  const w = world();
  const out: string[] = [];
  forEachDmaBuf((file) => out.push(String(fileInode(w, file))));
  return out;
}

/** The content of /sys/kernel/dmabuf/buffers/<ino>/<attr>, or null if there is no such file. */
export function dmaBufSysfs(ino: number, attr: string): string | null {
  const buf = byInode(ino);
  if (!buf) return null;
  try {
    if (attr === 'exporter_name') return `${buf.expName}\n`;
    if (attr === 'size') return `${buf.size}\n`;
    return null;
  } finally {
    buf.close();
  }
}

/**
 * show_fdinfo of a dma-buf: size, count, exp_name, and name if set. The reader's
 * thread holds the file through its fd already, so every reference counted is a
 * real one (the kernel subtracts the procfs read's own).
 */
export function dmaBufFdinfo(buf: DmaBuf): string {
  const w = world();
  const name = buf.name;
  return `size:\t${buf.size}\ncount:\t${slotRefs(w, buf.file)}\nexp_name:\t${buf.expName}\n`
    + (name === null ? '' : `name:\t${name}\n`);
}
