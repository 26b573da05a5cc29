/**
 * DOC: uapi constants
 *
 * Every Linux constant `dmabuf/uapi` accepts or returns, with Linux's exact name
 * and unsigned numeric value (always a non-negative JS number). ioctl request
 * numbers are computed by `_IOC` exactly as asm-generic/ioctl.h computes them, so
 * code written against the Linux headers ports line by line.
 *
 * Struct sizes are the `sizeof` the Linux headers give on 64-bit (LP64) targets;
 * they are private: Linux has no names for them.
 */

/* ---- asm-generic/ioctl.h ---------------------------------------------- */

export const _IOC_NRBITS = 8;
export const _IOC_TYPEBITS = 8;
export const _IOC_SIZEBITS = 14;
export const _IOC_DIRBITS = 2;

export const _IOC_NRMASK = (1 << _IOC_NRBITS) - 1;
export const _IOC_TYPEMASK = (1 << _IOC_TYPEBITS) - 1;
export const _IOC_SIZEMASK = (1 << _IOC_SIZEBITS) - 1;
export const _IOC_DIRMASK = (1 << _IOC_DIRBITS) - 1;

export const _IOC_NRSHIFT = 0;
export const _IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS;
export const _IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS;
export const _IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS;

export const _IOC_NONE = 0;
export const _IOC_WRITE = 1;
export const _IOC_READ = 2;

/** Numeric value of an ioctl `type`: a one-character string ('b') or a number. */
function iocType(type: string | number): number {
  if (typeof type === 'string') {
    if (type.length !== 1) throw new TypeError(`ioctl type must be one character, got ${JSON.stringify(type)}`);
    return type.charCodeAt(0);
  }
  return type;
}

/** Throw a RangeError unless `v` is an integer in 0..mask (Linux rejects these at compile time). */
function field(name: string, v: number, mask: number): number {
  if (!Number.isInteger(v) || v < 0 || v > mask) throw new RangeError(`_IOC ${name} ${v} out of range 0..${mask}`);
  return v;
}

/**
 * Encode an ioctl request number as Linux's `_IOC(dir, type, nr, size)`.
 * Returns the unsigned 32-bit value; throws TypeError/RangeError for a field that does not fit.
 */
export function _IOC(dir: number, type: string | number, nr: number, size: number): number {
  return (
    ((field('dir', dir, _IOC_DIRMASK) << _IOC_DIRSHIFT) |
      (field('type', iocType(type), _IOC_TYPEMASK) << _IOC_TYPESHIFT) |
      (field('nr', nr, _IOC_NRMASK) << _IOC_NRSHIFT) |
      (field('size', size, _IOC_SIZEMASK) << _IOC_SIZESHIFT)) >>>
    0
  );
}

/** `_IO(type, nr)`: an ioctl with no argument. */
export function _IO(type: string | number, nr: number): number {
  return _IOC(_IOC_NONE, type, nr, 0);
}

/** `_IOR(type, nr, size)`: the kernel writes `size` bytes back to user space. */
export function _IOR(type: string | number, nr: number, size: number): number {
  return _IOC(_IOC_READ, type, nr, size);
}

/** `_IOW(type, nr, size)`: the kernel reads `size` bytes from user space. */
export function _IOW(type: string | number, nr: number, size: number): number {
  return _IOC(_IOC_WRITE, type, nr, size);
}

/** `_IOWR(type, nr, size)`: both directions. */
export function _IOWR(type: string | number, nr: number, size: number): number {
  return _IOC(_IOC_READ | _IOC_WRITE, type, nr, size);
}

/** Direction bits (`_IOC_NONE`/`_IOC_READ`/`_IOC_WRITE`) of a request number. */
export function _IOC_DIR(request: number): number {
  return (request >>> _IOC_DIRSHIFT) & _IOC_DIRMASK;
}

/** Type byte of a request number (e.g. 0x62 for 'b'). */
export function _IOC_TYPE(request: number): number {
  return (request >>> _IOC_TYPESHIFT) & _IOC_TYPEMASK;
}

/** Command number within the type. */
export function _IOC_NR(request: number): number {
  return (request >>> _IOC_NRSHIFT) & _IOC_NRMASK;
}

/** Argument size in bytes encoded in a request number. */
export function _IOC_SIZE(request: number): number {
  return (request >>> _IOC_SIZESHIFT) & _IOC_SIZEMASK;
}

/* ---- asm-generic/fcntl.h, linux/fcntl.h -------------------------------- */

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const FD_CLOEXEC = 1;

export const F_LINUX_SPECIFIC_BASE = 1024;
export const F_ADD_SEALS = F_LINUX_SPECIFIC_BASE + 9;
export const F_GET_SEALS = F_LINUX_SPECIFIC_BASE + 10;

export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;
export const F_SEAL_WRITE = 0x0008;
export const F_SEAL_FUTURE_WRITE = 0x0010;

/* ---- linux/memfd.h ----------------------------------------------------- */

export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;

/* ---- asm-generic/mman-common.h, linux/mman.h --------------------------- */

export const PROT_NONE = 0x0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const PROT_EXEC = 0x4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;

/* ---- asm-generic/poll.h ------------------------------------------------ */

export const POLLIN = 0x0001;
export const POLLPRI = 0x0002;
export const POLLOUT = 0x0004;
export const POLLERR = 0x0008;
export const POLLHUP = 0x0010;
export const POLLNVAL = 0x0020;

/* ---- linux/fs.h (whence), asm-generic/page.h --------------------------- */

export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

export const PAGE_SIZE = 4096;

/* ---- linux/dma-buf.h --------------------------------------------------- */

export const DMA_BUF_BASE = 'b';

export const DMA_BUF_SYNC_READ = 1 << 0;
export const DMA_BUF_SYNC_WRITE = 2 << 0;
export const DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
export const DMA_BUF_SYNC_START = 0 << 2;
export const DMA_BUF_SYNC_END = 1 << 2;
export const DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END;

export const DMA_BUF_NAME_LEN = 32;

/** sizeof(struct dma_buf_sync): u64 flags. */
const SIZEOF_DMA_BUF_SYNC = 8;
/** sizeof(struct dma_buf_export_sync_file) and dma_buf_import_sync_file: u32 flags; s32 fd. */
const SIZEOF_DMA_BUF_SYNC_FILE = 8;
/** sizeof(const char *) on LP64. */
const SIZEOF_POINTER = 8;

export const DMA_BUF_IOCTL_SYNC = _IOW(DMA_BUF_BASE, 0, SIZEOF_DMA_BUF_SYNC);
/* 32/64-bit compatibility: Linux defines SET_NAME with a pointer size and both fixed sizes. */
export const DMA_BUF_SET_NAME = _IOW(DMA_BUF_BASE, 1, SIZEOF_POINTER);
export const DMA_BUF_SET_NAME_A = _IOW(DMA_BUF_BASE, 1, 4);
export const DMA_BUF_SET_NAME_B = _IOW(DMA_BUF_BASE, 1, 8);
export const DMA_BUF_IOCTL_EXPORT_SYNC_FILE = _IOWR(DMA_BUF_BASE, 2, SIZEOF_DMA_BUF_SYNC_FILE);
export const DMA_BUF_IOCTL_IMPORT_SYNC_FILE = _IOW(DMA_BUF_BASE, 3, SIZEOF_DMA_BUF_SYNC_FILE);

/* ---- linux/dma-heap.h -------------------------------------------------- */

export const DMA_HEAP_IOC_MAGIC = 'H';

export const DMA_HEAP_VALID_FD_FLAGS = (O_CLOEXEC | O_ACCMODE) >>> 0;
export const DMA_HEAP_VALID_HEAP_FLAGS = 0;

/** sizeof(struct dma_heap_allocation_data): u64 len; u32 fd; u32 fd_flags; u64 heap_flags. */
const SIZEOF_DMA_HEAP_ALLOCATION_DATA = 24;

export const DMA_HEAP_IOCTL_ALLOC = _IOWR(DMA_HEAP_IOC_MAGIC, 0x0, SIZEOF_DMA_HEAP_ALLOCATION_DATA);

/* ---- linux/udmabuf.h --------------------------------------------------- */

export const UDMABUF_FLAGS_CLOEXEC = 0x01;

/** sizeof(struct udmabuf_create): u32 memfd; u32 flags; u64 offset; u64 size. */
const SIZEOF_UDMABUF_CREATE = 24;
/** sizeof(struct udmabuf_create_list) header: u32 flags; u32 count; (flexible list[]). */
const SIZEOF_UDMABUF_CREATE_LIST = 8;

export const UDMABUF_CREATE = _IOW('u', 0x42, SIZEOF_UDMABUF_CREATE);
export const UDMABUF_CREATE_LIST = _IOW('u', 0x43, SIZEOF_UDMABUF_CREATE_LIST);

/* ---- linux/sync_file.h ------------------------------------------------- */

export const SYNC_IOC_MAGIC = '>';

/** sizeof(struct sync_merge_data): char name[32]; s32 fd2; s32 fence; u32 flags; u32 pad. */
const SIZEOF_SYNC_MERGE_DATA = 48;
/** sizeof(struct sync_file_info): char name[32]; s32 status; u32 flags, num_fences, pad; u64 sync_fence_info. */
const SIZEOF_SYNC_FILE_INFO = 56;
/** sizeof(struct sync_set_deadline): u64 deadline_ns; u64 pad. */
const SIZEOF_SYNC_SET_DEADLINE = 16;

export const SYNC_IOC_MERGE = _IOWR(SYNC_IOC_MAGIC, 3, SIZEOF_SYNC_MERGE_DATA);
export const SYNC_IOC_FILE_INFO = _IOWR(SYNC_IOC_MAGIC, 4, SIZEOF_SYNC_FILE_INFO);
export const SYNC_IOC_SET_DEADLINE = _IOW(SYNC_IOC_MAGIC, 5, SIZEOF_SYNC_SET_DEADLINE);

/* ---- drivers/dma-buf/sw_sync.c (debugfs sw_sync interface) ------------- */

export const SW_SYNC_IOC_MAGIC = 'W';

/** sizeof(struct sw_sync_create_fence_data): u32 value; char name[32]; s32 fence. */
const SIZEOF_SW_SYNC_CREATE_FENCE_DATA = 40;
/** sizeof(struct sw_sync_get_deadline): u64 deadline_ns; u32 pad; s32 fence_fd. */
const SIZEOF_SW_SYNC_GET_DEADLINE = 16;

export const SW_SYNC_IOC_CREATE_FENCE = _IOWR(SW_SYNC_IOC_MAGIC, 0, SIZEOF_SW_SYNC_CREATE_FENCE_DATA);
export const SW_SYNC_IOC_INC = _IOW(SW_SYNC_IOC_MAGIC, 1, 4);
export const SW_SYNC_GET_DEADLINE = _IOWR(SW_SYNC_IOC_MAGIC, 2, SIZEOF_SW_SYNC_GET_DEADLINE);

/* ---- drm/drm.h, drm/drm_mode.h ----------------------------------------- */

export const DRM_IOCTL_BASE = 'd';
export const DRM_COMMAND_BASE = 0x40;

export const DRM_CLOEXEC = O_CLOEXEC;
export const DRM_RDWR = O_RDWR;

/** sizeof(struct drm_gem_close): u32 handle; u32 pad. */
const SIZEOF_DRM_GEM_CLOSE = 8;
/** sizeof(struct drm_prime_handle): u32 handle; u32 flags; s32 fd. */
const SIZEOF_DRM_PRIME_HANDLE = 12;
/** sizeof(struct drm_mode_create_dumb): u32 height, width, bpp, flags, handle, pitch; u64 size. */
const SIZEOF_DRM_MODE_CREATE_DUMB = 32;
/** sizeof(struct drm_mode_map_dumb): u32 handle; u32 pad; u64 offset. */
const SIZEOF_DRM_MODE_MAP_DUMB = 16;

export const DRM_IOCTL_GEM_CLOSE = _IOW(DRM_IOCTL_BASE, 0x09, SIZEOF_DRM_GEM_CLOSE);
export const DRM_IOCTL_PRIME_HANDLE_TO_FD = _IOWR(DRM_IOCTL_BASE, 0x2d, SIZEOF_DRM_PRIME_HANDLE);
export const DRM_IOCTL_PRIME_FD_TO_HANDLE = _IOWR(DRM_IOCTL_BASE, 0x2e, SIZEOF_DRM_PRIME_HANDLE);
export const DRM_IOCTL_MODE_CREATE_DUMB = _IOWR(DRM_IOCTL_BASE, 0xb2, SIZEOF_DRM_MODE_CREATE_DUMB);
export const DRM_IOCTL_MODE_MAP_DUMB = _IOWR(DRM_IOCTL_BASE, 0xb3, SIZEOF_DRM_MODE_MAP_DUMB);

/* ---- drm/vgem_drm.h ---------------------------------------------------- */

export const DRM_VGEM_FENCE_ATTACH = 0x1;
export const DRM_VGEM_FENCE_SIGNAL = 0x2;

export const VGEM_FENCE_WRITE = 0x1;

/** sizeof(struct drm_vgem_fence_attach): u32 handle; u32 flags; u32 out_fence; u32 pad. */
const SIZEOF_DRM_VGEM_FENCE_ATTACH = 16;
/** sizeof(struct drm_vgem_fence_signal): u32 fence; u32 flags. */
const SIZEOF_DRM_VGEM_FENCE_SIGNAL = 8;

export const DRM_IOCTL_VGEM_FENCE_ATTACH = _IOWR(
  DRM_IOCTL_BASE,
  DRM_COMMAND_BASE + DRM_VGEM_FENCE_ATTACH,
  SIZEOF_DRM_VGEM_FENCE_ATTACH,
);
export const DRM_IOCTL_VGEM_FENCE_SIGNAL = _IOW(
  DRM_IOCTL_BASE,
  DRM_COMMAND_BASE + DRM_VGEM_FENCE_SIGNAL,
  SIZEOF_DRM_VGEM_FENCE_SIGNAL,
);
