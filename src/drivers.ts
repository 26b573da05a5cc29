/**
 * DOC: the built-in drivers
 *
 * Importing this module registers, in this thread, every exporter that ships with
 * dmabuf: the system heap, the contiguous heap, udmabuf and vgem. Both entry
 * points import it, so every thread that loads dmabuf finds their ops and heaps
 * (dma-buf.ts explains why ops are per thread).
 */
import './heaps/system-heap.js';
import './heaps/cma-heap.js';
import './memfd.js';
import './udmabuf.js';
import './vgem.js';
