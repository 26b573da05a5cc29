/**
 * Request/reply messaging with a test worker thread, both sides of it.
 *
 * The test thread's `RpcClient` posts each command as `{ ...cmd, req }`; the
 * worker answers it with an `RpcReply` carrying the same `req`
 * (`{ kind: 'reply', req, ok: true, value }` or `{ kind: 'reply', req, ok: false,
 * code, message }`), and may post events (`{ kind: 'event', ... }`) on its own at
 * any time. On the worker's side `serve(handler)` does the answering.
 *
 * Gates: a command may carry a `gate` (a SharedArrayBuffer whose Int32 word 0 the
 * worker waits on until it is non-zero before acting) and a `delayMs` (sleep that
 * long before acting), so the test can block its own thread first and be woken
 * by the worker without any timing deciding the result.
 */
import { parentPort, Worker } from 'node:worker_threads';
import { guard, HANG_GUARD_MS } from './async.js';

export type RpcReply =
  | { kind: 'reply'; req: number; ok: true; value: unknown }
  | { kind: 'reply'; req: number; ok: false; code: string | undefined; message: string };

/** What a worker posts on its own (anything that is not a reply). */
export interface RpcEvent {
  kind: 'event';
}

export interface Gate {
  /** Block until Int32 word 0 of `gate` is non-zero before acting. */
  gate?: SharedArrayBuffer;
  /** Then sleep this long (ms) before acting. */
  delayMs?: number;
}

/* ---- the test's side ---- */

export interface RpcClientOptions {
  /** Hang guard (ms) on every call's reply; none when absent. */
  callGuardMs?: number;
  /** Hang guard (ms) of `event()` (default 20 s). */
  eventGuardMs?: number;
  /** Hang guard (ms) on the exit that `stop()` awaits; none when absent. */
  stopGuardMs?: number;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * A worker driven by commands (`Cmd`, each with an `op`), answering with replies
 * and posting events (`Ev`). Calls still pending fail when the worker errs or exits.
 */
export class RpcClient<Cmd extends { op: string }, Ev extends RpcEvent = never> {
  readonly worker: Worker;
  readonly exited: Promise<number>;
  #req = 0;
  #pending = new Map<number, Pending>();
  #events: Ev[] = [];
  #waiters: Array<{ pred: (e: Ev) => boolean; resolve: (e: Ev) => void }> = [];
  #gone = false;
  readonly #opts: RpcClientOptions;

  /** Start the worker script at `script` (a URL resolved by the test file). */
  constructor(script: URL, opts: RpcClientOptions = {}) {
    this.#opts = opts;
    this.worker = new Worker(script);
    this.exited = new Promise((resolve) => this.worker.once('exit', resolve));
    this.worker.on('message', (m: RpcReply | Ev) => {
      if (m.kind === 'reply') {
        const p = this.#pending.get(m.req);
        this.#pending.delete(m.req);
        if (m.ok) p?.resolve(m.value);
        else p?.reject(Object.assign(new Error(m.message), { code: m.code }));
        return;
      }
      const i = this.#waiters.findIndex((w) => w.pred(m));
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m);
      else this.#events.push(m);
    });
    const failAll = (e: unknown): void => {
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    };
    this.worker.on('error', failAll);
    this.worker.once('exit', (code) => {
      this.#gone = true;
      failAll(Object.assign(new Error(`worker exited (${code})`), { code: 'EXITED' }));
    });
  }

  /** Post a command now; `reply` settles with the worker's reply (rejects with its error code). */
  start<T = unknown>(cmd: Cmd): { req: number; reply: Promise<T> } {
    const req = ++this.#req;
    const reply = new Promise<T>((resolve, reject) => {
      this.#pending.set(req, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...cmd, req });
    });
    const ms = this.#opts.callGuardMs;
    return { req, reply: ms === undefined ? reply : guard(reply, `worker op ${cmd.op}`, ms) };
  }

  /** Post a command now; the promise settles with the worker's reply. */
  call<T = unknown>(cmd: Cmd): Promise<T> {
    return this.start<T>(cmd).reply;
  }

  /** The next event matching `pred` (already received or still to come). */
  event(pred: (e: Ev) => boolean = () => true, ms = this.#opts.eventGuardMs ?? HANG_GUARD_MS): Promise<Ev> {
    const i = this.#events.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const waiter = {
        pred,
        resolve: (e: Ev) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`hang guard: the worker never posted the awaited event in ${ms} ms`));
      }, ms);
      this.#waiters.push(waiter);
    });
  }

  /** Events received and not yet taken. */
  get unclaimedEvents(): readonly Ev[] {
    return this.#events;
  }

  /** Normal exit: the worker lets go of what it holds and exits; resolves once it has. */
  async stop(): Promise<void> {
    if (!this.#gone) this.worker.postMessage({ op: 'exit', req: ++this.#req });
    const ms = this.#opts.stopGuardMs;
    await (ms === undefined ? this.exited : guard(this.exited, 'worker exit', ms));
  }

  /** Terminate the worker at once; resolves once it has exited (its holds are then reaped). */
  async terminate(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }
}

/** A gate word a worker blocks on (`Gate.gate`) until this thread opens it. */
export function gate(): { sab: SharedArrayBuffer; open(): void } {
  const sab = new SharedArrayBuffer(4);
  return { sab, open: () => openGate(sab) };
}

/** Open the gate word in `sab`: the worker waiting on it goes on. */
export function openGate(sab: SharedArrayBuffer): void {
  const word = new Int32Array(sab);
  Atomics.store(word, 0, 1);
  Atomics.notify(word, 0);
}

/* ---- the worker's side ---- */

/**
 * Answer every request `{ req, ... }` posted to this worker with an `RpcReply`:
 * the handler's value (awaited when it returns a promise) or its error. The
 * handler posts events with `emit`.
 */
export function serve<Req extends { req: number }, Ev extends RpcEvent = never>(
  handler: (m: Req, emit: (e: Ev) => void) => unknown,
): void {
  const port = parentPort;
  if (!port) throw new Error('serve() must run in a worker thread');
  const emit = (e: Ev): void => port.postMessage(e);
  const ok = (req: number, value: unknown): void => {
    port.postMessage({ kind: 'reply', req, ok: true, value } satisfies RpcReply);
  };
  const fail = (req: number, e: unknown): void => {
    const err = e as { code?: unknown; message?: unknown };
    port.postMessage({
      kind: 'reply', req, ok: false, code: typeof err.code === 'string' ? err.code : undefined,
      message: String(err.message ?? e),
    } satisfies RpcReply);
  };
  port.on('message', (m: Req) => {
    let value: unknown;
    try {
      value = handler(m, emit);
    } catch (e) {
      fail(m.req, e);
      return;
    }
    if (value instanceof Promise) value.then((v: unknown) => ok(m.req, v), (e: unknown) => fail(m.req, e));
    else ok(m.req, value);
  });
}

/** Sleep this thread for `ms`. */
export function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Wait for the request's gate to open (if it has one), then sleep its `delayMs` (if any). */
export function passGate(g: Gate): void {
  if (g.gate) {
    const word = new Int32Array(g.gate);
    const deadline = Date.now() + 30_000; // hang guard only
    while (Atomics.load(word, 0) === 0 && Date.now() < deadline) Atomics.wait(word, 0, 0, 1000);
  }
  if (g.delayMs) sleep(g.delayMs);
}
