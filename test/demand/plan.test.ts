// Demand and plan rounds on four real in-process ranks and a spare: two pipelines signalled at once both get ranks and every node holds the same plan (the spare, holding no rank, pulls it), and requests go only to their pipeline's ranks; progress, a completed pipeline's ranks moving to the other, harmless repeats, bad bodies, a restarted node learning the records, and the 504 with its reason.
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test';
import type { AgreedPlan } from '../../mesh/demand.ts';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

const token = 'inproc-test-token';
// A request not done within 15 s comes back 202, so the test prints why before its own 30 s run out.
const settings = { pipelines: ['a', 'b', 'c'], planRoundIntervalMs: 100, demandSyncIntervalMs: 300, ingressSyncWaitMs: 15_000 };
let mesh: InprocMesh;

async function call(node: InprocNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${node.httpUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return { status: res.status, json: await res.json() };
}

const planOf = (n: InprocNode): AgreedPlan | null => n.runtime.demand.plans.current();
const counts = (p: AgreedPlan | null): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const [, x] of p?.assignment ?? []) out[x ?? '-'] = (out[x ?? '-'] ?? 0) + 1;
  return out;
};
/** Every live node holds one plan (same round, same assignment); returns it or null. */
function agreedPlan(nodes: readonly InprocNode[]): AgreedPlan | null {
  const first = planOf(nodes[0]!);
  if (first === null) return null;
  return nodes.every((n) => JSON.stringify(planOf(n)) === JSON.stringify(first)) ? first : null;
}

describe('demand on four real ranks and a spare', () => {
  beforeAll(async () => {
    mesh = await InprocMesh.start({ nodes: 5, worldSize: 4, settings, captureLogLines: 3000 });
    await waitFor('a full view and a first plan round on every node', () => mesh.nodes.every((n) => mesh.view(n)?.ranks.every((h) => h !== null) && planOf(n) !== null), 15_000);
  }, 30_000);

  afterAll(async () => {
    await mesh?.stop();
  });

  afterEach(() => {
    // Honest nodes never send what the peer guard refuses: demand gossip and pulls included.
    for (const n of mesh.live()) expect(n.runtime.transport.guardStatus().invalid).toEqual({});
  });

  test('two pipelines signalled at the same moment both get ranks, and every node holds the same plan', async () => {
    // Every round each node completes is recorded: the same round must give the same plan everywhere.
    const seen = new Map<string, string>();
    const disagreements: string[] = [];
    const firstRound: Record<string, number> = {};
    for (const n of mesh.nodes) {
      n.runtime.demand.plans.on('change', (p) => {
        const key = `${p.generation}:${p.epoch}:${p.seq}`;
        const text = JSON.stringify(p.assignment);
        if ((seen.get(key) ?? text) !== text) disagreements.push(`${key}: ${text} vs ${seen.get(key)}`);
        seen.set(key, text);
        for (const [, x] of p.assignment) if (x !== null && firstRound[x] === undefined) firstRound[x] = p.seq;
      });
    }
    const [ra, rb] = await Promise.all([
      call(mesh.nodes[0]!, 'POST', '/v1/pipelines/a/demand', { steps: 100, id: 'dem-a', timeoutMs: 10_000 }),
      call(mesh.nodes[1]!, 'POST', '/v1/pipelines/b/demand', { steps: 100, id: 'dem-b', timeoutMs: 10_000 }),
    ]);
    expect([ra.status, rb.status]).toEqual([201, 201]);
    expect(ra.json.ranks.length).toBeGreaterThan(0);
    expect(rb.json.ranks.length).toBeGreaterThan(0);
    await waitFor('every node, the spare too, holding one plan with two ranks each', () => {
      const p = agreedPlan(mesh.nodes);
      return p !== null && counts(p).a === 2 && counts(p).b === 2;
    });
    expect(disagreements).toEqual([]);
    expect(seen.size).toBeGreaterThan(0);
    // Neither waited on the other: each got its first rank at most one round after the other.
    expect(Math.abs((firstRound.a ?? 99) - (firstRound.b ?? -99))).toBeLessThanOrEqual(1);
    // Routing uses the plan.
    const p = agreedPlan(mesh.nodes)!;
    for (const n of mesh.nodes) {
      expect(n.runtime.demand.plans.ranksFor('a')).toEqual(p.assignment.filter(([, x]) => x === 'a').map(([r]) => r));
      expect(n.runtime.demand.plans.ranksFor('c')).toEqual([]);
    }
  }, 20_000);

  test('requests go only to ranks serving their pipeline', async () => {
    const p = agreedPlan(mesh.nodes)!;
    const sends = Array.from({ length: 12 }, (_, i) => {
      const pipeline = i % 2 === 0 ? 'a' : 'b';
      return call(mesh.nodes[i % mesh.nodes.length]!, 'POST', '/v1/generate', { input: [1, 2, 3], pipeline }).then((r) => ({ pipeline, ...r }));
    });
    const replies = await Promise.all(sends);
    if (replies.some((r) => r.status !== 200)) {
      // What each rank was doing, and the nodes' logs, to tell why a request did not finish.
      for (const n of mesh.nodes) console.log(n.name, JSON.stringify(n.runtime.rank.rankStatus()), JSON.stringify(n.runtime.ingress.load()));
      console.log(mesh.recentLogs());
    }
    for (const r of replies) {
      expect([r.pipeline, r.status, r.json.status]).toEqual([r.pipeline, 200, 'done']);
      expect(p.assignment.filter(([, x]) => x === r.pipeline).map(([rank]) => rank)).toContain(r.json.rank);
    }
  }, 30_000);

  test('progress is counted at every node; a repeat close and progress on a closed record are harmless', async () => {
    const r1 = await call(mesh.nodes[2]!, 'POST', '/v1/pipelines/b/demand/dem-b/progress', { completed: 30 });
    expect(r1.status).toBe(200);
    expect(r1.json.record).toMatchObject({ done: 30, remaining: 70, closed: false });
    await call(mesh.nodes[3]!, 'POST', '/v1/pipelines/b/demand/dem-b/progress', { completed: 10 });
    await waitFor('progress from two nodes merged everywhere', async () => {
      const all = await Promise.all(mesh.nodes.map((n) => call(n, 'GET', '/v1/pipelines')));
      return all.every((r) => r.json.pipelines.find((x: any) => x.name === 'b')?.records[0]?.done === 40);
    });
    const close1 = await call(mesh.nodes[3]!, 'DELETE', '/v1/pipelines/a/demand/dem-a');
    const close2 = await call(mesh.nodes[0]!, 'DELETE', '/v1/pipelines/a/demand/dem-a');
    expect(close1.json).toMatchObject({ changed: true, record: { closed: true } });
    expect(close2.status).toBe(200);
    const late = await call(mesh.nodes[1]!, 'POST', '/v1/pipelines/a/demand/dem-a/progress', { completed: 5 });
    expect(late.status).toBe(200);
    // Node 1 may not have heard the close yet: either way the record ends closed everywhere.
    await waitFor('the closed record everywhere', () => mesh.nodes.every((n) => n.runtime.demand.records().find((r) => r.id === 'dem-a')?.closed === true));
  });

  test('once a pipeline completes, the next plan moves its ranks to the other on every node', async () => {
    await waitFor('every rank serving b on every node', () => {
      const p = agreedPlan(mesh.nodes);
      return p !== null && counts(p).b === 4;
    });
    // Progress reaching the target completes b: with no demand anywhere the ranks stay where
    // they are, and routing goes back to every rank serving every pipeline.
    const done = await call(mesh.nodes[0]!, 'POST', '/v1/pipelines/b/demand/dem-b/progress', { completed: 60 });
    expect(done.json.record).toMatchObject({ closed: true, remaining: 0 });
    await waitFor('a plan round agreeing there is no demand left', () => {
      const p = agreedPlan(mesh.nodes);
      return p !== null && p.demand.length === 0 && counts(p).b === 4;
    });
    for (const n of mesh.nodes) expect(n.runtime.demand.plans.ranksFor('a')).toBeNull();
    const c = await call(mesh.nodes[2]!, 'POST', '/v1/pipelines/c/demand', { steps: 5, priority: 2 });
    expect(c.status).toBe(201);
    await waitFor('c holding every rank on every node', () => counts(agreedPlan(mesh.nodes)).c === 4);
  });

  test('bad bodies and names are refused with 400/404 and store nothing', async () => {
    const node = mesh.nodes[1]!;
    const before = node.runtime.demand.digest();
    const bad: [string, string, unknown, number][] = [
      ['POST', '/v1/pipelines/a/demand', { steps: 0 }, 400],
      ['POST', '/v1/pipelines/a/demand', { steps: 5, priority: -1 }, 400],
      ['POST', '/v1/pipelines/a/demand', { steps: 5, extra: true }, 400],
      ['POST', '/v1/pipelines/a/demand', 'not json', 400],
      ['POST', '/v1/pipelines/a/demand', { steps: 5, id: 'bad id!' }, 400],
      ['POST', '/v1/pipelines/zzz/demand', { steps: 5 }, 404],
      ['POST', '/v1/pipelines/a/demand/nope/progress', { completed: 1 }, 404],
      ['POST', '/v1/pipelines/c/demand/dem-a/progress', { completed: 1 }, 404],
      ['POST', '/v1/pipelines/a/demand/dem-a/progress', { completed: -1 }, 400],
      ['DELETE', '/v1/pipelines/a/demand/nope', undefined, 404],
    ];
    for (const [method, path, body, status] of bad) {
      const r = await call(node, method, path, body);
      expect([method, path, r.status]).toEqual([method, path, status]);
      expect(typeof r.json.error.message).toBe('string');
    }
    expect(node.runtime.demand.digest()).toBe(before);
  });

  test('a restarted node loads its records and learns the plan again', async () => {
    const victim = mesh.nodes[3]!;
    const index = mesh.nodes.indexOf(victim);
    const held = victim.runtime.demand.digest();
    await mesh.kill(victim);
    const again = await mesh.startNode(index, mesh.nodes[0]!.runtime.transport.addresses());
    expect(again.runtime.demand.records().map((r) => r.id)).toContain('dem-a');
    expect(again.runtime.demand.digest()).toBe(held);
    await waitFor('the restarted node back in a plan agreed by all five', () => {
      const p = agreedPlan(mesh.live());
      return p !== null && mesh.live().length === 5 && counts(p).c === 4;
    }, 20_000);
  }, 30_000);
});

describe('plan rounds come from events, not from polling', () => {
  test('with a once-a-minute poll, demand still gets ranks at once, and the ranks agree on the plan', async () => {
    // The service polls every planRoundIntervalMs: here a minute, longer than the whole test.
    // What starts and completes the rounds is the view, the gossiped record and the peers' arrivals.
    const slow = await InprocMesh.start({ nodes: 3, settings: { pipelines: ['a', 'b'], planRoundIntervalMs: 60_000, demandSyncIntervalMs: 60_000 } });
    try {
      await waitFor('a full view and a first plan round on every node', () => slow.nodes.every((n) => slow.view(n)?.ranks.every((h) => h !== null) && planOf(n) !== null), 15_000);
      const r = await call(slow.nodes[2]!, 'POST', '/v1/pipelines/b/demand', { steps: 10, timeoutMs: 20_000 });
      expect(r.status).toBe(201);
      expect(r.json.ranks.length).toBeGreaterThan(0);
      await waitFor('every node holding the plan that gives b its ranks', () => {
        const plan = agreedPlan(slow.nodes);
        return plan !== null && (counts(plan).b ?? 0) > 0;
      }, 10_000);
    } finally {
      await slow.stop();
    }
  }, 60_000);
});

describe('no rank in time', () => {
  test('504 names the reason and the record stays open', async () => {
    // One node of a mesh of two never forms a view, so no plan round can run.
    const lone = await InprocMesh.start({ nodes: 1, worldSize: 2, settings });
    try {
      const r = await call(lone.nodes[0]!, 'POST', '/v1/pipelines/a/demand', { steps: 3, timeoutMs: 200 });
      expect(r.status).toBe(504);
      expect(r.json.error.code).toBe('timeout');
      expect(r.json.error.message).toMatch(/no view/);
      const list = await call(lone.nodes[0]!, 'GET', '/v1/pipelines');
      expect(list.json.pipelines.find((p: any) => p.name === 'a').records[0]).toMatchObject({ id: r.json.error.id, closed: false, remaining: 3 });
    } finally {
      await lone.stop();
    }
  });
});
