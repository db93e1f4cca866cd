// Three real node processes on the CPU backend: requests sent to every rank come back with
// the outputs of a single-rank run in this process.
import { expect, test } from 'bun:test';
import type { Subprocess } from 'bun';
import { createCpuCommunicator, CpuDataPlane } from '../../ffi/comm/cpu.ts';
import type { EngineResult } from '../../node/engine/engine.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import { epochKey, meshId, meshKey } from '../comm/helpers.ts';
import { requests } from './helpers.ts';

type Reply =
  | { type: 'listening'; port: number }
  | { type: 'ready' }
  | { type: 'result'; result: EngineResult }
  | { type: 'failed'; id: string; error: string }
  | { type: 'aborted'; reason: string };

test('three node processes serve requests on every rank with single-rank outputs', async () => {
  const reqs = requests(45, 'p', 21);
  // The single-rank reference, in this process.
  const plane = await CpuDataPlane.listen({ meshId, meshKey });
  const solo = await createCpuCommunicator({ dataPlane: plane, key: epochKey(1), rank: 0, meshRanks: [0], peers: [] });
  const single = createReferenceEngine();
  await single.warmUp();
  const want = new Map((await single.step(reqs, solo)).map((r) => [r.id, r.output]));
  await solo.close();
  await plane.close();

  const n = 3;
  const inbox: Reply[][] = Array.from({ length: n }, () => []);
  const procs: Subprocess[] = Array.from({ length: n }, (_, r) =>
    Bun.spawn({
      cmd: [process.execPath, `${import.meta.dir}/node-worker.ts`, String(r)],
      stdio: ['ignore', 'inherit', 'inherit'],
      ipc: (m: Reply) => void inbox[r]!.push(m),
    }),
  );
  const take = async (r: number, pred: (m: Reply) => boolean, what: string): Promise<Reply> => {
    const deadline = performance.now() + 15_000;
    for (;;) {
      const i = inbox[r]!.findIndex(pred);
      if (i >= 0) return inbox[r]!.splice(i, 1)[0]!;
      if (performance.now() > deadline) throw new Error(`rank ${r}: no ${what}`);
      await Bun.sleep(5);
    }
  };
  try {
    const ports = await Promise.all(procs.map((_, r) => take(r, (m) => m.type === 'listening', 'port').then((m) => (m as { port: number }).port)));
    const peers = ports.map((port, meshRank) => ({ meshRank, host: '127.0.0.1', port }));
    for (const p of procs) p.send({ type: 'epoch', peers });
    await Promise.all(procs.map((_, r) => take(r, (m) => m.type === 'ready', 'ready')));
    reqs.forEach((req, i) => procs[i % n]!.send({ type: 'request', req }));
    const got = new Map<string, readonly number[]>();
    for (let i = 0; i < reqs.length; i++) {
      const r = i % n;
      const m = await take(r, (x) => x.type === 'result' || x.type === 'failed' || x.type === 'aborted', `answer to ${reqs[i]!.id}`);
      if (m.type !== 'result') throw new Error(`rank ${r}: ${JSON.stringify(m)}`);
      got.set(m.result.id, m.result.output);
    }
    expect(got).toEqual(want);
  } finally {
    for (const p of procs) p.send({ type: 'exit' });
    await Promise.all(procs.map((p) => Promise.race([p.exited, Bun.sleep(5000).then(() => p.kill())])));
  }
});
