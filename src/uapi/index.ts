/**
 * dmabuf/uapi — Linux's DMA-BUF user-space API: fds, ioctl, poll, mmap and the
 * debugfs/sysfs/procfs files, with Linux's names, numbers and errno codes
 * (see shared/spec/uapi.md). Re-exports only.
 */
import { isMainThread } from 'node:worker_threads';
import '../shared/reaper.js';
import './sync-file.js';
import './sw-sync.js';
import './dma-buf.js';
import './dma-heap.js';
import './memfd.js';
import './udmabuf.js';
import './vgem.js';
import { world } from '../shared/world.js';

export * from './constants.js';
export { close, dup, open, readdir, readFile, receiveFds, sendFds, type FdPacket } from './syscalls.js';
export { ioctl } from './ioctl.js';
export { mmap, munmap } from './mmap.js';
export { fcntl, ftruncate, memfd_create, pread, pwrite } from './memfd.js';
export { dmaBufFd, dmaBufGet } from './dma-buf.js';
export { poll, pollAsync, type PollFd } from './poll.js';
export { setWaitSpin } from '../shared/wait.js';
export { DmaBufError, ERRNO, isDmaBufError } from '../errors.js';

if (isMainThread) world();
