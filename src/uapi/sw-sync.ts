/**
 * DOC: sw_sync uapi (drivers/dma-buf/sw_sync.c)
 *
 * Opening `/dev/sw_sync` or `/sys/kernel/debug/sync/sw_sync` creates a timeline;
 * closing its last fd fails pending points with -ENOENT. Ioctls:
 * SW_SYNC_IOC_CREATE_FENCE (`{value, name, fence}`; `name` is ignored, as in the
 * kernel), SW_SYNC_IOC_INC (the increment as a number), SW_SYNC_GET_DEADLINE
 * (`{deadline_ns, pad, fence_fd}`), checks in the kernel's order (§5.4).
 * `/sys/kernel/debug/sync/info` lists every timeline of every thread.
 */
import { fail } from '../errors.js';
import { FileType } from '../file.js';
import {
  fenceUnref,
} from '../dma-fence.js';
import { swSyncCreatePointSlot, swSyncGetDeadline, swSyncIncFile, SwSyncTimeline, syncInfoText } from '../sw-sync.js';
import { SyncFile, syncFileCreateFromSlot } from '../sync-file.js';
import { SW_SYNC_GET_DEADLINE, SW_SYNC_IOC_CREATE_FENCE, SW_SYNC_IOC_INC } from './constants.js';
import { fdFileOrNone, installFd, reserveFds } from './fd-table.js';
import { notTty, registerIoctl } from './ioctl.js';
import { expectStruct, s32, scalarArg, u32, u64 } from './struct.js';
import { registerDevice, registerReadable } from './vfs.js';

function openTimeline(): number {
  const tl = SwSyncTimeline.create();
  return tl.file; // the new handle's hold becomes the fd's
}

registerDevice('/dev/sw_sync', openTimeline);
registerDevice('/sys/kernel/debug/sync/sw_sync', openTimeline);
registerReadable('/sys/kernel/debug/sync/info', syncInfoText);

/** SW_SYNC_IOC_CREATE_FENCE: a sync_file fd for the point at `value`. */
function createFence(file: number, arg: unknown): number {
  reserveFds(1, 'ioctl');
  const data = expectStruct(arg, 'ioctl');
  const value = u32(data, 'value', 'ioctl');
  const pt = swSyncCreatePointSlot(file, value);
  let sf: number;
  try {
    sf = syncFileCreateFromSlot(pt, 'ioctl'); // the file takes the point's reference
  } catch (e) {
    fenceUnref(pt);
    throw e;
  }
  data['fence'] = installFd(sf, 'ioctl');
  return 0;
}

/** SW_SYNC_IOC_INC: advance the counter. */
function inc(file: number, arg: unknown): number {
  swSyncIncFile(file, scalarArg(arg, 'u32', 'ioctl'));
  return 0;
}

/** SW_SYNC_GET_DEADLINE: the earliest deadline set on a sw_sync point's sync_file. */
function getDeadline(arg: unknown): number {
  const data = expectStruct(arg, 'ioctl');
  const deadline = u64(data, 'deadline_ns', 'ioctl');
  const pad = u32(data, 'pad', 'ioctl');
  const fenceFd = s32(data, 'fence_fd', 'ioctl');
  if (deadline || pad) throw fail('EINVAL', 'ioctl', 'sw_sync_get_deadline.deadline_ns and .pad must be zero');
  const file = fdFileOrNone(fenceFd);
  if (file < 0 || !SyncFile.isSyncFile(file)) throw fail('EINVAL', 'ioctl', `fence_fd ${fenceFd} is not a sync_file`);
  const sf = SyncFile.fromFile(file);
  const fence = sf.getFence();
  sf.close();
  try {
    const r = swSyncGetDeadline(fence);
    if (r === -22) throw fail('EINVAL', 'ioctl', 'the fence is not a sw_sync point');
    if (typeof r === 'number') throw fail('ENOENT', 'ioctl', 'no deadline was set on this fence');
    data['deadline_ns'] = r;
    return 0;
  } finally {
    fence.put();
  }
}

registerIoctl(FileType.SwSync, (file, request, arg) => {
  switch (request) {
    case SW_SYNC_IOC_CREATE_FENCE: return createFence(file, arg);
    case SW_SYNC_IOC_INC: return inc(file, arg);
    case SW_SYNC_GET_DEADLINE: return getDeadline(arg);
    default: return notTty(request);
  }
});
