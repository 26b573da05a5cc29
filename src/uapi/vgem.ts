/**
 * DOC: /dev/dri/card0 — vgem's DRM file (include/uapi/drm/drm.h, drm_mode.h, vgem_drm.h)
 *
 * Each open is a DRM file (vgem.ts). Like drm_ioctl, a request is matched by its
 * number alone (the size and direction bits the caller encoded are not
 * checked): type other than 'd' → ENOTTY; a number vgem does not implement →
 * EINVAL (drm_ioctl's answer for a missing or out-of-range entry — other DRM core
 * ioctls, e.g. DRM_IOCTL_VERSION, are not provided here). Each struct is read
 * whole first (a field of the wrong type → EFAULT, nothing done), then:
 *
 * - DRM_IOCTL_MODE_CREATE_DUMB `{height, width, bpp, flags, handle, pitch, size}`:
 *   writes handle, pitch, size; on any error writes 0 to all three, as
 *   drm_mode_create_dumb_ioctl does.
 * - DRM_IOCTL_MODE_MAP_DUMB `{handle, pad, offset}`: writes offset (0 on error);
 *   `pad` is not checked (the kernel does not).
 * - DRM_IOCTL_GEM_CLOSE `{handle, pad}`: pad ≠ 0 → EINVAL, then the handle.
 * - DRM_IOCTL_PRIME_HANDLE_TO_FD `{handle, flags, fd}`: flags beyond
 *   DRM_CLOEXEC | DRM_RDWR → EINVAL, then an fd is reserved (EMFILE), then the
 *   handle (ENOENT); writes fd.
 * - DRM_IOCTL_PRIME_FD_TO_HANDLE `{fd, flags, handle}`: `flags` ignored; fd not
 *   open → EBADF, not a dma-buf → EINVAL; writes handle.
 * - DRM_IOCTL_VGEM_FENCE_ATTACH `{handle, flags, out_fence, pad}`: flags beyond
 *   VGEM_FENCE_WRITE → EINVAL, pad ≠ 0 → EINVAL, then ENOENT / EBUSY; writes out_fence.
 * - DRM_IOCTL_VGEM_FENCE_SIGNAL `{fence, flags}`: flags ≠ 0 → EINVAL, then ENOENT / ETIMEDOUT.
 *
 * mmap(len, prot, MAP_SHARED, drmFd, offset) maps the object MAP_DUMB gave
 * `offset` for.
 */
import '../drivers.js';
import { DmaBuf } from '../dma-buf.js';
import { fail } from '../errors.js';
import { FileType } from '../file.js';
import {
  vgemAttachFence, vgemCreateDumb, vgemFdToHandle, vgemGemClose, vgemHandleToFd, vgemMapDumb, vgemMmap, vgemOpen,
} from '../vgem.js';
import { vgemFenceSignal } from '../vgem-fence.js';
import {
  _IOC_NR, _IOC_TYPE, DRM_CLOEXEC, DRM_COMMAND_BASE, DRM_IOCTL_BASE, DRM_IOCTL_GEM_CLOSE, DRM_IOCTL_MODE_CREATE_DUMB,
  DRM_IOCTL_MODE_MAP_DUMB, DRM_IOCTL_PRIME_FD_TO_HANDLE, DRM_IOCTL_PRIME_HANDLE_TO_FD, DRM_RDWR, DRM_VGEM_FENCE_ATTACH,
  DRM_VGEM_FENCE_SIGNAL, VGEM_FENCE_WRITE,
} from './constants.js';
import { fdFile, installFd, reserveFds } from './fd-table.js';
import { notTty, registerIoctl } from './ioctl.js';
import { registerMmap } from './mmap.js';
import { expectStruct, s32, u32, u64 } from './struct.js';
import { registerDevice } from './vfs.js';

type Struct = Record<string, unknown>;

/** Read every field of the struct, as copy_from_user does before the handler runs. */
function readStruct(arg: unknown, u32s: string[], u64s: string[] = [], s32s: string[] = []): [Struct, Record<string, number>] {
  const data = expectStruct(arg, 'ioctl');
  const v: Record<string, number> = {};
  for (const f of u32s) v[f] = u32(data, f, 'ioctl');
  for (const f of s32s) v[f] = s32(data, f, 'ioctl');
  for (const f of u64s) v[f] = Number(u64(data, f, 'ioctl'));
  return [data, v];
}

function createDumb(file: number, arg: unknown): number {
  const [data, v] = readStruct(arg, ['height', 'width', 'bpp', 'flags', 'handle', 'pitch'], ['size']);
  try {
    const r = vgemCreateDumb(file, v['width']!, v['height']!, v['bpp']!);
    Object.assign(data, { handle: r.handle, pitch: r.pitch, size: r.size });
    return 0;
  } catch (e) {
    Object.assign(data, { handle: 0, pitch: 0, size: 0 });
    throw e;
  }
}

function mapDumb(file: number, arg: unknown): number {
  const [data, v] = readStruct(arg, ['handle', 'pad'], ['offset']);
  try {
    data['offset'] = vgemMapDumb(file, v['handle']!);
    return 0;
  } catch (e) {
    data['offset'] = 0;
    throw e;
  }
}

function gemClose(file: number, arg: unknown): number {
  const [, v] = readStruct(arg, ['handle', 'pad']);
  if (v['pad']) throw fail('EINVAL', 'ioctl', 'drm_gem_close.pad must be 0');
  vgemGemClose(file, v['handle']!);
  return 0;
}

function handleToFd(file: number, arg: unknown): number {
  const [data, v] = readStruct(arg, ['handle', 'flags'], [], ['fd']);
  if (v['flags']! & ~(DRM_CLOEXEC | DRM_RDWR)) throw fail('EINVAL', 'ioctl', 'flags beyond DRM_CLOEXEC | DRM_RDWR');
  reserveFds(1, 'ioctl');
  data['fd'] = installFd(vgemHandleToFd(file, v['handle']!, v['flags']!), 'ioctl');
  return 0;
}

function fdToHandle(file: number, arg: unknown): number {
  const [data, v] = readStruct(arg, ['flags', 'handle'], [], ['fd']);
  const bufFile = fdFile(v['fd'], 'ioctl', 'EINVAL');
  if (!DmaBuf.isDmaBuf(bufFile)) throw fail('EINVAL', 'ioctl', `fd ${v['fd']} is not a dma-buf`);
  data['handle'] = vgemFdToHandle(file, bufFile);
  return 0;
}

function fenceAttach(file: number, arg: unknown): number {
  const [data, v] = readStruct(arg, ['handle', 'flags', 'out_fence', 'pad']);
  if (v['flags']! & ~VGEM_FENCE_WRITE) throw fail('EINVAL', 'ioctl', 'flags beyond VGEM_FENCE_WRITE');
  if (v['pad']) throw fail('EINVAL', 'ioctl', 'drm_vgem_fence_attach.pad must be 0');
  data['out_fence'] = vgemAttachFence(file, v['handle']!, (v['flags']! & VGEM_FENCE_WRITE) !== 0);
  return 0;
}

function fenceSignal(file: number, arg: unknown): number {
  const [, v] = readStruct(arg, ['fence', 'flags']);
  if (v['flags']) throw fail('EINVAL', 'ioctl', 'drm_vgem_fence_signal.flags must be 0');
  vgemFenceSignal(file, v['fence']!);
  return 0;
}

const byNumber = new Map<number, (file: number, arg: unknown) => number>([
  [_IOC_NR(DRM_IOCTL_GEM_CLOSE), gemClose],
  [_IOC_NR(DRM_IOCTL_PRIME_HANDLE_TO_FD), handleToFd],
  [_IOC_NR(DRM_IOCTL_PRIME_FD_TO_HANDLE), fdToHandle],
  [_IOC_NR(DRM_IOCTL_MODE_CREATE_DUMB), createDumb],
  [_IOC_NR(DRM_IOCTL_MODE_MAP_DUMB), mapDumb],
  [DRM_COMMAND_BASE + DRM_VGEM_FENCE_ATTACH, fenceAttach],
  [DRM_COMMAND_BASE + DRM_VGEM_FENCE_SIGNAL, fenceSignal],
]);

registerIoctl(FileType.DrmDev, (file, request, arg) => {
  if (_IOC_TYPE(request) !== DRM_IOCTL_BASE.charCodeAt(0)) return notTty(request);
  const handler = byNumber.get(_IOC_NR(request));
  if (!handler) throw fail('EINVAL', 'ioctl', `DRM ioctl number 0x${_IOC_NR(request).toString(16)} is not provided by vgem`);
  return handler(file, arg);
});

registerMmap(FileType.DrmDev, vgemMmap);

registerDevice('/dev/dri/card0', vgemOpen);
