/**
 * The worker of the vgem thread tests: it has its own DRM file, imports the
 * buffer the test sends it (PRIME fd over sendFds), attaches vgem fences to it,
 * writes its bytes and signals — using only the uapi. A request may carry a
 * `gate` (test/support/worker-rpc.ts) so the test can block in DMA_BUF_IOCTL_SYNC
 * first and be released by this worker.
 */
import * as U from 'dmabuf/uapi';
import { passGate, serve, type Gate } from '../support/worker-rpc.js';

export type Command =
  | { op: 'import'; packet: U.FdPacket }
  | { op: 'attach'; write: boolean }
  | { op: 'fillAndSignal'; fence: number; value: number }
  | { op: 'closeCard' }
  | { op: 'closeBuffer' };

export type Request = Command & Gate & { req: number };

let card = -1;
let buf = -1;
let handle = -1;

function run(m: Request): unknown {
  passGate(m);
  switch (m.op) {
    case 'import': {
      [buf] = U.receiveFds(m.packet);
      card = U.open('/dev/dri/card0');
      const p = { fd: buf!, flags: 0, handle: -1 };
      U.ioctl(card, U.DRM_IOCTL_PRIME_FD_TO_HANDLE, p);
      handle = p.handle;
      return handle;
    }
    case 'attach': {
      const a = { handle, flags: m.write ? U.VGEM_FENCE_WRITE : 0, out_fence: -1, pad: 0 };
      U.ioctl(card, U.DRM_IOCTL_VGEM_FENCE_ATTACH, a);
      return a.out_fence;
    }
    case 'fillAndSignal': {
      const view = U.mmap(U.PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, buf, 0);
      view.fill(m.value);
      U.munmap(view);
      return U.ioctl(card, U.DRM_IOCTL_VGEM_FENCE_SIGNAL, { fence: m.fence, flags: 0 });
    }
    case 'closeCard':
      U.close(card);
      card = -1;
      return undefined;
    case 'closeBuffer':
      U.close(buf);
      buf = -1;
      return undefined;
  }
}

serve<Request>(run);
