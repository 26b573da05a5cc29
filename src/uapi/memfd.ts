/**
 * DOC: memfd_create(2), ftruncate(2), fcntl(2) seals, pread(2)/pwrite(2), mmap of a memfd
 *
 * Enough of memfd for udmabuf (uapi.md): sizing, seals, contents, mappings. The
 * semantics are memfd.ts's; this file decodes arguments and fds in Linux's order:
 * - `memfd_create(name, flags)`: flags, then name, then the fd (EMFILE);
 * - `ftruncate(fd, len)`: negative length → EINVAL before the fd is looked up
 *   (EBADF); a file that is not a memfd (a standard stream, a dma-buf) → EINVAL;
 * - `fcntl(fd, cmd, arg)`: EBADF, then F_ADD_SEALS / F_GET_SEALS (EINVAL on a
 *   file that is not a memfd); other commands are not implemented here (EINVAL);
 * - `pwrite(fd, bytes, offset)` / `pread(fd, length, offset)`: negative offset →
 *   EINVAL, then EBADF, then ESPIPE for a file without positioned I/O (standard
 *   streams, dma-bufs). `pwrite` returns the bytes written, `pread` a new array.
 * - `mmap` of a memfd (uapi/mmap.ts dispatches here): shared mappings hold a vma
 *   so the memfd knows when they go (F_SEAL_WRITE → EBUSY while one may write).
 */
import { fail } from '../errors.js';
import { filePut, FileType } from '../file.js';
import {
  checkOffset, memfdAddSeals, memfdCreate, memfdGetSeals, memfdMmap, memfdRead, memfdTruncate, memfdWrite,
} from '../memfd.js';
import { F_ADD_SEALS, F_GET_SEALS, PROT_WRITE } from './constants.js';
import { fdEntry, fdFile, installFd, STD_STREAM } from './fd-table.js';
import { registerMmap } from './mmap.js';

/** memfd_create(2): @returns the new fd. @throws EINVAL (flags, name length), EFAULT (name), EMFILE, ENOMEM. */
export function memfd_create(name: string, flags: number): number {
  const file = memfdCreate(name, flags);
  try {
    return installFd(file, 'memfd_create');
  } catch (e) {
    filePut(file);
    throw e;
  }
}

/** ftruncate(2). @throws EINVAL, EBADF, EPERM (seals), ENOMEM. */
export function ftruncate(fd: number, len: number | bigint): void {
  checkOffset(len, 'length', 'ftruncate');
  memfdTruncate(fdFile(fd, 'ftruncate', 'EINVAL'), len);
}

/** fcntl(2) with F_ADD_SEALS or F_GET_SEALS: @returns 0, or the seal bits. @throws EBADF, EINVAL, EPERM, EBUSY. */
export function fcntl(fd: number, cmd: number, arg?: number): number {
  const entry = fdEntry(fd, 'fcntl');
  const file = entry === STD_STREAM ? -1 : entry;
  switch (cmd) {
    case F_ADD_SEALS:
      memfdAddSeals(file, arg);
      return 0;
    case F_GET_SEALS:
      return memfdGetSeals(file);
    default:
      throw fail('EINVAL', 'fcntl', `fcntl command ${String(cmd)} is not implemented (only F_ADD_SEALS, F_GET_SEALS)`);
  }
}

/** The file behind `fd` for positioned I/O. @throws EBADF; ESPIPE for a standard stream. */
function ioFile(fd: number, syscall: string): number {
  const entry = fdEntry(fd, syscall);
  if (entry === STD_STREAM) throw fail('ESPIPE', syscall, `fd ${fd} is a stream: no positioned I/O`);
  return entry;
}

/** pwrite(2): @returns the bytes written. @throws EINVAL, EBADF, ESPIPE, EFAULT, EPERM (seals), ENOMEM. */
export function pwrite(fd: number, bytes: Uint8Array, offset: number | bigint): number {
  checkOffset(offset, 'offset', 'pwrite');
  return memfdWrite(ioFile(fd, 'pwrite'), bytes, offset);
}

/** pread(2): @returns a new array of the bytes read (shorter at end of file). @throws EINVAL, EBADF, ESPIPE. */
export function pread(fd: number, length: number, offset: number | bigint): Uint8Array {
  checkOffset(offset, 'offset', 'pread');
  return memfdRead(ioFile(fd, 'pread'), length, offset);
}

registerMmap(FileType.Memfd, (file, pgoff, pages, shared, prot) => {
  const { view, vma } = memfdMmap(file, pgoff, pages, shared, (prot & PROT_WRITE) !== 0);
  return vma >= 0 ? { view, file: vma } : view;
});
