// The lifecycle with real node processes: STOP makes every process exit 0 (a waiting spare
// included) once every peer holds the closed record, and a rank that dies while the mesh is
// PAUSING does not hang the others — it is removed by a view change and the pause completes
// over the remaining ranks.
import { afterEach, expect, test } from 'bun:test';
import { ProcCluster, type ProcNode } from '../../scripts/lib/proc-cluster.ts';
import { waitFor } from '../node/helpers.ts';

const clusters: ProcCluster[] = [];
afterEach(async () => {
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
});

const fast = { RANKMESH_HEARTBEAT_INTERVAL_MS: '150', RANKMESH_SUSPECT_MS: '600', RANKMESH_PROBE_TIMEOUT_MS: '500', RANKMESH_CLOSED_GRACE_MS: '500' };

async function post(node: ProcNode, path: string, body: unknown = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${node.httpUrl}${path}`, {
    method: 'POST',
    headers: { authorization: 'Bearer bench-token', 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function get(node: ProcNode, path: string): Promise<Record<string, unknown> | null> {
  try {
    const response = await fetch(`${node.httpUrl}${path}`);
    return response.ok ? ((await response.json()) as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

async function allServing(nodes: readonly ProcNode[]): Promise<boolean> {
  const ranks = await Promise.all(nodes.map((n) => get(n, '/v1/rank')));
  return ranks.every((r) => r?.serving === true);
}

test('STOP: every process exits 0, the waiting spare too', async () => {
  const cluster = await ProcCluster.start({ nodes: 4, worldSize: 3, env: fast });
  clusters.push(cluster);
  const spareOf = async () => ((await get(cluster.nodes[0]!, '/v1/view'))?.spares as { peerId: string; ready: boolean }[] | undefined) ?? [];
  await waitFor('3 ranks serving and a ready spare', async () => (await spareOf()).some((s) => s.ready) && (await Promise.all(cluster.nodes.map((n) => get(n, '/v1/rank')))).filter((r) => r?.serving).length === 3, 60_000);
  const sparePeer = (await spareOf())[0]!.peerId;
  expect(cluster.nodes.map((n) => n.peerId)).toContain(sparePeer);

  const spare = cluster.nodes.find((n) => n.peerId === sparePeer)!;
  const rank = cluster.nodes.find((n) => n.peerId !== sparePeer)!;
  // STOP is legal only from PAUSED or SUSPENDED.
  expect((await post(rank, '/v1/control/stop')).status).toBe(409);
  expect((await post(rank, '/v1/control/pause')).body).toMatchObject({ state: 'PAUSED' });
  // Issued at the spare right away: it learns PAUSED from the ranks' heartbeats a moment
  // later, and waits for that rather than refusing STOP on the state it held before.
  const stopped = await post(spare, '/v1/control/stop');
  expect(stopped.status).toBe(200);
  expect(stopped.body).toMatchObject({ state: 'STOPPED' });
  const codes = await Promise.all(cluster.nodes.map((n) => n.process.exited));
  expect(codes).toEqual([0, 0, 0, 0]);
  // Everyone heard everyone's closed heartbeat: nobody waited for the linger bound.
  for (const node of cluster.nodes) expect(node.logs.some((r) => r.msg.includes('holds the closed record; exiting 0'))).toBe(true);
}, 120_000);

test('a rank killed while the mesh is PAUSING is removed and the pause completes', async () => {
  const cluster = await ProcCluster.start({ nodes: 4, env: fast });
  clusters.push(cluster);
  await waitFor('4 ranks serving', () => allServing(cluster.nodes), 60_000);
  const [a, b, c, victim] = cluster.nodes as [ProcNode, ProcNode, ProcNode, ProcNode];

  // A frozen rank cannot report itself drained, so the others stay PAUSING...
  victim.process.kill('SIGSTOP');
  const pause = post(a, '/v1/control/pause', { timeoutMs: 60_000 });
  await waitFor('the others PAUSING', async () => (await Promise.all([a, b, c].map((n) => get(n, '/v1/lifecycle')))).every((l) => l?.state === 'PAUSING' || l?.state === 'PAUSED'), 30_000);
  // ...until it dies: a view change removes it and the pause completes over three ranks.
  victim.process.kill('SIGKILL');
  const reply = await pause;
  expect(reply.status).toBe(200);
  expect(reply.body).toMatchObject({ state: 'PAUSED' });
  const views = await Promise.all([a, b, c].map((n) => get(n, '/v1/view')));
  for (const view of views) {
    expect((view!.ranks as { peerId: string | null }[]).some((r) => r.peerId === victim.peerId)).toBe(false);
  }
  await waitFor('PAUSED everywhere', async () => (await Promise.all([a, b, c].map((n) => get(n, '/v1/lifecycle')))).every((l) => l?.state === 'PAUSED'), 10_000);
  // And the mesh runs again on the remaining ranks.
  expect((await post(b, '/v1/control/unpause')).body).toMatchObject({ state: 'RUNNING' });
  const served = await post(c, '/v1/rank/infer', { input: [1, 2, 3] });
  expect(served.status).toBe(200);
}, 120_000);
