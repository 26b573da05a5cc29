/**
 * DOC: ioctl dispatch
 *
 * `ioctl(fd, request, arg)` finds the file behind `fd` and hands the request to
 * the handler its driver registered. A handler returns the ioctl's non-negative
 * result (usually 0) or throws a DmaBufError with the kernel's errno. Requests a
 * driver does not know — and every request on a standard stream — are ENOTTY.
 * Handlers validate and decode everything before they change anything, so a
 * failed call leaves every object as it was.
 */
import { DmaBufError, fail } from '../errors.js';
import { fileType, type FileType } from '../file.js';
import { world } from '../shared/world.js';
import { fdFile } from './fd-table.js';

/** A driver's ioctl entry point: `file` is the file slot, `request` unsigned. */
export type IoctlHandler = (file: number, request: number, arg: unknown) => number;

const handlers: Array<IoctlHandler | undefined> = [];

export function registerIoctl(type: FileType, handler: IoctlHandler): void {
  handlers[type] = handler;
}

/** ioctl(2). @returns 0 or the request's result. @throws EBADF, ENOTTY, and each request's errors. */
export function ioctl(fd: number, request: number, arg?: unknown): number {
  const file = fdFile(fd, 'ioctl');
  const handler = handlers[fileType(world(), file)];
  if (typeof request !== 'number' || !Number.isInteger(request) || !handler) {
    throw fail('ENOTTY', 'ioctl', `inappropriate ioctl ${String(request)} for fd ${fd}`);
  }
  try {
    return handler(file, request >>> 0, arg);
  } catch (e) {
    throw e instanceof DmaBufError ? e.withSyscall('ioctl') : e;
  }
}

/** The error for a request this driver does not implement. */
export function notTty(request: number): never {
  throw fail('ENOTTY', 'ioctl', `unknown ioctl 0x${request.toString(16)}`);
}
