/**
 * DOC: /proc/self/fdinfo/<fd>
 *
 * The generic lines every file shows (`pos`, `flags` in octal with O_CLOEXEC
 * folded in as the kernel does, `mnt_id`, `ino`), then the driver's own lines
 * (show_fdinfo), for this thread's fd table — "self" is the calling thread.
 * `mnt_id` is the fixed id of this library's one pseudo filesystem.
 */
import { fail } from '../errors.js';
import { fileFlags, fileInode, fileType, type FileType } from '../file.js';
import { world } from '../shared/world.js';
import { fdFileOrNone } from './fd-table.js';
import { registerReadable } from './vfs.js';

const MNT_ID = 15;
type FdinfoOp = (file: number) => string;
const ops: Array<FdinfoOp | undefined> = [];

export function registerFdinfo(type: FileType, op: FdinfoOp): void {
  ops[type] = op;
}

registerReadable(/^\/proc\/self\/fdinfo\/\d+$/, (path) => {
  const fd = Number(path.slice('/proc/self/fdinfo/'.length));
  const file = fdFileOrNone(fd);
  if (file < 0) throw fail('ENOENT', 'open', `no such file: ${path}`);
  const w = world();
  const head = `pos:\t0\nflags:\t0${fileFlags(w, file).toString(8)}\nmnt_id:\t${MNT_ID}\nino:\t${fileInode(w, file)}\n`;
  return head + (ops[fileType(w, file)]?.(file) ?? '');
});
