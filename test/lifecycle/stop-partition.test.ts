// Covers STOP with a rank cut off, on real node processes (the rank frozen with SIGSTOP stands in for a partition: it hears nothing and answers nothing): the two others remove it, pause and stop, and linger past closedGraceMs waiting for it; once it runs again it learns the close and every process exits 0, none of the two before it learned; a rank that never comes back (kill -9) holds the exit up only until closeLingerMs.
import { afterEach, expect, test } from 'bun:test';
import type { CloseBody } from '../../node/lifecycle/routes.ts';
import { getJson, ProcCluster, type ProcNode } from '../../scripts/lib/proc-cluster.ts';
import { waitFor } from '../node/helpers.ts';

const clusters: ProcCluster[] = [];
afterEach(async () => {
  for (const c of clusters) for (const n of c.nodes) n.process.kill('SIGCONT');
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
});

const graceMs = 500;
const fast = { RANKMESH_HEARTBEAT_INTERVAL_MS: '150', RANKMESH_SUSPECT_MS: '600', RANKMESH_PROBE_TIMEOUT_MS: '500', RANKMESH_CLOSED_GRACE_MS: String(graceMs) };

async function control(node: ProcNode, command: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${node.httpUrl}/v1/control/${command}`, { method: 'POST', headers: { authorization: 'Bearer bench-token', 'content-type': 'application/json' }, body: JSON.stringify({ timeoutMs: 60_000 }) });
  return (await res.json()) as Record<string, unknown>;
}

/** Three serving ranks; the third is cut off (`how`), the others pause and stop without it. */
async function stopWithoutThird(closeLingerMs: number, how: 'SIGSTOP' | 'SIGKILL'): Promise<{ majority: ProcNode[]; cut: ProcNode }> {
  const cluster = await ProcCluster.start({ nodes: 3, env: { ...fast, RANKMESH_CLOSE_LINGER_MS: String(closeLingerMs) } });
  clusters.push(cluster);
  await waitFor('3 ranks serving', async () => (await Promise.all(cluster.nodes.map((n) => getJson<{ serving: boolean }>(n, '/v1/rank')))).every((r) => r?.serving === true), 60_000);
  const [a, b, cut] = cluster.nodes as [ProcNode, ProcNode, ProcNode];
  cut.process.kill(how);
  // The cut-off rank cannot drain: the pause completes once a view change removed it.
  expect(await control(a, 'pause')).toMatchObject({ state: 'PAUSED' });
  expect(await control(b, 'stop')).toMatchObject({ state: 'STOPPED' });
  return { majority: [a, b], cut };
}

const timeOf = (node: ProcNode, msg: string): number | undefined => node.logs.find((r) => r.msg === msg)?.time;

test('a rank cut off across STOP exits 0 once it can hear again; the others wait for it past the grace period', async () => {
  const { majority, cut } = await stopWithoutThird(60_000, 'SIGSTOP');
  await waitFor('the two closed for three grace periods', async () => (await Promise.all(majority.map((n) => getJson<CloseBody>(n, '/v1/lifecycle/close')))).every((c) => (c?.closedForMs ?? 0) >= 3 * graceMs), 15_000);
  for (const node of majority) {
    expect(node.process.exitCode).toBeNull();
    expect(await getJson<CloseBody>(node, '/v1/lifecycle/close')).toMatchObject({ state: 'lingering', waitingFor: [cut.peerId] });
  }

  cut.process.kill('SIGCONT');
  const codes = await Promise.race([Promise.all([...majority, cut].map((n) => n.process.exited)), Bun.sleep(45_000).then(() => null)]);
  expect(codes).toEqual([0, 0, 0]);
  const learnedMs = timeOf(cut, 'mesh closed');
  expect(learnedMs).toBeDefined();
  expect(cut.logs.some((r) => r.msg.includes('while this node was cut off from it'))).toBe(true);
  for (const node of [...majority, cut]) expect(node.logs.some((r) => r.msg.includes('holds the closed record; exiting 0'))).toBe(true);
  // Nobody left before the cut-off rank had learned the close.
  for (const node of majority) expect(node.logs.at(-1)!.time).toBeGreaterThanOrEqual(learnedMs!);
}, 150_000);

test('a rank that never comes back holds the exit up only until closeLingerMs', async () => {
  const lingerMs = 3000;
  const { majority, cut } = await stopWithoutThird(lingerMs, 'SIGKILL');
  const codes = await Promise.race([Promise.all(majority.map((n) => n.process.exited)), Bun.sleep(30_000).then(() => null)]);
  expect(codes).toEqual([0, 0]);
  for (const node of majority) {
    const closedMs = timeOf(node, 'mesh closed')!;
    const bound = node.logs.find((r) => r.msg.startsWith('closeLingerMs passed'));
    expect(bound).toMatchObject({ waitingFor: [cut.peerId] });
    expect(bound!.time - closedMs).toBeGreaterThanOrEqual(lingerMs - 50);
    expect(node.logs.some((r) => r.msg.startsWith('still waiting for') || r.msg.startsWith('the mesh is closed; gossiping'))).toBe(true);
  }
}, 150_000);
