/**
 * DOC: uapi struct decoding
 *
 * ioctl arguments are plain JS objects whose keys are the C field names. These
 * helpers read them the way the kernel reads a user struct (uapi.md, "Details
 * that suites rely on" 2–4):
 *
 * - a field left out (or `undefined`) reads as zero / the empty string, as a
 *   shorter C struct would; unknown keys are simply never read;
 * - integers are converted as C converts them (a u32 given -1 holds 0xffffffff),
 *   from a `number` (which must be an integer) or a `bigint`;
 * - a value of the wrong JS type (string, boolean, object, null, NaN, ±Infinity,
 *   a fraction) is a struct the kernel cannot read: `EFAULT`.
 */
import { fail } from '../errors.js';

/** Integer kinds a scalar ioctl argument can have. */
export type ScalarKind = 'u32' | 'u64';

/** True for a JS value that can stand for a C integer: an integral number or a bigint. */
function isCInteger(v: unknown): v is number | bigint {
  return typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v));
}

/**
 * The integer stored in `s[field]`, not yet narrowed: 0 when the field is missing.
 * Throws EFAULT (naming the field) for any other non-integer value.
 */
function intField(s: Record<string, unknown>, field: string, syscall: string): number | bigint {
  const v = s[field];
  if (v === undefined) return 0;
  if (!isCInteger(v)) throw fail('EFAULT', syscall, `field '${field}' is not an integer`);
  return v;
}

/**
 * The ioctl argument as a struct object. Returns it unchanged (the same object,
 * so out-fields written to it reach the caller). Throws EFAULT for anything that
 * is not a non-null, non-array object.
 */
export function expectStruct(arg: unknown, syscall: string): Record<string, unknown> {
  if (typeof arg !== 'object' || arg === null || Array.isArray(arg)) {
    throw fail('EFAULT', syscall, 'argument is not a struct object');
  }
  return arg as Record<string, unknown>;
}

/** `s[field]` as a C `__u32` (0..2^32-1, wrapped modulo 2^32). Throws EFAULT for a wrong type. */
export function u32(s: Record<string, unknown>, field: string, syscall: string): number {
  const v = intField(s, field, syscall);
  return typeof v === 'number' ? v >>> 0 : Number(BigInt.asUintN(32, v));
}

/** `s[field]` as a C `__s32` (-2^31..2^31-1, wrapped modulo 2^32). Throws EFAULT for a wrong type. */
export function s32(s: Record<string, unknown>, field: string, syscall: string): number {
  const v = intField(s, field, syscall);
  return typeof v === 'number' ? v | 0 : Number(BigInt.asIntN(32, v));
}

/** `s[field]` as a C `__u64` bigint (0..2^64-1, wrapped modulo 2^64). Throws EFAULT for a wrong type. */
export function u64(s: Record<string, unknown>, field: string, syscall: string): bigint {
  return BigInt.asUintN(64, BigInt(intField(s, field, syscall)));
}

/**
 * `s[field]` as a C `__u64` of flag bits, for a caller whose flags all sit in the
 * low 32 bits: the value as a number when it is below 2^32, else -1 (every bit
 * set, so any test for unknown bits fails). A number in range makes no bigint.
 * Throws EFAULT for a wrong type.
 */
export function u64Flags(s: Record<string, unknown>, field: string, syscall: string): number {
  const v = intField(s, field, syscall);
  if (typeof v === 'number' && v >= 0 && v <= 0xffffffff) return v;
  const big = BigInt.asUintN(64, BigInt(v));
  return big <= 0xffffffffn ? Number(big) : -1;
}

/** `s[field]` as a C `__s64` bigint (-2^63..2^63-1, wrapped modulo 2^64). Throws EFAULT for a wrong type. */
export function s64(s: Record<string, unknown>, field: string, syscall: string): bigint {
  return BigInt.asIntN(64, BigInt(intField(s, field, syscall)));
}

/**
 * `s[field]` as a C `__u64`, returned as a JS number: `Number(u64(...))`. Exact up
 * to `Number.MAX_SAFE_INTEGER`; above that it is the nearest double (never
 * `Infinity`, at most ~1.8e19), so it is only for sizes and offsets that the
 * caller then range-checks against something far smaller. Throws EFAULT for a
 * wrong type.
 */
export function u64Number(s: Record<string, unknown>, field: string, syscall: string): number {
  return Number(u64(s, field, syscall));
}

/** UTF-8 length of one code point (a lone surrogate counts as U+FFFD: 3 bytes). */
function utf8Length(cp: number): number {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/**
 * `str` as the kernel's `strscpy` leaves it in a `bytes`-byte buffer: cut at the
 * first '\0', then at most `bytes - 1` UTF-8 bytes (room for the NUL), never
 * splitting a multi-byte character. Lone surrogates become U+FFFD, as UTF-8 holds them.
 */
export function strscpy(str: string, bytes: number): string {
  const nul = str.indexOf('\0');
  const text = (nul < 0 ? str : str.slice(0, nul)).toWellFormed();
  let used = 0;
  let end = 0;
  for (const ch of text) {
    used += utf8Length(ch.codePointAt(0) ?? 0);
    if (used > bytes - 1) break;
    end += ch.length;
  }
  return text.slice(0, end);
}

/**
 * `s[field]` as a `char[bytes]` in-string: '' when missing, otherwise cut by
 * `strscpy` to what the kernel would hold. Throws EFAULT for a non-string.
 */
export function cstr(s: Record<string, unknown>, field: string, bytes: number, syscall: string): string {
  const v = s[field];
  if (v === undefined) return '';
  if (typeof v !== 'string') throw fail('EFAULT', syscall, `field '${field}' is not a string`);
  return strscpy(v, bytes);
}

/**
 * A bare-integer ioctl argument (e.g. `SW_SYNC_IOC_INC`'s `__u32`), converted as
 * `u32`/`u64` convert a field: a number for 'u32', a bigint for 'u64'. There is no
 * struct for a missing value to default in, so `undefined` is the NULL pointer
 * and, like every other non-integer, throws EFAULT.
 */
export function scalarArg(arg: unknown, kind: 'u32', syscall: string): number;
export function scalarArg(arg: unknown, kind: 'u64', syscall: string): bigint;
export function scalarArg(arg: unknown, kind: ScalarKind, syscall: string): number | bigint;
export function scalarArg(arg: unknown, kind: ScalarKind, syscall: string): number | bigint {
  if (!isCInteger(arg)) throw fail('EFAULT', syscall, `argument is not an integer`);
  const box = { arg };
  return kind === 'u32' ? u32(box, 'arg', syscall) : u64(box, 'arg', syscall);
}
