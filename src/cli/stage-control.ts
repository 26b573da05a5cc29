/**
 * DOC: the control block of a pipeline — who may start which frame
 *
 * One Int32Array in a SharedArrayBuffer, shared by the main thread and every
 * stage: `stageCount` counters of frames *submitted* by each stage (camera 0,
 * gpu stages 1..n, display n + 1), then three words:
 *
 * - DONE: frames the display has finished;
 * - ERRORS: content mismatches the display found;
 * - BUDGET: frames the camera may start. The main thread raises it (`grant`) and
 *   waits for DONE to reach it (`whenDone`): a pipeline runs exactly the frames it
 *   was granted, batch after batch, and idles asleep in between.
 *
 * Stage `i` may start frame f once stage `i - 1` submitted f (the camera: once
 * the budget allows it) and stage `i + 1` submitted f - depth (its input slot of
 * f - depth is the output slot this frame reuses). "Submitted" means what the
 * stage implementation says: queued with its fences (dmabuf) or finished (the
 * ring of the benchmarks). Waits sleep in `Atomics.wait`; every advance notifies.
 * The display notifies DONE only when it reaches the budget, so the main thread
 * wakes once per batch, not once per frame.
 */

/** A view of one pipeline's control block. */
export class StageControl {
  readonly i32: Int32Array;
  readonly stageCount: number;
  /** Word index of DONE, ERRORS, BUDGET. */
  readonly done: number;
  readonly errors: number;
  readonly budget: number;

  /** A new control block for `stageCount` stages (all counters 0). */
  static create(stageCount: number): SharedArrayBuffer {
    return new SharedArrayBuffer(4 * (stageCount + 3));
  }

  /** @throws RangeError if `sab` is too small for `stageCount` stages. */
  constructor(sab: SharedArrayBuffer, stageCount: number) {
    if (!Number.isInteger(stageCount) || stageCount < 2 || sab.byteLength < 4 * (stageCount + 3)) {
      throw new RangeError(`a control block for ${stageCount} stages needs ${4 * (stageCount + 3)} bytes and at least 2 stages`);
    }
    this.i32 = new Int32Array(sab);
    this.stageCount = stageCount;
    this.done = stageCount;
    this.errors = stageCount + 1;
    this.budget = stageCount + 2;
  }

  /** Block until stage `index` may start frame `f` (pools of `depth` frames between stages). */
  waitTurn(index: number, f: number, depth: number): void {
    waitAtLeast(this.i32, index === 0 ? this.budget : index - 1, f + 1);
    if (index < this.stageCount - 1 && f >= depth) waitAtLeast(this.i32, index + 1, f - depth + 1);
  }

  /** Stage `index` has submitted one more frame. */
  submitted(index: number): void {
    Atomics.add(this.i32, index, 1);
    Atomics.notify(this.i32, index);
  }

  /** The display finished frame `f`; wakes the main thread if that used up the budget. */
  frameDone(f: number): void {
    Atomics.add(this.i32, this.done, 1);
    if (f + 1 >= Atomics.load(this.i32, this.budget)) Atomics.notify(this.i32, this.done);
  }

  /** Count a content mismatch. */
  mismatch(): void {
    Atomics.add(this.i32, this.errors, 1);
  }

  /** Frames finished so far. */
  get framesDone(): number {
    return Atomics.load(this.i32, this.done);
  }

  /** Frames the camera has submitted. */
  get framesStarted(): number {
    return Atomics.load(this.i32, 0);
  }

  get mismatches(): number {
    return Atomics.load(this.i32, this.errors);
  }

  /** The current budget (frames the camera may start in all). */
  get granted(): number {
    return Atomics.load(this.i32, this.budget);
  }

  /** Let the camera start `n` more frames. @returns the new budget. */
  grant(n: number): number {
    const to = Atomics.add(this.i32, this.budget, n) + n;
    Atomics.notify(this.i32, this.budget);
    return to;
  }

  /** Resolves once DONE reaches `target` (or `stopped()` turns true), without blocking this thread's event loop. */
  async whenDone(target: number, stopped: () => boolean = () => false): Promise<void> {
    while (!stopped()) {
      const v = Atomics.load(this.i32, this.done);
      if (v >= target) return;
      const r = Atomics.waitAsync(this.i32, this.done, v, 1000);
      if (r.async) await r.value;
    }
  }

  /** Resolves once the budget is above `current` (for event-driven stages). */
  async whenGranted(current: number): Promise<void> {
    for (;;) {
      if (Atomics.load(this.i32, this.budget) > current) return;
      const r = Atomics.waitAsync(this.i32, this.budget, current, 1000);
      if (r.async) await r.value;
    }
  }
}

/** Block until `i32[at] >= value` (sleeping in Atomics.wait, a second at a time). */
function waitAtLeast(i32: Int32Array, at: number, value: number): void {
  for (;;) {
    const v = Atomics.load(i32, at);
    if (v >= value) return;
    Atomics.wait(i32, at, v, 1000);
  }
}
