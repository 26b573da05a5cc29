/**
 * A real exporter for the dma-buf core tests, written against the public driver
 * API over arena pages (page-buffer helpers), the way a driver outside the
 * library would write one.
 *
 * - `testExport(pages, opts)`: a buffer of `pages` zeroed arena pages (size
 *   `opts.size`, default the whole pages). `dynamic` gives the ops with pin/unpin.
 * - Every op call is logged per buffer (`calls(buf)`), in the thread that made it.
 * - `hooks(buf)` lets a test replace what an op returns (e.g. -EAGAIN).
 * - `testMove(buf)` (resv held): copy the bytes to new pages, free the old ones,
 *   and tell dynamic importers (dmaBufMoveNotify). EBUSY while pinned.
 * - Exporter words (shared by every thread): extents list, first page, pages, pin count.
 */
import {
  allocPagesExact, bufferExtents, DmaBuf, registerDmaBufOps, dmaBufMoveNotify, DmaBufError, extentsCreate, extentsFree, freePagesExact,
  PAGE_SIZE, pageBufferMap, pageBufferView, pageBufferVmap, pageBytes, type DmaBufAttachment, type DmaBufOps,
  type DmaDataDirection, type SgTable,
} from 'dmabuf';

const X_EXTENTS = 0;
const X_PAGE = 1;
const X_PAGES = 2;
const X_PINS = 3;

export type OpName =
  | 'attach' | 'detach' | 'pin' | 'unpin' | 'map' | 'unmap' | 'release' | 'begin' | 'end' | 'mmap' | 'vmap' | 'vunmap'
  | 'beginAccess' | 'endAccess';

export interface Hooks {
  attach?: () => number;
  pin?: () => number;
  map?: () => SgTable | null;
  begin?: (dir: DmaDataDirection) => number;
  end?: (dir: DmaDataDirection) => number;
  beginAccess?: () => number;
}

let nextPriv = 1;
const logs = new Map<number, OpName[]>();
const hookTable = new Map<number, Hooks>();

function log(buf: DmaBuf, op: OpName): void {
  let l = logs.get(buf.priv);
  if (!l) logs.set(buf.priv, (l = []));
  l.push(op);
}

/** Op calls made on `buf` in this thread, in order. */
export function calls(buf: DmaBuf | number): OpName[] {
  return logs.get(typeof buf === 'number' ? buf : buf.priv) ?? [];
}

/** How often `op` ran on `buf` in this thread. */
export function count(buf: DmaBuf | number, op: OpName): number {
  return calls(buf).filter((c) => c === op).length;
}

/** Per-buffer overrides of op results (this thread). */
export function hooks(buf: DmaBuf): Hooks {
  let h = hookTable.get(buf.priv);
  if (!h) hookTable.set(buf.priv, (h = {}));
  return h;
}

function release(buf: DmaBuf): void {
  log(buf, 'release');
  freePagesExact(buf.exporterWord(X_PAGE), buf.exporterWord(X_PAGES), 'test_release');
  extentsFree(buf.exporterWord(X_EXTENTS));
}

const common = {
  attach(buf: DmaBuf): number {
    log(buf, 'attach');
    return hooks(buf).attach?.() ?? 0;
  },
  detach(buf: DmaBuf): void {
    log(buf, 'detach');
  },
  mapDmaBuf(attach: DmaBufAttachment): SgTable | null {
    log(attach.dmabuf, 'map');
    const h = hooks(attach.dmabuf).map;
    return h ? h() : pageBufferMap(attach);
  },
  unmapDmaBuf(attach: DmaBufAttachment): void {
    log(attach.dmabuf, 'unmap');
  },
  release,
  beginCpuAccess(buf: DmaBuf, dir: DmaDataDirection): number {
    log(buf, 'begin');
    return hooks(buf).begin?.(dir) ?? 0;
  },
  endCpuAccess(buf: DmaBuf, dir: DmaDataDirection): number {
    log(buf, 'end');
    return hooks(buf).end?.(dir) ?? 0;
  },
  mmap(buf: DmaBuf, pgoff: number, pages: number): Uint8Array {
    log(buf, 'mmap');
    return pageBufferView(buf, pgoff, pages);
  },
  vmap(buf: DmaBuf): Uint8Array {
    log(buf, 'vmap');
    return pageBufferVmap(buf);
  },
  vunmap(buf: DmaBuf): void {
    log(buf, 'vunmap');
  },
  beginAccess(attach: DmaBufAttachment): number {
    log(attach.dmabuf, 'beginAccess');
    return hooks(attach.dmabuf).beginAccess?.() ?? 0;
  },
  endAccess(attach: DmaBufAttachment): number {
    log(attach.dmabuf, 'endAccess');
    return 0;
  },
};

/** A static exporter (no pin). */
export const testOps: DmaBufOps = { name: 'test_exporter', ...common };

/** A dynamic exporter: pin/unpin count in exporter word X_PINS. */
export const testDynOps: DmaBufOps = {
  name: 'test_exporter_dyn',
  ...common,
  pin(attach: DmaBufAttachment): number {
    const buf = attach.dmabuf;
    log(buf, 'pin');
    const r = hooks(buf).pin?.() ?? 0;
    if (r === 0) buf.setExporterWord(X_PINS, buf.exporterWord(X_PINS) + 1);
    return r;
  },
  unpin(attach: DmaBufAttachment): void {
    const buf = attach.dmabuf;
    log(buf, 'unpin');
    buf.setExporterWord(X_PINS, buf.exporterWord(X_PINS) - 1);
  },
};

export interface TestExportOptions {
  dynamic?: boolean;
  size?: number;
  flags?: number;
  expName?: string;
}

/** Export a buffer of `pages` zeroed arena pages. */
export function testExport(pages = 1, opts: TestExportOptions = {}): DmaBuf {
  const first = allocPagesExact(pages, 'test_export');
  pageBytes(first, pages).fill(0);
  const list = extentsCreate([{ page: first, pages }], 'test_export');
  const buf = DmaBuf.export({
    ops: opts.dynamic ? testDynOps : testOps, priv: nextPriv++, size: opts.size ?? pages * PAGE_SIZE,
    ...(opts.flags === undefined ? {} : { flags: opts.flags }),
    ...(opts.expName === undefined ? {} : { expName: opts.expName }),
  });
  buf.setExporterWord(X_EXTENTS, list);
  buf.setExporterWord(X_PAGE, first);
  buf.setExporterWord(X_PAGES, pages);
  return buf;
}

/** Outstanding pins of a dynamic test buffer. */
export function pins(buf: DmaBuf): number {
  return buf.exporterWord(X_PINS);
}

/** First arena page of a test buffer (changes on a move). */
export function firstPage(buf: DmaBuf): number {
  return bufferExtents(buf)[0]!.page;
}

/**
 * The exporter moves the buffer (resv held): new pages with the same bytes, the
 * old pages freed, then dmaBufMoveNotify. @throws EBUSY while pinned.
 */
export function testMove(buf: DmaBuf): void {
  if (pins(buf) > 0) throw new DmaBufError('EBUSY', 'test_move', 'buffer is pinned');
  const pages = buf.exporterWord(X_PAGES);
  const old = buf.exporterWord(X_PAGE);
  const next = allocPagesExact(pages, 'test_move');
  pageBytes(next, pages).set(pageBytes(old, pages));
  const list = extentsCreate([{ page: next, pages }], 'test_move');
  extentsFree(buf.exporterWord(X_EXTENTS));
  buf.setExporterWord(X_EXTENTS, list);
  buf.setExporterWord(X_PAGE, next);
  freePagesExact(old, pages, 'test_move');
  dmaBufMoveNotify(buf);
}

// Loaded in every thread that touches these buffers, as an exporter module must be.
registerDmaBufOps(testOps);
registerDmaBufOps(testDynOps);
