/**
 * fd bookkeeping and small sync_file / sw_sync helpers for the `dmabuf/uapi` tests.
 *
 * Every fd a helper opens is tracked; `installFdCleanup()` registers an afterEach
 * in the calling test file that closes whatever a test left open (even when it
 * failed first), so one failure cannot cascade into the next test. `closeAll`
 * closes fds and stops tracking them.
 */
import { afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';

/** fds a test opened and has not closed yet. */
const openFds = new Set<number>();

/** Track `fd` (closed after the test unless closed before). */
export function track(fd: number): number {
  openFds.add(fd);
  return fd;
}

/** Close `fds` now and stop tracking them. */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) {
    U.close(fd);
    openFds.delete(fd);
  }
}

/** Close every tracked fd, ignoring those the test already closed. */
export function closeTracked(): void {
  for (const fd of openFds) {
    try {
      U.close(fd);
    } catch {
      // already closed by the test
    }
  }
  openFds.clear();
}

/** Register, in the calling test file, an afterEach that closes every fd a test left open. */
export function installFdCleanup(): void {
  afterEach(closeTracked);
}

/* ---- sw_sync ---- */

/** Open a sw_sync timeline (tracked). */
export function openTl(path = '/dev/sw_sync', flags?: number): number {
  return track(flags === undefined ? U.open(path) : U.open(path, flags));
}

/** SW_SYNC_IOC_CREATE_FENCE: the new sync_file fd (tracked). */
export function createFence(tl: number, value: number): number {
  const data = { value, name: '', fence: -1 };
  assert.equal(U.ioctl(tl, U.SW_SYNC_IOC_CREATE_FENCE, data), 0);
  assert.equal(typeof data.fence, 'number');
  return track(data.fence);
}

/** SW_SYNC_IOC_INC. */
export function inc(tl: number, n: number): void {
  assert.equal(U.ioctl(tl, U.SW_SYNC_IOC_INC, n), 0);
}

/** SW_SYNC_GET_DEADLINE of the point behind `fenceFd`. */
export function getDeadline(tl: number, fenceFd: number): bigint {
  const data: { deadline_ns: number | bigint; pad: number; fence_fd: number } = {
    deadline_ns: 0, pad: 0, fence_fd: fenceFd,
  };
  assert.equal(U.ioctl(tl, U.SW_SYNC_GET_DEADLINE, data), 0);
  assert.equal(typeof data.deadline_ns, 'bigint');
  return data.deadline_ns as bigint;
}

/* ---- sync_file ---- */

/** One entry of SYNC_IOC_FILE_INFO's sync_fence_info. */
export interface FenceInfo {
  obj_name: string;
  driver_name: string;
  status: number;
  flags: number;
  timestamp_ns: bigint;
}

/** SYNC_IOC_MERGE: the new sync_file fd (tracked). */
export function merge(fd: number, fd2: number, name = ''): number {
  const data = { name, fd2, fence: -1, flags: 0, pad: 0 };
  assert.equal(U.ioctl(fd, U.SYNC_IOC_MERGE, data), 0);
  assert.equal(typeof data.fence, 'number');
  return track(data.fence);
}

/** SYNC_IOC_FILE_INFO with num_fences 0: the whole fence's status, name and leaf count. */
export function summary(fd: number): { name: string; status: number; num_fences: number } {
  const info = { name: '', status: 99, flags: 0, num_fences: 0, pad: 0 };
  assert.equal(U.ioctl(fd, U.SYNC_IOC_FILE_INFO, info), 0);
  return { name: info.name, status: info.status, num_fences: info.num_fences };
}

/** The sync_file's status: 0 pending, 1 signalled, negative an error. */
export function status(fd: number): number {
  return summary(fd).status;
}

/** SYNC_IOC_FILE_INFO with room for every leaf: the aggregate status and the entries. */
export function details(fd: number): { status: number; name: string; fences: FenceInfo[] } {
  const n = summary(fd).num_fences;
  const arr: FenceInfo[] = [];
  const info = { name: '', status: 99, flags: 0, num_fences: n, pad: 0, sync_fence_info: arr };
  assert.equal(U.ioctl(fd, U.SYNC_IOC_FILE_INFO, info), 0);
  assert.equal(info.num_fences, n);
  assert.equal(arr.length, n);
  return { status: info.status, name: info.name, fences: arr };
}

/** SYNC_IOC_SET_DEADLINE. */
export function setDeadline(fd: number, ns: bigint): void {
  assert.equal(U.ioctl(fd, U.SYNC_IOC_SET_DEADLINE, { deadline_ns: ns, pad: 0 }), 0);
}

/** revents of a poll(…, 0) of `fd` for POLLIN. */
export function ready(fd: number): number {
  const fds = [{ fd, events: U.POLLIN, revents: -1 }];
  U.poll(fds, 0);
  return fds[0]!.revents;
}
