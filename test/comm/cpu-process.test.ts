// The CPU communicator across separate processes: identical all-reduce results on every
// rank, and a killed rank makes the survivors abort instead of hang.
import { expect, test } from 'bun:test';
import type { Subprocess } from 'bun';
import { createHash } from 'node:crypto';
import { dataFor } from './helpers.ts';

type Reply = { type: 'listening'; port: number } | { type: 'ready' } | { type: 'result'; hash: string } | { type: 'aborted'; reason: string };

test('three processes all-reduce identically; killing one aborts the others', async () => {
  const n = 3;
  const inbox: Reply[][] = Array.from({ length: n }, () => []);
  const procs: Subprocess[] = [];
  for (let r = 0; r < n; r++) {
    procs.push(
      Bun.spawn({
        cmd: [process.execPath, `${import.meta.dir}/worker.ts`, String(r)],
        stdio: ['ignore', 'inherit', 'inherit'],
        ipc: (m: Reply) => void inbox[r]!.push(m),
      }),
    );
  }
  try {
    const next = async (r: number, type: Reply['type']): Promise<Reply> => {
      const deadline = performance.now() + 10_000;
      for (;;) {
        const i = inbox[r]!.findIndex((m) => m.type === type);
        if (i >= 0) return inbox[r]!.splice(i, 1)[0]!;
        if (performance.now() > deadline) throw new Error(`rank ${r} sent no ${type}`);
        await Bun.sleep(5);
      }
    };
    const ports = await Promise.all(procs.map((_, r) => next(r, 'listening').then((m) => (m as { port: number }).port)));
    const peers = ports.map((port, meshRank) => ({ meshRank, host: '127.0.0.1', port }));
    for (const p of procs) p.send({ type: 'peers', peers });
    await Promise.all(procs.map((_, r) => next(r, 'ready')));

    const length = 300_001;
    for (const p of procs) p.send({ type: 'allReduce', length });
    const hashes = await Promise.all(procs.map((_, r) => next(r, 'result').then((m) => (m as { hash: string }).hash)));
    expect(new Set(hashes).size).toBe(1);
    // The same ring order computed here in one process gives the same bytes.
    expect(hashes[0]).toBe(ringSumHash(n, length));

    procs[2]!.kill('SIGKILL');
    await procs[2]!.exited;
    procs[0]!.send({ type: 'allReduce', length });
    procs[1]!.send({ type: 'allReduce', length });
    for (const r of [0, 1]) {
      const m = (await next(r, 'aborted')) as { reason: string };
      expect(m.reason).toMatch(/link lost|closed|reset/);
    }
  } finally {
    for (const p of procs) if (p.exitCode === null && !p.killed) p.send({ type: 'exit' });
    await Promise.all(procs.map((p) => Promise.race([p.exited, Bun.sleep(3000).then(() => p.kill())])));
  }
});

/** The ring all-reduce's reduction order: segment c is summed from rank c onward around the ring. */
function ringSumHash(n: number, length: number): string {
  const inputs = Array.from({ length: n }, (_, r) => dataFor(r, length));
  const out = new Float32Array(length);
  for (let c = 0; c < n; c++) {
    const lo = Math.floor((c * length) / n);
    const hi = Math.floor(((c + 1) * length) / n);
    const acc = inputs[c]!.slice(lo, hi);
    for (let k = 1; k < n; k++) {
      const x = inputs[(c + k) % n]!;
      for (let i = lo; i < hi; i++) acc[i - lo] = x[i]! + acc[i - lo]!;
    }
    out.set(acc, lo);
  }
  return createHash('sha256').update(new Uint8Array(out.buffer)).digest('hex');
}
