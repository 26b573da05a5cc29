/**
 * DOC: poll(2)
 *
 * `poll(fds, timeoutMs)` sets `revents` on each `{fd, events, revents}` and
 * returns how many are ready; timeout 0 checks, a negative one waits forever. A
 * closed or never-opened fd gets POLLNVAL and counts as ready; a negative fd is
 * skipped. A sync_file is ready (POLLIN) once its fence has signalled, with or
 * without error; its first poll enables signalling. Files without a poll op
 * (sw_sync timelines) report DEFAULT_POLLMASK, as the kernel does.
 *
 * `poll` blocks the calling thread (Atomics.wait); `pollAsync` gives the same
 * result without blocking the event loop, and keeps the loop alive while pending.
 * Waiting on a single sync_file of a leaf fence sleeps on that fence's own word;
 * anything else re-checks on every signal in the world (shared/wait.ts).
 */
import { fail } from '../errors.js';
import {
  fenceFromSlot, fenceSlotWaitTimeout,
} from '../dma-fence.js';
import {
  slotIsLeaf,
} from '../dma-fence-slot.js';
import { filePriv, FileType, fileType } from '../file.js';
import { syncFilePoll } from '../sync-file.js';
import { multiWait, multiWaitAsync } from '../shared/wait.js';
import { world } from '../shared/world.js';
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT } from './constants.js';
import { fdFileOrNone, NR_OPEN } from './fd-table.js';
import { expectStruct, s32, u32 } from './struct.js';

/** POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM: files without a poll op. */
const DEFAULT_POLLMASK = 0x145;

export interface PollFd {
  fd: number;
  events: number;
  revents?: number;
}

type PollOp = (file: number) => number;
const pollOps: Array<PollOp | undefined> = [];

/** Register the poll op of a file type: returns its ready mask. */
export function registerPoll(type: FileType, op: PollOp): void {
  pollOps[type] = op;
}

registerPoll(FileType.SyncFile, syncFilePoll);

interface Entry {
  fd: number;
  events: number;
  revents: number;
}

function decode(fds: unknown): Entry[] {
  if (!Array.isArray(fds)) throw fail('EFAULT', 'poll', 'fds must be an array of {fd, events}');
  if (fds.length > NR_OPEN) throw fail('EINVAL', 'poll', `more than ${NR_OPEN} fds`);
  return fds.map((raw) => {
    const s = expectStruct(raw, 'poll');
    return { fd: s32(s, 'fd', 'poll'), events: u32(s, 'events', 'poll') & 0xffff, revents: 0 };
  });
}

function checkTimeout(timeoutMs: unknown): number {
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs)) throw fail('EINVAL', 'poll', 'timeout must be a number of ms');
  return timeoutMs < 0 ? Infinity : timeoutMs;
}

function maskOf(fd: number): number {
  if (fd <= 2) return fd === 0 ? 0 : POLLOUT; // standard streams: not ours; stdout/stderr writable
  const file = fdFileOrNone(fd);
  if (file < 0) return POLLNVAL;
  const op = pollOps[fileType(world(), file)];
  return op ? op(file) : DEFAULT_POLLMASK;
}

/** One pass over the entries: sets each revents, returns the number ready. */
function scan(entries: Entry[]): number {
  let n = 0;
  for (const e of entries) {
    e.revents = e.fd < 0 ? 0 : maskOf(e.fd) & (e.events | POLLERR | POLLHUP | POLLNVAL);
    if (e.revents) n++;
  }
  return n;
}

/** The leaf fence slot to sleep on when polling exactly one sync_file for POLLIN, else -1. */
function singleLeaf(entries: Entry[]): number {
  if (entries.length !== 1 || !(entries[0]!.events & POLLIN)) return -1;
  const w = world();
  const file = fdFileOrNone(entries[0]!.fd);
  if (file < 0 || fileType(w, file) !== FileType.SyncFile) return -1;
  const fence = filePriv(w, file);
  return slotIsLeaf(w, fence) ? fence : -1;
}

function writeBack(fds: unknown[], entries: Entry[]): void {
  entries.forEach((e, i) => {
    (fds[i] as PollFd).revents = e.revents;
  });
}

interface Started {
  entries: Entry[];
  timeout: number;
  /** Ready count of the first pass. */
  n: number;
}

/** Decode, validate and make the first pass: what both forms of poll start with. */
function begin(fds: unknown, timeoutMs: unknown): Started {
  const entries = decode(fds);
  const timeout = checkTimeout(timeoutMs);
  return { entries, timeout, n: scan(entries) };
}

/** poll(2), blocking the calling thread. @returns the number of ready entries. @throws EFAULT, EINVAL. */
export function poll(fds: PollFd[], timeoutMs: number): number {
  const { entries, timeout, n: first } = begin(fds, timeoutMs);
  let n = first;
  if (n === 0 && timeout > 0) {
    const leaf = singleLeaf(entries);
    if (leaf >= 0) {
      fenceSlotWaitTimeout(world(), leaf, timeout); // this thread's fd keeps the fence alive
      n = scan(entries);
    } else {
      multiWait(world(), () => (n = scan(entries)) > 0, timeout);
    }
  }
  writeBack(fds, entries);
  return n;
}

/** poll(2) as a promise: the same result without blocking the event loop. */
export async function pollAsync(fds: PollFd[], timeoutMs: number): Promise<number> {
  const { entries, timeout, n: first } = begin(fds, timeoutMs);
  let n = first;
  if (n === 0 && timeout > 0) {
    const leaf = singleLeaf(entries);
    if (leaf >= 0) {
      // Across the await the fd may be closed: hold the fence through a view.
      const f = fenceFromSlot(leaf);
      try {
        await f.waitTimeoutAsync(timeout);
      } finally {
        f.put();
      }
      n = scan(entries);
    } else {
      await multiWaitAsync(world(), () => (n = scan(entries)) > 0, timeout);
    }
  }
  writeBack(fds, entries);
  return n;
}
