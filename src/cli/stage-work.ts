/**
 * DOC: what the pipeline's stages do to a frame
 *
 * Every way of running the pipeline — dmabuf buffers (demo-worker.ts), postMessage
 * copies (demo-copy-worker.ts), the hand-written SharedArrayBuffer ring of the
 * benchmarks — calls the same three functions, so they differ only in how frames
 * travel. Frames are arrays of 32-bit words (one word per RGBA pixel).
 *
 * Work modes:
 *
 * - `demo`: the camera fills a moving gradient and records the checksum of what
 *   the display must see; each gpu stage inverts RGB (keeping alpha) into its
 *   output; the display checksums every word.
 * - `write`: the camera writes every word of every frame (frame-dependent
 *   content); the gpu stages and the display touch only the header.
 * - `transport`: the camera writes only the header; nobody touches the body.
 *
 * The header (write and transport): word 0 is the frame number, word 1 the number
 * of gpu stages the frame went through — the camera writes 0, each gpu stage
 * copies word 0 and writes word 1 + 1 into its output. The display expects
 * `[f, gpus]`: a stale or skipped frame is a mismatch.
 */

export type WorkMode = 'demo' | 'write' | 'transport';
export const WORK_MODES: readonly WorkMode[] = ['demo', 'write', 'transport'];

/** Slots of the per-frame rings (checksums, submit times): more than the frames one pipeline can have in flight. */
export const RING = 4096;

/** What one stage does to frame `f`. `src` and `dst` may be the same array (a copy stage works in place). */
export interface StageWork {
  /** camera: write frame `f` into `dst`. */
  produce(dst: Uint32Array, f: number): void;
  /** gpu: read frame `f` from `src`, write this stage's result into `dst`. */
  process(src: Uint32Array, dst: Uint32Array, f: number): void;
  /** display: undefined if `src` holds what frame `f` must look like here, else what is wrong. */
  check(src: Uint32Array, f: number): string | undefined;
}

export interface WorkConfig {
  work: WorkMode;
  width: number;
  /** Number of gpu stages between camera and display. */
  gpus: number;
  /** RING u32 words: per frame slot, the checksum the display must see (demo mode). */
  sums: SharedArrayBuffer;
}

/** The work of `cfg.work`. @throws TypeError for an unknown mode. */
export function stageWork(cfg: WorkConfig): StageWork {
  switch (cfg.work) {
    case 'demo': return demoWork(cfg);
    case 'write': return headerWork(cfg.gpus, writeBody);
    case 'transport': return headerWork(cfg.gpus, () => {});
    default: throw new TypeError(`unknown work mode ${String(cfg.work)} (known: ${WORK_MODES.join(', ')})`);
  }
}

/* ---- demo: gradient, invert, checksum ---- */

/** FNV-1a over the frame's 32-bit words (every word: the whole frame is checked). */
export function checksum(words: Uint32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i]!, 0x01000193);
  return h >>> 0;
}

/** The word the camera writes at `i` of frame `f`: a moving gradient, alpha 0xff. */
function pixel(f: number, i: number, width: number): number {
  const x = i % width;
  const y = (i / width) | 0;
  return (0xff000000 | (((x + f) & 0xff) << 16) | (((y + 2 * f) & 0xff) << 8) | ((x ^ y ^ f) & 0xff)) >>> 0;
}

export const INVERT = 0x00ffffff;

/** Write frame `f` into `dst`; returns the checksum of what the display will see (each word XOR `key`). */
export function fillFrame(dst: Uint32Array, f: number, width: number, key: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < dst.length; i++) {
    const p = pixel(f, i, width);
    dst[i] = p;
    h = Math.imul(h ^ ((p ^ key) >>> 0), 0x01000193);
  }
  return h >>> 0;
}

function demoWork(cfg: WorkConfig): StageWork {
  const sums = new Uint32Array(cfg.sums);
  const key = cfg.gpus % 2 === 1 ? INVERT : 0; // an odd number of inversions reaches the display
  return {
    produce: (dst, f) => {
      sums[f % RING] = fillFrame(dst, f, cfg.width, key);
    },
    process: (src, dst) => {
      for (let i = 0; i < src.length; i++) dst[i] = src[i]! ^ INVERT;
    },
    check: (src, f) => {
      const got = checksum(src);
      const expected = sums[f % RING]!;
      return got === expected ? undefined : `checksum 0x${got.toString(16)}, expected 0x${expected.toString(16)}`;
    },
  };
}

/* ---- write and transport: a header the stages touch ---- */

/** Every word of frame `f`: frame-dependent content (the header is written after it). */
function writeBody(dst: Uint32Array, f: number): void {
  for (let i = 0; i < dst.length; i++) dst[i] = f ^ i;
}

function headerWork(gpus: number, body: (dst: Uint32Array, f: number) => void): StageWork {
  return {
    produce: (dst, f) => {
      body(dst, f);
      dst[0] = f;
      dst[1] = 0;
    },
    process: (src, dst) => {
      const hops = src[1]!;
      dst[0] = src[0]!;
      dst[1] = hops + 1;
    },
    check: (src, f) => (src[0] === f && src[1] === gpus
      ? undefined
      : `header [${src[0]}, ${src[1]}], expected [${f}, ${gpus}]`),
  };
}
