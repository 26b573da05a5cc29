/**
 * DOC: ww_acquire_ctx — one locking transaction
 *
 * `new WwAcquireCtx()` is `ww_acquire_init` with the reservation class: a stamp
 * from the global counter in the table header (smaller = older). The context
 * records which mutexes it holds (`held`: their first words, or the negative keys
 * of private mutexes) and which one returned -EDEADLK (`contending`), and the
 * DEBUG_WW_MUTEXES checks of ww-mutex.ts (EINVAL on misuse) read both.
 */
import { ERRNO, fail } from './errors.js';
import { H_WW_STAMP, world } from './shared/world.js';

export interface CtxState {
  readonly stamp: bigint;
  /** First words of the mutexes this context holds. */
  readonly held: Set<number>;
  /** First word of the mutex that returned -EDEADLK, until it is acquired; -1 if none. */
  contending: number;
  done: boolean;
  finished: boolean;
  /** A lock operation of this context is in progress (async ones span awaits). */
  busy: boolean;
}

/** The state of `ctx` (for the lock algorithm). */
export let stateOf!: (ctx: WwAcquireCtx) => CtxState;

/**
 * An acquire context (`struct ww_acquire_ctx`): one locking transaction of the
 * thread that creates it. `new WwAcquireCtx()` is `ww_acquire_init` with the
 * reservation class: it takes a fresh stamp from the global counter.
 */
export class WwAcquireCtx {
  readonly #s: CtxState;

  static {
    stateOf = (ctx) => ctx.#s;
  }

  constructor() {
    const w = world();
    // The header word starts at 0: the first stamp handed out is 1 (0 means "no context").
    const stamp = Atomics.add(w.i64, H_WW_STAMP >> 1, 1n) + 1n;
    this.#s = { stamp, held: new Set(), contending: -1, done: false, finished: false, busy: false };
  }

  /** The stamp: smaller is older. Unique in the shared table. */
  get stamp(): bigint {
    return this.#s.stamp;
  }

  /** How many mutexes this context holds (`ctx->acquired`). */
  get held(): number {
    return this.#s.held.size;
  }

  /** True after `done()`. */
  get isDone(): boolean {
    return this.#s.done;
  }

  /** True after `fini()`. */
  get isFinished(): boolean {
    return this.#s.finished;
  }

  /**
   * ww_acquire_done: mark that this transaction takes no more locks. Locking a
   * mutex it does not hold afterwards throws EINVAL.
   * @throws EINVAL if called twice or after `fini()`.
   */
  done(): void {
    const s = this.#s;
    if (s.finished) throw fail('EINVAL', 'ww_acquire_done', 'acquire context already finished');
    if (s.done) throw fail('EINVAL', 'ww_acquire_done', 'ww_acquire_done called twice');
    s.done = true;
  }

  /**
   * ww_acquire_fini: end the transaction. Every lock must have been released.
   * @throws EINVAL (context unchanged) with locks still held, while a lock call is
   * pending, or if already finished.
   */
  fini(): void {
    const s = this.#s;
    if (s.finished) throw fail('EINVAL', 'ww_acquire_fini', 'acquire context already finished');
    if (s.busy) throw fail('EINVAL', 'ww_acquire_fini', 'a lock operation of this context is still pending');
    if (s.held.size > 0) {
      throw fail('EINVAL', 'ww_acquire_fini', `${s.held.size} lock(s) of this context are still held`);
    }
    s.finished = true;
    s.done = true;
  }
}

export function ctxState(ctx: WwAcquireCtx | null, syscall: string): CtxState | null {
  if (ctx === null) return null;
  if (!(ctx instanceof WwAcquireCtx)) throw new TypeError(`${syscall}: ctx must be a WwAcquireCtx or null`);
  return stateOf(ctx);
}

/**
 * The DEBUG_WW_MUTEXES checks for locking `at` with context state `s` (not
 * lockSlow). Returns -EALREADY if the context already holds it, 0 to go on.
 */
export function checkLock(s: CtxState, at: number, syscall: string): number {
  if (s.finished) throw fail('EINVAL', syscall, 'acquire context already finished');
  if (s.busy) throw fail('EINVAL', syscall, 'a lock operation of this context is still pending');
  if (s.held.has(at)) return -ERRNO.EALREADY;
  if (s.done) throw fail('EINVAL', syscall, 'locking after ww_acquire_done');
  if (s.contending !== -1) {
    if (s.contending !== at) {
      throw fail('EINVAL', syscall, 'after -EDEADLK the next lock must be the contended mutex');
    }
    if (s.held.size > 0) {
      throw fail('EINVAL', syscall, `after -EDEADLK every lock must be released first (${s.held.size} held)`);
    }
  }
  return 0;
}

export function checkLockSlow(s: CtxState, at: number, syscall: string): void {
  if (s.finished) throw fail('EINVAL', syscall, 'acquire context already finished');
  if (s.busy) throw fail('EINVAL', syscall, 'a lock operation of this context is still pending');
  if (s.contending !== at) {
    throw fail('EINVAL', syscall, s.contending === -1
      ? 'lock_slow without a preceding -EDEADLK'
      : 'lock_slow on a different mutex than the one that returned -EDEADLK');
  }
  if (s.held.size > 0) {
    throw fail('EINVAL', syscall, `lock_slow with ${s.held.size} lock(s) still held`);
  }
  if (s.done) throw fail('EINVAL', syscall, 'locking after ww_acquire_done');
}
