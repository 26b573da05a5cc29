/**
 * DOC: /dev/dma_heap/<name> (include/uapi/linux/dma-heap.h)
 *
 * Each heap is a device node; opening it gives a heap fd whose one ioctl,
 * DMA_HEAP_IOCTL_ALLOC, makes a buffer fd. The checks of kernel-contract §6.1, in
 * order: only the ioctl *number* is decoded (number ≥ 1 → EINVAL, not ENOTTY; any
 * size of struct is accepted), then `fd` must be 0, `fd_flags` ⊆ O_CLOEXEC |
 * O_ACCMODE, `heap_flags` 0, and the page-rounded `len` non-zero. The fd flags are
 * also the buffer's file flags (O_RDONLY gives a read-only buffer).
 *
 * The request's size and direction are the user's struct, as dma_heap_ioctl reads
 * them: without _IOC_WRITE nothing is copied in (every field reads 0, so len 0 →
 * EINVAL); with a size under 24 bytes the bytes past it read as 0 (a field cut in
 * two keeps its low bytes, little-endian); without _IOC_READ nothing is copied
 * out, so the new fd is installed but not reported — Linux does the same. One
 * difference: the kernel copies the struct out even when the call failed, which
 * only matters for a request without _IOC_WRITE (it zeroes the caller's struct);
 * here a failed call leaves the object untouched (uapi.md, "Errors").
 * `readdir('/dev/dma_heap')` lists the heap names.
 */
import '../drivers.js';
import { DmaHeap } from '../dma-heap.js';
import { fail } from '../errors.js';
import { allocFile, fileName, FileType, setFileName } from '../file.js';
import { world } from '../shared/world.js';
import {
  _IOC_DIR, _IOC_NR, _IOC_READ, _IOC_SIZE, _IOC_WRITE, DMA_HEAP_VALID_FD_FLAGS, DMA_HEAP_VALID_HEAP_FLAGS, PAGE_SIZE,
} from './constants.js';
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

/** Offset and size of each field of struct dma_heap_allocation_data. */
const FIELDS = { len: [0, 8], fd: [8, 4], fd_flags: [12, 4], heap_flags: [16, 8] } as const;

/** The part of field `name` that a copy of `size` bytes covers: its low bytes (0 if none). */
function covered(value: bigint, name: keyof typeof FIELDS, size: number): bigint {
  const [at, width] = FIELDS[name];
  return BigInt.asUintN(8 * Math.max(0, Math.min(width, size - at)), value);
}

/** Read field `name` as copy_from_user of `inSize` bytes would (bytes past it are 0). */
function field(data: Record<string, unknown>, name: keyof typeof FIELDS, inSize: number): bigint {
  const [at, width] = FIELDS[name];
  if (at >= inSize) return 0n;
  const v = width === 8 ? u64(data, name, 'ioctl') : BigInt(u32(data, name, 'ioctl'));
  return covered(v, name, inSize);
}

function alloc(file: number, request: number, arg: unknown): number {
  const dir = _IOC_DIR(request);
  const inSize = dir & _IOC_WRITE ? _IOC_SIZE(request) : 0;
  const outSize = dir & _IOC_READ ? _IOC_SIZE(request) : 0;
  const data = inSize || outSize ? expectStruct(arg, 'ioctl') : {}; // a 0-byte copy never faults
  const len = field(data, 'len', inSize);
  const fd = Number(field(data, 'fd', inSize));
  const fdFlags = Number(field(data, 'fd_flags', inSize));
  const heapFlags = field(data, 'heap_flags', inSize);
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
  const newFd = installFd(buf.forget(), 'ioctl');
  if (outSize > FIELDS.fd[0]) data['fd'] = Number(covered(BigInt(newFd), 'fd', outSize));
  return 0;
}

registerIoctl(FileType.HeapDev, (file, request, arg) => {
  if (_IOC_NR(request) >= 1) throw fail('EINVAL', 'ioctl', `dma-heap ioctl number ${_IOC_NR(request)} out of range`);
  return alloc(file, request, arg);
});

registerDir('/dev/dma_heap', () => DmaHeap.list().map((h) => h.name));

registerHeapDevices();
