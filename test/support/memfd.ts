/**
 * Helpers for the memfd and udmabuf tests: sealed memfds of a given size, the
 * udmabuf device, shared mappings, and the count of arena pages in use (the
 * page-leak measure next to liveObjects()).
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as U from 'dmabuf/uapi';
import { arenaStats } from 'dmabuf';
import { track } from './fds.js';

export const PAGE = U.PAGE_SIZE;
export const RW = U.PROT_READ | U.PROT_WRITE;

/** Arena pages in use by anything. */
export function pagesInUse(): number {
  const s = arenaStats();
  return s.grownPages - s.freePages;
}

/** Assert, after the calling file's last test, that every arena page it took was returned. */
export function installPageLeakCheck(): void {
  let baseline = 0;
  before(() => {
    baseline = pagesInUse();
  });
  after(() => {
    assert.equal(pagesInUse(), baseline, 'arena pages leaked');
  });
}

/** A tracked memfd of `size` bytes, sealing allowed, with `seals` added. */
export function memfd(size: number, seals = 0, name = 'test'): number {
  const fd = track(U.memfd_create(name, U.MFD_ALLOW_SEALING));
  if (size) U.ftruncate(fd, size);
  if (seals) U.fcntl(fd, U.F_ADD_SEALS, seals);
  return fd;
}

/** A memfd of `pages` pages, sealed against shrinking (what udmabuf wants), each page filled with its index + `tag`. */
export function udmabufMemfd(pages: number, tag = 0): number {
  const fd = memfd(pages * PAGE, U.F_SEAL_SHRINK);
  for (let p = 0; p < pages; p++) U.pwrite(fd, new Uint8Array(PAGE).fill(p + tag), p * PAGE);
  return fd;
}

/** A shared read-write mapping of `length` bytes of `fd` at `offset`. */
export function mapShared(fd: number, length: number, offset = 0): Uint8Array {
  return U.mmap(length, RW, U.MAP_SHARED, fd, offset);
}

/** The errno code `fn` throws (fails the test if it does not throw). */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  assert.fail('expected an error');
}
