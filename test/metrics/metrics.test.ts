// Covers GET /metrics on a real 3-node mesh: the exposition parses, and its figures move with
// real activity (rank and ingress requests, lifecycle commands, a crash) on the node that saw
// it and no other.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

const token = 'inproc-test-token';
let mesh: InprocMesh;
let a: InprocNode;
let b: InprocNode;

beforeAll(async () => {
  mesh = await InprocMesh.start({ nodes: 3 });
  [a, b] = [mesh.nodes[0]!, mesh.nodes[1]!];
  await waitFor('every rank serving', () => mesh.nodes.every((n) => n.runtime.rank.rankStatus().serving), 20_000);
}, 30_000);

afterAll(async () => {
  await mesh?.stop();
});

describe('/metrics', () => {
  test('serves the Prometheus text format with the view, gossip and rank figures', async () => {
    const response = await fetch(`${a.httpUrl}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const m = parse(await response.text());
    const view = a.runtime.driver.core.view()!;
    expect(value(m, 'rankmesh_view_epoch')).toBe(view.epoch);
    expect(value(m, 'rankmesh_view_generation')).toBe(view.generation);
    expect(value(m, 'rankmesh_active_ranks')).toBe(3);
    expect(value(m, 'rankmesh_view_changes_total')).toBeGreaterThanOrEqual(1);
    expect(value(m, 'rankmesh_gossip_messages_total', { direction: 'in', type: 'hb' })).toBeGreaterThan(0);
    expect(value(m, 'rankmesh_lifecycle_state', { state: 'RUNNING' })).toBe(1);
    expect(value(m, 'rankmesh_rank_serving')).toBe(1);
    expect(value(m, 'rankmesh_queue_depth', { queue: 'rank' })).toBe(0);
    expect(value(m, 'process_resident_memory_bytes')).toBeGreaterThan(1 << 20);
    expect(value(m, 'process_cpu_seconds_total')).toBeGreaterThan(0);
  });

  test('requests, engine iterations, collectives, transitions and barriers move after real activity', async () => {
    const before = parse(await (await fetch(`${a.httpUrl}/metrics`)).text());
    const requests = 4;
    for (let i = 0; i < requests; i++) {
      const r = await post(a, '/v1/rank/infer', { input: [1, 2, 3, i] });
      expect(r.status).toBe(200);
    }
    const generated = await post(a, '/v1/generate', { input: [7, 8, 9] });
    expect(generated.status).toBe(200);
    // The ingress forwards to any rank; when it picked this node's own, its rank ran one more.
    const ranHere = ((await generated.json()) as { rank: number }).rank === a.runtime.rank.rankStatus().rank ? 1 : 0;
    expect((await post(a, '/v1/control/pause', {})).status).toBe(200);
    expect((await post(a, '/v1/control/unpause', {})).status).toBe(200);
    const after = parse(await (await fetch(`${a.httpUrl}/metrics`)).text());
    const moved = (name: string, labels: Labels = {}): number => value(after, name, labels) - value(before, name, labels);

    expect(moved('rankmesh_http_requests_total', { method: 'POST', route: '/v1/rank/infer', status: '200' })).toBe(requests);
    expect(moved('rankmesh_http_request_duration_seconds_count', { method: 'POST', route: '/v1/rank/infer' })).toBe(requests);
    expect(moved('rankmesh_http_requests_total', { method: 'POST', route: '/v1/control/:command', status: '200' })).toBe(2);
    expect(moved('rankmesh_rank_requests_total', { outcome: 'completed' })).toBe(requests + ranHere);
    expect(moved('rankmesh_engine_iteration_seconds_count', { kind: 'step' })).toBeGreaterThanOrEqual(1);
    expect(moved('rankmesh_engine_tokens_total')).toBe(requests * 4 + ranHere * 3);
    expect(moved('rankmesh_collective_bytes_total', { op: 'allReduce' })).toBeGreaterThan(0);
    expect(moved('rankmesh_collective_seconds_count', { op: 'allGather' })).toBeGreaterThan(0);
    expect(moved('rankmesh_lifecycle_transitions_total', { from: 'RUNNING', to: 'PAUSING' })).toBe(1);
    expect(moved('rankmesh_lifecycle_transitions_total', { from: 'PAUSED', to: 'RUNNING' })).toBe(1);
    expect(moved('rankmesh_lifecycle_transition_seconds_count', { from: 'PAUSING', to: 'PAUSED' })).toBe(1);
    expect(moved('rankmesh_barrier_seconds_count', { name: 'control' })).toBeGreaterThanOrEqual(1);
    // Peers' arrivals come one message at a time, so some round was seen open before it completed.
    expect(moved('rankmesh_barrier_seconds_sum', { name: 'control' })).toBeGreaterThan(0);
    // The pause and unpause each took a barrier round: this node gossiped its arrivals.
    expect(moved('rankmesh_gossip_messages_total', { direction: 'out', type: 'arrive' })).toBeGreaterThanOrEqual(2);
    expect(moved('rankmesh_ingress_events_total', { event: 'accepted' })).toBe(1);
    expect(moved('rankmesh_ingress_events_total', { event: 'done' })).toBe(1);
    expect(value(after, 'rankmesh_queue_depth', { queue: 'ingress_inflight' })).toBe(0);
  });

  test('errors are counted under their route and status, unknown paths as unmatched', async () => {
    const before = parse(await (await fetch(`${a.httpUrl}/metrics`)).text());
    expect((await post(a, '/v1/rank/infer', { input: 'not tokens' })).status).toBe(400);
    expect((await fetch(`${a.httpUrl}/no/such/route`)).status).toBe(404);
    const after = parse(await (await fetch(`${a.httpUrl}/metrics`)).text());
    const moved = (labels: Labels): number => value(after, 'rankmesh_http_requests_total', labels) - value(before, 'rankmesh_http_requests_total', labels);
    expect(moved({ method: 'POST', route: '/v1/rank/infer', status: '400' })).toBe(1);
    expect(moved({ method: 'GET', route: 'unmatched', status: '404' })).toBe(1);
  });

  test('each node has its own registry: requests to one node do not show at another', async () => {
    const m = parse(await (await fetch(`${b.httpUrl}/metrics`)).text());
    expect(value(m, 'rankmesh_http_requests_total', { method: 'POST', route: '/v1/rank/infer', status: '200' })).toBe(0);
    // (Its rank may have run a request node-0's ingress forwarded; node-0 accepted it, not node-1.)
    expect(value(m, 'rankmesh_ingress_events_total', { event: 'accepted' })).toBe(0);
    expect(value(parse(await (await fetch(`${a.httpUrl}/metrics`)).text()), 'rankmesh_ingress_events_total', { event: 'accepted' })).toBe(1);
  });

  test('a crashed rank shows at a survivor as a suspicion and a view change', async () => {
    const before = parse(await (await fetch(`${a.httpUrl}/metrics`)).text());
    const victim = mesh.nodes[2]!;
    await mesh.kill(victim);
    await waitFor('a view without the crashed rank', () => (a.runtime.driver.core.view()?.ranks.filter((h) => h !== null).length ?? 3) === 2, 15_000);
    const after = parse(await (await fetch(`${a.httpUrl}/metrics`)).text());
    expect(value(after, 'rankmesh_view_changes_total') - value(before, 'rankmesh_view_changes_total')).toBeGreaterThanOrEqual(1);
    expect(value(after, 'rankmesh_suspicions_total') - value(before, 'rankmesh_suspicions_total')).toBeGreaterThanOrEqual(1);
    expect(value(after, 'rankmesh_active_ranks')).toBe(2);
  }, 20_000);
});

type Labels = Record<string, string>;
interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

function post(node: InprocNode, path: string, body: unknown): Promise<Response> {
  return fetch(`${node.httpUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

/** Parses the text exposition; every line that is not a comment must be a sample. */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a sample line: ${line}`);
    const labels: Labels = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sample with exactly these labels; 0 when the series does not exist (yet). */
function value(samples: Sample[], name: string, labels: Labels = {}): number {
  const keys = Object.keys(labels);
  const found = samples.find((s) => s.name === name && Object.keys(s.labels).length === keys.length && keys.every((k) => s.labels[k] === labels[k]));
  return found?.value ?? 0;
}
