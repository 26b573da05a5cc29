/** Hang guards and event-loop turns for the tests: neither ever decides a result. */

/** The default hang guard (ms). */
export const HANG_GUARD_MS = 20_000;

/** `p`, or a rejection after `ms` if it has not settled by then: a hang guard, never a result. */
export function guard<T>(p: Promise<T>, what = 'the awaited promise', ms = HANG_GUARD_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang guard: ${what} did not settle in ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Let queued microtasks and immediates run (only gives a wrong callback its chance). */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Let the event loop turn `n` times (no timing involved). */
export async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

/** 'pending' if `p` has not settled after `n` event-loop turns, else its value. */
export async function settledValue<T>(p: Promise<T>, n = 5): Promise<T | 'pending'> {
  let out: T | 'pending' = 'pending';
  void p.then((v) => {
    out = v;
  });
  await turns(n);
  return out;
}
