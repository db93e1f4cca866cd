// A closed mesh on real node processes: a node started fresh while the closed record is still gossiped learns it and exits 0 without forming anything, and only an explicit --new-generation (RANKMESH_NEW_GENERATION) starts generation 2 on the same data directories.
import { afterEach, expect, test } from 'bun:test';
import { join } from 'node:path';
import type { StatusBody } from '../../node/api/status.ts';
import type { RankStatus } from '../../node/rank/host.ts';
import { getJson, ProcCluster, type ProcNode } from '../../scripts/lib/proc-cluster.ts';
import { spawnNode, tempDir, waitFor } from '../node/helpers.ts';

const token = 'bench-token';
let cluster: ProcCluster | undefined;
const dirs: { remove(): void }[] = [];

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
  for (const d of dirs.splice(0)) d.remove();
});

const serving = (nodes: readonly ProcNode[]) => async () => (await Promise.all(nodes.map((n) => getJson<RankStatus>(n, '/v1/rank')))).every((s) => s?.serving === true);

test('a fresh node learns the gossiped closed record and exits 0; --new-generation forms generation 2', async () => {
  // A long grace period: the members keep gossiping the closed record while the fresh node starts.
  const env: Record<string, string> = { RANKMESH_CLOSED_GRACE_MS: '8000', RANKMESH_DATA_PLANE_ANNOUNCE_INTERVAL_MS: '200', RANKMESH_RANK_RETRY_MS: '200' };
  cluster = await ProcCluster.start({ nodes: 3, env });
  await waitFor('3 ranks serving', serving(cluster.nodes), 60_000);
  const first = cluster.nodes[0]!;
  const address = (await getJson<StatusBody>(first, '/v1/status'))!.addresses[0]!;
  const control = (command: string) => fetch(`${first.httpUrl}/v1/control/${command}`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
  expect((await control('pause')).status).toBe(200);
  await control('stop').catch(() => null);
  await waitFor('every member holding the closed view', async () => (await Promise.all(cluster!.nodes.map((n) => getJson<{ closed: boolean }>(n, '/v1/view')))).every((v) => v?.closed === true), 30_000);

  const dir = tempDir('rankmesh-fresh-');
  dirs.push(dir);
  const fresh = spawnNode(dir.path, [], {
    RANKMESH_KEY_FILE: join(cluster.dir, 'swarm.key'),
    RANKMESH_PEERS: address,
    RANKMESH_MESH_ID: 'bench',
    RANKMESH_WORLD_SIZE: '3',
    RANKMESH_TOKEN: token,
    RANKMESH_CLOSED_GRACE_MS: '0',
  });
  const code = await Promise.race([fresh.process.exited, Bun.sleep(30_000).then(() => null)]);
  if (code === null) fresh.process.kill('SIGKILL');
  expect(code).toBe(0);
  expect(fresh.lines.some((l) => l.includes('the mesh closed (STOP) before this node was given a rank'))).toBe(true);
  // It learned generation 1's closed view and formed nothing of its own.
  expect(fresh.lines.some((l) => l.includes('"msg":"mesh closed"') && l.includes('"generation":1'))).toBe(true);
  expect(fresh.lines.some((l) => l.includes('"generation":2'))).toBe(false);

  const codes = await Promise.race([Promise.all(cluster.nodes.map((n) => n.process.exited)), Bun.sleep(40_000).then(() => null)]);
  expect(codes).toEqual([0, 0, 0]);

  // Without the flag a restarted node exits 0 (join.test.ts); with --new-generation the same
  // data directories form generation 2.
  env.RANKMESH_NEW_GENERATION = 'true';
  for (const node of cluster.nodes) cluster.spawn(node);
  await waitFor('generation 2 serving on every node', async () => {
    if (!(await serving(cluster!.nodes)())) return false;
    const views = await Promise.all(cluster!.nodes.map((n) => getJson<{ generation: number; closed: boolean }>(n, '/v1/view')));
    return views.every((v) => v?.generation === 2 && !v.closed);
  }, 60_000);
  expect(cluster.nodes.every((n) => n.logs.some((r) => typeof r.msg === 'string' && r.msg.startsWith('forming generation 2 of mesh bench')))).toBe(true);
}, 180_000);
