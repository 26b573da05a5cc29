/**
 * DOC: /dev/udmabuf (include/uapi/linux/udmabuf.h)
 *
 * Opening `/dev/udmabuf` gives the misc device's fd; its ioctls make dma-bufs
 * from sealed memfds (udmabuf.ts has the checks and the buffer):
 * - `UDMABUF_CREATE` with `{memfd, flags, offset, size}`;
 * - `UDMABUF_CREATE_LIST` with `{flags, count, list}`: `count` > 1024 → EINVAL,
 *   then a `list` shorter than `count` (or an item that is not a struct) →
 *   EFAULT, as copying the items in fails; `__pad` is never read.
 * The whole argument is decoded first (EFAULT), as the kernel copies it in. Only
 * `UDMABUF_FLAGS_CLOEXEC` means anything; other flag bits are ignored (current).
 * **The ioctl returns the new dma-buf fd**; there is no out-field. A memfd fd
 * that is not open, or is a standard stream, fails EBADFD (uapi.md detail 8).
 */
import '../drivers.js';
import { fail } from '../errors.js';
import { allocFile, FileType } from '../file.js';
import { UDMABUF_LIST_LIMIT, udmabufCreate, type UdmabufItem } from '../udmabuf.js';
import { UDMABUF_CREATE, UDMABUF_CREATE_LIST } from './constants.js';
import { fdFileOrNone, installFd } from './fd-table.js';
import { notTty, registerIoctl } from './ioctl.js';
import { expectStruct, u32, u64 } from './struct.js';
import { registerDevice } from './vfs.js';

/** One item, its memfd fd looked up now (a lookup changes nothing; udmabuf.ts reports it in order). */
function item(s: Record<string, unknown>): UdmabufItem {
  const fd = u32(s, 'memfd', 'ioctl');
  return { memfd: fdFileOrNone(fd), offset: u64(s, 'offset', 'ioctl'), size: u64(s, 'size', 'ioctl') };
}

function readList(data: Record<string, unknown>): UdmabufItem[] {
  const count = u32(data, 'count', 'ioctl');
  if (count > UDMABUF_LIST_LIMIT) throw fail('EINVAL', 'ioctl', `count ${count} is above list_limit (${UDMABUF_LIST_LIMIT})`);
  if (count === 0) return [];
  const list = data['list'];
  if (!Array.isArray(list) || list.length < count) throw fail('EFAULT', 'ioctl', `list holds fewer than count (${count}) items`);
  return list.slice(0, count).map((s: unknown) => item(expectStruct(s, 'ioctl')));
}

/** Export the buffer and install its fd: @returns the fd. On EMFILE the buffer is put (freed). */
function create(items: UdmabufItem[]): number {
  const buf = udmabufCreate(items);
  try {
    const fd = installFd(buf.file, 'ioctl');
    buf.forget(); // the fd owns the handle's reference now
    return fd;
  } catch (e) {
    buf.close();
    throw e;
  }
}

registerIoctl(FileType.UdmabufDev, (_file, request, arg) => {
  switch (request) {
    case UDMABUF_CREATE: {
      const data = expectStruct(arg, 'ioctl');
      u32(data, 'flags', 'ioctl'); // UDMABUF_FLAGS_CLOEXEC: no exec here; other bits ignored
      return create([item(data)]);
    }
    case UDMABUF_CREATE_LIST: {
      const data = expectStruct(arg, 'ioctl');
      u32(data, 'flags', 'ioctl');
      return create(readList(data));
    }
    default:
      return notTty(request);
  }
});

registerDevice('/dev/udmabuf', (flags) => allocFile(FileType.UdmabufDev, -1, flags, 'open'));
