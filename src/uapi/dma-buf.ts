/**
 * DOC: the dma-buf fd (include/uapi/linux/dma-buf.h)
 *
 * ioctls with the checks of kernel-contract §1.14 in the kernel's order:
 * DMA_BUF_IOCTL_SYNC, DMA_BUF_SET_NAME{,_A,_B}, DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
 * DMA_BUF_IOCTL_IMPORT_SYNC_FILE; poll (POLLIN: writers done, POLLOUT: everyone
 * done); mmap; the listings bufinfo, sysfs stats and fdinfo.
 *
 * `dmaBufFd(buf, flags)` is dma_buf_fd for exporters written against the driver
 * API: it installs an fd in this thread and consumes the handle's reference;
 * `dmaBufGet(fd)` is dma_buf_get.
 */
import { DmaBuf } from '../dma-buf.js';
import { bufinfoText, dmaBufFdinfo, dmaBufInodes, dmaBufSysfs } from '../dma-buf-debug.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../device.js';
import { fail } from '../errors.js';
import { FileType } from '../file.js';
import { SyncFile } from '../sync-file.js';
import {
  DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DMA_BUF_IOCTL_SYNC,
  DMA_BUF_SET_NAME_A, DMA_BUF_SET_NAME_B, DMA_BUF_SYNC_END, DMA_BUF_SYNC_RW, DMA_BUF_SYNC_WRITE,
} from './constants.js';
import { fdFile, fdFileOrNone, installFd, reserveFds } from './fd-table.js';
import { registerFdinfo } from './fdinfo.js';
import { notTty, registerIoctl } from './ioctl.js';
import { registerMmap } from './mmap.js';
import { registerPoll } from './poll.js';
import { expectStruct, s32, u32, u64Flags } from './struct.js';
import { registerDir, registerReadable } from './vfs.js';

/** This thread's handle for a call on `file` (borrowed from the caller's fd: see DmaBuf.borrow). */
function bufOf(file: number): DmaBuf {
  return DmaBuf.borrow(file, 'ioctl');
}

/** DMA_BUF_IOCTL_SYNC: flags checked, then begin (START) or end (END) CPU access. */
function sync(file: number, arg: unknown): number {
  const f = u64Flags(expectStruct(arg, 'ioctl'), 'flags', 'ioctl');
  if (f & ~(DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END)) throw fail('EINVAL', 'ioctl', 'unknown dma_buf_sync flags');
  const rw = f & DMA_BUF_SYNC_RW;
  if (rw === 0) throw fail('EINVAL', 'ioctl', 'dma_buf_sync needs READ, WRITE or both');
  const dir = rw === DMA_BUF_SYNC_RW ? DMA_BIDIRECTIONAL : rw === DMA_BUF_SYNC_WRITE ? DMA_TO_DEVICE : DMA_FROM_DEVICE;
  if (f & DMA_BUF_SYNC_END) bufOf(file).endCpuAccess(dir);
  else bufOf(file).beginCpuAccess(dir);
  return 0;
}

/** DMA_BUF_SET_NAME_A/_B: the name string (at most DMA_BUF_NAME_LEN - 1 bytes). */
function setName(file: number, arg: unknown): number {
  if (typeof arg !== 'string') throw fail('EFAULT', 'ioctl', 'DMA_BUF_SET_NAME takes the name string');
  bufOf(file).setName(arg);
  return 0;
}

function syncFileFlags(data: Record<string, unknown>): number {
  const flags = u32(data, 'flags', 'ioctl');
  if (flags & ~DMA_BUF_SYNC_RW || (flags & DMA_BUF_SYNC_RW) === 0) {
    throw fail('EINVAL', 'ioctl', 'flags must be DMA_BUF_SYNC_READ, _WRITE or both');
  }
  return flags;
}

/** DMA_BUF_IOCTL_EXPORT_SYNC_FILE: a sync_file fd with a snapshot of the fences to wait for. */
function exportSyncFile(file: number, arg: unknown): number {
  const data = expectStruct(arg, 'ioctl');
  const flags = syncFileFlags(data);
  reserveFds(1, 'ioctl');
  const sf = bufOf(file).exportSyncFile((flags & DMA_BUF_SYNC_WRITE) !== 0);
  data['fd'] = installFd(sf.file, 'ioctl'); // the handle's hold becomes the fd's
  return 0;
}

/** DMA_BUF_IOCTL_IMPORT_SYNC_FILE: the sync_file's leaves join the resv as WRITE or READ. */
function importSyncFile(file: number, arg: unknown): number {
  const data = expectStruct(arg, 'ioctl');
  const flags = syncFileFlags(data);
  const fd = s32(data, 'fd', 'ioctl');
  const sfFile = fdFileOrNone(fd);
  if (sfFile < 0 || !SyncFile.isSyncFile(sfFile)) throw fail('EINVAL', 'ioctl', `fd ${fd} is not a sync_file`);
  const sf = SyncFile.fromFile(sfFile);
  try {
    bufOf(file).importSyncFile(sf, (flags & DMA_BUF_SYNC_WRITE) !== 0);
  } finally {
    sf.close();
  }
  return 0;
}

registerIoctl(FileType.DmaBuf, (file, request, arg) => {
  switch (request) {
    case DMA_BUF_IOCTL_SYNC: return sync(file, arg);
    case DMA_BUF_SET_NAME_A:
    case DMA_BUF_SET_NAME_B: return setName(file, arg);
    case DMA_BUF_IOCTL_EXPORT_SYNC_FILE: return exportSyncFile(file, arg);
    case DMA_BUF_IOCTL_IMPORT_SYNC_FILE: return importSyncFile(file, arg);
    default: return notTty(request);
  }
});

registerPoll(FileType.DmaBuf, (file) => bufOf(file).poll());

registerMmap(FileType.DmaBuf, (file, pgoff, pages, shared) => bufOf(file).mmapPages(pgoff, pages, 'mmap', shared));

registerFdinfo(FileType.DmaBuf, (file) => dmaBufFdinfo(bufOf(file)));

registerReadable('/sys/kernel/debug/dma_buf/bufinfo', bufinfoText);
registerDir('/sys/kernel/dmabuf/buffers', dmaBufInodes);
registerReadable(/^\/sys\/kernel\/dmabuf\/buffers\/\d+\/(exporter_name|size)$/, (path) => {
  const [, , , , , ino, attr] = path.split('/');
  const text = dmaBufSysfs(Number(ino), attr!);
  if (text === null) throw fail('ENOENT', 'open', `no such file: ${path}`);
  return text;
});

/** dma_buf_fd: an fd in this thread for `buf`, consuming the handle's reference. @throws EMFILE (the handle stays valid). */
export function dmaBufFd(buf: DmaBuf, flags = 0): number {
  if (!(buf instanceof DmaBuf)) throw fail('EINVAL', 'dma_buf_fd', 'not a DmaBuf');
  void flags; // only O_CLOEXEC matters, and there is no exec here
  reserveFds(1, 'dma_buf_fd');
  const fd = installFd(buf.file, 'dma_buf_fd');
  buf.forget();
  return fd;
}

/** dma_buf_get: a driver-API handle on the buffer behind `fd` (one more reference). @throws EBADF, EINVAL. */
export function dmaBufGet(fd: number): DmaBuf {
  return DmaBuf.fromFile(fdFile(fd, 'dma_buf_get', 'EINVAL'), 'dma_buf_get');
}
