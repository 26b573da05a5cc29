/**
 * DOC: dma-heaps (drivers/dma-buf/dma-heap.c)
 *
 * A heap is an allocator of dma-bufs with a name; user space reaches it as
 * `/dev/dma_heap/<name>` (uapi/dma-heap.ts). Registration follows the kernel: at
 * most 128 heaps, unique non-empty names, an `allocate` op (EINVAL otherwise).
 *
 * Heaps are registered per thread, like exporter ops (dma-buf.ts): the built-in
 * heaps register themselves wherever dmabuf is loaded, so every thread has the same
 * list. A heap's usage (buffers and bytes) is read from the global buffer list:
 * heap buffers carry the heap's name as their exporter name, as in the kernel.
 */
import type { DmaBuf } from './dma-buf.js';
import { bufferSummary, forEachDmaBuf } from './dma-buf.js';
import { fail } from './errors.js';
import { world } from './shared/world.js';

export const DMA_HEAP_MAX = 128;

/** struct dma_heap_ops */
export interface DmaHeapOps {
  /** A new buffer of `len` bytes (page aligned by the caller), its file flags `fdFlags`. */
  allocate(heap: DmaHeap, len: number, fdFlags: number, heapFlags: bigint): DmaBuf;
}

/** struct dma_heap_export_info */
export interface DmaHeapExportInfo {
  readonly name: string;
  readonly ops: DmaHeapOps;
}

export interface DmaHeapUsage {
  readonly name: string;
  readonly buffers: number;
  readonly bytes: number;
}

const heaps = new Map<string, DmaHeap>();

export class DmaHeap {
  readonly name: string;
  readonly ops: DmaHeapOps;

  private constructor(name: string, ops: DmaHeapOps) {
    this.name = name;
    this.ops = ops;
  }

  /** dma_heap_add. @throws EINVAL (no name, no allocate, duplicate name, more than 128 heaps). */
  static add(info: DmaHeapExportInfo): DmaHeap {
    if (typeof info?.name !== 'string' || info.name === '') throw fail('EINVAL', 'dma_heap_add', 'a heap needs a name');
    if (typeof info.ops?.allocate !== 'function') throw fail('EINVAL', 'dma_heap_add', 'a heap needs an allocate op');
    if (heaps.has(info.name)) throw fail('EINVAL', 'dma_heap_add', `heap '${info.name}' already exists`);
    if (heaps.size >= DMA_HEAP_MAX) throw fail('EINVAL', 'dma_heap_add', `at most ${DMA_HEAP_MAX} heaps`);
    const heap = new DmaHeap(info.name, info.ops);
    heaps.set(info.name, heap);
    return heap;
  }

  /** dma_heap_find: the heap named `name` in this thread, or null. */
  static find(name: string): DmaHeap | null {
    return heaps.get(name) ?? null;
  }

  /** Every heap, in registration order. */
  static list(): DmaHeap[] {
    return [...heaps.values()];
  }

  /** Live buffers of this heap (every thread) and their bytes. */
  usage(): DmaHeapUsage {
    const w = world();
    let buffers = 0;
    let bytes = 0;
    forEachDmaBuf((_file, slot) => {
      const { expName, size } = bufferSummary(w, slot);
      if (expName !== this.name) return;
      buffers++;
      bytes += size;
    });
    return { name: this.name, buffers, bytes };
  }

  /** Allocate a buffer: `len` is rounded up to whole pages. @throws EINVAL (0), the heap's errors. */
  alloc(len: number, fdFlags = 2, heapFlags = 0n): DmaBuf {
    if (!Number.isSafeInteger(len) || len <= 0) throw fail('EINVAL', 'dma_heap_alloc', `bad length ${len}`);
    return this.ops.allocate(this, Math.ceil(len / 4096) * 4096, fdFlags, heapFlags);
  }
}
