// Covers GET /v1/view and GET /v1/members on real nodes: the view JSON (mask as hex, ranks in
// order, spares with readiness) equals the core's committed view on every node, members list
// every other peer as alive, and a node still forming answers 503 with the reason.
import { afterAll, expect, test } from 'bun:test';
import { activeMembers, InprocMesh } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

const meshes: InprocMesh[] = [];
afterAll(async () => {
  await Promise.all(meshes.map((m) => m.stop()));
});

test('a 3-rank mesh with one spare: /v1/view and /v1/members agree with the committed view', async () => {
  const mesh = await InprocMesh.start({ nodes: 4, worldSize: 3 });
  meshes.push(mesh);
  await waitFor('one view with 3 ranks and a ready spare at every node', async () => {
    const views = mesh.nodes.map((n) => mesh.view(n));
    if (!views.every((v) => v !== null && JSON.stringify(v) === JSON.stringify(views[0]) && v.spares.length === 1)) return false;
    const body = (await (await fetch(`${mesh.nodes[0]!.httpUrl}/v1/view`)).json()) as { spares: { ready: boolean }[] };
    return body.spares.every((s) => s.ready);
  }, 20_000);
  const view = mesh.view(mesh.nodes[0]!)!;
  for (const node of mesh.nodes) {
    const response = await fetch(`${node.httpUrl}/v1/view`);
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toEqual({
      meshId: 'inproc',
      generation: view.generation,
      epoch: view.epoch,
      worldSize: 3,
      mask: '7',
      ranks: view.ranks.map((h, rank) => ({ rank, peerId: h!.peerId, bootId: h!.bootId, active: true })),
      spares: view.spares.map((s) => ({ peerId: s.peerId, bootId: s.bootId, ready: true })),
      closed: false,
    });
  }
  expect(activeMembers(view)).toHaveLength(3);

  const members = (await (await fetch(`${mesh.nodes[0]!.httpUrl}/v1/members`)).json()) as {
    members: { peerId: string; liveness: string; rank: number; role: string }[];
  };
  const others = mesh.nodes.slice(1).map((n) => n.peerId).sort();
  expect(members.members.map((m) => m.peerId).sort()).toEqual(others);
  for (const m of members.members) {
    expect(m.liveness).toBe('alive');
    expect(m.rank).toBe(view.ranks.findIndex((h) => h?.peerId === m.peerId));
  }
  // Members are the other peers: the spare among them, unless the asking node is the spare.
  const otherSpares = view.spares.map((s) => s.peerId).filter((p) => p !== mesh.nodes[0]!.peerId);
  expect(members.members.filter((m) => m.rank === -1).map((m) => m.peerId)).toEqual(otherSpares);
}, 60_000);

test('a node waiting for its mesh to form answers /v1/view with 503 and the reason', async () => {
  const mesh = await InprocMesh.start({ nodes: 1, worldSize: 2 });
  meshes.push(mesh);
  const response = await fetch(`${mesh.nodes[0]!.httpUrl}/v1/view`);
  expect(response.status).toBe(503);
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe('no-view');
  expect(body.error.message).toContain('forms when 2 nodes are present');
}, 30_000);
