/**
 * DOC: file descriptors
 *
 * fds belong to the thread that holds them, as they belong to a process in Linux
 * (uapi.md "Threads"). Each thread has its own table: fd → file slot, each entry
 * one hold on the file, so a file lives while any fd for it in any thread is
 * open. Numbers are the lowest free from 3 up; 0–2 are the standard streams:
 * open, but not objects of this library (ioctl on them is ENOTTY).
 *
 * A thread that exits closes its fds in order, as process exit does (reaper.ts
 * drops what a terminated worker could not).
 */
import { fail } from '../errors.js';
import { filePut } from '../file.js';
import { onThreadExit } from '../shared/reaper.js';

/** RLIMIT_NOFILE: the most fds one thread may have open. */
export const NR_OPEN = 1024;
/** The table entry of a standard stream (not a file of this library). */
export const STD_STREAM = -2;

const table: Array<number | undefined> = [STD_STREAM, STD_STREAM, STD_STREAM];
let lowestFree = 3;

/** Validate an fd argument and return its entry (a file slot or STD_STREAM). @throws EBADF. */
export function fdEntry(fd: unknown, syscall: string): number {
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0 || fd >= table.length) {
    throw fail('EBADF', syscall, `fd ${String(fd)} is not open`);
  }
  const e = table[fd];
  if (e === undefined) throw fail('EBADF', syscall, `fd ${fd} is not open`);
  return e;
}

/** The file behind `fd`. @throws EBADF if not open; `stdErr` (default ENOTTY) for 0–2. */
export function fdFile(fd: unknown, syscall: string, stdErr: 'ENOTTY' | 'EBADFD' | 'EINVAL' = 'ENOTTY'): number {
  const e = fdEntry(fd, syscall);
  if (e === STD_STREAM) throw fail(stdErr, syscall, `fd ${String(fd)} is a standard stream, not a file of this library`);
  return e;
}

/** The file behind `fd`, or -1 if it is closed, never opened or a standard stream. */
export function fdFileOrNone(fd: number): number {
  const e = typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? table[fd] : undefined;
  return e === undefined || e === STD_STREAM ? -1 : e;
}

/** Check that `n` more fds fit before creating anything (get_unused_fd_flags). @throws EMFILE. */
export function reserveFds(n: number, syscall: string): void {
  let free = 0;
  for (let fd = lowestFree; fd < NR_OPEN && free < n; fd++) if (table[fd] === undefined) free++;
  if (free < n) throw fail('EMFILE', syscall, `more than ${NR_OPEN} fds open in this thread`);
}

/** Install `entry` (whose hold the table now owns) at the lowest free fd. @throws EMFILE. */
export function installFd(entry: number, syscall: string): number {
  let fd = lowestFree;
  while (fd < table.length && table[fd] !== undefined) fd++;
  if (fd >= NR_OPEN) throw fail('EMFILE', syscall, `more than ${NR_OPEN} fds open in this thread`);
  table[fd] = entry;
  lowestFree = fd + 1;
  return fd;
}

/** close(2): drop the entry; the last reference to the file anywhere releases it. @throws EBADF. */
export function closeFd(fd: unknown): void {
  const e = fdEntry(fd, 'close');
  table[fd as number] = undefined;
  if ((fd as number) >= 3 && (fd as number) < lowestFree) lowestFree = fd as number;
  if (e !== STD_STREAM) filePut(e);
}

/** Every open fd of this thread that refers to a file (for leak reports). */
export function openFds(): number[] {
  const out: number[] = [];
  table.forEach((e, fd) => {
    if (e !== undefined && e !== STD_STREAM) out.push(fd);
  });
  return out;
}

onThreadExit(() => {
  for (const fd of openFds()) closeFd(fd);
});
