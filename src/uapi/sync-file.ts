/**
 * DOC: sync_file ioctls (include/uapi/linux/sync_file.h)
 *
 * SYNC_IOC_MERGE, SYNC_IOC_FILE_INFO and SYNC_IOC_SET_DEADLINE with the checks
 * of kernel-contract §5.2, in the kernel's order. Struct arguments are plain
 * objects with the C field names; out-fields are written into them.
 */
import { fail } from '../errors.js';
import { SyncFile } from '../sync-file.js';
import { FileType } from '../file.js';
import { SYNC_IOC_FILE_INFO, SYNC_IOC_MERGE, SYNC_IOC_SET_DEADLINE } from './constants.js';
import { fdFileOrNone, installFd, reserveFds } from './fd-table.js';
import { notTty, registerIoctl } from './ioctl.js';
import { cstr, expectStruct, s32, u32, u64 } from './struct.js';

const NAME_BYTES = 32;

function withFile<T>(file: number, fn: (sf: SyncFile) => T): T {
  const sf = SyncFile.fromFile(file);
  try {
    return fn(sf);
  } finally {
    sf.close();
  }
}

/** SYNC_IOC_MERGE: a new sync_file fd for the merge of this file and `fd2`. */
function merge(file: number, arg: unknown): number {
  reserveFds(1, 'ioctl');
  const data = expectStruct(arg, 'ioctl');
  const flags = u32(data, 'flags', 'ioctl');
  const pad = u32(data, 'pad', 'ioctl');
  const fd2 = s32(data, 'fd2', 'ioctl');
  const name = cstr(data, 'name', NAME_BYTES, 'ioctl');
  if (flags || pad) throw fail('EINVAL', 'ioctl', 'sync_merge_data.flags and .pad must be zero');
  const file2 = fdFileOrNone(fd2);
  if (file2 < 0 || !SyncFile.isSyncFile(file2)) throw fail('ENOENT', 'ioctl', `fd2 ${fd2} is not a sync_file`);
  const merged = withFile(file, (a) => withFile(file2, (b) => SyncFile.merge(name, a, b)));
  data['fence'] = installFd(merged.file, 'ioctl'); // the handle's hold becomes the fd's
  return 0;
}

/** SYNC_IOC_FILE_INFO: status, name and (if asked) one entry per leaf fence. */
function fileInfo(file: number, arg: unknown): number {
  const data = expectStruct(arg, 'ioctl');
  const flags = u32(data, 'flags', 'ioctl');
  const pad = u32(data, 'pad', 'ioctl');
  const asked = u32(data, 'num_fences', 'ioctl');
  if (flags || pad) throw fail('EINVAL', 'ioctl', 'sync_file_info.flags and .pad must be zero');
  return withFile(file, (sf) => {
    const count = sf.numFences();
    if (asked === 0) {
      data['status'] = sf.status();
      data['name'] = sf.getName();
      data['num_fences'] = count;
      return 0;
    }
    if (asked < count) throw fail('EINVAL', 'ioctl', `num_fences ${asked} is less than the ${count} fences`);
    const out = data['sync_fence_info'];
    if (!Array.isArray(out)) throw fail('EFAULT', 'ioctl', 'sync_file_info.sync_fence_info must be an array');
    const infos = sf.fenceInfo();
    let status = 1;
    infos.forEach((info, i) => {
      out[i] = { ...info };
      status = status <= 0 ? status : info.status;
    });
    data['status'] = status;
    data['name'] = sf.getName();
    data['num_fences'] = infos.length;
    return 0;
  });
}

/** SYNC_IOC_SET_DEADLINE: forward a deadline hint to the fence. */
function setDeadline(file: number, arg: unknown): number {
  const data = expectStruct(arg, 'ioctl');
  const deadline = u64(data, 'deadline_ns', 'ioctl');
  const pad = u64(data, 'pad', 'ioctl');
  if (pad) throw fail('EINVAL', 'ioctl', 'sync_set_deadline.pad must be zero');
  withFile(file, (sf) => {
    const f = sf.getFence();
    try {
      f.setDeadline(BigInt.asIntN(64, deadline));
    } finally {
      f.put();
    }
  });
  return 0;
}

registerIoctl(FileType.SyncFile, (file, request, arg) => {
  switch (request) {
    case SYNC_IOC_MERGE: return merge(file, arg);
    case SYNC_IOC_FILE_INFO: return fileInfo(file, arg);
    case SYNC_IOC_SET_DEADLINE: return setDeadline(file, arg);
    default: return notTty(request);
  }
});

