// The lifecycle on real in-process nodes over HTTP, after Megatron's lifecycle test: commands
// out of order are refused with 409 and the allowed ones, a double PAUSE is harmless, requests
// sent as PAUSE is issued all finish (before PAUSED or after UNPAUSE), requests sent while
// PAUSED run after UNPAUSE, SUSPEND → RESUME → UNPAUSE serves again with the same outputs,
// and a timeout is a 504 with the state.
import { afterAll, expect, test } from 'bun:test';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

const token = 'inproc-test-token';
const meshes: InprocMesh[] = [];
afterAll(async () => {
  await Promise.all(meshes.map((m) => m.stop()));
});

interface Reply {
  status: number;
  body: Record<string, unknown> & { error?: Record<string, unknown> };
}

async function control(node: InprocNode, command: string, body: unknown = {}): Promise<Reply> {
  const response = await fetch(`${node.httpUrl}/v1/control/${command}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Reply['body'] };
}

async function infer(node: InprocNode, id: string, input: number[]): Promise<Reply> {
  const response = await fetch(`${node.httpUrl}/v1/rank/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id, input }),
  });
  return { status: response.status, body: (await response.json()) as Reply['body'] };
}

const states = (mesh: InprocMesh) => mesh.nodes.map((n) => n.runtime.driver.core.lifecycleState());

async function servingMesh(nodes: number): Promise<InprocMesh> {
  const mesh = await InprocMesh.start({ nodes, settings: { controlTimeoutMs: 20_000 } });
  meshes.push(mesh);
  await waitFor('every rank serving', () => mesh.nodes.every((n) => n.runtime.rank.rankStatus().serving), 30_000);
  return mesh;
}

test('pause, double pause, requests across the pause, suspend, resume, unpause', async () => {
  const mesh = await servingMesh(3);
  const [a, b, c] = mesh.nodes as [InprocNode, InprocNode, InprocNode];
  const input = [3, 1, 4, 1, 5, 9, 2, 6];
  const before = await infer(a, 'before', input);
  expect(before.status).toBe(200);

  // Out of order: nothing to unpause, resume or suspend while RUNNING.
  for (const command of ['unpause', 'resume', 'suspend']) {
    const refused = await control(b, command);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'illegal-command', state: 'RUNNING', allowed: ['PAUSE'] });
  }
  expect(states(mesh)).toEqual(['RUNNING', 'RUNNING', 'RUNNING']);

  // Requests sent as PAUSE is issued: a request a rank started before it was PAUSING finishes
  // now; one still queued there stays queued (the drain rule) and runs after UNPAUSE. None is
  // lost either way; they are checked after UNPAUSE below.
  const inflight = Array.from({ length: 6 }, (_, i) => infer(mesh.nodes[i % 3]!, `inflight-${i}`, input));
  const paused = await control(b, 'pause');
  expect(paused.status).toBe(200);
  expect(paused.body).toMatchObject({ command: 'PAUSE', state: 'PAUSED', target: 'PAUSED', noop: false });
  await waitFor('every node PAUSED', () => states(mesh).every((s) => s === 'PAUSED'));
  const again = await control(c, 'pause');
  expect(again.status).toBe(200);
  expect(again.body).toMatchObject({ state: 'PAUSED', noop: true });

  // Sent while PAUSED: waits, then runs after UNPAUSE.
  const waiting = infer(c, 'while-paused', input);
  const early = await Promise.race([waiting.then(() => 'answered'), Bun.sleep(300).then(() => 'waiting')]);
  expect(early).toBe('waiting');

  // SUSPEND offloads every engine, RESUME reloads and returns to PAUSED.
  expect((await control(a, 'suspend')).body).toMatchObject({ state: 'SUSPENDED' });
  await waitFor('every node SUSPENDED', () => states(mesh).every((s) => s === 'SUSPENDED'));
  expect(mesh.nodes.every((n) => (n.runtime.rank as unknown as { engine: { status: string } }).engine.status === 'offloaded')).toBe(true);
  expect((await control(c, 'unpause')).status).toBe(409);
  expect((await control(b, 'resume')).body).toMatchObject({ state: 'PAUSED' });
  expect(mesh.nodes.every((n) => (n.runtime.rank as unknown as { engine: { status: string } }).engine.status === 'ready')).toBe(true);
  expect((await control(a, 'unpause')).body).toMatchObject({ state: 'RUNNING' });

  for (const r of await Promise.all(inflight)) {
    expect(r.status).toBe(200);
    expect(r.body.output).toEqual(before.body.output);
  }
  const afterPause = await waiting;
  expect(afterPause.status).toBe(200);
  expect(afterPause.body.output).toEqual(before.body.output);
  const after = await infer(b, 'after', input);
  expect(after.body.output).toEqual(before.body.output);

  // The lifecycle route shows the transitions with timings (the first: the generation starting).
  const lifecycle = (await (await fetch(`${a.httpUrl}/v1/lifecycle`)).json()) as { state: string; allowed: string[]; transitions: { state: string; previousMs: number | null }[] };
  expect(lifecycle.state).toBe('RUNNING');
  expect(lifecycle.allowed).toEqual(['PAUSE']);
  expect(lifecycle.transitions.map((t) => t.state)).toEqual(['RUNNING', 'PAUSING', 'PAUSED', 'SUSPENDING', 'SUSPENDED', 'RESUMING', 'PAUSED', 'RUNNING']);
}, 90_000);

test('a target not reached within the timeout is a 504 with the state reached; bad bodies are 400', async () => {
  const mesh = await servingMesh(2);
  const [a] = mesh.nodes as [InprocNode];
  const late = await control(a, 'pause', { timeoutMs: 1 });
  expect(late.status).toBe(504);
  expect(late.body.error).toMatchObject({ code: 'timeout', target: 'PAUSED' });
  expect(['RUNNING', 'PAUSING', 'PAUSED']).toContain(late.body.error!.state as string);
  await waitFor('the pause completes anyway', () => states(mesh).every((s) => s === 'PAUSED'));
  expect((await control(a, 'pause', { timeoutMs: 'soon' })).status).toBe(400);
  expect((await control(a, 'halt')).status).toBe(404);
  const unauthorised = await fetch(`${a.httpUrl}/v1/control/unpause`, { method: 'POST' });
  expect(unauthorised.status).toBe(401);
  expect(states(mesh)).toEqual(['PAUSED', 'PAUSED']);
}, 60_000);
