/**
 * DOC: devices and scatter-gather tables
 *
 * In the kernel an importer attaches with its `struct device`, whose DMA
 * constraints decide what a mapping may look like. Here a device is an execution
 * context that reads and writes buffer memory directly (a worker, a "GPU" stage),
 * described by the constraints the kernel's DMA API knows:
 *
 * - `dmaMaskBits`: the device can address bytes below 2^bits (dma_set_mask);
 * - `maxSegmentSize`: no sg entry longer than this (dma_set_max_seg_size; the
 *   kernel's default is 64 KiB);
 * - `segmentBoundaryMask`: no entry crosses a (mask + 1)-aligned boundary
 *   (dma_set_seg_boundary; default 0xffffffff);
 * - `coherent`: the device sees CPU writes without cache maintenance (every device
 *   of the kernel's dma-buf model is assumed coherent; see dma-buf-attach.ts for
 *   the extension that lets an importer check);
 * - `peer2peer`: the device can reach memory without `struct page` (copied into
 *   dynamic attachments as `allow_peer2peer`).
 *
 * Memory: bus addresses are byte offsets in the page arena (shared/arena.ts), the
 * "physical memory" of this system, and no IOMMU sits in front of a device (the
 * dma-direct case). So mapping an exporter's page extents for a device splits them
 * by the segment rules and fails with EIO when a page lies beyond the device's
 * mask — dma-direct's answer when no bounce buffer is available.
 */
import { fail } from './errors.js';
import { PAGE_SIZE, pageBytes } from './shared/arena.js';

/** enum dma_data_direction */
export const DMA_BIDIRECTIONAL = 0;
export const DMA_TO_DEVICE = 1;
export const DMA_FROM_DEVICE = 2;
export const DMA_NONE = 3;
export type DmaDataDirection = 0 | 1 | 2 | 3;

export interface Device {
  /** dev_name: shown in bufinfo's "Attached Devices" (at most 31 bytes kept). */
  readonly name: string;
  readonly dmaMaskBits?: number;
  readonly maxSegmentSize?: number;
  readonly segmentBoundaryMask?: number;
  readonly coherent?: boolean;
  readonly peer2peer?: boolean;
}

/** A device with every default filled in. */
export interface DeviceDesc {
  readonly name: string;
  readonly dmaMaskBits: number;
  readonly maxSegmentSize: number;
  readonly segmentBoundaryMask: number;
  readonly coherent: boolean;
  readonly peer2peer: boolean;
}

export const DMA_DEFAULT_MAX_SEGMENT = 65536;
export const DMA_DEFAULT_SEG_BOUNDARY = 0xffffffff;

function isPow2Minus1(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && Number.isInteger(Math.log2(n + 1));
}

/** Check `dev` and fill its defaults. @throws EINVAL for a missing or malformed device. */
export function deviceDesc(dev: unknown, syscall: string): DeviceDesc {
  if (typeof dev !== 'object' || dev === null) throw fail('EINVAL', syscall, 'no device given');
  const d = dev as Device;
  if (typeof d.name !== 'string' || d.name === '') throw fail('EINVAL', syscall, 'device.name must be a non-empty string');
  const mask = d.dmaMaskBits ?? 32;
  if (!Number.isInteger(mask) || mask < 12 || mask > 64) throw fail('EINVAL', syscall, 'device.dmaMaskBits must be an integer in 12..64');
  const seg = d.maxSegmentSize ?? DMA_DEFAULT_MAX_SEGMENT;
  if (!Number.isSafeInteger(seg) || seg < PAGE_SIZE) throw fail('EINVAL', syscall, `device.maxSegmentSize must be an integer >= ${PAGE_SIZE}`);
  const boundary = d.segmentBoundaryMask ?? DMA_DEFAULT_SEG_BOUNDARY;
  if (!isPow2Minus1(boundary) || boundary < PAGE_SIZE - 1) {
    throw fail('EINVAL', syscall, 'device.segmentBoundaryMask must be 2^n - 1, at least PAGE_SIZE - 1');
  }
  for (const k of ['coherent', 'peer2peer'] as const) {
    if (d[k] !== undefined && typeof d[k] !== 'boolean') throw fail('EINVAL', syscall, `device.${k} must be a boolean`);
  }
  return {
    name: d.name, dmaMaskBits: mask, maxSegmentSize: seg, segmentBoundaryMask: boundary,
    coherent: d.coherent ?? true, peer2peer: d.peer2peer ?? false,
  };
}

/** A run of whole pages of the arena. */
export interface PageExtent {
  readonly page: number;
  readonly pages: number;
}

/** One entry of a mapped sg table: what the device uses (address, length) and the pages behind it. */
export interface SgEntry {
  /** Bus address as the device sees it (here: the byte offset in the page arena). */
  readonly dmaAddress: number;
  readonly length: number;
  /** First arena page of the entry (sg_page) and the byte offset into it. */
  readonly page: number;
  readonly offset: number;
}

/** struct sg_table after dma_map_sgtable: entries in buffer order. */
export interface SgTable {
  readonly entries: readonly SgEntry[];
  /** Entries of the exporter's page list before splitting (orig_nents). */
  readonly origNents: number;
}

/** Total bytes an sg table covers. */
export function sgTableBytes(sgt: SgTable): number {
  let n = 0;
  for (const e of sgt.entries) n += e.length;
  return n;
}

/**
 * The device's view of one entry: a live Uint8Array over the same memory (what the
 * device's DMA engine reads and writes). Zero-copy.
 */
export function sgEntryBytes(e: SgEntry): Uint8Array {
  const first = Math.floor(e.dmaAddress / PAGE_SIZE);
  const last = Math.ceil((e.dmaAddress + e.length) / PAGE_SIZE);
  const all = pageBytes(first, last - first);
  const at = e.dmaAddress - first * PAGE_SIZE;
  return all.subarray(at, at + e.length);
}

/**
 * dma_map_sgtable for a device behind no IOMMU: one or more entries per extent,
 * split at `maxSegmentSize` and at segment boundaries.
 * @throws EIO if some page lies beyond the device's DMA mask.
 */
export function dmaMapExtents(dev: DeviceDesc, extents: readonly PageExtent[], syscall: string): SgTable {
  const entries: SgEntry[] = [];
  const limit = 2 ** dev.dmaMaskBits;
  const boundary = dev.segmentBoundaryMask + 1;
  for (const x of extents) {
    let addr = x.page * PAGE_SIZE;
    const end = addr + x.pages * PAGE_SIZE;
    if (end > limit) {
      throw fail('EIO', syscall, `device ${dev.name} cannot address 0x${(end - 1).toString(16)} (DMA mask of ${dev.dmaMaskBits} bits)`);
    }
    while (addr < end) {
      const toBoundary = boundary - (addr % boundary);
      const len = Math.min(end - addr, dev.maxSegmentSize, toBoundary);
      entries.push({ dmaAddress: addr, length: len, page: Math.floor(addr / PAGE_SIZE), offset: addr % PAGE_SIZE });
      addr += len;
    }
  }
  return { entries, origNents: extents.length };
}
