/**
 * DOC: open, close, dup, reading virtual files, passing fds
 *
 * The file-descriptor system calls of `dmabuf/uapi` that are not ioctls. Each
 * validates its arguments before it changes anything.
 *
 * `sendFds(fds)` packs the files behind `fds` into a structured-cloneable packet
 * (SCM_RIGHTS): post it to a Worker or back, and `receiveFds(packet)` there installs
 * new fds for the same files. The packet keeps the files alive in flight, so the
 * sender may close its fds at once; a packet is received once (again: EINVAL).
 */
import { DmaBufError, fail } from '../errors.js';
import { fileGet } from '../file.js';
import { MAX_PACKET_OBJECTS, packSlots, unpackSlots, type Packet } from '../shared/packet.js';
import { O_ACCMODE, O_CLOEXEC, O_NONBLOCK, O_RDWR } from './constants.js';
import { closeFd, fdEntry, fdFile, installFd, reserveFds, STD_STREAM } from './fd-table.js';
import { listDir, lookupDevice, readVirtualFile } from './vfs.js';

export type FdPacket = Packet;

/** open(2) of a device node. @returns the new fd. @throws ENOENT (unknown path), EINVAL (flags), EMFILE. */
export function open(path: string, flags: number = O_RDWR): number {
  const opener = lookupDevice(path);
  if (typeof flags !== 'number' || !Number.isInteger(flags)) throw fail('EINVAL', 'open', 'flags must be an integer');
  reserveFds(1, 'open');
  try {
    return installFd(opener(flags & (O_ACCMODE | O_NONBLOCK | O_CLOEXEC)), 'open');
  } catch (e) {
    throw e instanceof DmaBufError ? e.withSyscall('open') : e;
  }
}

/** close(2). @throws EBADF. */
export function close(fd: number): void {
  closeFd(fd);
}

/** dup(2): a new fd for the same open file. @throws EBADF, EMFILE. */
export function dup(fd: number): number {
  const e = fdEntry(fd, 'dup');
  reserveFds(1, 'dup');
  if (e !== STD_STREAM) fileGet(e);
  return installFd(e, 'dup');
}

/** Read a debugfs/sysfs/procfs file. @throws ENOENT for an unknown path. */
export function readFile(path: string): string {
  try {
    return readVirtualFile(path);
  } catch (e) {
    throw e instanceof DmaBufError ? e.withSyscall('open') : e;
  }
}

/** readdir(3) of a virtual directory (`/dev/dma_heap`). @throws ENOENT. */
export function readdir(path: string): string[] {
  return listDir(path);
}

/** Pack the files behind `fds` for another thread. @throws EFAULT, EINVAL, EBADF. */
export function sendFds(fds: number[]): FdPacket {
  if (!Array.isArray(fds)) throw fail('EFAULT', 'sendmsg', 'fds must be an array');
  if (fds.length > MAX_PACKET_OBJECTS) throw fail('EINVAL', 'sendmsg', `at most ${MAX_PACKET_OBJECTS} fds per packet`);
  const files = fds.map((fd) => fdFile(fd, 'sendmsg', 'EINVAL'));
  return packSlots(files, 'sendmsg');
}

/** Install new fds in this thread for the files in `packet`, in order. @throws EINVAL, EMFILE. */
export function receiveFds(packet: FdPacket): number[] {
  const count = typeof packet === 'object' && packet !== null ? (packet as { count?: unknown }).count : undefined;
  if (typeof count === 'number' && Number.isInteger(count) && count >= 0) reserveFds(count, 'recvmsg');
  return unpackSlots(packet, 'recvmsg').map((file) => installFd(file, 'recvmsg'));
}
