// Repeating timers whose waits are spread. Nodes of one mesh often start together, and a view
// change makes them all send at once; with fixed intervals their periodic announcements then
// stay in step for good, and a 32-node mesh on one host took every announcement round as one
// burst (each of 31 messages goes to every peer) that held both cores for a second. Drawing
// each wait from interval ± 25 % makes the rounds drift apart within a few repeats.

/** `intervalMs` spread by ±25 % (`random` in [0, 1)). */
export function jitteredMs(intervalMs: number, random: number = Math.random()): number {
  return intervalMs * (0.75 + 0.5 * random);
}

/** Calls `fn` after each wait of jitteredMs(intervalMs) until stopped; like setInterval, a throwing `fn` does not end it. */
export function everyJittered(intervalMs: number, fn: () => void): { stop(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const next = (): void => {
    timer = setTimeout(() => {
      try {
        fn();
      } finally {
        if (!stopped) next();
      }
    }, jitteredMs(intervalMs));
  };
  next();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
