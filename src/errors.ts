/**
 * DOC: errors
 *
 * One error family keyed by errno, like Node's own system errors: `code` is the
 * Linux errno name ('EINVAL'), `errno` its positive x86/generic number, `syscall`
 * the operation that failed. Tests and callers branch on `code`, never on text.
 *
 * Expected outcomes are return values, as in the kernel (a timed-out wait returns
 * 0, `addCallback` on a signalled fence returns `-ENOENT`); only misuse throws.
 * Argument *type* mistakes in the driver API are plain `TypeError`s.
 *
 * Errors cross realms (worker threads, structured clone) as plain objects, so the
 * brand is a registered symbol and `isDmaBufError` checks shape, not prototype.
 */

/** Linux errno numbers (generic/x86), kernel-contract §0.2. */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ESPIPE: 29,
  EDEADLK: 35,
  ENODATA: 61,
  ETIME: 62,
  EOVERFLOW: 75,
  EBADFD: 77,
  ETIMEDOUT: 110,
  EALREADY: 114,
  ECANCELED: 125,
  EOWNERDEAD: 130,
  ERESTARTSYS: 512,
} as const;

export type ErrnoName = keyof typeof ERRNO;

const NAMES: Record<number, ErrnoName> = Object.fromEntries(
  Object.entries(ERRNO).map(([name, no]) => [no, name as ErrnoName]),
);

/** Name of a positive or negative errno number, e.g. `errnoName(-2) === 'ENOENT'`. */
export function errnoName(errno: number): string {
  return NAMES[Math.abs(errno)] ?? `E${Math.abs(errno)}`;
}

const BRAND = Symbol.for('dmabuf.error');

/** The one error class of this library. */
export class DmaBufError extends Error {
  readonly code: ErrnoName;
  readonly errno: number;
  readonly syscall: string;
  /** What failed and why, without the code suffix of `message`. */
  readonly detail: string;

  constructor(code: ErrnoName, syscall: string, detail: string) {
    super(`${detail} (${code})`);
    this.name = 'DmaBufError';
    this.code = code;
    this.errno = ERRNO[code];
    this.syscall = syscall;
    this.detail = detail;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** The same error as seen by the system call `syscall` (a driver error surfacing through the uapi). */
  withSyscall(syscall: string): DmaBufError {
    return syscall === this.syscall ? this : new DmaBufError(this.code, syscall, this.detail);
  }
}

/** True for a `DmaBufError`, also one created in another realm or cloned. */
export function isDmaBufError(e: unknown): e is DmaBufError {
  if (typeof e !== 'object' || e === null) return false;
  if ((e as Record<symbol, unknown>)[BRAND] === true) return true;
  const o = e as { code?: unknown; errno?: unknown; syscall?: unknown };
  return typeof o.code === 'string' && typeof o.errno === 'number' && typeof o.syscall === 'string';
}

/** Build (not throw) a `DmaBufError`; callers write `throw fail(...)` so control flow stays visible. */
export function fail(code: ErrnoName, syscall: string, message: string): DmaBufError {
  return new DmaBufError(code, syscall, message);
}

