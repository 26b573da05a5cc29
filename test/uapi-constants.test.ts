import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as C from 'dmabuf/uapi';
// The struct decoders are internal (not exported by 'dmabuf/uapi'); they are unit-tested here from the
// build output because every ioctl's argument rules rest on them. Types come from dist/ as seen from
// test/; the code is loaded from dist/ as seen from build-test/test/ at run time.
import type * as Struct from '../dist/uapi/struct.js';

const S: typeof Struct = await import(new URL('../../dist/uapi/struct.js', import.meta.url).href);

/** Assert that `fn` throws a DmaBufError with `code` (and `syscall` 'ioctl'). */
function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => {
    const e = err as { code?: unknown; syscall?: unknown; errno?: unknown };
    assert.equal(e.code, code);
    assert.equal(e.syscall, 'ioctl');
    assert.equal(e.errno, 14);
    return true;
  });
}

const IOCTLS: Record<string, number> = {
  DMA_BUF_IOCTL_SYNC: 0x40086200,
  DMA_BUF_SET_NAME: 0x40086201,
  DMA_BUF_SET_NAME_A: 0x40046201,
  DMA_BUF_SET_NAME_B: 0x40086201,
  DMA_BUF_IOCTL_EXPORT_SYNC_FILE: 0xc0086202,
  DMA_BUF_IOCTL_IMPORT_SYNC_FILE: 0x40086203,
  DMA_HEAP_IOCTL_ALLOC: 0xc0184800,
  UDMABUF_CREATE: 0x40187542,
  UDMABUF_CREATE_LIST: 0x40087543,
  SYNC_IOC_MERGE: 0xc0303e03,
  SYNC_IOC_FILE_INFO: 0xc0383e04,
  SYNC_IOC_SET_DEADLINE: 0x40103e05,
  SW_SYNC_IOC_CREATE_FENCE: 0xc0285700,
  SW_SYNC_IOC_INC: 0x40045701,
  SW_SYNC_GET_DEADLINE: 0xc0105702,
  DRM_IOCTL_GEM_CLOSE: 0x40086409,
  DRM_IOCTL_PRIME_HANDLE_TO_FD: 0xc00c642d,
  DRM_IOCTL_PRIME_FD_TO_HANDLE: 0xc00c642e,
  DRM_IOCTL_MODE_CREATE_DUMB: 0xc02064b2,
  DRM_IOCTL_MODE_MAP_DUMB: 0xc01064b3,
  DRM_IOCTL_VGEM_FENCE_ATTACH: 0xc0106441,
  DRM_IOCTL_VGEM_FENCE_SIGNAL: 0x40086442,
};

const FLAGS: Record<string, number | string> = {
  DMA_BUF_SYNC_READ: 1, DMA_BUF_SYNC_WRITE: 2, DMA_BUF_SYNC_RW: 3, DMA_BUF_SYNC_START: 0,
  DMA_BUF_SYNC_END: 4, DMA_BUF_SYNC_VALID_FLAGS_MASK: 7, DMA_BUF_NAME_LEN: 32, DMA_BUF_BASE: 'b',
  DMA_HEAP_VALID_FD_FLAGS: 0o2000003, DMA_HEAP_VALID_HEAP_FLAGS: 0,
  UDMABUF_FLAGS_CLOEXEC: 1, SYNC_IOC_MAGIC: '>',
  DRM_COMMAND_BASE: 0x40, DRM_VGEM_FENCE_ATTACH: 1, DRM_VGEM_FENCE_SIGNAL: 2, VGEM_FENCE_WRITE: 1,
  DRM_CLOEXEC: 0o2000000, DRM_RDWR: 2,
  O_RDONLY: 0, O_WRONLY: 1, O_RDWR: 2, O_ACCMODE: 3, O_NONBLOCK: 0o4000, O_CLOEXEC: 0o2000000,
  MFD_CLOEXEC: 1, MFD_ALLOW_SEALING: 2,
  F_LINUX_SPECIFIC_BASE: 1024, F_ADD_SEALS: 1033, F_GET_SEALS: 1034, F_GETFD: 1, F_SETFD: 2, F_GETFL: 3,
  FD_CLOEXEC: 1,
  F_SEAL_SEAL: 1, F_SEAL_SHRINK: 2, F_SEAL_GROW: 4, F_SEAL_WRITE: 8, F_SEAL_FUTURE_WRITE: 0x10,
  PROT_NONE: 0, PROT_READ: 1, PROT_WRITE: 2, PROT_EXEC: 4,
  MAP_SHARED: 1, MAP_PRIVATE: 2, MAP_FIXED: 0x10,
  POLLIN: 1, POLLPRI: 2, POLLOUT: 4, POLLERR: 8, POLLHUP: 0x10, POLLNVAL: 0x20,
  PAGE_SIZE: 4096, SEEK_SET: 0, SEEK_CUR: 1, SEEK_END: 2,
};

const exported = C as unknown as Record<string, unknown>;

test('every ioctl request number equals Linux’s value', () => {
  for (const [name, value] of Object.entries(IOCTLS)) {
    assert.equal(exported[name], value, `${name} = 0x${value.toString(16)}`);
  }
});

test('flag and magic constants have Linux’s values', () => {
  for (const [name, value] of Object.entries(FLAGS)) assert.equal(exported[name], value, name);
});

test('every numeric constant is a non-negative integer', () => {
  for (const [name, value] of Object.entries(exported)) {
    if (typeof value !== 'number') continue;
    assert.ok(Number.isInteger(value) && value >= 0, name);
  }
});

test('_IOC encodes like asm-generic/ioctl.h and accepts a char or a number as type', () => {
  assert.equal(C._IOC(C._IOC_READ | C._IOC_WRITE, 'H', 0, 24), 0xc0184800);
  assert.equal(C._IOC(C._IOC_WRITE, 0x62, 0, 8), 0x40086200);
  assert.equal(C._IO('d', 0x20), 0x6420);
  assert.equal(C._IOR('d', 0x01, 8), 0x80086401);
  assert.equal(C._IOW('u', 0x42, 24), C.UDMABUF_CREATE);
  assert.equal(C._IOWR('>', 3, 48), C.SYNC_IOC_MERGE);
  assert.equal(C._IOC(3, 0xff, 0xff, 0x3fff), 0xffffffff);
  assert.throws(() => C._IOC(0, 'ab', 0, 0), TypeError);
  assert.throws(() => C._IOC(0, 'b', 256, 0), RangeError);
  assert.throws(() => C._IOC(0, 'b', 0, 0x4000), RangeError);
});

test('the _IOC_* decoders round-trip every request number', () => {
  const cases: [number, string, number, number][] = [
    [C._IOC_WRITE, 'b', 0, 8],
    [C._IOC_READ | C._IOC_WRITE, 'H', 0, 24],
    [C._IOC_READ | C._IOC_WRITE, '>', 4, 56],
    [C._IOC_WRITE, 'W', 1, 4],
    [C._IOC_READ | C._IOC_WRITE, 'd', 0xb2, 32],
    [C._IOC_READ, 'z', 0xff, 0x3fff],
    [C._IOC_NONE, 'u', 0x43, 0],
  ];
  for (const [dir, type, nr, size] of cases) {
    const req = C._IOC(dir, type, nr, size);
    assert.equal(C._IOC_DIR(req), dir);
    assert.equal(C._IOC_TYPE(req), type.charCodeAt(0));
    assert.equal(C._IOC_NR(req), nr);
    assert.equal(C._IOC_SIZE(req), size);
  }
  for (const req of Object.values(IOCTLS)) {
    assert.equal(C._IOC(C._IOC_DIR(req), C._IOC_TYPE(req), C._IOC_NR(req), C._IOC_SIZE(req)), req);
  }
  assert.equal(C._IOC_SIZE(C.DRM_IOCTL_PRIME_HANDLE_TO_FD), 12);
  assert.equal(C._IOC_NR(C.DRM_IOCTL_VGEM_FENCE_SIGNAL), C.DRM_COMMAND_BASE + C.DRM_VGEM_FENCE_SIGNAL);
});

test('expectStruct accepts objects and rejects everything else with EFAULT', () => {
  const o = { flags: 1 };
  assert.equal(S.expectStruct(o, 'ioctl'), o);
  for (const bad of [undefined, null, 0, 1n, 'flags', true, [], [1], () => 0]) {
    throwsCode(() => S.expectStruct(bad, 'ioctl'), 'EFAULT');
  }
});

test('a missing or undefined field reads as zero; unknown fields are ignored', () => {
  const s = { other: 'ignored', undef: undefined };
  assert.equal(S.u32(s, 'flags', 'ioctl'), 0);
  assert.equal(S.s32(s, 'fd', 'ioctl'), 0);
  assert.equal(S.u64(s, 'len', 'ioctl'), 0n);
  assert.equal(S.s64(s, 'x', 'ioctl'), 0n);
  assert.equal(S.u64Number(s, 'size', 'ioctl'), 0);
  assert.equal(S.u32(s, 'undef', 'ioctl'), 0);
  assert.equal(S.cstr(s, 'name', 32, 'ioctl'), '');
  assert.equal(S.cstr(s, 'undef', 32, 'ioctl'), '');
});

test('integers convert as C converts them, from numbers and bigints', () => {
  assert.equal(S.u32({ v: -1 }, 'v', 'ioctl'), 0xffffffff);
  assert.equal(S.u32({ v: -1n }, 'v', 'ioctl'), 0xffffffff);
  assert.equal(S.u32({ v: 2 ** 32 + 5 }, 'v', 'ioctl'), 5);
  assert.equal(S.u32({ v: (1n << 40n) + 7n }, 'v', 'ioctl'), 7);
  assert.equal(S.u32({ v: -0 }, 'v', 'ioctl'), 0);
  assert.ok(Object.is(S.u32({ v: -0 }, 'v', 'ioctl'), 0));
  assert.equal(S.u32({ v: 1e21 }, 'v', 'ioctl'), Number(BigInt.asUintN(32, BigInt(1e21))));
  assert.equal(S.s32({ v: 0xffffffff }, 'v', 'ioctl'), -1);
  assert.equal(S.s32({ v: 0xffffffffn }, 'v', 'ioctl'), -1);
  assert.equal(S.s32({ v: 0x80000000 }, 'v', 'ioctl'), -0x80000000);
  assert.equal(S.s32({ v: -5 }, 'v', 'ioctl'), -5);
  assert.equal(S.u64({ v: -1 }, 'v', 'ioctl'), 2n ** 64n - 1n);
  assert.equal(S.u64({ v: -1n }, 'v', 'ioctl'), 2n ** 64n - 1n);
  assert.equal(S.u64({ v: 2n ** 64n + 3n }, 'v', 'ioctl'), 3n);
  assert.equal(S.u64({ v: 4096 }, 'v', 'ioctl'), 4096n);
  assert.equal(S.s64({ v: 2n ** 64n - 1n }, 'v', 'ioctl'), -1n);
  assert.equal(S.s64({ v: 2n ** 63n }, 'v', 'ioctl'), -(2n ** 63n));
  assert.equal(S.s64({ v: -7 }, 'v', 'ioctl'), -7n);
  assert.equal(S.u64Number({ v: 4096n }, 'v', 'ioctl'), 4096);
  assert.equal(S.u64Number({ v: Number.MAX_SAFE_INTEGER }, 'v', 'ioctl'), Number.MAX_SAFE_INTEGER);
  assert.equal(S.u64Number({ v: -1 }, 'v', 'ioctl'), 2 ** 64);
  assert.ok(Number.isFinite(S.u64Number({ v: -1n }, 'v', 'ioctl')));
  // u64Flags: the value below 2^32, else -1 (all bits: any unknown-bit test fails)
  assert.equal(S.u64Flags({ v: 5 }, 'v', 'ioctl'), 5);
  assert.equal(S.u64Flags({ v: 5n }, 'v', 'ioctl'), 5);
  assert.equal(S.u64Flags({}, 'v', 'ioctl'), 0);
  assert.equal(S.u64Flags({ v: 0xffffffff }, 'v', 'ioctl'), 0xffffffff);
  assert.equal(S.u64Flags({ v: 2 ** 32 }, 'v', 'ioctl'), -1);
  assert.equal(S.u64Flags({ v: 2n ** 64n + 4n }, 'v', 'ioctl'), 4); // wrapped modulo 2^64, as u64
  assert.equal(S.u64Flags({ v: -1 }, 'v', 'ioctl'), -1);
  assert.equal(S.u64Flags({ v: (1n << 40n) | 1n }, 'v', 'ioctl'), -1);
});

const WRONG = ['1', '', true, false, null, {}, [], [1], 1.5, -0.5, NaN, Infinity, -Infinity, Symbol('x'), () => 1];

test('integer fields of the wrong JS type fail with EFAULT', () => {
  for (const v of WRONG) {
    const s = { v };
    throwsCode(() => S.u32(s, 'v', 'ioctl'), 'EFAULT');
    throwsCode(() => S.s32(s, 'v', 'ioctl'), 'EFAULT');
    throwsCode(() => S.u64(s, 'v', 'ioctl'), 'EFAULT');
    throwsCode(() => S.s64(s, 'v', 'ioctl'), 'EFAULT');
    throwsCode(() => S.u64Number(s, 'v', 'ioctl'), 'EFAULT');
    throwsCode(() => S.u64Flags(s, 'v', 'ioctl'), 'EFAULT');
  }
});

test('string fields of the wrong JS type fail with EFAULT', () => {
  for (const v of [0, 1n, true, null, {}, ['a'], Symbol('x')]) {
    throwsCode(() => S.cstr({ name: v }, 'name', 32, 'ioctl'), 'EFAULT');
  }
});

test('cstr cuts like strscpy: 31 bytes + NUL in a 32-byte field', () => {
  const f = (name: string): string => S.cstr({ name }, 'name', 32, 'ioctl');
  const a31 = 'a'.repeat(31);
  assert.equal(f('short'), 'short');
  assert.equal(f(a31), a31);
  assert.equal(f('a'.repeat(32)), a31);
  assert.equal(f('a'.repeat(100)), a31);
  // 'é' is 2 UTF-8 bytes: 30 + 2 = 32 would not leave room for the NUL.
  assert.equal(f('a'.repeat(30) + 'é'), 'a'.repeat(30));
  assert.equal(f('a'.repeat(29) + 'é'), 'a'.repeat(29) + 'é');
  // '€' is 3 bytes, '😀' is 4 bytes (two UTF-16 units): never split.
  assert.equal(f('a'.repeat(29) + '€'), 'a'.repeat(29));
  assert.equal(f('a'.repeat(28) + '€'), 'a'.repeat(28) + '€');
  assert.equal(f('a'.repeat(28) + '😀'), 'a'.repeat(28));
  assert.equal(f('a'.repeat(27) + '😀'), 'a'.repeat(27) + '😀');
  assert.equal(f('€'.repeat(11)), '€'.repeat(10));
  for (const s of ['€'.repeat(20), 'é'.repeat(40), '😀'.repeat(9), 'x' + '😀'.repeat(9)]) {
    assert.ok(Buffer.byteLength(f(s)) <= 31);
  }
  assert.equal(S.cstr({ name: 'abcdef' }, 'name', 4, 'ioctl'), 'abc');
  assert.equal(S.cstr({ name: 'abc' }, 'name', 1, 'ioctl'), '');
});

test('cstr stops at an embedded NUL', () => {
  const f = (name: string): string => S.cstr({ name }, 'name', 32, 'ioctl');
  assert.equal(f('abc\0def'), 'abc');
  assert.equal(f('\0abc'), '');
  assert.equal(f('a'.repeat(40) + '\0x'), 'a'.repeat(31));
});

test('scalarArg converts a bare integer argument and rejects wrong types with EFAULT', () => {
  assert.equal(S.scalarArg(1, 'u32', 'ioctl'), 1);
  assert.equal(S.scalarArg(-1, 'u32', 'ioctl'), 0xffffffff);
  assert.equal(S.scalarArg(5n, 'u32', 'ioctl'), 5);
  assert.equal(S.scalarArg(2 ** 32 + 2, 'u32', 'ioctl'), 2);
  assert.equal(S.scalarArg(-1, 'u64', 'ioctl'), 2n ** 64n - 1n);
  assert.equal(S.scalarArg(7, 'u64', 'ioctl'), 7n);
  for (const v of [...WRONG, undefined]) {
    throwsCode(() => S.scalarArg(v, 'u32', 'ioctl'), 'EFAULT');
    throwsCode(() => S.scalarArg(v, 'u64', 'ioctl'), 'EFAULT');
  }
});
