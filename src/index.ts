/**
 * dmabuf — Linux DMA-BUF for JavaScript: the driver API.
 *
 * Re-exports only. The user-space API (fds, ioctl, poll, mmap) is `dmabuf/uapi`.
 */
import { isMainThread } from 'node:worker_threads';
import './shared/reaper.js';
import './drivers.js';
import { world } from './shared/world.js';

export { DmaBufError, ERRNO, errnoName, isDmaBufError, type ErrnoName } from './errors.js';
export { DmaFence, type DmaFenceFunc, type DmaFenceOps, type WaitAnyResult, type WaitOptions } from './dma-fence.js';
export {
  DMA_FENCE_FLAG_ENABLE_SIGNAL, DMA_FENCE_FLAG_SEQNO64, DMA_FENCE_FLAG_USER_BITS,
} from './dma-fence-slot.js';
export { SW_SYNC_HAS_DEADLINE_BIT, SwSyncTimeline, syncInfoText } from './sw-sync.js';
export { liveObjects, tableStats, type TableStats } from './shared/slab.js';
export { MAX_PACKET_OBJECTS, type Packet } from './shared/packet.js';
export { adoptWorld, worldMemory, type WorldMemory } from './shared/world.js';
export { lockRecoveries } from './shared/mutex.js';
export {
  allocPages, arenaStats, freePages, MAX_ORDER, orderFor, PAGE_SIZE, pageBytes, type ArenaStats,
} from './shared/arena.js';
export { setWaitSpin } from './shared/wait.js';
export {
  TRACE_DEFAULT_CAPACITY, traceDisable, traceEnable, traceIsEnabled, traceTake, type TraceBuffer, type TraceEvent,
  type TraceEventName, type TraceFence, type TraceLog, type TraceUsage,
} from './trace.js';
export { dmaFenceArrayCreate, dmaFenceArrayMembers, dmaFenceMatchContext, isContainer, isDmaFenceArray } from './dma-fence-array.js';
export {
  chainLinks, dmaFenceChainContained, dmaFenceChainFindSeqno, dmaFenceChainInit, dmaFenceChainPrevSeqno, dmaFenceChainWalk,
  isDmaFenceChain, type FindSeqnoResult,
} from './dma-fence-chain.js';
export { dedupArray, unwrap, unwrapMerge } from './dma-fence-unwrap.js';
export { POLLIN, SyncFile, type SyncFenceInfo } from './sync-file.js';
export { WwAcquireCtx, WwMutex, type WwLockOptions } from './ww-mutex.js';
export {
  DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, DmaResv, DmaResvLocked,
  dmaResvUsageRw, type DmaResvEntry, type DmaResvUnlockedEntry, type DmaResvUsage,
} from './dma-resv.js';

export {
  DmaBuf, registerDmaBufOps, EXPORTER_WORDS, DMA_BUF_NAME_LEN, type DmaBufExportInfo, type DmaBufOps,
} from './dma-buf.js';
export {
  ATTACH_EXPORTER_WORDS, DmaBufAttachment, dmaBufDetach, dmaBufIsCoherent, dmaBufMoveNotify, type AttachOptions,
  type DmaBufAttachOps, type MapOptions,
} from './dma-buf-attach.js';
export {
  DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, sgEntryBytes, sgTableBytes, type Device, type DeviceDesc,
  type DmaDataDirection, type PageExtent, type SgEntry, type SgTable,
} from './device.js';
export { bufinfoText } from './dma-buf-debug.js';
export { DmaHeap, type DmaHeapExportInfo, type DmaHeapOps, type DmaHeapUsage } from './dma-heap.js';
export { systemHeap, systemHeapChunks, SYSTEM_HEAP_NAME } from './heaps/system-heap.js';
export { CMA_HEAP_NAME, cmaHeap, cmaHeapAlignOrder } from './heaps/cma-heap.js';
export { CMA_DEFAULT_MB, cmaAlloc, cmaRelease, cmaStats, CONFIG_CMA_ALIGNMENT, type CmaStats } from './heaps/cma.js';
export {
  bufferExtents, extentsCreate, extentsFree, extentsRead, extentsView, pageBufferMap, pageBufferView, pageBufferVmap,
} from './page-buffer.js';
export { allocPagesExact, freePagesExact } from './shared/arena.js';
export { UDMABUF_EXP_NAME, UDMABUF_LIST_LIMIT, UDMABUF_SIZE_LIMIT_MB } from './udmabuf.js';
export { DRM_FILE_PAGE_OFFSET_START } from './vgem.js';
export { VGEM_FENCE_TIMEOUT_MS } from './vgem-fence.js';

// The main thread joins at import, so Workers it creates afterwards inherit the table.
if (isMainThread) world();
