/**
 * DOC: the shared world
 *
 * Every object that threads share (fences, timelines, files, list nodes, …) lives
 * in one SharedArrayBuffer, the *object table*: a header, a thread registry and
 * fixed-size slots. A slot index plus the table is all another thread needs to
 * reach an object; JS wrappers are per-thread views of slots.
 *
 * Joining: the first thread to touch the library creates the table and publishes
 * it with `worker_threads.setEnvironmentData`, so every Worker created afterwards
 * (and their Workers) finds it at start-up. A thread that was started earlier, or
 * from a thread that never loaded the library, must be handed the memory
 * explicitly: post `worldMemory()` to it and call `adoptWorld(mem)` there before
 * anything else. Fd packets carry only the table's 64-bit id, not the memory:
 * cloning two SharedArrayBuffers cost ~1 µs per post, which every buffer hand-off
 * paid for the sake of a thread that joins once.
 *
 * Capacity is fixed at creation (`DMABUF_SLOTS`, default 65536 slots of 256 bytes:
 * 16 MiB): shared memory cannot move, and a full table answers ENOMEM as the
 * kernel's allocators do.
 *
 * Threads: up to MAX_THREADS (64) threads may be joined at once; each gets a
 * thread id (tid) that indexes the per-slot holder masks (see slab.ts). An exited
 * worker's tid is reclaimed by the reaper and reused.
 */
import { getEnvironmentData, isMainThread, setEnvironmentData, threadId } from 'node:worker_threads';
import { fail } from '../errors.js';

export const MAGIC = 0x646d6162; // 'dmab'
export const LAYOUT_VERSION = 1;
export const MAX_THREADS = 64;
export const SLOT_WORDS = 64;
export const SLOT_BYTES = SLOT_WORDS * 4;

/* Header words. 64-bit counters sit at even word offsets (8-byte aligned). */
export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_CAPACITY = 2;
export const H_ALLOC_LOCK = 3;
export const H_FREE_HEAD = 4;
export const H_BUMP = 5;
/** Global signal epoch: bumped on every signal while a multi-fence waiter exists. */
export const H_EPOCH = 6;
/** Number of threads currently in a multi-fence wait (see wait.ts). */
export const H_MULTI = 7;
/** 64-bit fence context counter (dma_fence_context_alloc), words 8-9. */
export const H_CONTEXT = 8;
/** Inode counter for anonymous files: low word 10 (Atomics.add), high word 11 (carry). */
export const H_INODE = 10;
export const H_STUB = 12;
/** Number of locks recovered from dead threads (reported by `lockRecoveries()`). */
export const H_RECOVERED = 14;
/** Lock and list head of the global sw_sync timeline list (sync_debug). */
export const H_TIMELINE_LOCK = 15;
export const H_TIMELINE_HEAD = 16;
export const H_TIMELINE_TAIL = 17;
/** Lock of every dma_fence_chain `prev` pointer (garbage collection rewrites them). */
export const H_CHAIN_LOCK = 18;
/** ww_acquire_ctx stamp counter, 64-bit at words 22-23 (ww-mutex.ts). Stamps start at 1. */
export const H_WW_STAMP = 22;
/** Page arena (arena.ts): lock, pages carved so far, capacity in pages; free-list heads from 32. */
export const H_ARENA_LOCK = 24;
export const H_ARENA_TOP = 25;
export const H_ARENA_MAX_PAGES = 26;
export const H_ARENA_FREE = 32; // 21 words, orders 0..20
/** The global dma-buf list (dma-buf.ts): its mutex and head (most recent first). */
export const H_DMABUF_LOCK = 56;
export const H_DMABUF_HEAD = 57;
/** The contiguous (CMA) heap's pool (heaps/cma-heap.ts): lock, state, first page, pages. */
export const H_CMA_LOCK = 58;
export const H_CMA_STATE = 59;
export const H_CMA_BASE = 60;
export const H_CMA_PAGES = 61;
/** vgem (vgem.ts): its mutex. */
export const H_VGEM_LOCK = 62;
/** Random 64-bit id of this table (words 20-21): SABs cloned by postMessage are new objects for the same memory. */
export const H_TABLE_ID = 20;
export const HEADER_WORDS = 256;

/* Thread registry: MAX_THREADS entries of THREAD_WORDS words after the header. */
export const THREAD_BASE = HEADER_WORDS;
export const THREAD_WORDS = 8;
export const T_STATE = 0;
export const T_NODE_TID = 1;
export const T_INCARNATION = 2;
/** Head and length of the thread's cache of free slots (slab.ts), so the reaper can return them. */
export const T_CACHE_HEAD = 3;
export const T_CACHE_LEN = 4;
export const THREAD_FREE = 0;
export const THREAD_ALIVE = 1;
export const THREAD_REAPING = 2;

export const SLOT_BASE = THREAD_BASE + MAX_THREADS * THREAD_WORDS; // 768, a multiple of 64

const ENV_KEY = 'dmabuf:world';

/** Typed views over the one shared table. */
/** SAB objects already recognised as this thread's table (a structured clone is a new object each time). */
const knownSame = new WeakSet<SharedArrayBuffer>();

export class World {
  readonly sab: SharedArrayBuffer;
  /** The page arena: a growable SharedArrayBuffer playing physical memory (arena.ts). */
  readonly arena: SharedArrayBuffer;
  /** Length-tracking views of the arena: they follow its growth in every thread. */
  readonly arenaU8: Uint8Array;
  readonly arenaI32: Int32Array;
  /** One byte per arena page (the buddy allocator's order map), after the slots. */
  readonly pageMap: Uint8Array;
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly u8: Uint8Array;
  readonly capacity: number;

  constructor(sab: SharedArrayBuffer, arena: SharedArrayBuffer) {
    this.sab = sab;
    this.arena = arena;
    this.arenaU8 = new Uint8Array(arena);
    this.arenaI32 = new Int32Array(arena);
    this.i32 = new Int32Array(sab);
    this.i64 = new BigInt64Array(sab);
    this.u8 = new Uint8Array(sab);
    if (this.i32[H_MAGIC] !== MAGIC || this.i32[H_VERSION] !== LAYOUT_VERSION) {
      throw fail('EINVAL', 'join', 'shared table has the wrong magic or layout version');
    }
    this.capacity = this.i32[H_CAPACITY]!;
    const mapAt = (SLOT_BASE + this.capacity * SLOT_WORDS) * 4;
    this.pageMap = new Uint8Array(sab, mapAt, this.i32[H_ARENA_MAX_PAGES]!);
  }

  /** True if `id0`, `id1` is this table's id (as packets carry it). */
  hasId(id0: number, id1: number): boolean {
    return id0 === this.i32[H_TABLE_ID] && id1 === this.i32[H_TABLE_ID + 1];
  }

  /** True if `sab` is (a clone of) this table. */
  isSameTable(sab: SharedArrayBuffer): boolean {
    if (sab === this.sab || knownSame.has(sab)) return true;
    if (sab.byteLength !== this.sab.byteLength) return false;
    const other = new Int32Array(sab, 0, HEADER_WORDS);
    const same = other[H_MAGIC] === MAGIC && other[H_TABLE_ID] === this.i32[H_TABLE_ID]
      && other[H_TABLE_ID + 1] === this.i32[H_TABLE_ID + 1];
    if (same) knownSame.add(sab); // each postMessage delivers a new object; a packet may be received more than once
    return same;
  }

  /** Word index of slot `slot`'s first word. */
  base(slot: number): number {
    return SLOT_BASE + slot * SLOT_WORDS;
  }
}

/** The shared memory a world is made of: the object table and the page arena. */
export interface WorldMemory {
  readonly table: SharedArrayBuffer;
  readonly arena: SharedArrayBuffer;
}

/**
 * The arena: a growable SAB reserving up to DMABUF_ARENA_MB (default 4096, V8's
 * limit per SAB) and committed lazily as it grows. Smaller reservations are tried
 * if the address space is limited.
 */
function createArena(): SharedArrayBuffer {
  const mb = Number(process.env['DMABUF_ARENA_MB'] ?? 4096);
  const want = Number.isInteger(mb) && mb >= 1 && mb <= 4096 ? mb * 2 ** 20 : 2 ** 32;
  for (let max = want; ; max /= 4) {
    try {
      return new SharedArrayBuffer(0, { maxByteLength: Math.max(max, 2 ** 20) });
    } catch (e) {
      if (max <= 2 ** 20) throw e;
    }
  }
}

function createMemory(): WorldMemory {
  const arena = createArena();
  const env = Number(process.env['DMABUF_SLOTS'] ?? 65536);
  const capacity = Number.isInteger(env) && env >= 64 && env <= 1 << 22 ? env : 65536;
  const maxPages = arena.maxByteLength / 4096;
  const sab = new SharedArrayBuffer((SLOT_BASE + capacity * SLOT_WORDS) * 4 + maxPages);
  const i32 = new Int32Array(sab);
  i32[H_MAGIC] = MAGIC;
  i32[H_VERSION] = LAYOUT_VERSION;
  i32[H_CAPACITY] = capacity;
  i32[H_FREE_HEAD] = -1;
  i32[H_BUMP] = 0;
  i32[H_STUB] = -1;
  i32[H_TIMELINE_HEAD] = -1;
  i32[H_TIMELINE_TAIL] = -1;
  i32[H_DMABUF_HEAD] = -1;
  new BigInt64Array(sab)[H_CONTEXT / 2] = 1n; // context 0 belongs to the stub fence
  i32[H_INODE] = 1; // inode numbers start at 1
  crypto.getRandomValues(i32.subarray(H_TABLE_ID, H_TABLE_ID + 2));
  i32[H_ARENA_MAX_PAGES] = maxPages;
  i32.fill(-1, H_ARENA_FREE, H_ARENA_FREE + 21);
  return { table: sab, arena };
}

let current: World | undefined;
let myTid = -1;
const joinHooks: Array<(w: World, tid: number) => void> = [];

/**
 * Run `hook` once this thread has joined a world (at once if it already has).
 * Lower layers use it to set up per-thread state without knowing who joins.
 */
export function onJoin(hook: (w: World, tid: number) => void): void {
  joinHooks.push(hook);
  if (current) hook(current, myTid);
}

function join(mem: WorldMemory): World {
  const w = new World(mem.table, mem.arena);
  const tid = registerThread(w);
  current = w;
  myTid = tid;
  // Workers created from this thread from now on inherit the table and the arena.
  setEnvironmentData(ENV_KEY, { table: mem.table, arena: mem.arena });
  for (const hook of joinHooks) hook(w, tid);
  return w;
}

function registerThread(w: World): number {
  for (let t = 0; t < MAX_THREADS; t++) {
    const at = THREAD_BASE + t * THREAD_WORDS;
    if (Atomics.compareExchange(w.i32, at + T_STATE, THREAD_FREE, THREAD_ALIVE) === THREAD_FREE) {
      Atomics.store(w.i32, at + T_NODE_TID, threadId);
      Atomics.store(w.i32, at + T_CACHE_HEAD, -1);
      Atomics.store(w.i32, at + T_CACHE_LEN, 0);
      Atomics.add(w.i32, at + T_INCARNATION, 1);
      return t;
    }
  }
  throw fail('EMFILE', 'join', `more than ${MAX_THREADS} threads joined the shared table at once`);
}

/** This thread's world, joining (or creating) it on first use. */
export function world(): World {
  if (current) return current;
  const inherited = getEnvironmentData(ENV_KEY);
  if (isWorldMemory(inherited)) return join(inherited);
  if (!isMainThread) {
    // A Worker started before its parent loaded dmabuf inherits nothing: its objects then live in
    // a table of its own and cannot be exchanged with other threads' (receiving a packet fails).
    process.emitWarning('this worker inherited no dmabuf table and starts its own; import dmabuf in the '
      + 'parent before creating the Worker to share objects with it', { code: 'DMABUF_OWN_TABLE' });
  }
  return join(createMemory());
}

/** The memory of this thread's world (joining first): post it to a Worker started too early, which passes it to `adoptWorld`. */
export function worldMemory(): WorldMemory {
  const w = world();
  return { table: w.sab, arena: w.arena };
}

/** True if `m` is a table and an arena (as carried by environment data and `worldMemory()`). */
export function isWorldMemory(m: unknown): m is WorldMemory {
  if (typeof m !== 'object' || m === null) return false;
  const o = m as Record<string, unknown>;
  return o['table'] instanceof SharedArrayBuffer && o['arena'] instanceof SharedArrayBuffer;
}

/** This thread's id in the shared table (joins first if needed). */
export function tid(): number {
  if (!current) world();
  return myTid;
}

/**
 * Adopt the table and arena `mem` (from `worldMemory()` in a thread that has them). A thread that already uses a
 * different table cannot switch: objects from two tables never mix (EXDEV-like,
 * reported as EINVAL).
 */
export function adoptWorld(mem: WorldMemory): World {
  if (current) {
    if (current.isSameTable(mem.table)) return current;
    throw fail('EINVAL', 'join', 'this thread already uses another shared table');
  }
  return join(mem);
}

/** True while thread `t` is registered and not being reaped. */
export function threadAlive(w: World, t: number): boolean {
  return Atomics.load(w.i32, THREAD_BASE + t * THREAD_WORDS + T_STATE) === THREAD_ALIVE;
}

/** Find the tid that Node thread `nodeTid` registered as, or -1. */
export function tidOfNodeThread(w: World, nodeTid: number): number {
  for (let t = 0; t < MAX_THREADS; t++) {
    const at = THREAD_BASE + t * THREAD_WORDS;
    if (Atomics.load(w.i32, at + T_STATE) === THREAD_ALIVE && Atomics.load(w.i32, at + T_NODE_TID) === nodeTid) {
      return t;
    }
  }
  return -1;
}
