/**
 * The main thread's side of a benchmark worker (bench/workers/*.ts): start the
 * worker, await its replies one by one, and let it exit.
 *
 * Replies are buffered, so none is lost while this thread is blocked in a
 * measurement; `next()` rejects once the worker failed or exited with nothing
 * left to read.
 */
import { Worker, type TransferListItem } from 'node:worker_threads';

/** How long a worker may take to exit by itself before it is terminated (ms). */
const EXIT_GRACE_MS = 5000;

export class Peer<Msg, Reply> {
  readonly worker: Worker;
  /** Settles when the worker has exited. */
  readonly gone: Promise<void>;
  readonly #what: string;
  #queue: Reply[] = [];
  #waiter: { resolve: (r: Reply) => void; reject: (e: unknown) => void } | undefined;
  #failure: unknown;
  #exited = false;

  /** Start the worker script at `script`; `what` names it in errors ('pingpong worker'). */
  constructor(script: URL, what: string) {
    this.#what = what;
    this.worker = new Worker(script);
    this.gone = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.on('message', (r: Reply) => {
      const w = this.#waiter;
      this.#waiter = undefined;
      if (w) w.resolve(r);
      else this.#queue.push(r);
    });
    this.worker.on('error', (e) => {
      this.#failure = e;
      this.#waiter?.reject(e);
      this.#waiter = undefined;
    });
    this.worker.on('exit', () => {
      this.#exited = true;
      this.#waiter?.reject(new Error(`${this.#what} exited`));
      this.#waiter = undefined;
    });
  }

  post(msg: Msg, transfer: readonly TransferListItem[] = []): void {
    this.worker.postMessage(msg, transfer);
  }

  /** The next reply (buffered or still to come). */
  next(): Promise<Reply> {
    const r = this.#queue.shift();
    if (r) return Promise.resolve(r);
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#exited) return Promise.reject(new Error(`${this.#what} exited`));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Wait for the worker to exit by itself; terminate it if it has not within 5 s. */
  async exited(): Promise<void> {
    if (this.#exited) return;
    const timer = setTimeout(() => void this.worker.terminate(), EXIT_GRACE_MS);
    await this.gone;
    clearTimeout(timer);
  }

  /** Post `msg` (the worker's exit request), then as `exited()`. */
  async exit(msg: Msg): Promise<void> {
    if (this.#exited) return;
    this.post(msg);
    await this.exited();
  }
}
