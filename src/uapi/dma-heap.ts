/**
 * DOC: /dev/dma_heap/<name> (include/uapi/linux/dma-heap.h)
 *
 * Each heap is a device node; opening it gives a heap fd whose one ioctl,
 * DMA_HEAP_IOCTL_ALLOC, makes a buffer fd. The checks of kernel-contract §6.1, in
 * order: only the ioctl *number* is decoded (number ≥ 1 → EINVAL, not ENOTTY; any
 * size of struct is accepted), then `fd` must be 0, `fd_flags` ⊆ O_CLOEXEC |
 * O_ACCMODE, `heap_flags` 0, and the page-rounded `len` non-zero. The fd flags are
 * also the buffer's file flags (O_RDONLY gives a read-only buffer).
 * `readdir('/dev/dma_heap')` lists the heap names.
 */
import '../drivers.js';
import { DmaHeap } from '../dma-heap.js';
import { fail } from '../errors.js';
import { allocFile, fileName, FileType, setFileName } from '../file.js';
import { world } from '../shared/world.js';
import { _IOC_NR, DMA_HEAP_VALID_FD_FLAGS, DMA_HEAP_VALID_HEAP_FLAGS, PAGE_SIZE } from './constants.js';
import { installFd, reserveFds } from './fd-table.js';
import { registerIoctl } from './ioctl.js';
import { expectStruct, u32, u64 } from './struct.js';
import { registerDevice, registerDir } from './vfs.js';

/** Register the device node of every heap known in this thread (idempotent). */
export function registerHeapDevices(): void {
  for (const heap of DmaHeap.list()) {
    registerDevice(`/dev/dma_heap/${heap.name}`, (flags) => {
      const file = allocFile(FileType.HeapDev, -1, flags, 'open');
      setFileName(world(), file, heap.name);
      return file;
    });
  }
}

function alloc(file: number, arg: unknown): number {
  const data = expectStruct(arg, 'ioctl');
  const len = u64(data, 'len', 'ioctl');
  const fd = u32(data, 'fd', 'ioctl');
  const fdFlags = u32(data, 'fd_flags', 'ioctl');
  const heapFlags = u64(data, 'heap_flags', 'ioctl');
  if (fd !== 0) throw fail('EINVAL', 'ioctl', 'dma_heap_allocation_data.fd must be 0');
  if (fdFlags & ~DMA_HEAP_VALID_FD_FLAGS) throw fail('EINVAL', 'ioctl', 'fd_flags beyond O_CLOEXEC | O_ACCMODE');
  if (heapFlags & ~BigInt(DMA_HEAP_VALID_HEAP_FLAGS)) throw fail('EINVAL', 'ioctl', 'heap_flags must be 0');
  const page = BigInt(PAGE_SIZE);
  const aligned = BigInt.asUintN(64, ((len + page - 1n) / page) * page);
  if (aligned === 0n) throw fail('EINVAL', 'ioctl', 'len is 0 (or overflows when page aligned)');
  if (aligned > BigInt(Number.MAX_SAFE_INTEGER)) throw fail('ENOMEM', 'ioctl', 'len beyond any memory');
  const heap = DmaHeap.find(fileName(world(), file));
  if (!heap) throw fail('ENODEV', 'ioctl', 'heap not registered in this thread');
  reserveFds(1, 'ioctl');
  const buf = heap.ops.allocate(heap, Number(aligned), fdFlags & 3, heapFlags);
  data['fd'] = installFd(buf.forget(), 'ioctl');
  return 0;
}

registerIoctl(FileType.HeapDev, (file, request, arg) => {
  if (_IOC_NR(request) >= 1) throw fail('EINVAL', 'ioctl', `dma-heap ioctl number ${_IOC_NR(request)} out of range`);
  return alloc(file, arg);
});

registerDir('/dev/dma_heap', () => DmaHeap.list().map((h) => h.name));

registerHeapDevices();
