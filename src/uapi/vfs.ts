/**
 * DOC: paths
 *
 * The few paths the uapi knows, each registered by the driver that serves it:
 * device nodes for `open`, debugfs/sysfs/procfs files for `readFile`, and
 * directories for `readdir`. An unknown path is ENOENT, as on Linux.
 */
import { fail } from '../errors.js';

/** Opens a device node: returns a file slot that the caller's fd will own. */
export type Opener = (flags: number) => number;
export type Reader = () => string;
export type Lister = () => string[];

const devices = new Map<string, Opener>();
const readers: Array<[RegExp | string, (path: string) => string]> = [];
const dirs = new Map<string, Lister>();

export function registerDevice(path: string, open: Opener): void {
  devices.set(path, open);
}

/** Register a readable file: an exact path, or a pattern whose match is passed on. */
export function registerReadable(path: string | RegExp, read: (path: string) => string): void {
  readers.push([path, read]);
}

export function registerDir(path: string, list: Lister): void {
  dirs.set(path, list);
}

function checkPath(path: unknown, syscall: string): string {
  if (typeof path !== 'string') throw fail('EFAULT', syscall, 'path must be a string');
  return path;
}

/** The opener of device `path`. @throws EFAULT for a non-string, ENOENT if unknown. */
export function lookupDevice(path: unknown): Opener {
  const p = checkPath(path, 'open');
  const open = devices.get(p);
  if (!open) throw fail('ENOENT', 'open', `no such device: ${p}`);
  return open;
}

/** Contents of a debugfs/sysfs/procfs file. @throws ENOENT if unknown. */
export function readVirtualFile(path: unknown): string {
  const p = checkPath(path, 'read');
  for (const [pattern, read] of readers) {
    if (typeof pattern === 'string' ? pattern === p : pattern.test(p)) return read(p);
  }
  throw fail('ENOENT', 'open', `no such file: ${p}`);
}

/** Entries of a directory. @throws ENOENT if unknown. */
export function listDir(path: unknown): string[] {
  const p = checkPath(path, 'opendir');
  const list = dirs.get(p.replace(/\/+$/, ''));
  if (!list) throw fail('ENOENT', 'opendir', `no such directory: ${p}`);
  return list();
}
