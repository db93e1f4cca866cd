// Environment for node processes that share one host (the local cluster launcher, the
// benchmarks and the long tests). Each Bun process runs a mimalloc scavenger thread that
// returns freed pages to the system; in a 32-node mesh on 2 cores it was 4.0 ms of CPU a
// second per node (0.13 cores in all) against 25 ms for the node's main thread.
// MIMALLOC_PURGE_DELAY=-1 stops that thread: freed memory is kept for reuse instead, and an
// idle node's resident memory was 151 MiB instead of 137 MiB (16 nodes). A node alone on its
// host pays 0.4 % of a core for the thread and keeps it. An operator's own setting wins.

/** Variables added to a co-located node's environment unless `env` already sets them. */
export const COLOCATED_ENV: Readonly<Record<string, string>> = { MIMALLOC_PURGE_DELAY: '-1' };

/** `env` with the co-located defaults filled in where it leaves them unset. */
export function colocatedEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const out = { ...env };
  for (const [name, value] of Object.entries(COLOCATED_ENV)) if (out[name] === undefined) out[name] = value;
  return out;
}
